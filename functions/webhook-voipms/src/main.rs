//! `webhook-voipms`: VoIP.ms SMS/MMS callbacks: verified by the tenant's secret, normalised and queued.

use omni_lambda::{init_tracing, Error, Omni};

// One invocation at a time per instance: a single-threaded runtime starts faster and smaller.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let omni = Omni::from_env().await?;
    omni_lambda::run_http(omni_api::webhooks::app(omni.app_state())).await
}
