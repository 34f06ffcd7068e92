//! `livechat`: the LiveChat visitor API, `/livechat/v1/*` (sessions, messages, read).

use omni_lambda::{init_tracing, Error, Omni};

// One invocation at a time per instance: a single-threaded runtime starts faster and smaller.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let omni = Omni::from_env().await?;
    omni_lambda::run_http(omni_api::livechat::app(omni.app_state())).await
}
