//! [`MediaStore`] on S3: media too large for a Lambda response are put in the stack's media
//! bucket (encrypted, expired by a lifecycle rule) and handed out as presigned `GetObject`
//! URLs, signed with the function's own role; LiveChat visitors' uploads are kept there too
//! ([`UploadStore`]), under `livechat/`. Two SigV4-signed requests (`aws-sigv4`, the
//! SDK's signer) over reqwest.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use omni_core::domain::TenantId;
use omni_core::ports::{MediaStore, StoreError, StoreResult, UploadStore};
use omni_core::providers::MediaContent;

use uuid::Uuid;

use crate::{env_value, SdkConfig};

/// The media bucket.
#[derive(Clone)]
pub struct S3MediaStore {
    http: reqwest::Client,
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
    region: String,
    /// `https://<bucket>.s3.<region>.amazonaws.com`, or `<endpoint>/<bucket>` against an
    /// emulator (`AWS_ENDPOINT_URL`), which serves no per-bucket host names.
    base: String,
}

impl std::fmt::Debug for S3MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3MediaStore")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn backend(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {error}"))
}

impl S3MediaStore {
    /// A store over `bucket`, signing with `config`'s credentials in its region.
    pub fn new(config: &SdkConfig, http: reqwest::Client, bucket: &str) -> Result<Self, String> {
        let credentials = config
            .credentials_provider()
            .ok_or("no credentials provider")?;
        let region = config.region().ok_or("no region")?.to_string();
        let base = match env_value("AWS_ENDPOINT_URL") {
            Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        Ok(S3MediaStore {
            http,
            credentials,
            region,
            base,
        })
    }

    /// Signs `method url` for S3 with `settings`; the headers or query parameters to add.
    async fn signed(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: SignableBody<'_>,
        settings: SigningSettings,
    ) -> StoreResult<(Vec<(String, String)>, Vec<(String, String)>)> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| backend("credentials", e))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| backend("signing parameters", e))?
            .into();
        let request = SignableRequest::new(method, url, headers.iter().copied(), body)
            .map_err(|e| backend("signable request", e))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| backend("sign", e))?
            .into_parts();
        let (headers, query) = instructions.into_parts();
        Ok((
            headers
                .into_iter()
                .map(|h| (h.name().to_owned(), h.value().to_owned()))
                .collect(),
            query
                .into_iter()
                .map(|(k, v): (&str, Cow<'_, str>)| (k.to_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl S3MediaStore {
    /// Puts an object (SigV4 over its bytes).
    async fn put_object(&self, key: &str, content: &MediaContent) -> StoreResult<()> {
        let url = format!("{}/{key}", self.base);
        let content_type = content
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        let disposition = content.disposition();
        let headers = [
            ("content-type", content_type),
            ("content-disposition", disposition),
            ("cache-control", "private, max-age=300"),
        ];
        let mut settings = SigningSettings::default();
        // S3 wants the payload's hash in x-amz-content-sha256.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let (signing, _) = self
            .signed(
                "PUT",
                &url,
                &headers,
                SignableBody::Bytes(&content.bytes),
                settings,
            )
            .await?;
        let mut put = self.http.put(&url).body(content.bytes.clone());
        for (k, v) in headers.iter().map(|(k, v)| (*k, *v)) {
            put = put.header(k, v);
        }
        for (k, v) in &signing {
            put = put.header(k, v);
        }
        let response = put.send().await.map_err(|e| backend("PutObject", e))?;
        if !response.status().is_success() {
            return Err(backend(
                "PutObject",
                format!(
                    "{}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// A presigned `GetObject` link to an object, valid for `ttl`.
    async fn presigned(&self, key: &str, ttl: Duration) -> StoreResult<String> {
        let url = format!("{}/{key}", self.base);
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(ttl);
        let (_, query) = self
            .signed("GET", &url, &[], SignableBody::UnsignedPayload, settings)
            .await?;
        let mut link = reqwest::Url::parse(&url).map_err(|e| backend("media URL", e))?;
        link.query_pairs_mut().extend_pairs(query);
        Ok(link.to_string())
    }

    /// `GET` (or `HEAD`) of an object, signed in its headers; `None` when there is none.
    async fn fetch(&self, method: &str, key: &str) -> StoreResult<Option<reqwest::Response>> {
        let url = format!("{}/{key}", self.base);
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let (signing, _) = self
            .signed(method, &url, &[], SignableBody::Bytes(&[]), settings)
            .await?;
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| backend("method", e))?;
        let mut request = self.http.request(method, &url);
        for (k, v) in &signing {
            request = request.header(k, v);
        }
        let response = request.send().await.map_err(|e| backend("GetObject", e))?;
        match response.status() {
            s if s.is_success() => Ok(Some(response)),
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::FORBIDDEN => Ok(None),
            s => Err(backend("GetObject", s)),
        }
    }
}

/// Where a LiveChat upload is kept: apart from published media, expired by its own rule.
fn upload_key(tenant: &TenantId, id: Uuid) -> String {
    format!("livechat/{tenant}/{id}")
}

fn content_type(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[async_trait]
impl MediaStore for S3MediaStore {
    async fn publish(
        &self,
        key: &str,
        content: &MediaContent,
        ttl: Duration,
    ) -> StoreResult<String> {
        self.put_object(key, content).await?;
        self.presigned(key, ttl).await
    }
}

/// LiveChat uploads in the media bucket under `livechat/`, handed out through presigned links.
#[async_trait]
impl UploadStore for S3MediaStore {
    async fn put_upload(
        &self,
        tenant: &TenantId,
        id: Uuid,
        content: &MediaContent,
    ) -> StoreResult<()> {
        self.put_object(&upload_key(tenant, id), content).await
    }

    async fn upload_type(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<String>> {
        Ok(self
            .fetch("HEAD", &upload_key(tenant, id))
            .await?
            .map(|r| content_type(&r).unwrap_or_else(|| "application/octet-stream".into())))
    }

    async fn get_upload(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<MediaContent>> {
        let Some(response) = self.fetch("GET", &upload_key(tenant, id)).await? else {
            return Ok(None);
        };
        let content_type = content_type(&response);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| backend("GetObject body", e))?;
        Ok(Some(MediaContent {
            content_type,
            bytes: bytes.to_vec(),
        }))
    }

    async fn signed_url(
        &self,
        tenant: &TenantId,
        id: Uuid,
        ttl: Duration,
    ) -> StoreResult<Option<String>> {
        self.presigned(&upload_key(tenant, id), ttl).await.map(Some)
    }
}
