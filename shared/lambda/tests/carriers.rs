//! Every carrier of the list has everything a carrier needs outside its module: its Lambda
//! function crate, its `template.yaml` resource routing exactly the webhooks it declares, its
//! `events/` sample, its payload fixtures and its end-to-end tests. Adding a carrier to the
//! list without one of them fails here, naming what is missing.

use std::collections::BTreeSet;
use std::path::Path;

use omni_core::providers::CARRIERS;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn read(file: &str) -> String {
    let path = root().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The (path, method) pairs of the HttpApi events of the resource building `binary`.
fn template_routes(template: &str, binary: &str) -> Option<BTreeSet<(String, String)>> {
    let marker = format!("Binary: {binary} }}");
    let start = template.lines().position(|l| l.contains(&marker))?;
    let field = |line: &str, name: &str| {
        let rest = &line[line.find(name).expect("field") + name.len()..];
        rest.split([',', '}']).next().unwrap().trim().to_owned()
    };
    Some(
        template
            .lines()
            .skip(start + 1)
            // The resource ends where the next top-level resource begins.
            .take_while(|l| !(l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':')))
            .filter(|l| l.contains("Type: HttpApi"))
            .map(|l| (field(l, "Path:"), field(l, "Method:").to_uppercase()))
            .collect(),
    )
}

#[test]
fn every_carrier_has_its_function_template_resource_event_fixtures_and_tests() {
    let template = read("template.yaml");
    let fixtures: Vec<String> = std::fs::read_dir(root().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let e2e: String = std::fs::read_dir(root().join("tests/e2e"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    for carrier in CARRIERS {
        let name = carrier.name();
        assert!(
            fixtures.iter().any(|f| f.starts_with(name)),
            "{name}: no payload fixture tests/fixtures/{name}*"
        );
        assert!(
            root().join(format!("tests/e2e/{name}.rs")).exists()
                || e2e.contains(&format!("/webhooks/{name}")),
            "{name}: no end-to-end test in tests/e2e"
        );
        if carrier.webhooks.is_empty() {
            continue;
        }
        let function = format!("webhook-{name}");
        assert!(
            root()
                .join(format!("functions/{function}/Cargo.toml"))
                .exists(),
            "{name}: no function crate functions/{function}"
        );
        assert!(
            root().join(format!("events/{function}.json")).exists(),
            "{name}: no sample event events/{function}.json"
        );
        let declared: BTreeSet<_> = carrier
            .webhooks
            .iter()
            .map(|r| (r.path.to_string(), r.method.as_str().to_string()))
            .collect();
        assert_eq!(
            template_routes(&template, &function),
            Some(declared),
            "{name}: template.yaml's {function} resource must route exactly its declared webhooks"
        );
    }
}

#[test]
fn the_template_reader_sees_a_resource_and_only_its_own_routes() {
    let template = read("template.yaml");
    let twilio = template_routes(&template, "webhook-twilio").unwrap();
    assert!(twilio.contains(&("/webhooks/twilio/status".into(), "POST".into())));
    assert!(twilio
        .iter()
        .all(|(path, _)| path.starts_with("/webhooks/twilio")));
    assert_eq!(template_routes(&template, "webhook-nobody"), None);
}
