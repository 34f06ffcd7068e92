//! The master key that encrypts tenant carrier credentials at rest.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use omni_core::domain::{ProviderKind, TenantId};
use omni_core::ports::StoreError;
use rand::RngCore;
use uuid::Uuid;

/// The environment variable holding the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "OMNI_MASTER_KEY";

/// Length of an AES-GCM nonce: 96 bits, random per encryption.
pub(crate) const NONCE_LEN: usize = 12;

/// A 32-byte AES-256-GCM key. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// A fresh random key (tests, first start).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        MasterKey(bytes)
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// Reads a key written as base64 of 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        // The error never echoes the input: it may be a (mistyped) key.
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| StoreError::Backend("master key is not valid base64".into()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| StoreError::Backend("master key must be 32 bytes".into()))?;
        Ok(MasterKey(bytes))
    }

    /// The key from `OMNI_MASTER_KEY` when set, else from the key file beside the database
    /// (`<db file name>.key`), which is created with random bytes and mode 0600 on first start.
    ///
    /// Losing the key file makes stored credentials unreadable, so it is never overwritten.
    pub fn from_env_or_file(db_path: &Path) -> Result<Self, StoreError> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(value) if !value.trim().is_empty() => Self::from_base64(&value),
            _ => Self::from_file(&Self::key_path(db_path)),
        }
    }

    /// Where the key file of a database lives: `omni.db` → `omni.db.key`.
    pub fn key_path(db_path: &Path) -> PathBuf {
        let mut name = db_path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "omni.db".into());
        name.push(".key");
        db_path.with_file_name(name)
    }

    /// Reads the key file, creating it first if it does not exist.
    fn from_file(path: &Path) -> Result<Self, StoreError> {
        let io_err = |what: &str, e: std::io::Error| {
            StoreError::Backend(format!("master key file {}: {what}: {e}", path.display()))
        };
        match Self::create_file(path) {
            Ok(key) => return Ok(key),
            // Someone (an earlier start, or a concurrent one) created it: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("cannot create", e)),
        }
        let text = std::fs::read_to_string(path).map_err(|e| io_err("cannot read", e))?;
        Self::from_base64(&text)
    }

    /// Creates the key file exclusively (never replacing an existing key), owner-only.
    fn create_file(path: &Path) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        let key = Self::generate();
        file.write_all(format!("{}\n", STANDARD.encode(key.0)).as_bytes())?;
        file.sync_all()?;
        Ok(key)
    }

    /// Binds a ciphertext to its row, so a ciphertext copied to another tenant or carrier
    /// does not decrypt.
    fn associated_data(tenant: &TenantId, provider: ProviderKind) -> Vec<u8> {
        format!("omni-credentials-v1|{tenant}|{provider}").into_bytes()
    }

    /// Encrypts with a fresh random nonce; returns (nonce, ciphertext).
    pub(crate) fn seal(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        self.seal_for(&Self::associated_data(tenant, provider), plaintext)
    }

    /// Binds a WhatsApp Business Account route's app secret to its route.
    pub(crate) fn waba_associated_data(waba_id: &str) -> Vec<u8> {
        format!("omni-waba-route-v1|{waba_id}").into_bytes()
    }

    /// Binds an event webhook endpoint's signing secret to its endpoint and tenant.
    pub(crate) fn webhook_associated_data(tenant: &TenantId, endpoint: Uuid) -> Vec<u8> {
        format!("omni-webhook-secret-v1|{tenant}|{endpoint}").into_bytes()
    }

    /// Encrypts with a fresh random nonce, bound to `aad`; returns (nonce, ciphertext).
    pub(crate) fn seal_for(
        &self,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let cipher = Aes256Gcm::new((&self.0).into());
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| StoreError::Backend("credentials could not be encrypted".into()))?;
        Ok((nonce.to_vec(), ciphertext))
    }

    /// Decrypts and authenticates what [`Self::seal`] produced for the same row.
    pub(crate) fn open(
        &self,
        tenant: &TenantId,
        provider: ProviderKind,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.open_for(&Self::associated_data(tenant, provider), nonce, ciphertext)
            .map_err(|_| {
                StoreError::Backend(format!(
                    "credentials of tenant {tenant} for {provider} could not be decrypted \
                     (wrong master key or tampered row)"
                ))
            })
    }

    /// Decrypts and authenticates what [`Self::seal_for`] produced with the same `aad`.
    pub(crate) fn open_for(
        &self,
        aad: &[u8],
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let undecryptable = || {
            StoreError::Backend(
                "a secret could not be decrypted (wrong master key or tampered row)".into(),
            )
        };
        if nonce.len() != NONCE_LEN {
            return Err(undecryptable());
        }
        let cipher = Aes256Gcm::new((&self.0).into());
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| undecryptable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn sealed_data_opens_only_for_its_own_row_and_key() {
        let key = MasterKey::generate();
        let (nonce, ct) = key
            .seal(&tenant("a"), ProviderKind::Twilio, b"hello")
            .unwrap();
        assert_eq!(
            key.open(&tenant("a"), ProviderKind::Twilio, &nonce, &ct)
                .unwrap(),
            b"hello"
        );
        assert!(key
            .open(&tenant("b"), ProviderKind::Twilio, &nonce, &ct)
            .is_err());
        assert!(key
            .open(&tenant("a"), ProviderKind::Voipms, &nonce, &ct)
            .is_err());
        assert!(MasterKey::generate()
            .open(&tenant("a"), ProviderKind::Twilio, &nonce, &ct)
            .is_err());
        assert!(key
            .open(&tenant("a"), ProviderKind::Twilio, &[0; 3], &ct)
            .is_err());
    }

    #[test]
    fn nonces_are_fresh_per_encryption() {
        let key = MasterKey::generate();
        let (n1, c1) = key.seal(&tenant("a"), ProviderKind::Twilio, b"x").unwrap();
        let (n2, c2) = key.seal(&tenant("a"), ProviderKind::Twilio, b"x").unwrap();
        assert_ne!(n1, n2);
        assert_ne!(c1, c2);
    }

    #[test]
    fn debug_hides_the_key_and_base64_round_trips() {
        let key = MasterKey::from_bytes([7; 32]);
        assert_eq!(format!("{key:?}"), "MasterKey(***)");
        let again = MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        assert_eq!(again.0, key.0);
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }

    #[test]
    fn key_file_sits_beside_the_database() {
        assert_eq!(
            MasterKey::key_path(Path::new("/var/lib/omni/omni.db")),
            Path::new("/var/lib/omni/omni.db.key")
        );
    }
}
