//! Property-based fuzzing that runs on stable in `cargo test` (cargo fuzz needs nightly).
//!
//! One target per carrier webhook (parser and signature verifier; SES's over SNS included), one
//! for SES's EventBridge events and one for the send API's JSON. Inputs are the carrier fixtures (`tests/fixtures`) and the committed corpus
//! (`fuzz/corpus/<target>/`), mutated by [`crate::mutate`]; three inputs in four are signed
//! with the tenant's real credentials so they get past verification into normalisation,
//! storage and the conversation updater. Each input goes through the real axum router over
//! an in-memory SQLite backend; accepted webhooks are then run through the updater.
//!
//! The property: no panic, never a 5xx, and every refusal a 4xx with the contract's JSON
//! error (`error`, `code`, `request_id`). A bounded number of cases per target
//! (`OMNI_FUZZ_CASES` overrides); each target prints its execution count.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request};
use omni_core::domain::TenantId;
use omni_core::ports::Job;
use omni_core::providers::bird;
use omni_core::providers::messagebird;
use omni_core::providers::signal::SignalAdapter;
use omni_core::providers::{
    bandwidth, http_client, inteliquent, sendgrid, sinch, telnyx, twilio, vonage, whatsapp,
    MessagingProviderAdapter, WebhookRequest,
};
use omni_core::service::ServiceError;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::mutate::{edits, mutate, Shape};
use crate::sns_signer;
use crate::world::{Reply, World, PUBLIC_URL};

const NUMBER: &str = "+15555550100";
const TWILIO_TOKEN: &str = "12345abcdef67890fedcba0987654321";
const VOIPMS_SECRET: &str = "s3cr3t-token-0001";
const WA_APP_SECRET: &str = "0123456789abcdef0123456789abcdef";
const WA_VERIFY_TOKEN: &str = "fuzz-verify-token";
const BANDWIDTH_USER: &str = "fuzz-callbacks";
const BANDWIDTH_PASSWORD: &str = "fuzz-callback-password";
const SINCH_APP_SECRET: &str = "fuzz-sinch-app-secret";
const VOICEMEUP_SECRET: &str = "vmu-fuzz-secret-01";
const VONAGE_SIGNATURE_SECRET: &str = "fuzz-vonage-signature-secret";
const BIRD_SIGNING_KEY: &str = "fuzz-bird-signing-key";
const INTELIQUENT_WEBHOOK_KEY: &str = "fuzz-inteliquent-webhook-key";
const MESSAGEBIRD_SIGNING_KEY: &str = "fuzz-messagebird-signing-key";
const TELNYX_SEED: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Nothing listens here: deliveries and signal-cli calls fail fast.
const NOWHERE: &str = "http://127.0.0.1:9";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixtures whose names start with one of `prefixes`.
fn fixtures(prefixes: &[&str]) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            p.is_file() && prefixes.iter().any(|pre| name.starts_with(pre))
        })
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The committed corpus of a target.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = repo().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn cases(default: u32) -> u32 {
    std::env::var("OMNI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

thread_local! {
    /// Statuses answered in the running target (each target runs on its own test thread).
    static STATUSES: std::cell::RefCell<std::collections::BTreeMap<u16, usize>> =
        Default::default();
    /// Queued jobs the conversation updater ran in the running target.
    static UPDATES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The contract every answer keeps: below 500, and a refusal is the JSON error shape.
fn check(reply: &Reply, what: &str, input: &[u8]) {
    STATUSES.with(|s| *s.borrow_mut().entry(reply.status.as_u16()).or_default() += 1);
    let shown = || String::from_utf8_lossy(&input[..input.len().min(2000)]).into_owned();
    assert!(
        reply.status.as_u16() < 500,
        "{what}: {} {:?} for input {:?}",
        reply.status,
        String::from_utf8_lossy(&reply.body),
        shown()
    );
    if reply.status.is_client_error() {
        let content_type = reply
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: {} without JSON ({content_type}) for {:?}",
            reply.status,
            shown()
        );
        let body = reply.json();
        let ok = body["error"].as_str().is_some()
            && body["code"].as_str().is_some_and(|c| !c.is_empty())
            && body["request_id"].as_str().is_some_and(|r| !r.is_empty());
        assert!(ok, "{what}: error body {body} for {:?}", shown());
    }
}

/// Bytes as a request target: everything outside the URI's allowed set percent-encoded (what
/// a client library would send for these bytes).
fn uri_safe(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs a target: the corpus as it is, then `default_cases` mutated inputs. `exec` runs one
/// input (`variant` picks a route or header form, `sign` whether to sign it) and returns the
/// number of requests it made.
fn run(
    target: &str,
    shape: Shape,
    mut seeds: Vec<Vec<u8>>,
    default_cases: u32,
    exec: impl Fn(&[u8], u8, bool) -> usize,
) {
    let started = Instant::now();
    let executions = AtomicUsize::new(0);
    let committed = corpus(target);
    for input in &committed {
        for variant in 0..4 {
            for sign in [true, false] {
                executions.fetch_add(exec(input, variant, sign), Ordering::Relaxed);
            }
        }
    }
    seeds.extend(committed);
    assert!(!seeds.is_empty(), "{target}: no seeds");
    let n = seeds.len();
    let cases = cases(default_cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 500,
        ..Config::default()
    });
    let strategy = (0..n, edits(), any::<u8>(), 0u8..4);
    let result = runner.run(&strategy, |(seed, edits, variant, sign)| {
        let input = mutate(&seeds[seed], shape, &edits);
        executions.fetch_add(exec(&input, variant, sign != 0), Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz target {target} failed: {e}");
    }
    let statuses = STATUSES.with(|s| std::mem::take(&mut *s.borrow_mut()));
    eprintln!(
        "fuzz target {target}: {cases} cases, {} executions in {:.1?}; statuses {statuses:?}; \
         {} queued events through the updater",
        executions.load(Ordering::Relaxed),
        started.elapsed(),
        UPDATES.take()
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A world with tenant `north` holding [`NUMBER`] on `provider`.
fn world_with(rt: &tokio::runtime::Runtime, provider: &str, config: serde_json::Value) -> World {
    let world = World::new(NOWHERE);
    rt.block_on(async {
        world.tenant("north").await;
        let channels: &[&str] = match provider {
            "twilio" => &["sms", "mms", "whatsapp"],
            "whatsapp" => &["whatsapp"],
            "signal" => &["signal"],
            _ => &["sms", "mms"],
        };
        world
            .provider("north", provider, config, NUMBER, channels)
            .await;
    });
    world
}

/// Posts a webhook, checks the answer, and runs what it queued through the updater.
fn deliver(
    rt: &tokio::runtime::Runtime,
    world: &World,
    request: Request<Body>,
    what: &str,
    input: &[u8],
) {
    rt.block_on(async {
        let reply = world.call(request).await;
        check(&reply, what, input);
        if reply.status.is_success() {
            let ran = world.drain(false).await;
            UPDATES.set(UPDATES.get() + ran);
        }
    });
}

#[test]
fn fuzz_twilio_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "twilio",
        json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": TWILIO_TOKEN}),
    );
    run(
        "twilio",
        Shape::Form,
        fixtures(&["twilio_"]),
        4000,
        |input, variant, sign| {
            let path = if variant % 2 == 0 {
                "/webhooks/twilio"
            } else {
                "/webhooks/twilio/status"
            };
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(input).into_owned().collect();
            let signature = if sign {
                twilio::signature(&format!("{PUBLIC_URL}{path}"), &params, TWILIO_TOKEN)
            } else {
                String::from_utf8_lossy(&input[..input.len().min(28)]).into_owned()
            };
            let mut request = Request::post(path);
            if variant % 4 != 3 {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            }
            if let Ok(value) = header::HeaderValue::from_str(&signature) {
                request = request.header("x-twilio-signature", value);
            }
            let request = request.body(Body::from(input.to_vec())).unwrap();
            deliver(&rt, &world, request, "twilio", input);
            1
        },
    );
}

#[test]
fn fuzz_voipms_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "voipms",
        json!({"api_username": "fuzz@example.org", "api_password": "voipms-api-password", "webhook_secret": VOIPMS_SECRET}),
    );
    run(
        "voipms",
        Shape::Form,
        fixtures(&["voipms_"]),
        5000,
        |input, variant, sign| {
            let mut query: Vec<u8> = input.to_vec();
            if sign {
                // The secret VoIP.ms sends back, whatever else the query became.
                let pairs: Vec<(String, String)> = url::form_urlencoded::parse(input)
                    .into_owned()
                    .filter(|(k, _)| k != "secret")
                    .chain([("secret".to_string(), VOIPMS_SECRET.to_string())])
                    .collect();
                query = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish()
                    .into_bytes();
            }
            let uri = format!("/webhooks/voipms?{}", uri_safe(&query));
            let method = if variant % 2 == 0 {
                Method::GET
            } else {
                Method::POST
            };
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            deliver(&rt, &world, request, "voipms", input);
            1
        },
    );
}

#[test]
fn fuzz_whatsapp_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "whatsapp",
        json!({"phone_number_id": "200000000000002", "access_token": "wa-access-token", "app_secret": WA_APP_SECRET, "verify_token": WA_VERIFY_TOKEN}),
    );
    run(
        "whatsapp",
        Shape::Json,
        fixtures(&["whatsapp_"]),
        5000,
        |input, variant, sign| {
            if variant % 8 == 7 {
                // The subscription handshake, its query made of the input.
                let token = if sign { WA_VERIFY_TOKEN } else { "wrong" };
                let uri = format!(
                "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge={}",
                uri_safe(&input[..input.len().min(200)])
            );
                let request = Request::get(uri).body(Body::empty()).unwrap();
                deliver(&rt, &world, request, "whatsapp handshake", input);
                return 1;
            }
            let signature = if sign {
                whatsapp::signature(input, WA_APP_SECRET)
            } else {
                format!("sha256={}", "0".repeat(64))
            };
            let mut request = Request::post("/webhooks/whatsapp")
                .header(header::CONTENT_TYPE, "application/json");
            if variant % 4 != 3 {
                request = request.header("x-hub-signature-256", signature);
            }
            let request = request.body(Body::from(input.to_vec())).unwrap();
            deliver(&rt, &world, request, "whatsapp", input);
            1
        },
    );
}

#[test]
fn fuzz_telnyx_webhooks() {
    let rt = runtime();
    let key = telnyx::signing_key(TELNYX_SEED).unwrap();
    let world = world_with(
        &rt,
        "telnyx",
        json!({"api_key": "telnyx-api-key", "public_key": telnyx::public_key_base64(&key)}),
    );
    run(
        "telnyx",
        Shape::Json,
        fixtures(&["telnyx_"]),
        2000,
        |input, variant, sign| {
            let path = if variant % 2 == 0 {
                "/webhooks/telnyx"
            } else {
                "/webhooks/telnyx/status"
            };
            let now = chrono::Utc::now().timestamp();
            // Sometimes outside the five-minute replay window.
            let ts = if variant % 8 == 5 { now - 600 } else { now }.to_string();
            let signature = if sign {
                telnyx::signature(&key, &ts, input)
            } else {
                "AAAA".repeat(22)
            };
            let request = Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .header(telnyx::SIGNATURE_HEADER, signature)
                .header(telnyx::TIMESTAMP_HEADER, ts)
                .body(Body::from(input.to_vec()))
                .unwrap();
            deliver(&rt, &world, request, "telnyx", input);
            1
        },
    );
}

#[test]
fn fuzz_bandwidth_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "bandwidth",
        json!({"account_id": "9900000", "application_id": "fuzz-app",
            "api_username": "fuzz-api", "api_password": "fuzz-api-password",
            "webhook_username": BANDWIDTH_USER, "webhook_password": BANDWIDTH_PASSWORD}),
    );
    run(
        "bandwidth",
        Shape::Json,
        fixtures(&["bandwidth_"]),
        2000,
        |input, variant, sign| {
            let path = if variant % 2 == 0 {
                "/webhooks/bandwidth"
            } else {
                "/webhooks/bandwidth/status"
            };
            // Unsigned inputs carry wrong credentials, or (sometimes) none at all.
            let authorization = if sign {
                Some(bandwidth::authorization(BANDWIDTH_USER, BANDWIDTH_PASSWORD))
            } else if variant % 8 == 5 {
                None
            } else {
                Some(bandwidth::authorization(BANDWIDTH_USER, "guessed"))
            };
            let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
            if let Some(a) = authorization {
                request = request.header(header::AUTHORIZATION, a);
            }
            let request = request.body(Body::from(input.to_vec())).unwrap();
            deliver(&rt, &world, request, "bandwidth", input);
            1
        },
    );
}

#[test]
fn fuzz_sinch_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "sinch",
        json!({"service_plan_id": "fuzzplan", "api_token": "fuzz-sinch-token",
            "app_secret": SINCH_APP_SECRET}),
    );
    run(
        "sinch",
        Shape::Json,
        fixtures(&["sinch_"]),
        2000,
        |input, variant, sign| {
            let path = if variant % 2 == 0 {
                "/webhooks/sinch"
            } else {
                "/webhooks/sinch/status"
            };
            let now = chrono::Utc::now().timestamp();
            // Sometimes outside the five-minute replay window.
            let ts = if variant % 8 == 5 { now - 600 } else { now }.to_string();
            let nonce = format!("nonce-{variant}");
            let signature = if sign {
                sinch::signature(SINCH_APP_SECRET, input, &nonce, &ts)
            } else {
                "AAAA".repeat(11)
            };
            let request = Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .header(sinch::SIGNATURE_HEADER, signature)
                .header(sinch::NONCE_HEADER, nonce)
                .header(sinch::TIMESTAMP_HEADER, ts)
                .body(Body::from(input.to_vec()))
                .unwrap();
            deliver(&rt, &world, request, "sinch", input);
            1
        },
    );
}

/// VoiceMeUp: JSON bodies, also sent as forms (the JSON object's fields) and without a
/// content type; the secret in the query is the tenant's or a wrong one. Split-MMS halves
/// land in the store (their pairs merged or waiting), the rest in the updater.
#[test]
fn fuzz_voicemeup_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "voicemeup",
        json!({"username": "fuzz", "auth_token": "vmu-auth-token", "webhook_secret": VOICEMEUP_SECRET}),
    );
    run(
        "voicemeup",
        Shape::Json,
        fixtures(&["voicemeup_"]),
        3000,
        |input, variant, sign| {
            let secret = if sign { VOICEMEUP_SECRET } else { "wrong" };
            let mut request = Request::post(format!("/webhooks/voicemeup?secret={secret}"));
            let mut body = input.to_vec();
            match variant % 4 {
                0 | 1 => request = request.header(header::CONTENT_TYPE, "application/json"),
                2 => {
                    // The same fields as a form, when the input is a JSON object.
                    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(input) {
                        let pairs = map.into_iter().map(|(k, v)| match v {
                            serde_json::Value::String(s) => (k, s),
                            other => (k, other.to_string()),
                        });
                        body = url::form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(pairs)
                            .finish()
                            .into_bytes();
                    }
                    request =
                        request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                }
                _ => {}
            }
            let request = request.body(Body::from(body)).unwrap();
            deliver(&rt, &world, request, "voicemeup", input);
            1
        },
    );
}

#[test]
fn fuzz_vonage_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "vonage",
        json!({"application_id": "aaaaaaaa-0000-4000-8000-0000000000a1",
            "private_key": include_str!("../fixtures/keys/vonage-test-private.pem"),
            "signature_secret": VONAGE_SIGNATURE_SECRET}),
    );
    run(
        "vonage",
        Shape::Json,
        fixtures(&["vonage_"]),
        2000,
        |input, variant, sign| {
            let path = if variant % 2 == 0 {
                "/webhooks/vonage"
            } else {
                "/webhooks/vonage/status"
            };
            let now = chrono::Utc::now().timestamp();
            // Sometimes outside the five-minute window.
            let iat = if variant % 8 == 5 { now - 600 } else { now };
            let authorization = if sign {
                vonage::callback_authorization(VONAGE_SIGNATURE_SECRET, input, iat)
                    .expect("a non-empty secret")
            } else {
                format!("Bearer {}", "AAAA".repeat(11))
            };
            let request = Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, authorization)
                .body(Body::from(input.to_vec()))
                .unwrap();
            deliver(&rt, &world, request, "vonage", input);
            1
        },
    );
}

/// SendGrid's test key (tests/fixtures/keys), signing Event Webhook posts like SendGrid.
fn sendgrid_signature(timestamp: &str, body: &[u8]) -> String {
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{DerSignature, SigningKey};
    use p256::pkcs8::DecodePrivateKey;
    let pem = include_str!("../fixtures/keys/sendgrid-test-private.pem");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let key = SigningKey::from_pkcs8_der(&der).unwrap();
    let signature: DerSignature = key.sign(&[timestamp.as_bytes(), body].concat());
    base64::engine::general_purpose::STANDARD.encode(signature.as_bytes())
}

/// SendGrid: Inbound Parse multipart bodies (boundary `xYzZY`) with the tenant's URL secret
/// or a wrong one, and Event Webhook batches signed with the test key (or not); each input
/// goes to both routes, so either parser also meets the other's input.
#[test]
fn fuzz_sendgrid_webhooks() {
    const ADDRESS: &str = "dispatch@north.example";
    const SECRET: &str = "fuzz-sendgrid-parse-secret";
    let rt = runtime();
    let world = World::new(NOWHERE);
    rt.block_on(async {
        world.tenant("north").await;
        let config = json!({"api_key": "SG.fuzz", "webhook_secret": SECRET,
            "event_public_key": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEH3+aj/qEATycUbqgPpiYP3Ggxs/jlarOe27T5pQiIlTlQgO+TD80efjJxCQVyJzR0ULDAngVQzMjpm13KYcTkQ=="});
        world
            .provider("north", "sendgrid", config, ADDRESS, &["email"])
            .await;
    });
    run(
        "sendgrid",
        Shape::Bytes,
        Vec::new(),
        2000,
        |input, variant, sign| {
            let request = if variant % 2 == 0 {
                let secret = if sign { SECRET } else { "wrong-secret" };
                Request::post(format!("/webhooks/sendgrid?secret={secret}"))
                    .header(header::CONTENT_TYPE, "multipart/form-data; boundary=xYzZY")
                    .body(Body::from(input.to_vec()))
                    .unwrap()
            } else {
                let timestamp = "1764500000";
                let signature = if sign {
                    sendgrid_signature(timestamp, input)
                } else {
                    "MEUCIQ==".into()
                };
                Request::post("/webhooks/sendgrid/events")
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(sendgrid::SIGNATURE_HEADER, signature)
                    .header(sendgrid::TIMESTAMP_HEADER, timestamp)
                    .body(Body::from(input.to_vec()))
                    .unwrap()
            };
            deliver(&rt, &world, request, "sendgrid", input);
            1
        },
    );
}

#[test]
fn fuzz_bird_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "bird",
        json!({"workspace_id": "5f3e9a1c-0000-4000-8000-00000000b1d0",
            "channel_id": "614208aa-b153-4d5d-9989-2fddfc0ce4c3",
            "access_key": "fuzz-bird-access-key", "signing_key": BIRD_SIGNING_KEY}),
    );
    run(
        "bird",
        Shape::Json,
        fixtures(&["bird_"]),
        2000,
        |input, variant, sign| {
            let now = chrono::Utc::now().timestamp();
            // Sometimes outside the five-minute replay window.
            let ts = if variant % 8 == 5 { now - 600 } else { now }.to_string();
            let signature = if sign {
                bird::signature(
                    BIRD_SIGNING_KEY,
                    &ts,
                    &format!("{PUBLIC_URL}/webhooks/bird"),
                    input,
                )
            } else {
                "AAAA".repeat(11)
            };
            let request = Request::post("/webhooks/bird")
                .header(header::CONTENT_TYPE, "application/json")
                .header(bird::SIGNATURE_HEADER, signature)
                .header(bird::TIMESTAMP_HEADER, ts)
                .body(Body::from(input.to_vec()))
                .unwrap();
            deliver(&rt, &world, request, "bird", input);
            1
        },
    );
}

#[test]
fn fuzz_inteliquent_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "inteliquent",
        json!({"api_key": "fuzz-inteliquent-api-key", "webhook_key": INTELIQUENT_WEBHOOK_KEY}),
    );
    run(
        "inteliquent",
        Shape::Json,
        fixtures(&["inteliquent_"]),
        2000,
        |input, variant, sign| {
            let message_id = format!("fuzz-{variant}");
            let token = if sign {
                inteliquent::verification_token(INTELIQUENT_WEBHOOK_KEY, &message_id)
            } else {
                "00".repeat(32)
            };
            let request = Request::post("/webhooks/inteliquent")
                .header(header::CONTENT_TYPE, "application/json")
                .header(inteliquent::MESSAGE_ID_HEADER, message_id)
                .header(inteliquent::TOKEN_HEADER, token)
                .body(Body::from(input.to_vec()))
                .unwrap();
            deliver(&rt, &world, request, "inteliquent", input);
            1
        },
    );
}

/// MessageBird's forwarded SMS and status reports: the fields as a GET query on either route
/// or as a POSTed form, with a `MessageBird-Signature-JWT` over the URL (and body).
#[test]
fn fuzz_messagebird_webhooks() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "messagebird",
        json!({"access_key": "fuzz-messagebird-access-key",
            "signing_key": MESSAGEBIRD_SIGNING_KEY}),
    );
    run(
        "messagebird",
        Shape::Form,
        fixtures(&["messagebird_"]),
        2000,
        |input, variant, sign| {
            // Reports to the status route, messages to the other; now and then crossed.
            let report = input.windows(7).any(|w| w == b"status=");
            let route = if report != (variant % 7 == 3) {
                "/webhooks/messagebird/status"
            } else {
                "/webhooks/messagebird"
            };
            let (uri, body, method) = if variant % 2 == 0 {
                (
                    format!("{route}?{}", uri_safe(input)),
                    Vec::new(),
                    Method::GET,
                )
            } else {
                (route.to_string(), input.to_vec(), Method::POST)
            };
            let now = chrono::Utc::now().timestamp();
            // Sometimes long expired.
            let at = if variant % 8 == 5 { now - 600 } else { now };
            let token = if sign {
                messagebird::signature_jwt(
                    MESSAGEBIRD_SIGNING_KEY,
                    &format!("{PUBLIC_URL}{uri}"),
                    &body,
                    at,
                )
            } else {
                "eyJhbGciOiJIUzI1NiJ9.e30.AAAA".into()
            };
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(messagebird::SIGNATURE_HEADER, token)
                .body(Body::from(body))
                .unwrap();
            deliver(&rt, &world, request, "messagebird", input);
            1
        },
    );
}

/// signal-cli has no webhook: its `receive` results (JSON-RPC, or the SSE stream) go through
/// the adapter's parser and, for the tenant's number, through the conversation updater.
#[test]
fn fuzz_signal_receive() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "signal",
        json!({"rpc_url": format!("{NOWHERE}/api/v1/rpc"), "account": NUMBER}),
    );
    let adapter = SignalAdapter::new(http_client(Duration::from_millis(100)));
    let tenant = TenantId::parse("north").unwrap();
    let credentials =
        omni_core::providers::Credentials::Signal(omni_core::providers::SignalConfig {
            rpc_url: format!("{NOWHERE}/api/v1/rpc"),
            account: Some(NUMBER.into()),
        });
    let seeds = fixtures(&["signalcli_receive_", "signalcli_events_"]);
    run(
        "signal",
        Shape::Json,
        seeds,
        10000,
        |input, variant, _sign| {
            let request = WebhookRequest {
                method: "POST".into(),
                url: format!("{PUBLIC_URL}/signal"),
                headers: vec![(
                    "content-type".into(),
                    if variant % 2 == 0 {
                        "application/json"
                    } else {
                        "text/event-stream"
                    }
                    .into(),
                )],
                body: input.to_vec(),
            };
            assert!(adapter.verify_inbound(&request, &credentials).is_ok());
            // Parser outcomes stand in for statuses: 200 events, 204 none, 400 refused.
            let parsed = adapter.normalize_inbound(&request);
            let outcome = match &parsed {
                Ok(events) if !events.is_empty() => 200,
                Ok(_) => 204,
                Err(_) => 400,
            };
            STATUSES.with(|s| *s.borrow_mut().entry(outcome).or_default() += 1);
            if let Ok(events) = parsed {
                rt.block_on(async {
                    for event in events {
                        let job = Job::Inbound {
                            tenant_id: tenant.clone(),
                            event,
                        };
                        world
                            .services
                            .queue
                            .enqueue(&job, Duration::ZERO)
                            .await
                            .unwrap();
                    }
                    let ran = world.drain(false).await;
                    UPDATES.set(UPDATES.get() + ran);
                });
            }
            1
        },
    );
}

/// SES events come from EventBridge, not a webhook: each input is an EventBridge event (its
/// `detail` handed over, or the whole input as the detail) for the service, which may queue a
/// status, drop it, or refuse it as unroutable, but never fails otherwise.
#[test]
fn fuzz_ses_events() {
    let rt = runtime();
    let world = World::new(NOWHERE);
    rt.block_on(async {
        world.tenant("north").await;
        let config = json!({"access_key_id": "AKIAFUZZ0SES00000000",
            "secret_access_key": "fuzz-ses-secret", "region": "us-east-1"});
        // The fixtures' sender.
        world
            .provider("north", "ses", config, "dispatch@north.example", &["email"])
            .await;
    });
    run(
        "ses",
        Shape::Json,
        fixtures(&["ses_eventbridge_"]),
        1000,
        |input, variant, _sign| {
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(input) else {
                return 0;
            };
            let detail = match event.get("detail") {
                Some(detail) if variant % 2 == 0 => detail.clone(),
                _ => event,
            };
            // Outcomes stand in for statuses: 200 queued, 204 nothing to do, 4xx dropped.
            let outcome = match rt.block_on(world.services.handle_ses_event(&detail)) {
                Ok(true) => 200,
                Ok(false) => 204,
                Err(ServiceError::InvalidRequest(_)) => 400,
                Err(ServiceError::NotFound(_)) => 404,
                Err(e) => panic!("SES event failed: {e:?} for {detail}"),
            };
            STATUSES.with(|s| *s.borrow_mut().entry(outcome).or_default() += 1);
            let ran = rt.block_on(world.drain(false));
            UPDATES.set(UPDATES.get() + ran);
            1
        },
    );
}

/// SES over SNS (`/webhooks/ses`): SNS messages of every type; signed inputs get the test
/// certificate's URL (and, for confirmations, the AWS fake's SubscribeURL) on every other
/// variant and are signed with the test key, so they reach the SES parsers, routing and the
/// topic check; unsigned ones keep whatever signature and URLs they carry.
#[test]
fn fuzz_ses_sns_webhooks() {
    const ADDRESS: &str = "dispatch@north.example";
    let rt = runtime();
    let aws = rt.block_on(async {
        let aws = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::path("/cert.pem"))
            .respond_with(
                wiremock::ResponseTemplate::new(200).set_body_string(sns_signer::CERT_PEM),
            )
            .mount(&aws)
            .await;
        wiremock::Mock::given(wiremock::matchers::path("/confirm"))
            .respond_with(wiremock::ResponseTemplate::new(200))
            .mount(&aws)
            .await;
        aws
    });
    let world = World::new(&aws.uri());
    rt.block_on(async {
        world.tenant("north").await;
        let config = json!({"access_key_id": "AKIAFUZZ0SES00000000",
            "secret_access_key": "fuzz-ses-secret", "region": "eu-west-1",
            "sns_topic_arns": ["arn:aws:sns:eu-west-1:123456789012:omni-ses"]});
        world
            .provider("north", "ses", config, ADDRESS, &["email"])
            .await;
    });
    run(
        "ses_sns",
        Shape::Json,
        fixtures(&["sns_"]),
        1000,
        |input, variant, sign| {
            let body = match serde_json::from_slice::<serde_json::Value>(input) {
                Ok(mut m) if sign && m.is_object() => {
                    if variant % 2 == 0 {
                        m["SigningCertURL"] = format!("{}/cert.pem", aws.uri()).into();
                        if m.get("SubscribeURL").is_some() {
                            m["SubscribeURL"] = format!("{}/confirm", aws.uri()).into();
                        }
                    }
                    sns_signer::sign(&mut m);
                    m.to_string().into_bytes()
                }
                _ => input.to_vec(),
            };
            let request = Request::post("/webhooks/ses")
                .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
                .body(Body::from(body))
                .unwrap();
            deliver(&rt, &world, request, "ses_sns", input);
            1
        },
    );
}

#[test]
fn fuzz_send_api() {
    let rt = runtime();
    let world = world_with(
        &rt,
        "twilio",
        json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": TWILIO_TOKEN}),
    );
    let key = rt.block_on(async {
        world
            .admin(Method::POST, "/v1/admin/tenants/north/api-keys", None)
            .await
            .1["key"]
            .as_str()
            .unwrap()
            .to_string()
    });
    let seeds: Vec<Vec<u8>> = [
        json!({"channel": "sms", "to": "+15555550123", "body": "Units are on the way"}),
        json!({"channel": "sms", "to": "(555) 555-0123", "from": NUMBER, "body": "x", "idempotency_key": "k-1"}),
        json!({"channel": "mms", "to": "+15555550123", "media_urls": ["https://example.org/a.jpg", "https://example.org/b.png"]}),
        json!({"channel": "whatsapp", "to": "+15555550123", "body": "hola — ñ"}),
        json!({"channel": "signal", "to": "+15555550123", "body": "x"}),
        json!({"channel": "rcs", "to": "+447700900123", "body": "x"}),
    ]
    .iter()
    .map(|v| serde_json::to_vec(v).unwrap())
    .collect();
    run(
        "send_api",
        Shape::Json,
        seeds,
        6000,
        |input, variant, sign| {
            let mut request = Request::post("/v1/messages");
            if variant % 4 != 3 {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            let token = if sign {
                key.clone()
            } else {
                "omk_not-a-key".into()
            };
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            if variant % 8 == 6 {
                let idem = String::from_utf8_lossy(&input[..input.len().min(40)]).into_owned();
                if let Ok(value) = header::HeaderValue::from_str(&idem) {
                    request = request.header("idempotency-key", value);
                }
            }
            let request = request.body(Body::from(input.to_vec())).unwrap();
            rt.block_on(async {
                let reply = world.call(request).await;
                check(&reply, "send", input);
            });
            1
        },
    );
}

fn reply(status: u16, content_type: &str, body: &str) -> Reply {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
    Reply {
        status: axum::http::StatusCode::from_u16(status).unwrap(),
        headers,
        body: axum::body::Bytes::from(body.to_string()),
    }
}

#[test]
fn the_property_accepts_the_contracts_answers() {
    check(&reply(200, "text/xml", "<Response/>"), "ok", b"");
    let error = r#"{"error":"bad","code":"invalid_request","request_id":"r1"}"#;
    check(&reply(400, "application/json", error), "refusal", b"");
}

#[test]
#[should_panic(expected = "503")]
fn the_property_refuses_a_5xx() {
    let error = r#"{"error":"down","code":"unavailable","request_id":"r1"}"#;
    check(&reply(503, "application/json", error), "5xx", b"");
}

#[test]
#[should_panic(expected = "without JSON")]
fn the_property_refuses_a_plain_text_refusal() {
    check(&reply(400, "text/plain", "bad request"), "plain", b"");
}

#[test]
#[should_panic(expected = "error body")]
fn the_property_refuses_an_error_without_request_id() {
    check(
        &reply(
            401,
            "application/json",
            r#"{"error":"no","code":"unauthorized"}"#,
        ),
        "no id",
        b"",
    );
}
