//! Network side of the loop: listeners and HTTP connections (I/O only; the protocol
//! state machine is [`http::Conn`], the routes are [`routes`], the decisions are the daemon's).
//!
//! Invariants: every connection's buffers are bounded (see [`http::Limits`]); a connection
//! that needs a deadline (head not complete, or idle keep-alive) has exactly one timer armed;
//! a [`ConnId`] names one connection for its whole life, so an answer that arrives after the
//! connection closed (and its slot was reused) is dropped, never misdelivered.

pub mod http;
pub mod listener;
pub mod routes;

use crate::daemon::Timer;
use crate::reactor::timer::TimerId;
use crate::reactor::Cx;
use mio::net::UnixStream;
use mio::{Interest, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Tokens below this belong to listeners.
pub const CONN_TOKEN_BASE: usize = 16;
/// Token of the control socket listener.
pub const CONTROL_LISTENER: Token = Token(0);

/// Names one connection for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    slot: u32,
    generation: u32,
}

/// Who is on the other end.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// uid and pid from SO_PEERCRED (Unix socket peers).
    pub uid: Option<u32>,
    /// Process id of the peer.
    pub pid: Option<i32>,
    /// Whether the listener's policy lets this peer in; refused peers get 403.
    pub authorized: bool,
}

/// A request that arrived on a connection.
#[derive(Debug)]
pub struct Incoming {
    /// The connection.
    pub conn: ConnId,
    /// Its sequence number on that connection (answers go out in this order).
    pub seq: u64,
    /// The request, or the protocol error to answer.
    pub request: Result<http::Request, http::HttpError>,
    /// The caller.
    pub peer: Peer,
}

/// Limits and timeouts for connections, from the `[http]` config section.
#[derive(Debug, Clone, Copy)]
pub struct ConnPolicy {
    /// Buffer limits.
    pub limits: http::Limits,
    /// Open connections allowed.
    pub max_connections: usize,
    /// Time to receive a complete request head.
    pub head_timeout: Duration,
    /// Keep-alive idle time before closing.
    pub idle_timeout: Duration,
}

enum Stream {
    Unix(UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Connection {
    stream: Stream,
    http: http::Conn,
    generation: u32,
    peer: Peer,
    timer: Option<(TimerId, Instant)>,
    head_started: Option<Instant>,
    peer_closed: bool,
}

/// All connections and the listeners they come from.
pub struct Server {
    conns: Vec<Option<Connection>>,
    free: Vec<usize>,
    generations: Vec<u32>,
    open: usize,
    /// Connections refused because the limit was reached.
    pub refused_over_limit: u64,
    /// Connections accepted in total.
    pub accepted: u64,
    /// Policy applied to new and existing connections.
    pub policy: ConnPolicy,
}

impl Server {
    /// An empty server.
    pub fn new(policy: ConnPolicy) -> Self {
        Server {
            conns: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            open: 0,
            refused_over_limit: 0,
            accepted: 0,
            policy,
        }
    }

    /// Open connections.
    pub fn open_connections(&self) -> usize {
        self.open
    }

    /// Adopts an accepted Unix stream.
    pub fn adopt_unix(&mut self, cx: &mut Cx<'_, Timer>, mut stream: UnixStream, peer: Peer) {
        if self.open >= self.policy.max_connections {
            self.refused_over_limit += 1;
            let body = br#"{"status":"error","errors":[{"code":"busy","message":"too many connections","field":null}]}"#;
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            // Best effort on a fresh socket buffer; the connection is dropped either way.
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
            return;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.generations.push(0);
                self.conns.len() - 1
            }
        };
        let token = Token(CONN_TOKEN_BASE + slot);
        if let Err(e) =
            cx.registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("cannot register connection: {e}");
            self.free.push(slot);
            return;
        }
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        self.conns[slot] = Some(Connection {
            stream: Stream::Unix(stream),
            http: http::Conn::new(),
            generation: self.generations[slot],
            peer,
            timer: None,
            head_started: None,
            peer_closed: false,
        });
        self.open += 1;
        self.accepted += 1;
        let id = ConnId {
            slot: slot as u32,
            generation: self.generations[slot],
        };
        self.update_timer(cx, id);
    }

    /// Whether `token` belongs to a connection.
    pub fn owns(token: Token) -> bool {
        token.0 >= CONN_TOKEN_BASE && token.0 < usize::MAX - 16
    }

    fn id_for_token(&self, token: Token) -> Option<ConnId> {
        let slot = token.0.checked_sub(CONN_TOKEN_BASE)?;
        let conn = self.conns.get(slot)?.as_ref()?;
        Some(ConnId {
            slot: slot as u32,
            generation: conn.generation,
        })
    }

    fn get(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.conns
            .get_mut(id.slot as usize)?
            .as_mut()
            .filter(|c| c.generation == id.generation)
    }

    /// Whether the connection is still open.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.conns
            .get(id.slot as usize)
            .and_then(|c| c.as_ref())
            .is_some_and(|c| c.generation == id.generation)
    }

    /// Handles readiness on a connection token; parsed requests are appended to `incoming`.
    pub fn on_ready(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        token: Token,
        incoming: &mut VecDeque<Incoming>,
    ) {
        if let Some(id) = self.id_for_token(token) {
            self.drive(cx, id, incoming);
        }
    }

    /// Reads, parses, writes and closes as needed. Safe to call at any time.
    pub fn drive(&mut self, cx: &mut Cx<'_, Timer>, id: ConnId, incoming: &mut VecDeque<Incoming>) {
        let limits = self.policy.limits;
        let Some(conn) = self.get(id) else { return };
        let mut broken = false;
        let mut buf = [0u8; 16 * 1024];
        while !conn.peer_closed {
            let accept = conn.http.wants_read(&limits);
            if !accept && !conn.http.input_closed() {
                break; // back-pressure: read again once answers have gone out
            }
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.peer_closed = true,
                Ok(_) if !accept => {} // nothing more is parsed; only a hang-up matters now
                Ok(n) => {
                    if conn.head_started.is_none() {
                        conn.head_started = Some(Instant::now());
                    }
                    conn.http.feed(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        while let Some(parsed) = conn.http.next_request(&limits) {
            conn.head_started = conn.http.has_partial_input().then(Instant::now);
            let (seq, request) = match parsed {
                http::Parsed::Request(seq, r) => (seq, Ok(r)),
                http::Parsed::Error(seq, e) => (seq, Err(e)),
            };
            incoming.push_back(Incoming {
                conn: id,
                seq,
                request,
                peer: conn.peer.clone(),
            });
        }
        if !broken {
            broken = Self::flush(conn).is_err();
        }
        let done = broken
            || conn.http.finished()
            || (conn.peer_closed && conn.http.in_flight() == 0 && !conn.http.is_streaming());
        // A peer that half-closed after sending requests still gets its answers.
        if conn.peer_closed && conn.http.is_streaming() {
            self.close(cx, id);
            return;
        }
        if done {
            self.close(cx, id);
        } else {
            self.update_timer(cx, id);
        }
    }

    fn flush(conn: &mut Connection) -> io::Result<()> {
        loop {
            let out = conn.http.pending_output();
            if out.is_empty() {
                return Ok(());
            }
            match conn.stream.write(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => conn.http.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues the answer to request `seq` and pushes it out.
    pub fn respond(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: ConnId,
        seq: u64,
        response: &http::Response,
        close: bool,
        incoming: &mut VecDeque<Incoming>,
    ) {
        if let Some(conn) = self.get(id) {
            conn.http.respond(seq, response, close);
            self.drive(cx, id, incoming);
        }
    }

    /// Turns request `seq` into an event stream.
    pub fn start_stream(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: ConnId,
        seq: u64,
        incoming: &mut VecDeque<Incoming>,
    ) {
        if let Some(conn) = self.get(id) {
            conn.http.start_stream(seq);
            self.drive(cx, id, incoming);
        }
    }

    /// Bytes waiting on a connection (for stream back-pressure); `None` when closed.
    pub fn backlog(&self, id: ConnId) -> Option<usize> {
        self.conns
            .get(id.slot as usize)
            .and_then(|c| c.as_ref())
            .filter(|c| c.generation == id.generation)
            .map(|c| c.http.pending_output().len())
    }

    /// Whether the stream head of this connection went out (stream bytes are accepted).
    pub fn is_streaming(&self, id: ConnId) -> bool {
        self.conns
            .get(id.slot as usize)
            .and_then(|c| c.as_ref())
            .is_some_and(|c| c.generation == id.generation && c.http.is_streaming())
    }

    /// Appends bytes to a stream and writes them.
    pub fn push_stream(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: ConnId,
        bytes: &[u8],
        incoming: &mut VecDeque<Incoming>,
    ) {
        if let Some(conn) = self.get(id) {
            conn.http.push_stream(bytes);
            self.drive(cx, id, incoming);
        }
    }

    /// A connection's deadline fired: close it if it is still overdue.
    pub fn on_deadline(&mut self, cx: &mut Cx<'_, Timer>, id: ConnId) {
        let now = Instant::now();
        let Some(conn) = self.get(id) else { return };
        match conn.timer {
            Some((_, due)) if due <= now => {
                conn.timer = None;
                log::debug!("closing connection: head or idle timeout");
                self.close(cx, id);
            }
            _ => self.update_timer(cx, id),
        }
    }

    fn update_timer(&mut self, cx: &mut Cx<'_, Timer>, id: ConnId) {
        let policy = self.policy;
        let Some(conn) = self.get(id) else { return };
        let want = if conn.http.is_streaming() || conn.http.in_flight() > 0 {
            None
        } else if let Some(started) = conn.head_started.filter(|_| conn.http.has_partial_input()) {
            Some(started + policy.head_timeout)
        } else if conn.http.is_idle() {
            Some(Instant::now() + policy.idle_timeout)
        } else {
            None
        };
        match (conn.timer, want) {
            (Some((_, due)), Some(w)) if conn.http.has_partial_input() && due == w => {}
            (Some((_, due)), Some(w))
                if !conn.http.has_partial_input()
                    && w.saturating_duration_since(due) < Duration::from_secs(1) => {}
            (old, want) => {
                if let Some((t, _)) = old {
                    cx.timers.cancel(t);
                }
                conn.timer = want.map(|w| (cx.timers.insert(w, Timer::Conn(id)), w));
            }
        }
    }

    /// Closes a connection and frees its slot.
    pub fn close(&mut self, cx: &mut Cx<'_, Timer>, id: ConnId) {
        if self.get(id).is_none() {
            return;
        }
        if let Some(mut conn) = self.conns[id.slot as usize].take() {
            if let Some((t, _)) = conn.timer {
                cx.timers.cancel(t);
            }
            let _ = cx.registry.deregister(conn.stream.source());
            self.free.push(id.slot as usize);
            self.open -= 1;
        }
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&mut self, cx: &mut Cx<'_, Timer>) {
        for slot in 0..self.conns.len() {
            if let Some(generation) = self.conns[slot].as_ref().map(|c| c.generation) {
                self.close(
                    cx,
                    ConnId {
                        slot: slot as u32,
                        generation,
                    },
                );
            }
        }
    }

    /// Whether any connection still has bytes to write.
    pub fn has_pending_output(&self) -> bool {
        self.conns
            .iter()
            .flatten()
            .any(|c| !c.http.pending_output().is_empty())
    }
}
