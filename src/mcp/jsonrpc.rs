//! JSON-RPC 2.0 over newline-delimited byte streams, without I/O: splitting a byte stream
//! into lines under a length limit, classifying messages, and encoding ours.
//!
//! Invariant: a [`LineSplitter`] never holds more than `max_line` bytes, whatever the peer
//! writes; a longer line is reported once ([`Line::TooLong`]) and its bytes are discarded.

use serde_json::value::RawValue;
use serde_json::{json, Value};

/// One item out of the splitter.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A complete line without its newline (a trailing `\r` is removed too).
    Complete(Vec<u8>),
    /// A line exceeded the limit; `len` bytes of it were seen so far.
    TooLong {
        /// Bytes seen when the limit was crossed.
        len: usize,
    },
}

/// Splits a byte stream into lines of at most `max_line` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
    discarding: bool,
}

impl LineSplitter {
    /// A splitter with a line limit.
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max_line,
            discarding: false,
        }
    }

    /// Bytes held for an incomplete line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes; complete lines and over-long reports are appended to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Line>) {
        while let Some(line) = self.next_line(&mut data) {
            out.push(line);
        }
    }

    /// The next complete line or over-long report out of `data`, which is advanced past the
    /// bytes taken; `None` once `data` is used up (an incomplete line is held for the next
    /// bytes). A line that came whole in `data` is copied out once, at its exact length.
    pub fn next_line(&mut self, data: &mut &[u8]) -> Option<Line> {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    let (head, rest) = data.split_at(pos);
                    *data = &rest[1..];
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    let len = self.buf.len() + head.len();
                    if len > self.max_line {
                        // Not clear(): that would keep up to max_line of capacity.
                        self.buf = Vec::new();
                        return Some(Line::TooLong { len });
                    }
                    if self.buf.is_empty() {
                        let head = head.strip_suffix(b"\r").unwrap_or(head);
                        return Some(Line::Complete(head.to_vec()));
                    }
                    self.buf.extend_from_slice(head);
                    let mut line = std::mem::take(&mut self.buf);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Some(Line::Complete(line));
                }
                None => {
                    let rest = std::mem::take(data);
                    if self.discarding {
                        return None;
                    }
                    let len = self.buf.len() + rest.len();
                    if len > self.max_line {
                        self.buf = Vec::new();
                        self.discarding = true;
                        return Some(Line::TooLong { len });
                    }
                    self.buf.extend_from_slice(rest);
                    return None;
                }
            }
        }
        None
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Error code (-32601 method not found, ...).
    pub code: i64,
    /// Message.
    pub message: String,
    /// Optional data.
    pub data: Option<Value>,
}

/// A message from the peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An answer to one of our requests.
    Response {
        /// The id we sent.
        id: Value,
        /// Its result or error.
        result: Result<Value, RpcError>,
    },
    /// A request we must answer.
    Request {
        /// Its id.
        id: Value,
        /// Method name.
        method: String,
        /// Parameters (Null when absent).
        params: Value,
    },
    /// A notification (no answer).
    Notification {
        /// Method name.
        method: String,
        /// Parameters (Null when absent).
        params: Value,
    },
}

/// Parses one line into messages (a JSON array is a batch).
///
/// # Errors
/// A description of what is wrong with the line.
pub fn parse(line: &[u8]) -> Result<Vec<Message>, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    match value {
        Value::Array(items) if !items.is_empty() => items.into_iter().map(classify).collect(),
        Value::Array(_) => Err("empty batch".into()),
        other => classify(other).map(|m| vec![m]),
    }
}

fn classify(value: Value) -> Result<Message, String> {
    let Value::Object(mut obj) = value else {
        return Err("not a JSON-RPC object".into());
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("missing \"jsonrpc\": \"2.0\"".into());
    }
    let id = obj.remove("id");
    let params = obj.remove("params").unwrap_or(Value::Null);
    match (obj.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) if !id.is_null() => {
            Ok(Message::Request { id, method, params })
        }
        (Some(Value::String(method)), _) => Ok(Message::Notification { method, params }),
        (Some(_), _) => Err("method is not a string".into()),
        (None, Some(id)) => {
            if let Some(result) = obj.remove("result") {
                Ok(Message::Response {
                    id,
                    result: Ok(result),
                })
            } else if let Some(err) = obj.remove("error") {
                Ok(Message::Response {
                    id,
                    result: Err(RpcError {
                        code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                        message: err
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        data: err.get("data").cloned(),
                    }),
                })
            } else {
                Err("response without result or error".into())
            }
        }
        (None, None) => Err("neither a request, a notification nor a response".into()),
    }
}

fn line(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Encodes a request: the bytes `json!` would give (keys in the same, sorted, order), without
/// building a map for the envelope first (every tool call goes through here).
pub fn request(id: u64, method: &str, params: Value) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        id: u64,
        jsonrpc: &'static str,
        method: &'a str,
        params: &'a Value,
    }
    let envelope = Envelope {
        id,
        jsonrpc: "2.0",
        method,
        params: &params,
    };
    let mut bytes = serde_json::to_vec(&envelope).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// A tool call's arguments: the text of one JSON object, on one line (no `\n` or `\r`), as
/// the caller sent it (its keys in its order) or as serde_json writes a `Value`. `/mcp`
/// splices a client's text into the line to the server without building a tree of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Arguments(Box<str>);

/// What [`scan`] found in a JSON text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scan {
    /// A line break between tokens (a valid JSON text has none inside its strings).
    pub lines: bool,
    /// Something a `Value` parse may refuse where the raw text was taken: nesting deeper
    /// than [`PLAIN_DEPTH`], an exponent, a run of more than 300 digits (a number out of
    /// range) or a `\uD...` escape (a lone surrogate).
    pub unusual: bool,
}

/// Nesting of a raw text beyond which [`Scan::unusual`] is set.
pub const PLAIN_DEPTH: usize = 100;

/// One pass over a valid JSON text (linear, no allocation).
pub fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let mut found = Scan {
        lines: false,
        unusual: false,
    };
    let (mut depth, mut in_string, mut escaped, mut digits) = (0usize, false, false, 0usize);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
                if b == b'u' && matches!(bytes.get(i + 1), Some(b'd' | b'D')) {
                    found.unusual = true;
                }
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        if b.is_ascii_digit() {
            digits += 1;
            found.unusual |= digits > 300;
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                found.unusual |= depth > PLAIN_DEPTH;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'e' | b'E' if digits > 0 => found.unusual = true,
            b'\n' | b'\r' => found.lines = true,
            _ => {}
        }
        digits = 0;
    }
    found
}

/// `text` without the whitespace between its tokens (a valid JSON text).
fn minified(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

impl Arguments {
    /// No arguments: `{}`.
    pub fn empty() -> Self {
        Arguments("{}".into())
    }

    /// A JSON object's raw text (`lines`: what [`scan`] found for it); `None` when it is not
    /// an object. A text over several lines is minified (one line to the server).
    pub fn from_raw(raw: &RawValue, lines: bool) -> Option<Self> {
        let text = raw.get();
        if !text.starts_with('{') {
            return None;
        }
        Some(Arguments(if lines {
            minified(text).into()
        } else {
            text.into()
        }))
    }

    /// An object's text as serde_json writes it; `None` when `value` is not an object.
    pub fn from_value(value: &Value) -> Option<Self> {
        if !value.is_object() {
            return None;
        }
        serde_json::to_string(value)
            .ok()
            .map(|t| Arguments(t.into()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The arguments as a tree, for the few callers that read them. The text was validated
    /// when made (as a `Value` parse would, see [`Scan::unusual`]); an object that does not
    /// parse would be an empty one.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or_else(|_| Value::Object(Default::default()))
    }
}

/// Encodes a `tools/call` request with `arguments` spliced as they are: the bytes
/// [`request`] gives for `{"_meta": {"progressToken": token}, "arguments": ..., "name":
/// tool}` (the keys of a `json!` map are sorted), without a tree of the arguments.
pub fn call_request(id: u64, tool: &str, arguments: &Arguments, token: &str) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"id\":";
    const META: &[u8] =
        br#","jsonrpc":"2.0","method":"tools/call","params":{"_meta":{"progressToken":"#;
    const ARGUMENTS: &[u8] = br#"},"arguments":"#;
    const NAME: &[u8] = br#","name":"#;
    const END: &[u8] = b"}}\n";
    // The fixed text, the longest id (20 digits) and the strings' quotes: the line is made in
    // one allocation unless the token or the tool name needs escapes.
    const FIXED: usize = HEAD.len() + META.len() + ARGUMENTS.len() + NAME.len() + END.len() + 24;
    let args = arguments.as_str();
    let mut bytes = Vec::with_capacity(FIXED + tool.len() + args.len() + token.len());
    bytes.extend_from_slice(HEAD);
    if serde_json::to_writer(&mut bytes, &id).is_err() {
        bytes.push(b'0');
    }
    bytes.extend_from_slice(META);
    push_string(&mut bytes, token);
    bytes.extend_from_slice(ARGUMENTS);
    bytes.extend_from_slice(args.as_bytes());
    bytes.extend_from_slice(NAME);
    push_string(&mut bytes, tool);
    bytes.extend_from_slice(END);
    bytes
}

/// Appends `s` as a JSON string.
fn push_string(bytes: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *bytes, s).is_err() {
        // Writing to a Vec cannot fail; an empty string keeps the line valid if it did.
        bytes.extend_from_slice(b"\"\"");
    }
}

/// Encodes a notification.
pub fn notification(method: &str, params: Value) -> Vec<u8> {
    if params.is_null() {
        line(&json!({"jsonrpc": "2.0", "method": method}))
    } else {
        line(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
    }
}

/// Encodes a successful response.
pub fn response(id: &Value, result: Value) -> Vec<u8> {
    line(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// Encodes an error response.
pub fn error_response(id: &Value, code: i64, message: &str) -> Vec<u8> {
    line(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<Line> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
            assert!(s.buffered() <= max);
        }
        out
    }

    #[test]
    fn a_request_is_encoded_as_its_json_value_would_be() {
        let params = json!({"name": "echo", "arguments": {"message": "m\\n\"x\""}, "_meta": {"progressToken": "t"}});
        let expected = line(
            &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params.clone()}),
        );
        assert_eq!(request(7, "tools/call", params), expected);
    }

    #[test]
    fn a_call_with_spliced_arguments_is_the_request_its_values_would_make() {
        for (args, tool, token) in [
            (json!({}), "echo", "t"),
            (
                json!({"message": "m\\n\"x\"", "n": [1, 2.5, null]}),
                "e\"c\\ho",
                "a\u{1}b",
            ),
        ] {
            let params =
                json!({"name": tool, "arguments": args, "_meta": {"progressToken": token}});
            let arguments = Arguments::from_value(&args).expect("object");
            assert_eq!(
                call_request(u64::MAX, tool, &arguments, token),
                request(u64::MAX, "tools/call", params)
            );
        }
        assert_eq!(Arguments::from_value(&json!([1])), None);
    }

    #[test]
    fn a_call_line_is_made_in_one_allocation() {
        // The longest id and strings without escapes fill the capacity reserved at first:
        // a line that outgrew it would have been reallocated (twice the capacity).
        let arguments = Arguments::from_value(&json!({"message": "hi"})).expect("object");
        let line = call_request(u64::MAX, "echo", &arguments, "fx:18446744073709551615");
        assert_eq!(line.len(), line.capacity());
    }

    #[test]
    fn raw_arguments_over_several_lines_become_one() {
        let text = "{\n  \"a b\" : [ 1,\r\n\t2 ],\n  \"s\": \" x\\\" \\n \"\n}";
        let raw: Box<RawValue> = serde_json::from_str(text).expect("json");
        let found = scan(raw.get());
        assert_eq!(
            found,
            Scan {
                lines: true,
                unusual: false
            }
        );
        let one = Arguments::from_raw(&raw, found.lines).expect("object");
        assert_eq!(one.as_str(), r#"{"a b":[1,2],"s":" x\" \n "}"#);
        assert_eq!(
            one.to_value(),
            serde_json::from_str::<Value>(text).expect("json")
        );
        let line = call_request(1, "t", &one, "p");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        // A text on one line is kept as it came.
        let raw: Box<RawValue> = serde_json::from_str(r#"{ "b" :1, "a":2 }"#).expect("json");
        let found = scan(raw.get());
        assert!(!found.lines);
        let kept = Arguments::from_raw(&raw, found.lines).expect("object");
        assert_eq!(kept.as_str(), r#"{ "b" :1, "a":2 }"#);
        for not_object in ["[1]", "\"s\"", "3", "true"] {
            let raw: Box<RawValue> = serde_json::from_str(not_object).expect("json");
            assert_eq!(Arguments::from_raw(&raw, false), None);
        }
    }

    #[test]
    fn a_scan_tells_what_a_value_parse_might_refuse() {
        let unusual = |t: &str| scan(t).unusual;
        for plain in [
            r#"{"e":"1e5 \u0041","t":true,"f":false,"n":-12.5,"x":"\\udead"}"#,
            r#"{"deep":[[[[[]]]]]}"#,
        ] {
            assert!(!unusual(plain), "{plain}");
        }
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(PLAIN_DEPTH),
            "]".repeat(PLAIN_DEPTH)
        );
        let long = format!("{{\"a\":{}}}", "9".repeat(301));
        for odd in [
            r#"{"a":1e400}"#,
            r#"{"a":1.5E3}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\uDC00"}"#,
            &deep,
            &long,
        ] {
            assert!(unusual(odd), "{odd}");
        }
    }

    #[test]
    fn lines_across_chunks() {
        let out = split(100, &[b"ab", b"c\nde", b"f\r\n\n"]);
        assert_eq!(
            out,
            vec![
                Line::Complete(b"abc".to_vec()),
                Line::Complete(b"def".to_vec()),
                Line::Complete(Vec::new())
            ]
        );
    }

    #[test]
    fn long_lines_are_reported_once_and_dropped() {
        let big = [b'x'; 25];
        let out = split(10, &[&big[..8], &big[8..], b"yy\nok\n"]);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], Line::TooLong { .. }));
        assert_eq!(out[1], Line::Complete(b"ok".to_vec()));
        let out = split(3, &[b"abcdef\nab\n"]);
        assert_eq!(
            out,
            vec![Line::TooLong { len: 6 }, Line::Complete(b"ab".to_vec())]
        );
    }

    #[test]
    fn an_over_long_line_leaves_no_capacity_behind() {
        let mut s = LineSplitter::new(1000);
        let mut out = Vec::new();
        s.push(&[b'x'; 900], &mut out);
        s.push(&[b'x'; 200], &mut out);
        assert!(matches!(out[..], [Line::TooLong { len: 1100 }]));
        assert_eq!(s.buf.capacity(), 0);
        s.push(b"xx\n", &mut out); // the end of the over-long line
        out.clear();
        s.push(&[b'y'; 900], &mut out);
        let mut tail = vec![b'y'; 200];
        tail.push(b'\n');
        s.push(&tail, &mut out);
        assert!(matches!(out[..], [Line::TooLong { .. }]));
        assert_eq!(s.buf.capacity(), 0);
        s.push(b"ok\n", &mut out);
        assert_eq!(out.last(), Some(&Line::Complete(b"ok".to_vec())));
    }

    /// The reader takes lines one by one out of each read: what it decides at the edges.
    #[test]
    fn lines_are_taken_one_by_one_at_the_edges() {
        let mut s = LineSplitter::new(6);
        let complete = |b: &[u8]| Some(Line::Complete(b.to_vec()));
        // Two whole lines and the start of a third: each whole one copied at its length.
        let mut data: &[u8] = b"ab\r\ncd\nef";
        let first = s.next_line(&mut data);
        assert_eq!(first, complete(b"ab"));
        assert!(matches!(first, Some(Line::Complete(ref l)) if l.capacity() == 2));
        assert_eq!(data, b"cd\nef");
        assert_eq!(s.next_line(&mut data), complete(b"cd"));
        assert_eq!(
            (s.next_line(&mut data), data, s.buffered()),
            (None, &b""[..], 2)
        );
        // The held part and a CR split from its LF across reads.
        let mut data: &[u8] = b"gh\r";
        assert_eq!((s.next_line(&mut data), s.buffered()), (None, 5));
        let mut data: &[u8] = b"\n";
        assert_eq!(s.next_line(&mut data), complete(b"efgh"));
        // A line exactly at the limit ending at the read's end, then one byte over it.
        let mut data: &[u8] = b"123456\n1234567\n";
        assert_eq!(s.next_line(&mut data), complete(b"123456"));
        assert_eq!(s.next_line(&mut data), Some(Line::TooLong { len: 7 }));
        assert_eq!((s.next_line(&mut data), s.buffered()), (None, 0));
        // Over the limit without its end: reported once, the rest dropped up to its LF.
        let mut data: &[u8] = b"12345678";
        assert_eq!(s.next_line(&mut data), Some(Line::TooLong { len: 8 }));
        assert_eq!((s.next_line(&mut data), data), (None, &b""[..]));
        let mut data: &[u8] = b"9\n\nok\n";
        assert_eq!(s.next_line(&mut data), complete(b""));
        assert_eq!(s.next_line(&mut data), complete(b"ok"));
        assert_eq!(s.next_line(&mut data), None);
    }

    #[test]
    fn classifies_messages() {
        let m = parse(br#"{"jsonrpc":"2.0","id":1,"result":{"a":1}}"#).expect("ok");
        assert_eq!(
            m,
            vec![Message::Response {
                id: json!(1),
                result: Ok(json!({"a":1}))
            }]
        );
        let m = parse(br#"{"jsonrpc":"2.0","id":"s1","method":"ping"}"#).expect("ok");
        assert!(matches!(&m[0], Message::Request { method, .. } if method == "ping"));
        let m = parse(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#,
        )
        .expect("ok");
        assert!(matches!(&m[0], Message::Notification { .. }));
        let m = parse(br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"nope"}}"#)
            .expect("ok");
        assert!(matches!(
            &m[0],
            Message::Response {
                result: Err(RpcError { code: -32601, .. }),
                ..
            }
        ));
        let m =
            parse(br#"[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","id":3,"result":null}]"#)
                .expect("batch");
        assert_eq!(m.len(), 2);
        for bad in [
            &b"not json"[..],
            b"[]",
            b"3",
            br#"{"id":1,"result":1}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn encodes_one_line_each() {
        let r = request(7, "tools/list", json!({"cursor": "c"}));
        assert_eq!(r.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&r).expect("json");
        assert_eq!(v["id"], 7);
        let n = notification("notifications/initialized", Value::Null);
        assert!(!String::from_utf8_lossy(&n).contains("params"));
        let e: Value =
            serde_json::from_slice(&error_response(&json!("s2"), -32601, "no")).expect("json");
        assert_eq!(e["error"]["code"], -32601);
    }
}
