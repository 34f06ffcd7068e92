//! DynamoDB item plumbing: keys, attribute values, times and cursors.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use omni_core::ports::{StoreError, StoreResult};
use uuid::Uuid;

/// A DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// A string attribute.
pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The `pk`/`sk` key of an item.
pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// Builds an item from pairs.
pub(crate) fn item<const N: usize>(pairs: [(&str, AttributeValue); N]) -> Item {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Expression attribute values from pairs (names start with `:`).
pub(crate) fn values<const N: usize>(pairs: [(&str, AttributeValue); N]) -> Item {
    item(pairs)
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored item has an invalid {what}"))
}

/// A string attribute of an item.
pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> StoreResult<&'a str> {
    opt_s(item, name).ok_or_else(|| corrupt(name))
}

/// A string attribute that may be absent.
pub(crate) fn opt_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// A number attribute of an item (0 when absent).
pub(crate) fn get_n(item: &Item, name: &str) -> StoreResult<i64> {
    match item.get(name) {
        None => Ok(0),
        Some(v) => v
            .as_n()
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| corrupt(name)),
    }
}

/// A value parsed from a string attribute.
pub(crate) fn parse<T: std::str::FromStr>(item: &Item, name: &str) -> StoreResult<T> {
    get_s(item, name)?.parse().map_err(|_| corrupt(name))
}

/// A JSON document kept in a string attribute.
pub(crate) fn doc<T: serde::de::DeserializeOwned>(item: &Item, name: &str) -> StoreResult<T> {
    serde_json::from_str(get_s(item, name)?).map_err(|_| corrupt(name))
}

/// A value as a JSON string attribute.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> StoreResult<AttributeValue> {
    serde_json::to_string(value)
        .map(AttributeValue::S)
        .map_err(|e| StoreError::Backend(format!("json: {e}")))
}

/// A time as a fixed-width string (nanoseconds, `Z`), so string order is time order and every
/// time round-trips exactly.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Reads a time written by [`ts`].
pub(crate) fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| corrupt("time"))
}

/// A UUID attribute.
pub(crate) fn get_uuid(item: &Item, name: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(get_s(item, name)?).map_err(|_| corrupt(name))
}

/// An index sort key of a listing: time then id, so ties on time still order.
pub(crate) fn order_key(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}#{id}", ts(at))
}

/// A page cursor: the sort key of the last item served, opaque to callers.
pub(crate) fn encode_cursor(sort_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(sort_key)
}

/// Reads a cursor made by [`encode_cursor`]; anything else is [`StoreError::InvalidCursor`].
pub(crate) fn decode_cursor(cursor: &str) -> StoreResult<String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
    let (at, id) = text.split_once('#').ok_or(StoreError::InvalidCursor)?;
    let at = parse_ts(at).map_err(|_| StoreError::InvalidCursor)?;
    let id = Uuid::parse_str(id).map_err(|_| StoreError::InvalidCursor)?;
    Ok(order_key(at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_strings_and_round_trip() {
        let a = DateTime::from_timestamp(1_700_000_000, 5).unwrap();
        let b = DateTime::from_timestamp(1_700_000_000, 50_000_000).unwrap();
        let c = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert!(ts(a) < ts(b) && ts(b) < ts(c));
        assert_eq!(ts(a).len(), ts(c).len());
        assert_eq!(parse_ts(&ts(a)).unwrap(), a);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let k = order_key(Utc::now(), Uuid::now_v7());
        assert_eq!(decode_cursor(&encode_cursor(&k)).unwrap(), k);
        for bad in ["", "!!", &encode_cursor("x#y"), &encode_cursor("nothing")] {
            assert!(matches!(decode_cursor(bad), Err(StoreError::InvalidCursor)));
        }
    }
}
