//! Signs Amazon SNS messages as SNS does (SignatureVersion 2: RSA PKCS#1 v1.5 over SHA-256)
//! with the test-only key whose self-signed certificate the tests serve in place of AWS's
//! (`tests/fixtures/keys/sns-test-*.pem`, through `OMNI_SNS_CERT_URL_PREFIX`). Shared by the
//! e2e and robustness tests.

use base64::Engine;
use serde_json::Value;

/// The test certificate (PEM), served as the SNS signing certificate.
pub const CERT_PEM: &str = include_str!("../fixtures/keys/sns-test-cert.pem");
const KEY_PEM: &str = include_str!("../fixtures/keys/sns-test-private.pem");

/// Signs the SNS message `m` (a JSON object) in place: `SignatureVersion` 2 and the
/// `Signature` over the documented keys it has, in the documented order.
pub fn sign(m: &mut Value) {
    let keys: &[&str] = if m["Type"] == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    let signed: String = keys
        .iter()
        .filter_map(|k| m[*k].as_str().map(|v| format!("{k}\n{v}\n")))
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let der: String = KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let key = ring::signature::RsaKeyPair::from_pkcs8(&b64.decode(der).unwrap()).unwrap();
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .unwrap();
    m["SignatureVersion"] = "2".into();
    m["Signature"] = b64.encode(signature).into();
}
