//! `outbox-sweeper`: Scheduled: re-queues outbound messages that never reached the delivery queue and purges expired raw payloads.

use omni_lambda::{init_tracing, Error, Omni};

// One invocation at a time per instance: a single-threaded runtime starts faster and smaller.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let omni = Omni::from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(|event| {
        omni_lambda::outbox_sweeper(&omni, event)
    }))
    .await
}
