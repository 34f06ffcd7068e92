//! The OpenAPI document: `openapi.json` (the dispatch, admin and dashboard API) with every
//! carrier's webhook routes added from its module's fragment, so the document and the routes
//! come from the same declarations.

use std::sync::LazyLock;

use omni_core::providers::{Carrier, WebhookHandler, CARRIERS};
use serde_json::{json, Map, Value};

/// The document without the carriers' webhooks, kept in the repository.
const BASE: &str = include_str!("../openapi.json");

/// The OpenAPI 3.1 description of the contract, as served at `/openapi.json`.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        let mut doc: Value = serde_json::from_str(BASE).expect("openapi.json is JSON");
        for carrier in CARRIERS {
            add_carrier(&mut doc, carrier);
        }
        doc.to_string()
    });
    &DOCUMENT
}

/// Adds a carrier's fragment: its paths, each operation given the answers every webhook
/// shares, and its schemas.
fn add_carrier(doc: &mut Value, carrier: &Carrier) {
    let fragment: Value = serde_json::from_str(carrier.openapi).expect("fragment is JSON");
    if let Some(paths) = fragment["paths"].as_object() {
        for (path, operations) in paths {
            let mut operations = operations.clone();
            for route in carrier.webhooks.iter().filter(|r| r.path == path) {
                let method = route.method.as_str().to_ascii_lowercase();
                if let Some(operation) = operations.get_mut(&method) {
                    operation["security"] = json!([]);
                    if route.handler != WebhookHandler::MetaHandshake {
                        add_webhook_errors(&mut operation["responses"]);
                    }
                }
            }
            doc["paths"][path] = operations;
        }
    }
    if let Some(schemas) = fragment["schemas"].as_object() {
        for (name, schema) in schemas {
            doc["components"]["schemas"][name] = schema.clone();
        }
    }
}

/// The errors any carrier webhook may answer.
fn add_webhook_errors(responses: &mut Value) {
    let error = |description: &str| {
        json!({"description": description, "content": {"application/json":
            {"schema": {"$ref": "#/components/schemas/Error"}}}})
    };
    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    for code in ["400", "401", "404", "413"] {
        responses.insert(code.into(), error("error"));
    }
    responses.insert(
        "429".into(),
        error(
            "too many failed authentications from this address (or, for `/v1/ws`, too many \
             open dashboards): `rate_limited` / `too_many_connections`, with `Retry-After` \
             for a lockout",
        ),
    );
}

/// The `(method, path)` pairs a carrier's fragment documents.
pub fn documented_routes(carrier: &Carrier) -> Vec<(String, String)> {
    let fragment: Value = serde_json::from_str(carrier.openapi).unwrap_or_default();
    let empty = Map::new();
    let paths = fragment["paths"].as_object().unwrap_or(&empty);
    let mut routes: Vec<_> = paths
        .iter()
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    routes.sort();
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_carriers_fragment_documents_exactly_its_declared_routes() {
        for carrier in CARRIERS {
            let mut declared: Vec<_> = carrier
                .webhooks
                .iter()
                .map(|r| (r.method.as_str().to_string(), r.path.to_string()))
                .collect();
            declared.sort();
            assert_eq!(
                documented_routes(carrier),
                declared,
                "{}: the OpenAPI fragment and the declared webhook routes differ",
                carrier.name()
            );
            for route in carrier.webhooks {
                assert!(
                    route.path == format!("/webhooks/{}", carrier.name())
                        || route
                            .path
                            .starts_with(&format!("/webhooks/{}/", carrier.name())),
                    "{} declares {} outside /webhooks/{}",
                    carrier.name(),
                    route.path,
                    carrier.name()
                );
            }
        }
    }

    #[test]
    fn the_served_document_has_every_webhook_with_the_shared_errors() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        let post = &doc["paths"]["/webhooks/twilio"]["post"];
        assert_eq!(post["security"], json!([]));
        for code in ["200", "400", "401", "404", "413", "429"] {
            assert!(post["responses"].get(code).is_some(), "{code} missing");
        }
        assert!(doc["components"]["schemas"]["TwilioForm"].is_object());
        // The handshake answers only what it answers.
        let handshake = &doc["paths"]["/webhooks/whatsapp"]["get"]["responses"];
        assert!(handshake.get("401").is_none());
        assert!(handshake.get("403").is_some());
    }
}
