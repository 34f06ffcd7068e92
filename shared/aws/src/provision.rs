//! Creates the backend's resources from scratch, as `template.yaml` declares them: for tests
//! against an emulator (moto) and for trying the backend without CloudFormation.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::{sdk_error, AwsResources};
use omni_core::ports::StoreResult;

/// Environment variable naming the emulator endpoint the tests use.
pub const EMULATOR_ENV: &str = "AWS_ENDPOINT_URL";

/// SDK configuration for the emulator at `AWS_ENDPOINT_URL`, with dummy credentials; panics
/// with instructions when the variable is not set (a missing emulator fails, never skips).
pub async fn emulator_config() -> crate::SdkConfig {
    let endpoint = std::env::var(EMULATOR_ENV).unwrap_or_default();
    assert!(
        !endpoint.is_empty(),
        "{EMULATOR_ENV} is not set: the AWS backend tests need the moto emulator. Run the whole \
         suite with scripts/test (it installs and starts moto), or start one with \
         scripts/aws-emulator and export the AWS_* variables it prints"
    );
    for (name, value) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var_os(name).is_none() {
            // Test set-up only, before any client reads the environment.
            std::env::set_var(name, value);
        }
    }
    crate::sdk_config().await
}

fn attr(name: &str) -> StoreResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| sdk_error("AttributeDefinition", e))
}

fn key_schema(hash: &str, range: &str) -> StoreResult<Vec<KeySchemaElement>> {
    Ok(vec![
        KeySchemaElement::builder()
            .attribute_name(hash)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| sdk_error("KeySchemaElement", e))?,
        KeySchemaElement::builder()
            .attribute_name(range)
            .key_type(KeyType::Range)
            .build()
            .map_err(|e| sdk_error("KeySchemaElement", e))?,
    ])
}

fn index(name: &str, projection: ProjectionType) -> StoreResult<GlobalSecondaryIndex> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .set_key_schema(Some(key_schema(
            &format!("{name}pk"),
            &format!("{name}sk"),
        )?))
        .projection(Projection::builder().projection_type(projection).build())
        .build()
        .map_err(|e| sdk_error("GlobalSecondaryIndex", e))
}

/// Creates the table (with its three indexes and TTL) and the four queues, all named after
/// `prefix`, and returns where they are.
pub async fn create_resources(
    config: &crate::SdkConfig,
    prefix: &str,
) -> StoreResult<AwsResources> {
    let ddb = aws_sdk_dynamodb::Client::new(config);
    let table = format!("{prefix}-table");
    ddb.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(
            [
                "pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk", "gsi4pk",
                "gsi4sk",
            ]
            .into_iter()
            .map(attr)
            .collect::<StoreResult<_>>()?,
        ))
        .set_key_schema(Some(key_schema("pk", "sk")?))
        .global_secondary_indexes(index("gsi1", ProjectionType::All)?)
        .global_secondary_indexes(index("gsi2", ProjectionType::All)?)
        .global_secondary_indexes(index("gsi3", ProjectionType::KeysOnly)?)
        .global_secondary_indexes(index("gsi4", ProjectionType::All)?)
        .send()
        .await
        .map_err(|e| sdk_error("CreateTable", e))?;
    ddb.update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("ttl")
                .build()
                .map_err(|e| sdk_error("TimeToLiveSpecification", e))?,
        )
        .send()
        .await
        .map_err(|e| sdk_error("UpdateTimeToLive", e))?;

    let sqs = aws_sdk_sqs::Client::new(config);
    let create = |name: String, redrive: Option<String>| {
        let sqs = sqs.clone();
        async move {
            let mut request = sqs.create_queue().queue_name(name);
            if let Some(policy) = redrive {
                request = request.attributes(QueueAttributeName::RedrivePolicy, policy);
            }
            let out = request
                .send()
                .await
                .map_err(|e| sdk_error("CreateQueue", e))?;
            out.queue_url
                .ok_or_else(|| omni_core::ports::StoreError::Backend("queue without url".into()))
        }
    };
    let arn = |url: &str| {
        let sqs = sqs.clone();
        let url = url.to_owned();
        async move {
            let out = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(|e| sdk_error("GetQueueAttributes", e))?;
            out.attributes
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .ok_or_else(|| omni_core::ports::StoreError::Backend("queue without arn".into()))
        }
    };
    let redrive = |dlq_arn: String| {
        Some(format!(
            r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#
        ))
    };
    let inbound_dlq_url = create(format!("{prefix}-inbound-dlq"), None).await?;
    let delivery_dlq_url = create(format!("{prefix}-delivery-dlq"), None).await?;
    let forward_dlq_url = create(format!("{prefix}-forward-dlq"), None).await?;
    let forward_queue_url = create(
        format!("{prefix}-forward"),
        redrive(arn(&forward_dlq_url).await?),
    )
    .await?;
    let events_dlq_url = create(format!("{prefix}-events-dlq"), None).await?;
    let events_queue_url = create(
        format!("{prefix}-events"),
        redrive(arn(&events_dlq_url).await?),
    )
    .await?;
    let inbound_queue_url = create(
        format!("{prefix}-inbound"),
        redrive(arn(&inbound_dlq_url).await?),
    )
    .await?;
    let delivery_queue_url = create(
        format!("{prefix}-delivery"),
        redrive(arn(&delivery_dlq_url).await?),
    )
    .await?;
    let bulk_queue_url = create(
        format!("{prefix}-bulk"),
        redrive(arn(&delivery_dlq_url).await?),
    )
    .await?;
    Ok(AwsResources {
        table,
        inbound_queue_url,
        delivery_queue_url,
        bulk_queue_url: Some(bulk_queue_url),
        inbound_dlq_url,
        delivery_dlq_url,
        forward_queue_url: Some(forward_queue_url),
        forward_dlq_url: Some(forward_dlq_url),
        events_queue_url: Some(events_queue_url),
        events_dlq_url: Some(events_dlq_url),
        secret_prefix: format!("{prefix}/"),
    })
}
