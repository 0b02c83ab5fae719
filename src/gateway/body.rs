//! A `/mcp` POST body read as a `Value` would be, except `params.arguments`: that is kept as
//! its raw text, so a tool call's arguments go to their server without a tree being built,
//! cloned and written again. One pass; the same errors as `serde_json::from_slice::<Value>`
//! for everything but the raw text (see [`crate::mcp::jsonrpc::Scan::unusual`]).

use serde::de::value::SeqAccessDeserializer;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// What a body holds.
pub(super) enum Body<'a> {
    /// An object: its members (with `params` without `arguments`) and the raw text of
    /// `params.arguments` when `params` is an object that has them.
    Object(Map<String, Value>, Option<&'a RawValue>),
    /// An array (a batch).
    Array,
    /// A string, number, boolean or null.
    Other,
}

/// Reads a body.
///
/// # Errors
/// What `serde_json::from_slice::<Value>` says of a body that is not JSON.
pub(super) fn read(body: &[u8]) -> Result<Body<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = de.deserialize_any(Top)?;
    de.end()?;
    Ok(read)
}

/// The body's value.
struct Top;

/// `params`: a `Value` without `arguments`, and their raw text.
struct Params;

impl<'de> Visitor<'de> for Top {
    type Value = Body<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Body<'de>, A::Error> {
        let mut map = Map::new();
        let mut arguments = None;
        while let Some(key) = access.next_key::<String>()? {
            let value = if key == "params" {
                // As a map keeps the last of a duplicated key, the last params' arguments.
                let (params, raw) = access.next_value_seed(Params)?;
                arguments = raw;
                params
            } else {
                access.next_value()?
            };
            map.insert(key, value);
        }
        Ok(Body::Object(map, arguments))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Body<'de>, A::Error> {
        // Read as a Value would be, so a batch that is not valid is refused as before.
        Value::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(Body::Array)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }

    fn visit_unit<E>(self) -> Result<Body<'de>, E> {
        Ok(Body::Other)
    }
}

impl<'de> DeserializeSeed<'de> for Params {
    type Value = (Value, Option<&'de RawValue>);

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Params {
    type Value = (Value, Option<&'de RawValue>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::new();
        let mut arguments = None;
        while let Some(key) = access.next_key::<String>()? {
            if key == "arguments" {
                arguments = Some(access.next_value()?);
            } else {
                let value = access.next_value()?;
                map.insert(key, value);
            }
        }
        Ok((Value::Object(map), arguments))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok((Value::deserialize(SeqAccessDeserializer::new(seq))?, None))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok((Value::Bool(v), None))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok((Value::from(v), None))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok((Value::from(v), None))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok((Value::from(v), None))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok((Value::String(v.into()), None))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok((Value::String(v), None))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((Value::Null, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reads_as_a_value_would_but_for_the_arguments() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a\u0062","arguments":{ "x" : [1, {"y":null}] },"_meta":{"progressToken":3}}}"#;
        let Ok(Body::Object(map, Some(raw))) = read(body) else {
            panic!("not read");
        };
        let mut whole: Value = serde_json::from_slice(body).expect("json");
        let arguments = whole["params"]
            .as_object_mut()
            .and_then(|p| p.remove("arguments"));
        assert_eq!(Value::Object(map), whole);
        assert_eq!(raw.get(), r#"{ "x" : [1, {"y":null}] }"#);
        assert_eq!(serde_json::from_str::<Value>(raw.get()).ok(), arguments);
    }

    #[test]
    fn duplicated_keys_keep_the_last_as_a_value_does() {
        let body =
            br#"{"params":{"arguments":{"a":1},"name":"n","arguments":{"b":2}},"id":1,"id":2}"#;
        let Ok(Body::Object(map, Some(raw))) = read(body) else {
            panic!("not read");
        };
        assert_eq!(raw.get(), r#"{"b":2}"#);
        assert_eq!(map["id"], 2);
        // A later params without arguments leaves none.
        let body = br#"{"params":{"arguments":{"a":1}},"params":{"name":"n"}}"#;
        let Ok(Body::Object(map, None)) = read(body) else {
            panic!("arguments kept");
        };
        assert_eq!(map["params"], serde_json::json!({"name": "n"}));
        // A key spelled with escapes is the same key.
        let body = br#"{"params":{"argu\u006dents":{"a":1}}}"#;
        assert!(matches!(read(body), Ok(Body::Object(_, Some(_)))));
    }

    #[test]
    fn shapes_and_errors_are_those_of_a_value() {
        assert!(matches!(read(b"[1,{}]"), Ok(Body::Array)));
        for other in [&b"1"[..], b"-1", b"1.5", b"\"s\"", b"true", b"null"] {
            assert!(matches!(read(other), Ok(Body::Other)));
        }
        let params = [
            &br#"{"params":[1,"a"]}"#[..],
            br#"{"params":"s"}"#,
            br#"{"params":null}"#,
            br#"{"params":-2.5}"#,
        ];
        for body in params {
            let Ok(Body::Object(map, None)) = read(body) else {
                panic!("{}", String::from_utf8_lossy(body));
            };
            let whole: Value = serde_json::from_slice(body).expect("json");
            assert_eq!(Value::Object(map), whole);
        }
        let mut deep = String::new();
        for _ in 0..200 {
            deep.push('[');
        }
        let bad = [
            b"{\"a\":".to_vec(),
            b"{} x".to_vec(),
            br#"{"params":{"x":1e400}}"#.to_vec(),
            br#"[1e400]"#.to_vec(),
            format!(r#"{{"params":{{"name":{deep}}}}}"#).into_bytes(),
            format!("[{deep}").into_bytes(),
        ];
        for body in bad {
            let ours = read(&body).err().map(|e| e.to_string());
            let theirs = serde_json::from_slice::<Value>(&body)
                .err()
                .map(|e| e.to_string());
            assert!(ours.is_some(), "{}", String::from_utf8_lossy(&body));
            assert_eq!(ours, theirs);
        }
    }
}
