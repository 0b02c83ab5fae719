//! `vsm-daemon mcp serve-stdio`: the gateway for clients that only spawn stdio servers (most
//! desktop clients). Each newline-delimited JSON-RPC message read from stdin is POSTed to
//! `/mcp` over the control socket, and what comes back is written to stdout, one message a
//! line (an answer that is an event stream, a call's progress and then its response, message
//! by message as it comes); once `initialize` opened a session, the session's GET stream is followed on a thread
//! and its notifications are written too. On end of input the session is ended (DELETE).
//!
//! This runs in the CLI process, not in the daemon: blocking I/O and threads are fine here.
//! Invariants: a message on stdout is one whole line (writes hold one lock); lines from
//! stdin are bounded ([`MAX_LINE`]) as are answers ([`MAX_ANSWER`]); at most
//! [`MAX_IN_FLIGHT`] requests wait on the daemon at once (a slow tool call does not hold up a
//! `ping`, and a flood does not make threads without end).

use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
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

/// One HTTP answer.
struct Answer {
    status: u16,
    session: Option<String>,
    body: Vec<u8>,
}

/// Sends one request and reads its answer. An answer that is an event stream (a tool call
/// whose progress the client asked for) has its messages written to `out` as they come,
/// and then has no body of its own.
fn request(
    socket: &Path,
    method: &str,
    session: &Session,
    body: &[u8],
    out: &Mutex<io::Stdout>,
) -> io::Result<Answer> {
    let mut s = UnixStream::connect(socket)?;
    let mut head = format!(
        "{method} /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(id) = &session.id {
        head.push_str(&format!("Mcp-Session-Id: {id}\r\n"));
    }
    if let Some(v) = &session.version {
        head.push_str(&format!("MCP-Protocol-Version: {v}\r\n"));
    }
    head.push_str("\r\n");
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
    if streamed {
        events(&mut reader, out);
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
/// (comments, such as keep-alives, and event ids are skipped).
fn events(reader: &mut impl BufRead, out: &Mutex<io::Stdout>) {
    let mut line = Vec::new();
    let mut data = Vec::new();
    loop {
        line.clear();
        match reader.take(MAX_LINE as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            if !data.is_empty() {
                emit(out, &data);
                data.clear();
            }
        } else if let Some(d) = text.strip_prefix(b"data:") {
            data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
        }
    }
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

/// What to write for an answer: the daemon's JSON-RPC message, or (for a refusal in the
/// API's envelope, or a broken connection) a JSON-RPC error for the request's id.
fn relay(id: Option<&Value>, answer: io::Result<Answer>) -> Option<Vec<u8>> {
    let error = |message: String| {
        id.map(|id| {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": message}})
                .to_string()
                .into_bytes()
        })
    };
    match answer {
        Err(e) => error(format!("vsm-daemon did not answer: {e}")),
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
    if let Some(id) = &session.id {
        head.push_str(&format!("Mcp-Session-Id: {id}\r\n"));
    }
    if let Some(v) = &session.version {
        head.push_str(&format!("MCP-Protocol-Version: {v}\r\n"));
    }
    head.push_str("\r\n");
    if s.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(s);
    match read_head(&mut reader) {
        Ok((200, _)) => events(&mut reader, &out),
        Ok((_, head)) => log::warn!(
            "the daemon refused the notification stream: {}",
            head.lines().next().unwrap_or_default()
        ),
        Err(_) => {}
    }
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
    let mut session = Session::default();
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
            emit(&out, json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "message too long"}}).to_string().as_bytes());
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
            let answer = request(socket, "POST", &Session::default(), body, &out);
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
        while in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        in_flight.fetch_add(1, Ordering::AcqRel);
        let (socket, session, out, in_flight, body) = (
            socket.to_path_buf(),
            session.clone(),
            Arc::clone(&out),
            Arc::clone(&in_flight),
            body.to_vec(),
        );
        std::thread::spawn(move || {
            if let Some(m) = relay(id.as_ref(), request(&socket, "POST", &session, &body, &out)) {
                emit(&out, &m);
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
    // Let the answers in flight come back before the session ends.
    while in_flight.load(Ordering::Acquire) > 0 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if session.id.is_some() {
        let _ = request(socket, "DELETE", &session, b"", &out);
    }
    Ok(())
}
