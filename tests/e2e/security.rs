//! Hardening found by an outside probe (issue 22): start-up refusals, file modes, secrets,
//! throttled authentication, API key revocation, WebSocket limits.

use std::process::Command;

use omni_core::providers::twilio;

use crate::harness::{Server, ACCOUNT_SID, ADMIN, MASTER_KEY};

/// Runs `omni serve` with `env` and expects it to refuse to start; its stderr.
fn refused_start(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omni"));
    cmd.arg("serve")
        .env_clear()
        .env("OMNI_ADDR", "127.0.0.1:0")
        .env("OMNI_DB", dir.path().join("omni.db"))
        .env("OMNI_ADMIN_TOKEN", ADMIN)
        .env("OMNI_MASTER_KEY", MASTER_KEY);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A server that starts anyway would run until killed: bound the wait.
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("omni started with {env:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "omni exited 0 with {env:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `OMNI_PUBLIC_URL=` set but empty made webhook signature checks trust the client's `Host`
/// header; the server now refuses to start with it.
#[test]
fn an_empty_public_url_is_refused_at_start() {
    let stderr = refused_start(&[("OMNI_PUBLIC_URL", "")]);
    assert!(stderr.contains("OMNI_PUBLIC_URL"), "{stderr}");
}

/// With a public URL configured, a Twilio webhook signed for the URL named by its own `Host`
/// header is refused: signature checks never take the base URL from the client.
#[tokio::test]
async fn a_webhook_signed_for_its_own_host_header_is_refused() {
    let s = Server::start(&[]).await;
    let token = "twilio-auth-token-host-0001";
    s.twilio_tenant("north", token, "+15555550100").await;
    let params = [
        ("MessageSid", "SMhost0000000000000000000000000001"),
        ("AccountSid", ACCOUNT_SID),
        ("From", "+15555550123"),
        ("To", "+15555550100"),
        ("Body", "forged"),
    ];
    let evil = "https://evil.example/webhooks/twilio";
    let response = s
        .http
        .post(s.url("/webhooks/twilio"))
        .header("host", "evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            twilio::signature(evil, &params, token),
        )
        .body(serde_urlencoded::to_string(params).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
