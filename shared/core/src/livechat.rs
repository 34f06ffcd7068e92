//! LiveChat, Omni's own web chat: a tenant's widget settings, the signed visitor tokens and
//! upload links, identity hashes and the upload type check. Pure: no I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::{ChatId, TenantId};
use crate::providers::Secret;

type HmacSha256 = Hmac<Sha256>;

/// How long a visitor token works before `POST /livechat/v1/sessions/refresh` must renew it.
pub const TOKEN_TTL: TimeDelta = TimeDelta::hours(24);

/// Largest upload a visitor may make.
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;

/// How long an upload's signed link works.
pub const UPLOAD_URL_TTL: TimeDelta = TimeDelta::minutes(15);

/// A tenant's LiveChat widget, with its two secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivechatSettings {
    /// Whose widget it is.
    pub tenant_id: TenantId,
    /// The public key the embedding page names (`lcw_…`); it never changes.
    pub widget_key: ChatId,
    /// Origins (`scheme://host[:port]`) whose pages may use the widget.
    pub allowed_origins: Vec<String>,
    /// The panel's title.
    pub title: Option<String>,
    /// Shown to a visitor before the first message.
    pub greeting: Option<String>,
    /// Shown while the visitor cannot reach the server.
    pub offline_message: Option<String>,
    /// Whether every session must prove its `user_id` with a `user_hash`.
    pub identity_required: bool,
    /// What `user_hash` is computed with; shown once, when created or rotated.
    pub identity_secret: Secret,
    /// Signs visitor tokens and upload links; never leaves the server.
    pub signing_key: Secret,
    /// First saved.
    pub created_at: DateTime<Utc>,
    /// Last saved.
    pub updated_at: DateTime<Utc>,
}

impl LivechatSettings {
    /// Whether a page of `origin` may use the widget (exact match, as browsers send it).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == origin)
    }

    /// Checks a `user_hash`: the lower-case hex HMAC-SHA256 of `user_id` under the identity
    /// secret, compared in constant time.
    pub fn identity_matches(&self, user_id: &str, user_hash: &str) -> bool {
        let Ok(given) = hex::decode(user_hash) else {
            return false;
        };
        user_hash.bytes().all(|b| !b.is_ascii_uppercase())
            && mac(&self.identity_secret, user_id.as_bytes())
                .verify_slice(&given)
                .is_ok()
    }

    /// The visitor id of a verified `user_id`: the same in every browser, so the same user
    /// resumes the same conversation; unrelated to the user id for anyone without the key.
    pub fn visitor_for_user(&self, user_id: &str) -> ChatId {
        let tag = mac(&self.signing_key, format!("user\n{user_id}").as_bytes()).finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&tag.into_bytes()[..16]);
        ChatId::from_bytes(ChatId::VISITOR, bytes)
    }

    /// Signs a visitor token.
    pub fn sign_token(&self, claims: &VisitorClaims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = mac(&self.signing_key, payload.as_bytes()).finalize();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.into_bytes()))
    }

    /// The claims of a token these settings signed, if it is unaltered and unexpired at `now`.
    pub fn verify_token(&self, token: &str, now: DateTime<Utc>) -> Option<VisitorClaims> {
        let (payload, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        mac(&self.signing_key, payload.as_bytes())
            .verify_slice(&tag)
            .ok()?;
        let claims = VisitorClaims::peek(token)?;
        (claims.tenant == self.tenant_id && claims.expires_at() > now).then_some(claims)
    }

    /// The signature of an upload link: `id` of this tenant's, until `expires` (epoch s).
    pub fn upload_signature(&self, id: Uuid, expires: i64) -> String {
        let tag = mac(
            &self.signing_key,
            format!("upload\n{}\n{id}\n{expires}", self.tenant_id).as_bytes(),
        )
        .finalize();
        URL_SAFE_NO_PAD.encode(tag.into_bytes())
    }

    /// Whether an upload link's signature is this tenant's and the link has not expired.
    pub fn upload_signature_valid(
        &self,
        id: Uuid,
        expires: i64,
        signature: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        expires > now.timestamp()
            && mac(
                &self.signing_key,
                format!("upload\n{}\n{id}\n{expires}", self.tenant_id).as_bytes(),
            )
            .verify_slice(&given)
            .is_ok()
    }
}

fn mac(key: &Secret, data: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(key.expose().as_bytes()).expect("HMAC takes keys of any size");
    mac.update(data);
    mac
}

/// What a visitor token says: whose widget, which visitor, which chat session, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorClaims {
    /// The tenant.
    #[serde(rename = "t")]
    pub tenant: TenantId,
    /// The visitor.
    #[serde(rename = "v")]
    pub visitor: ChatId,
    /// The chat session (one per `POST /livechat/v1/sessions`; refreshing keeps it).
    #[serde(rename = "s")]
    pub session: Uuid,
    /// The visitor's display name, if given.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, epoch seconds.
    #[serde(rename = "exp")]
    pub expires: i64,
}

impl VisitorClaims {
    /// The claims of a token, unverified: only to find whose key checks it.
    pub fn peek(token: &str) -> Option<VisitorClaims> {
        let (payload, _) = token.split_once('.')?;
        let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// When the token stops working.
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.expires, 0).unwrap_or_default()
    }
}

/// The media types a visitor may upload, read from the file's first bytes (the declared
/// type is not trusted): JPEG, PNG, GIF, WebP and PDF.
pub fn sniff_upload(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some("image/png"),
        [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some("image/gif"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        [b'%', b'P', b'D', b'F', b'-', ..] => Some("application/pdf"),
        _ => None,
    }
}

/// A new random secret of 32 bytes, hex.
pub fn random_secret() -> Secret {
    Secret::new(hex::encode(rand::random::<[u8; 32]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LivechatSettings {
        LivechatSettings {
            tenant_id: TenantId::parse("north").unwrap(),
            widget_key: ChatId::from_bytes(ChatId::WIDGET, [7; 16]),
            allowed_origins: vec!["https://north.example.org".into()],
            title: None,
            greeting: None,
            offline_message: None,
            identity_required: false,
            identity_secret: Secret::new("identity-secret"),
            signing_key: Secret::new("signing-key"),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn claims(expires: DateTime<Utc>) -> VisitorClaims {
        VisitorClaims {
            tenant: TenantId::parse("north").unwrap(),
            visitor: ChatId::from_bytes(ChatId::VISITOR, [1; 16]),
            session: Uuid::now_v7(),
            name: Some("Ana".into()),
            expires: expires.timestamp(),
        }
    }

    #[test]
    fn tokens_verify_only_unaltered_unexpired_and_under_their_key() {
        let s = settings();
        let now = Utc::now();
        let c = claims(now + TOKEN_TTL);
        let token = s.sign_token(&c);
        assert_eq!(s.verify_token(&token, now), Some(c.clone()));
        // Expired.
        assert_eq!(s.verify_token(&token, now + TOKEN_TTL), None);
        // Another tenant's visitor swapped into the payload: the signature no longer matches.
        let (_, tag) = token.split_once('.').unwrap();
        let mut forged = c.clone();
        forged.visitor = ChatId::from_bytes(ChatId::VISITOR, [2; 16]);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(s.verify_token(&format!("{payload}.{tag}"), now), None);
        // Another key.
        let other = LivechatSettings {
            signing_key: Secret::new("other"),
            ..s.clone()
        };
        assert_eq!(other.verify_token(&token, now), None);
        assert_eq!(s.verify_token("garbage", now), None);
    }

    #[test]
    fn identity_hashes_are_lower_case_hex_hmac_of_the_user_id() {
        let s = settings();
        let mut m = HmacSha256::new_from_slice(b"identity-secret").unwrap();
        m.update(b"user-42");
        let hash = hex::encode(m.finalize().into_bytes());
        assert!(s.identity_matches("user-42", &hash));
        assert!(!s.identity_matches("user-42", &hash.to_uppercase()));
        assert!(!s.identity_matches("user-43", &hash));
        assert!(!s.identity_matches("user-42", "zz"));
        assert_eq!(s.visitor_for_user("user-42"), s.visitor_for_user("user-42"));
        assert_ne!(s.visitor_for_user("user-42"), s.visitor_for_user("user-43"));
        assert!(s.visitor_for_user("user-42").is_visitor());
    }

    #[test]
    fn upload_links_expire_and_name_one_upload() {
        let s = settings();
        let now = Utc::now();
        let id = Uuid::now_v7();
        let exp = now.timestamp() + 60;
        let sig = s.upload_signature(id, exp);
        assert!(s.upload_signature_valid(id, exp, &sig, now));
        assert!(!s.upload_signature_valid(Uuid::now_v7(), exp, &sig, now));
        assert!(!s.upload_signature_valid(id, exp + 1, &sig, now));
        assert!(!s.upload_signature_valid(id, exp, &sig, now + TimeDelta::seconds(61)));
    }

    #[test]
    fn uploads_are_typed_by_their_bytes() {
        assert_eq!(sniff_upload(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_upload(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_upload(b"GIF89a..."), Some("image/gif"));
        assert_eq!(sniff_upload(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_upload(b"%PDF-1.7"), Some("application/pdf"));
        assert_eq!(sniff_upload(b"<svg xmlns="), None);
        assert_eq!(sniff_upload(b"<html>"), None);
        assert_eq!(sniff_upload(b""), None);
    }

    #[test]
    fn origins_match_exactly() {
        let s = settings();
        assert!(s.allows_origin("https://north.example.org"));
        assert!(!s.allows_origin("https://north.example.org.evil.test"));
        assert!(!s.allows_origin("http://north.example.org"));
    }
}
