//! JSON-RPC 2.0 over newline-delimited byte streams, without I/O: splitting a byte stream
//! into lines under a length limit, classifying messages, and encoding ours.
//!
//! Invariant: a [`LineSplitter`] never holds more than `max_line` bytes, whatever the peer
//! writes; a longer line is reported once ([`Line::TooLong`]) and its bytes are discarded.

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
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    let (head, rest) = data.split_at(pos);
                    data = &rest[1..];
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if self.buf.len() + head.len() > self.max_line {
                        out.push(Line::TooLong {
                            len: self.buf.len() + head.len(),
                        });
                        // Not clear(): that would keep up to max_line of capacity.
                        self.buf = Vec::new();
                        continue;
                    }
                    self.buf.extend_from_slice(head);
                    let mut line = std::mem::take(&mut self.buf);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    out.push(Line::Complete(line));
                }
                None => {
                    if !self.discarding {
                        if self.buf.len() + data.len() > self.max_line {
                            out.push(Line::TooLong {
                                len: self.buf.len() + data.len(),
                            });
                            self.buf = Vec::new();
                            self.discarding = true;
                        } else {
                            self.buf.extend_from_slice(data);
                        }
                    }
                    return;
                }
            }
        }
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
