//! `admin`: `/v1/admin/*`: tenants, carrier credentials, numbers, API keys; and a tenant's
//! event webhooks (`/v1/webhooks`).

use omni_lambda::{init_tracing, Error, Omni};

// One invocation at a time per instance: a single-threaded runtime starts faster and smaller.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let omni = Omni::from_env().await?;
    omni_lambda::run_http(omni_api::admin::app(omni.app_state())).await
}
