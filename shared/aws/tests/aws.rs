//! What only the AWS backend has: SQS queues and their dead-letter queues, WebSocket pushes
//! through the API Gateway management API, the credentials cache, and contended transactions.
//! Against the moto emulator (`AWS_ENDPOINT_URL`), and a recording fake of the management API.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use chrono::Utc;
use omni_aws::provision::{create_resources, emulator_config};
use omni_aws::{ApiGatewayPush, AwsBackend, SdkConfig};
use omni_conformance::{new_number, new_tenant_id};
use omni_core::domain::{Channel, InboundMessage, Priority, ProviderKind};
use omni_core::ports::{Job, MessageStore, Push, PushEvent, Queue, SecretStore};
use omni_core::providers::{Credentials, Secret, TwilioCredentials};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn fresh() -> (SdkConfig, AwsBackend) {
    let config = emulator_config().await;
    let prefix = format!("omni-test-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let resources = create_resources(&config, &prefix).await.unwrap();
    let backend = AwsBackend::new(&config, resources);
    (config, backend)
}

async fn receive(config: &SdkConfig, queue_url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    aws_sdk_sqs::Client::new(config)
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

fn deliver_job() -> Job {
    Job::Deliver {
        tenant_id: new_tenant_id("q"),
        message_id: Uuid::now_v7(),
        priority: Default::default(),
        slot: None,
    }
}

#[tokio::test]
async fn jobs_go_to_their_queue_delayed_and_dead_letters_carry_the_reason() {
    let (config, b) = fresh().await;
    let res = b.resources().clone();
    let deliver = deliver_job();
    b.enqueue(&deliver, Duration::ZERO).await.unwrap();
    b.enqueue(&deliver_job(), Duration::from_secs(60))
        .await
        .unwrap();
    let got = receive(&config, &res.delivery_queue_url).await;
    assert_eq!(got.len(), 1, "the delayed job is not visible yet");
    let job: Job = serde_json::from_str(got[0].body().unwrap()).unwrap();
    assert_eq!(job, deliver);
    assert!(receive(&config, &res.inbound_queue_url).await.is_empty());

    // Bulk messages have a queue of their own; urgent ones share the delivery queue's front.
    let job = |priority| Job::Deliver {
        tenant_id: new_tenant_id("b"),
        message_id: Uuid::now_v7(),
        priority,
        slot: None,
    };
    let (bulk, high) = (job(Priority::Bulk), job(Priority::High));
    b.enqueue(&bulk, Duration::ZERO).await.unwrap();
    b.enqueue(&high, Duration::ZERO).await.unwrap();
    let bulk_url = res.bulk_queue_url.clone().expect("provisioned");
    let got = receive(&config, &bulk_url).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        serde_json::from_str::<Job>(got[0].body().unwrap()).unwrap(),
        bulk
    );
    let delivery: Vec<Job> = receive(&config, &res.delivery_queue_url)
        .await
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    assert!(delivery.contains(&high) && !delivery.contains(&bulk));

    b.dead_letter(&deliver, "retry budget of 6 attempts exhausted")
        .await
        .unwrap();
    let dead = receive(&config, &res.delivery_dlq_url).await;
    assert_eq!(dead.len(), 1);
    let reason = dead[0].message_attributes().unwrap()["reason"]
        .string_value()
        .unwrap();
    assert_eq!(reason, "retry budget of 6 attempts exhausted");
}

#[tokio::test]
async fn a_job_received_too_often_is_redriven_to_the_dead_letter_queue() {
    let (config, b) = fresh().await;
    let res = b.resources().clone();
    let sqs = aws_sdk_sqs::Client::new(&config);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&res.inbound_queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(&attrs.attributes().unwrap()[&QueueAttributeName::RedrivePolicy])
            .unwrap();
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "5");
    let job = Job::Deliver {
        tenant_id: new_tenant_id("r"),
        message_id: Uuid::now_v7(),
        priority: Default::default(),
        slot: None,
    };
    b.enqueue(&job, Duration::ZERO).await.unwrap();
    // A consumer that fails it every time (visibility 0 = retry at once).
    for _ in 0..5 {
        let got = receive(&config, &res.delivery_queue_url).await;
        assert_eq!(got.len(), 1);
        // The consumer's retry path: visible again after the delay it asks for.
        b.redeliver_after(
            &res.delivery_queue_url,
            got[0].receipt_handle().unwrap(),
            Duration::ZERO,
        )
        .await
        .unwrap();
    }
    assert!(receive(&config, &res.delivery_queue_url).await.is_empty());
    let dead = receive(&config, &res.delivery_dlq_url).await;
    assert_eq!(dead.len(), 1, "moved to the dead-letter queue");
    assert_eq!(
        serde_json::from_str::<Job>(dead[0].body().unwrap()).unwrap(),
        job
    );
}

fn event(tenant: &omni_core::domain::TenantId) -> PushEvent {
    PushEvent::about("conversation.updated", tenant, Uuid::now_v7())
}

#[tokio::test]
async fn pushes_reach_only_the_tenants_dashboards_and_gone_ones_are_forgotten() {
    let (config, b) = fresh().await;
    let management = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/@connections/gone1"))
        .respond_with(
            ResponseTemplate::new(410)
                .insert_header("x-amzn-ErrorType", "GoneException")
                .set_body_json(serde_json::json!({"message": "Gone"})),
        )
        .mount(&management)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&management)
        .await;
    let (a, other) = (new_tenant_id("a"), new_tenant_id("b"));
    for (tenant, connection) in [(&a, "alive1"), (&a, "gone1"), (&other, "theirs1")] {
        b.add_connection(
            tenant,
            "key_1",
            &omni_core::ports::PresenceUser {
                id: "key_1".into(),
                name: "Dashboard".into(),
            },
            connection,
        )
        .await
        .unwrap();
    }
    let push = ApiGatewayPush::new(&config, b.clone(), &management.uri());
    let sent = event(&a);
    push.push(&sent).await.unwrap();

    let requests = management.received_requests().await.unwrap();
    let mut paths: Vec<_> = requests.iter().map(|r| r.url.path().to_owned()).collect();
    paths.sort();
    assert_eq!(paths, ["/@connections/alive1", "/@connections/gone1"]);
    let alive = requests
        .iter()
        .find(|r| r.url.path() == "/@connections/alive1")
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<PushEvent>(&alive.body).unwrap(),
        sent
    );
    assert_eq!(b.connections(&a).await.unwrap(), ["alive1"]);
    assert_eq!(b.connections(&other).await.unwrap(), ["theirs1"]);

    assert_eq!(
        b.remove_connection("alive1").await.unwrap(),
        Some(a.clone())
    );
    assert!(b.connections(&a).await.unwrap().is_empty());
    assert_eq!(b.remove_connection("alive1").await.unwrap(), None);
}

#[tokio::test]
async fn post_to_connection_works_against_the_emulator_and_failures_are_reported() {
    let (config, b) = fresh().await;
    let tenant = new_tenant_id("e");
    b.add_connection(
        &tenant,
        "key_1",
        &omni_core::ports::PresenceUser {
            id: "key_1".into(),
            name: "Dashboard".into(),
        },
        "conn1",
    )
    .await
    .unwrap();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    ApiGatewayPush::new(&config, b.clone(), &endpoint)
        .push(&event(&tenant))
        .await
        .expect("PostToConnection through moto");

    let broken = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&broken)
        .await;
    let result = ApiGatewayPush::new(&config, b.clone(), &broken.uri())
        .push(&event(&tenant))
        .await;
    assert!(result.is_err(), "a failed push is reported");
    assert_eq!(b.connections(&tenant).await.unwrap(), ["conn1"], "but kept");
}

fn twilio(token: &str) -> Credentials {
    Credentials::Twilio(TwilioCredentials {
        account_sid: "AC00000000000000000000000000000000".into(),
        auth_token: Secret::new(token),
        webhook_keys: Default::default(),
    })
}

fn token(c: Option<Credentials>) -> String {
    match c {
        Some(Credentials::Twilio(t)) => t.auth_token.expose().to_owned(),
        other => panic!("not twilio: {other:?}"),
    }
}

#[tokio::test]
async fn credentials_are_cached_for_their_ttl() {
    let (config, writer) = fresh().await;
    let resources = writer.resources().clone();
    let cached = AwsBackend::new(&config, resources.clone());
    let uncached = AwsBackend::new(&config, resources).with_secret_ttl(Duration::ZERO);
    let tenant = new_tenant_id("c");
    writer
        .put_credentials(&tenant, &twilio("first"))
        .await
        .unwrap();
    let read = |b: &AwsBackend| {
        let (b, t) = (b.clone(), tenant.clone());
        async move { token(b.get_credentials(&t, ProviderKind::Twilio).await.unwrap()) }
    };
    assert_eq!(read(&cached).await, "first");
    writer
        .put_credentials(&tenant, &twilio("rotated"))
        .await
        .unwrap();
    assert_eq!(read(&cached).await, "first", "served from memory");
    assert_eq!(
        read(&uncached).await,
        "rotated",
        "read from Secrets Manager"
    );
    assert_eq!(
        read(&writer).await,
        "rotated",
        "a writer sees its own write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_messages_to_one_conversation_are_all_counted() {
    let (_, b) = fresh().await;
    let b = Arc::new(b);
    let tenant = new_tenant_id("busy");
    let (contact, ours) = (new_number(), new_number());
    const N: usize = 25;
    let tasks = (0..N).map(|i| {
        let (b, tenant, contact, ours) = (b.clone(), tenant.clone(), contact.clone(), ours.clone());
        tokio::spawn(async move {
            let m = InboundMessage {
                id: Uuid::now_v7(),
                provider: ProviderKind::Twilio,
                provider_message_id: format!("SMbusy{i}"),
                channel: Channel::Sms,
                from: contact,
                to: ours,
                body: Some(format!("m{i}")),
                media: vec![],
                profile_name: None,
                received_at: Utc::now(),
                auto_submitted: false,
            };
            b.apply_inbound(&tenant, &m).await.unwrap().unwrap()
        })
    });
    let results = futures::future::join_all(tasks).await;
    let conversation = results[0].as_ref().unwrap().1.id;
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap().1.id == conversation));
    let stored = b
        .get_conversation(&tenant, conversation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.unread_count, N as i64);
    let page = b
        .list_messages(&tenant, conversation, 100, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), N);
    let newest = page
        .items
        .iter()
        .max_by_key(|m| (m.created_at, m.id))
        .unwrap();
    assert_eq!(stored.last_message.unwrap().id, newest.id);
}

/// A raw webhook's body (a carrier's payload, with the contact's words) is stored once, in
/// the table: no index copies it (the purge lists raw items through a keys-only index), and
/// the purge still finds them there.
#[tokio::test]
async fn raw_webhook_bodies_are_not_copied_into_any_index() {
    let (config, b) = fresh().await;
    let tenant = new_tenant_id("raw");
    let expires = Utc::now() - chrono::TimeDelta::seconds(1);
    assert!(b
        .save_raw_webhook(
            &tenant,
            ProviderKind::Twilio,
            "SM-raw-1",
            b"Body=secret+words",
            expires
        )
        .await
        .unwrap());
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let mut listed = 0;
    for index in ["gsi1", "gsi2", "gsi3"] {
        let items = ddb
            .scan()
            .table_name(&b.resources().table)
            .index_name(index)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        for item in items {
            assert!(
                !item.contains_key("body"),
                "{index} holds a raw body: {item:?}"
            );
            listed += 1;
        }
    }
    assert_eq!(listed, 1, "the raw item is listed once, for the purge");
    assert_eq!(b.purge_expired(Utc::now()).await.unwrap(), 1);
}

/// A conversation made before conversation ids were derived (a random id, found through its
/// thread item) keeps receiving its contact's messages.
#[tokio::test]
async fn a_conversation_with_a_random_id_is_still_found_through_its_thread() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (config, b) = fresh().await;
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let table = b.resources().table.clone();
    let tenant = new_tenant_id("legacy");
    let (contact, ours) = (new_number(), new_number());
    let message = |i: u32| InboundMessage {
        id: Uuid::now_v7(),
        provider: ProviderKind::Twilio,
        provider_message_id: format!("SMlegacy{i}"),
        channel: Channel::Sms,
        from: contact.clone(),
        to: ours.clone(),
        body: Some(format!("m{i}")),
        media: vec![],
        profile_name: None,
        received_at: Utc::now(),
        auto_submitted: false,
    };
    let (_, first) = b
        .apply_inbound(&tenant, &message(1))
        .await
        .unwrap()
        .unwrap();

    // Move the conversation to a random id, as one made before ids were derived has.
    let legacy = Uuid::now_v7();
    let key = |id: Uuid| {
        [
            (
                "pk".to_owned(),
                AttributeValue::S(format!("C#{tenant}#{id}")),
            ),
            ("sk".to_owned(), AttributeValue::S("C".into())),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>()
    };
    let mut item = ddb
        .get_item()
        .table_name(&table)
        .set_key(Some(key(first.id)))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    item.extend(key(legacy));
    item.insert("id".into(), AttributeValue::S(legacy.to_string()));
    ddb.put_item()
        .table_name(&table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    ddb.delete_item()
        .table_name(&table)
        .set_key(Some(key(first.id)))
        .send()
        .await
        .unwrap();
    let thread = format!("TH#{tenant}#sms#{contact}");
    ddb.update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(thread))
        .key("sk", AttributeValue::S("TH".into()))
        .update_expression("SET conversation_id = :id")
        .expression_attribute_values(":id", AttributeValue::S(legacy.to_string()))
        .send()
        .await
        .unwrap();

    let (_, second) = b
        .apply_inbound(&tenant, &message(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, legacy);
    assert_eq!(second.unread_count, 2);
    assert_eq!(
        b.get_conversation(&tenant, legacy).await.unwrap(),
        Some(second)
    );
    assert_eq!(b.get_conversation(&tenant, first.id).await.unwrap(), None);
}

/// LiveChat uploads go to the media bucket under the tenant, come back with their type, are
/// another tenant's miss, and are handed out through a presigned link that needs nothing else.
#[tokio::test]
async fn livechat_uploads_round_trip_through_s3_and_presigned_links() {
    use omni_core::ports::UploadStore;
    use omni_core::providers::MediaContent;
    let config = emulator_config().await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("moto");
    let bucket = format!("omni-test-{}", &Uuid::new_v4().simple().to_string()[..12]);
    // moto serves path-style buckets and checks no signature on CreateBucket.
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", endpoint.trim_end_matches('/')))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let http = reqwest::Client::new();
    let store = omni_aws::S3MediaStore::new(&config, http.clone(), &bucket).unwrap();
    let (a, b) = (new_tenant_id("a"), new_tenant_id("b"));
    let id = Uuid::new_v4();
    let png = MediaContent {
        content_type: Some("image/png".into()),
        bytes: b"\x89PNG\r\n\x1a\nrest-of-it".to_vec(),
    };
    assert_eq!(store.upload_type(&a, id).await.unwrap(), None);
    store.put_upload(&a, id, &png).await.unwrap();
    assert_eq!(
        store.upload_type(&a, id).await.unwrap().as_deref(),
        Some("image/png")
    );
    assert_eq!(store.get_upload(&a, id).await.unwrap(), Some(png.clone()));
    assert_eq!(store.get_upload(&b, id).await.unwrap(), None);
    let link = store
        .signed_url(&a, id, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a presigned link");
    assert!(link.contains("X-Amz-Signature"), "{link}");
    let fetched = http.get(&link).send().await.unwrap();
    assert!(fetched.status().is_success());
    assert_eq!(
        fetched.bytes().await.unwrap().as_ref(),
        png.bytes.as_slice()
    );
}
