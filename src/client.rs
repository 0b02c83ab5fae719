//! Blocking HTTP/1.1 client over the control socket: one request per connection, or one
//! Server-Sent Events stream. This is all the CLI needs; `curl --unix-socket` works the same.

use serde_json::Value;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest reply the client accepts.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing answers on the socket.
    Unreachable {
        /// The socket path.
        socket: PathBuf,
        /// The connect error.
        source: io::Error,
    },
    /// The connection broke or timed out.
    Io(io::Error),
    /// The daemon answered something that is not HTTP + JSON.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { socket, source } => match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    write!(f, "vsm-daemon is not running (socket {})", socket.display())
                }
                _ => write!(
                    f,
                    "cannot reach vsm-daemon (socket {}): {source}",
                    socket.display()
                ),
            },
            ClientError::Io(e) => write!(f, "connection to vsm-daemon failed: {e}"),
            ClientError::Protocol(m) => write!(f, "unexpected answer from vsm-daemon: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// An HTTP reply with a JSON body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Parsed body (the envelope).
    pub body: Value,
}

/// A client bound to one socket path.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for `socket` with a 60 s answer timeout.
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
            timeout: Duration::from_secs(60),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.socket).map_err(|source| ClientError::Unreachable {
            socket: self.socket.clone(),
            source,
        })
    }

    /// Whether something accepts connections on the socket.
    pub fn is_reachable(&self) -> bool {
        self.connect().is_ok()
    }

    fn send(
        stream: &mut UnixStream,
        method: &str,
        path: &str,
        body: Option<&Value>,
        accept: &str,
    ) -> io::Result<()> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: vsm-daemon-cli/{}\r\nAccept: {accept}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())
    }

    /// One request; returns the status and the parsed JSON body.
    ///
    /// # Errors
    /// [`ClientError`]: unreachable socket, I/O failure or a non-JSON answer.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let mut stream = self.connect()?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(ClientError::Io)?;
        Self::send(&mut stream, method, path, body, "application/json").map_err(ClientError::Io)?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ClientError::Io(e)),
            };
            raw.extend_from_slice(&buf[..n]);
            if let Some((status, head_len, length)) = parse_head(&raw)? {
                if status == 100 {
                    raw.drain(..head_len);
                    continue;
                }
                if let Some(length) = length {
                    if raw.len() >= head_len + length {
                        return reply(status, &raw[head_len..head_len + length]);
                    }
                }
                if n == 0 {
                    return reply(status, &raw[head_len..]);
                }
            } else if n == 0 {
                return Err(ClientError::Protocol(
                    "connection closed before a reply".into(),
                ));
            }
            if raw.len() > MAX_REPLY_BYTES {
                return Err(ClientError::Protocol("reply too large".into()));
            }
        }
    }

    /// Opens a Server-Sent Events stream and calls `on_event(event, data)` for each event
    /// until it returns false or the daemon closes the stream.
    ///
    /// # Errors
    /// [`ClientError`]; a non-200 answer is returned as `Protocol` with the daemon's message.
    pub fn stream(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        let mut stream = self.connect()?;
        Self::send(&mut stream, "GET", path, None, "text/event-stream").map_err(ClientError::Io)?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let mut in_body = false;
        let mut event = String::from("message");
        let mut data = String::new();
        loop {
            let n = match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ClientError::Io(e)),
            };
            if n == 0 {
                return Ok(());
            }
            raw.extend_from_slice(&buf[..n]);
            if !in_body {
                let Some((status, head_len, length)) = parse_head(&raw)? else {
                    continue;
                };
                if status != 200 {
                    // An error envelope with a Content-Length: read it whole and report it.
                    let want = head_len + length.unwrap_or(0);
                    while raw.len() < want {
                        let n = stream.read(&mut buf).map_err(ClientError::Io)?;
                        if n == 0 {
                            break;
                        }
                        raw.extend_from_slice(&buf[..n]);
                    }
                    let body = reply(status, &raw[head_len..want.min(raw.len())])?;
                    return Err(ClientError::Protocol(error_message(&body.body)));
                }
                raw.drain(..head_len);
                in_body = true;
            }
            while let Some(pos) = raw.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = raw.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !data.is_empty() && !on_event(&event, &data) {
                        return Ok(());
                    }
                    event = String::from("message");
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.trim_start());
                }
            }
        }
    }
}

/// The first error message of an envelope.
pub fn error_message(envelope: &Value) -> String {
    envelope["errors"][0]["message"]
        .as_str()
        .unwrap_or("the daemon refused the request")
        .to_string()
}

fn parse_head(raw: &[u8]) -> Result<Option<(u16, usize, Option<usize>)>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(raw) {
        Ok(httparse::Status::Complete(head_len)) => {
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse().ok());
            Ok(Some((resp.code.unwrap_or(0), head_len, length)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(ClientError::Protocol(format!("bad HTTP reply: {e}"))),
    }
}

fn reply(status: u16, body: &[u8]) -> Result<Reply, ClientError> {
    let body = serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("reply is not JSON ({e})")))?;
    Ok(Reply { status, body })
}
