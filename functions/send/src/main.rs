//! `send`: `POST /v1/messages` and `GET /v1/messages/{id}`: accept, store in the outbox, queue for delivery.

use omni_lambda::{init_tracing, Error, Omni};

// One invocation at a time per instance: a single-threaded runtime starts faster and smaller.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let omni = Omni::from_env().await?;
    omni_lambda::run_http(omni_api::dispatch::send_app(omni.app_state())).await
}
