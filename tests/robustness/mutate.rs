//! Mutations of carrier payloads: structural ones on the parsed form or JSON (drop a field,
//! give it a value of the wrong type or shape, repeat it), then byte-level ones on the result
//! (flip bits, truncate, insert tokens parsers trip on, delete runs).

use proptest::prelude::*;
use serde_json::Value;

/// One change to a payload. Indexes are taken modulo what there is to pick from.
#[derive(Debug, Clone, Copy)]
pub enum Edit {
    /// Remove a field (form pair, JSON object member or array element).
    DropField(usize),
    /// Replace a field's value with one of [`ODD_JSON`] / [`ODD_TEXT`].
    WrongType(usize, usize),
    /// Repeat a field (a form pair twice, a JSON array element twice, a JSON value as `[v, v]`).
    Repeat(usize),
    /// XOR one byte with a mask.
    Flip(usize, u8),
    /// Keep only the first n bytes.
    Truncate(usize),
    /// Insert one of [`TOKENS`] at a position.
    Insert(usize, usize),
    /// Delete up to n bytes at a position.
    Delete(usize, usize),
}

/// How a payload is structured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `application/x-www-form-urlencoded` (or a query string).
    Form,
    /// JSON.
    Json,
    /// Anything else (SSE text): byte edits only.
    Bytes,
}

/// Up to six edits.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        any::<usize>().prop_map(Edit::DropField),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::WrongType(a, b)),
        any::<usize>().prop_map(Edit::Repeat),
        (any::<usize>(), 1u8..).prop_map(|(a, b)| Edit::Flip(a, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 1usize..32).prop_map(|(a, b)| Edit::Delete(a, b)),
    ];
    proptest::collection::vec(edit, 0..6)
}

/// Values of the wrong type, size or shape for a JSON field.
fn odd_json(i: usize) -> Value {
    let long = "x".repeat(20_000);
    let deep = (0..200).fold(Value::Null, |v, _| Value::Array(vec![v]));
    let values = [
        Value::Null,
        Value::Bool(true),
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(1e308),
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MIN),
        serde_json::json!(""),
        serde_json::json!(long),
        serde_json::json!("+"),
        serde_json::json!("whatsapp:"),
        serde_json::json!("\u{0}"),
        serde_json::json!("😀\u{202e}"),
        serde_json::json!([]),
        serde_json::json!({}),
        deep,
        serde_json::json!({"a": {"b": {"c": []}}}),
        serde_json::json!("2025-13-45T99:99:99Z"),
        serde_json::json!("-99999999999999999999"),
        serde_json::json!("+15555550100"),
        serde_json::json!("+15555550123"),
        serde_json::json!("sms"),
        serde_json::json!("delivered"),
        serde_json::json!("read"),
        serde_json::json!("http://127.0.0.1:1/x"),
        serde_json::json!(vec!["https://example.org/a.jpg"; 20]),
    ];
    values[i % values.len()].clone()
}

/// Values of the wrong shape for a form field.
fn odd_text(i: usize) -> String {
    let values = [
        String::new(),
        " ".into(),
        "0".into(),
        "-1".into(),
        "99999999999999999999".into(),
        "+".into(),
        "+1".into(),
        "whatsapp:".into(),
        "whatsapp:+".into(),
        "rcs:+15555550123".into(),
        "%".into(),
        "%zz".into(),
        "\u{0}".into(),
        "é😀\u{202e}".into(),
        "A".repeat(20_000),
        "\r\n".into(),
        "null".into(),
        "[1]".into(),
        "delivered".into(),
        "read".into(),
        "undelivered".into(),
        "image/jpeg".into(),
        "javascript:alert(1)".into(),
        "+15555550100".into(),
        "+15555550123".into(),
        "5555550100".into(),
        "2025-13-45 99:99:99".into(),
        "1000".into(),
    ];
    values[i % values.len()].clone()
}

/// Byte sequences parsers trip on.
const TOKENS: &[&[u8]] = &[
    b"%",
    b"%ff",
    b"%00",
    b"\0",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"&",
    b"=",
    b"+",
    b"\xff\xfe",
    b"\xed\xa0\x80",
    b"\\u0000",
    b"\\ud800",
    b"1e99999",
    b"-",
    b"\r\n",
    b"data:",
    b"&NumMedia=99&MediaUrl98=x",
    b"&To=%2B15555550100",
];

/// Applies `edits` to `seed`: structural edits first (when the seed parses as `shape`), then
/// byte edits, in order.
pub fn mutate(seed: &[u8], shape: Shape, edits: &[Edit]) -> Vec<u8> {
    let structural = |e: &&Edit| {
        matches!(
            e,
            Edit::DropField(_) | Edit::WrongType(..) | Edit::Repeat(_)
        )
    };
    let (fields, bytes): (Vec<&Edit>, Vec<&Edit>) = edits.iter().partition(structural);
    let mut out = match shape {
        Shape::Form if !fields.is_empty() => edit_form(seed, &fields),
        Shape::Json if !fields.is_empty() => edit_json(seed, &fields),
        _ => seed.to_vec(),
    };
    for edit in bytes {
        edit_bytes(&mut out, edit);
    }
    out
}

fn edit_form(seed: &[u8], edits: &[&Edit]) -> Vec<u8> {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(seed).into_owned().collect();
    for edit in edits {
        if pairs.is_empty() {
            break;
        }
        let n = pairs.len();
        match **edit {
            Edit::DropField(i) => {
                pairs.remove(i % n);
            }
            Edit::WrongType(i, j) => pairs[i % n].1 = odd_text(j),
            Edit::Repeat(i) => {
                let pair = pairs[i % n].clone();
                pairs.push(pair);
            }
            _ => {}
        }
    }
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes()
}

/// Every path to a value inside `v` (object keys and array indexes), parents first.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(PathStep::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn parent_mut<'a>(root: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    let mut v = root;
    for step in &path[..path.len() - 1] {
        v = match step {
            PathStep::Key(k) => v.get_mut(k.as_str())?,
            PathStep::Index(i) => v.get_mut(*i)?,
        };
    }
    Some(v)
}

fn edit_json(seed: &[u8], edits: &[&Edit]) -> Vec<u8> {
    let Ok(mut root) = serde_json::from_slice::<Value>(seed) else {
        return seed.to_vec();
    };
    for edit in edits {
        let mut all = Vec::new();
        paths(&root, &mut Vec::new(), &mut all);
        if all.is_empty() {
            break;
        }
        let path = match **edit {
            Edit::DropField(i) | Edit::WrongType(i, _) | Edit::Repeat(i) => {
                all[i % all.len()].clone()
            }
            _ => continue,
        };
        let Some(parent) = parent_mut(&mut root, &path) else {
            continue;
        };
        let last = path.last().unwrap();
        match (**edit, last, parent) {
            (Edit::DropField(_), PathStep::Key(k), Value::Object(map)) => {
                map.remove(k.as_str());
            }
            (Edit::DropField(_), PathStep::Index(i), Value::Array(items)) => {
                items.remove(*i);
            }
            (Edit::WrongType(_, j), PathStep::Key(k), Value::Object(map)) => {
                map.insert(k.clone(), odd_json(j));
            }
            (Edit::WrongType(_, j), PathStep::Index(i), Value::Array(items)) => {
                items[*i] = odd_json(j);
            }
            (Edit::Repeat(_), PathStep::Index(i), Value::Array(items)) => {
                let item = items[*i].clone();
                items.push(item);
            }
            (Edit::Repeat(_), PathStep::Key(k), Value::Object(map)) => {
                if let Some(v) = map.get(k.as_str()).cloned() {
                    map.insert(k.clone(), Value::Array(vec![v.clone(), v]));
                }
            }
            _ => {}
        }
    }
    serde_json::to_vec(&root).unwrap()
}

fn edit_bytes(out: &mut Vec<u8>, edit: &Edit) {
    let len = out.len();
    match *edit {
        Edit::Flip(i, mask) if len > 0 => out[i % len] ^= mask,
        Edit::Truncate(n) => out.truncate(n % (len + 1)),
        Edit::Insert(i, t) => {
            let at = i % (len + 1);
            let token = TOKENS[t % TOKENS.len()];
            out.splice(at..at, token.iter().copied());
        }
        Edit::Delete(i, n) if len > 0 => {
            let at = i % len;
            out.drain(at..(at + n).min(len));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structural_edits_change_the_structure() {
        let form = b"A=1&B=2";
        assert_eq!(
            mutate(form, Shape::Form, &[Edit::DropField(0)]),
            b"B=2".to_vec()
        );
        assert_eq!(
            mutate(form, Shape::Form, &[Edit::Repeat(1)]),
            b"A=1&B=2&B=2".to_vec()
        );
        let json = br#"{"a":{"b":1}}"#;
        assert_eq!(
            mutate(json, Shape::Json, &[Edit::WrongType(1, 7)]),
            br#"{"a":{"b":""}}"#.to_vec()
        );
        assert_eq!(
            mutate(json, Shape::Json, &[Edit::DropField(0)]),
            b"{}".to_vec()
        );
        assert_eq!(
            mutate(b"abc", Shape::Bytes, &[Edit::Truncate(1)]),
            b"a".to_vec()
        );
    }
}
