//! The shared storage conformance suite against the AWS backend, over the wire to the moto
//! emulator (`AWS_ENDPOINT_URL`; `scripts/test` starts it). Each check gets its own table and
//! queues.

use omni_aws::provision::{create_resources, emulator_config};
use omni_aws::AwsBackend;
use uuid::Uuid;

async fn fresh() -> AwsBackend {
    let config = emulator_config().await;
    let prefix = format!("omni-test-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let resources = create_resources(&config, &prefix)
        .await
        .expect("create the table and queues in the emulator");
    AwsBackend::new(&config, resources)
}

omni_conformance::conformance_tests!(backend = fresh().await; &backend);

/// The whole suite on one shared backend: checks must not depend on an empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_backend() {
    omni_conformance::run_all(&fresh().await).await;
}
