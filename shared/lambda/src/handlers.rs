//! The event handlers: SQS consumers with partial batch failures, the scheduled jobs, SES's
//! EventBridge events and the WebSocket routes. HTTP functions need none: they run the API
//! routers as they are.

use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use lambda_runtime::LambdaEvent;
use omni_core::ports::Job;
use omni_core::providers::signal::SignalAdapter;
use omni_core::service::{JobError, ServiceError};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::{Error, Omni};

/// Runs each job of an SQS batch; the ones to retry are reported back so SQS redelivers only
/// them, after the delay the service asked for (through the visibility timeout; after the
/// queue's receive limit SQS moves them to the dead-letter queue). A job that can never
/// succeed is dead-lettered at once, with its reason.
async fn consume(omni: &Omni, queue_url: &str, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        if let Err(reason) = consume_one(omni, queue_url, &record).await {
            warn!(message_id = %id, reason = %reason, "job will be retried");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

async fn consume_one(omni: &Omni, queue_url: &str, record: &SqsMessage) -> Result<(), String> {
    let body = record.body.as_deref().unwrap_or_default();
    // Not a job of ours: retrying cannot help, so SQS's redrive will dead-letter it.
    let job: Job = serde_json::from_str(body).map_err(|e| format!("not a job: {e}"))?;
    match omni.services.handle_job(&job).await {
        Ok(()) => Ok(()),
        Err(JobError::Retry(delay, reason)) => {
            if let Some(receipt) = &record.receipt_handle {
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
    Ok(consume(omni, &queue, event.payload).await)
}

/// `delivery-worker`: hands queued messages to their carrier, with the retry policy.
pub async fn delivery_worker(
    omni: &Omni,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let queue = omni.backend.resources().delivery_queue_url.clone();
    Ok(consume(omni, &queue, event.payload).await)
}

/// What a sweep did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Stranded queued messages handed to the delivery worker again.
    pub requeued: usize,
    /// Raw webhook payloads past their retention, deleted.
    pub purged: u64,
    /// Halves of split messages (VoiceMeUp MMS) whose other half never came, delivered alone.
    pub flushed: usize,
}

/// `outbox-sweeper` (scheduled): re-queues stranded outbound messages, delivers split-message
/// halves that waited for their other half long enough, and purges raw payloads past their
/// retention.
pub async fn outbox_sweeper(
    omni: &Omni,
    _event: LambdaEvent<EventBridgeEvent>,
) -> Result<SweepReport, Error> {
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
    info!(requeued, flushed, purged, "sweep done");
    Ok(SweepReport {
        requeued,
        purged,
        flushed,
    })
}

/// What a Signal poll did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollReport {
    /// Messages and receipts received and queued.
    pub received: usize,
}

/// `signal-poller` (scheduled): polls each tenant's signal-cli for new messages.
pub async fn signal_poller(
    omni: &Omni,
    _event: LambdaEvent<EventBridgeEvent>,
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
        return Ok(ws_response(200, r#"{"type":"pong"}"#));
    }
    let token = request.query_string_parameters.first("token").unwrap_or("");
    let client = context
        .identity
        .source_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok());
    let owner = match omni.services.authenticate_key(token, client).await {
        Ok(owner) => owner,
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
    // Counted from the table: every ws-connect instance sees the same connections. Two
    // connections racing past the last place may both get in; the next is refused.
    let (open, of_key) = omni
        .backend
        .connection_counts(&owner.tenant, &owner.key_id)
        .await
        .map_err(|e| internal(e.into()))?;
    if open >= omni.ws_limits.per_tenant || of_key >= omni.ws_limits.per_key {
        return Ok(ws_response(
            429,
            r#"{"error":"as many dashboards are open as may be","code":"too_many_connections"}"#,
        ));
    }
    omni.backend
        .add_connection(&owner.tenant, &owner.key_id, connection)
        .await
        .map_err(|e| internal(e.into()))?;
    info!(tenant_id = %owner.tenant, key_id = %owner.key_id, connection, "dashboard connected");
    Ok(ws_response(200, ""))
}

/// `ws-disconnect`: forgets the connection.
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
        info!(
            connection,
            known = tenant.is_some(),
            "dashboard disconnected"
        );
    }
    Ok(ws_response(200, ""))
}
