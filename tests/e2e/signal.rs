//! Signal through a signal-cli daemon fake: the poller feeds the inbound pipeline, sends go
//! out as JSON-RPC `send`, and receipts advance the message's status.

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::Server;

const ACCOUNT: &str = "+15555550100";
const CONTACT: &str = "+15555550123";

fn envelope(extra: Value) -> Value {
    let mut env = json!({"source": CONTACT, "sourceNumber": CONTACT, "sourceUuid": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "sourceName": "Jane Example", "sourceDevice": 1, "timestamp": 1735689600123u64});
    env.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"envelope": env, "account": ACCOUNT})
}

fn rpc_result(result: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"jsonrpc": "2.0", "id": "x", "result": result}))
}

#[tokio::test]
async fn signal_messages_are_polled_sent_and_receipted() {
    let daemon = MockServer::start().await;
    let text = envelope(
        json!({"dataMessage": {"timestamp": 1735689600123u64, "message": "Hello over Signal"}}),
    );
    Mock::given(method("POST"))
        .and(path("/api/v1/rpc"))
        .and(body_string_contains("\"receive\""))
        .respond_with(rpc_result(json!([text])))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&daemon)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/rpc"))
        .and(body_string_contains("\"send\""))
        .respond_with(rpc_result(json!({"timestamp": 1735689800123u64, "results": [{"recipientAddress": {"number": CONTACT}, "type": "SUCCESS"}]})))
        .mount(&daemon)
        .await;
    // Polls before the tenant is set up, and after the first message, find nothing new.
    Mock::given(method("POST"))
        .and(path("/api/v1/rpc"))
        .and(body_string_contains("\"receive\""))
        .respond_with(rpc_result(json!([])))
        .with_priority(5)
        .mount(&daemon)
        .await;

    let s = Server::start(&[]).await;
    let key = s.tenant("north").await;
    let rpc_url = format!("{}/api/v1/rpc", daemon.uri());
    let (st, b) = s
        .admin(
            Method::PUT,
            "/v1/admin/tenants/north/providers/signal",
            Some(json!({"rpc_url": rpc_url, "account": ACCOUNT})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .admin(
            Method::PUT,
            &format!("/v1/admin/tenants/north/numbers/{ACCOUNT}"),
            Some(json!({"provider": "signal", "channels": ["signal"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let mut feed = s.ws(&key).await;

    let list = s
        .eventually(15, "the polled Signal message", || async {
            let (_, l) = s.api(&key, Method::GET, "/v1/conversations", None).await;
            (l["items"].as_array()?.len() == 1).then_some(l)
        })
        .await;
    assert_eq!(list["items"][0]["channel"], "signal");
    assert_eq!(list["items"][0]["contact"], CONTACT);
    assert_eq!(
        list["items"][0]["last_message"]["body"],
        "Hello over Signal"
    );
    assert_eq!(list["items"][0]["unread_count"], 1);

    let (st, m) = s
        .api(
            &key,
            Method::POST,
            "/v1/messages",
            Some(json!({"channel": "signal", "to": CONTACT, "body": "Help is coming"})),
        )
        .await;
    assert_eq!(st, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let sent = s
        .eventually(15, "the Signal send", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["status"] == "sent").then_some(m)
        })
        .await;
    assert_eq!(sent["provider"], "signal");
    assert_eq!(sent["provider_message_id"], "1735689800123");
    let send_call = daemon
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .find(|v| v["method"] == "send")
        .expect("a JSON-RPC send");
    assert_eq!(send_call["jsonrpc"], "2.0");
    assert_eq!(send_call["params"]["recipient"], json!([CONTACT]));
    assert_eq!(send_call["params"]["message"], "Help is coming");
    assert_eq!(send_call["params"]["account"], ACCOUNT);

    // The contact's phone reads it: the receipt names our send timestamp.
    let receipt = envelope(
        json!({"receiptMessage": {"when": 1735689900000u64, "isDelivery": false, "isRead": true, "isViewed": false, "timestamps": [1735689800123u64]}}),
    );
    Mock::given(method("POST"))
        .and(path("/api/v1/rpc"))
        .and(body_string_contains("\"receive\""))
        .respond_with(rpc_result(json!([receipt])))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&daemon)
        .await;
    let pushed = feed.next_of("message.status", 15).await;
    let read = s
        .eventually(15, "the read receipt", || async {
            let (_, m) = s
                .api(&key, Method::GET, &format!("/v1/messages/{id}"), None)
                .await;
            (m["status"] == "read").then_some(m)
        })
        .await;
    assert_eq!(
        read["events"].as_array().unwrap().last().unwrap()["source"],
        "signal"
    );
    assert!(pushed.is_some(), "status changes are pushed");
}
