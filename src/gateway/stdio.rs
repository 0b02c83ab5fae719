//! `vsm-daemon mcp serve-stdio`: the gateway for clients that only spawn stdio servers (most
//! desktop clients). Each newline-delimited JSON-RPC message read from stdin is POSTed to
//! `/mcp` over the control socket, and what comes back is written to stdout, one message a
//! line (an answer that is an event stream, a call's progress and then its response, message
//! by message as it comes).
//!
//! Both protocol eras are bridged, told apart message by message as `/mcp` tells them apart:
//! - The session era (2025-11-25 and before): once `initialize` opened a session, every
//!   message names it (`Mcp-Session-Id`, `MCP-Protocol-Version`), the session's GET stream is
//!   followed on a thread and its notifications are written too; on end of input the session
//!   is ended (DELETE).
//! - The 2026-07-28 era: a message whose `params._meta` names a protocol version stands
//!   alone. It is sent with the headers the HTTP transport requires of it:
//!   `MCP-Protocol-Version` (the `_meta` version), `Mcp-Method`, and for `tools/call`,
//!   `prompts/get` and `resources/read` `Mcp-Name` (a value that is not plain visible ASCII
//!   goes as `=?base64?…?=`). `subscriptions/listen` is one long-lived POST whose event stream
//!   (the acknowledgement, then the notifications) is written to stdout as it comes. Since
//!   this era has no client notifications over HTTP, the client's `notifications/cancelled`
//!   for a request of this era is done here: the request's connection is closed, which is how
//!   HTTP cancels it (a listen stream ends, a call is cancelled at its server). Other
//!   notifications of a client of this era are not sent on.
//!
//! This runs in the CLI process, not in the daemon: blocking I/O and threads are fine here.
//! Invariants: a message on stdout is one whole line (writes hold one lock); lines from
//! stdin are bounded ([`MAX_LINE`]) as are answers ([`MAX_ANSWER`]); at most
//! [`MAX_IN_FLIGHT`] requests wait on the daemon at once (a slow tool call does not hold up a
//! `ping`, and a flood does not make threads without end) and at most [`MAX_LISTENS`] listen
//! streams are open (they do not count as requests in flight, or 32 of them would stop the
//! bridge); a request whose answer stream ends without its response gets a JSON-RPC error,
//! unless the client cancelled it; on end of input the listen streams are closed, the
//! answers in flight are waited for, and then the bridge exits.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Longest message accepted from stdin.
const MAX_LINE: usize = 4 * 1024 * 1024;
/// Largest answer accepted from the daemon.
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Requests waiting on the daemon at once.
const MAX_IN_FLIGHT: usize = 32;
/// `subscriptions/listen` streams open at once.
const MAX_LISTENS: usize = 8;

/// The `_meta` key naming a message's protocol version in the 2026-07-28 era.
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// Why the bridge stopped.
#[derive(Debug)]
pub enum BridgeError {
    /// The control socket does not answer.
    Unreachable(PathBuf, io::Error),
    /// stdin or stdout failed.
    Io(io::Error),
}

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BridgeError::Unreachable(p, e) => write!(
                f,
                "vsm-daemon is not reachable on {} ({e}): start it first",
                p.display()
            ),
            BridgeError::Io(e) => write!(f, "stdio: {e}"),
        }
    }
}

/// The session as the bridge knows it.
#[derive(Debug, Default, Clone)]
struct Session {
    id: Option<String>,
    version: Option<String>,
}

impl Session {
    /// The headers that name the session.
    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(id) = &self.id {
            h.push(("Mcp-Session-Id", id.clone()));
        }
        if let Some(v) = &self.version {
            h.push(("MCP-Protocol-Version", v.clone()));
        }
        h
    }
}

/// One HTTP answer.
struct Answer {
    status: u16,
    session: Option<String>,
    body: Vec<u8>,
    /// The answer was an event stream (written to stdout as it came).
    streamed: bool,
    /// The event stream carried a response (a message with an id and a result or error).
    responded: bool,
}

/// The connections of requests waiting on the daemon, by the JSON text of their id: the
/// client's `notifications/cancelled` closes one of the 2026-07-28 era (and marks one of the
/// session era as owed no answer, the daemon ending it), the end of input closes the listen
/// streams. Bounded by [`MAX_IN_FLIGHT`] + [`MAX_LISTENS`].
#[derive(Default)]
struct Open {
    conns: Mutex<HashMap<String, OpenConn>>,
}

struct OpenConn {
    /// The connection, once the request's thread has made it.
    stream: Option<UnixStream>,
    listen: bool,
    /// Closed on purpose: no error is owed to the client when its stream ends.
    closed: bool,
}

impl Open {
    /// Notes a request before its thread connects, so that a cancellation (or the end of
    /// input) that comes first is not missed.
    fn reserve(&self, key: &str, listen: bool) {
        if let Ok(mut m) = self.conns.lock() {
            let conn = OpenConn {
                stream: None,
                listen,
                closed: false,
            };
            m.insert(key.to_string(), conn);
        }
    }

    /// Leaves the request's connection where it can be closed; `false` when the request
    /// was closed already (it is then not to be sent).
    fn attach(&self, key: &str, stream: UnixStream) -> bool {
        let Ok(mut m) = self.conns.lock() else {
            return true;
        };
        match m.get_mut(key) {
            Some(c) if c.closed => false,
            Some(c) => {
                c.stream = Some(stream);
                true
            }
            None => true,
        }
    }

    /// Forgets a request; whether it was closed on purpose.
    fn remove(&self, key: &str) -> bool {
        self.conns
            .lock()
            .ok()
            .and_then(|mut m| m.remove(key))
            .is_some_and(|c| c.closed)
    }

    /// Closes the connection of the request `key`; whether there was one.
    fn close(&self, key: &str) -> bool {
        let Ok(mut m) = self.conns.lock() else {
            return false;
        };
        let Some(c) = m.get_mut(key) else {
            return false;
        };
        c.closed = true;
        if let Some(s) = &c.stream {
            let _ = s.shutdown(Shutdown::Both);
        }
        true
    }

    /// Marks the request `key` as owed no answer (the daemon cancels it).
    fn forget(&self, key: &str) {
        if let Ok(mut m) = self.conns.lock() {
            if let Some(c) = m.get_mut(key) {
                c.closed = true;
            }
        }
    }

    /// Closes every listen stream.
    fn close_listens(&self) {
        if let Ok(mut m) = self.conns.lock() {
            for c in m.values_mut().filter(|c| c.listen) {
                c.closed = true;
                if let Some(s) = &c.stream {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

/// Sends one request and reads its answer. An answer that is an event stream (a tool call
/// whose progress the client asked for, a listen stream) has its messages written to `out`
/// as they come, and then has no body of its own. `track`: where the request was reserved
/// (and under which key): its connection is left there while the answer is awaited, so
/// that it can be closed; a request closed before it connected is not sent.
fn request(
    socket: &Path,
    method: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
    out: &Mutex<io::Stdout>,
    track: Option<(&Open, &str)>,
) -> io::Result<Answer> {
    let mut s = UnixStream::connect(socket)?;
    let mut head = format!(
        "{method} /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if let Some((open, key)) = track {
        if !open.attach(key, s.try_clone()?) {
            return Err(io::Error::other("cancelled before it was sent"));
        }
    }
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut reader = BufReader::new(s.take(MAX_ANSWER as u64));
    let (status, head) = read_head(&mut reader)?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let session = header("mcp-session-id");
    let streamed = header("content-type").is_some_and(|t| t.starts_with("text/event-stream"));
    let mut body = Vec::new();
    let mut responded = false;
    if streamed {
        responded = events(&mut reader, out);
    } else {
        reader.read_to_end(&mut body)?;
        if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
            body.truncate(len);
        }
    }
    Ok(Answer {
        status,
        session,
        body,
        streamed,
        responded,
    })
}

/// Reads an HTTP answer's head: its status and its header lines.
fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, String)> {
    let mut head = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.take(MAX_LINE as u64).read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::other("the daemon's answer has no HTTP head"));
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            break;
        }
        head.push_str(&String::from_utf8_lossy(text));
        head.push('\n');
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head))
}

/// Writes each message of an event stream to stdout as it comes, until the stream ends
/// (comments, such as keep-alives, and event ids are skipped). Returns whether one of them
/// was a response.
fn events(reader: &mut impl BufRead, out: &Mutex<io::Stdout>) -> bool {
    let mut line = Vec::new();
    let mut data = Vec::new();
    let mut responded = false;
    loop {
        line.clear();
        match reader.take(MAX_LINE as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return responded,
            Ok(_) => {}
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            if !data.is_empty() {
                responded = responded || is_response(&data);
                emit(out, &data);
                data.clear();
            }
        } else if let Some(d) = text.strip_prefix(b"data:") {
            data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
        }
    }
}

/// Whether a message is a JSON-RPC response (an id with a result or an error).
fn is_response(message: &[u8]) -> bool {
    serde_json::from_slice::<Value>(message).is_ok_and(|v| {
        v.get("id").is_some() && (v.get("result").is_some() || v.get("error").is_some())
    })
}

/// Writes one message as one line.
fn emit(out: &Mutex<io::Stdout>, message: &[u8]) {
    if let Ok(mut o) = out.lock() {
        // A closed stdout means the client went away; the input's end follows.
        let _ = o.write_all(message);
        let _ = o.write_all(b"\n");
        let _ = o.flush();
    }
}

/// A JSON-RPC error for the request `id`, as bytes.
fn error_for(id: &Value, code: i64, message: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
        .to_string()
        .into_bytes()
}

/// What to write for an answer: the daemon's JSON-RPC message, or (for a refusal in the
/// API's envelope, a broken connection, or an event stream that ended without the response)
/// a JSON-RPC error for the request's id.
fn relay(id: Option<&Value>, answer: io::Result<Answer>) -> Option<Vec<u8>> {
    let error = |message: String| id.map(|id| error_for(id, -32603, &message));
    match answer {
        Err(e) => error(format!("vsm-daemon did not answer: {e}")),
        Ok(a) if a.streamed && !a.responded && a.status == 200 => {
            error("the daemon's answer stream ended before the response".into())
        }
        Ok(a) if a.status == 202 || a.body.is_empty() => None,
        Ok(a) => match serde_json::from_slice::<Value>(&a.body) {
            Ok(v) if v.get("jsonrpc").is_some() => Some(a.body),
            Ok(v) => error(format!(
                "vsm-daemon refused the request ({}): {}",
                a.status,
                crate::client::error_message(&v)
            )),
            Err(_) => error(format!("vsm-daemon answered {} without JSON", a.status)),
        },
    }
}

/// Follows the session's GET stream, writing each message to stdout, until it ends.
fn follow(socket: PathBuf, session: Session, out: Arc<Mutex<io::Stdout>>) {
    let Ok(mut s) = UnixStream::connect(&socket) else {
        return;
    };
    let mut head = String::from(
        "GET /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: text/event-stream\r\n",
    );
    for (name, value) in session.headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if s.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(s);
    match read_head(&mut reader) {
        Ok((200, _)) => {
            events(&mut reader, &out);
        }
        Ok((_, head)) => log::warn!(
            "the daemon refused the notification stream: {}",
            head.lines().next().unwrap_or_default()
        ),
        Err(_) => {}
    }
}

/// A header value as the 2026-07-28 HTTP transport carries it: plain when it is visible
/// ASCII without spaces at its ends (and does not itself look encoded), otherwise
/// `=?base64?…?=` around the standard Base64 of its UTF-8. Never a CR or LF.
fn header_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && value.trim() == value
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if plain {
        return value.to_string();
    }
    let mut b64: String = crate::net::token::encode_url_safe(value.as_bytes())
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while b64.len() % 4 != 0 {
        b64.push('=');
    }
    format!("=?base64?{b64}?=")
}

/// The headers a message of the 2026-07-28 era needs on HTTP: its version, its method and
/// (for the methods that name something) the name.
fn modern_headers(version: &str, message: &Value) -> Vec<(&'static str, String)> {
    let mut h = vec![("MCP-Protocol-Version", header_value(version))];
    if let Some(method) = message["method"].as_str() {
        h.push(("Mcp-Method", header_value(method)));
        let key = match method {
            "tools/call" | "prompts/get" => Some("name"),
            "resources/read" => Some("uri"),
            _ => None,
        };
        if let Some(name) = key.and_then(|k| message["params"][k].as_str()) {
            h.push(("Mcp-Name", header_value(name)));
        }
    }
    h
}

/// Runs the bridge until stdin ends.
///
/// # Errors
/// The daemon is not reachable at start, or stdin fails.
pub fn serve(socket: &Path) -> Result<(), BridgeError> {
    if let Err(e) = UnixStream::connect(socket) {
        return Err(BridgeError::Unreachable(socket.to_path_buf(), e));
    }
    let out = Arc::new(Mutex::new(io::stdout()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let listens = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(Open::default());
    let mut session = Session::default();
    // The protocol version of the 2026-07-28 era, once a message of the client spoke it.
    let mut modern: Option<String> = None;
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut stdin)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(BridgeError::Io)?;
        if n == 0 {
            break;
        }
        if line.len() > MAX_LINE {
            emit(&out, &error_for(&Value::Null, -32600, "message too long"));
            // Skip the rest of that line, a bounded piece at a time.
            while !line.ends_with(b"\n") {
                line.clear();
                let n = (&mut stdin)
                    .take(64 * 1024)
                    .read_until(b'\n', &mut line)
                    .map_err(BridgeError::Io)?;
                if n == 0 {
                    break;
                }
            }
            continue;
        }
        let body = line.trim_ascii();
        if body.is_empty() {
            continue;
        }
        let message: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let id = message.get("id").cloned();
        if message["method"] == "initialize" {
            // Inline: the session it opens is named by every later message.
            let answer = request(socket, "POST", &[], body, &out, None);
            if let Ok(a) = &answer {
                if let Some(sid) = &a.session {
                    let version = serde_json::from_slice::<Value>(&a.body)
                        .ok()
                        .and_then(|v| v["result"]["protocolVersion"].as_str().map(String::from));
                    session = Session {
                        id: Some(sid.clone()),
                        version,
                    };
                    let (socket, session, out) =
                        (socket.to_path_buf(), session.clone(), Arc::clone(&out));
                    std::thread::spawn(move || follow(socket, session, out));
                }
            }
            if let Some(m) = relay(id.as_ref(), answer) {
                emit(&out, &m);
            }
            continue;
        }
        // The era of this message: its own `_meta` version, else the era the client spoke
        // last without a session.
        let version = message["params"]["_meta"][META_VERSION]
            .as_str()
            .map(String::from);
        if version.is_some() {
            modern.clone_from(&version);
        }
        let version = version.or_else(|| session.id.is_none().then(|| modern.clone()).flatten());
        let Some(version) = version else {
            // The session era, as before: the daemon cancels; no answer is owed after that.
            if message["method"] == "notifications/cancelled" {
                let target = &message["params"]["requestId"];
                if !target.is_null() {
                    open.forget(&target.to_string());
                }
            }
            let headers = session.headers();
            spawn_request(socket, &out, &in_flight, headers, body, id, &open);
            continue;
        };
        let Some(id) = id else {
            // A notification: HTTP has none in this era. Cancelling is done here.
            if message["method"] == "notifications/cancelled" {
                let target = &message["params"]["requestId"];
                if !target.is_null() {
                    open.close(&target.to_string());
                }
            }
            continue;
        };
        let headers = modern_headers(&version, &message);
        if message["method"] == "subscriptions/listen" {
            if listens.load(Ordering::Acquire) >= MAX_LISTENS {
                let m = format!("{MAX_LISTENS} listen streams are open: close one first");
                emit(&out, &error_for(&id, -32000, &m));
                continue;
            }
            listens.fetch_add(1, Ordering::AcqRel);
            open.reserve(&id.to_string(), true);
            let (socket, out, open, listens, body) = (
                socket.to_path_buf(),
                Arc::clone(&out),
                Arc::clone(&open),
                Arc::clone(&listens),
                body.to_vec(),
            );
            std::thread::spawn(move || {
                let key = id.to_string();
                let answer = request(&socket, "POST", &headers, &body, &out, Some((&open, &key)));
                if !open.remove(&key) {
                    if let Some(m) = relay(Some(&id), answer) {
                        emit(&out, &m);
                    }
                }
                listens.fetch_sub(1, Ordering::AcqRel);
            });
            continue;
        }
        spawn_request(socket, &out, &in_flight, headers, body, Some(id), &open);
    }
    // The client is gone: its listen streams end; the answers in flight come back before the
    // session ends.
    open.close_listens();
    while in_flight.load(Ordering::Acquire) > 0 || listens.load(Ordering::Acquire) > 0 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if session.id.is_some() {
        let _ = request(socket, "DELETE", &session.headers(), b"", &out, None);
    }
    Ok(())
}

/// Sends one message on a thread of its own once fewer than [`MAX_IN_FLIGHT`] wait, and
/// writes what comes back (unless the client cancelled it meanwhile). `open`: where a
/// request leaves its connection, so that the client can cancel it.
fn spawn_request(
    socket: &Path,
    out: &Arc<Mutex<io::Stdout>>,
    in_flight: &Arc<AtomicUsize>,
    headers: Vec<(&'static str, String)>,
    body: &[u8],
    id: Option<Value>,
    open: &Arc<Open>,
) {
    while in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    in_flight.fetch_add(1, Ordering::AcqRel);
    // A notification has no answer to wait for and nothing to cancel.
    let key = id.as_ref().map(Value::to_string);
    if let Some(k) = &key {
        open.reserve(k, false);
    }
    let (socket, out, in_flight, open, body) = (
        socket.to_path_buf(),
        Arc::clone(out),
        Arc::clone(in_flight),
        Arc::clone(open),
        body.to_vec(),
    );
    std::thread::spawn(move || {
        let track = key.as_deref().map(|k| (&*open, k));
        let answer = request(&socket, "POST", &headers, &body, &out, track);
        let cancelled = key.as_deref().is_some_and(|k| open.remove(k));
        if !cancelled {
            if let Some(m) = relay(id.as_ref(), answer) {
                emit(&out, &m);
            }
        }
        in_flight.fetch_sub(1, Ordering::AcqRel);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_plain_or_base64_and_never_break_a_line() {
        assert_eq!(header_value("fx__echo"), "fx__echo");
        assert_eq!(header_value("file:///a b.txt"), "file:///a b.txt");
        assert_eq!(
            header_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(
            header_value("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
        assert_eq!(header_value(" x"), "=?base64?IHg=?=");
        let injected = header_value("a\r\nX-Evil: 1");
        assert!(injected.starts_with("=?base64?"), "{injected}");
        assert!(!injected.contains(['\r', '\n']), "{injected}");
    }

    #[test]
    fn a_modern_message_gets_version_method_and_name_headers() {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "fx__echo", "_meta": {META_VERSION: "2026-07-28"}}});
        assert_eq!(
            modern_headers("2026-07-28", &call),
            vec![
                ("MCP-Protocol-Version", "2026-07-28".to_string()),
                ("Mcp-Method", "tools/call".to_string()),
                ("Mcp-Name", "fx__echo".to_string()),
            ]
        );
        let read = json!({"method": "resources/read", "params": {"uri": "demo://ü"}});
        assert_eq!(
            modern_headers("2026-07-28", &read)[2],
            ("Mcp-Name", "=?base64?ZGVtbzovL8O8?=".to_string())
        );
        let list = json!({"method": "tools/list", "params": {}});
        assert_eq!(modern_headers("2026-07-28", &list).len(), 2);
    }

    #[test]
    fn a_cancelled_request_is_owed_no_answer_and_only_listens_close_at_the_end() {
        let (a, _a) = UnixStream::pair().expect("pair");
        let (b, mut b_peer) = UnixStream::pair().expect("pair");
        let open = Open::default();
        open.reserve("1", false);
        assert!(open.attach("1", a));
        open.reserve("\"listen-1\"", true);
        assert!(open.attach("\"listen-1\"", b));
        assert!(!open.close("2"), "not a request of ours");
        open.close_listens();
        let mut buf = [0u8; 1];
        assert_eq!(
            b_peer.read(&mut buf).expect("read"),
            0,
            "the listen stream is closed"
        );
        assert!(
            open.remove("\"listen-1\""),
            "closed on purpose: no answer owed"
        );
        assert!(!open.remove("1"), "a call still owes its answer");
        open.reserve("3", false);
        assert!(open.attach("3", UnixStream::pair().expect("pair").0));
        open.forget("3");
        assert!(
            open.remove("3"),
            "cancelled in the session era: no answer owed"
        );
        // Cancelled (or the input ended) before its thread connected: it is not sent.
        open.reserve("4", false);
        open.reserve("\"listen-2\"", true);
        assert!(open.close("4"));
        open.close_listens();
        assert!(!open.attach("4", UnixStream::pair().expect("pair").0));
        assert!(!open.attach("\"listen-2\"", UnixStream::pair().expect("pair").0));
        assert!(open.remove("4") && open.remove("\"listen-2\""));
    }

    #[test]
    fn an_answer_stream_without_its_response_is_an_error_for_the_client() {
        let answer = |streamed, responded| {
            Ok(Answer {
                status: 200,
                session: None,
                body: Vec::new(),
                streamed,
                responded,
            })
        };
        let id = json!(7);
        let m = relay(Some(&id), answer(true, false)).expect("an error");
        let v: Value = serde_json::from_slice(&m).expect("JSON");
        assert_eq!(
            (v["id"].clone(), v["error"]["code"].clone()),
            (id.clone(), json!(-32603))
        );
        assert!(relay(Some(&id), answer(true, true)).is_none());
        assert!(is_response(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#));
        assert!(!is_response(
            br#"{"jsonrpc":"2.0","method":"notifications/progress"}"#
        ));
    }
}
