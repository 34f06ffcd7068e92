//! [`MediaStore`] on S3: media too large for a Lambda response are put in the stack's media
//! bucket (encrypted, expired by a lifecycle rule) and handed out as presigned `GetObject`
//! URLs, signed with the function's own role.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use omni_core::ports::{MediaStore, StoreError, StoreResult};
use omni_core::providers::MediaContent;

use crate::{env_value, sdk_error, SdkConfig};

/// The media bucket.
#[derive(Debug, Clone)]
pub struct S3MediaStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3MediaStore {
    /// A store over `bucket`. Against an emulator (`AWS_ENDPOINT_URL`) objects are addressed
    /// by path, as it serves no per-bucket host names.
    pub fn new(config: &SdkConfig, bucket: impl Into<String>) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(env_value("AWS_ENDPOINT_URL").is_some())
            .build();
        S3MediaStore {
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: bucket.into(),
        }
    }
}

#[async_trait]
impl MediaStore for S3MediaStore {
    async fn publish(
        &self,
        key: &str,
        content: &MediaContent,
        ttl: Duration,
    ) -> StoreResult<String> {
        let disposition = if content.shown_inline() {
            "inline"
        } else {
            "attachment"
        };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(content.bytes.clone()))
            .content_type(
                content
                    .content_type
                    .as_deref()
                    .unwrap_or("application/octet-stream"),
            )
            .content_disposition(disposition)
            .cache_control("private, max-age=300")
            .send()
            .await
            .map_err(|e| sdk_error("PutObject", e))?;
        let presigning =
            PresigningConfig::expires_in(ttl).map_err(|e| StoreError::Backend(e.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|e| sdk_error("presign GetObject", e))?;
        Ok(request.uri().to_string())
    }
}
