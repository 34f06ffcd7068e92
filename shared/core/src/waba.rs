//! WhatsApp routing by business account: one Meta app has one webhook URL, so the
//! environment that receives it (production) forwards the events of the WhatsApp Business
//! Accounts other environments own (development, staging) to them, exactly as Meta sent them.
//!
//! This module holds the routes' shape and the rules for where events may be sent; the flow
//! lives in the services, the storage behind [`crate::ports::WabaRouteStore`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// The header a forwarded webhook carries: a request that has it is never forwarded again
/// (two environments routing to each other cannot loop).
pub const FORWARDED_HEADER: &str = "x-omni-forwarded";

/// Longest target URL accepted.
const MAX_URL_CHARS: usize = 2048;

/// Longest note accepted.
pub const MAX_NOTE_CHARS: usize = 200;

/// A WhatsApp Business Account id: Meta's digits (`entry[].id`), 1 to 32 of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WabaId(String);

impl WabaId {
    /// Parses an account id; `None` unless it is 1 to 32 ASCII digits.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = (1..=32).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| WabaId(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WabaId {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        WabaId::parse(&raw).ok_or_else(|| "a WhatsApp Business Account id is digits".into())
    }
}

impl From<WabaId> for String {
    fn from(id: WabaId) -> String {
        id.0
    }
}

impl std::fmt::Display for WabaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where one business account's events go, with what became of them so far. The app secret
/// is kept apart (a secret store) and never part of this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WabaRoute {
    /// The business account.
    pub waba_id: WabaId,
    /// The environment's webhook URL (HTTPS).
    pub url: String,
    /// What the route is for (e.g. `staging`).
    pub note: Option<String>,
    /// Events handed to the target (2xx).
    pub forwarded: u64,
    /// Events queued for the target and not yet handed over nor given up on.
    pub pending: u64,
    /// Events given up on after the retry window (dead-lettered).
    pub failed: u64,
    /// When an event was last handed over.
    pub last_forwarded_at: Option<DateTime<Utc>>,
    /// When the route was first saved.
    pub created_at: DateTime<Utc>,
    /// When it was last saved.
    pub updated_at: DateTime<Utc>,
}

impl WabaRoute {
    /// A new route with nothing forwarded yet.
    pub fn new(waba_id: WabaId, url: String, note: Option<String>, now: DateTime<Utc>) -> Self {
        WabaRoute {
            waba_id,
            url,
            note,
            forwarded: 0,
            pending: 0,
            failed: 0,
            last_forwarded_at: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// What happened to one event of a route, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardCount {
    /// Queued for the target: one more pending.
    Queued,
    /// Handed over at this time: one fewer pending, one more forwarded.
    Forwarded(DateTime<Utc>),
    /// Given up on: one fewer pending, one more failed.
    Failed,
}

/// Why a target URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute URL of the allowed schemes, or with credentials in it.
    #[error("url must be an absolute https:// URL without user information: {0}")]
    Malformed(&'static str),
    /// A host name that does not resolve.
    #[error("url's host does not resolve")]
    Unresolved,
    /// Loopback, private, link-local, metadata or otherwise not public.
    #[error("url must not point at a loopback, private, link-local or metadata address")]
    Forbidden,
}

/// What targets are allowed beyond public HTTPS ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    /// `OMNI_ALLOW_HTTP_FORWARD`, for tests: plain `http://` targets, and loopback ones (a
    /// test's second server listens on 127.0.0.1). Private, link-local and metadata
    /// addresses stay refused.
    pub allow_http: bool,
}

impl TargetPolicy {
    /// Checks a target URL's shape (scheme, no user information, size) and, for a literal IP
    /// host, the address; a named host is checked by [`Self::check_addr`] once resolved.
    pub fn check_url(&self, raw: &str) -> Result<Url, TargetError> {
        if raw.chars().count() > MAX_URL_CHARS {
            return Err(TargetError::Malformed("too long"));
        }
        let url = Url::parse(raw).map_err(|_| TargetError::Malformed("does not parse"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(TargetError::Malformed("the scheme must be https")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Malformed("user information"));
        }
        match url.host() {
            None => return Err(TargetError::Malformed("no host")),
            Some(Host::Ipv4(ip)) => self.check_addr(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_addr(IpAddr::V6(ip))?,
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    self.check_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                }
                // Cloud metadata services by name (GCP; AWS's is an address).
                if name == "metadata.google.internal" || name == "metadata" {
                    return Err(TargetError::Forbidden);
                }
            }
        }
        Ok(url)
    }

    /// Whether an address a target resolves to may be called.
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), TargetError> {
        let ip = match ip {
            // An IPv4-mapped IPv6 address reaches the IPv4 one.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() {
            return if self.allow_http {
                Ok(())
            } else {
                Err(TargetError::Forbidden)
            };
        }
        if is_public(ip) {
            Ok(())
        } else {
            Err(TargetError::Forbidden)
        }
    }
}

/// Whether an address is one on the public internet: not private, shared (CGNAT), link-local
/// (where the cloud metadata services live), unspecified, broadcast, multicast, documentation
/// or reserved, nor IPv6's unique-local, link-local, NAT64-to-private or site-local ranges.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || seg[..6] == [0; 6]) // IPv4-compatible (deprecated), unspecified, loopback
}

/// The business account ids a WhatsApp webhook names (`entry[].id`), in order, each once;
/// empty for a body that is not such a webhook.
pub fn account_ids(body: &[u8]) -> Vec<WabaId> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        entry: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        id: Option<serde_json::Value>,
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
        return Vec::new();
    };
    let mut ids: Vec<WabaId> = Vec::new();
    for entry in envelope.entry {
        let id = match entry.id {
            Some(serde_json::Value::String(s)) => WabaId::parse(&s),
            Some(serde_json::Value::Number(n)) => WabaId::parse(&n.to_string()),
            _ => None,
        };
        if let Some(id) = id.filter(|id| !ids.contains(id)) {
            ids.push(id);
        }
    }
    ids
}

/// The webhook body without the entries of `accounts`, for handling the rest here: only for
/// reading, since Meta's signature covers the raw body as sent. `None` when no entry is left.
pub fn without_accounts(body: &[u8], accounts: &[WabaId]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let entries = value.get_mut("entry")?.as_array_mut()?;
    entries.retain(|e| {
        let id = match e.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return true,
        };
        !accounts.iter().any(|a| a.as_str() == id)
    });
    if entries.is_empty() {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waba_ids_are_digits() {
        assert!(WabaId::parse("102290129340398").is_some());
        for bad in ["", "12a", "../1", " 1", &"1".repeat(33)] {
            assert!(WabaId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_public_https_targets_pass() {
        let strict = TargetPolicy::default();
        assert!(strict
            .check_url("https://staging.example.org/webhooks/whatsapp")
            .is_ok());
        assert!(strict
            .check_url("https://93.184.216.34/webhooks/whatsapp")
            .is_ok());
        for (bad, why) in [
            ("http://staging.example.org/", "plain http"),
            ("ftp://staging.example.org/", "scheme"),
            ("https://user:pw@staging.example.org/", "user info"),
            ("https://127.0.0.1/", "loopback"),
            ("https://localhost:8443/", "localhost"),
            ("https://[::1]/", "v6 loopback"),
            ("https://10.0.0.5/", "private"),
            ("https://172.16.3.4/", "private"),
            ("https://192.168.1.1/", "private"),
            ("https://100.64.0.1/", "cgnat"),
            ("https://169.254.169.254/latest/meta-data/", "aws metadata"),
            ("https://[fd00:ec2::254]/", "aws v6 metadata"),
            ("https://[fe80::1]/", "v6 link-local"),
            ("https://[::ffff:10.0.0.1]/", "mapped private"),
            ("https://[64:ff9b::a9fe:a9fe]/", "nat64 metadata"),
            ("https://0.0.0.0/", "unspecified"),
            ("https://metadata.google.internal/", "gcp metadata"),
            ("not a url", "garbage"),
        ] {
            assert!(strict.check_url(bad).is_err(), "{why}: {bad}");
        }
    }

    #[test]
    fn the_test_switch_allows_http_and_loopback_only() {
        let tests = TargetPolicy { allow_http: true };
        assert!(tests
            .check_url("http://127.0.0.1:8081/webhooks/whatsapp")
            .is_ok());
        assert!(tests.check_url("http://localhost:8081/").is_ok());
        assert!(tests.check_url("http://10.0.0.5/").is_err());
        assert!(tests.check_url("http://169.254.169.254/").is_err());
        assert_eq!(
            tests.check_addr("192.168.0.1".parse().unwrap()),
            Err(TargetError::Forbidden)
        );
    }

    #[test]
    fn account_ids_are_read_and_entries_removed() {
        let body = br#"{"object":"whatsapp_business_account","entry":[
            {"id":"111","changes":[]},{"id":222,"changes":[]},{"id":"111"},{"id":"x"}]}"#;
        let ids = account_ids(body);
        assert_eq!(
            ids,
            [WabaId::parse("111").unwrap(), WabaId::parse("222").unwrap()]
        );
        let rest = without_accounts(body, &ids[..1]).unwrap();
        let rest: serde_json::Value = serde_json::from_slice(&rest).unwrap();
        assert_eq!(rest["entry"].as_array().unwrap().len(), 2);
        assert_eq!(rest["entry"][0]["id"], 222);
        assert!(without_accounts(br#"{"entry":[{"id":"111"}]}"#, &ids[..1]).is_none());
        assert!(account_ids(b"not json").is_empty());
    }
}
