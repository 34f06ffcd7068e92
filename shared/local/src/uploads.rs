//! LiveChat uploads on `omni serve`: files in a directory beside the database
//! (`OMNI_MEDIA_DIR`), one folder per tenant, the media type in a file beside each upload.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use omni_core::domain::TenantId;
use omni_core::ports::{StoreError, StoreResult, UploadStore};
use omni_core::providers::MediaContent;
use uuid::Uuid;

/// Uploads kept as files under one directory (created owner-only).
#[derive(Debug, Clone)]
pub struct DirUploads {
    root: PathBuf,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("upload storage: {e}"))
}

impl DirUploads {
    /// Uploads under `root`, created if missing.
    pub fn open(root: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(root).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(DirUploads {
            root: root.to_path_buf(),
        })
    }

    /// Where an upload's bytes and type are: the tenant id and a UUID are safe file names.
    fn paths(&self, tenant: &TenantId, id: Uuid) -> (PathBuf, PathBuf) {
        let dir = self.root.join(tenant.as_str());
        (dir.join(id.to_string()), dir.join(format!("{id}.type")))
    }
}

async fn read_optional(path: &Path) -> StoreResult<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

#[async_trait]
impl UploadStore for DirUploads {
    async fn put_upload(
        &self,
        tenant: &TenantId,
        id: Uuid,
        content: &MediaContent,
    ) -> StoreResult<()> {
        let (data, kind) = self.paths(tenant, id);
        if let Some(dir) = data.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        // The bytes first: an upload is visible (has a type) only once they are all there.
        tokio::fs::write(&data, &content.bytes).await.map_err(io)?;
        let content_type = content.content_type.clone().unwrap_or_default();
        tokio::fs::write(&kind, content_type).await.map_err(io)
    }

    async fn upload_type(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<String>> {
        let (_, kind) = self.paths(tenant, id);
        Ok(read_optional(&kind)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn get_upload(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<MediaContent>> {
        let Some(content_type) = self.upload_type(tenant, id).await? else {
            return Ok(None);
        };
        let (data, _) = self.paths(tenant, id);
        Ok(read_optional(&data).await?.map(|bytes| MediaContent {
            content_type: Some(content_type),
            bytes,
        }))
    }

    async fn signed_url(
        &self,
        _tenant: &TenantId,
        _id: Uuid,
        _ttl: std::time::Duration,
    ) -> StoreResult<Option<String>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uploads_round_trip_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = DirUploads::open(&dir.path().join("media")).unwrap();
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let id = Uuid::new_v4();
        let content = MediaContent {
            content_type: Some("image/png".into()),
            bytes: b"\x89PNG\r\n\x1a\nxyz".to_vec(),
        };
        assert_eq!(uploads.get_upload(&a, id).await.unwrap(), None);
        uploads.put_upload(&a, id, &content).await.unwrap();
        assert_eq!(uploads.get_upload(&a, id).await.unwrap(), Some(content));
        assert_eq!(
            uploads.upload_type(&a, id).await.unwrap().as_deref(),
            Some("image/png")
        );
        assert_eq!(uploads.get_upload(&b, id).await.unwrap(), None);
        assert_eq!(uploads.upload_type(&b, id).await.unwrap(), None);
    }
}
