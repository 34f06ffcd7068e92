//! `whatsapp-forwarder`: Consumes the WhatsApp forwarding queue: hands routed business accounts' webhooks to their environment, with retries for 24 h.

use omni_lambda::{init_tracing, Error, Omni};

// One invocation at a time per instance: a single-threaded runtime starts faster and smaller.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let omni = Omni::from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(|event| {
        omni_lambda::whatsapp_forwarder(&omni, event)
    }))
    .await
}
