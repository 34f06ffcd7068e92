//! `event-dispatcher`: Consumes the event webhook queue: posts signed deliveries to tenants' endpoints, retrying on their schedule.

use omni_lambda::{init_tracing, Error, Omni};

// One invocation at a time per instance: a single-threaded runtime starts faster and smaller.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let omni = Omni::from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(|event| {
        omni_lambda::event_dispatcher(&omni, event)
    }))
    .await
}
