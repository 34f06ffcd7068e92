//! WhatsApp message templates: the pre-approved messages Meta lets a business send outside
//! the 24-hour customer-service window, filled in with parameters.
//!
//! [`Template`] is the `template` object of `POST /v1/messages` and also what the WhatsApp
//! adapter sends: its serde form is Meta's Cloud API template object (components, typed
//! parameters, buttons with `sub_type` and a string `index`), except that `language` is the
//! locale code itself (Meta's `{"code": …}` is added on the wire). [`Template::validate`]
//! applies Meta's rules before a message is queued, so a template Meta would refuse never
//! reaches the outbox.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest template name Meta accepts.
const MAX_NAME_CHARS: usize = 512;
/// Longest text parameter of a header (Meta's limit).
const MAX_HEADER_TEXT_CHARS: usize = 60;
/// Longest text parameter of a body when the template has other components too.
const MAX_BODY_TEXT_CHARS: usize = 1024;
/// Longest text parameter of a body when the body is the template's only component.
const MAX_BODY_ONLY_TEXT_CHARS: usize = 32768;
/// Longest coupon code of a copy-code button (Meta's limit).
const MAX_COUPON_CHARS: usize = 15;
/// Highest button index: a template has at most ten buttons.
const MAX_BUTTON_INDEX: u8 = 9;

/// An approved template and the values of its variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The template's name as approved (`[a-z0-9_]{1,512}`).
    pub name: String,
    /// The language and locale it was approved in: `en`, `en_US`.
    pub language: String,
    /// Values for the header, body and buttons, when the template has variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
}

/// The values for one part of the template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Component {
    /// The header: one text, media, currency or date-time value.
    Header {
        /// Its parameter.
        parameters: Vec<Parameter>,
    },
    /// The body's variables, in order.
    Body {
        /// Its parameters.
        parameters: Vec<Parameter>,
    },
    /// A button with a variable part.
    Button {
        /// The kind of button, as approved.
        sub_type: ButtonSubType,
        /// Its position among the template's buttons (0 to 9); a string on Meta's wire.
        #[serde(
            serialize_with = "index_as_string",
            deserialize_with = "index_from_string_or_number"
        )]
        index: u8,
        /// Its parameter.
        parameters: Vec<Parameter>,
    },
}

/// The kinds of button that take a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonSubType {
    /// Sends its payload back to the business when tapped (a `payload` parameter).
    QuickReply,
    /// Opens the approved URL with a suffix (a `text` parameter).
    Url,
    /// Copies a coupon code (a `coupon_code` parameter).
    CopyCode,
}

/// One value of a template variable, tagged by `type` as Meta documents it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Parameter {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An amount WhatsApp formats for the reader's locale.
    Currency {
        /// The amount.
        currency: Currency,
    },
    /// A date WhatsApp shows as given.
    DateTime {
        /// The date.
        date_time: DateTime,
    },
    /// A header image.
    Image {
        /// Where WhatsApp fetches it.
        image: MediaLink,
    },
    /// A header document.
    Document {
        /// Where WhatsApp fetches it.
        document: MediaLink,
    },
    /// A header video.
    Video {
        /// Where WhatsApp fetches it.
        video: MediaLink,
    },
    /// The payload of a quick-reply button.
    Payload {
        /// What comes back when the button is tapped.
        payload: String,
    },
    /// The code of a copy-code button.
    CouponCode {
        /// The code.
        coupon_code: String,
    },
}

/// A currency amount parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Currency {
    /// Shown when WhatsApp cannot format the amount.
    pub fallback_value: String,
    /// ISO 4217 code, e.g. `USD`.
    pub code: String,
    /// The amount times 1000 (`12.34` is `12340`).
    pub amount_1000: i64,
}

/// A date-time parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateTime {
    /// The date as it should be shown.
    pub fallback_value: String,
}

/// A media parameter: a public http(s) link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaLink {
    /// The URL.
    pub link: String,
    /// The file name shown for a document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// Why a template cannot be sent; `field` is its path in the request
/// (`template.components[0].parameters[1].text`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct TemplateError {
    /// The offending field.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> TemplateError {
    TemplateError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn index_as_string<S: Serializer>(index: &u8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&index.to_string())
}

/// Meta documents the index as a string; clients also send it as a number.
fn index_from_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u8),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => t
            .parse()
            .map_err(|_| serde::de::Error::custom("index must be a number from 0 to 9")),
    }
}

impl Template {
    /// Checks the template against Meta's rules: name and language format, at most one
    /// header and one body, buttons with distinct indexes, each component with the
    /// parameters its type allows, and text within Meta's limits.
    pub fn validate(&self) -> Result<(), TemplateError> {
        if !valid_name(&self.name) {
            return Err(invalid(
                "template.name",
                format!("must be 1 to {MAX_NAME_CHARS} lowercase letters, digits or underscores"),
            ));
        }
        if !is_language_code(&self.language) {
            return Err(invalid(
                "template.language",
                "must be a language code such as en or en_US",
            ));
        }
        let body_only = self
            .components
            .iter()
            .all(|c| matches!(c, Component::Body { .. }));
        let (mut headers, mut bodies, mut buttons) = (0, 0, Vec::new());
        for (i, component) in self.components.iter().enumerate() {
            let field = format!("template.components[{i}]");
            let (parameters, allowed, text_limit): (&[Parameter], &[&str], usize) = match component
            {
                Component::Header { parameters } => {
                    headers += 1;
                    if parameters.len() != 1 {
                        return Err(invalid(
                            format!("{field}.parameters"),
                            "a header takes exactly one parameter",
                        ));
                    }
                    (
                        parameters,
                        &[
                            "text",
                            "currency",
                            "date_time",
                            "image",
                            "document",
                            "video",
                        ],
                        MAX_HEADER_TEXT_CHARS,
                    )
                }
                Component::Body { parameters } => {
                    bodies += 1;
                    let limit = if body_only {
                        MAX_BODY_ONLY_TEXT_CHARS
                    } else {
                        MAX_BODY_TEXT_CHARS
                    };
                    (parameters, &["text", "currency", "date_time"], limit)
                }
                Component::Button {
                    sub_type,
                    index,
                    parameters,
                } => {
                    if *index > MAX_BUTTON_INDEX {
                        return Err(invalid(
                            format!("{field}.index"),
                            format!("must be from 0 to {MAX_BUTTON_INDEX}"),
                        ));
                    }
                    if buttons.contains(index) {
                        return Err(invalid(
                            format!("{field}.index"),
                            format!("button {index} is given twice"),
                        ));
                    }
                    buttons.push(*index);
                    let kind: &[&str] = match sub_type {
                        ButtonSubType::QuickReply => &["payload"],
                        ButtonSubType::Url => &["text"],
                        ButtonSubType::CopyCode => &["coupon_code"],
                    };
                    if parameters.len() != 1 {
                        return Err(invalid(
                            format!("{field}.parameters"),
                            "a button takes exactly one parameter",
                        ));
                    }
                    (parameters, kind, MAX_BODY_TEXT_CHARS)
                }
            };
            if headers > 1 || bodies > 1 {
                return Err(invalid(
                    format!("{field}.type"),
                    "a template has at most one header and one body",
                ));
            }
            if parameters.is_empty() {
                return Err(invalid(
                    format!("{field}.parameters"),
                    "must list at least one parameter",
                ));
            }
            for (j, parameter) in parameters.iter().enumerate() {
                let field = format!("{field}.parameters[{j}]");
                if !allowed.contains(&parameter.kind()) {
                    return Err(invalid(
                        format!("{field}.type"),
                        format!(
                            "{} is not allowed here (allowed: {})",
                            parameter.kind(),
                            allowed.join(", ")
                        ),
                    ));
                }
                parameter.validate(&field, text_limit)?;
            }
        }
        Ok(())
    }
}

impl Parameter {
    /// The parameter's `type` as Meta names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Parameter::Text { .. } => "text",
            Parameter::Currency { .. } => "currency",
            Parameter::DateTime { .. } => "date_time",
            Parameter::Image { .. } => "image",
            Parameter::Document { .. } => "document",
            Parameter::Video { .. } => "video",
            Parameter::Payload { .. } => "payload",
            Parameter::CouponCode { .. } => "coupon_code",
        }
    }

    fn validate(&self, field: &str, text_limit: usize) -> Result<(), TemplateError> {
        match self {
            Parameter::Text { text } => {
                let field = format!("{field}.text");
                if text.trim().is_empty() || text.chars().count() > text_limit {
                    return Err(invalid(
                        field,
                        format!("must be 1 to {text_limit} characters"),
                    ));
                }
                // Meta refuses such values (error 132018) when the message is sent.
                if text.contains(['\n', '\t']) || text.contains("     ") {
                    return Err(invalid(
                        field,
                        "must not contain new lines, tabs or more than 4 consecutive spaces",
                    ));
                }
            }
            Parameter::Currency { currency } => {
                if currency.fallback_value.trim().is_empty() {
                    return Err(invalid(
                        format!("{field}.currency.fallback_value"),
                        "must not be empty",
                    ));
                }
                let code_ok = currency.code.len() == 3
                    && currency.code.bytes().all(|b| b.is_ascii_uppercase());
                if !code_ok {
                    return Err(invalid(
                        format!("{field}.currency.code"),
                        "must be an ISO 4217 code such as USD",
                    ));
                }
            }
            Parameter::DateTime { date_time } => {
                if date_time.fallback_value.trim().is_empty() {
                    return Err(invalid(
                        format!("{field}.date_time.fallback_value"),
                        "must not be empty",
                    ));
                }
            }
            Parameter::Image { image: media }
            | Parameter::Document { document: media }
            | Parameter::Video { video: media } => {
                let ok = url::Url::parse(&media.link)
                    .is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
                if !ok {
                    return Err(invalid(
                        format!("{field}.{}.link", self.kind()),
                        "must be an http(s) URL",
                    ));
                }
            }
            Parameter::Payload { payload } => {
                if payload.is_empty() {
                    return Err(invalid(format!("{field}.payload"), "must not be empty"));
                }
            }
            Parameter::CouponCode { coupon_code } => {
                if coupon_code.is_empty() || coupon_code.chars().count() > MAX_COUPON_CHARS {
                    return Err(invalid(
                        format!("{field}.coupon_code"),
                        format!("must be 1 to {MAX_COUPON_CHARS} characters"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `ll`, `lll`, `ll_CC` or `ll_NNN` (Meta's codes: `en`, `en_US`, `es_419`… ).
/// Whether Meta accepts `name` as a template's name: 1 to 512 lowercase letters, digits or
/// underscores.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_language_code(code: &str) -> bool {
    let (language, region) = match code.split_once('_') {
        Some((l, r)) => (l, Some(r)),
        None => (code, None),
    };
    let language_ok =
        (2..=3).contains(&language.len()) && language.bytes().all(|b| b.is_ascii_lowercase());
    let region_ok = match region {
        None => true,
        Some(r) => {
            (r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
                || (r.len() == 3 && r.bytes().all(|b| b.is_ascii_digit()))
        }
    };
    language_ok && region_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Template {
        serde_json::from_value(value).unwrap()
    }

    fn full() -> serde_json::Value {
        json!({
            "name": "dispatch_update_2",
            "language": "en_US",
            "components": [
                {"type": "header", "parameters": [
                    {"type": "image", "image": {"link": "https://cdn.example.org/map.png"}}]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": "Unit 12"},
                    {"type": "currency", "currency":
                        {"fallback_value": "$12.34", "code": "USD", "amount_1000": 12340}},
                    {"type": "date_time", "date_time": {"fallback_value": "March 3, 2027"}}]},
                {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [
                    {"type": "payload", "payload": "ACK-42"}]},
                {"type": "button", "sub_type": "url", "index": 1, "parameters": [
                    {"type": "text", "text": "track/42"}]},
                {"type": "button", "sub_type": "copy_code", "index": "2", "parameters": [
                    {"type": "coupon_code", "coupon_code": "SAVE10"}]}
            ]
        })
    }

    #[test]
    fn meta_shaped_template_round_trips_with_string_indexes() {
        let template = parse(full());
        assert_eq!(template.validate(), Ok(()));
        let mut expected = full();
        // The number index comes back as Meta's string.
        expected["components"][3]["index"] = "1".into();
        assert_eq!(serde_json::to_value(&template).unwrap(), expected);
        let bare = parse(json!({"name": "hello_world", "language": "en"}));
        assert_eq!(bare.validate(), Ok(()));
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            json!({"name": "hello_world", "language": "en"})
        );
    }

    #[test]
    fn unknown_types_and_missing_fields_do_not_parse() {
        for bad in [
            json!({"name": "a", "language": "en", "components": [{"type": "footer", "parameters": []}]}),
            json!({"name": "a", "language": "en", "components": [{"type": "body", "parameters": [{"type": "location"}]}]}),
            json!({"name": "a", "language": "en", "components": [{"type": "body", "parameters": [{"type": "text"}]}]}),
            json!({"name": "a", "language": "en", "components": [{"type": "button", "parameters": [{"type": "payload", "payload": "x"}]}]}),
            json!({"name": "a", "language": "en", "components": [{"type": "button", "sub_type": "url", "index": "x", "parameters": []}]}),
            json!({"name": "a", "language": "en", "extra": 1}),
            json!({"language": "en"}),
        ] {
            assert!(
                serde_json::from_value::<Template>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    fn field_of(value: serde_json::Value) -> String {
        parse(value).validate().unwrap_err().field
    }

    #[test]
    fn meta_rules_are_checked_and_the_field_named() {
        let with = |components: serde_json::Value| json!({"name": "a_1", "language": "en", "components": components});
        let text = |t: &str| json!({"type": "text", "text": t});
        assert_eq!(
            field_of(json!({"name": "Hello", "language": "en"})),
            "template.name"
        );
        assert_eq!(
            field_of(json!({"name": "a-b", "language": "en"})),
            "template.name"
        );
        let long_name = "a".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            field_of(json!({"name": long_name, "language": "en"})),
            "template.name"
        );
        for language in ["EN", "en-US", "english", "en_us", "e", ""] {
            assert_eq!(
                field_of(json!({"name": "a", "language": language})),
                "template.language",
                "{language}"
            );
        }
        for language in ["en", "en_US", "es_419", "fil"] {
            assert_eq!(
                parse(json!({"name": "a", "language": language})).validate(),
                Ok(())
            );
        }
        let header = |p: serde_json::Value| json!({"type": "header", "parameters": [p]});
        let body = |ps: serde_json::Value| json!({"type": "body", "parameters": ps});
        assert_eq!(
            field_of(with(json!([header(text(&"x".repeat(61)))]))),
            "template.components[0].parameters[0].text"
        );
        assert_eq!(
            field_of(with(json!([body(json!([text("a\nb")]))]))),
            "template.components[0].parameters[0].text"
        );
        assert_eq!(
            field_of(with(json!([body(json!([text("a     b")]))]))),
            "template.components[0].parameters[0].text"
        );
        assert_eq!(
            field_of(with(json!([body(json!([text(" ")]))]))),
            "template.components[0].parameters[0].text"
        );
        // A body alone may be long; beside other components only 1024 characters.
        let long = "x".repeat(2000);
        assert_eq!(
            parse(with(json!([body(json!([text(&long)]))]))).validate(),
            Ok(())
        );
        assert_eq!(
            field_of(with(json!([header(text("h")), body(json!([text(&long)]))]))),
            "template.components[1].parameters[0].text"
        );
        assert_eq!(
            field_of(with(json!([body(
                json!([{"type": "payload", "payload": "x"}])
            )]))),
            "template.components[0].parameters[0].type"
        );
        assert_eq!(
            field_of(with(json!([body(json!([]))]))),
            "template.components[0].parameters"
        );
        assert_eq!(
            field_of(with(json!([
                body(json!([text("a")])),
                body(json!([text("b")]))
            ]))),
            "template.components[1].type"
        );
        assert_eq!(
            field_of(with(
                json!([{"type": "header", "parameters": [text("a"), text("b")]}])
            )),
            "template.components[0].parameters"
        );
        assert_eq!(
            field_of(with(json!([header(
                json!({"type": "video", "video": {"link": "ftp://x/y.mp4"}})
            )]))),
            "template.components[0].parameters[0].video.link"
        );
        assert_eq!(
            field_of(with(json!([body(json!([{"type": "currency", "currency":
                {"fallback_value": "1", "code": "usd", "amount_1000": 1}}]))]))),
            "template.components[0].parameters[0].currency.code"
        );
        assert_eq!(
            field_of(with(json!([body(
                json!([{"type": "date_time", "date_time":
                {"fallback_value": ""}}])
            )]))),
            "template.components[0].parameters[0].date_time.fallback_value"
        );
        let button = |sub: &str, index: u8, p: serde_json::Value| json!({"type": "button", "sub_type": sub, "index": index, "parameters": [p]});
        let payload = json!({"type": "payload", "payload": "x"});
        assert_eq!(
            field_of(with(json!([button("quick_reply", 10, payload.clone())]))),
            "template.components[0].index"
        );
        assert_eq!(
            field_of(with(json!([
                button("quick_reply", 0, payload.clone()),
                button("quick_reply", 0, payload.clone())
            ]))),
            "template.components[1].index"
        );
        assert_eq!(
            field_of(with(json!([button("url", 0, payload.clone())]))),
            "template.components[0].parameters[0].type"
        );
        assert_eq!(
            field_of(with(json!([button(
                "quick_reply",
                0,
                json!({"type": "payload", "payload": ""})
            )]))),
            "template.components[0].parameters[0].payload"
        );
        assert_eq!(
            field_of(with(json!([button(
                "copy_code",
                0,
                json!({"type": "coupon_code", "coupon_code": "SIXTEEN_CHARS_XX"})
            )]))),
            "template.components[0].parameters[0].coupon_code"
        );
    }
}
