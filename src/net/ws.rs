//! WebSocket clients of `/ws/monitor`: tungstenite framing over the same non-blocking
//! stream, channel subscriptions, a bounded outgoing queue, and commands that are API
//! requests in another envelope.
//!
//! Invariants: a client's queue holds at most [`MAX_QUEUE_MESSAGES`] messages and
//! [`MAX_QUEUE_BYTES`] bytes; when full, the oldest event is dropped and counted, and the
//! client is told (`events_dropped`) once it drains; tungstenite's own buffers are capped by
//! the config. The answers to a client's commands are never dropped for events: an event
//! flood evicts events only (an event that finds nothing but answers ahead of it is the one
//! dropped). Answers have their own bound instead: a client with [`MAX_QUEUED_ANSWERS`]
//! answers unsent, or one more answer that would take the answers past [`MAX_QUEUE_BYTES`],
//! is not reading them and is closed (1008), as a stalled client is.
//!
//! The stall rule: a client's outgoing data "drains" when everything queued for it has been
//! handed to the kernel. The stall clock starts the first time the socket refuses bytes
//! (`WouldBlock`) and stops only when the client has drained; a client that has not drained
//! for its stall limit ([`STALL_LIMIT`] unless `http.ws_stall_timeout_ms` says otherwise) is
//! closed with 1008 and gets [`CLOSE_GRACE`] to read the close frame.
//! The connection's deadline ([`WsConn::deadline`]) includes the stall clock, so the rule
//! holds on a timer, whatever traffic does (a client that stopped reading when the traffic
//! stopped is still closed on time).

use super::{http, Stream};
use crate::api::{ApiError, ErrorCode, Op};
use crate::events::Channel;
use crate::ops;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// Messages queued per client.
pub const MAX_QUEUE_MESSAGES: usize = 1024;
/// Bytes queued per client.
pub const MAX_QUEUE_BYTES: usize = 1024 * 1024;
/// Answers to a client's commands queued unsent (see the module's doc).
pub const MAX_QUEUED_ANSWERS: usize = 64;
/// A client whose outgoing data has not drained for this long is closed (1008), unless
/// [`WsConn::set_stall_limit`] set another limit.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);
/// `SO_SNDBUF` of a WebSocket connection (the kernel doubles it for its bookkeeping).
pub const KERNEL_SEND_BUFFER: usize = 64 * 1024;
/// Time a closing client gets to read what is queued and the close frame before the socket
/// is dropped (a stalled client may start reading again late).
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Idle time before we ping; a ping unanswered this long closes the client.
pub const KEEPALIVE: Duration = Duration::from_secs(30);
/// The channels a client may subscribe to: the names of [`Channel::ALL`].
pub const CHANNELS: [&str; Channel::ALL.len()] = {
    let mut out = [""; Channel::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = Channel::ALL[i].name();
        i += 1;
    }
    out
};

const fn silent_count() -> usize {
    let (mut n, mut i) = (0, 0);
    while i < Channel::ALL.len() {
        if Channel::ALL[i].silent() {
            n += 1;
        }
        i += 1;
    }
    n
}

/// Channels a client may subscribe to that no producer publishes on yet ([`Channel::silent`]):
/// the `connected` message names them so that a quiet subscription is not mistaken for a
/// quiet system.
pub const SILENT_CHANNELS: [&str; silent_count()] = {
    let mut out = [""; silent_count()];
    let (mut n, mut i) = (0, 0);
    while i < Channel::ALL.len() {
        if Channel::ALL[i].silent() {
            out[n] = Channel::ALL[i].name();
            n += 1;
        }
        i += 1;
    }
    out
};

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(1024 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// The answer to the upgrade request, or why it is refused.
///
/// # Errors
/// 400 for a malformed upgrade, 426 for a plain GET or a HEAD.
pub fn handshake_response(req: &http::Request) -> Result<Vec<u8>, (u16, String)> {
    // A HEAD gets what a GET without Upgrade gets: a HEAD cannot switch protocols.
    let upgrade = req.method == "GET"
        && req
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return Err((
            426,
            "this endpoint speaks WebSocket: send an Upgrade: websocket request".into(),
        ));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err((400, "Sec-WebSocket-Version must be 13".into()));
    }
    let Some(key) = req
        .header("sec-websocket-key")
        .filter(|k| !k.trim().is_empty())
    else {
        return Err((400, "Sec-WebSocket-Key is missing".into()));
    };
    let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}

/// Why a client is finished.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// One WebSocket client (over the loop's [`Stream`]; tests put a scripted stream under it).
pub struct WsConn<S = Stream> {
    socket: WebSocket<S>,
    /// Subscribed channels.
    pub channels: BTreeSet<String>,
    /// Messages to send, each marked whether it answers a command (never dropped).
    queue: VecDeque<(Utf8Bytes, bool)>,
    queued_bytes: usize,
    /// Answers in the queue, and their bytes.
    queued_answers: (usize, usize),
    dropped_pending: u64,
    /// Events dropped for this client so far.
    pub dropped_total: u64,
    /// Since when outgoing data has been waiting that the socket would not take.
    blocked_since: Option<Instant>,
    /// How long it may stay blocked before it is closed.
    stall_limit: Duration,
    /// Last frame received.
    pub last_seen: Instant,
    ping_sent: Option<Instant>,
    closing: bool,
    closing_since: Option<Instant>,
    /// The close frame, until tungstenite's buffer has room for it: tungstenite drops a
    /// close frame its full buffer refuses and sends nothing after it, so it waits here.
    close_frame: Option<CloseFrame>,
    read_failed: bool,
    /// Log records sent so far (for the `logs` channel).
    pub log_cursor: u64,
    ids: HashMap<u64, Value>,
    next_local: u64,
}

impl<S: Read + Write> WsConn<S> {
    /// Wraps an upgraded stream; `tail` holds bytes read after the upgrade request.
    pub fn new(stream: S, tail: Vec<u8>, log_cursor: u64) -> Self {
        WsConn {
            socket: WebSocket::from_partially_read(stream, tail, Role::Server, Some(config())),
            channels: BTreeSet::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_answers: (0, 0),
            dropped_pending: 0,
            dropped_total: 0,
            blocked_since: None,
            stall_limit: STALL_LIMIT,
            last_seen: Instant::now(),
            ping_sent: None,
            closing: false,
            closing_since: None,
            close_frame: None,
            read_failed: false,
            log_cursor,
            ids: HashMap::new(),
            next_local: 1,
        }
    }

    /// The underlying stream (for (de)registration).
    pub fn stream_mut(&mut self) -> &mut S {
        self.socket.get_mut()
    }

    /// Remembers a client's request id; returns the local id that travels in `ReplyTo`.
    pub fn remember_id(&mut self, id: Value) -> u64 {
        let local = self.next_local;
        self.next_local += 1;
        // Bounded: ids of requests that never finish are pruned beyond 4096.
        if self.ids.len() >= 4096 {
            if let Some(oldest) = self.ids.keys().min().copied() {
                self.ids.remove(&oldest);
            }
        }
        self.ids.insert(local, id);
        local
    }

    /// The client's id for a local id (removed).
    pub fn take_id(&mut self, local: u64) -> Option<Value> {
        self.ids.remove(&local)
    }

    /// Queues an event; when the queue is full the oldest events are dropped and counted
    /// (answers stay; an event with only answers ahead of it is dropped itself). Returns how
    /// many were dropped.
    pub fn enqueue(&mut self, text: Utf8Bytes) -> u64 {
        if self.closing {
            return 0;
        }
        let before = self.dropped_total;
        if !self.make_room(text.len()) {
            self.dropped_pending += 1;
            self.dropped_total += 1;
            return 1;
        }
        self.queued_bytes += text.len();
        self.queue.push_back((text, false));
        self.dropped_total - before
    }

    /// Queues the answer to a command: never dropped for events (the oldest events make
    /// room). Returns the events dropped for it; `None` when the client already has as many
    /// answers unsent as it may ([`MAX_QUEUED_ANSWERS`], or their bytes): it does not read
    /// them, and is being closed (1008).
    pub fn enqueue_answer(&mut self, text: Utf8Bytes) -> Option<u64> {
        if self.closing {
            return Some(0);
        }
        let (answers, bytes) = self.queued_answers;
        if answers >= MAX_QUEUED_ANSWERS || (answers > 0 && bytes + text.len() > MAX_QUEUE_BYTES) {
            log::warn!(
                "closing a WebSocket client that does not read the answers to its commands ({answers} unsent; 1008)"
            );
            self.close(CloseCode::Policy, "the client does not read its answers");
            return None;
        }
        let before = self.dropped_total;
        self.make_room(text.len());
        self.queued_bytes += text.len();
        self.queued_answers = (answers + 1, bytes + text.len());
        self.queue.push_back((text, true));
        Some(self.dropped_total - before)
    }

    /// Drops the oldest events until a message of `len` bytes fits the queue's bounds (an
    /// empty queue takes any one message). Whether it fits now (false: only answers are left
    /// and they fill the bounds).
    fn make_room(&mut self, len: usize) -> bool {
        while !self.queue.is_empty()
            && (self.queue.len() >= MAX_QUEUE_MESSAGES || self.queued_bytes + len > MAX_QUEUE_BYTES)
        {
            let Some(i) = self.queue.iter().position(|(_, answer)| !answer) else {
                return false;
            };
            if let Some((old, _)) = self.queue.remove(i) {
                self.queued_bytes -= old.len();
                self.dropped_pending += 1;
                self.dropped_total += 1;
            }
        }
        true
    }

    /// Whether the client's outgoing data has not drained for its stall limit (see the
    /// module docs); never once it is closing.
    pub fn stalled(&self, now: Instant) -> bool {
        self.stall_due().is_some_and(|due| now >= due)
    }

    /// When the client counts as stalled if it does not drain before; `None` while it is
    /// drained or closing.
    pub fn stall_due(&self) -> Option<Instant> {
        self.blocked_since
            .filter(|_| !self.closing)
            .map(|t| t + self.stall_limit)
    }

    /// Closes the client once its outgoing data has not drained for `limit` (instead of
    /// [`STALL_LIMIT`]).
    pub fn set_stall_limit(&mut self, limit: Duration) {
        self.stall_limit = limit;
    }

    /// How long the client may stay blocked before it is closed.
    pub fn stall_limit(&self) -> Duration {
        self.stall_limit
    }

    /// The connection's next deadline: keep-alive, close grace or the stall limit.
    pub fn deadline(&self) -> Instant {
        let keepalive = self.keepalive_due();
        self.stall_due().map_or(keepalive, |s| s.min(keepalive))
    }

    /// Pushes tungstenite's buffer to the socket; `Ok(true)` when it all went out. Runs the
    /// stall clock: started when the socket refuses bytes, stopped when nothing is left.
    fn try_flush(&mut self) -> Result<bool, Closed> {
        match self.socket.flush() {
            Ok(()) => {
                if self.queue.is_empty() {
                    self.blocked_since = None;
                }
                Ok(true)
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.blocked_since.get_or_insert_with(Instant::now);
                Ok(false)
            }
            Err(_) => Err(Closed),
        }
    }

    /// Writes what the socket takes now. Nothing new is handed to tungstenite until its
    /// buffer has gone out: a stalled client then accumulates drops and gets ONE
    /// `events_dropped` notice, placed where the gap is, once it reads again.
    ///
    /// # Errors
    /// [`Closed`] when the connection is finished.
    pub fn pump(&mut self) -> Result<(), Closed> {
        if !self.try_flush()? {
            return Ok(());
        }
        if self.closing {
            return self.send_close_frame();
        }
        if self.dropped_pending > 0 {
            let notice = json!({"type": "events_dropped", "timestamp": crate::state::rfc3339_utc_millis(std::time::SystemTime::now()), "data": {"count": self.dropped_pending}});
            match self.socket.write(Message::text(notice.to_string())) {
                Ok(()) => self.dropped_pending = 0,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.dropped_pending = 0;
                    return Ok(());
                }
                Err(tungstenite::Error::WriteBufferFull(_)) => return Ok(()),
                Err(_) => return Err(Closed),
            }
        }
        while let Some((text, _)) = self.queue.front().cloned() {
            match self.socket.write(Message::Text(text)) {
                Ok(()) => self.pop(),
                // The frame went into tungstenite's buffer: it is sent on a later flush.
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.pop();
                    break;
                }
                Err(tungstenite::Error::WriteBufferFull(_)) => break,
                Err(_) => return Err(Closed),
            }
        }
        self.flush()?;
        if !self.queue.is_empty() {
            // tungstenite's buffer is full (or the socket refused bytes): still waiting.
            self.blocked_since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    fn pop(&mut self) {
        if let Some((t, answer)) = self.queue.pop_front() {
            self.queued_bytes -= t.len();
            if answer {
                let (n, bytes) = self.queued_answers;
                self.queued_answers = (n.saturating_sub(1), bytes.saturating_sub(t.len()));
            }
        }
    }

    fn flush(&mut self) -> Result<(), Closed> {
        self.try_flush().map(|_| ())
    }

    /// Reads every complete text message available.
    ///
    /// # Errors
    /// [`Closed`] when the peer closed, broke the protocol or exceeded a limit.
    pub fn read_texts(&mut self, out: &mut Vec<String>) -> Result<(), Closed> {
        if self.read_failed {
            // After a protocol or size error tungstenite must not be read again.
            return Err(Closed);
        }
        loop {
            match self.socket.read() {
                Ok(msg) => {
                    self.last_seen = Instant::now();
                    self.ping_sent = None;
                    match msg {
                        Message::Text(t) => out.push(t.as_str().to_string()),
                        Message::Binary(_) => {
                            self.close(CloseCode::Unsupported, "only text messages are understood");
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                        Message::Close(_) => self.closing = true,
                    }
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return self.flush()
                }
                Err(tungstenite::Error::Capacity(_)) => {
                    self.read_failed = true;
                    self.close(CloseCode::Size, "message too large");
                    return Ok(());
                }
                Err(_) => return Err(Closed),
            }
        }
    }

    /// Starts the closing handshake with a code and reason.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.closing_since = Some(Instant::now());
        self.queue.clear();
        self.queued_bytes = 0;
        self.queued_answers = (0, 0);
        self.close_frame = Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        });
        // A broken connection is noticed by the next pump or read.
        let _ = self.send_close_frame();
    }

    /// Hands the close frame to tungstenite once its buffer has gone out (then it fits).
    fn send_close_frame(&mut self) -> Result<(), Closed> {
        if self.close_frame.is_none() || !self.try_flush()? {
            return Ok(());
        }
        match self.socket.close(self.close_frame.take()) {
            Ok(()) => Ok(()),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(Closed),
        }
    }

    /// Closes a client that never drains (policy violation, 1008).
    pub fn close_stalled(&mut self) {
        self.close(CloseCode::Policy, "the client does not read its events");
    }

    /// Keep-alive: the next deadline, and what to do when it passes.
    pub fn keepalive_due(&self) -> Instant {
        if let Some(t) = self.closing_since {
            // A closing client gets a moment for the close frame; one that does not read
            // would otherwise hold the socket until the next keep-alive.
            return t + CLOSE_GRACE;
        }
        match self.ping_sent {
            Some(t) => t + KEEPALIVE,
            None => self.last_seen + KEEPALIVE,
        }
    }

    /// At the keep-alive deadline: ping, or give up when the last ping went unanswered.
    ///
    /// # Errors
    /// [`Closed`] when the peer stopped answering.
    pub fn on_keepalive(&mut self, now: Instant) -> Result<(), Closed> {
        if now < self.keepalive_due() {
            return Ok(());
        }
        if self.ping_sent.is_some() || self.closing {
            return Err(Closed);
        }
        self.ping_sent = Some(now);
        match self.socket.write(Message::Ping(Vec::new().into())) {
            Ok(()) | Err(tungstenite::Error::WriteBufferFull(_)) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Closed),
        }
        self.flush()
    }

    /// Whether the closing handshake has begun.
    pub fn is_closing(&self) -> bool {
        self.closing
    }
}

/// A parsed client message.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Add channels.
    Subscribe(Option<Value>, Vec<String>),
    /// Remove channels.
    Unsubscribe(Option<Value>, Vec<String>),
    /// An API request in HTTP form, routed like any other.
    Api(Option<Value>, http::Request),
}

/// The named commands, each with the operation it sends (the rows of the ops table that
/// have a WebSocket name). `{id}` comes from `parameters.id` (or `server`); GET parameters
/// become the query string, other methods send `parameters` as the body.
pub fn commands() -> impl Iterator<Item = (&'static str, &'static Op)> {
    ops::all().filter_map(|o| o.ws.map(|name| (name, o)))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Parses one text message from a client.
///
/// # Errors
/// The client's id (if it sent one) and what is wrong.
pub fn parse_command(text: &str) -> Result<Command, (Option<Value>, ApiError)> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        (
            None,
            ApiError::new(ErrorCode::BadRequest, format!("message is not JSON: {e}")),
        )
    })?;
    let id = v.get("id").cloned().filter(|i| !i.is_null());
    let bad = |m: String| (id.clone(), ApiError::new(ErrorCode::BadRequest, m));
    let Some(command) = v.get("command").and_then(Value::as_str) else {
        return Err(bad("a message needs a \"command\"".into()));
    };
    let channels = || -> Result<Vec<String>, (Option<Value>, ApiError)> {
        let list = v
            .get("channels")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("\"channels\" must be a list".into()))?;
        list.iter()
            .map(|c| match c.as_str() {
                Some(c) if CHANNELS.contains(&c) => Ok(c.to_string()),
                _ => Err((
                    id.clone(),
                    ApiError::field(
                        ErrorCode::InvalidParameter,
                        "channels",
                        format!("unknown channel {c}: use {}", CHANNELS.join(", ")),
                    ),
                )),
            })
            .collect()
    };
    match command {
        "subscribe" => return Ok(Command::Subscribe(id.clone(), channels()?)),
        "unsubscribe" => return Ok(Command::Unsubscribe(id.clone(), channels()?)),
        _ => {}
    }
    let params = v
        .get("parameters")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let (method, path, body) = if command == "request" {
        let method = params["method"]
            .as_str()
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let Some(path) = params["path"].as_str() else {
            return Err(bad("\"request\" needs parameters.path".into()));
        };
        let body = params.get("body").cloned();
        (method, path.to_string(), body)
    } else {
        let Some(Op {
            method,
            path: template,
            ..
        }) = ops::by_command(command)
        else {
            return Err((
                id,
                ApiError::field(
                    ErrorCode::NotFound,
                    "command",
                    format!("unknown command '{command}'"),
                ),
            ));
        };
        let mut path = template.to_string();
        if path.contains("{id}") {
            let Some(server) = params
                .get("id")
                .or_else(|| params.get("server"))
                .or_else(|| params.get("server_id"))
                .and_then(Value::as_str)
            else {
                return Err((
                    id,
                    ApiError::field(
                        ErrorCode::InvalidParameter,
                        "parameters.id",
                        "the server id is required",
                    ),
                ));
            };
            path = path.replace("{id}", &encode(server));
        }
        let mut body = params.clone();
        if ops::TOOL_CALL_COMMAND == Some(command) {
            if let Some(tool) = params.get("tool").filter(|_| params.get("name").is_none()) {
                body["name"] = tool.clone();
            }
            if let Some(obj) = body.as_object_mut() {
                obj.remove("id");
                obj.remove("server");
                obj.remove("server_id");
                obj.remove("tool");
            }
        }
        if *method == "GET" {
            let query: Vec<String> = params
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str() != "id" || !template.contains("{id}"))
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{}={}", encode(k), encode(&text))
                })
                .collect();
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            (method.to_string(), path, None)
        } else {
            (method.to_string(), path, Some(body))
        }
    };
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path, String::new()),
    };
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    Ok(Command::Api(
        id,
        http::Request {
            method,
            path,
            query,
            headers: http::Headers::default(),
            body,
            keep_alive: true,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `budget` more bytes, then says `WouldBlock` (a client that reads
    /// that much and stops); reads always block.
    struct Scripted {
        budget: usize,
        taken: usize,
    }

    impl Read for Scripted {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.budget == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            self.taken += n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn client(budget: usize) -> WsConn<Scripted> {
        WsConn::new(Scripted { budget, taken: 0 }, Vec::new(), 0)
    }

    fn event() -> Utf8Bytes {
        "x".repeat(1000).into()
    }

    #[test]
    fn the_stall_clock_starts_when_the_socket_refuses_bytes() {
        let mut w = client(1_000_000);
        w.enqueue(event());
        w.pump().expect("pump");
        assert_eq!(w.stall_due(), None, "everything went out");
        assert!(
            w.deadline() > Instant::now() + STALL_LIMIT,
            "keep-alive only"
        );

        let mut w = client(500);
        let before = Instant::now();
        w.enqueue(event());
        w.pump().expect("pump");
        let due = w.stall_due().expect("the socket refused bytes");
        assert!(due >= before + STALL_LIMIT && due <= Instant::now() + STALL_LIMIT);
        assert_eq!(
            w.deadline(),
            due,
            "the stall limit comes before the keep-alive"
        );
        assert!(!w.stalled(due - Duration::from_millis(1)));
        assert!(w.stalled(due));
    }

    #[test]
    fn progress_without_draining_keeps_the_clock_and_draining_stops_it() {
        let mut w = client(500);
        w.enqueue(event());
        w.pump().expect("pump");
        let due = w.stall_due().expect("blocked");
        // More events while it is blocked, and a little reading: the clock keeps running.
        for _ in 0..50 {
            w.enqueue(event());
            w.pump().expect("pump");
        }
        w.stream_mut().budget = 2000;
        w.pump().expect("pump");
        assert_eq!(w.stall_due(), Some(due), "partial progress is not a drain");
        // It reads everything: drained, the clock stops; the next block starts a new one.
        w.stream_mut().budget = usize::MAX;
        w.pump().expect("pump");
        assert_eq!(w.stall_due(), None);
        assert!(w.stream_mut().taken > 50 * 1000);
        w.stream_mut().budget = 0;
        w.enqueue(event());
        w.pump().expect("pump");
        assert!(w.stall_due().is_some_and(|d| d >= due));
    }

    #[test]
    fn a_stalled_client_is_closed_with_a_grace_for_the_close_frame() {
        let mut w = client(0);
        w.enqueue(event());
        w.pump().expect("pump");
        assert!(w.stall_due().is_some());
        w.close_stalled();
        assert!(w.is_closing());
        assert_eq!(w.stall_due(), None, "a closing client is not stalled again");
        let grace = w.deadline();
        assert!(grace <= Instant::now() + CLOSE_GRACE && grace > Instant::now());
        assert_eq!(w.enqueue(event()), 0, "nothing is queued once closing");
    }

    #[test]
    fn answers_outlive_an_event_flood_and_have_their_own_bound() {
        // A client that reads nothing: its queue fills with events.
        let mut w = client(0);
        let answer = |n: usize| -> Utf8Bytes { format!("{{\"id\":{n}}}").into() };
        assert_eq!(w.enqueue_answer(answer(0)), Some(0));
        for _ in 0..(2 * MAX_QUEUE_MESSAGES) {
            w.enqueue(event());
        }
        assert!(w.dropped_total > 0, "events were dropped");
        assert_eq!(
            w.queue.front().map(|(t, a)| (t.as_str(), *a)),
            Some(("{\"id\":0}", true))
        );
        assert!(w.queue.len() <= MAX_QUEUE_MESSAGES && w.queued_bytes <= MAX_QUEUE_BYTES);
        // More answers make room by dropping events, never answers.
        for n in 1..MAX_QUEUED_ANSWERS {
            assert!(w.enqueue_answer(answer(n)).is_some(), "answer {n}");
        }
        let answers: Vec<&str> = w
            .queue
            .iter()
            .filter(|(_, a)| *a)
            .map(|(t, _)| t.as_str())
            .collect();
        assert_eq!(answers.len(), MAX_QUEUED_ANSWERS);
        assert_eq!(
            answers[MAX_QUEUED_ANSWERS - 1],
            format!("{{\"id\":{}}}", MAX_QUEUED_ANSWERS - 1)
        );
        assert!(w.queue.len() <= MAX_QUEUE_MESSAGES && w.queued_bytes <= MAX_QUEUE_BYTES);
        // One answer too many: the client does not read them and is closed.
        assert_eq!(w.enqueue_answer(answer(MAX_QUEUED_ANSWERS)), None);
        assert!(w.is_closing());
        assert_eq!(w.queued_answers, (0, 0));
    }

    #[test]
    fn an_event_behind_answers_that_fill_the_queue_is_the_one_dropped() {
        let mut w = client(0);
        let answer: Utf8Bytes = "y".repeat(MAX_QUEUE_BYTES / MAX_QUEUED_ANSWERS - 4).into();
        for _ in 0..MAX_QUEUED_ANSWERS {
            assert_eq!(w.enqueue_answer(answer.clone()), Some(0));
        }
        assert_eq!(
            w.enqueue(event()),
            1,
            "the event does not fit beside the answers"
        );
        assert_eq!(w.queue.len(), MAX_QUEUED_ANSWERS);
        // The answers go out once the client reads again.
        w.stream_mut().budget = usize::MAX;
        for _ in 0..1000 {
            w.pump().expect("pump");
            if w.queue.is_empty() {
                break;
            }
        }
        assert!(w.queue.is_empty());
        assert_eq!(w.queued_answers, (0, 0));
    }

    #[test]
    fn silent_channels_are_channels() {
        for c in SILENT_CHANNELS {
            assert!(CHANNELS.contains(&c), "{c}");
        }
        // With producers today: MCP server events, the alerts room, variety, discovery and
        // acquisition, the log stream and reflection's insights.
        let loud: Vec<&str> = CHANNELS
            .into_iter()
            .filter(|c| !SILENT_CHANNELS.contains(c))
            .collect();
        assert_eq!(
            loud,
            [
                "mcp_servers",
                "performance",
                "health",
                "security",
                "variety_monitoring",
                "logs",
                "consciousness"
            ]
        );
    }

    #[test]
    fn the_channel_enum_is_the_subscription_list() {
        assert_eq!(CHANNELS.len(), Channel::ALL.len());
        for (name, channel) in CHANNELS.iter().zip(Channel::ALL) {
            assert_eq!(*name, channel.name());
            let c = parse_command(&format!(
                r#"{{"command":"subscribe","channels":["{name}"]}}"#
            ));
            assert!(c.is_ok(), "{name}");
        }
        for name in ["system", "variety", "MCP_SERVERS", ""] {
            let c = parse_command(&format!(
                r#"{{"command":"subscribe","channels":["{name}"]}}"#
            ));
            assert!(c.is_err(), "{name}");
        }
    }

    #[test]
    fn commands_become_requests() {
        let c = parse_command(r#"{"command":"subscribe","channels":["mcp_servers","logs"]}"#)
            .expect("ok");
        assert_eq!(
            c,
            Command::Subscribe(None, vec!["mcp_servers".into(), "logs".into()])
        );
        assert!(parse_command(r#"{"command":"subscribe","channels":["nope"]}"#).is_err());
        let Command::Api(id, req) =
            parse_command(r#"{"id":7,"command":"mcp_call_tool","parameters":{"server":"t x","tool":"echo","arguments":{"a":1}}}"#).expect("ok")
        else {
            panic!("api")
        };
        assert_eq!(id, Some(json!(7)));
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/api/v1/mcp/servers/t%20x/tools/call");
        let body: Value = serde_json::from_slice(&req.body).expect("json");
        assert_eq!(body, json!({"name": "echo", "arguments": {"a": 1}}));
        let Command::Api(_, req) =
            parse_command(r#"{"command":"status","parameters":{"detailed":true}}"#).expect("ok")
        else {
            panic!("api")
        };
        assert_eq!(
            (req.method.as_str(), req.path.as_str(), req.query.as_str()),
            ("GET", "/api/v1/status", "detailed=true")
        );
        let Command::Api(_, req) =
            parse_command(r#"{"command":"request","parameters":{"method":"get","path":"/api/v1/health?component=worker"}}"#).expect("ok")
        else {
            panic!("api")
        };
        assert_eq!(req.query, "component=worker");
        let (id, e) = parse_command(r#"{"id":"x","command":"fly"}"#).expect_err("unknown");
        assert_eq!((id, e.code), (Some(json!("x")), ErrorCode::NotFound));
        assert!(parse_command("not json").is_err());
    }

    #[test]
    fn every_command_sends_its_operation_through_the_router() {
        let mut names = BTreeSet::new();
        for (name, op) in commands() {
            assert!(names.insert(name), "duplicate command {name}");
            let msg = json!({"id": 1, "command": name, "parameters": {"id": "s 1", "name": "t"}});
            let Ok(Command::Api(_, req)) = parse_command(&msg.to_string()) else {
                panic!("{name} is not an API command");
            };
            assert_eq!(req.method, op.method, "{name}");
            let resolved = crate::net::routes::resolve(&req.path).expect("routable");
            assert_eq!(resolved.pattern, op.path, "{name}");
            if let Err(e) = crate::net::routes::route(&req) {
                let code = e.error.code;
                assert!(
                    !matches!(code, ErrorCode::NotFound | ErrorCode::MethodNotAllowed),
                    "{name}: {code:?}"
                );
            }
        }
        // Every enveloped operation a WebSocket client may call has a command: the control
        // socket's own operations and the non-JSON answers have none.
        for o in ops::all() {
            let callable = matches!(
                o.produces,
                crate::api::Produces::Json | crate::api::Produces::JsonOrSse
            ) && o.access != crate::api::Access::ControlSocket;
            assert_eq!(o.ws.is_some(), callable, "{} {}", o.method, o.path);
        }
        assert!(names.len() > 20);
    }

    #[test]
    fn handshake_answers_with_the_accept_key() {
        let req = http::Request {
            method: "GET".into(),
            path: "/ws/monitor".into(),
            query: String::new(),
            headers: [
                ("upgrade".into(), "websocket".into()),
                ("sec-websocket-version".into(), "13".into()),
                (
                    "sec-websocket-key".into(),
                    "dGhlIHNhbXBsZSBub25jZQ==".into(),
                ),
            ]
            .into_iter()
            .collect(),
            body: Vec::new(),
            keep_alive: true,
        };
        let resp = String::from_utf8(handshake_response(&req).expect("101")).expect("utf8");
        // RFC 6455 section 1.3 example.
        assert!(
            resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{resp}"
        );
        let mut plain = req.clone();
        plain.headers.clear();
        assert_eq!(handshake_response(&plain).map_err(|e| e.0), Err(426));
    }

    /// One step of [`OnSchedule`]: take at most `n` bytes, or refuse with `WouldBlock`.
    #[derive(Debug, Clone, Copy)]
    enum Io {
        Take(usize),
        Block,
    }

    /// A socket driven by a schedule, as tungstenite's `tests/write.rs` does: each call to
    /// `write` (or `read`) consumes one step; when the schedule runs out, writes take
    /// everything and reads block. Reads hand out `incoming` in the scheduled sizes.
    struct OnSchedule {
        writes: VecDeque<Io>,
        reads: VecDeque<Io>,
        incoming: VecDeque<u8>,
        written: Vec<u8>,
        blocked: usize,
    }

    impl OnSchedule {
        fn new(writes: &[Io], reads: &[Io], incoming: Vec<u8>) -> Self {
            OnSchedule {
                writes: writes.iter().copied().collect(),
                reads: reads.iter().copied().collect(),
                incoming: incoming.into(),
                written: Vec::new(),
                blocked: 0,
            }
        }
    }

    impl Read for OnSchedule {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = match self.reads.pop_front() {
                Some(Io::Take(n)) => n.min(buf.len()).min(self.incoming.len()),
                Some(Io::Block) | None => 0,
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            for (slot, byte) in buf.iter_mut().zip(self.incoming.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    impl Write for OnSchedule {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = match self.writes.pop_front() {
                Some(Io::Take(n)) => n.min(buf.len()),
                Some(Io::Block) => {
                    self.blocked += 1;
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                None => buf.len(),
            };
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Frames a client would send (masked), as bytes.
    fn client_frames(texts: &[String]) -> Vec<u8> {
        let cursor = std::io::Cursor::new(Vec::new());
        let mut ws = WebSocket::from_raw_socket(cursor, Role::Client, None);
        for t in texts {
            ws.send(Message::text(t.clone())).expect("frame");
        }
        ws.get_ref().get_ref().clone()
    }

    /// The text messages in what the server wrote, decoded as a client would.
    fn decode(bytes: Vec<u8>) -> Vec<String> {
        let cursor = std::io::Cursor::new(bytes);
        let mut ws = WebSocket::from_raw_socket(cursor, Role::Client, None);
        let mut texts = Vec::new();
        while let Ok(m) = ws.read() {
            if let Message::Text(t) = m {
                texts.push(t.as_str().to_string());
            }
        }
        texts
    }

    #[test]
    fn events_arrive_whole_and_in_order_when_the_socket_blocks_on_a_schedule() {
        use Io::{Block, Take};
        // Blocks, partial writes of a few bytes, more blocks: every frame is cut somewhere.
        let mut writes = Vec::new();
        for i in 0..200 {
            writes.push(if i % 3 == 0 { Block } else { Take(1 + i % 7) });
        }
        let texts: Vec<String> = (0..40)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i * 37 % 300)))
            .collect();
        let mut w = WsConn::new(OnSchedule::new(&writes, &[], Vec::new()), Vec::new(), 0);
        let (mut sent, mut rounds, mut saw_stall) = (0, 0, false);
        while sent < texts.len() || w.stall_due().is_some() {
            // Events keep coming while the socket blocks now and then.
            if sent < texts.len() {
                assert_eq!(w.enqueue(texts[sent].clone().into()), 0, "nothing dropped");
                sent += 1;
            }
            w.pump().expect("pump");
            saw_stall |= w.stall_due().is_some();
            rounds += 1;
            assert!(rounds < 10_000, "the schedule ends, so the queue drains");
        }
        assert!(
            w.stream_mut().writes.is_empty(),
            "the whole schedule was used"
        );
        assert!(w.stream_mut().blocked >= 60);
        assert!(saw_stall, "a refused write starts the stall clock");
        assert_eq!(w.stall_due(), None, "drained: the stall clock stopped");
        let written = std::mem::take(&mut w.stream_mut().written);
        assert_eq!(decode(written), texts);
    }

    #[test]
    fn commands_cut_into_pieces_between_would_blocks_are_read_whole() {
        use Io::{Block, Take};
        let texts: Vec<String> = (0..10)
            .map(|i| format!("{{\"id\":{i},\"command\":\"subscribe\",\"channels\":[\"logs\"]}}"))
            .collect();
        let incoming = client_frames(&texts);
        let mut reads = Vec::new();
        for i in 0..incoming.len() * 2 {
            reads.push(if i % 2 == 0 { Take(1 + i % 5) } else { Block });
        }
        let total = incoming.len();
        let mut w = WsConn::new(OnSchedule::new(&[], &reads, incoming), Vec::new(), 0);
        let mut got = Vec::new();
        let mut rounds = 0;
        while got.len() < texts.len() {
            let before = got.len();
            w.read_texts(&mut got).expect("read");
            // Whatever the cut, only whole messages come out, in order.
            assert_eq!(got[..], texts[..got.len()], "after {rounds} reads");
            if got.len() == before {
                rounds += 1;
            }
            assert!(rounds < 10 * total, "every byte is eventually read");
        }
        assert!(w.stream_mut().incoming.is_empty());
        assert!(!w.is_closing());
    }
}
