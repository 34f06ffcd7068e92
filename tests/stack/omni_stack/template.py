"""template.yaml expanded by the official SAM translator, and CloudFormation's intrinsic
functions resolved against the resources the harness created.

The translator is the library `sam build`/`sam deploy` hand the template to, so the roles,
policies, event source mappings, rules and routes read here are the ones AWS would create.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"

# The translator needs an S3 location for code; nothing is uploaded.
PLACEHOLDER_CODE_URI = "s3://omni-stack-test/bootstrap.zip"


class _NoManagedPolicyNames:
    """The template names managed policies by ARN only; SAM asks for the name map lazily."""

    def load(self) -> dict[str, str]:
        return {}


def expand(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """`template` (parsed YAML) as the SAM translator expands it for `parameters`."""
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    from samtranslator.translator.transform import transform

    tpl = copy.deepcopy(template)
    for resource in tpl["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = PLACEHOLDER_CODE_URI
    values = parameter_values(tpl, parameters)
    values["AWS::Region"] = REGION
    return transform(tpl, values, _NoManagedPolicyNames())


def load(path: Path) -> dict[str, Any]:
    """Parses template.yaml (with CloudFormation's short-form tags) as SAM does."""
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(path.read_text())


def parameter_values(template: dict[str, Any], given: dict[str, str]) -> dict[str, str]:
    """Every parameter's value: the given one, else the template's default."""
    values = {}
    for name, spec in template.get("Parameters", {}).items():
        if name in given:
            values[name] = given[name]
        elif "Default" in spec:
            values[name] = spec["Default"]
    unknown = set(given) - set(template.get("Parameters", {}))
    if unknown:
        raise ValueError(f"unknown template parameters: {sorted(unknown)}")
    return values


class NoValue:
    """`AWS::NoValue`: the property is dropped."""


class Resolver:
    """Evaluates intrinsic functions: parameters, pseudo parameters, conditions and the
    `Ref`/`GetAtt` values of the resources the harness created (`physical`)."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str], stack_name: str):
        self.template = template
        self.parameters = parameter_values(template, parameters)
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::StackName": stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{stack_name}/1",
        }
        # logical id -> {"Ref": value, "<attribute>": value}
        self.physical: dict[str, dict[str, Any]] = {}
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self._conditions[name]

    def included(self, resource: dict[str, Any]) -> bool:
        """Whether a resource exists under the parameters (its `Condition`)."""
        cond = resource.get("Condition")
        return cond is None or self.condition(cond)

    def ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name in self.pseudo:
            return self.pseudo[name]
        if name == "AWS::NoValue":
            return NoValue
        if name in self.physical:
            return self.physical[name]["Ref"]
        raise KeyError(f"Ref to {name}, which the harness has not created")

    def get_att(self, name: str, attribute: str) -> Any:
        try:
            return self.physical[name][attribute]
        except KeyError:
            raise KeyError(f"GetAtt {name}.{attribute}: not created or no such attribute") from None

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"
            if expr in variables:
                return str(self.resolve(variables[expr]))
            if "." in expr and not expr.startswith("AWS::"):
                name, attribute = expr.split(".", 1)
                return str(self.get_att(name, attribute))
            return str(self.ref(expr))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            out = [self.resolve(v) for v in value]
            return [v for v in out if v is not NoValue]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attribute)
            if key == "Fn::Sub":
                if isinstance(arg, list):
                    return self.sub(arg[0], arg[1])
                return self.sub(arg, {})
            if key == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.condition(cond) else no)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(v) for v in self.resolve(items))
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text)).split(sep)
            if key == "Fn::Equals":
                a, b = (self.resolve(v) for v in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(v) for v in arg)
            if key == "Fn::Or":
                return any(self.resolve(v) for v in arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::GetAZs":
                return [f"{REGION}a", f"{REGION}b"]
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not NoValue}


def function_arn_ref(uri: Any) -> str | None:
    """The logical id of the function an integration or target URI names
    (`${XFunction.Arn}` inside a `Fn::Sub`, or a `Fn::GetAtt`)."""
    if isinstance(uri, dict):
        if "Fn::GetAtt" in uri:
            arg = uri["Fn::GetAtt"]
            return (arg if isinstance(arg, list) else arg.split("."))[0]
        if "Fn::Sub" in uri:
            text = uri["Fn::Sub"] if isinstance(uri["Fn::Sub"], str) else uri["Fn::Sub"][0]
            match = re.search(r"\$\{(\w+)\.Arn\}", text)
            return match.group(1) if match else None
        if "Ref" in uri:
            return uri["Ref"]
    return None
