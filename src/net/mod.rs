//! Network side of the loop: listeners, HTTP connections and WebSocket clients (I/O only;
//! the protocol state machines are [`http::Conn`] and tungstenite, the routes are [`routes`],
//! the decisions are the daemon's).
//!
//! Invariants: every connection's buffers are bounded (see [`http::Limits`] and [`ws`]); a
//! connection that needs a deadline (head not complete, idle keep-alive, WebSocket ping) has
//! exactly one timer armed; a [`ConnId`] names one connection for its whole life, so an answer
//! that arrives after the connection closed (and its slot was reused) is dropped, never
//! misdelivered.

pub mod http;
pub mod listener;
pub mod routes;
pub mod slots;
pub mod token;
pub mod ws;

pub use crate::api::ConnId;
use crate::reactor::timer::TimerId;
use crate::reactor::{Cx, TokenRange};
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Token};
use slots::{Activity, Admission, PeerKey};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::Utf8Bytes;

/// Bytes read from an HTTP connection at a time.
const READ_CHUNK: usize = 16 * 1024;

/// What a connection's readiness says about its input.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// Nothing: called to write, or to resume reading after back-pressure.
    None,
    /// New bytes (an edge).
    Read,
    /// New bytes, or the peer's end, or readiness of unknown kind: read until `WouldBlock`.
    ReadClosed,
}

/// Connection tokens the network floor asks the reactor for: one per connection slot.
pub const TOKENS_NEEDED: usize = 1 << 20;
/// Stream back-pressure: a stream with more than this unsent takes no more bytes until it
/// drains (a client that stopped reading loses stream events, not our memory).
pub const STREAM_BACKLOG_LIMIT: usize = 1024 * 1024;

/// The network floor's own timer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A connection's head or idle deadline (or its WebSocket ping).
    Conn(ConnId),
}

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The Unix control socket.
    Unix,
    /// The TCP listener.
    Tcp,
}

/// Who is on the other end.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Listener.
    pub via: Via,
    /// uid from SO_PEERCRED (Unix socket peers).
    pub uid: Option<u32>,
    /// Process id of the peer (Unix socket peers).
    pub pid: Option<i32>,
    /// Address (TCP peers).
    pub addr: Option<SocketAddr>,
    /// Whether the listener's own policy lets this peer in (SO_PEERCRED); refused peers get 403.
    pub authorized: bool,
}

/// Something that arrived on a connection.
#[derive(Debug)]
pub enum Incoming {
    /// An HTTP request (or the protocol error to answer).
    Http {
        /// The connection.
        conn: ConnId,
        /// Its sequence number on that connection (answers go out in this order).
        seq: u64,
        /// The request, or the protocol error to answer.
        request: Result<Box<http::Request>, http::HttpError>,
        /// The caller.
        peer: Peer,
    },
    /// A text message from a WebSocket client.
    WsText {
        /// The connection.
        conn: ConnId,
        /// The message.
        text: String,
    },
}

/// Limits and timeouts for connections, from the `[http]` config section.
#[derive(Debug, Clone, Copy)]
pub struct ConnPolicy {
    /// Buffer limits.
    pub limits: http::Limits,
    /// Open connections allowed per listener.
    pub max_connections: usize,
    /// Open TCP connections allowed per peer ([`slots::PeerKey`]).
    pub max_connections_per_peer: usize,
    /// Time to receive a complete request head.
    pub head_timeout: Duration,
    /// Keep-alive idle time before closing.
    pub idle_timeout: Duration,
    /// A WebSocket client that has not drained for this long is closed (see [`ws`]).
    pub ws_stall_limit: Duration,
}

/// A connected stream of either listener.
pub enum Stream {
    /// Control socket peer.
    Unix(UnixStream),
    /// TCP peer.
    Tcp(TcpStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }
}

impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Transport {
    Http(Stream),
    Ws(Box<ws::WsConn>),
    /// Only while the stream moves from HTTP into the WebSocket.
    Moving,
}

struct Connection {
    transport: Transport,
    http: http::Conn,
    generation: u32,
    peer: Peer,
    /// The per-peer limit's key (TCP peers).
    key: Option<PeerKey>,
    /// Since when it has been waiting on its client, when it is (see [`Connection::activity`]).
    since: Instant,
    timer: Option<(TimerId, Instant)>,
    head_started: Option<Instant>,
    peer_closed: bool,
    /// Reading stopped for back-pressure; read again once answers have gone out.
    read_paused: bool,
}

impl Connection {
    /// Whether the connection waits on its client (evictable) or works for it.
    fn activity(&self) -> Activity {
        match &self.transport {
            Transport::Http(_) if self.http.in_flight() == 0 && !self.http.is_streaming() => {
                Activity::Waiting(self.since)
            }
            Transport::Http(_) | Transport::Ws(_) | Transport::Moving => Activity::Busy,
        }
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        match &mut self.transport {
            Transport::Http(s) => Some(s.source()),
            Transport::Ws(w) => Some(w.stream_mut().source()),
            Transport::Moving => None,
        }
    }
}

/// All connections and the listeners they come from.
pub struct Server {
    /// The connection tokens the reactor gave this floor.
    tokens: TokenRange,
    conns: Vec<Option<Connection>>,
    free: Vec<usize>,
    generations: Vec<u32>,
    open: [usize; 2],
    /// Open TCP connections per peer (entries at zero are removed: bounded by connections).
    per_peer: HashMap<PeerKey, usize>,
    /// Connections refused because the limit was reached.
    pub refused_over_limit: u64,
    /// Connections refused, by [`slots::Reason::index`].
    pub refused: [u64; 2],
    /// Waiting connections evicted to make room, by [`slots::Reason::index`].
    pub evicted: [u64; 2],
    /// Connections accepted in total.
    pub accepted: u64,
    /// WebSocket clients open (kept so the loop skips WebSocket work when there are none).
    ws_open: usize,
    /// Events dropped for slow WebSocket clients, in total.
    pub ws_dropped: u64,
    /// WebSocket clients closed for not draining, in total.
    pub ws_closed_slow: u64,
    /// Connections closed or hung up by their peer since the wiring last took the count
    /// (it tells `/mcp` to look for calls whose client went away).
    pub hangups: u64,
    /// The most bytes one HTTP connection has held unsent (after writing what the kernel
    /// took): the high-water mark of the output bounds, in `status --detailed`.
    pub unsent_peak: usize,
    /// The one read buffer of every HTTP connection (taken and put back by [`Server::drive`]):
    /// a fresh 16 KiB array per call was zeroed twice per request, a fifth of its CPU.
    read_buf: Vec<u8>,
    /// Requests the daemon gave back ([`Server::recycle`]), whose buffers the next requests
    /// parsed reuse (taken and put back by [`Server::drive`], as `read_buf`).
    spares: http::Spares,
    /// Policy applied to new and existing connections.
    pub policy: ConnPolicy,
}

fn via_index(via: Via) -> usize {
    match via {
        Via::Unix => 0,
        Via::Tcp => 1,
    }
}

impl Server {
    /// An empty server; connection slot `n` is registered with token `n` of `tokens`.
    pub fn new(policy: ConnPolicy, tokens: TokenRange) -> Self {
        Server {
            tokens,
            conns: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            open: [0, 0],
            per_peer: HashMap::new(),
            refused_over_limit: 0,
            refused: [0, 0],
            evicted: [0, 0],
            accepted: 0,
            ws_open: 0,
            ws_dropped: 0,
            ws_closed_slow: 0,
            hangups: 0,
            unsent_peak: 0,
            read_buf: Vec::new(),
            spares: http::Spares::default(),
            policy,
        }
    }

    /// Open connections (both listeners).
    pub fn open_connections(&self) -> usize {
        self.open[0] + self.open[1]
    }

    /// Open connections of one listener.
    pub fn open_on(&self, via: Via) -> usize {
        self.open[via_index(via)]
    }

    /// WebSocket clients.
    pub fn ws_clients(&self) -> usize {
        self.ws_open
    }

    /// Decides whether a new connection gets a slot (see [`slots`]), evicting a waiting
    /// connection when that makes room. Returns the refusal reason otherwise.
    fn make_room(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        via: Via,
        key: Option<PeerKey>,
    ) -> Result<(), slots::Reason> {
        let limits = slots::Limits {
            max_connections: self.policy.max_connections,
            max_per_peer: self.policy.max_connections_per_peer,
        };
        let peer = key.map(|k| (k, self.per_peer.get(&k).copied().unwrap_or(0)));
        let occupants = self.conns.iter().enumerate().filter_map(|(slot, c)| {
            let c = c.as_ref().filter(|c| c.peer.via == via)?;
            let id = ConnId {
                slot: slot as u32,
                generation: c.generation,
            };
            Some((id, c.key, c.activity()))
        });
        match slots::admit(limits, self.open[via_index(via)], peer, occupants) {
            Admission::Admit => Ok(()),
            Admission::Evict(victim, reason) => {
                self.evicted[reason.index()] += 1;
                log::debug!(
                    "evicting a waiting connection to make room ({})",
                    reason.label()
                );
                self.close(cx, victim);
                Ok(())
            }
            Admission::Refuse(reason) => {
                self.refused[reason.index()] += 1;
                self.refused_over_limit += 1;
                Err(reason)
            }
        }
    }

    /// Adopts an accepted stream.
    pub fn adopt(&mut self, cx: &mut Cx<'_, Timer>, mut stream: Stream, peer: Peer) {
        let key = match (peer.via, peer.addr) {
            (Via::Tcp, Some(addr)) => Some(PeerKey::of(addr.ip())),
            _ => None,
        };
        if let Err(reason) = self.make_room(cx, peer.via, key) {
            let message = match reason {
                slots::Reason::PeerLimit => "too many connections from your address",
                slots::Reason::ListenerFull => "too many connections",
            };
            let body = format!(
                r#"{{"status":"error","data":null,"errors":[{{"code":"busy","message":"{message}","field":null}}]}}"#
            );
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
                body.len()
            );
            // Best effort into a fresh socket buffer; the connection is dropped either way.
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
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
        let Some(token) = self.tokens.token(slot) else {
            log::warn!("no token left for a connection");
            self.free.push(slot);
            return;
        };
        if let Err(e) = cx.registry.register(
            stream.source(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register connection: {e}");
            self.free.push(slot);
            return;
        }
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        self.open[via_index(peer.via)] += 1;
        if let Some(k) = key {
            *self.per_peer.entry(k).or_default() += 1;
        }
        self.conns[slot] = Some(Connection {
            transport: Transport::Http(stream),
            http: http::Conn::new(),
            generation: self.generations[slot],
            peer,
            key,
            since: Instant::now(),
            timer: None,
            head_started: None,
            peer_closed: false,
            read_paused: false,
        });
        self.accepted += 1;
        let id = ConnId {
            slot: slot as u32,
            generation: self.generations[slot],
        };
        self.update_timer(cx, id);
    }

    /// Whether `token` belongs to a connection.
    pub fn owns(&self, token: Token) -> bool {
        self.tokens.owns(token)
    }

    fn id_for_token(&self, token: Token) -> Option<ConnId> {
        let slot = self.tokens.index(token)?;
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

    fn get_ref(&self, id: ConnId) -> Option<&Connection> {
        self.conns
            .get(id.slot as usize)?
            .as_ref()
            .filter(|c| c.generation == id.generation)
    }

    /// Whether the connection is still open.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.get_ref(id).is_some()
    }

    /// Handles readiness on a connection token.
    pub fn on_ready(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        token: Token,
        read_closed: bool,
        incoming: &mut VecDeque<Incoming>,
    ) {
        if let Some(id) = self.id_for_token(token) {
            let ready = if read_closed {
                Ready::ReadClosed
            } else {
                Ready::Read
            };
            self.drive_ready(cx, id, ready, incoming);
        }
    }

    /// Reads (on readiness, or when reading was paused), parses, writes and closes as needed.
    /// Safe to call at any time.
    pub fn drive(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: ConnId,
        readable: bool,
        incoming: &mut VecDeque<Incoming>,
    ) {
        let ready = if readable {
            Ready::ReadClosed
        } else {
            Ready::None
        };
        self.drive_ready(cx, id, ready, incoming);
    }

    fn drive_ready(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: ConnId,
        ready: Ready,
        incoming: &mut VecDeque<Incoming>,
    ) {
        let mut buf = std::mem::take(&mut self.read_buf);
        if buf.is_empty() {
            buf = vec![0; READ_CHUNK];
        }
        let mut spares = std::mem::take(&mut self.spares);
        self.drive_with(cx, id, ready, incoming, &mut buf, &mut spares);
        self.read_buf = buf;
        self.spares = spares;
    }

    /// Takes back a request that has been dealt with: the next one parsed reuses its buffers
    /// (kept within [`http::Spares`]'s bounds).
    pub fn recycle(&mut self, request: Box<http::Request>) {
        self.spares.put(request);
    }

    fn drive_with(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: ConnId,
        ready: Ready,
        incoming: &mut VecDeque<Incoming>,
        buf: &mut [u8],
        spares: &mut http::Spares,
    ) {
        let readable = ready != Ready::None;
        let limits = self.policy.limits;
        let Some(conn) = self.get(id) else { return };
        if let Transport::Ws(w) = &mut conn.transport {
            let mut texts = Vec::new();
            let ok = w.read_texts(&mut texts).and_then(|()| w.pump());
            incoming.extend(
                texts
                    .into_iter()
                    .map(|text| Incoming::WsText { conn: id, text }),
            );
            if ok.is_err() {
                self.close(cx, id);
            } else {
                self.update_timer(cx, id);
            }
            return;
        }
        let Transport::Http(stream) = &mut conn.transport else {
            return;
        };
        // Write first: when answers had piled up unread (reading and parsing wait for them),
        // this writable event may be the only one that comes, and it must resume both.
        let mut broken = Self::flush_http(stream, &mut conn.http).is_err();
        // After an answer, the socket is only read again if reading had been paused: an
        // edge-triggered poll reports new bytes by itself, and a read here would be a wasted
        // EAGAIN per request.
        let was_paused = std::mem::take(&mut conn.read_paused);
        let mut read = readable || was_paused;
        // Whether a short read may end the reading: only on a fresh edge that did not report
        // the peer's close (and not after a pause, whose edge was spent unread).
        let short_read_drains = ready == Ready::Read && !was_paused;
        let mut hung_up = false;
        while read && !conn.peer_closed && !broken {
            let accept = conn.http.wants_read(&limits);
            if !accept && !conn.http.input_closed() {
                conn.read_paused = true; // back-pressure: read again once answers have gone out
                break;
            }
            match stream.read(buf) {
                Ok(0) => {
                    conn.peer_closed = true;
                    hung_up = true;
                }
                Ok(_) if !accept => {} // nothing more is parsed; only a hang-up matters now
                Ok(n) => {
                    if conn.head_started.is_none() {
                        conn.head_started = Some(Instant::now());
                    }
                    conn.http.feed(&buf[..n]);
                    // A short read has emptied the socket; bytes that come later raise a new
                    // edge, so the read that would only say EAGAIN is skipped (one syscall per
                    // request). Not when the event also reported the peer's close: that edge
                    // is spent, and only reading on to 0 finds the end.
                    if n < buf.len() && short_read_drains {
                        read = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => read = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        while let Some(parsed) = conn.http.next_request_in(&limits, spares) {
            conn.head_started = conn.http.has_partial_input().then(Instant::now);
            let (seq, request) = match parsed {
                http::Parsed::Request(seq, r) => (seq, Ok(r)),
                http::Parsed::Error(seq, e) => (seq, Err(e)),
            };
            incoming.push_back(Incoming::Http {
                conn: id,
                seq,
                request,
                peer: conn.peer.clone(),
            });
        }
        if !broken {
            broken = Self::flush_http(stream, &mut conn.http).is_err();
        }
        let unsent = conn.http.pending_output().len();
        let done = broken
            || conn.http.finished()
            || (conn.peer_closed && (conn.http.in_flight() == 0 || conn.http.is_streaming()));
        if hung_up && !done {
            self.hangups += 1; // a close counts itself
        }
        self.unsent_peak = self.unsent_peak.max(unsent);
        if done {
            self.close(cx, id);
        } else {
            self.update_timer(cx, id);
        }
    }

    fn flush_http(stream: &mut Stream, http: &mut http::Conn) -> io::Result<()> {
        loop {
            let out = http.pending_output();
            if out.is_empty() {
                return Ok(());
            }
            match stream.write(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => http.consume_output(n),
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
            // Waiting on the client again from now on, once this was the last in flight.
            conn.since = Instant::now();
            self.drive(cx, id, false, incoming);
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
            self.drive(cx, id, false, incoming);
        }
    }

    /// Upgrades the connection to a WebSocket after request `seq` (answered with `response`,
    /// the 101). Only the sole request in flight may upgrade.
    ///
    /// # Errors
    /// The reason when the upgrade is not possible (the caller answers with 400).
    pub fn upgrade(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: ConnId,
        seq: u64,
        response: &[u8],
        log_cursor: u64,
    ) -> Result<(), String> {
        let stall_limit = self.policy.ws_stall_limit;
        let Some(conn) = self.get(id) else {
            return Err("connection closed".into());
        };
        if conn.http.in_flight() != 1
            || !conn.http.pending_output().is_empty()
            || seq + 1 != conn.http.next_seq()
        {
            return Err("a WebSocket upgrade must not be pipelined behind other requests".into());
        }
        let tail = conn.http.take_input();
        let Transport::Http(mut stream) = std::mem::replace(&mut conn.transport, Transport::Moving)
        else {
            return Err("already upgraded".into());
        };
        // A monitor stream needs little kernel buffer; an unbounded (autotuned, up to MBs)
        // one would hide a client that stopped reading from the stall rule for minutes and
        // pin that memory per client. Best effort: the default still works.
        if let Err(e) = crate::sys::set_send_buffer(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            ws::KERNEL_SEND_BUFFER,
        ) {
            log::debug!("cannot size a WebSocket send buffer: {e}");
        }
        // The 101 is small and nothing else is queued: a fresh socket buffer takes it whole.
        if let Err(e) = stream.write_all(response) {
            conn.transport = Transport::Http(stream);
            return Err(format!("cannot answer the upgrade: {e}"));
        }
        let mut w = ws::WsConn::new(stream, tail, log_cursor);
        w.set_stall_limit(stall_limit);
        conn.transport = Transport::Ws(Box::new(w));
        conn.http.finish_upgrade();
        self.ws_open += 1;
        self.update_timer(cx, id);
        Ok(())
    }

    /// The WebSocket client on a connection, if it is one.
    pub fn ws_mut(&mut self, id: ConnId) -> Option<&mut ws::WsConn> {
        match &mut self.get(id)?.transport {
            Transport::Ws(w) => Some(w),
            Transport::Http(_) | Transport::Moving => None,
        }
    }

    /// Sends a text message to one WebSocket client (dropped under an event flood, as
    /// events are).
    pub fn ws_send(&mut self, cx: &mut Cx<'_, Timer>, id: ConnId, text: Utf8Bytes) {
        self.ws_queue(cx, id, text, false);
    }

    /// Sends the answer to a command to one WebSocket client: never dropped for events (see
    /// [`ws::MAX_QUEUED_ANSWERS`] for its own bound).
    pub fn ws_answer(&mut self, cx: &mut Cx<'_, Timer>, id: ConnId, text: Utf8Bytes) {
        self.ws_queue(cx, id, text, true);
    }

    fn ws_queue(&mut self, cx: &mut Cx<'_, Timer>, id: ConnId, text: Utf8Bytes, answer: bool) {
        let Some(w) = self.ws_mut(id) else { return };
        let due = w.stall_due();
        // `refused`: the client is being closed for not reading its answers.
        let (dropped, refused) = if answer {
            w.enqueue_answer(text).map_or((0, true), |d| (d, false))
        } else {
            (w.enqueue(text), false)
        };
        let broken = w.pump().is_err();
        let stall_clock_moved = w.stall_due() != due;
        let stalled = w.stalled(Instant::now());
        if stalled {
            Self::give_up_on_stalled(w);
        }
        self.ws_dropped += dropped;
        self.ws_closed_slow += u64::from(stalled || refused);
        if broken {
            self.close(cx, id);
        } else if stall_clock_moved || stalled || refused {
            self.update_timer(cx, id);
        }
    }

    fn give_up_on_stalled(w: &mut ws::WsConn) {
        log::warn!(
            "closing a WebSocket client that does not read its events (for {} ms; 1008)",
            w.stall_limit().as_millis()
        );
        w.close_stalled();
    }

    /// Sends a text message to every WebSocket client subscribed to `channel`; closes the
    /// clients that have not drained for too long. Returns how many got it.
    pub fn ws_broadcast(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        channel: &str,
        text: &Utf8Bytes,
    ) -> usize {
        if self.ws_open == 0 {
            return 0;
        }
        let now = Instant::now();
        let mut sent = 0;
        let mut dead = Vec::new();
        let mut rearm = Vec::new();
        for (slot, c) in self.conns.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            let Transport::Ws(w) = &mut c.transport else {
                continue;
            };
            if !w.channels.contains(channel) || w.is_closing() {
                continue;
            }
            let id = ConnId {
                slot: slot as u32,
                generation: c.generation,
            };
            let due = w.stall_due();
            self.ws_dropped += w.enqueue(text.clone());
            sent += 1;
            if w.pump().is_err() {
                dead.push(id);
                continue;
            }
            if w.stalled(now) {
                Self::give_up_on_stalled(w);
                self.ws_closed_slow += 1;
                rearm.push(id);
            } else if w.stall_due() != due {
                rearm.push(id);
            }
        }
        for id in dead {
            self.close(cx, id);
        }
        // Their deadline is now the stall limit or the close grace, not the next keep-alive.
        for id in rearm {
            self.update_timer(cx, id);
        }
        sent
    }

    /// WebSocket clients subscribed to `channel`.
    pub fn ws_subscribers(&self, channel: &str) -> Vec<ConnId> {
        if self.ws_open == 0 {
            return Vec::new();
        }
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| {
                let c = c.as_ref()?;
                match &c.transport {
                    Transport::Ws(w) if w.channels.contains(channel) => Some(ConnId {
                        slot: slot as u32,
                        generation: c.generation,
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// Bytes waiting on a connection (for stream back-pressure); `None` when closed.
    pub fn backlog(&self, id: ConnId) -> Option<usize> {
        self.get_ref(id).map(|c| c.http.pending_output().len())
    }

    /// Whether the stream head of this connection went out (stream bytes are accepted).
    pub fn is_streaming(&self, id: ConnId) -> bool {
        self.get_ref(id).is_some_and(|c| c.http.is_streaming())
    }

    /// Whether a stream has more than [`STREAM_BACKLOG_LIMIT`] unsent (or is closed): it
    /// takes no more bytes now.
    pub fn stream_full(&self, id: ConnId) -> bool {
        self.backlog(id).is_none_or(|n| n > STREAM_BACKLOG_LIMIT)
    }

    /// Whether the connection is closed or its peer hung up (an answer still in flight on it
    /// would reach nobody).
    pub fn is_gone(&self, id: ConnId) -> bool {
        self.get_ref(id).is_none_or(|c| c.peer_closed)
    }

    /// Appends bytes to a stream and writes them. Refused (false) when the connection is
    /// closed or the stream is full ([`Server::stream_full`]): whole events are dropped,
    /// never a part of one.
    pub fn push_stream(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: ConnId,
        bytes: &[u8],
        incoming: &mut VecDeque<Incoming>,
    ) -> bool {
        if self.stream_full(id) {
            return false;
        }
        if let Some(conn) = self.get(id) {
            conn.http.push_stream(bytes);
            self.drive(cx, id, false, incoming);
        }
        true
    }

    /// Ends a stream: what was pushed is written, then the connection closes.
    pub fn end_stream(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: ConnId,
        incoming: &mut VecDeque<Incoming>,
    ) {
        if let Some(conn) = self.get(id) {
            conn.http.end_stream();
            self.drive(cx, id, false, incoming);
        }
    }

    /// A connection's deadline fired.
    pub fn on_deadline(&mut self, cx: &mut Cx<'_, Timer>, id: ConnId) {
        let now = Instant::now();
        let Some(conn) = self.get(id) else { return };
        // A request in flight or a stream has no deadline; the one left armed (see
        // `update_timer`) is dropped here, and the answer arms the next.
        if matches!(conn.transport, Transport::Http(_))
            && (conn.http.is_streaming() || conn.http.in_flight() > 0)
        {
            conn.timer = None;
            return;
        }
        let overdue = conn.timer.is_some_and(|(_, due)| due <= now);
        if !overdue {
            self.update_timer(cx, id);
            return;
        }
        conn.timer = None;
        if let Transport::Ws(w) = &mut conn.transport {
            if w.stalled(now) {
                // Its deadline becomes the close grace: time to read the 1008 close frame.
                Self::give_up_on_stalled(w);
                self.ws_closed_slow += 1;
                self.update_timer(cx, id);
                return;
            }
            // A client that is closing gets until this deadline to finish; otherwise ping it.
            if !w.is_closing() && w.on_keepalive(now).is_ok() {
                self.update_timer(cx, id);
                return;
            }
        } else {
            log::debug!("closing connection: head or idle timeout");
        }
        self.close(cx, id);
    }

    fn update_timer(&mut self, cx: &mut Cx<'_, Timer>, id: ConnId) {
        let policy = self.policy;
        let Some(conn) = self.get(id) else { return };
        let want = match &conn.transport {
            Transport::Ws(w) => Some(w.deadline()),
            // No deadline while a request is worked on or a stream runs, but an armed one is
            // left to fire (`on_deadline` then drops it): cancelling it here and arming it
            // again after the answer cost two timer-wheel operations per request.
            Transport::Http(_) if conn.http.is_streaming() || conn.http.in_flight() > 0 => return,
            Transport::Moving => None,
            // Requests that wait behind unread answers are not a slow head: the client is the
            // one not reading, which is the idle rule's business.
            Transport::Http(_) => match conn
                .head_started
                .filter(|_| conn.http.has_partial_input() && !conn.http.output_full())
            {
                Some(started) => Some(started + policy.head_timeout),
                // Idle, or answered but the client does not read: either way it waits on
                // the client, and the deadline slides only while the client makes progress.
                None => Some(Instant::now() + policy.idle_timeout),
            },
        };
        // Re-arm only when the deadline moves by more than a little: idle deadlines slide with
        // every request and a cancel+insert per request would be wasted work.
        let close_enough =
            |a: Instant, b: Instant| a.max(b).duration_since(a.min(b)) < Duration::from_millis(250);
        match (conn.timer, want) {
            (Some((_, due)), Some(w)) if close_enough(due, w) => {}
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
            self.hangups += 1;
            if let Some((t, _)) = conn.timer {
                cx.timers.cancel(t);
            }
            if let Some(source) = conn.source() {
                let _ = cx.registry.deregister(source);
            }
            self.free.push(id.slot as usize);
            self.open[via_index(conn.peer.via)] -= 1;
            if let Some(k) = conn.key {
                if let Some(n) = self.per_peer.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_peer.remove(&k);
                    }
                }
            }
            if matches!(conn.transport, Transport::Ws(_)) {
                self.ws_open -= 1;
            }
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
