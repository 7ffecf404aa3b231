//! Reading a request: a body bounded in size and parsed into a typed struct (unknown fields,
//! wrong types and malformed JSON are a 422 naming the field), a query string, a path id.
//! Everything here runs before any API call, so a refused input appends nothing.

use axum::body::Body;
use serde::de::DeserializeOwned;

use super::error::RestError;

/// Largest request body read (bytes): the gRPC API's own bound.
pub const MAX_BODY: usize = crate::api::MAX_REQUEST;

/// Reads the whole body, refusing one larger than [`MAX_BODY`] (413) before reading past it.
pub async fn bytes(body: Body) -> Result<bytes::Bytes, RestError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        RestError::TooLarge(format!(
            "the request body is larger than {MAX_BODY} bytes (or was cut off); nothing was done"
        ))
    })
}

/// Parses a JSON body into `T`. An empty body is refused like FastAPI refuses it (a required
/// body is missing).
pub fn json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, RestError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(RestError::Validation {
            loc: vec!["body".into()],
            msg: "Field required: this endpoint takes a JSON object".into(),
            kind: "missing",
        });
    }
    serde_json::from_slice(raw).map_err(|e| {
        use serde_json::error::Category;
        let kind = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => "json_invalid",
            Category::Data => "value_error",
        };
        RestError::Validation {
            loc: vec!["body".into()],
            msg: e.to_string(),
            kind,
        }
    })
}

/// The pairs of a query string, percent-decoded. A key given twice, or one not in `known`, is
/// refused: a typo (`?limt=5`) must not silently mean "no limit".
pub fn query(raw: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, RestError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k)?;
        let v = decode(v)?;
        if !known.contains(&k.as_str()) {
            return Err(RestError::field(
                &["query", &k],
                format!("unknown query parameter; this endpoint takes {known:?}"),
            ));
        }
        if out.iter().any(|(have, _)| *have == k) {
            return Err(RestError::field(&["query", &k], "given more than once"));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// One query value by name.
pub fn get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn decode(s: &str) -> Result<String, RestError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| RestError::field(&["query"], "a malformed %-escape"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| RestError::field(&["query"], "not UTF-8"))
}

/// A device id, intent id or class name from the path: Hearth's id rules (no `/`, no `..`,
/// no upper case) checked here, so a path-like id is refused before any lookup.
pub fn device_id(id: &str) -> Result<(), RestError> {
    hearth_core::intent::check_id("device_id", id)
        .map_err(|e| RestError::field(&["path", "device_id"], e.to_string()))
}

/// An intent id from the path (`i-` and 16 hex digits).
pub fn intent_id(id: &str) -> Result<(), RestError> {
    hearth_core::domain::check_intent_id("intent_id", id)
        .map_err(|e| RestError::field(&["path", "intent_id"], e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_refuse_unknown_or_repeated_keys() {
        let q = query(
            Some("urgency=emergency&location=home%2Fkitchen"),
            &["urgency", "location"],
        )
        .unwrap();
        assert_eq!(get(&q, "location"), Some("home/kitchen"));
        assert!(query(Some("limt=5"), &["limit"]).is_err());
        assert!(query(Some("limit=5&limit=6"), &["limit"]).is_err());
        assert!(query(Some("limit=%zz"), &["limit"]).is_err());
    }

    #[test]
    fn malformed_json_and_wrong_types_are_validation_errors() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct B {
            a: String,
        }
        for (raw, kind) in [
            (&b"{"[..], "json_invalid"),
            (b"{\"a\": 1}", "value_error"),
            (b"{\"a\": \"x\", \"b\": 1}", "value_error"),
            (b"", "missing"),
        ] {
            match json::<B>(raw) {
                Err(RestError::Validation { kind: k, .. }) => assert_eq!(k, kind),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn path_like_ids_are_refused() {
        for bad in ["..", "../etc", "a/b", "A", ""] {
            assert!(device_id(bad).is_err(), "{bad:?}");
        }
        device_id("front-door").unwrap();
        assert!(intent_id("i-00").is_err());
    }
}
