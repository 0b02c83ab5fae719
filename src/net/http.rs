//! HTTP/1.1 server connection as a state machine without I/O: bytes in, requests out;
//! responses in, bytes out. The transport (Unix or TCP stream on the loop) feeds it.
//!
//! Invariants:
//! - Input held is bounded by `max_head_bytes + max_body_bytes`; the transport stops reading
//!   when [`Conn::wants_read`] is false.
//! - Output is bounded too: while [`MAX_BUFFERED_OUTPUT`] bytes of answers wait for a client
//!   that does not read, no further request is read or parsed (so at most that plus the
//!   answers to `max_pipeline` requests already parsed is held: the daemon parses one at a
//!   time, so one answer). An emptied buffer of a burst is given back.
//! - Responses leave in request order (pipelining) even when they are produced out of order:
//!   each request gets a sequence number and [`Conn::respond`] parks early answers.
//! - After an error, a `Connection: close`, or a stream, no further request is parsed.
//! - A `HEAD` request is answered with exactly the head its `GET` would get (`Content-Length`
//!   of the body it would send) and no body, so a keep-alive client stays in sync.
//! - Framing is strict (RFC 9110 §8.6, RFC 9112 §3.2): `Content-Length` is `1*DIGIT`, sent at
//!   most once; an HTTP/1.1 request carries exactly one `Host`. Anything else is a 400 and the
//!   connection closes, because a proxy in front of us might frame the bytes differently.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// Answers waiting to be written beyond which a connection parses no further request.
pub const MAX_BUFFERED_OUTPUT: usize = 1024 * 1024;

/// An emptied output buffer larger than this is given back rather than kept for the next
/// answer: after a burst of big answers, an idle keep-alive connection holds no megabytes.
const KEPT_OUTPUT_CAPACITY: usize = 64 * 1024;

/// Size limits for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line plus headers.
    pub max_head_bytes: usize,
    /// Request body.
    pub max_body_bytes: usize,
    /// Requests parsed but not yet answered.
    pub max_pipeline: usize,
}

/// One parsed request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Method as sent (`GET`).
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string after `?`, or empty.
    pub query: String,
    /// Header fields, names lowercased, in order.
    pub headers: Headers,
    /// Body bytes (Content-Length delimited).
    pub body: Vec<u8>,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
}

impl Request {
    /// First value of a header (name is matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Whether the client asked for a Server-Sent Events stream.
    pub fn accepts_event_stream(&self) -> bool {
        self.header("accept")
            .is_some_and(|a| a.contains("text/event-stream"))
    }

    /// Bytes its buffers hold, used or not.
    fn capacity(&self) -> usize {
        self.method.capacity()
            + self.path.capacity()
            + self.query.capacity()
            + self.headers.text.capacity()
            + self.headers.fields.capacity() * std::mem::size_of::<[usize; 4]>()
            + self.body.capacity()
    }
}

/// Requests given back once answered, whose buffers the next ones parsed are written into:
/// on a keep-alive connection a request then costs no allocation (method, path, head text,
/// field ranges and body were one each). Bounded: at most [`SPARE_REQUESTS`] are kept, and one
/// that a big request grew beyond [`KEPT_REQUEST_CAPACITY`] is let go.
#[derive(Debug, Default)]
// The boxes are kept too: a request travels boxed (Parsed, Incoming) and is given back so.
#[allow(clippy::vec_box)]
pub struct Spares(Vec<Box<Request>>);

/// Spare requests kept (as many as connections may have parsed in one turn of the loop before
/// the daemon gives the first back; beyond, a request is allocated as before).
const SPARE_REQUESTS: usize = 4;

/// A spare request holding more than this (a big body grew it) is dropped, not kept.
const KEPT_REQUEST_CAPACITY: usize = 64 * 1024;

impl Spares {
    /// Keeps a request's buffers for a later one (emptied; dropped when over the bounds).
    pub fn put(&mut self, mut request: Box<Request>) {
        if self.0.len() >= SPARE_REQUESTS || request.capacity() > KEPT_REQUEST_CAPACITY {
            return;
        }
        request.method.clear();
        request.path.clear();
        request.query.clear();
        request.headers.clear();
        request.body.clear();
        request.keep_alive = false;
        self.0.push(request);
    }

    /// An empty request: a spare one if there is one.
    fn take(&mut self) -> Box<Request> {
        self.0.pop().unwrap_or_default()
    }
}

/// The header fields of a request: one text holding every name (lowercased) and value, each
/// field ranges in it. Two allocations per request instead of one or two per field, and
/// lookups hand out `&str` views.
#[derive(Clone, Default)]
pub struct Headers {
    /// Names and values: normally the request head as received (names lowercased in place);
    /// a value with bytes that are not UTF-8 (header values may carry obs-text) has them
    /// replaced by U+FFFD.
    text: String,
    /// Per field: where its name starts and ends, where its value starts and ends.
    fields: Vec<[usize; 4]>,
    /// For each name of [`indexed`], its first field (counted from 1; 0: none).
    first: [u32; INDEXED],
}

/// How many names [`indexed`] knows.
const INDEXED: usize = 11;

/// The slot of a name the daemon asks for on every request (lowercase). Their first fields
/// are noted as the head is read, so that asking for one costs this match instead of a scan
/// of every field (about a third as much); any other name, or one asked in another case, is
/// looked for field by field.
fn indexed(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"host" => 0,
        b"origin" => 1,
        b"sec-fetch-site" => 2,
        b"authorization" => 3,
        b"content-type" => 4,
        b"accept" => 5,
        b"mcp-session-id" => 6,
        b"mcp-protocol-version" => 7,
        b"last-event-id" => 8,
        b"mcp-method" => 9,
        b"mcp-name" => 10,
        _ => return None,
    })
}

/// Notes field `n` (counted from 1) named `name` in `first` unless one came before it.
fn note(first: &mut [u32; INDEXED], name: &[u8], n: usize) {
    if let (Some(slot), Ok(n)) = (indexed(name), u32::try_from(n)) {
        if let Some(at @ 0) = first.get_mut(slot) {
            *at = n;
        }
    }
}

impl Headers {
    /// Holds the fields httparse found in `head`, the bytes they point into, in place of
    /// what it held (its buffers are reused): the head copied once, its names lowercased in
    /// place, checked as UTF-8 once.
    fn fill(&mut self, head: &[u8], found: &[httparse::Header<'_>]) {
        // Where a slice of `head` starts in it (httparse hands out subslices of it).
        let base = head.as_ptr() as usize;
        let at = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(base);
        let mut text = std::mem::take(&mut self.text).into_bytes();
        text.clear();
        text.extend_from_slice(head);
        self.fields.clear();
        self.first = [0; INDEXED];
        for h in found {
            let (name, value) = (at(h.name.as_bytes()), at(h.value));
            let field = [
                name,
                name + h.name.len(),
                value,
                value.wrapping_add(h.value.len()),
            ];
            match text.get_mut(field[0]..field[1]) {
                Some(name) if head.get(field[2]..field[3]).is_some() => {
                    name.make_ascii_lowercase();
                    note(&mut self.first, name, self.fields.len() + 1);
                }
                // Not within the head (an empty value may point anywhere): copied one by one.
                _ => return self.copy(found),
            }
            self.fields.push(field);
        }
        match String::from_utf8(text) {
            Ok(text) => self.text = text,
            Err(_) => self.copy(found),
        }
    }

    /// Holds the fields copied one by one (a value that is not UTF-8 gets U+FFFD).
    fn copy(&mut self, found: &[httparse::Header<'_>]) {
        self.clear();
        self.text
            .reserve(found.iter().map(|h| h.name.len() + h.value.len()).sum());
        self.fields.reserve(found.len());
        for h in found {
            self.push(h.name, h.value);
        }
    }

    /// The framing fields, read in one pass over the (lowercase) names. A value that was not
    /// UTF-8 holds U+FFFD here, so it is no `Content-Length` digits nor `100-continue`.
    fn framing(&self) -> Framing {
        let text = self.text.as_bytes();
        let mut framing = Framing {
            hosts: 0,
            chunked: false,
            length: Ok(0),
            expects_continue: false,
            keep_alive: None,
        };
        // The first two `Content-Length` values: a second is refused whatever it says.
        let mut lengths = [""; 2];
        let mut sent = 0;
        let mut connection = None;
        for f in &self.fields {
            let value = || self.text.get(f[2]..f[3]).unwrap_or("");
            match text.get(f[0]..f[1]).unwrap_or(b"") {
                b"host" => framing.hosts += 1,
                b"transfer-encoding" => framing.chunked = true,
                b"content-length" => {
                    if let Some(slot) = lengths.get_mut(sent) {
                        *slot = value();
                    }
                    sent += 1;
                }
                b"expect" => {
                    framing.expects_continue |= value().eq_ignore_ascii_case("100-continue");
                }
                b"connection" if connection.is_none() => connection = Some(value()),
                _ => {}
            }
        }
        framing.length = content_length(lengths.into_iter().take(sent));
        framing.keep_alive = match connection {
            Some(c) if contains_ignore_case(c, "close") => Some(false),
            Some(c) if contains_ignore_case(c, "keep-alive") => Some(true),
            _ => None,
        };
        framing
    }

    /// Appends a field; the name is lowercased.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let start = self.text.len();
        self.text.push_str(name);
        self.text[start..].make_ascii_lowercase();
        let name_end = self.text.len();
        self.text.push_str(&String::from_utf8_lossy(value));
        self.fields
            .push([start, name_end, name_end, self.text.len()]);
        note(
            &mut self.first,
            &self.text.as_bytes()[start..name_end],
            self.fields.len(),
        );
    }

    /// The fields in order, as (lowercase name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|f| (&self.text[f[0]..f[1]], &self.text[f[2]..f[3]]))
    }

    /// First value of a header (name is matched case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some(slot) = indexed(name.as_bytes()) {
            let n = self.first.get(slot).copied().unwrap_or(0) as usize;
            let f = self.fields.get(n.checked_sub(1)?)?;
            return self.text.get(f[2]..f[3]);
        }
        // The names kept are lowercase, and so is every name the daemon asks for. Length and
        // first byte (either case) first: most fields are passed over without a byte
        // comparison, and a mixed-case question still finds its header.
        let (text, name) = (self.text.as_bytes(), name.as_bytes());
        let first = name.first().map_or(0, |b| b | 0x20);
        self.fields
            .iter()
            .find(|f| {
                f[1] - f[0] == name.len()
                    && text.get(f[0]..f[1]).is_some_and(|n| {
                        n.first().map_or(0, |b| b | 0x20) == first
                            && (n == name || n.eq_ignore_ascii_case(name))
                    })
            })
            .and_then(|f| self.text.get(f[2]..f[3]))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there is no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Removes every field.
    pub fn clear(&mut self) {
        self.text.clear();
        self.fields.clear();
        self.first = [0; INDEXED];
    }
}

/// Equal when the fields are, however the text holds them.
impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Fields from (name, value) pairs, as tests and internal callers build requests.
impl FromIterator<(Cow<'static, str>, String)> for Headers {
    fn from_iter<I: IntoIterator<Item = (Cow<'static, str>, String)>>(pairs: I) -> Self {
        let mut headers = Headers::default();
        for (name, value) in pairs {
            headers.push(&name, value.as_bytes());
        }
        headers
    }
}

/// Whether `hay` contains `needle` (lowercase ASCII), ignoring ASCII case: as
/// `hay.to_ascii_lowercase().contains(needle)`, without the copy.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (mut hay, needle) = (hay.as_bytes(), needle.as_bytes());
    let Some(&first) = needle.first() else {
        return true;
    };
    // Candidates are where the first byte matches; only there is the rest compared.
    while let Some(i) = hay.iter().position(|b| b.to_ascii_lowercase() == first) {
        let Some(window) = hay.get(i..i + needle.len()) else {
            return false;
        };
        if window.eq_ignore_ascii_case(needle) {
            return true;
        }
        hay = &hay[i + 1..];
    }
    false
}

/// A protocol error detected while parsing; answered with `status` and the connection closes.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpError {
    /// HTTP status to answer with.
    pub status: u16,
    /// What was wrong.
    pub message: String,
}

/// What the parser produced.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A complete request with its sequence number (boxed: it is handed on a few times, and
    /// the box is kept with the spare buffers).
    Request(u64, Box<Request>),
    /// A malformed or over-limit request; answer it under this sequence number, then close.
    Error(u64, HttpError),
}

/// A response to serialize.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body bytes: borrowed when the answer is a document built once (the OpenAPI document,
    /// the status page), so that each answer does not copy it first.
    pub body: Cow<'static, [u8]>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Cow::Owned(body),
        }
    }
}

/// Reason phrase for the statuses we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// A request whose head has been parsed and whose body has not all arrived yet: kept so that
/// the head is parsed once, not again on every read until the body is whole.
#[derive(Debug)]
struct Waiting {
    /// Everything but the body.
    request: Box<Request>,
    /// Where the body starts in the input.
    head_len: usize,
    /// Its `Content-Length` (at most `max_body_bytes`).
    body_len: usize,
    /// Whether it asked for `100 Continue`.
    expects_continue: bool,
}

/// What the header fields say about a request's framing (RFC 9112 §6).
struct Framing {
    /// `Host` fields.
    hosts: usize,
    /// Whether a `Transfer-Encoding` was sent.
    chunked: bool,
    /// The body length, or why the `Content-Length` fields are refused.
    length: Result<u64, &'static str>,
    /// Whether an `Expect` field asks for `100-continue`.
    expects_continue: bool,
    /// What the first `Connection` field says: close (`false`), keep-alive, or neither.
    keep_alive: Option<bool>,
}

/// One server-side HTTP/1.1 connection.
#[derive(Debug, Default)]
pub struct Conn {
    input: Vec<u8>,
    /// The head at the front of `input`, parsed, while its body is on its way.
    waiting: Option<Waiting>,
    output: Vec<u8>,
    written: usize,
    next_seq: u64,
    write_seq: u64,
    parked: BTreeMap<u64, (Vec<u8>, bool)>,
    /// Sequence number after which nothing more is answered (close or stream).
    last_seq: Option<u64>,
    streaming: bool,
    streaming_pending: Option<u64>,
    /// The stream was ended before its head could go out (earlier answers were pending):
    /// it closes as soon as the head is written.
    stream_ended: bool,
    close_when_flushed: bool,
    continue_sent_for: Option<u64>,
    /// Sequence numbers of `HEAD` requests not yet answered (at most `max_pipeline`).
    head_only: Vec<u64>,
}

impl Conn {
    /// A fresh connection.
    pub fn new() -> Self {
        Conn::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// Whether the transport should read more: input below its bound, requests still accepted
    /// and answers not piling up. Not limited by the requests in flight: with one at a time,
    /// that would stop reading while every request is worked on, and a client that hangs up
    /// meanwhile would go unnoticed (its calls are cancelled when it does).
    pub fn wants_read(&self, limits: &Limits) -> bool {
        self.last_seq.is_none()
            && self.input.len() < limits.max_head_bytes + limits.max_body_bytes
            && !self.output_full()
    }

    /// Whether answers pile up unread: parsing waits until they have gone out.
    pub fn output_full(&self) -> bool {
        self.pending_output().len() >= MAX_BUFFERED_OUTPUT
    }

    /// Whether no further request will be parsed (after an error, a close or a stream); the
    /// transport still reads, discarding, to notice the peer hanging up.
    pub fn input_closed(&self) -> bool {
        self.last_seq.is_some()
    }

    /// Sequence number the next parsed request will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Takes the unparsed input (bytes that followed an upgrade request).
    pub fn take_input(&mut self) -> Vec<u8> {
        self.waiting = None;
        std::mem::take(&mut self.input)
    }

    /// The last request was answered by switching protocols: nothing more is parsed here.
    pub fn finish_upgrade(&mut self) {
        self.last_seq = Some(self.write_seq);
        self.write_seq = self.next_seq;
        self.parked.clear();
    }

    /// Whether part of a request has arrived but not all of it.
    pub fn has_partial_input(&self) -> bool {
        !self.input.is_empty() && self.last_seq.is_none()
    }

    /// Requests parsed and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.next_seq - self.write_seq
    }

    /// Whether the connection has turned into an event stream.
    pub fn is_streaming(&self) -> bool {
        self.streaming
    }

    /// Parses the next complete request, if any.
    pub fn next_request(&mut self, limits: &Limits) -> Option<Parsed> {
        self.next_request_in(limits, &mut Spares::default())
    }

    /// [`Conn::next_request`], written into a spare request's buffers when there is one.
    pub fn next_request_in(&mut self, limits: &Limits, spares: &mut Spares) -> Option<Parsed> {
        if self.last_seq.is_some()
            || self.in_flight() >= limits.max_pipeline as u64
            || self.output_full()
        {
            return None;
        }
        let waiting = match self.waiting.take() {
            Some(waiting) => waiting,
            None => match self.parse_head(limits, spares)? {
                Ok(waiting) => waiting,
                Err(error) => return Some(error),
            },
        };
        let end = waiting.head_len + waiting.body_len;
        if self.input.len() < end {
            if waiting.expects_continue
                && self.in_flight() == 0
                && self.continue_sent_for != Some(self.next_seq)
            {
                self.continue_sent_for = Some(self.next_seq);
                self.output
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            self.waiting = Some(waiting);
            return None;
        }
        let mut request = waiting.request;
        request
            .body
            .extend_from_slice(&self.input[waiting.head_len..end]);
        self.input.drain(..end);
        let seq = self.next_seq;
        self.next_seq += 1;
        if !request.keep_alive {
            self.last_seq = Some(seq);
        }
        Some(Parsed::Request(seq, request))
    }

    /// Parses the head at the front of the input into a spare request: `None` while it is
    /// not all there; the error to answer when it is refused.
    fn parse_head(
        &mut self,
        limits: &Limits,
        spares: &mut Spares,
    ) -> Option<Result<Waiting, Parsed>> {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        let head_len = match req.parse(&self.input) {
            Ok(httparse::Status::Complete(n)) if n <= limits.max_head_bytes => n,
            Ok(httparse::Status::Complete(_)) => {
                return Some(Err(self.error(431, "request head too large")))
            }
            Ok(httparse::Status::Partial) if self.input.len() > limits.max_head_bytes => {
                return Some(Err(self.error(431, "request head too large")))
            }
            Ok(httparse::Status::Partial) => return None,
            Err(httparse::Error::TooManyHeaders) => {
                return Some(Err(self.error(431, "too many headers")))
            }
            Err(e) => return Some(Err(self.error(400, &format!("malformed request: {e}")))),
        };
        let http11 = req.version == Some(1);
        let method = req.method.unwrap_or("");
        let target = req.path.unwrap_or("");
        // Also for the errors below: their answer must not carry a body either. (Each head
        // is parsed once, also when its body arrives later.)
        if method == "HEAD" {
            self.head_only.push(self.next_seq);
        }
        if target.as_bytes().first() != Some(&b'/') {
            return Some(Err(
                self.error(400, "request target must be an absolute path")
            ));
        }
        let (path, query) = match target.bytes().position(|b| b == b'?') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (target, ""),
        };
        let mut request = spares.take();
        request.method.push_str(method);
        request.path.push_str(path);
        request.query.push_str(query);
        request.headers.fill(&self.input[..head_len], req.headers);
        let framing = request.headers.framing();
        let refused = |status, message: &'static str| Err((status, Cow::Borrowed(message)));
        let checked = if framing.hosts > 1 {
            refused(400, "more than one Host header")
        } else if framing.hosts == 0 && http11 {
            refused(400, "an HTTP/1.1 request needs a Host header")
        } else if framing.chunked {
            refused(
                411,
                "chunked request bodies are not accepted: send Content-Length",
            )
        } else {
            match framing.length {
                Err(why) => refused(400, why),
                Ok(n) if n > limits.max_body_bytes as u64 => Err((
                    413,
                    Cow::Owned(format!(
                        "request body of {n} bytes exceeds the limit of {} bytes",
                        limits.max_body_bytes
                    )),
                )),
                // Fits: it is at most max_body_bytes.
                Ok(n) => Ok(n as usize),
            }
        };
        match checked {
            Ok(body_len) => {
                request.keep_alive = framing.keep_alive.unwrap_or(http11);
                Some(Ok(Waiting {
                    request,
                    head_len,
                    body_len,
                    expects_continue: framing.expects_continue,
                }))
            }
            Err((status, message)) => {
                spares.put(request);
                Some(Err(self.error(status, &message)))
            }
        }
    }

    fn error(&mut self, status: u16, message: &str) -> Parsed {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_seq = Some(seq);
        self.input.clear();
        Parsed::Error(
            seq,
            HttpError {
                status,
                message: message.to_string(),
            },
        )
    }

    /// Queues the answer to request `seq`; it goes out once every earlier answer has.
    /// `close` ends the connection after it (also implied for the last accepted request).
    pub fn respond(&mut self, seq: u64, response: &Response, close: bool) {
        let close = close || self.last_seq == Some(seq);
        let head_only = self.take_head_only(seq);
        if seq == self.write_seq && !self.close_when_flushed {
            // Its turn (always, one request at a time): straight into the output, without an
            // intermediate copy of a body that may be large.
            serialize_into(&mut self.output, response, close, false, head_only);
            self.advance(close);
            self.drain_parked();
            return;
        }
        let mut bytes = Vec::new();
        serialize_into(&mut bytes, response, close, false, head_only);
        self.enqueue(seq, bytes, close);
    }

    /// Whether `seq` was a `HEAD` request (forgotten once asked: each is answered once).
    fn take_head_only(&mut self, seq: u64) -> bool {
        match self.head_only.iter().position(|s| *s == seq) {
            Some(i) => {
                self.head_only.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Answers request `seq` with a stream head (`text/event-stream`); later bytes go through
    /// [`Conn::push_stream`]. No further request is parsed on this connection. A `HEAD`
    /// request gets the same head and then the connection closes (a stream has no length).
    pub fn start_stream(&mut self, seq: u64) {
        self.last_seq = Some(seq);
        let head = Response {
            status: 200,
            content_type: "text/event-stream",
            // Proxies that buffer (nginx) would hold events back without the second header.
            headers: vec![
                ("Cache-Control", "no-cache".to_string()),
                ("X-Accel-Buffering", "no".to_string()),
            ],
            body: Cow::Borrowed(&[]),
        };
        let head_only = self.take_head_only(seq);
        let mut bytes = Vec::new();
        serialize_into(&mut bytes, &head, true, true, head_only);
        if head_only {
            self.enqueue(seq, bytes, true);
            return;
        }
        self.streaming_pending = Some(seq);
        self.enqueue(seq, bytes, false);
    }

    fn enqueue(&mut self, seq: u64, bytes: Vec<u8>, close: bool) {
        if seq < self.write_seq || self.close_when_flushed {
            return;
        }
        self.parked.insert(seq, (bytes, close));
        self.drain_parked();
    }

    /// Moves parked answers whose turn has come into the output.
    fn drain_parked(&mut self) {
        while !self.close_when_flushed {
            let Some((bytes, close)) = self.parked.remove(&self.write_seq) else {
                break;
            };
            self.output.extend_from_slice(&bytes);
            self.advance(close);
        }
    }

    /// The answer to `write_seq` is in the output: the next one may follow (unless the
    /// connection closes after it, or it was the head of a stream).
    fn advance(&mut self, close: bool) {
        if self.streaming_pending == Some(self.write_seq) {
            self.streaming = !self.stream_ended;
            if self.stream_ended {
                self.close_when_flushed = true;
                self.parked.clear();
                return;
            }
        }
        self.write_seq += 1;
        if close {
            self.close_when_flushed = true;
            self.parked.clear();
        }
    }

    /// Appends stream bytes; ignored until the stream head has been queued.
    pub fn push_stream(&mut self, bytes: &[u8]) {
        if self.streaming {
            self.output.extend_from_slice(bytes);
        }
    }

    /// Ends a stream: once what was pushed is written, the connection closes
    /// ([`Conn::finished`]). Nothing is pushed after it.
    pub fn end_stream(&mut self) {
        if self.streaming {
            self.streaming = false;
            self.close_when_flushed = true;
        } else if self.streaming_pending.is_some() {
            self.stream_ended = true;
        }
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> &[u8] {
        &self.output[self.written..]
    }

    /// Marks `n` bytes of the pending output as written.
    pub fn consume_output(&mut self, n: usize) {
        self.written += n;
        if self.written == self.output.len() {
            if self.output.capacity() > KEPT_OUTPUT_CAPACITY {
                self.output = Vec::new();
            } else {
                self.output.clear();
            }
            self.written = 0;
        } else if self.written > 64 * 1024 && self.written * 2 > self.output.len() {
            self.output.drain(..self.written);
            self.written = 0;
        }
    }

    /// Whether everything is written and the connection should now close.
    pub fn finished(&self) -> bool {
        self.close_when_flushed && self.pending_output().is_empty()
    }

    /// Whether the connection has nothing in flight, nothing to write and no partial input.
    pub fn is_idle(&self) -> bool {
        self.in_flight() == 0 && self.pending_output().is_empty() && self.input.is_empty()
    }
}

/// The body length of a request from its `Content-Length` values (RFC 9110 §8.6:
/// `1*DIGIT`). No header means no body.
///
/// # Errors
/// What is wrong: a sign, a space or anything but digits, an empty value, a number that
/// does not fit in 64 bits, or more than one header (even identical ones: refusing is
/// simpler than deciding which copies agree, and no honest client sends two).
pub fn content_length<'a>(mut values: impl Iterator<Item = &'a str>) -> Result<u64, &'static str> {
    let Some(value) = values.next() else {
        return Ok(0);
    };
    if values.next().is_some() {
        return Err("more than one Content-Length header");
    }
    // Optional whitespace around a field value is not part of it (RFC 9110 §5.5).
    let digits = value.trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid Content-Length: it must be digits only");
    }
    digits
        .bytes()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or("invalid Content-Length: too large")
}

/// Appends a response head and body to `out` (`head_only`: the head a `HEAD` request gets,
/// with the `Content-Length` of the body it leaves out).
fn serialize_into(
    out: &mut Vec<u8>,
    response: &Response,
    close: bool,
    stream: bool,
    head_only: bool,
) {
    // Byte copies, not `write!`: this runs once per answer and formatting machinery was
    // most of its cost. One reservation for the whole answer.
    let body = if head_only { 0 } else { response.body.len() };
    out.reserve(160 + body);
    out.extend_from_slice(b"HTTP/1.1 ");
    match response.status {
        // The statuses sent are three digits.
        n @ 100..=999 => out.extend_from_slice(&[
            b'0' + (n / 100) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
            b' ',
        ]),
        n => {
            push_decimal(out, u64::from(n));
            out.push(b' ');
        }
    }
    out.extend_from_slice(reason(response.status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(response.content_type.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !stream {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, response.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &response.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&response.body);
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(crate::sys::decimal(n, &mut [0u8; 20]));
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head_bytes: 1024,
        max_body_bytes: 64,
        max_pipeline: 4,
    };

    #[test]
    fn header_fields_are_kept_in_order_with_lowercase_names() {
        // The head as it came (all UTF-8), and with a byte that is not UTF-8 in a value.
        for (bytes, shown) in [
            (&b"\xc3\xa9"[..], "\u{e9}"),
            (b"\xff\xc3\xa9", "\u{fffd}\u{e9}"),
        ] {
            let mut raw = b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX-Twice: 1\r\nX-EMPTY:\r\n\
                            x-twice: 2\r\nMcp-Session-Id: s\r\nX-Bytes: a"
                .to_vec();
            raw.extend_from_slice(bytes);
            raw.extend_from_slice(b"b\r\nX-Last:  v \r\n\r\n");
            let mut conn = Conn::new();
            conn.feed(&raw);
            let req = parse_one(&mut conn);
            let value = format!("a{shown}b");
            let fields: Vec<(&str, &str)> = req.headers.iter().collect();
            assert_eq!(
                fields,
                [
                    ("host", "a"),
                    ("x-twice", "1"),
                    ("x-empty", ""),
                    ("x-twice", "2"),
                    ("mcp-session-id", "s"),
                    // Bytes that are not UTF-8 become U+FFFD; the rest is kept as sent.
                    ("x-bytes", value.as_str()),
                    ("x-last", "v"),
                ]
            );
            assert_eq!(req.headers.len(), 7);
            // The first of a repeated header; any case asked; an empty value is a value.
            assert_eq!(req.header("x-twice"), Some("1"));
            assert_eq!(req.header("X-TWICE"), Some("1"));
            assert_eq!(req.header("x-empty"), Some(""));
            assert_eq!(req.header("Mcp-Session-Id"), Some("s"));
            assert_eq!(req.header("mcp-session-i"), None);
            assert_eq!(req.header("x-bytes"), Some(value.as_str()));
            // Shown as the list of pairs it used to be.
            assert_eq!(format!("{:?}", req.headers), format!("{fields:?}"));
            let built: Headers = req
                .headers
                .iter()
                .map(|(n, v)| (Cow::Owned(n.to_uppercase()), v.to_string()))
                .collect();
            assert_eq!(built, req.headers);
            let mut cleared = built.clone();
            cleared.clear();
            assert!(cleared.is_empty() && cleared.get("host").is_none());
            assert_ne!(cleared, req.headers);
        }
    }

    #[test]
    fn a_spare_request_is_reused_and_holds_nothing_of_the_one_before() {
        // Each parsed into the buffers of the one before (given back), and equal to the same
        // request parsed fresh: longer and shorter methods, paths, queries, heads and bodies,
        // a head that is not UTF-8 (copied field by field) before and after one that is.
        let raws: [&[u8]; 6] = [
            b"POST /a/long/path?q=1&r=2 HTTP/1.1\r\nHost: a\r\nX-Only-Here: 1\r\nContent-Length: 10\r\n\r\n0123456789",
            b"GET /b HTTP/1.0\r\n\r\n",
            b"PUT /c HTTP/1.1\r\nHost: a\r\nX-Bytes: \xff\r\nContent-Length: 2\r\n\r\n{}",
            b"HEAD /d?x HTTP/1.1\r\nHost: b\r\nX-Empty:\r\n\r\n",
            b"DELETE /e HTTP/1.1\r\nHost: a\r\nX-Bytes: \xfe\xff\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: c\r\n\r\n",
        ];
        let mut spares = Spares::default();
        let mut kept: Option<(*const u8, *const u8)> = None;
        for raw in raws {
            let mut conn = Conn::new();
            conn.feed(raw);
            let Some(Parsed::Request(0, req)) = conn.next_request_in(&LIMITS, &mut spares) else {
                panic!("{:?}", String::from_utf8_lossy(raw));
            };
            let mut fresh = Conn::new();
            fresh.feed(raw);
            assert_eq!(
                req,
                Box::new(parse_one(&mut fresh)),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
            if let Some(buffers) = kept {
                assert_eq!((req.body.as_ptr(), req.path.as_ptr()), buffers, "reused");
            }
            kept = Some((req.body.as_ptr(), req.path.as_ptr()));
            spares.put(req);
        }
    }

    #[test]
    fn spares_are_bounded_in_number_and_size() {
        let mut spares = Spares::default();
        for _ in 0..SPARE_REQUESTS + 2 {
            spares.put(Box::default());
        }
        assert_eq!(spares.0.len(), SPARE_REQUESTS);
        let sized = |n: usize| {
            Box::new(Request {
                body: Vec::with_capacity(n),
                ..Request::default()
            })
        };
        let mut spares = Spares::default();
        spares.put(sized(KEPT_REQUEST_CAPACITY + 1));
        assert!(spares.0.is_empty(), "a request a big body grew is let go");
        spares.put(sized(KEPT_REQUEST_CAPACITY / 2));
        assert_eq!(spares.0.len(), 1);
    }

    #[test]
    fn the_names_asked_on_every_request_are_found_as_by_a_scan() {
        // Every indexed name (and one more), asked as is and in another case, against the
        // first field of that name found by going through them all: heads parsed (one all
        // UTF-8, one copied field by field), built from pairs, reused, and cleared.
        let asked = [
            "host",
            "origin",
            "sec-fetch-site",
            "authorization",
            "content-type",
            "accept",
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
            "mcp-method",
            "mcp-name",
            "x-other",
            "content-length",
        ];
        let scan = |h: &Headers, name: &str| {
            h.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_string())
        };
        let check = |h: &Headers| {
            for name in asked {
                let want = scan(h, name);
                assert_eq!(h.get(name).map(str::to_string), want, "{name} in {h:?}");
                let upper = name.to_ascii_uppercase();
                assert_eq!(h.get(&upper).map(str::to_string), want, "{upper} in {h:?}");
            }
        };
        let heads: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\nHost: a\r\nAccept: x\r\nMCP-Session-Id: s1\r\nmcp-session-id: s2\r\nOrigin:\r\nX-Other: o\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: b\r\nX-Bytes: \xff\r\nAuthorization: Bearer t\r\nMcp-Name: n\r\nMcp-Method: m\r\nACCEPT: c\r\naccept: d\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nSec-Fetch-Site: none\r\nContent-Type: application/json\r\nLast-Event-Id: 7\r\nMcp-Protocol-Version: 2025-11-25\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for (slot, name) in asked[..INDEXED].iter().enumerate() {
            assert_eq!(indexed(name.as_bytes()), Some(slot), "{name}");
            let mut near = name.as_bytes().to_vec();
            if let Some(last) = near.last_mut() {
                *last ^= 1;
            }
            assert_eq!(indexed(&near), None, "{name}");
            assert_eq!(
                indexed(name.to_ascii_uppercase().as_bytes()),
                None,
                "{name}"
            );
        }
        assert_eq!(indexed(b""), None);
        let mut spares = Spares::default();
        for head in heads {
            let mut conn = Conn::new();
            conn.feed(head);
            let Some(Parsed::Request(_, req)) = conn.next_request_in(&LIMITS, &mut spares) else {
                panic!("{:?}", String::from_utf8_lossy(head));
            };
            check(&req.headers);
            let built: Headers = req
                .headers
                .iter()
                .map(|(n, v)| (Cow::Owned(n.to_string()), v.to_string()))
                .collect();
            check(&built);
            let mut cleared = built.clone();
            cleared.clear();
            check(&cleared);
            assert_eq!(cleared.get("host"), None);
            spares.put(req);
        }
    }

    #[test]
    fn the_largest_allowed_head_is_parsed_and_one_byte_more_is_431() {
        // Exactly max_head_bytes of request line and headers, then one byte more.
        let head = |size: usize| {
            let start = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
            let pad = size - start.len() - "\r\n\r\n".len();
            format!("{start}{}\r\n\r\n", "p".repeat(pad))
        };
        let mut conn = Conn::new();
        conn.feed(head(LIMITS.max_head_bytes).as_bytes());
        let req = parse_one(&mut conn);
        assert_eq!(
            req.header("x-pad").map(str::len),
            Some(LIMITS.max_head_bytes - 36)
        );
        assert_eq!(
            status_of(head(LIMITS.max_head_bytes + 1).as_bytes()),
            Some(431)
        );
        // As many fields as the parser takes, then one more.
        let fields = |n: usize| {
            let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
            for i in 1..n {
                raw.push_str(&format!("X-{i}: {i}\r\n"));
            }
            raw + "\r\n"
        };
        let limits = Limits {
            max_head_bytes: 4096,
            ..LIMITS
        };
        let mut conn = Conn::new();
        conn.feed(fields(64).as_bytes());
        match conn.next_request(&limits) {
            Some(Parsed::Request(_, r)) => {
                assert_eq!(r.headers.len(), 64);
                assert_eq!(r.header("x-63"), Some("63"));
            }
            other => panic!("{other:?}"),
        }
        let mut conn = Conn::new();
        conn.feed(fields(65).as_bytes());
        assert!(matches!(
            conn.next_request(&limits),
            Some(Parsed::Error(_, HttpError { status: 431, .. }))
        ));
    }

    #[test]
    fn connection_and_accept_are_read_as_before() {
        let keep = |raw: &[u8]| {
            let mut conn = Conn::new();
            conn.feed(raw);
            parse_one(&mut conn).keep_alive
        };
        assert!(keep(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!keep(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, CLOSE\r\n\r\n"
        ));
        assert!(!keep(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n"
        ));
        // Only the first Connection header counts, as before.
        assert!(keep(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(!keep(b"GET / HTTP/1.0\r\nConnection: clos\r\n\r\n"));
        for (hay, needle, found) in [
            ("a, Keep-Alive", "keep-alive", true),
            ("keep-aliv", "keep-alive", false),
            ("", "close", false),
            ("x", "", true),
            ("cclose", "close", true),
            ("CLOSE\u{e9}", "close", true),
            ("clos\u{e9}", "close", false),
        ] {
            assert_eq!(
                contains_ignore_case(hay, needle),
                found,
                "{hay:?} {needle:?}"
            );
            assert_eq!(hay.to_ascii_lowercase().contains(needle), found, "{hay:?}");
        }
        // Accept is matched as sent (case and all), as before.
        let accepts = |accept: &str| {
            let mut conn = Conn::new();
            conn.feed(format!("GET / HTTP/1.1\r\nHost: a\r\nAccept: {accept}\r\n\r\n").as_bytes());
            parse_one(&mut conn).accepts_event_stream()
        };
        assert!(accepts("application/json, text/event-stream"));
        assert!(!accepts("application/json, Text/Event-Stream"));
    }

    fn serialize(response: &Response, close: bool, stream: bool, head_only: bool) -> Vec<u8> {
        let mut out = Vec::new();
        serialize_into(&mut out, response, close, stream, head_only);
        out
    }

    fn parse_one(conn: &mut Conn) -> Request {
        match conn.next_request(&LIMITS) {
            Some(Parsed::Request(_, r)) => *r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn text(conn: &Conn) -> String {
        String::from_utf8_lossy(conn.pending_output()).into_owned()
    }

    #[test]
    fn answers_are_serialized_byte_for_byte() {
        let mut r = Response::json(200, b"{}".to_vec());
        r.headers.push(("Allow", "GET, POST".to_string()));
        assert_eq!(
            serialize(&r, false, false, false),
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
              Allow: GET, POST\r\n\r\n{}"
        );
        let r = Response::json(404, vec![b'x'; 12345]);
        assert_eq!(
            serialize(&r, true, false, true),
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
              Content-Length: 12345\r\nConnection: close\r\n\r\n"
        );
        // Any status the type holds is written whole.
        for status in [100, 999, 99, 1000, 0, u16::MAX] {
            let head = serialize(&Response::json(status, Vec::new()), false, false, false);
            assert!(
                head.starts_with(format!("HTTP/1.1 {status} ").as_bytes()),
                "{status}"
            );
        }
        let mut out = Vec::new();
        for n in [0, 7, 10, 99, 100, u64::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn parses_byte_by_byte() {
        let raw = b"POST /api/v1/config?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
        let mut conn = Conn::new();
        for (i, b) in raw.iter().enumerate() {
            conn.feed(&[*b]);
            if i + 1 < raw.len() {
                assert_eq!(conn.next_request(&LIMITS), None, "at byte {i}");
            }
        }
        let req = parse_one(&mut conn);
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/api/v1/config");
        assert_eq!(req.query, "x=1");
        assert_eq!(req.body, b"{}");
        assert!(req.keep_alive);
        assert_eq!(req.header("HOST"), Some("a"));
    }

    /// Every request `conn` parses until it has none, as (sequence, request).
    fn parse_all(conn: &mut Conn) -> Vec<(u64, Request)> {
        let mut out = Vec::new();
        while let Some(parsed) = conn.next_request(&LIMITS) {
            match parsed {
                Parsed::Request(seq, r) => out.push((seq, *r)),
                Parsed::Error(_, e) => panic!("{e:?}"),
            }
        }
        out
    }

    #[test]
    fn a_request_cut_in_two_anywhere_is_parsed_as_when_whole() {
        // Cut at every byte: within the request line, the fields, the blank line, the body, and
        // with the next (pipelined) request's head and body in the second piece.
        let first = &b"POST /a?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"[..];
        let second = &b"PUT /b HTTP/1.1\r\nhost: b\r\ncontent-length: 2\r\n\r\n{}"[..];
        let both = [first, second].concat();
        let mut whole = Conn::new();
        whole.feed(&both);
        let expected = parse_all(&mut whole);
        assert_eq!(expected.len(), 2);
        assert_eq!(expected[0].1.body, b"hello");
        for cut in 0..=both.len() {
            let mut conn = Conn::new();
            conn.feed(&both[..cut]);
            let mut got = parse_all(&mut conn);
            let before = got.len();
            let whole_ones = usize::from(cut >= first.len()) + usize::from(cut == both.len());
            assert_eq!(before, whole_ones, "cut at {cut}");
            conn.feed(&both[cut..]);
            got.extend(parse_all(&mut conn));
            assert_eq!(got, expected, "cut at {cut}");
            assert!(
                conn.waiting.is_none() && conn.input.is_empty(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_body_over_many_reads_follows_its_head_and_the_next_head_after_it_is_read_anew() {
        let mut conn = Conn::new();
        // The body (60 bytes, near the limit of 64) comes in pieces of 7; the next request's
        // head is in the same read as the body's last bytes, its own body comes later.
        let body: Vec<u8> = (0..60u8).map(|i| b'a' + i % 26).collect();
        conn.feed(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 60\r\n\r\n");
        for piece in body[..56].chunks(7) {
            assert_eq!(conn.next_request(&LIMITS), None);
            conn.feed(piece);
        }
        assert_eq!(conn.next_request(&LIMITS), None);
        conn.feed(&body[56..]);
        conn.feed(b"POST /next HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nx");
        let (seq, big) = match conn.next_request(&LIMITS) {
            Some(Parsed::Request(seq, r)) => (seq, r),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (seq, big.path.as_str(), &big.body[..]),
            (0, "/big", &body[..])
        );
        assert_eq!(
            conn.next_request(&LIMITS),
            None,
            "the next body is not all there"
        );
        conn.feed(b"yz");
        let next = parse_one(&mut conn);
        assert_eq!((next.path.as_str(), &next.body[..]), ("/next", &b"xyz"[..]));
        assert_eq!(next.header("host"), Some("b"));
        assert!(conn.input.is_empty());
    }

    #[test]
    fn a_head_too_large_for_its_body_is_refused_before_the_body_comes() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65\r\n\r\n";
        for cut in 1..raw.len() {
            let mut conn = Conn::new();
            conn.feed(&raw[..cut]);
            assert_eq!(conn.next_request(&LIMITS), None, "cut at {cut}");
            conn.feed(&raw[cut..]);
            assert!(
                matches!(
                    conn.next_request(&LIMITS),
                    Some(Parsed::Error(0, HttpError { status: 413, .. }))
                ),
                "cut at {cut}"
            );
            conn.feed(b"x");
            assert_eq!(
                conn.next_request(&LIMITS),
                None,
                "nothing after the refusal"
            );
        }
        // The largest body allowed, then one byte more than the head announced: the byte is
        // the start of the next request.
        let mut conn = Conn::new();
        conn.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 64\r\n\r\n");
        assert_eq!(conn.next_request(&LIMITS), None);
        conn.feed(&[b'b'; 65]);
        assert_eq!(parse_one(&mut conn).body.len(), 64);
        assert_eq!(conn.input, b"b");
    }

    #[test]
    fn continue_is_sent_once_the_request_before_is_answered() {
        let mut conn = Conn::new();
        conn.feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        conn.feed(
            b"PUT /b HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        );
        parse_one(&mut conn);
        assert_eq!(conn.next_request(&LIMITS), None);
        assert!(
            conn.pending_output().is_empty(),
            "not while /a is in flight"
        );
        conn.respond(0, &Response::json(200, b"{}".to_vec()), false);
        let n = conn.pending_output().len();
        conn.consume_output(n);
        assert_eq!(conn.next_request(&LIMITS), None);
        assert_eq!(text(&conn), "HTTP/1.1 100 Continue\r\n\r\n");
        conn.feed(b"{}");
        assert_eq!(parse_one(&mut conn).path, "/b");
    }

    #[test]
    fn an_upgrade_takes_the_bytes_after_it_with_a_head_waiting_for_its_body() {
        let mut conn = Conn::new();
        conn.feed(b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc");
        parse_one(&mut conn);
        assert_eq!(conn.next_request(&LIMITS), None);
        let tail = conn.take_input();
        assert!(tail.starts_with(b"POST /x") && tail.ends_with(b"abc"));
        assert!(conn.waiting.is_none());
    }

    #[test]
    fn the_target_splits_at_its_first_question_mark() {
        for (target, path, query) in [
            ("/a", "/a", ""),
            ("/a?", "/a", ""),
            ("/a?b?c", "/a", "b?c"),
            ("/?x=1&y", "/", "x=1&y"),
        ] {
            let mut conn = Conn::new();
            conn.feed(format!("GET {target} HTTP/1.1\r\nhOST: a\r\n\r\n").as_bytes());
            let req = parse_one(&mut conn);
            assert_eq!((req.path.as_str(), req.query.as_str()), (path, query));
        }
    }

    #[test]
    fn pipelined_answers_leave_in_order() {
        let mut conn = Conn::new();
        conn.feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut seqs = Vec::new();
        while let Some(Parsed::Request(seq, _)) = conn.next_request(&LIMITS) {
            seqs.push(seq);
        }
        assert_eq!(seqs, vec![0, 1, 2]);
        conn.respond(2, &Response::json(200, b"c".to_vec()), false);
        conn.respond(1, &Response::json(200, b"b".to_vec()), false);
        assert!(conn.pending_output().is_empty());
        conn.respond(0, &Response::json(200, b"a".to_vec()), false);
        let out = text(&conn);
        let (a, b, c) = (
            out.find("\r\n\r\na"),
            out.find("\r\n\r\nb"),
            out.find("\r\n\r\nc"),
        );
        assert!(a < b && b < c, "{out}");
        assert!(conn.is_idle() || !conn.pending_output().is_empty());
    }

    #[test]
    fn pipeline_depth_is_bounded() {
        let mut conn = Conn::new();
        for _ in 0..10 {
            conn.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        }
        let mut n = 0;
        while conn.next_request(&LIMITS).is_some() {
            n += 1;
        }
        assert_eq!(n, LIMITS.max_pipeline);
        // Reading goes on (its own bound holds the input), so a hang-up is still noticed.
        assert!(conn.wants_read(&LIMITS));
        conn.feed(&vec![b'x'; LIMITS.max_head_bytes + LIMITS.max_body_bytes]);
        assert!(!conn.wants_read(&LIMITS));
    }

    #[test]
    fn limits_give_431_413_411() {
        let mut conn = Conn::new();
        conn.feed(&vec![b'a'; 2000]);
        assert!(matches!(
            conn.next_request(&LIMITS),
            Some(Parsed::Error(0, HttpError { status: 431, .. }))
        ));
        assert_eq!(
            conn.next_request(&LIMITS),
            None,
            "nothing parsed after an error"
        );

        let mut conn = Conn::new();
        conn.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65\r\n\r\n");
        assert!(matches!(
            conn.next_request(&LIMITS),
            Some(Parsed::Error(_, HttpError { status: 413, .. }))
        ));

        let mut conn = Conn::new();
        conn.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(
            conn.next_request(&LIMITS),
            Some(Parsed::Error(_, HttpError { status: 411, .. }))
        ));

        let mut conn = Conn::new();
        conn.feed(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(matches!(
            conn.next_request(&LIMITS),
            Some(Parsed::Error(_, HttpError { status: 400, .. }))
        ));

        let mut conn = Conn::new();
        conn.feed(b"\x00\x01garbage\r\n\r\n");
        assert!(matches!(
            conn.next_request(&LIMITS),
            Some(Parsed::Error(_, HttpError { status: 400, .. }))
        ));
    }

    #[test]
    fn connection_close_and_http10() {
        let mut conn = Conn::new();
        conn.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n");
        let req = parse_one(&mut conn);
        assert!(!req.keep_alive);
        assert_eq!(conn.next_request(&LIMITS), None);
        conn.respond(0, &Response::json(200, b"{}".to_vec()), false);
        assert!(text(&conn).contains("Connection: close"));
        let n = conn.pending_output().len();
        conn.consume_output(n);
        assert!(conn.finished());

        let mut conn = Conn::new();
        conn.feed(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!parse_one(&mut conn).keep_alive);
    }

    #[test]
    fn expect_continue_is_answered_once() {
        let mut conn = Conn::new();
        conn.feed(
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        );
        assert_eq!(conn.next_request(&LIMITS), None);
        assert_eq!(conn.next_request(&LIMITS), None);
        assert_eq!(text(&conn), "HTTP/1.1 100 Continue\r\n\r\n");
        conn.feed(b"abcd");
        assert_eq!(parse_one(&mut conn).body, b"abcd");
    }

    #[test]
    fn stream_starts_at_once_when_nothing_is_pending() {
        let mut conn = Conn::new();
        conn.feed(b"GET /logs HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n");
        parse_one(&mut conn);
        conn.start_stream(0);
        assert!(conn.is_streaming());
        conn.push_stream(b"data: x\n\n");
        assert!(text(&conn).ends_with("data: x\n\n"));
    }

    #[test]
    fn stream_waits_for_earlier_answers() {
        let mut conn = Conn::new();
        conn.feed(
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /logs HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
        );
        parse_one(&mut conn);
        let req = parse_one(&mut conn);
        assert!(req.accepts_event_stream());
        conn.start_stream(1);
        conn.push_stream(b"data: early\n\n");
        assert!(!conn.is_streaming());
        conn.respond(0, &Response::json(200, b"{}".to_vec()), false);
        assert!(conn.is_streaming());
        conn.push_stream(b"data: x\n\n");
        let out = text(&conn);
        assert!(out.contains("text/event-stream") && out.ends_with("data: x\n\n"));
        assert!(!out.contains("early"));
        assert!(!conn.finished());
    }

    #[test]
    fn an_ended_stream_closes_once_written_even_before_its_head_went_out() {
        let mut conn = Conn::new();
        conn.feed(b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        parse_one(&mut conn);
        conn.start_stream(0);
        conn.push_stream(b"data: last\n\n");
        conn.end_stream();
        conn.push_stream(b"data: after\n\n");
        let out = text(&conn);
        assert!(out.ends_with("data: last\n\n"), "{out}");
        assert!(!conn.is_streaming() && !conn.finished());
        let n = conn.pending_output().len();
        conn.consume_output(n);
        assert!(conn.finished());

        // Ended while an earlier answer was still pending: it closes right after its head.
        let mut conn = Conn::new();
        conn.feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        parse_one(&mut conn);
        parse_one(&mut conn);
        conn.start_stream(1);
        conn.end_stream();
        conn.respond(0, &Response::json(200, b"{}".to_vec()), false);
        assert!(text(&conn).contains("text/event-stream"));
        assert!(!conn.is_streaming());
        let n = conn.pending_output().len();
        conn.consume_output(n);
        assert!(conn.finished());
    }

    fn status_of(raw: &[u8]) -> Option<u16> {
        let mut conn = Conn::new();
        conn.feed(raw);
        match conn.next_request(&LIMITS) {
            Some(Parsed::Error(_, e)) => Some(e.status),
            Some(Parsed::Request(..)) => None,
            None => Some(0),
        }
    }

    #[test]
    fn content_length_is_digits_once() {
        let one = |v: &str| content_length(std::iter::once(v));
        assert_eq!(one("2"), Ok(2));
        assert_eq!(one(" 2 "), Ok(2));
        assert_eq!(one("0"), Ok(0));
        assert_eq!(one("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(one("00042"), Ok(42));
        assert!(one("18446744073709551616").is_err());
        assert!(one("184467440737095516150").is_err());
        for bad in [
            "+2",
            "-1",
            "2 2",
            "",
            " ",
            "0x10",
            "2,2",
            "99999999999999999999999",
        ] {
            assert!(one(bad).is_err(), "{bad:?}");
        }
        assert_eq!(content_length(std::iter::empty()), Ok(0));
        assert!(content_length(["2", "2"].into_iter()).is_err());
        assert!(content_length(["1", "2"].into_iter()).is_err());
        for bad in ["+2", "-1", " 2 2", "99999999999999999999999", ""] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(status_of(raw.as_bytes()), Some(400), "{bad:?}");
        }
    }

    #[test]
    fn host_exactly_once_on_http11() {
        assert_eq!(
            status_of(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status_of(b"GET / HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(status_of(b"GET / HTTP/1.0\r\n\r\n"), None);
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
    }

    #[test]
    fn head_gets_the_head_without_the_body() {
        let mut conn = Conn::new();
        conn.feed(b"HEAD /a HTTP/1.1\r\nHost: a\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = parse_one(&mut conn);
        assert_eq!(head.method, "HEAD");
        parse_one(&mut conn);
        conn.respond(0, &Response::json(200, b"hello".to_vec()), false);
        conn.respond(1, &Response::json(200, b"hello".to_vec()), false);
        let out = text(&conn);
        let second_at = out[1..].find("HTTP/1.1 200").map(|i| i + 1);
        let (first, second) = out.split_at(second_at.expect("two answers"));
        assert!(first.contains("Content-Length: 5\r\n"), "{out}");
        assert!(
            first.ends_with("\r\n\r\n"),
            "no body after a HEAD head: {out}"
        );
        assert!(second.ends_with("\r\n\r\nhello"), "{out}");
    }

    #[test]
    fn head_of_a_stream_or_an_error_has_no_body() {
        let mut conn = Conn::new();
        conn.feed(b"HEAD /logs HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n");
        parse_one(&mut conn);
        conn.start_stream(0);
        conn.push_stream(b"data: x\n\n");
        assert!(!conn.is_streaming());
        let out = text(&conn);
        assert!(
            out.contains("text/event-stream") && out.ends_with("\r\n\r\n"),
            "{out}"
        );
        let n = conn.pending_output().len();
        conn.consume_output(n);
        assert!(conn.finished(), "a HEAD of a stream ends the connection");

        let mut conn = Conn::new();
        conn.feed(b"HEAD / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        let Some(Parsed::Error(seq, e)) = conn.next_request(&LIMITS) else {
            panic!("expected an error");
        };
        conn.respond(seq, &Response::json(e.status, b"{}".to_vec()), true);
        let out = text(&conn);
        assert!(
            out.starts_with("HTTP/1.1 400") && out.ends_with("\r\n\r\n"),
            "{out}"
        );
        assert!(out.contains("Content-Length: 2\r\n"), "{out}");
    }

    #[test]
    fn a_head_whose_body_arrives_late_is_remembered_once() {
        let mut conn = Conn::new();
        conn.feed(b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(conn.next_request(&LIMITS), None);
        assert_eq!(conn.next_request(&LIMITS), None);
        conn.feed(b"{}");
        parse_one(&mut conn);
        assert_eq!(conn.head_only, vec![0]);
        conn.respond(0, &Response::json(200, b"x".to_vec()), false);
        assert!(conn.head_only.is_empty());
    }

    #[test]
    fn one_request_at_a_time_holds_at_most_one_answer_over_the_bound() {
        // The daemon's setting: the next request is parsed once the previous is answered.
        let limits = Limits {
            max_pipeline: 1,
            ..LIMITS
        };
        let mut conn = Conn::new();
        for _ in 0..20 {
            conn.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        }
        let big = vec![b'x'; 300_000];
        let mut answered = 0;
        while let Some(Parsed::Request(seq, _)) = conn.next_request(&limits) {
            assert_eq!(conn.next_request(&limits), None, "one in flight");
            conn.respond(seq, &Response::json(200, big.clone()), false);
            answered += 1;
        }
        assert_eq!(answered, 4, "the fourth answer takes it over the bound");
        let held = conn.pending_output().len();
        assert!(held < MAX_BUFFERED_OUTPUT + big.len() + 200, "{held}");
        // Once written, the buffer of a burst is given back, not kept by the idle connection.
        conn.consume_output(held);
        assert!(conn.output.capacity() <= KEPT_OUTPUT_CAPACITY);
        assert!(matches!(
            conn.next_request(&limits),
            Some(Parsed::Request(4, _))
        ));
    }

    #[test]
    fn a_borrowed_body_goes_out_as_an_owned_one() {
        static DOC: &[u8] = b"{\"openapi\":\"3.1.0\"}";
        let mut conn = Conn::new();
        conn.feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        parse_one(&mut conn);
        let mut r = Response::json(200, Vec::new());
        r.body = Cow::Borrowed(DOC);
        conn.respond(0, &r, false);
        assert_eq!(
            text(&conn),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{\"openapi\":\"3.1.0\"}"
        );
    }

    #[test]
    fn unread_answers_stop_parsing_until_they_go_out() {
        let mut conn = Conn::new();
        for _ in 0..8 {
            conn.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        }
        let big = vec![b'x'; MAX_BUFFERED_OUTPUT / 2];
        let mut answered = 0;
        while let Some(Parsed::Request(seq, _)) = conn.next_request(&LIMITS) {
            conn.respond(seq, &Response::json(200, big.clone()), false);
            answered += 1;
        }
        assert_eq!(answered, 2, "the third waits for the first two to be read");
        assert!(conn.output_full() && !conn.wants_read(&LIMITS));
        let n = conn.pending_output().len();
        conn.consume_output(n);
        assert!(conn.wants_read(&LIMITS));
        assert!(matches!(
            conn.next_request(&LIMITS),
            Some(Parsed::Request(2, _))
        ));
    }
}
