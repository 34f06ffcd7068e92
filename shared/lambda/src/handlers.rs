//! The event handlers: SQS consumers with partial batch failures, the scheduled jobs, SES's
//! EventBridge events and the WebSocket routes. HTTP functions need none: they run the API
//! routers as they are.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use futures::future::join_all;
use lambda_runtime::{Context, LambdaEvent};
use omni_core::ports::{Job, PresenceUser};
use omni_core::providers::signal::SignalAdapter;
use omni_core::service::{JobError, ServiceError};
use omni_core::team::Permission;
use serde::Serialize;
use tracing::{error, info, warn};

use crate::{Error, Omni};

/// Time kept back from an invocation's deadline to answer Lambda with the batch's failures.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);
/// The first redelivery delay of a failed record; it doubles with each receive.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest redelivery delay (SQS allows 12 hours; a quarter of an hour keeps a recovered
/// dependency from waiting long).
const LONGEST_RETRY: Duration = Duration::from_secs(900);

/// How long a failed record stays invisible before its next receive: what the job asked for,
/// and at least a delay doubling with each receive (2 s, 4 s, 8 s, ... up to 15 minutes), so
/// a transient failure (a storage hiccup, a status callback that beat its send's record) is
/// retried over minutes before the queue's redrive (`maxReceiveCount`) dead-letters it.
pub fn retry_delay(asked: Duration, receive_count: u32) -> Duration {
    let doubling = FIRST_RETRY.saturating_mul(1u32 << receive_count.saturating_sub(1).min(20));
    asked.max(doubling).min(LONGEST_RETRY)
}

/// When the invocation is stopped, from the context's deadline (epoch milliseconds); `None`
/// when the context names none (a test's default context).
fn invocation_deadline(context: &Context) -> Option<Instant> {
    if context.deadline == 0 {
        return None;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let left = u64::try_from(u128::from(context.deadline).saturating_sub(now_ms)).unwrap_or(0);
    Some(Instant::now() + Duration::from_millis(left))
}

/// Runs the jobs of an SQS batch concurrently, so one slow carrier cannot starve the rest of
/// the invocation's time; the ones to retry are reported back so SQS redelivers only them,
/// after the delay the service asked for and the receive count's backoff (through the
/// visibility timeout; after the queue's receive limit SQS moves them to the dead-letter
/// queue). A job that can never succeed is dead-lettered at once, with its reason. A record
/// still running close to the deadline is reported failed rather than lose the whole batch's
/// answer, and no carrier call starts unless it can finish before then.
async fn consume(omni: &Omni, queue_url: &str, event: LambdaEvent<SqsEvent>) -> SqsBatchResponse {
    let deadline = invocation_deadline(&event.context);
    let answer_by = deadline.map(|d| d.checked_sub(ANSWER_MARGIN).unwrap_or(d));
    let calls_until = answer_by.and_then(|d| d.checked_sub(omni.carrier_timeout));
    let records = &event.payload.records;
    let outcomes = join_all(records.iter().map(|record| async move {
        let run = consume_one(omni, queue_url, record, calls_until);
        match answer_by {
            Some(at) => tokio::time::timeout_at(at.into(), run)
                .await
                .unwrap_or_else(|_| Err("not done before the invocation's deadline".into())),
            None => run.await,
        }
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for (record, outcome) in records.iter().zip(outcomes) {
        if let Err(reason) = outcome {
            let id = record.message_id.clone().unwrap_or_default();
            warn!(message_id = %id, reason = %reason, "job will be retried");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

async fn consume_one(
    omni: &Omni,
    queue_url: &str,
    record: &SqsMessage,
    calls_until: Option<Instant>,
) -> Result<(), String> {
    let body = record.body.as_deref().unwrap_or_default();
    // Not a job of ours: retrying cannot help, so SQS's redrive will dead-letter it.
    let job: Job = serde_json::from_str(body).map_err(|e| format!("not a job: {e}"))?;
    match omni.services.handle_job_within(&job, calls_until).await {
        Ok(()) => Ok(()),
        Err(JobError::Retry(asked, reason)) => {
            if let Some(receipt) = &record.receipt_handle {
                let delay = retry_delay(asked, receive_count(record));
                if let Err(e) = omni
                    .backend
                    .redeliver_after(queue_url, receipt, delay)
                    .await
                {
                    error!(error = %e, "cannot set the retry delay; the queue's default applies");
                }
            }
            Err(reason)
        }
        Err(JobError::Fatal(reason)) => {
            error!(reason = %reason, "job dead-lettered");
            omni.services
                .queue
                .dead_letter(&job, &reason)
                .await
                .map_err(|e| format!("dead-lettering failed: {e}"))
        }
    }
}

/// `conversation-updater`: applies inbound messages and status updates from the inbound queue.
pub async fn conversation_updater(
    omni: &Omni,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let queue = omni.backend.resources().inbound_queue_url.clone();
    Ok(consume(omni, &queue, event).await)
}

/// `delivery-worker`: hands queued messages to their carrier, with the retry policy.
pub async fn delivery_worker(
    omni: &Omni,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    // One function serves both delivery queues; a batch comes from one of them.
    let resources = omni.backend.resources();
    let source = event
        .payload
        .records
        .first()
        .and_then(|r| r.event_source_arn.as_deref());
    let queue = match (&resources.bulk_queue_url, source) {
        (Some(bulk), Some(arn)) if queue_name(bulk) == arn.rsplit(':').next() => bulk.clone(),
        _ => resources.delivery_queue_url.clone(),
    };
    Ok(consume(omni, &queue, event).await)
}

/// A queue's name: the last segment of its URL, as of its ARN.
fn queue_name(url: &str) -> Option<&str> {
    url.rsplit('/').next()
}

/// `whatsapp-forwarder`: hands routed WhatsApp webhooks to their business account's
/// environment; a failed attempt is queued again by the job itself, with backoff, for 24 h.
pub async fn whatsapp_forwarder(
    omni: &Omni,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let queue = omni.backend.resources().forward_queue_url.clone();
    consume_configured(omni, queue, "OMNI_FORWARD_QUEUE_URL", event).await
}

/// `event-dispatcher`: posts event webhook deliveries to the tenants' endpoints, signed; a
/// failed attempt is queued again by the job itself for the next step of its schedule.
pub async fn event_dispatcher(
    omni: &Omni,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let queue = omni.backend.resources().events_queue_url.clone();
    consume_configured(omni, queue, "OMNI_EVENTS_QUEUE_URL", event).await
}

/// [`consume`] of a queue only some functions are given, named by `variable`.
async fn consume_configured(
    omni: &Omni,
    queue: Option<String>,
    variable: &str,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let queue = queue.ok_or_else(|| format!("{variable} is not set"))?;
    Ok(consume(omni, &queue, event).await)
}

/// How far ahead the sweeper queues scheduled messages: its schedule's period, so each goes
/// out on time through the queue's delay (SQS delays up to 15 minutes) however the sweeps fall.
const SCHEDULE_LOOKAHEAD: Duration = Duration::from_secs(60);

/// What a sweep did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Scheduled messages due before the next sweep, queued for their time.
    pub scheduled: usize,
    /// Stranded queued messages handed to the delivery worker again.
    pub requeued: usize,
    /// Raw webhook payloads past their retention, deleted.
    pub purged: u64,
    /// Halves of split messages (VoiceMeUp MMS) whose other half never came, delivered alone.
    pub flushed: usize,
    /// Event webhook deliveries whose job was lost, queued again.
    pub webhooks: usize,
}

/// `outbox-sweeper` (scheduled): queues scheduled messages about to be due, re-queues stranded
/// outbound messages, delivers split-message
/// halves that waited for their other half long enough, and purges raw payloads past their
/// retention. The payload is ignored: EventBridge Scheduler sends `{}` to a schedule without
/// an input, which is no `EventBridgeEvent`.
pub async fn outbox_sweeper(
    omni: &Omni,
    _event: LambdaEvent<serde_json::Value>,
) -> Result<SweepReport, Error> {
    let scheduled = omni
        .services
        .release_scheduled(SCHEDULE_LOOKAHEAD)
        .await
        .map_err(internal)?;
    let requeued = omni.services.sweep_outbox().await.map_err(internal)?;
    let flushed = omni
        .services
        .flush_split_messages()
        .await
        .map_err(internal)?;
    let purged = omni
        .services
        .messages
        .purge_expired(Utc::now())
        .await
        .map_err(|e| internal(e.into()))?;
    // Only where the event queue is configured: deliveries are queued to it.
    let webhooks = if omni.backend.resources().events_queue_url.is_some() {
        omni.services.sweep_webhooks().await.map_err(internal)?
    } else {
        0
    };
    info!(scheduled, requeued, flushed, purged, webhooks, "sweep done");
    Ok(SweepReport {
        scheduled,
        requeued,
        purged,
        flushed,
        webhooks,
    })
}

/// What a Signal poll did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollReport {
    /// Messages and receipts received and queued.
    pub received: usize,
}

/// `signal-poller` (scheduled): polls each tenant's signal-cli for new messages (the payload,
/// `{}` from EventBridge Scheduler, is ignored).
pub async fn signal_poller(
    omni: &Omni,
    _event: LambdaEvent<serde_json::Value>,
) -> Result<PollReport, Error> {
    let signal = SignalAdapter::new(omni_core::providers::http_client(Duration::from_secs(20)));
    let received = omni.services.poll_signal(&signal).await.map_err(internal)?;
    Ok(PollReport { received })
}

/// What one SES event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SesEventReport {
    /// A status update went to the conversation updater.
    pub queued: bool,
}

/// `ses-events` (an EventBridge rule on `aws.ses`): queues the delivery status an Amazon SES
/// event reports. An event no retry can place (mail Omni did not send, a sender no tenant
/// holds, a malformed record) is acknowledged with a warning, since failing would only make
/// Lambda retry it; a store or queue failure fails the invocation, which Lambda retries.
pub async fn ses_events(
    omni: &Omni,
    event: LambdaEvent<EventBridgeEvent>,
) -> Result<SesEventReport, Error> {
    let event = event.payload;
    match omni.services.handle_ses_event(&event.detail).await {
        Ok(queued) => Ok(SesEventReport { queued }),
        Err(e @ (ServiceError::InvalidRequest(_) | ServiceError::NotFound(_))) => {
            warn!(detail_type = %event.detail_type, error = %e, "SES event dropped");
            Ok(SesEventReport { queued: false })
        }
        Err(e) => Err(internal(e)),
    }
}

fn internal(e: ServiceError) -> Error {
    // Details stay in the logs; the invocation only fails.
    error!(error = ?e, "invocation failed");
    "internal error".into()
}

/// A dashboard's frame (`$default`): presence is relayed to the tenant's other dashboards;
/// anything else is a ping, answered `{"type":"pong"}`.
async fn ws_message(
    omni: &Omni,
    connection: &str,
    body: &str,
) -> Result<ApiGatewayProxyResponse, Error> {
    let Some((tenant, user)) = omni
        .backend
        .connection_user(connection)
        .await
        .map_err(|e| internal(e.into()))?
    else {
        return Ok(ws_response(200, r#"{"type":"pong"}"#));
    };
    match omni_api::ws::presence(body, &tenant, &user) {
        Some(event) => {
            omni.presence
                .relay(connection, &event)
                .await
                .map_err(|e| internal(e.into()))?;
            Ok(ws_response(200, ""))
        }
        None => Ok(ws_response(200, r#"{"type":"pong"}"#)),
    }
}

fn ws_response(status: i64, body: &str) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response.body = Some(Body::Text(body.to_owned()));
    response
}

/// `ws-connect`: `$connect` authenticates `?token=<API key>` and records the connection for the
/// key's tenant; `$default` answers `{"type":"pong"}` (dashboards ping to stay connected).
pub async fn ws_connect(
    omni: &Omni,
    event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    let request = event.payload;
    let context = &request.request_context;
    let Some(connection) = context.connection_id.as_deref() else {
        return Ok(ws_response(400, r#"{"error":"no connection id"}"#));
    };
    if context.route_key.as_deref() != Some("$connect") {
        return ws_message(omni, connection, request.body.as_deref().unwrap_or("")).await;
    }
    let token = request.query_string_parameters.first("token").unwrap_or("");
    if request.query_string_parameters.first("channel") == Some("livechat") {
        return visitor_connect(omni, &request.headers, token, connection).await;
    }
    let client = context
        .identity
        .source_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok());
    let caller = match omni.services.authenticate_caller(token, client).await {
        Ok(caller) => caller,
        Err(ServiceError::Unauthorized) => {
            return Ok(ws_response(
                401,
                r#"{"error":"a valid API key is required"}"#,
            ))
        }
        Err(ServiceError::LockedOut(_)) => {
            return Ok(ws_response(
                429,
                r#"{"error":"too many failed authentication attempts"}"#,
            ))
        }
        Err(e) => return Err(internal(e)),
    };
    if caller.require(Permission::ConversationsRead).is_err() {
        return Ok(ws_response(
            403,
            r#"{"error":"forbidden: this needs the conversations.read permission","code":"forbidden"}"#,
        ));
    }
    let (tenant, owner) = (&caller.tenant, caller.connection_owner());
    let user = PresenceUser {
        id: caller.actor.id.clone(),
        name: caller.actor.name.clone(),
    };
    // Counted from the table: every ws-connect instance sees the same connections. Two
    // connections racing past the last place may both get in; the next is refused.
    let (open, of_key) = omni
        .backend
        .connection_counts(tenant, &owner)
        .await
        .map_err(|e| internal(e.into()))?;
    if open >= omni.ws_limits.per_tenant || of_key >= omni.ws_limits.per_key {
        return Ok(ws_response(
            429,
            r#"{"error":"as many dashboards are open as may be","code":"too_many_connections"}"#,
        ));
    }
    omni.backend
        .add_connection(tenant, &owner, &user, connection)
        .await
        .map_err(|e| internal(e.into()))?;
    info!(tenant_id = %tenant, owner, connection, "dashboard connected");
    Ok(ws_response(200, ""))
}

/// A LiveChat visitor's `$connect` (`?channel=livechat&token=`), as `omni serve`'s
/// `/livechat/v1/ws`: the token and the page's origin checked against the widget, at most
/// [`VISITOR_SOCKETS_PER_CONVERSATION`](omni_api::ws::VISITOR_SOCKETS_PER_CONVERSATION)
/// sockets a conversation, and the replies that waited for the visitor delivered.
async fn visitor_connect(
    omni: &Omni,
    headers: &axum::http::HeaderMap,
    token: &str,
    connection: &str,
) -> Result<ApiGatewayProxyResponse, Error> {
    let visitor = match omni_api::livechat::visitor(&omni.app_state(), headers, token).await {
        Ok(visitor) => visitor,
        Err(refused) => {
            let status = i64::from(refused.status().as_u16());
            return Ok(ws_response(status, &refused.body().to_string()));
        }
    };
    let (tenant, conversation) = (&visitor.claims.tenant, visitor.conversation_id());
    let open = omni
        .backend
        .visitor_connections(tenant, conversation)
        .await
        .map_err(|e| internal(e.into()))?;
    if open.len() >= omni_api::ws::VISITOR_SOCKETS_PER_CONVERSATION {
        return Ok(ws_response(
            429,
            r#"{"error":"this chat has as many sockets open as it may","code":"too_many_connections"}"#,
        ));
    }
    // Before the socket is recorded: API Gateway takes no push to a connection until its
    // $connect has answered (it would answer Gone, and the socket be forgotten). A reply
    // sent between the two stays `sent` until the visitor's next connection; the widget
    // reads the history when the socket opens, so it is shown all the same.
    if let Err(e) = omni.services.visitor_connected(&visitor).await {
        warn!(error = %e, "waiting replies not marked delivered");
    }
    omni.backend
        .add_visitor_connection(tenant, conversation, connection)
        .await
        .map_err(|e| internal(e.into()))?;
    info!(tenant_id = %tenant, connection, "visitor connected");
    Ok(ws_response(200, ""))
}

/// `ws-disconnect`: forgets the connection (a dashboard's or a visitor's).
pub async fn ws_disconnect(
    omni: &Omni,
    event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    if let Some(connection) = event.payload.request_context.connection_id.as_deref() {
        let tenant = omni
            .backend
            .remove_connection(connection)
            .await
            .map_err(|e| internal(e.into()))?;
        info!(connection, known = tenant.is_some(), "connection closed");
    }
    Ok(ws_response(200, ""))
}
