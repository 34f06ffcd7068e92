//! The SQS consumers against the emulator as Lambda runs them: a batch's records run side by
//! side within the invocation's deadline, failed records back off with their receive count,
//! and a carrier's long `Retry-After` is not cut short by the outbox sweeper.

mod seed;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use omni_aws::{AwsBackend, SdkConfig};
use omni_core::domain::{Channel, DeliveryStatus, ProviderKind, StatusUpdate, WebhookEvent};
use omni_core::model::NewOutbound;
use omni_core::ports::{Job, MessageStore};
use omni_lambda::{retry_delay, LambdaConfig, Omni};
use seed::*;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct World {
    config: SdkConfig,
    backend: AwsBackend,
    omni: Omni,
    carrier: MockServer,
    _management: MockServer,
}

/// The seeded world; the sweeper takes a message for lost after `sweep_after_secs`.
async fn world(sweep_after_secs: &str) -> World {
    let (config, backend, _) = seeded().await;
    let carrier = MockServer::start().await;
    let management = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&management)
        .await;
    let settings = LambdaConfig::from_args([
        "--ws-endpoint",
        &management.uri(),
        "--twilio-api-url",
        &carrier.uri(),
        "--sweep-after-secs",
        sweep_after_secs,
    ]);
    let omni = Omni::new(&settings, &config, backend.resources().clone())
        .await
        .unwrap();
    World {
        config,
        backend,
        omni,
        carrier,
        _management: management,
    }
}

fn twilio_messages() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path(format!(
        "/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    )))
}

fn accepted() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(serde_json::json!({
        "sid": format!("SM{}", Uuid::new_v4().simple()),
        "status": "queued"
    }))
}

async fn queue_message(w: &World) -> Uuid {
    let id = Uuid::now_v7();
    let message = NewOutbound {
        id,
        channel: Channel::Sms,
        from: number(TWILIO_NUMBER),
        to: number(CONTACT),
        body: Some("Units are on their way.".into()),
        media: vec![],
        template: None,
        subject: None,
        idempotency_key: None,
        at: Utc::now(),
        sent_by: None,
        priority: Default::default(),
        send_at: None,
        fallback: Vec::new(),
    };
    w.backend
        .create_outbound(&tenant(), &message)
        .await
        .unwrap();
    id
}

fn record(id: Uuid, receive_count: u32) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(format!("record-{id}"));
    record.body = Some(
        serde_json::to_string(&Job::Deliver {
            tenant_id: tenant(),
            message_id: id,
            priority: Default::default(),
            slot: None,
        })
        .unwrap(),
    );
    record
        .attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    record
}

/// An invocation of the consumer with `secs` seconds left, as Lambda's context gives it.
fn invocation(records: Vec<SqsMessage>, secs: u64) -> LambdaEvent<SqsEvent> {
    let mut event = SqsEvent::default();
    event.records = records;
    let mut context = Context::default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    context.deadline = (now + Duration::from_secs(secs)).as_millis() as u64;
    LambdaEvent::new(event, context)
}

async fn status(w: &World, id: Uuid) -> DeliveryStatus {
    w.backend
        .get_message(&tenant(), id)
        .await
        .unwrap()
        .unwrap()
        .status
}

/// A batch of five whose carrier takes 3 s a call finishes in about 3 s, not 15: the records
/// run side by side, so a slow carrier cannot run the batch past the function's timeout.
#[tokio::test]
async fn a_batch_runs_its_records_side_by_side() {
    let w = world("30").await;
    twilio_messages()
        .respond_with(accepted().set_delay(Duration::from_secs(3)))
        .expect(5)
        .mount(&w.carrier)
        .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(queue_message(&w).await);
    }
    let started = Instant::now();
    let response = omni_lambda::delivery_worker(
        &w.omni,
        invocation(ids.iter().map(|id| record(*id, 1)).collect(), 30),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert!(took < Duration::from_secs(9), "took {took:?}");
    for id in ids {
        assert_eq!(status(&w, id).await, DeliveryStatus::Sent);
    }
}

/// With too little of the invocation left for a carrier call to finish (15 s timeout, 5 s
/// left), no call starts: one cut off by the function's stop may have reached the carrier
/// unrecorded, and be sent again. The message waits for its retry instead.
#[tokio::test]
async fn no_carrier_call_starts_that_could_outlive_the_invocation() {
    let w = world("30").await;
    twilio_messages()
        .respond_with(accepted())
        .expect(0)
        .mount(&w.carrier)
        .await;
    let id = queue_message(&w).await;
    let response = omni_lambda::delivery_worker(&w.omni, invocation(vec![record(id, 1)], 5))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let message = w.backend.get_message(&tenant(), id).await.unwrap().unwrap();
    assert_eq!(message.status, DeliveryStatus::Queued);
    assert!(
        message
            .error_message
            .as_deref()
            .is_some_and(|e| e.contains("no time left")),
        "{message:?}"
    );
}

/// A record still running near the deadline (here a dashboard push that hangs) is reported
/// failed, so SQS redelivers it, instead of the invocation timing out with no answer for any
/// record of the batch.
#[tokio::test]
async fn a_record_running_into_the_deadline_is_reported_failed() {
    let w = world("30").await;
    let hanging = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&hanging)
        .await;
    let omni = Omni::new(
        &LambdaConfig::from_args([
            "--ws-endpoint",
            &hanging.uri(),
            "--twilio-api-url",
            &w.carrier.uri(),
            "--carrier-timeout-ms",
            "1000",
        ]),
        &w.config,
        w.backend.resources().clone(),
    )
    .await
    .unwrap();
    w.backend
        .add_connection(
            &tenant(),
            "key_consumers",
            &omni_core::ports::PresenceUser {
                id: "key_consumers".into(),
                name: "Dashboard".into(),
            },
            "Dashboard1=",
        )
        .await
        .unwrap();
    twilio_messages()
        .respond_with(accepted())
        .expect(1)
        .mount(&w.carrier)
        .await;
    let id = queue_message(&w).await;
    let started = Instant::now();
    // 5 s left: 2 s kept to answer, so the record has 3 s.
    let response = omni_lambda::delivery_worker(&omni, invocation(vec![record(id, 1)], 5))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(response.batch_item_failures.len(), 1, "{response:?}");
    // The carrier's acceptance was recorded before the push: the redelivery sends nothing.
    assert_eq!(status(&w, id).await, DeliveryStatus::Sent);
}

/// Failed records come back after a delay that doubles with each receive, capped at 15
/// minutes, and never shorter than what the job asked for.
#[test]
fn redelivery_backs_off_with_the_receive_count() {
    let asked = Duration::from_secs(1);
    let delays: Vec<u64> = (1..=12).map(|n| retry_delay(asked, n).as_secs()).collect();
    assert_eq!(
        delays,
        [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900],
        "{delays:?}"
    );
    assert_eq!(retry_delay(Duration::from_secs(60), 1).as_secs(), 60);
    assert_eq!(retry_delay(Duration::from_secs(86_400), 1).as_secs(), 900);
}

/// A carrier's 60 s `Retry-After` is honoured: the sweeper (here taking 1 s of silence for a
/// lost job) leaves the message alone until the retry is due, so it is not queued a second
/// time and sent early, spending two attempts.
#[tokio::test]
async fn a_long_retry_after_is_not_cut_short_by_the_sweeper() {
    let w = world("1").await;
    twilio_messages()
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "60")
                .set_body_json(serde_json::json!({"code": 20429, "message": "Too Many Requests"})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&w.carrier)
        .await;
    twilio_messages()
        .respond_with(accepted())
        .expect(0)
        .mount(&w.carrier)
        .await;
    let id = Uuid::parse_str(QUEUED_MESSAGE).unwrap();
    let response = omni_lambda::delivery_worker(&w.omni, invocation(vec![record(id, 1)], 30))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(status(&w, id).await, DeliveryStatus::Queued);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let sweep = omni_lambda::outbox_sweeper(
        &w.omni,
        // What EventBridge Scheduler sends a schedule without an input.
        LambdaEvent::new(serde_json::json!({}), Context::default()),
    )
    .await
    .unwrap();
    // Only the seed's stranded message; the retried one waits for its due time.
    assert_eq!(sweep.requeued, 1, "{sweep:?}");
    let visible = aws_sdk_sqs::Client::new(&w.config)
        .receive_message()
        .queue_url(&w.backend.resources().delivery_queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    for message in visible.messages.unwrap_or_default() {
        let job: Job = serde_json::from_str(message.body().unwrap()).unwrap();
        assert!(
            !matches!(job, Job::Deliver { message_id, .. } if message_id == id),
            "the retried message was queued again before its Retry-After"
        );
    }
    assert_eq!(status(&w, id).await, DeliveryStatus::Queued);
}

/// A status callback that beat its send's record is retried with the receive count's backoff:
/// on its third receive it stays away 8 s, not the 2 s the updater asks (at 2 s a row, the
/// queue's redrive would dead-letter it within seconds).
#[tokio::test]
async fn an_early_status_callback_backs_off_with_its_receive_count() {
    let w = world("30").await;
    let sqs = aws_sdk_sqs::Client::new(&w.config);
    let queue = w.backend.resources().inbound_queue_url.clone();
    let job = Job::Inbound {
        tenant_id: tenant(),
        event: WebhookEvent::Status(StatusUpdate {
            provider: ProviderKind::Twilio,
            provider_message_id: "SMnot0recorded0yet000000000000000".into(),
            status: DeliveryStatus::Delivered,
            raw_status: "delivered".into(),
            error_code: None,
            error_message: None,
            tenant_number: Some(number(TWILIO_NUMBER)),
            at: Utc::now(),
        }),
    };
    sqs.send_message()
        .queue_url(&queue)
        .message_body(serde_json::to_string(&job).unwrap())
        .send()
        .await
        .unwrap();
    let receive = |visibility: i32| {
        sqs.receive_message()
            .queue_url(&queue)
            .visibility_timeout(visibility)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
    };
    // Two receives that failed already (hidden for no time).
    for _ in 0..2 {
        assert_eq!(receive(0).await.unwrap().messages().len(), 1);
    }
    let third = receive(30).await.unwrap().messages()[0].clone();
    let mut record = SqsMessage::default();
    record.message_id = third.message_id().map(str::to_owned);
    record.receipt_handle = third.receipt_handle().map(str::to_owned);
    record.body = third.body().map(str::to_owned);
    for (name, value) in third.attributes().into_iter().flatten() {
        record
            .attributes
            .insert(name.as_str().to_owned(), value.clone());
    }
    assert_eq!(record.attributes["ApproximateReceiveCount"], "3");

    let response = omni_lambda::conversation_updater(&w.omni, invocation(vec![record], 30))
        .await
        .unwrap();
    assert_eq!(response.batch_item_failures.len(), 1, "{response:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        receive(0).await.unwrap().messages().is_empty(),
        "back after 3 s: the backoff did not grow with the receive count"
    );
}
