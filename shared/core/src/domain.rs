//! The pure domain: identifiers, phone numbers, channels, messages and statuses.
//!
//! Types here parse their input once at the edge ("parse, don't validate"): holding an
//! [`E164`] or a [`TenantId`] means the value is already known to be well formed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A value failed to parse into a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Not a valid phone number (with the region used to read national formats).
    #[error("not a valid phone number: {0}")]
    InvalidPhoneNumber(String),
    /// Not an email address Omni accepts (see [`EmailAddress::parse`]).
    #[error("not a valid email address: {0}")]
    InvalidEmailAddress(String),
    /// Not a LiveChat visitor id or widget key (see [`ChatId::parse`]).
    #[error("not a valid LiveChat id: {0}")]
    InvalidChatId(String),
    /// A tenant id outside `[a-z0-9-]{1,64}`.
    #[error("tenant id must match [a-z0-9-]{{1,64}}")]
    InvalidTenantId,
    /// An ISO 3166 region code that the phone-number metadata does not know.
    #[error("unknown region code: {0}")]
    InvalidRegion(String),
    /// An enum value (channel, provider, status) that is not one of ours.
    #[error("unknown {kind}: {value}")]
    UnknownValue {
        /// Which enum was being parsed.
        kind: &'static str,
        /// The rejected input.
        value: String,
    },
}

/// A two-letter region (ISO 3166-1 alpha-2) used to read numbers written in national format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(rlibphonenumber::enums::Region);

impl Region {
    /// The region as its two-letter code.
    pub fn code(&self) -> String {
        self.0.to_string()
    }
}

impl Default for Region {
    fn default() -> Self {
        Region(rlibphonenumber::enums::Region::US)
    }
}

impl FromStr for Region {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        rlibphonenumber::enums::Region::from_str(&s.trim().to_ascii_uppercase())
            .ok()
            // Any two letters parse; a region is one libphonenumber has numbering data for
            // (not ZZ, its "unknown region", nor 001, the non-geographic numbers).
            .filter(|r| {
                *r != rlibphonenumber::enums::Region::World
                    && rlibphonenumber::PHONE_NUMBER_UTIL
                        .get_country_code_for_region(*r)
                        .is_some()
            })
            .map(Region)
            .ok_or_else(|| DomainError::InvalidRegion(s.to_string()))
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.code())
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A valid phone number in E.164 form (`+` and up to 15 digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// Channel-address prefixes carriers put in front of numbers; stripped at the edge.
    const PREFIXES: [&'static str; 4] = ["whatsapp:", "rcs:", "tel:", "sms:"];

    /// Parses a number in any common format; national formats are read in `region`.
    pub fn parse(input: &str, region: Region) -> Result<Self, DomainError> {
        let trimmed = input.trim();
        let rest = Self::without_prefix(trimmed);
        let invalid = || DomainError::InvalidPhoneNumber(trimmed.chars().take(40).collect());
        if let Some(known) = valid_cache::get(rest, region) {
            return Ok(known);
        }
        // Reject letters up front: libphonenumber maps vanity letters to digits, which a
        // dispatcher never means.
        if rest.is_empty() || rest.chars().any(|c| c.is_alphabetic()) {
            return Err(invalid());
        }
        let parsed = rlibphonenumber::PHONE_NUMBER_UTIL
            .parse(rest, Some(region.0))
            .map_err(|_| invalid())?;
        let e164 = parsed
            .format_as(rlibphonenumber::PhoneNumberFormat::E164)
            .to_string();
        // The fictional range first: libphonenumber finds such a number invalid only after
        // trying every pattern of its region (tens of milliseconds, cold).
        if !Self::is_nanp_fictional(&e164) && !parsed.is_valid() {
            return Err(invalid());
        }
        let number = E164(e164);
        valid_cache::put(rest, region, &number);
        Ok(number)
    }

    /// NANP area code 555 is reserved for fiction and testing: no subscriber holds it, but
    /// carriers' documentation, sandboxes and our contract examples use it, so it is accepted.
    fn is_nanp_fictional(e164: &str) -> bool {
        e164.len() == 12
            && e164.starts_with("+1555")
            && e164[5..].bytes().all(|b| b.is_ascii_digit())
    }

    /// Reads a number already stored in E.164 form (a `+` followed by digits). It was
    /// validated when it entered Omni, so only its form is checked: reading a record must not
    /// load libphonenumber's metadata (see [`E164::from_carrier`]).
    pub fn from_e164(input: &str) -> Result<Self, DomainError> {
        if Self::is_canonical(input) {
            return Ok(E164(input.to_owned()));
        }
        if !input.starts_with('+') {
            return Err(DomainError::InvalidPhoneNumber(
                input.chars().take(40).collect(),
            ));
        }
        Self::parse(input, Region::default())
    }

    /// Reads a number a carrier put in a webhook. One in E.164 form, or as ten NANP digits,
    /// is taken as given: the carrier just routed a message to or from it, and loading
    /// libphonenumber's metadata (about 10 ms) is a cost a cold Lambda webhook need not pay
    /// on its first invocation. Any other form is parsed and validated as [`E164::parse`]
    /// does.
    pub fn from_carrier(input: &str) -> Result<Self, DomainError> {
        let rest = Self::without_prefix(input.trim());
        if Self::is_canonical(rest) {
            return Ok(E164(rest.to_owned()));
        }
        // North American carriers (VoIP.ms, VoiceMeUp) name numbers by their 10 NANP digits.
        let nanp = rest
            .strip_prefix('1')
            .filter(|r| r.len() == 10)
            .unwrap_or(rest);
        if Self::is_nanp_shaped(nanp) {
            return Ok(E164(format!("+1{nanp}")));
        }
        Self::parse(input, Region::default())
    }

    /// Ten digits shaped as a NANP number: area code and exchange each start with 2-9.
    fn is_nanp_shaped(digits: &str) -> bool {
        let b = digits.as_bytes();
        b.len() == 10
            && b.iter().all(u8::is_ascii_digit)
            && (b'2'..=b'9').contains(&b[0])
            && (b'2'..=b'9').contains(&b[3])
    }

    /// `input` without a channel-address prefix ([`Self::PREFIXES`], any case).
    fn without_prefix(input: &str) -> &str {
        Self::PREFIXES
            .iter()
            .find_map(|prefix| {
                input
                    .get(..prefix.len())
                    .filter(|h| h.eq_ignore_ascii_case(prefix))
                    .map(|h| &input[h.len()..])
            })
            .unwrap_or(input)
    }

    /// `+`, a country code's first digit (1-9) and 7 to 15 digits in all: E.164's form.
    fn is_canonical(input: &str) -> bool {
        input.strip_prefix('+').is_some_and(|digits| {
            (7..=15).contains(&digits.len())
                && !digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit())
        })
    }

    /// The number as `+<digits>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the leading `+`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// The 10-digit national number of a NANP (+1) number, as North American carriers want it.
    pub fn nanp_national(&self) -> Option<&str> {
        self.0.strip_prefix("+1").filter(|rest| rest.len() == 10)
    }
}

/// Recently validated numbers. Full libphonenumber validation costs microseconds per
/// number, and webhook traffic repeats the same few (tenant numbers, active contacts), so
/// the verdict for an exact input is remembered. Only successes are kept, the map is
/// bounded, and it is cleared when full rather than tracking recency.
mod valid_cache {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};

    use super::{Region, E164};

    const CAPACITY: usize = 4096;

    /// By region, then by exact input, so a lookup borrows the input instead of copying it.
    type Map = HashMap<Region, HashMap<String, E164>>;

    fn map() -> &'static RwLock<Map> {
        static MAP: OnceLock<RwLock<Map>> = OnceLock::new();
        MAP.get_or_init(Default::default)
    }

    pub(super) fn get(input: &str, region: Region) -> Option<E164> {
        map()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&region)?
            .get(input)
            .cloned()
    }

    pub(super) fn put(input: &str, region: Region, number: &E164) {
        if input.len() > 32 {
            return;
        }
        let mut w = map().write().unwrap_or_else(|p| p.into_inner());
        let numbers = w.entry(region).or_default();
        if numbers.len() >= CAPACITY {
            numbers.clear();
        }
        numbers.insert(input.to_string(), number.clone());
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for E164 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        E164::from_e164(&s).map_err(serde::de::Error::custom)
    }
}

/// An email address: a dot-atom local part, `@`, and a DNS domain, domain in lower case.
///
/// A strict subset of RFC 5321's `Mailbox`, chosen so that what is accepted is also what
/// every mail provider accepts: no quoted local parts, no address literals (`[1.2.3.4]`), no
/// comments, ASCII only (an internationalised domain is given in its `xn--` form). The local
/// part keeps its case (RFC 5321 lets the receiving host treat it as case-sensitive); the
/// domain is case-insensitive and stored lower-cased, so one mailbox has one spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Characters allowed in a dot-atom besides letters, digits and dots (RFC 5322 `atext`).
    const ATEXT: &'static [u8] = b"!#$%&'*+-/=?^_`{|}~";

    /// Parses and normalises an address (`Name@Example.ORG` → `Name@example.org`).
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let trimmed = input.trim();
        let invalid = || DomainError::InvalidEmailAddress(trimmed.chars().take(40).collect());
        // RFC 5321's path limit is 256 with the angle brackets.
        if trimmed.len() > 254 {
            return Err(invalid());
        }
        let (local, domain) = trimmed.split_once('@').ok_or_else(invalid)?;
        let atom_ok = |atom: &str| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || Self::ATEXT.contains(&b))
        };
        if local.len() > 64 || !local.split('.').all(atom_ok) {
            return Err(invalid());
        }
        let domain = domain.to_ascii_lowercase();
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let labels: Vec<&str> = domain.split('.').collect();
        let tld_ok = labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
        if domain.len() > 253 || labels.len() < 2 || !tld_ok || !labels.iter().all(|l| label_ok(l))
        {
            return Err(invalid());
        }
        Ok(EmailAddress(format!("{local}@{domain}")))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain (lower case).
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A LiveChat party: a visitor (`lcv_` and 32 lower-case hex digits) or a tenant's widget
/// (`lcw_` and 32 lower-case hex digits), the two ends of a web chat as a number is for SMS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChatId(String);

impl ChatId {
    /// The prefix of a visitor's id.
    pub const VISITOR: &'static str = "lcv_";
    /// The prefix of a widget key.
    pub const WIDGET: &'static str = "lcw_";

    /// Parses a visitor id or widget key.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let digits = input
            .strip_prefix(Self::VISITOR)
            .or_else(|| input.strip_prefix(Self::WIDGET));
        match digits {
            Some(d)
                if d.len() == 32 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(ChatId(input.to_string()))
            }
            _ => Err(DomainError::InvalidChatId(input.chars().take(40).collect())),
        }
    }

    /// A chat id of `prefix` ([`Self::VISITOR`] or [`Self::WIDGET`]) over 16 bytes.
    pub fn from_bytes(prefix: &str, bytes: [u8; 16]) -> Self {
        ChatId(format!("{prefix}{}", hex::encode(bytes)))
    }

    /// Whether this is a visitor's id (not a widget key).
    pub fn is_visitor(&self) -> bool {
        self.0.starts_with(Self::VISITOR)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for ChatId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChatId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChatId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a contact or a tenant is reached: a phone number, an email address, or a LiveChat
/// visitor or widget.
///
/// It is stored, routed on and serialised as its plain text (`+15550001111` or
/// `name@example.org`), which cannot be ambiguous: a phone number never holds an `@`. Phone
/// input still goes through [`E164::parse`]; code that only makes sense for phones (carrier
/// adapters) asks for [`Address::phone`] and refuses the rest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// A phone number.
    Phone(E164),
    /// An email address.
    Email(EmailAddress),
    /// A LiveChat visitor or widget.
    Chat(ChatId),
}

/// Whether stored or typed text names a LiveChat party rather than a number.
fn is_chat(input: &str) -> bool {
    input.starts_with(ChatId::VISITOR) || input.starts_with(ChatId::WIDGET)
}

impl Address {
    /// Parses an address as a user typed it: with an `@` it is an email address, with a
    /// LiveChat prefix a visitor or widget, otherwise a phone number in any common format
    /// (national formats read in `region`).
    pub fn parse(input: &str, region: Region) -> Result<Self, DomainError> {
        if is_chat(input) {
            ChatId::parse(input).map(Address::Chat)
        } else if input.contains('@') {
            EmailAddress::parse(input).map(Address::Email)
        } else {
            E164::parse(input, region).map(Address::Phone)
        }
    }

    /// Reads an address as Omni stored it (E.164 or a normalised email address).
    pub fn from_stored(input: &str) -> Result<Self, DomainError> {
        if is_chat(input) {
            ChatId::parse(input).map(Address::Chat)
        } else if input.contains('@') {
            EmailAddress::parse(input).map(Address::Email)
        } else {
            E164::from_e164(input).map(Address::Phone)
        }
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        match self {
            Address::Phone(n) => n.as_str(),
            Address::Email(e) => e.as_str(),
            Address::Chat(c) => c.as_str(),
        }
    }

    /// The phone number, if this is one.
    pub fn phone(&self) -> Option<&E164> {
        match self {
            Address::Phone(n) => Some(n),
            Address::Email(_) | Address::Chat(_) => None,
        }
    }

    /// The email address, if this is one.
    pub fn email(&self) -> Option<&EmailAddress> {
        match self {
            Address::Email(e) => Some(e),
            Address::Phone(_) | Address::Chat(_) => None,
        }
    }

    /// The LiveChat party, if this is one.
    pub fn chat(&self) -> Option<&ChatId> {
        match self {
            Address::Chat(c) => Some(c),
            Address::Phone(_) | Address::Email(_) => None,
        }
    }
}

impl std::ops::Deref for Address {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<E164> for Address {
    fn from(number: E164) -> Self {
        Address::Phone(number)
    }
}

impl From<EmailAddress> for Address {
    fn from(email: EmailAddress) -> Self {
        Address::Email(email)
    }
}

impl PartialEq<E164> for Address {
    fn eq(&self, other: &E164) -> bool {
        self.phone() == Some(other)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::from_stored(&s).map_err(serde::de::Error::custom)
    }
}

/// A tenant identifier: `[a-z0-9-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Parses a tenant id.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(TenantId(s.to_string()))
        } else {
            Err(DomainError::InvalidTenantId)
        }
    }

    /// The platform's own scope (its audit log): no tenant can have this id, which
    /// [`TenantId::parse`] refuses.
    pub fn platform() -> Self {
        TenantId(PLATFORM_SCOPE.to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of [`TenantId::platform`]: the underscore keeps it out of every tenant's way.
const PLATFORM_SCOPE: &str = "_platform";

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Declares a string-backed enum with `as_str`, `FromStr`, `Display` and serde in lowercase.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::domain::DomainError::UnknownValue { kind: $kind, value: other.chars().take(40).collect() }),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result { f.write_str(self.as_str()) }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_enum;

/// Carriers are declared, one line each, with their modules.
pub use crate::providers::ProviderKind;

string_enum!(
    /// A messaging channel as the contact experiences it.
    Channel, "channel" {
        /// Plain text message.
        Sms => "sms",
        /// Text with media attachments.
        Mms => "mms",
        /// WhatsApp (through a carrier such as Twilio).
        Whatsapp => "whatsapp",
        /// RCS business messaging.
        Rcs => "rcs",
        /// Signal, through a signal-cli daemon.
        Signal => "signal",
        /// Email, to and from an email address.
        Email => "email",
        /// LiveChat, Omni's own web chat widget, between a visitor and the tenant's widget.
        Livechat => "livechat",
    }
);

string_enum!(
    /// Which way a message travelled.
    Direction, "direction" {
        /// From a contact to the tenant.
        Inbound => "inbound",
        /// From the tenant to a contact.
        Outbound => "outbound",
    }
);

string_enum!(
    /// Where a message is in its life.
    ///
    /// Outbound messages move `queued < sending < sent < delivered < read`; `failed`,
    /// `undelivered` and `canceled` are terminal. A message sent with `send_at` is
    /// `scheduled` until it is due, then `queued`. Inbound messages are `received` and stay
    /// so.
    DeliveryStatus, "status" {
        /// Accepted by Omni, waiting for the delivery worker.
        Queued => "queued",
        /// Accepted with a `send_at` still ahead: waits in the store, not in a queue.
        Scheduled => "scheduled",
        /// Canceled by the client before sending began.
        Canceled => "canceled",
        /// Handed to the carrier, no answer yet.
        Sending => "sending",
        /// The carrier accepted it.
        Sent => "sent",
        /// The handset got it.
        Delivered => "delivered",
        /// The contact read it (WhatsApp, RCS, Signal).
        Read => "read",
        /// The carrier refused it or the retry budget ran out.
        Failed => "failed",
        /// The carrier could not deliver it.
        Undelivered => "undelivered",
        /// An inbound message.
        Received => "received",
    }
);

impl DeliveryStatus {
    /// Progress rank along the success path; failures rank by where they may occur.
    pub fn rank(self) -> u8 {
        match self {
            DeliveryStatus::Scheduled | DeliveryStatus::Queued => 0,
            DeliveryStatus::Sending => 1,
            DeliveryStatus::Sent => 2,
            DeliveryStatus::Delivered
            | DeliveryStatus::Failed
            | DeliveryStatus::Undelivered
            | DeliveryStatus::Canceled => 3,
            DeliveryStatus::Read | DeliveryStatus::Received => 4,
        }
    }

    /// A failure: nothing moves the message on from here.
    pub fn is_failure(self) -> bool {
        matches!(self, DeliveryStatus::Failed | DeliveryStatus::Undelivered)
    }

    /// No further status can replace this one.
    pub fn is_terminal(self) -> bool {
        self.is_failure()
            || matches!(
                self,
                DeliveryStatus::Read | DeliveryStatus::Received | DeliveryStatus::Canceled
            )
    }

    /// Applies an update monotonically: duplicates and late, out-of-order callbacks can never
    /// move a message backwards, and a terminal status is never replaced. A failure replaces
    /// any state short of delivery; a delivered message cannot become undelivered.
    pub fn merge(self, update: DeliveryStatus) -> DeliveryStatus {
        if self.is_terminal() || update == DeliveryStatus::Received {
            return self;
        }
        if update.is_failure() {
            return if self.rank() <= DeliveryStatus::Sent.rank() {
                update
            } else {
                self
            };
        }
        if update.rank() > self.rank() {
            update
        } else {
            self
        }
    }
}

string_enum!(
    /// How urgent an outbound message is: the delivery worker takes `high` before `normal`
    /// and `normal` before `bulk`, so an urgent message never waits behind a campaign.
    #[derive(Default)]
    Priority, "priority" {
        /// Urgent: ahead of everything else.
        High => "high",
        /// The default.
        #[default]
        Normal => "normal",
        /// Campaigns and mass notifications: after everything else.
        Bulk => "bulk",
    }
);

impl Priority {
    /// Queue order: lower goes first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Bulk => 2,
        }
    }

    /// The default (what a job or message leaves unsaid).
    pub fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }
}

/// A media attachment: where to fetch it and, when known, its MIME type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// Where the media can be fetched.
    pub url: String,
    /// MIME type, when the carrier said.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// A message for a carrier to send, as the delivery worker hands it to an adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// Omni's id of the message.
    pub id: Uuid,
    /// The tenant sending it.
    pub tenant_id: TenantId,
    /// The channel to send on.
    pub channel: Channel,
    /// The tenant's sender number.
    pub from: Address,
    /// The contact.
    pub to: Address,
    /// Text, if any.
    pub body: Option<String>,
    /// Media to attach, if any.
    pub media: Vec<Media>,
    /// An approved WhatsApp template to send instead of text and media.
    pub template: Option<crate::template::Template>,
    /// The subject line (email only).
    #[serde(default)]
    pub subject: Option<String>,
    /// Where the carrier should post status callbacks, for carriers that take one.
    pub status_callback: Option<String>,
}

/// A message a contact sent, normalised from a carrier's webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// Omni's id for it (UUID v7, so ids sort by arrival).
    pub id: Uuid,
    /// The carrier it came through.
    pub provider: ProviderKind,
    /// The carrier's own id, used to drop duplicate deliveries.
    pub provider_message_id: String,
    /// The channel it came on.
    pub channel: Channel,
    /// The contact.
    pub from: Address,
    /// The tenant number that was called.
    pub to: Address,
    /// Text, if any.
    pub body: Option<String>,
    /// Attachments.
    pub media: Vec<Media>,
    /// The contact's display name, where the channel has one (WhatsApp, Signal).
    pub profile_name: Option<String>,
    /// When Omni received it (UTC).
    pub received_at: DateTime<Utc>,
    /// Sent by a machine on its own (an email marked `Auto-Submitted`): never answered by
    /// an auto-reply, so two auto-responders cannot talk to each other.
    #[serde(default)]
    pub auto_submitted: bool,
}

/// Whether an email's `Auto-Submitted` header (RFC 3834) says a machine sent it on its own:
/// any value but `no` (`auto-replied`, `auto-generated`, ...).
pub fn auto_submitted(header: Option<&str>) -> bool {
    header
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("no"))
}

/// A carrier's report on a message we sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The carrier reporting.
    pub provider: ProviderKind,
    /// The carrier's id of our message.
    pub provider_message_id: String,
    /// The status, in Omni's vocabulary.
    pub status: DeliveryStatus,
    /// The carrier's own word for it.
    pub raw_status: String,
    /// The carrier's error code on failures.
    pub error_code: Option<String>,
    /// The carrier's error text on failures.
    pub error_message: Option<String>,
    /// The tenant number the message was sent from, when the carrier says (routes the update).
    pub tenant_number: Option<Address>,
    /// When the update was observed.
    pub at: DateTime<Utc>,
}

/// One thing a carrier told us in a webhook or a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WebhookEvent {
    /// A contact sent a message.
    Message(InboundMessage),
    /// A message we sent changed status.
    Status(StatusUpdate),
    /// One half of a message the carrier delivers in two webhooks: it is merged with its
    /// other half (or given up on) before anything is queued.
    Part(MessagePart),
}

/// Which half of a message a carrier splits across two webhooks (VoiceMeUp's MMS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartRole {
    /// The text, without media.
    Text,
    /// The media, without text.
    Media,
}

impl PartRole {
    /// The name stored for this half.
    pub fn as_str(self) -> &'static str {
        match self {
            PartRole::Text => "text",
            PartRole::Media => "media",
        }
    }

    /// The other half.
    pub fn other(self) -> PartRole {
        match self {
            PartRole::Text => PartRole::Media,
            PartRole::Media => PartRole::Text,
        }
    }
}

/// One half of a split message. Both halves carry the same `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePart {
    /// What correlates the two halves (the carrier module decides it).
    pub key: String,
    /// Which half this is.
    pub role: PartRole,
    /// The half as a message of its own: what is delivered if the other half never comes.
    pub message: InboundMessage,
}

/// The longest contact name a conversation keeps (carriers and visitors choose it).
pub const MAX_CONTACT_NAME_CHARS: usize = 100;

impl InboundMessage {
    /// The name its conversation shows for the contact: the profile name, trimmed and cut to
    /// [`MAX_CONTACT_NAME_CHARS`]; none when it has none (or only blanks).
    pub fn contact_name(&self) -> Option<String> {
        self.profile_name
            .as_deref()
            .map(|n| {
                n.trim()
                    .chars()
                    .take(MAX_CONTACT_NAME_CHARS)
                    .collect::<String>()
            })
            .filter(|n| !n.is_empty())
    }

    /// The two halves of a split message as one: addressing, Omni id and text from the text
    /// half, media from the media half, carrier ids joined as `<text id>+<media id>`. The
    /// result depends only on the halves, so merging the same pair twice (a redelivery)
    /// yields the same message, which the updater then applies once.
    pub fn merge_parts(text: &InboundMessage, media: &InboundMessage) -> InboundMessage {
        let mut all_media = text.media.clone();
        all_media.extend(media.media.iter().cloned());
        InboundMessage {
            id: text.id,
            provider: text.provider,
            provider_message_id: format!(
                "{}+{}",
                text.provider_message_id, media.provider_message_id
            ),
            channel: if all_media.is_empty() {
                text.channel
            } else {
                Channel::Mms
            },
            from: text.from.clone(),
            to: text.to.clone(),
            body: text.body.clone(),
            media: all_media,
            profile_name: text.profile_name.clone().or(media.profile_name.clone()),
            received_at: text.received_at.min(media.received_at),
            auto_submitted: false,
        }
    }
}

impl WebhookEvent {
    /// The tenant's number this event concerns: it decides the tenant.
    pub fn tenant_number(&self) -> Option<&Address> {
        match self {
            WebhookEvent::Message(m) => Some(&m.to),
            WebhookEvent::Part(p) => Some(&p.message.to),
            WebhookEvent::Status(s) => s.tenant_number.as_ref(),
        }
    }

    /// The carrier's id for the event, used to deduplicate redeliveries.
    pub fn dedupe_key(&self) -> String {
        match self {
            WebhookEvent::Message(m) => format!("{}:msg:{}", m.provider, m.provider_message_id),
            WebhookEvent::Part(p) => format!(
                "{}:msg:{}",
                p.message.provider, p.message.provider_message_id
            ),
            WebhookEvent::Status(s) => {
                format!(
                    "{}:status:{}:{}",
                    s.provider, s.provider_message_id, s.raw_status
                )
            }
        }
    }
}

/// What a carrier said when it accepted a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    /// The carrier.
    pub provider: ProviderKind,
    /// The carrier's id for the message (status callbacks refer to it).
    pub provider_message_id: String,
    /// The status the carrier reported, in Omni's vocabulary.
    pub status: DeliveryStatus,
    /// The carrier's own word for it.
    pub raw_status: String,
}

/// Why a carrier did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later (rate limits, carrier outages, network errors).
    #[error("transient carrier error{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Transient {
        /// The carrier's error code, if any.
        code: Option<String>,
        /// What went wrong.
        message: String,
        /// How long the carrier asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (invalid number, opted out, bad credentials).
    #[error("permanent carrier error{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Permanent {
        /// The carrier's error code, if any.
        code: Option<String>,
        /// What went wrong.
        message: String,
    },
}

impl SendError {
    /// A transient error without a carrier code.
    pub fn transient(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        SendError::Transient {
            code: None,
            message: message.into(),
            retry_after,
        }
    }

    /// A permanent error with an optional carrier code.
    pub fn permanent(code: Option<String>, message: impl Into<String>) -> Self {
        SendError::Permanent {
            code,
            message: message.into(),
        }
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient { .. })
    }

    /// The carrier's error code, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            SendError::Transient { code, .. } | SendError::Permanent { code, .. } => {
                code.as_deref()
            }
        }
    }

    /// The human-readable reason.
    pub fn message(&self) -> &str {
        match self {
            SendError::Transient { message, .. } | SendError::Permanent { message, .. } => message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn us() -> Region {
        Region::default()
    }

    #[test]
    fn regions_are_two_letter_places_only() {
        assert_eq!(" ca ".parse::<Region>().unwrap().code(), "CA");
        for bad in ["ZZ", "zz", "XX", "USA", "", "001"] {
            assert!(bad.parse::<Region>().is_err(), "{bad}");
        }
    }

    #[test]
    fn e164_parses_common_formats_and_strips_channel_prefixes() {
        for input in [
            "+1 415 555 2671",
            "(415) 555-2671",
            "4155552671",
            "whatsapp:+14155552671",
            "tel:+14155552671",
            "RCS:+14155552671",
        ] {
            assert_eq!(
                E164::parse(input, us()).unwrap().as_str(),
                "+14155552671",
                "{input}"
            );
        }
        let fr: Region = "fr".parse().unwrap();
        assert_eq!(
            E164::parse("06 12 34 56 78", fr).unwrap().as_str(),
            "+33612345678"
        );
    }

    #[test]
    fn e164_rejects_invalid_numbers() {
        for input in [
            "",
            "abc",
            "+1",
            "12",
            "+1415555267199999",
            "1-800-FLOWERS",
            "whatsapp:",
        ] {
            assert!(E164::parse(input, us()).is_err(), "{input}");
        }
        assert!(E164::from_e164("4155552671").is_err());
    }

    #[test]
    fn carrier_and_stored_numbers_in_e164_form_are_taken_as_given() {
        // +1 999 is no NANP area code: a user typing it is refused, a carrier naming it is
        // believed (it just routed a message), and so is a stored one.
        assert!(E164::parse("+19995550100", us()).is_err());
        for input in [
            "+19995550100",
            "whatsapp:+19995550100",
            " tel:+19995550100 ",
        ] {
            assert_eq!(
                E164::from_carrier(input).map(|n| n.to_string()),
                Ok("+19995550100".to_owned()),
                "{input}"
            );
        }
        assert_eq!(
            E164::from_e164("+19995550100").unwrap().as_str(),
            "+19995550100"
        );
        // Ten NANP digits, as North American carriers give them, are read as such.
        for nanp in ["5145550100", "15145550100"] {
            assert_eq!(E164::from_carrier(nanp).unwrap().as_str(), "+15145550100");
        }
        assert!(
            E164::from_carrier("1145550100").is_err(),
            "no area code starts with 1"
        );
        // Other forms are parsed and validated as user input is.
        assert_eq!(
            E164::from_carrier("+1 (514) 555-0100").unwrap().as_str(),
            "+15145550100"
        );
        for bad in [
            "+0123456789",
            "+123456",
            "+1234567890123456",
            "+1-999-555-0100",
            "abc",
            "",
        ] {
            assert!(E164::from_carrier(bad).is_err(), "{bad}");
            assert!(E164::from_e164(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nanp_national_is_ten_digits() {
        let n = E164::parse("+14155552671", us()).unwrap();
        assert_eq!(n.nanp_national(), Some("4155552671"));
        let fr = E164::parse("+33612345678", us()).unwrap();
        assert_eq!(fr.nanp_national(), None);
    }

    #[test]
    fn the_nanp_test_range_is_accepted_but_other_unassigned_codes_are_not() {
        assert_eq!(
            E164::parse("555-000-1111", us()).unwrap().as_str(),
            "+15550001111"
        );
        assert_eq!(
            E164::parse("+1 555 555 0100", us()).unwrap().as_str(),
            "+15555550100"
        );
        assert!(E164::parse("+1 099 555 0100", us()).is_err());
    }

    #[test]
    fn chat_ids_are_visitors_or_widgets_and_round_trip_as_addresses() {
        let visitor = format!("lcv_{}", "0a".repeat(16));
        let widget = format!("lcw_{}", "f1".repeat(16));
        for id in [&visitor, &widget] {
            let address = Address::from_stored(id).unwrap();
            assert_eq!(address.chat().map(ChatId::as_str), Some(id.as_str()));
            assert_eq!(Address::parse(id, us()).unwrap(), address);
            assert!(address.phone().is_none() && address.email().is_none());
        }
        assert!(ChatId::parse(&visitor).unwrap().is_visitor());
        assert!(!ChatId::parse(&widget).unwrap().is_visitor());
        for bad in [
            "lcv_",
            "lcv_0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A",
            "lcv_0a0a",
            "lcx_0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
            "lcv_0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
        ] {
            assert!(Address::from_stored(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn email_addresses_are_checked_and_their_domain_lower_cased() {
        assert_eq!(
            EmailAddress::parse(" Jane.Doe+911@Example.ORG ")
                .unwrap()
                .as_str(),
            "Jane.Doe+911@example.org"
        );
        assert_eq!(
            EmailAddress::parse("a@xn--bcher-kva.example")
                .unwrap()
                .domain(),
            "xn--bcher-kva.example"
        );
        for bad in [
            "",
            "@example.org",
            "jane@",
            "jane",
            "jane@localhost",
            "jane@example.123",
            "jane@@example.org",
            "ja ne@example.org",
            ".jane@example.org",
            "jane.@example.org",
            "ja..ne@example.org",
            "\"jane\"@example.org",
            "jane@[192.0.2.1]",
            "jane@-example.org",
            "jane@example-.org",
            "jane@exa_mple.org",
            "jané@example.org",
            "jane@bücher.example",
            &format!("{}@example.org", "a".repeat(65)),
            &format!("a@{}.org", "b".repeat(64)),
            &format!("a@{}org", "b.".repeat(130)),
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_address_is_a_number_or_an_email_address_and_round_trips_as_text() {
        let phone = Address::parse("(415) 555-2671", us()).unwrap();
        assert_eq!(phone.phone().map(E164::as_str), Some("+14155552671"));
        assert_eq!(phone, E164::from_e164("+14155552671").unwrap());
        let email = Address::parse("Dispatch@North.Example", us()).unwrap();
        assert_eq!(
            email.email().map(|e| e.as_str()),
            Some("Dispatch@north.example")
        );
        assert!(email.phone().is_none());
        for address in [phone, email] {
            let json = serde_json::to_string(&address).unwrap();
            assert_eq!(json, format!("\"{}\"", &*address));
            assert_eq!(serde_json::from_str::<Address>(&json).unwrap(), address);
            assert_eq!(Address::from_stored(&address).unwrap(), address);
        }
        assert!(Address::from_stored("4155552671").is_err());
        assert!(Address::parse("not@an@address", us()).is_err());
    }

    #[test]
    fn tenant_ids_follow_the_contract() {
        assert!(TenantId::parse("north-county-911").is_ok());
        for bad in ["", "North", "a_b", "a b", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enums_round_trip_through_their_wire_names() {
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>().unwrap(), *c);
        }
        for p in ProviderKind::ALL {
            assert_eq!(p.as_str().parse::<ProviderKind>().unwrap(), *p);
        }
        assert!("fax".parse::<Channel>().is_err());
        assert_eq!(
            serde_json::to_string(&DeliveryStatus::Undelivered).unwrap(),
            "\"undelivered\""
        );
    }

    #[test]
    fn merge_follows_the_lifecycle() {
        use DeliveryStatus::*;
        assert_eq!(Queued.merge(Sent), Sent);
        assert_eq!(Delivered.merge(Sent), Delivered);
        assert_eq!(Sent.merge(Undelivered), Undelivered);
        assert_eq!(Undelivered.merge(Delivered), Undelivered);
        assert_eq!(Delivered.merge(Undelivered), Delivered);
        assert_eq!(Delivered.merge(Read), Read);
        assert_eq!(Received.merge(Read), Received);
    }

    fn outbound_status() -> impl Strategy<Value = DeliveryStatus> {
        prop::sample::select(vec![
            DeliveryStatus::Queued,
            DeliveryStatus::Sending,
            DeliveryStatus::Sent,
            DeliveryStatus::Delivered,
            DeliveryStatus::Read,
            DeliveryStatus::Failed,
            DeliveryStatus::Undelivered,
        ])
    }

    proptest! {
        #[test]
        fn merge_never_moves_backwards(a in outbound_status(), b in outbound_status()) {
            let m = a.merge(b);
            prop_assert!(m.rank() >= a.rank());
            if a.is_terminal() { prop_assert_eq!(m, a); }
            prop_assert!(m == a || m == b);
        }

        #[test]
        fn merge_is_idempotent(a in outbound_status(), b in outbound_status()) {
            prop_assert_eq!(a.merge(b).merge(b), a.merge(b));
        }

        #[test]
        fn success_path_order_does_not_matter(mut seq in prop::collection::vec(prop::sample::select(vec![
            DeliveryStatus::Sending, DeliveryStatus::Sent, DeliveryStatus::Delivered, DeliveryStatus::Read]), 1..12)) {
            let max = *seq.iter().max_by_key(|s| s.rank()).unwrap();
            let forward = seq.iter().fold(DeliveryStatus::Queued, |acc, s| acc.merge(*s));
            seq.reverse();
            let backward = seq.iter().fold(DeliveryStatus::Queued, |acc, s| acc.merge(*s));
            prop_assert_eq!(forward, max);
            prop_assert_eq!(backward, max);
        }

        #[test]
        fn a_failure_before_delivery_wins_in_any_order(
            mut seq in prop::collection::vec(prop::sample::select(vec![DeliveryStatus::Sending, DeliveryStatus::Sent]), 0..6),
            failure in prop::sample::select(vec![DeliveryStatus::Failed, DeliveryStatus::Undelivered]),
            pos in 0usize..7,
        ) {
            let at = pos.min(seq.len());
            seq.insert(at, failure);
            let end = seq.iter().fold(DeliveryStatus::Queued, |acc, s| acc.merge(*s));
            prop_assert_eq!(end, failure);
        }

        #[test]
        fn e164_parse_never_panics(s in ".{0,40}") {
            let _ = E164::parse(&s, Region::default());
        }

        #[test]
        fn an_accepted_address_reparses_to_itself(s in "[a-zA-Z0-9.+@-]{0,30}") {
            if let Ok(a) = Address::parse(&s, Region::default()) {
                prop_assert_eq!(Address::from_stored(&a).unwrap(), a);
            }
        }

        #[test]
        fn e164_output_reparses_to_itself(n in 2_000_000_000u64..9_999_999_999u64) {
            if let Ok(e) = E164::parse(&n.to_string(), Region::default()) {
                prop_assert_eq!(E164::from_e164(e.as_str()).unwrap(), e);
            }
        }
    }
}
