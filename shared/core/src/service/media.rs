//! Media of a message for a dashboard: a plain link, or the bytes fetched from the carrier
//! when the carrier keeps them behind its own authentication (WhatsApp's media ids); bytes too
//! large for a Lambda response are published to the media store and handed out as a
//! short-lived signed link instead.

use std::time::Duration;

use uuid::Uuid;

use super::{ServiceError, Services};
use crate::domain::TenantId;
use crate::providers::{MediaContent, MediaError};

/// How a dashboard gets one media item of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaDownload {
    /// An ordinary `http(s)` link the dashboard follows itself.
    Link(String),
    /// The bytes, fetched with the tenant's carrier credentials.
    Content(MediaContent),
}

/// Largest media passed through a response when a media store is configured: Lambda's
/// responses stop at 6 MB, and the bytes travel base64-encoded (4/3 larger) in the JSON.
pub const MAX_INLINE_MEDIA_BYTES: usize = 4 * 1024 * 1024;

/// How long a published media item's signed link works: long enough to follow the redirect
/// and download, short enough that a leaked link soon dies.
pub const PUBLISHED_MEDIA_TTL: Duration = Duration::from_secs(300);

impl Services {
    /// Media item `index` of one of the tenant's messages. The message is read under the
    /// tenant, and the carrier is asked with the tenant's own credentials, so a tenant
    /// reaches only its own messages' media.
    pub async fn media(
        &self,
        tenant: &TenantId,
        message_id: Uuid,
        index: usize,
    ) -> Result<MediaDownload, ServiceError> {
        let message = self
            .messages
            .get_message(tenant, message_id)
            .await?
            .ok_or(ServiceError::NotFound("message"))?;
        let media = message
            .media
            .get(index)
            .ok_or(ServiceError::NotFound("media"))?;
        if let Some(id) = media.url.strip_prefix(super::UPLOAD_SCHEME) {
            let id = Uuid::parse_str(id).map_err(|_| ServiceError::NotFound("media"))?;
            let mut content = self.stored_upload(tenant, id).await?;
            content.content_type = content.content_type.or(media.content_type.clone());
            return Ok(MediaDownload::Content(content));
        }
        let keeper = message
            .provider
            .and_then(|kind| self.providers.get(kind))
            .filter(|adapter| adapter.keeps_media(&media.url));
        let Some(adapter) = keeper else {
            return if media.url.starts_with("https://") || media.url.starts_with("http://") {
                Ok(MediaDownload::Link(media.url.clone()))
            } else {
                Err(ServiceError::NotFound("media"))
            };
        };
        let credentials = self
            .credentials_for(tenant, adapter.kind())
            .await?
            .ok_or_else(|| {
                ServiceError::ChannelNotConfigured(format!(
                    "no {} credentials to fetch this media with",
                    adapter.kind()
                ))
            })?;
        match adapter.fetch_media(&credentials, &media.url).await {
            Ok(mut content) => {
                // The stored type (from the webhook) when the carrier's answer has none.
                content.content_type = content.content_type.or(media.content_type.clone());
                match &self.media_store {
                    Some(store) if content.bytes.len() > MAX_INLINE_MEDIA_BYTES => {
                        let key = format!("media/{tenant}/{message_id}/{index}");
                        let url = store.publish(&key, &content, PUBLISHED_MEDIA_TTL).await?;
                        Ok(MediaDownload::Link(url))
                    }
                    _ => Ok(MediaDownload::Content(content)),
                }
            }
            Err(MediaError::NotFound) => Err(ServiceError::NotFound("media")),
            Err(other) => Err(ServiceError::MediaUnavailable(other.to_string())),
        }
    }
}
