//! A tenant's own message templates: declared variables, a body (and subject) per language,
//! the channels they may go out on, the mapping to an approved WhatsApp template, and their
//! versions through the approval workflow (draft, pending, approved or rejected).
//!
//! Not to be confused with [`crate::template`], Meta's template object that a send may still
//! give inline: a stored template is rendered here and, on WhatsApp, becomes one of those.
//!
//! Everything here is pure: the rules for a definition, the workflow's transitions, language
//! resolution and rendering. The storage is behind [`crate::ports::TemplateStore`].

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::Channel;
use crate::team::Actor;
use crate::template::{Component, Parameter, Template};

/// Longest template name.
const MAX_NAME_CHARS: usize = 100;
/// Longest body of one language, before rendering (the longest text a send accepts).
const MAX_BODY_CHARS: usize = 1600;
/// Longest rejection reason.
pub const MAX_REASON_CHARS: usize = 1000;

/// Why a definition, a transition or a send's variables were refused: the message names the
/// field or variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateRuleError {
    /// The definition or the send's variables break a rule (400).
    #[error("{0}")]
    Invalid(String),
    /// Neither the language asked for, its base language nor the default exists (400).
    #[error("{0}")]
    LanguageUnavailable(String),
    /// The version is not in the state the transition needs (409).
    #[error("{0}")]
    WrongState(String),
    /// Four eyes: the author cannot approve or reject their own version (403).
    #[error("{0}")]
    OwnVersion(String),
}

fn invalid(message: impl Into<String>) -> TemplateRuleError {
    TemplateRuleError::Invalid(message.into())
}

/// Whether `name` may name a template: 1 to 100 lowercase letters, digits, `_` or `-` (it
/// goes into a URL path), and not `sync` (`/v1/templates/sync/whatsapp` is a route).
pub fn valid_name(name: &str) -> bool {
    name != "sync"
        && !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The type of a variable, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Variable {
    /// A string, at most `max_length` characters when given.
    Text {
        /// Longest value, in characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_length: Option<u32>,
    },
    /// A JSON number.
    Number,
}

/// A language's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageContent {
    /// The text, with `{{variable}}` placeholders.
    pub body: String,
    /// The subject line on email, with placeholders too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Which approved WhatsApp template the template goes out as, and which variable fills each
/// of its body parameters (`{{1}}`, `{{2}}`, … in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappMapping {
    /// The template's name at Meta.
    pub name: String,
    /// Variables, in the order of Meta's body parameters.
    #[serde(default)]
    pub parameters: Vec<String>,
}

/// `PUT /v1/templates/{name}`: what one version says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDefinition {
    /// The channels it may be sent on.
    pub channels: Vec<Channel>,
    /// Its variables by name.
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    /// Its content by language tag (`en`, `es`, `es-MX`).
    pub languages: BTreeMap<String, LanguageContent>,
    /// The language used when neither the one asked for nor its base language exists;
    /// without one, such a send is refused (`template_language_unavailable`).
    #[serde(default)]
    pub default_language: Option<String>,
    /// The WhatsApp template it goes out as (required when `channels` lists WhatsApp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappMapping>,
}

/// Whether `tag` is a language tag Omni accepts: a 2 or 3 letter lowercase language, then
/// optionally `-` and a region (2 uppercase letters or 3 digits), e.g. `es-MX`.
fn valid_language(tag: &str) -> bool {
    let (language, region) = match tag.split_once('-') {
        Some((l, r)) => (l, Some(r)),
        None => (tag, None),
    };
    (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| {
            (r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
                || (r.len() == 3 && r.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Meta's code for one of our language tags (`es-MX` is Meta's `es_MX`).
pub fn meta_language(tag: &str) -> String {
    tag.replace('-', "_")
}

/// The placeholders of `text` in order (`{{ unit }}` is `unit`), or why it does not parse.
fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "a {{ is not closed by }}".to_string())?;
        let name = after[..end].trim();
        if !valid_variable_name(name) {
            return Err(format!("{{{{{name}}}}} is not a variable name"));
        }
        found.push(name);
        rest = &after[end + 2..];
    }
    Ok(found)
}

/// A variable name: a lowercase letter or `_`, then lowercase letters, digits or `_`.
fn valid_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 64
}

impl TemplateDefinition {
    /// Checks the definition: every placeholder declared, every declared variable used in
    /// some language, known language tags, a default that exists, and a WhatsApp mapping
    /// (whose parameters are declared variables) exactly when WhatsApp is listed.
    pub fn validate(&self) -> Result<(), TemplateRuleError> {
        if self.channels.is_empty() {
            return Err(invalid("channels: list at least one channel"));
        }
        for (name, variable) in &self.variables {
            if !valid_variable_name(name) {
                return Err(invalid(format!(
                    "variables.{name}: a name is a lowercase letter or _ then letters, digits \
                     or _ (at most 64)"
                )));
            }
            if let Variable::Text {
                max_length: Some(0),
            } = variable
            {
                return Err(invalid(format!(
                    "variables.{name}: max_length must be at least 1"
                )));
            }
        }
        if self.languages.is_empty() {
            return Err(invalid("languages: give at least one language"));
        }
        let mut used = std::collections::BTreeSet::new();
        for (tag, content) in &self.languages {
            if !valid_language(tag) {
                return Err(invalid(format!(
                    "languages.{tag}: not a language tag such as en or es-MX"
                )));
            }
            if content.body.trim().is_empty() {
                return Err(invalid(format!("languages.{tag}.body: must not be empty")));
            }
            if content.body.chars().count() > MAX_BODY_CHARS {
                return Err(invalid(format!(
                    "languages.{tag}.body: longer than {MAX_BODY_CHARS} characters"
                )));
            }
            let mut texts = vec![("body", content.body.as_str())];
            if let Some(subject) = &content.subject {
                if subject.contains(['\r', '\n']) {
                    return Err(invalid(format!(
                        "languages.{tag}.subject: must be one line"
                    )));
                }
                texts.push(("subject", subject));
            }
            for (field, text) in texts {
                for name in placeholders(text)
                    .map_err(|e| invalid(format!("languages.{tag}.{field}: {e}")))?
                {
                    if !self.variables.contains_key(name) {
                        return Err(invalid(format!(
                            "languages.{tag}.{field}: {{{{{name}}}}} is not a declared variable"
                        )));
                    }
                    used.insert(name);
                }
            }
        }
        if let Some(unused) = self.variables.keys().find(|v| !used.contains(v.as_str())) {
            return Err(invalid(format!(
                "variables.{unused}: declared but used in no language"
            )));
        }
        if let Some(default) = &self.default_language {
            if !self.languages.contains_key(default) {
                return Err(invalid(format!(
                    "default_language: {default:?} is not one of the languages"
                )));
            }
        }
        match (&self.whatsapp, self.channels.contains(&Channel::Whatsapp)) {
            (None, true) => Err(invalid(
                "whatsapp: a template sent on WhatsApp names the approved WhatsApp template \
                 it goes out as",
            )),
            (Some(_), false) => Err(invalid("whatsapp: the channels do not list whatsapp")),
            (Some(mapping), true) => self.validate_mapping(mapping),
            (None, false) => Ok(()),
        }
    }

    fn validate_mapping(&self, mapping: &WhatsappMapping) -> Result<(), TemplateRuleError> {
        if !crate::template::valid_name(&mapping.name) {
            return Err(invalid(
                "whatsapp.name: must be 1 to 512 lowercase letters, digits or underscores",
            ));
        }
        match mapping
            .parameters
            .iter()
            .find(|p| !self.variables.contains_key(p.as_str()))
        {
            Some(p) => Err(invalid(format!(
                "whatsapp.parameters: {p} is not a declared variable"
            ))),
            None => Ok(()),
        }
    }

    /// The language a send asking for `asked` uses: that tag, then its base language
    /// (`es-MX` -> `es`), then the default (also when none is asked for).
    pub fn resolve_language(&self, asked: Option<&str>) -> Result<&str, TemplateRuleError> {
        let asked = asked.unwrap_or_default();
        let base = asked.split(['-', '_']).next().unwrap_or(asked);
        [Some(asked), Some(base), self.default_language.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|tag| self.languages.get_key_value(tag).map(|(k, _)| k.as_str()))
            .ok_or_else(|| {
                TemplateRuleError::LanguageUnavailable(format!(
                    "the template has neither {asked:?} nor {base:?}, and no default language \
                     (it has {})",
                    self.languages
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Checks a send's variables against the declarations (each one present, none extra,
    /// of its type and length) and renders `language`'s body and subject with them.
    pub fn render(
        &self,
        language: &str,
        values: &BTreeMap<String, Value>,
    ) -> Result<Rendered, TemplateRuleError> {
        let texts = self.check_values(values)?;
        let content = self.languages.get(language).ok_or_else(|| {
            TemplateRuleError::LanguageUnavailable(format!("template has no {language:?}"))
        })?;
        let fill = |text: &str| -> Result<String, TemplateRuleError> {
            let mut out = String::with_capacity(text.len());
            let mut rest = text;
            while let Some(start) = rest.find("{{") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                // The definition was validated when stored: every placeholder is closed.
                let end = after
                    .find("}}")
                    .ok_or_else(|| invalid("template body is malformed"))?;
                let name = after[..end].trim();
                out.push_str(texts.get(name).map(String::as_str).unwrap_or_default());
                rest = &after[end + 2..];
            }
            out.push_str(rest);
            Ok(out)
        };
        Ok(Rendered {
            body: fill(&content.body)?,
            subject: content.subject.as_deref().map(fill).transpose()?,
            parameters: texts,
        })
    }

    /// Each variable's value as text, once all are present, known, typed and short enough.
    fn check_values(
        &self,
        values: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, String>, TemplateRuleError> {
        if let Some(extra) = values.keys().find(|k| !self.variables.contains_key(*k)) {
            return Err(invalid(format!(
                "variables.{extra}: not a variable of this template"
            )));
        }
        let mut texts = BTreeMap::new();
        for (name, variable) in &self.variables {
            let value = values
                .get(name)
                .ok_or_else(|| invalid(format!("variables.{name}: missing")))?;
            let text = match (variable, value) {
                (Variable::Text { max_length }, Value::String(s)) => {
                    if let Some(max) = max_length {
                        if s.chars().count() > *max as usize {
                            return Err(invalid(format!(
                                "variables.{name}: longer than {max} characters"
                            )));
                        }
                    }
                    s.clone()
                }
                (Variable::Number, Value::Number(n)) => n.to_string(),
                (Variable::Text { .. }, _) => {
                    return Err(invalid(format!("variables.{name}: must be a string")))
                }
                (Variable::Number, _) => {
                    return Err(invalid(format!("variables.{name}: must be a number")))
                }
            };
            texts.insert(name.clone(), text);
        }
        Ok(texts)
    }

    /// Meta's template message for a rendering in `language`: the mapped WhatsApp template
    /// with its body parameters in order; `None` when there is no mapping.
    pub fn whatsapp_message(&self, language: &str, rendered: &Rendered) -> Option<Template> {
        let mapping = self.whatsapp.as_ref()?;
        let parameters: Vec<Parameter> = mapping
            .parameters
            .iter()
            .map(|p| Parameter::Text {
                text: rendered.parameters.get(p).cloned().unwrap_or_default(),
            })
            .collect();
        Some(Template {
            name: mapping.name.clone(),
            language: meta_language(language),
            components: if parameters.is_empty() {
                Vec::new()
            } else {
                vec![Component::Body { parameters }]
            },
        })
    }
}

/// A template rendered for one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The body with the values in.
    pub body: String,
    /// The subject with the values in, when the language has one.
    pub subject: Option<String>,
    /// Each variable's value as text (what Meta's parameters carry).
    pub parameters: BTreeMap<String, String>,
}

/// Where a version is in the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Written, not yet submitted.
    Draft,
    /// Submitted, waiting for a second person.
    Pending,
    /// May be sent.
    Approved,
    /// Refused, with a reason.
    Rejected,
}

impl VersionStatus {
    /// The status's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Draft => "draft",
            VersionStatus::Pending => "pending",
            VersionStatus::Approved => "approved",
            VersionStatus::Rejected => "rejected",
        }
    }
}

impl fmt::Display for VersionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVersion {
    /// 1, 2, …
    pub version: u32,
    /// Where it is in the workflow.
    pub status: VersionStatus,
    /// What it says.
    pub definition: TemplateDefinition,
    /// Who wrote it.
    pub author: Actor,
    /// Who approved or rejected it.
    pub approver: Option<Actor>,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it was submitted.
    #[serde(default)]
    pub submitted_at: Option<DateTime<Utc>>,
    /// When it was approved or rejected.
    pub decided_at: Option<DateTime<Utc>>,
}

/// A template with every version, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTemplate {
    /// Its name, unique in the tenant.
    pub name: String,
    /// Its versions, oldest first.
    pub versions: Vec<TemplateVersion>,
    /// Bumped by every write: a store writes only over the revision it was read at, so two
    /// concurrent approvals cannot both win.
    pub revision: u64,
}

/// What a workflow step does to a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Makes the latest version, a draft, pending.
    Submit,
    /// Approves the pending version.
    Approve,
    /// Rejects the pending version, with a reason.
    Reject(String),
}

impl Step {
    /// The audit log's action for the step.
    pub fn action(&self) -> &'static str {
        match self {
            Step::Submit => "template.submit",
            Step::Approve => "template.approve",
            Step::Reject(_) => "template.reject",
        }
    }
}

impl StoredTemplate {
    /// A template's first version, a draft.
    pub fn first(name: &str, definition: TemplateDefinition, author: Actor) -> StoredTemplate {
        let mut template = StoredTemplate {
            name: name.to_owned(),
            versions: Vec::new(),
            revision: 0,
        };
        template.push_draft(definition, author, Utc::now());
        template
    }

    /// Adds the next version as a draft; returns its number.
    pub fn push_draft(
        &mut self,
        definition: TemplateDefinition,
        author: Actor,
        at: DateTime<Utc>,
    ) -> u32 {
        let version = self.versions.last().map_or(1, |v| v.version + 1);
        self.versions.push(TemplateVersion {
            version,
            status: VersionStatus::Draft,
            definition,
            author,
            approver: None,
            reason: None,
            created_at: at,
            submitted_at: None,
            decided_at: None,
        });
        version
    }

    /// The version in use: the newest approved one.
    pub fn approved(&self) -> Option<&TemplateVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.status == VersionStatus::Approved)
    }

    /// The version whose definition the template shows: the one in use, or before any
    /// approval the newest.
    pub fn shown(&self) -> Option<&TemplateVersion> {
        self.approved().or(self.versions.last())
    }

    /// Applies a workflow step by `actor` at `at`; returns the version it changed. A step
    /// never touches an approved version: the one in use stays until a newer one is approved.
    pub fn apply(
        &mut self,
        step: &Step,
        actor: &Actor,
        at: DateTime<Utc>,
    ) -> Result<u32, TemplateRuleError> {
        let wanted = match step {
            Step::Submit => VersionStatus::Draft,
            Step::Approve | Step::Reject(_) => VersionStatus::Pending,
        };
        // A step acts on the newest version only: a newer draft supersedes an older one.
        let name = &self.name;
        let version = self.versions.last_mut().ok_or_else(|| {
            TemplateRuleError::WrongState(format!("template {name} has no version"))
        })?;
        if version.status != wanted {
            return Err(TemplateRuleError::WrongState(format!(
                "the newest version of template {name} (version {}) is {}, not {wanted}",
                version.version, version.status
            )));
        }
        match step {
            Step::Submit => {
                version.status = VersionStatus::Pending;
                version.submitted_at = Some(at);
            }
            Step::Approve | Step::Reject(_) => {
                // Four eyes: the same person (or key) cannot write and approve.
                if version.author.id == actor.id {
                    return Err(TemplateRuleError::OwnVersion(format!(
                        "version {} of template {name} is yours: another supervisor or admin \
                         must approve or reject it",
                        version.version
                    )));
                }
                if let Step::Reject(reason) = step {
                    let reason = reason.trim();
                    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
                        return Err(invalid(format!(
                            "reason: give 1 to {MAX_REASON_CHARS} characters"
                        )));
                    }
                    version.status = VersionStatus::Rejected;
                    version.reason = Some(reason.to_owned());
                } else {
                    version.status = VersionStatus::Approved;
                }
                version.approver = Some(actor.clone());
                version.decided_at = Some(at);
            }
        }
        Ok(version.version)
    }

    /// The template as `GET /v1/templates/{name}` shows it: the definition of the version
    /// in use (or, before any approval, of the newest), which version that is, and every
    /// version with its status, author, approver and times.
    pub fn view(&self) -> Value {
        let shown = self.shown();
        let versions: Vec<Value> = self
            .versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "version": v.version,
                    "status": v.status,
                    "languages": v.definition.languages,
                    "author": v.author,
                    "approver": v.approver,
                    "reason": v.reason,
                    "created_at": v.created_at,
                    "submitted_at": v.submitted_at,
                    "decided_at": v.decided_at,
                })
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "channels": shown.map(|v| &v.definition.channels),
            "variables": shown.map(|v| &v.definition.variables),
            "default_language": shown.map(|v| &v.definition.default_language),
            "whatsapp": shown.and_then(|v| v.definition.whatsapp.as_ref()),
            "approved_version": self.approved().map(|v| v.version),
            "versions": versions,
        })
    }
}

/// Meta's verdict on one language of a WhatsApp template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MetaStatus {
    /// May be sent.
    Approved,
    /// Refused by Meta.
    Rejected,
    /// Paused for low quality.
    Paused,
    /// Disabled for low quality.
    Disabled,
    /// Still under Meta's review (or another status Meta reports).
    Pending,
}

impl MetaStatus {
    /// The status as Meta writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetaStatus::Approved => "APPROVED",
            MetaStatus::Rejected => "REJECTED",
            MetaStatus::Paused => "PAUSED",
            MetaStatus::Disabled => "DISABLED",
            MetaStatus::Pending => "PENDING",
        }
    }

    /// The status Meta reports (`status` of a listed template, `event` of a status update).
    pub fn from_meta(raw: &str) -> MetaStatus {
        match raw.to_ascii_uppercase().as_str() {
            "APPROVED" => MetaStatus::Approved,
            "REJECTED" => MetaStatus::Rejected,
            "PAUSED" => MetaStatus::Paused,
            "DISABLED" => MetaStatus::Disabled,
            _ => MetaStatus::Pending,
        }
    }
}

/// Meta's status for one language of one of a tenant's WhatsApp templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaTemplateStatus {
    /// The template's name at Meta.
    pub name: String,
    /// Meta's language code (`es_MX`).
    pub language: String,
    /// Its status.
    pub status: MetaStatus,
    /// When Omni learned it.
    pub updated_at: DateTime<Utc>,
}

/// The template a message was sent with, as the message shows it (`template`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SentTemplate {
    /// One of the tenant's templates, rendered into the message's body.
    Stored {
        /// The template's name.
        name: String,
        /// The approved version rendered.
        version: u32,
        /// The language actually used (`es` for `es-MX` when only `es` exists).
        language: String,
        /// On WhatsApp, Meta's template message it went out as.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        whatsapp: Option<Template>,
    },
    /// Meta's template object given inline by the sender (WhatsApp only).
    Inline(Template),
}

impl SentTemplate {
    /// Meta's template message to send, when the message goes out as one.
    pub fn meta(&self) -> Option<&Template> {
        match self {
            SentTemplate::Stored { whatsapp, .. } => whatsapp.as_ref(),
            SentTemplate::Inline(template) => Some(template),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::team::ActorType;

    fn definition() -> TemplateDefinition {
        serde_json::from_value(json!({
            "channels": ["sms", "whatsapp", "email"],
            "variables": {"unit": {"type": "text", "max_length": 5}, "eta": {"type": "number"}},
            "languages": {
                "en": {"body": "Unit {{unit}} arrives in {{ eta }} min", "subject": "Unit {{unit}}"},
                "es": {"body": "La unidad {{unit}} llega en {{eta}} min"}
            },
            "default_language": "en",
            "whatsapp": {"name": "unit_dispatched", "parameters": ["unit", "eta"]}
        }))
        .unwrap()
    }

    fn actor(id: &str) -> Actor {
        Actor {
            kind: ActorType::User,
            id: id.into(),
            name: id.into(),
        }
    }

    fn message(e: TemplateRuleError) -> String {
        e.to_string()
    }

    #[test]
    fn a_valid_definition_passes() {
        definition().validate().unwrap();
    }

    #[test]
    fn undeclared_and_unused_variables_are_named() {
        let mut d = definition();
        d.languages.get_mut("es").unwrap().body = "{{unit}} {{eta}} {{crew}}".into();
        let e = message(d.validate().unwrap_err());
        assert!(e.contains("{{crew}} is not a declared variable"), "{e}");

        let mut d = definition();
        d.variables
            .insert("crew".into(), Variable::Text { max_length: None });
        let e = message(d.validate().unwrap_err());
        assert!(
            e.contains("variables.crew: declared but used in no language"),
            "{e}"
        );

        let mut d = definition();
        d.languages.get_mut("en").unwrap().body = "Unit {{unit".into();
        assert!(message(d.validate().unwrap_err()).contains("not closed"));
    }

    #[test]
    fn default_language_and_whatsapp_mapping_are_checked() {
        let mut d = definition();
        d.default_language = Some("fr".into());
        assert!(message(d.validate().unwrap_err()).contains("default_language"));

        let mut d = definition();
        d.whatsapp = None;
        assert!(message(d.validate().unwrap_err()).starts_with("whatsapp:"));

        let mut d = definition();
        d.whatsapp.as_mut().unwrap().parameters.push("crew".into());
        assert!(message(d.validate().unwrap_err()).contains("crew is not a declared variable"));

        let mut d = definition();
        d.languages.insert(
            "ES_mx".into(),
            LanguageContent {
                body: "{{unit}} {{eta}}".into(),
                subject: None,
            },
        );
        assert!(message(d.validate().unwrap_err()).contains("languages.ES_mx"));
    }

    #[test]
    fn language_falls_back_to_base_then_default() {
        let d = definition();
        assert_eq!(d.resolve_language(Some("es-MX")).unwrap(), "es");
        assert_eq!(d.resolve_language(Some("es")).unwrap(), "es");
        assert_eq!(d.resolve_language(Some("fr-CA")).unwrap(), "en");
        assert_eq!(d.resolve_language(None).unwrap(), "en");
        let mut d = definition();
        d.default_language = None;
        assert_eq!(d.resolve_language(Some("es-MX")).unwrap(), "es");
        for asked in [Some("fr"), None] {
            let e = d.resolve_language(asked).unwrap_err();
            assert!(matches!(e, TemplateRuleError::LanguageUnavailable(_)));
            assert!(message(e).contains("(it has en, es)"));
        }
    }

    #[test]
    fn renders_and_refuses_bad_values_by_name() {
        let d = definition();
        let values = |v: Value| serde_json::from_value::<BTreeMap<String, Value>>(v).unwrap();
        let r = d
            .render("en", &values(json!({"unit": "M12", "eta": 7})))
            .unwrap();
        assert_eq!(r.body, "Unit M12 arrives in 7 min");
        assert_eq!(r.subject.as_deref(), Some("Unit M12"));
        let meta = d.whatsapp_message("es", &r).unwrap();
        assert_eq!(
            serde_json::to_value(&meta).unwrap(),
            json!({"name": "unit_dispatched", "language": "es", "components": [
                {"type": "body", "parameters": [
                    {"type": "text", "text": "M12"}, {"type": "text", "text": "7"}]}]})
        );
        for (bad, named) in [
            (json!({"unit": "M12"}), "variables.eta: missing"),
            (
                json!({"unit": "M12", "eta": 7, "crew": "x"}),
                "variables.crew: not a variable",
            ),
            (
                json!({"unit": 12, "eta": 7}),
                "variables.unit: must be a string",
            ),
            (
                json!({"unit": "M12", "eta": "7"}),
                "variables.eta: must be a number",
            ),
            (
                json!({"unit": "M12345", "eta": 7}),
                "variables.unit: longer than 5",
            ),
        ] {
            let e = message(d.render("en", &values(bad)).unwrap_err());
            assert!(e.starts_with(named), "{e} / {named}");
        }
    }

    #[test]
    fn workflow_needs_four_eyes_and_keeps_the_approved_version() {
        let (alice, bob) = (actor("alice"), actor("bob"));
        let mut t = StoredTemplate::first("unit", definition(), alice.clone());
        let now = Utc::now();
        assert!(matches!(
            t.apply(&Step::Approve, &bob, now),
            Err(TemplateRuleError::WrongState(_))
        ));
        assert_eq!(t.apply(&Step::Submit, &alice, now).unwrap(), 1);
        assert!(matches!(
            t.apply(&Step::Approve, &alice, now),
            Err(TemplateRuleError::OwnVersion(_))
        ));
        assert_eq!(t.apply(&Step::Approve, &bob, now).unwrap(), 1);
        assert_eq!(t.approved().unwrap().version, 1);

        // A newer draft supersedes an unsubmitted one.
        assert_eq!(t.push_draft(definition(), alice.clone(), now), 2);
        assert_eq!(t.push_draft(definition(), bob.clone(), now), 3);
        assert_eq!(t.apply(&Step::Submit, &bob, now).unwrap(), 3);
        assert!(matches!(
            t.apply(&Step::Submit, &bob, now),
            Err(TemplateRuleError::WrongState(_))
        ));
        // A newer draft supersedes a pending one too: only the newest is decided on.
        assert_eq!(t.push_draft(definition(), bob.clone(), now), 4);
        assert!(matches!(
            t.apply(&Step::Approve, &alice, now),
            Err(TemplateRuleError::WrongState(_))
        ));
        t.apply(&Step::Submit, &bob, now).unwrap();
        // Version 1 stays in use while 4 is pending and after 4 is rejected.
        assert_eq!(t.approved().unwrap().version, 1);
        assert!(t.apply(&Step::Reject("  ".into()), &alice, now).is_err());
        assert_eq!(
            t.apply(&Step::Reject("typo".into()), &alice, now).unwrap(),
            4
        );
        assert_eq!(t.approved().unwrap().version, 1);
        assert_eq!(t.shown().unwrap().version, 1);
        let view = t.view();
        assert_eq!(view["approved_version"], 1);
        assert_eq!(view["versions"][1]["status"], "draft");
        assert_eq!(view["versions"][2]["status"], "pending");
        assert_eq!(view["versions"][3]["status"], "rejected");
        assert_eq!(view["versions"][3]["reason"], "typo");
        assert_eq!(view["versions"][3]["approver"]["id"], "alice");
        assert_eq!(view["versions"][0]["approver"]["id"], "bob");
    }

    #[test]
    fn sent_templates_read_back_as_the_form_they_were() {
        let inline: SentTemplate =
            serde_json::from_value(json!({"name": "hello_world", "language": "en"})).unwrap();
        assert!(matches!(inline, SentTemplate::Inline(_)));
        assert_eq!(inline.meta().unwrap().name, "hello_world");
        let stored = SentTemplate::Stored {
            name: "unit".into(),
            version: 2,
            language: "es".into(),
            whatsapp: None,
        };
        let value = serde_json::to_value(&stored).unwrap();
        assert_eq!(
            value,
            json!({"name": "unit", "version": 2, "language": "es"})
        );
        assert_eq!(
            serde_json::from_value::<SentTemplate>(value).unwrap(),
            stored
        );
        assert!(stored.meta().is_none());
    }

    #[test]
    fn names_and_meta_statuses() {
        assert!(valid_name("unit-dispatched_2"));
        assert!(!valid_name("Unit"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        assert!(!valid_name("sync"));
        assert_eq!(MetaStatus::from_meta("APPROVED"), MetaStatus::Approved);
        assert_eq!(MetaStatus::from_meta("paused"), MetaStatus::Paused);
        assert_eq!(MetaStatus::from_meta("IN_APPEAL"), MetaStatus::Pending);
        assert_eq!(meta_language("es-MX"), "es_MX");
    }
}
