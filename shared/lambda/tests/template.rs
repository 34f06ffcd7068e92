//! template.yaml routes exactly the contract's HTTP routes (the OpenAPI document), less the
//! ones only `omni serve` has (its console, and `/v1/ws`, which is the WebSocket API on AWS),
//! so a new endpoint cannot be forgotten in the deployment.

use std::collections::BTreeSet;

fn root(file: &str) -> String {
    let path = format!("{}/../../{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn template_routes_match_the_openapi_document() {
    let template = root("template.yaml");
    let mut routed = BTreeSet::new();
    for line in template.lines().filter(|l| l.contains("Type: HttpApi")) {
        let field = |name: &str| {
            let at = line
                .find(name)
                .unwrap_or_else(|| panic!("{name} in {line}"));
            let rest = line[at + name.len()..].trim_start();
            match rest.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap().to_owned(),
                None => rest.split([',', '}']).next().unwrap().trim().to_owned(),
            }
        };
        routed.insert((field("Path:"), field("Method:").to_uppercase()));
    }

    let openapi: serde_json::Value = serde_json::from_str(omni_api::openapi::document()).unwrap();
    // Sockets are the WebSocket API's on AWS, not HTTP routes.
    let local_only = ["/", "/v1/ws", "/livechat/v1/ws"];
    let mut documented = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().unwrap() {
        if local_only.contains(&path.as_str()) || path.starts_with("/console/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch", "options"].contains(&method.as_str()) {
                documented.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    assert_eq!(routed, documented);
}
