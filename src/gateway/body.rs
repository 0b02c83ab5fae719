//! A `/mcp` POST body read in one pass, without building a `Value` for what a tool call
//! reads: the members the gateway looks at (`jsonrpc`, `id`, `method`, `params`, and in
//! `params` its `name`, `arguments` and `_meta` with the members the gateway reads) are
//! matched by name as they come, strings without escapes are borrowed from the body, and
//! `params.arguments` is kept as its raw text, so a tool call's arguments go to their server
//! without a tree being built, cloned and written again. Any other member is read into a
//! `Value` map as before (a request that has them pays for them; a tool call has none).
//! [`Message::into_map`] gives the members as the `Map` a `Value` read would have made,
//! for the methods that read them so. The same errors as `serde_json::from_slice::<Value>`
//! for everything but the raw text (see [`crate::mcp::jsonrpc::Scan::unusual`]); a member
//! given twice keeps the last, as a map does.

use super::modern::{META_CAPABILITIES, META_LOG_LEVEL, META_VERSION};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;
use std::marker::PhantomData;

/// What a body holds.
// Read once per POST and kept on the stack: boxing the message would be an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Body<'a> {
    /// An object: a JSON-RPC message.
    Object(Message<'a>),
    /// An array (a batch).
    Array,
    /// A string, number, boolean or null.
    Other,
}

/// A value of the body: a string without escapes as it is there, an object as `T` reads
/// it, anything else (numbers, strings with escapes, arrays...) as a `Value`.
pub(super) enum Read<'a, T> {
    /// A string without escapes.
    Str(&'a str),
    /// An object.
    Object(T),
    /// Anything else.
    Value(Value),
}

/// An object the gateway does not take apart: read as a `Value` ([`Read::Value`]).
pub(super) enum Plain {}

/// A member read as a `Value` would be, but for strings borrowed from the body.
pub(super) type Member<'a> = Read<'a, Plain>;

/// A JSON-RPC message: the members the gateway reads, and the others.
#[derive(Default)]
pub(super) struct Message<'a> {
    pub jsonrpc: Option<Member<'a>>,
    pub id: Option<Member<'a>>,
    pub method: Option<Member<'a>>,
    pub params: Option<Read<'a, Params<'a>>>,
    /// The other members.
    pub other: Map<String, Value>,
}

/// `params` when it is an object.
#[derive(Default)]
pub(super) struct Params<'a> {
    pub name: Option<Member<'a>>,
    /// Raw text, not read as a `Value`.
    pub arguments: Option<&'a RawValue>,
    pub meta: Option<Read<'a, Meta<'a>>>,
    /// The other members (`inputResponses`, `requestState` of a 2026-07-28 call...).
    pub other: Map<String, Value>,
}

/// `params._meta` when it is an object.
#[derive(Default)]
pub(super) struct Meta<'a> {
    /// `io.modelcontextprotocol/protocolVersion`.
    pub version: Option<Member<'a>>,
    /// `io.modelcontextprotocol/clientCapabilities`.
    pub capabilities: Option<Member<'a>>,
    /// `io.modelcontextprotocol/logLevel`.
    pub log_level: Option<Member<'a>>,
    /// `progressToken`.
    pub progress_token: Option<Member<'a>>,
    /// The other members.
    pub other: Map<String, Value>,
}

/// The names of the members each object takes apart, in the order of its fields.
const MESSAGE_KEYS: &[&str] = &["jsonrpc", "id", "method", "params"];
const PARAMS_KEYS: &[&str] = &["name", "arguments", "_meta"];
const META_KEYS: &[&str] = &[
    META_VERSION,
    META_CAPABILITIES,
    META_LOG_LEVEL,
    "progressToken",
];

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

impl<'a, T> Read<'a, T> {
    /// The string it is, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Read::Str(s) => Some(s),
            Read::Value(v) => v.as_str(),
            Read::Object(_) => None,
        }
    }

    /// The value it is, if it is neither an object nor a string.
    pub fn as_value(&self) -> Option<&Value> {
        match self {
            Read::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The object it is, if it is one.
    pub fn as_object(&self) -> Option<&T> {
        match self {
            Read::Object(o) => Some(o),
            _ => None,
        }
    }
}

/// An object as the `Value` a read of it would have made.
pub(super) trait IntoValue {
    /// # Errors
    /// Raw arguments that a `Value` read refuses.
    fn into_value(self) -> Result<Value, serde_json::Error>;
}

impl IntoValue for Plain {
    fn into_value(self) -> Result<Value, serde_json::Error> {
        match self {}
    }
}

impl Member<'_> {
    /// The `Value` it is.
    pub fn to_value(&self) -> Value {
        match self {
            Read::Str(s) => Value::String((*s).to_owned()),
            Read::Value(v) => v.clone(),
            Read::Object(never) => match *never {},
        }
    }
}

impl<T: IntoValue> IntoValue for Read<'_, T> {
    fn into_value(self) -> Result<Value, serde_json::Error> {
        match self {
            Read::Str(s) => Ok(Value::String(s.to_owned())),
            Read::Object(o) => o.into_value(),
            Read::Value(v) => Ok(v),
        }
    }
}

/// Puts the members back into `map` under their names.
fn put<const N: usize>(map: &mut Map<String, Value>, keys: &[&str], members: [Option<Value>; N]) {
    for (key, member) in keys.iter().zip(members) {
        if let Some(v) = member {
            map.insert((*key).to_owned(), v);
        }
    }
}

/// A member as the `Value` a read of it would have made.
fn value_of<T: IntoValue>(member: Option<T>) -> Result<Option<Value>, serde_json::Error> {
    member.map(IntoValue::into_value).transpose()
}

impl IntoValue for Meta<'_> {
    fn into_value(self) -> Result<Value, serde_json::Error> {
        let mut map = self.other;
        let members = [
            value_of(self.version)?,
            value_of(self.capabilities)?,
            value_of(self.log_level)?,
            value_of(self.progress_token)?,
        ];
        put(&mut map, META_KEYS, members);
        Ok(Value::Object(map))
    }
}

impl IntoValue for Params<'_> {
    /// With `arguments` read as a `Value`.
    fn into_value(self) -> Result<Value, serde_json::Error> {
        let mut map = self.other;
        let arguments = match self.arguments {
            Some(raw) => Some(serde_json::from_str::<Value>(raw.get())?),
            None => None,
        };
        let members = [value_of(self.name)?, arguments, value_of(self.meta)?];
        put(&mut map, PARAMS_KEYS, members);
        Ok(Value::Object(map))
    }
}

impl Message<'_> {
    /// The members as a `Value` read of the body would have them (`params.arguments` read
    /// as a `Value`).
    ///
    /// # Errors
    /// Raw arguments that a `Value` read refuses.
    pub fn into_map(self) -> Result<Map<String, Value>, serde_json::Error> {
        let mut map = self.other;
        let members = [
            value_of(self.jsonrpc)?,
            value_of(self.id)?,
            value_of(self.method)?,
            value_of(self.params)?,
        ];
        put(&mut map, MESSAGE_KEYS, members);
        Ok(map)
    }

    /// The raw `params.arguments`, when `params` is an object that has them.
    pub fn arguments(&self) -> Option<&RawValue> {
        self.params.as_ref()?.as_object()?.arguments
    }
}

/// The body's value.
struct Top;

impl<'de> Visitor<'de> for Top {
    type Value = Body<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Body<'de>, A::Error> {
        let mut m = Message::default();
        while let Some(key) = access.next_key_seed(KeyOf(MESSAGE_KEYS))? {
            match key {
                Ok(0) => m.jsonrpc = Some(access.next_value()?),
                Ok(1) => m.id = Some(access.next_value()?),
                Ok(2) => m.method = Some(access.next_value()?),
                Ok(_) => m.params = Some(access.next_value()?),
                Err(key) => {
                    let value = access.next_value()?;
                    m.other.insert(key, value);
                }
            }
        }
        Ok(Body::Object(m))
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

/// A member's name: its place among the names given, or the name itself when it is none
/// of them (only then is it owned). Escapes are decoded first, so `"n\u0061me"` is `name`.
struct KeyOf(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyOf {
    type Value = Result<usize, String>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyOf {
    type Value = Result<usize, String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self
            .0
            .iter()
            .position(|k| *k == v)
            .ok_or_else(|| v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == v).ok_or(v))
    }
}

/// An object the gateway reads members of.
pub(super) trait Object<'de>: Sized {
    /// Reads it from its members.
    ///
    /// # Errors
    /// Those of the body's reader.
    fn read<A: MapAccess<'de>>(access: A) -> Result<Read<'de, Self>, A::Error>;
}

impl<'de> Object<'de> for Plain {
    fn read<A: MapAccess<'de>>(access: A) -> Result<Read<'de, Self>, A::Error> {
        Ok(Read::Value(Value::deserialize(
            MapAccessDeserializer::new(access),
        )?))
    }
}

impl<'de> Object<'de> for Params<'de> {
    fn read<A: MapAccess<'de>>(mut access: A) -> Result<Read<'de, Self>, A::Error> {
        let mut p = Params::default();
        while let Some(key) = access.next_key_seed(KeyOf(PARAMS_KEYS))? {
            match key {
                Ok(0) => p.name = Some(access.next_value()?),
                Ok(1) => p.arguments = Some(access.next_value()?),
                Ok(_) => p.meta = Some(access.next_value()?),
                Err(key) => {
                    let value = access.next_value()?;
                    p.other.insert(key, value);
                }
            }
        }
        Ok(Read::Object(p))
    }
}

impl<'de> Object<'de> for Meta<'de> {
    fn read<A: MapAccess<'de>>(mut access: A) -> Result<Read<'de, Self>, A::Error> {
        let mut m = Meta::default();
        while let Some(key) = access.next_key_seed(KeyOf(META_KEYS))? {
            let member = match key {
                Ok(0) => &mut m.version,
                Ok(1) => &mut m.capabilities,
                Ok(2) => &mut m.log_level,
                Ok(_) => &mut m.progress_token,
                Err(key) => {
                    let value = access.next_value()?;
                    m.other.insert(key, value);
                    continue;
                }
            };
            *member = Some(access.next_value()?);
        }
        Ok(Read::Object(m))
    }
}

impl<'de, T: Object<'de>> Deserialize<'de> for Read<'de, T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(Reader(PhantomData))
    }
}

/// Reads a [`Read`]: what is not an object or a plain string, as a `Value` would be read.
struct Reader<T>(PhantomData<T>);

impl<'de, T: Object<'de>> Visitor<'de> for Reader<T> {
    type Value = Read<'de, T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
        T::read(access)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok(Read::Value(Value::deserialize(
            SeqAccessDeserializer::new(seq),
        )?))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Read::Str(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Read::Value(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Read::Value(Value::String(v)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Read::Value(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Read::Value(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Read::Value(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Read::Value(Value::from(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Read::Value(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of `body` (an object).
    fn message(body: &[u8]) -> Message<'_> {
        match read(body) {
            Ok(Body::Object(m)) => m,
            _ => panic!("not an object: {}", String::from_utf8_lossy(body)),
        }
    }

    /// `body` read as a message and put back together is what a `Value` read makes.
    fn same_as_a_value(body: &[u8]) {
        let whole: Value = serde_json::from_slice(body).expect("json");
        let map = message(body).into_map().expect("arguments");
        assert_eq!(
            Value::Object(map),
            whole,
            "{}",
            String::from_utf8_lossy(body)
        );
    }

    fn params<'m, 'a>(m: &'m Message<'a>) -> &'m Params<'a> {
        m.params.as_ref().and_then(Read::as_object).expect("params")
    }

    fn meta<'m, 'a>(m: &'m Message<'a>) -> &'m Meta<'a> {
        let meta = params(m).meta.as_ref().and_then(Read::as_object);
        meta.expect("_meta")
    }

    #[test]
    fn a_body_reads_as_a_value_would_but_for_the_arguments() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a\u0062","arguments":{ "x" : [1, {"y":null}] },"_meta":{"progressToken":3}}}"#;
        let m = message(body);
        assert_eq!(
            m.arguments().map(RawValue::get),
            Some(r#"{ "x" : [1, {"y":null}] }"#)
        );
        assert_eq!(m.method.as_ref().and_then(Read::as_str), Some("tools/call"));
        assert_eq!(params(&m).name.as_ref().and_then(Read::as_str), Some("ab"));
        let token = meta(&m).progress_token.as_ref().map(Member::to_value);
        assert_eq!(token, Some(Value::from(3)));
        same_as_a_value(body);
    }

    #[test]
    fn plain_strings_are_borrowed_and_escaped_ones_decoded() {
        let body = br#"{"jsonrpc":"2.0","method":"tools\/call","params":{"name":"fx__echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/logLevel":"debug"}}}"#;
        let m = message(body);
        assert!(matches!(m.jsonrpc, Some(Read::Str("2.0"))));
        assert!(matches!(&m.method, Some(Read::Value(Value::String(s))) if s == "tools/call"));
        assert!(matches!(params(&m).name, Some(Read::Str("fx__echo"))));
        assert!(matches!(meta(&m).version, Some(Read::Str("2026-07-28"))));
        assert_eq!(
            meta(&m).log_level.as_ref().and_then(Read::as_str),
            Some("debug")
        );
        same_as_a_value(body);
    }

    #[test]
    fn escaped_keys_are_the_keys_they_spell() {
        let body = br#"{"jsonrp\u0063":"2.0","i\u0064":1,"metho\u0064":"tools/call","p\u0061rams":{"n\u0061me":"x","argu\u006dents":{"a":1},"_met\u0061":{"progressT\u006fken":"t","io.modelcontextprotocol\/clientCapabilities":{}}}}"#;
        let m = message(body);
        assert!(m.other.is_empty(), "{:?}", m.other);
        assert!(m.jsonrpc.is_some() && m.id.is_some());
        assert_eq!(m.method.as_ref().and_then(Read::as_str), Some("tools/call"));
        assert_eq!(params(&m).name.as_ref().and_then(Read::as_str), Some("x"));
        assert_eq!(m.arguments().map(RawValue::get), Some(r#"{"a":1}"#));
        assert!(params(&m).other.is_empty());
        assert_eq!(
            meta(&m).progress_token.as_ref().and_then(Read::as_str),
            Some("t")
        );
        assert!(meta(&m).capabilities.is_some());
        assert!(meta(&m).other.is_empty());
        same_as_a_value(body);
    }

    #[test]
    fn other_members_and_other_cases_are_kept_as_a_value_would_keep_them() {
        // Names differing in case are other names: kept, not taken for the known ones.
        let body = br#"{"ID":1,"Method":"tools/call","PARAMS":{},"result":{"x":[1]},"params":{"Name":"n","Arguments":{"a":1},"_Meta":{},"requestState":"s","inputResponses":{"k":{"action":"accept"}},"_meta":{"ProgressToken":1,"x":null}}}"#;
        let m = message(body);
        assert!(m.id.is_none() && m.method.is_none());
        let others: Vec<&str> = m.other.keys().map(String::as_str).collect();
        assert_eq!(others, ["ID", "Method", "PARAMS", "result"]);
        let p = params(&m);
        assert!(p.name.is_none() && p.arguments.is_none());
        let others: Vec<&str> = p.other.keys().map(String::as_str).collect();
        assert_eq!(
            others,
            [
                "Arguments",
                "Name",
                "_Meta",
                "inputResponses",
                "requestState"
            ]
        );
        assert!(meta(&m).progress_token.is_none());
        assert_eq!(meta(&m).other.len(), 2);
        same_as_a_value(body);
    }

    #[test]
    fn duplicated_keys_keep_the_last_as_a_value_does() {
        let body =
            br#"{"params":{"arguments":{"a":1},"name":"n","arguments":{"b":2}},"id":1,"id":2}"#;
        let m = message(body);
        assert_eq!(m.arguments().map(RawValue::get), Some(r#"{"b":2}"#));
        assert_eq!(m.id.as_ref().map(Member::to_value), Some(Value::from(2)));
        // A later params without arguments leaves none.
        let body = br#"{"params":{"arguments":{"a":1}},"params":{"name":"n"}}"#;
        let m = message(body);
        assert!(m.arguments().is_none());
        let map = m.into_map().expect("map");
        assert_eq!(map["params"], serde_json::json!({"name": "n"}));
        // A key spelled with escapes is the same key.
        let body = br#"{"params":{"argu\u006dents":{"a":1}}}"#;
        assert!(message(body).arguments().is_some());
        for body in [
            &br#"{"method":"a","method":"tools/call","x":1,"x":[2],"params":{"name":1,"name":"n","_meta":{"progressToken":1},"_meta":{"progressToken":2,"progressToken":"t"},"o":1,"o":2}}"#[..],
            br#"{"params":{"_meta":{"io.modelcontextprotocol/logLevel":"info"},"_meta":5},"id":"a","id":null}"#,
        ] {
            same_as_a_value(body);
        }
        let m = message(br#"{"params":{"_meta":{"progressToken":2,"progressToken":"t"}}}"#);
        assert_eq!(
            meta(&m).progress_token.as_ref().and_then(Read::as_str),
            Some("t")
        );
    }

    #[test]
    fn members_of_every_shape_come_back_as_they_were() {
        let values = [
            "null",
            "true",
            "false",
            "0",
            "-3",
            "18446744073709551615",
            "-1.5",
            "2.5e-3",
            r#""""#,
            r#""s""#,
            r#""\u00e9\n""#,
            "[]",
            r#"[1,"a",{"b":[null]}]"#,
            "{}",
            r#"{"k":{"l":[{}]}}"#,
        ];
        for v in values {
            for key in ["jsonrpc", "id", "method", "params", "other"] {
                same_as_a_value(format!(r#"{{"{key}":{v}}}"#).as_bytes());
            }
            for key in ["name", "arguments", "_meta", "requestState"] {
                same_as_a_value(format!(r#"{{"params":{{"{key}":{v}}}}}"#).as_bytes());
            }
            for key in [
                "io.modelcontextprotocol/protocolVersion",
                "io.modelcontextprotocol/clientCapabilities",
                "io.modelcontextprotocol/logLevel",
                "progressToken",
                "other",
            ] {
                let body = format!(r#"{{"params":{{"_meta":{{"{key}":{v}}}}}}}"#);
                same_as_a_value(body.as_bytes());
            }
        }
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
            assert!(message(body).arguments().is_none());
            same_as_a_value(body);
        }
        let mut deep = String::new();
        for _ in 0..200 {
            deep.push('[');
        }
        let bad = [
            b"{\"a\":".to_vec(),
            b"{} x".to_vec(),
            b"{\"id\":1,}".to_vec(),
            b"{1:2}".to_vec(),
            br#"{"params":{"x":1e400}}"#.to_vec(),
            br#"{"params":{"_meta":{"progressToken":1e400}}}"#.to_vec(),
            br#"{"id":"\ud800"}"#.to_vec(),
            br#"{"params":{"name":"\ud800"}}"#.to_vec(),
            br#"{"params":{"_meta":{"io.modelcontextprotocol/logLevel":"\q"}}}"#.to_vec(),
            br#"[1e400]"#.to_vec(),
            format!(r#"{{"params":{{"name":{deep}}}}}"#).into_bytes(),
            format!(r#"{{"params":{{"_meta":{{"x":{deep}}}}}}}"#).into_bytes(),
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
