//! The HTTP and WebSocket layer under attack, through the real binary and raw sockets: strict
//! framing (HEAD, Content-Length, Host), connection slots (per-peer limit, eviction), and
//! WebSocket clients that never read.
//!
//! Every daemon here has a token configured and every TCP request but `GET /api/v1/health`
//! sends it, with a JSON content type on bodies, so the tests hold whatever the access rules.

use crate::util::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const TOKEN: &str = "n3t-http-T0ken-0123456789";

fn config(extra: &str) -> String {
    format!("[security]\napi_token = \"{TOKEN}\"\n{extra}")
}

fn start(extra: &str) -> Daemon {
    Daemon::start_with(Setup {
        config: Some(config(extra)),
        ..Setup::default()
    })
}

fn addr(d: &Daemon) -> SocketAddr {
    d.http.expect("the daemon reports its TCP address")
}

fn connect(d: &Daemon) -> TcpStream {
    let s = TcpStream::connect(addr(d)).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// A request with Host and token (and a JSON body when given).
fn request(method: &str, path: &str, body: Option<&str>, close: bool) -> String {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n");
    if let Some(b) = body {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body.unwrap_or(""));
    r
}

/// Writes `raw` on a fresh connection and reads until the daemon closes it.
fn exchange(d: &Daemon, raw: &[u8]) -> Vec<u8> {
    let mut s = connect(d);
    s.write_all(raw).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// One response parsed off the front of `raw`: status, head, body (by Content-Length, or the
/// rest without one) and the bytes after it.
fn take_response(raw: &[u8]) -> (u16, String, Vec<u8>, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rest = &raw[end + 4..];
    let len = content_length(&head).unwrap_or(rest.len()).min(rest.len());
    (status, head, rest[..len].to_vec(), &rest[len..])
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .and_then(|v| v.trim().parse().ok())
    })
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

// ----- 1. HEAD ----------------------------------------------------------------------------------

/// HEAD then GET of the same path, pipelined on one connection: the HEAD answer is a head
/// only, with the Content-Length of the body a GET gets, and the GET behind it is answered
/// intact (a body after the HEAD head would be read as the next answer: a desync).
fn head_then_get(d: &Daemon, path: &str, want: u16) {
    let mut raw = request("HEAD", path, None, false);
    raw.push_str(&request("GET", path, None, true));
    let all = exchange(d, raw.as_bytes());
    let text = String::from_utf8_lossy(&all).into_owned();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let after = &all[end + 4..];
    assert!(
        head.starts_with(&format!("HTTP/1.1 {want} ")),
        "{path}: {text}"
    );
    assert!(
        after.starts_with(b"HTTP/1.1 "),
        "{path}: the HEAD answer carried a body:\n{text}"
    );
    let head_len = content_length(&head).expect("HEAD has the GET's Content-Length");
    let (status, get_head, body, rest) = take_response(after);
    assert_eq!(status, want, "{path}: {text}");
    assert!(
        rest.is_empty(),
        "{path}: bytes after the GET answer:\n{text}"
    );
    assert_eq!(content_length(&get_head), Some(body.len()), "{text}");
    // The two answers differ in timestamps, request ids and counters, not in kind.
    let slack = 64 + body.len() / 10;
    assert!(
        head_len > 0 && head_len.abs_diff(body.len()) <= slack,
        "{path}: HEAD says {head_len} bytes, GET sent {}",
        body.len()
    );
    let ct = |h: &str| {
        h.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
            .map(str::to_string)
    };
    assert_eq!(ct(&head), ct(&get_head), "{path}");
}

#[test]
fn head_answers_the_get_head_without_a_body() {
    let d = start("");
    head_then_get(&d, "/api/v1/health", 200);
    head_then_get(&d, "/api/v1/status", 200);
    // The first HEAD and GET of /metrics add their own series to it: warm those up so the
    // two answers compared below differ in counter values only.
    let mut warm = request("HEAD", "/metrics", None, false);
    warm.push_str(&request("GET", "/metrics", None, true));
    exchange(&d, warm.as_bytes());
    head_then_get(&d, "/metrics", 200);
    head_then_get(&d, "/api/v1/openapi.json", 200);
    head_then_get(&d, "/api/v1/no-such-route", 404);
    // The monitor's plain GET is a 426 (and closes); so is its HEAD, which cannot switch
    // protocols, even when it asks to.
    let mut raw = request("HEAD", "/ws/monitor", None, false);
    raw = raw.replacen(
        "\r\n\r\n",
        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        1,
    );
    let all = exchange(&d, raw.as_bytes());
    let (status, head, body, _) = take_response(&all);
    assert_eq!(status, 426, "{}", String::from_utf8_lossy(&all));
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&all));
    assert!(content_length(&head).is_some_and(|n| n > 0), "{head}");
    // Over the control socket too.
    let raw = raw_exchange(
        &d.socket,
        b"HEAD /api/v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    assert!(
        raw[end + 4..].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // A POST-only route: 405 naming the methods, still without a body.
    let raw = exchange(
        &d,
        request("HEAD", "/api/v1/config/reload", None, true).as_bytes(),
    );
    let (status, head, body, _) = take_response(&raw);
    assert_eq!(status, 405, "{head}");
    assert!(head.contains("Allow: POST"), "{head}");
    assert!(body.is_empty(), "{}", String::from_utf8_lossy(&raw));
    assert!(content_length(&head).is_some_and(|n| n > 0), "{head}");
    // A 405 on a GET route lists HEAD beside GET (a DELETE over TCP must declare JSON).
    let raw = exchange(
        &d,
        request("DELETE", "/api/v1/status", Some(""), true).as_bytes(),
    );
    let (status, head, _, _) = take_response(&raw);
    assert_eq!(status, 405, "{head}");
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
}

#[test]
fn head_of_an_event_stream_is_the_stream_head_then_close() {
    let d = start("");
    let mut raw = request("HEAD", "/api/v1/logs", None, false);
    raw = raw.replacen("\r\n\r\n", "\r\nAccept: text/event-stream\r\n\r\n", 1);
    let all = exchange(&d, raw.as_bytes());
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "no stream bytes after a HEAD: {text}"
    );
}

// ----- 2. Content-Length ------------------------------------------------------------------------

#[test]
fn content_length_must_be_plain_digits_and_sent_once() {
    let d = start("");
    let heads = [
        "Content-Length: +2\r\n",
        "Content-Length: -1\r\n",
        "Content-Length:  2 2\r\n",
        "Content-Length: 99999999999999999999999\r\n",
        "Content-Length: \r\n",
        "Content-Length: 2\r\nContent-Length: 3\r\n",
        "Content-Length: 2\r\nContent-Length: 2\r\n",
    ];
    for cl in heads {
        let raw = format!(
            "POST /api/v1/config/reload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n{cl}\r\n{{}}"
        );
        let mut s = connect(&d);
        s.write_all(raw.as_bytes()).expect("write");
        let mut all = Vec::new();
        // The daemon answers and closes: read_to_end returns (a hang would time out).
        s.read_to_end(&mut all)
            .expect("the daemon closes the connection");
        let (status, head, body, rest) = take_response(&all);
        assert_eq!(status, 400, "{cl:?}: {}", String::from_utf8_lossy(&all));
        assert_eq!(error_code(&body), "bad_request", "{cl:?}");
        assert!(head.contains("Connection: close"), "{cl:?}: {head}");
        assert!(rest.is_empty(), "{cl:?}: one answer only");
    }
    // A well-formed one still works.
    let raw = request("POST", "/api/v1/config/reload", Some("{}"), true);
    let (status, _, body, _) = take_response(&exchange(&d, raw.as_bytes()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

// ----- 3. Host ----------------------------------------------------------------------------------

#[test]
fn host_must_be_sent_exactly_once() {
    let d = start("");
    let two = format!(
        "GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let none = format!("GET /api/v1/status HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    for (what, raw) in [("two Host headers", &two), ("no Host", &none)] {
        let all = exchange(&d, raw.as_bytes());
        let (status, head, body, _) = take_response(&all);
        assert_eq!(status, 400, "{what}: {}", String::from_utf8_lossy(&all));
        assert_eq!(error_code(&body), "bad_request", "{what}");
        assert!(head.contains("Connection: close"), "{what}: {head}");
        // Over the control socket the same parser answers the same way.
        let all = raw_exchange(&d.socket, raw.as_bytes());
        assert_eq!(
            take_response(&all).0,
            400,
            "{what} (control socket): {}",
            String::from_utf8_lossy(&all)
        );
    }
    // HTTP/1.0 has no Host requirement (the control socket does not check names).
    let all = raw_exchange(&d.socket, b"GET /api/v1/health HTTP/1.0\r\n\r\n");
    assert_eq!(
        take_response(&all).0,
        200,
        "{}",
        String::from_utf8_lossy(&all)
    );
}

// ----- a request and the client's close in one breath --------------------------------------------

/// Sends a whole request and shuts its own sending side at once (what `nc -N` or a script's
/// `printf | socat` does), so that the bytes and the FIN usually reach the daemon in one
/// readiness event; then reads until the daemon closes. The daemon stops reading a socket at a
/// short read unless the event also reported the peer's end: this proves that end is not lost.
fn half_closed_exchange<S: Read + Write>(mut s: S, shut: impl FnOnce(&S)) -> Vec<u8> {
    s.write_all(request("GET", "/api/v1/health", None, false).as_bytes())
        .expect("write");
    shut(&s);
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    assert!(
        read.is_ok(),
        "the daemon kept the half-closed connection open ({read:?}) after {} bytes",
        out.len()
    );
    out
}

#[test]
fn a_request_followed_at_once_by_the_clients_close_is_answered_and_the_connection_closed() {
    // No idle timeout could end these connections within the test's patience: only the
    // client's end of input can.
    let d = start("[http]\nidle_timeout_ms = 3600000\n");
    for round in 0..20 {
        let tcp = connect(&d);
        let out = half_closed_exchange(tcp, |s| {
            s.shutdown(std::net::Shutdown::Write).expect("shutdown")
        });
        let (status, _, _, rest) = take_response(&out);
        assert_eq!(status, 200, "round {round} over TCP");
        assert!(rest.is_empty(), "round {round}: one answer only");
        let unix = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect the socket");
        unix.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let out = half_closed_exchange(unix, |s| {
            s.shutdown(std::net::Shutdown::Write).expect("shutdown")
        });
        let (status, _, _, _) = take_response(&out);
        assert_eq!(status, 200, "round {round} on the control socket");
    }
}

// ----- 5. a WebSocket client that never reads ----------------------------------------------------

type Ws = tungstenite::WebSocket<TcpStream>;

/// Shrinks a client's receive buffer so that the kernel absorbs little of what it does not read.
fn small_receive_buffer(s: &TcpStream) {
    let size: libc::c_int = 16 * 1024;
    // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
}

/// Opens `/ws/monitor` with the token on a socket with a small receive buffer (so the kernel
/// absorbs little), subscribes to `logs` and reads the answer. From then on it never reads.
fn silent_logs_subscriber(d: &Daemon) -> Ws {
    let a = addr(d);
    let s = connect(d);
    small_receive_buffer(&s);
    let url = format!("ws://{a}/ws/monitor?token={TOKEN}");
    let (mut ws, _) = tungstenite::client(url.as_str(), s).expect("WebSocket accepted");
    ws.send(tungstenite::Message::text(
        r#"{"id": "sub", "command": "subscribe", "channels": ["logs"]}"#,
    ))
    .expect("subscribe");
    loop {
        let m = ws.read().expect("the subscription answer");
        let v: Value = serde_json::from_str(m.to_text().unwrap_or("null")).unwrap_or(Value::Null);
        if v["id"] == "sub" {
            assert_eq!(v["status"], "success", "{v}");
            return ws;
        }
    }
}

/// `vsm_ws_clients_closed_slow_total`, read over the control socket.
fn closed_slow(d: &Daemon) -> f64 {
    let raw = raw_exchange(
        &d.socket,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let (_, _, body) = split_response(&raw);
    body.lines()
        .find_map(|l| l.strip_prefix("vsm_ws_clients_closed_slow_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_logs_subscriber_that_never_reads_is_closed_with_1008_after_the_stall_limit() {
    // The flood runs at the highest rate configuration allows (10,000 lines/s, about 5 MB/s):
    // the buffers between the daemon and the client fill within a second or two even on a
    // loaded machine, so the stall clock starts early; at 1,000 lines/s filling them took
    // over 20 s under load and the keep-alive close could come first.
    let d = start("[mcp_servers]\nstderr_lines_per_second = 10000\n");
    let mut ws = silent_logs_subscriber(&d);
    // The client's last frame went out now: the keep-alive path would act 30 s from here.
    let silent_since = Instant::now();
    // Log traffic: an "MCP server" that floods stderr with 500-byte lines. It never answers initialize; it does not matter.
    // The shell stays (no `exec`) and keeps its stdout open: a closed stdout ends the run at
    // once, and the flood would come in short bursts between restarts.
    let spec = serde_json::json!({"id": "chatter", "command": "sh",
        "args": ["-c", "yes $(printf %0500d 0) 1>&2; sleep 3600"], "autostart": true});
    let (code, v) = d.http("POST", "/api/v1/mcp/servers", Some(&spec.to_string()));
    assert_eq!(code, 200, "{v}");
    // Closed for stalling well before the keep-alive path (30 s) could have closed it: the
    // stall limit is 10 s from when its data stopped draining, which is soon after the flood
    // began. The deadline is generous for a loaded machine and still short of the old keep-alive
    // close at about 41 s; it is a condition, not a timing.
    let deadline = silent_since + Duration::from_secs(36);
    let closed_at = loop {
        if closed_slow(&d) >= 1.0 {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the silent subscriber was not closed for stalling within 36 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "silent WebSocket subscriber closed for stalling after {:.1} s",
        closed_at.duration_since(silent_since).as_secs_f64()
    );
    let (code, v) = d.http("DELETE", "/api/v1/mcp/servers/chatter", None);
    assert_eq!(code, 200, "{v}");
    // Now it reads: the records that were on their way, then the close frame with 1008.
    let mut records = 0u64;
    let end = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| f.code),
            Ok(_) => records += 1,
            Err(e) => panic!("ended without a close frame after {records} messages: {e}"),
        }
    };
    assert_eq!(
        end,
        Some(tungstenite::protocol::frame::coding::CloseCode::Policy),
        "after {records} messages"
    );
    let (code, _) = d.http("GET", "/api/v1/health", None);
    assert_eq!(code, 200);
}

// ----- 4. connection slots -----------------------------------------------------------------------

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all loopback on
/// Linux, so each address is another peer for the daemon).
fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let SocketAddr::V4(to) = to else {
        panic!("the daemon listens on IPv4 loopback")
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2) call; the fd is owned by the TcpStream below or closed here.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a socket we own; it is closed by the TcpStream on every path below.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let local = sin(from, 0);
    let remote = sin(*to.ip(), to.port());
    // SAFETY: the addresses are valid sockaddr_in values of the length passed.
    let rc = unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) };
    assert_eq!(rc, 0, "bind {from}: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let rc = unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) };
    assert_eq!(
        rc,
        0,
        "connect from {from}: {}",
        std::io::Error::last_os_error()
    );
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

/// `GET /api/v1/status?detailed=true` over the control socket: the loop statistics.
fn loop_stats(d: &Daemon) -> Value {
    let (code, v) = d.http("GET", "/api/v1/status?detailed=true", None);
    assert_eq!(code, 200, "{v}");
    v["data"]["loop"].clone()
}

/// One request on a fresh TCP connection from `from`; the status, or 0 when the connection
/// ended without an answer.
fn status_from(d: &Daemon, from: std::net::Ipv4Addr) -> u16 {
    let mut s = connect_from(from, addr(d));
    let raw = request("GET", "/api/v1/status", None, true);
    if s.write_all(raw.as_bytes()).is_err() {
        return 0;
    }
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    if all.is_empty() {
        return 0;
    }
    take_response(&all).0
}

const LOCALHOST: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

#[test]
fn idle_sockets_from_one_address_do_not_lock_out_a_client_from_it() {
    let d = start("");
    let a = addr(&d);
    // 300 sockets that never send a byte, all from 127.0.0.1 (more than the whole listener).
    let idle: Vec<TcpStream> = (0..300).map(|_| connect_from(LOCALHOST, a)).collect();
    let stats = wait_until(
        "the daemon to take in the 300 sockets",
        || loop_stats(&d),
        |v| v["connections_accepted"].as_u64() >= Some(300),
        |v| format!("{v:#}"),
    );
    // At most the per-peer limit (64 by default) of them hold a slot: every socket beyond it
    // pushed out the oldest waiting one of the same address.
    assert!(stats["connections_tcp"].as_u64() <= Some(64), "{stats:#}");
    assert!(
        stats["connections_evicted"]["peer_limit"].as_u64() >= Some(236),
        "{stats:#}"
    );
    // A normal client on the same address, while the idle sockets stay open.
    let statuses: Vec<u16> = (0..100).map(|_| status_from(&d, LOCALHOST)).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    eprintln!("{ok} of 100 requests got 200 beside 300 idle sockets from the same address");
    assert_eq!(ok, 100, "statuses: {statuses:?}");
    let refused = loop_stats(&d)["connections_refused"].clone();
    assert_eq!(refused["peer_limit"], 0, "{refused}");
    assert_eq!(refused["listener_full"], 0, "{refused}");
    drop(idle);
}

#[test]
fn a_full_listener_evicts_the_longest_waiting_connection_for_a_new_client() {
    let d = start("[http]\nmax_connections = 32\nmax_connections_per_peer = 8\n");
    let a = addr(&d);
    // Four loopback addresses fill the listener with idle sockets, 8 each.
    let mut idle = Vec::new();
    for n in 2..6u8 {
        for _ in 0..8 {
            idle.push(connect_from(std::net::Ipv4Addr::new(127, 0, 0, n), a));
        }
    }
    wait_until(
        "the listener to be full",
        || loop_stats(&d),
        |v| v["connections_tcp"].as_u64() == Some(32),
        |v| format!("{v:#}"),
    );
    // A fifth address is under its own limit but the listener is full: the longest waiting
    // socket (the first from 127.0.0.2) makes room.
    assert_eq!(status_from(&d, std::net::Ipv4Addr::new(127, 0, 0, 6)), 200);
    let stats = loop_stats(&d);
    assert!(
        stats["connections_evicted"]["listener_full"].as_u64() >= Some(1),
        "{stats:#}"
    );
    let mut first = idle.remove(0);
    let mut buf = [0u8; 16];
    assert!(
        matches!(first.read(&mut buf), Ok(0) | Err(_)),
        "the oldest idle socket was the one closed"
    );
    // The metric says so too.
    let raw = raw_exchange(
        &d.socket,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let (_, _, body) = split_response(&raw);
    let evicted = body
        .lines()
        .find_map(|l| {
            l.strip_prefix("vsm_http_connections_evicted_total{reason=\"listener_full\"} ")
        })
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(evicted >= Some(1.0), "{body}");
}

#[test]
fn busy_connections_are_kept_and_only_then_a_new_one_gets_503() {
    let d = start("[http]\nmax_connections = 4\n");
    // Four event streams: busy, never evicted for idleness.
    let mut streams: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&d);
            let raw = request("GET", "/api/v1/events", None, false).replacen(
                "\r\n\r\n",
                "\r\nAccept: text/event-stream\r\n\r\n",
                1,
            );
            s.write_all(raw.as_bytes()).expect("write");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                assert_eq!(s.read(&mut byte).expect("stream head"), 1, "stream head");
                head.push(byte[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 200"));
            s
        })
        .collect();
    let all = exchange(&d, request("GET", "/api/v1/health", None, true).as_bytes());
    let (status, head, body, _) = take_response(&all);
    assert_eq!(status, 503, "{head}");
    assert_eq!(error_code(&body), "busy");
    assert!(head.contains("Retry-After"), "{head}");
    let stats = loop_stats(&d);
    assert_eq!(stats["connections_tcp"], 4, "{stats:#}");
    assert!(
        stats["connections_refused"]["listener_full"].as_u64() >= Some(1),
        "{stats:#}"
    );
    assert_eq!(
        stats["connections_evicted"]["listener_full"], 0,
        "{stats:#}"
    );
    // The control socket has slots of its own.
    assert_eq!(d.http("GET", "/api/v1/health", None).0, 200);
    // A stream ends: its slot is free again.
    drop(streams.pop());
    wait_until(
        "a free slot",
        || {
            take_response(&exchange(
                &d,
                request("GET", "/api/v1/health", None, true).as_bytes(),
            ))
            .0
        },
        |s| *s == 200,
        |s| format!("last status {s}"),
    );
}

// ----- answers a client does not read ------------------------------------------------------------

/// `vsm_http_requests_total` of one route and method, over the control socket.
fn requests_counted(d: &Daemon, route: &str, method: &str) -> f64 {
    let raw = raw_exchange(
        &d.socket,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let (_, _, body) = split_response(&raw);
    let prefix = format!("vsm_http_requests_total{{route=\"{route}\",method=\"{method}\",");
    body.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn answers_a_client_does_not_read_are_bounded_and_all_arrive_once_it_reads() {
    // A client that does not read is closed after the idle timeout: far away here, so that a
    // loaded machine's slow polls below cannot end the connection.
    let d = start("[http]\nidle_timeout_ms = 300000\n");
    let rss = |d: &Daemon| loop_stats(d)["rss_bytes"].as_u64().unwrap_or(0);
    // The document is built once, on its first request: that memory is the daemon's, not
    // this connection's, so it is spent before the measurement starts.
    let mut warm = connect(&d);
    warm.write_all(request("GET", "/api/v1/openapi.json", None, true).as_bytes())
        .expect("write");
    let mut one = Vec::new();
    warm.read_to_end(&mut one).expect("one answer");
    let (status, _, body, _) = take_response(&one);
    assert_eq!(status, 200);
    let answer = one.len();
    assert!(body.len() > 300_000, "the document is big: {}", body.len());
    let before = rss(&d);
    // 200 pipelined requests for a 314 KB answer (the document grew with the variety,
    // discovery, acquisition, VSM and reflection rows): 63 MB if every answer were buffered.
    let n = 200;
    let mut raw = request("GET", "/api/v1/openapi.json", None, false).repeat(n - 1);
    raw.push_str(&request("GET", "/api/v1/openapi.json", None, true));
    let mut s = connect(&d);
    small_receive_buffer(&s);
    s.write_all(raw.as_bytes())
        .expect("the requests fit in the socket buffers");
    // The client does not read. The daemon answers what the kernel buffers and its own
    // output bound take, then waits; watch it for 15 polls (absence needs some waiting).
    let mut peak = before;
    let mut answered = 0.0;
    for _ in 0..15 {
        answered = requests_counted(&d, "/api/v1/openapi.json", "GET") - 1.0;
        peak = peak.max(rss(&d));
        if answered >= n as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{answered} of {n} answered while the client did not read; RSS grew by {} KiB",
        grown / 1024
    );
    assert!(
        answered < n as f64,
        "every answer was produced although the client read none"
    );
    // One request at a time, and none while 1 MiB of answers is unsent: the connection holds
    // at most that bound plus one answer (what the kernel's socket buffers took is not ours).
    // A megabyte more for the allocator. With 32 requests in flight it grew by 11 MB here.
    let promised = vsm_daemon::net::http::MAX_BUFFERED_OUTPUT + answer;
    let peak = loop_stats(&d)["connections_unsent_peak_bytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        peak <= promised as u64,
        "a connection held {peak} bytes unsent; the bound promises {promised}"
    );
    assert!(
        grown < (promised + 1024 * 1024) as u64,
        "RSS grew by {grown} bytes; the connection may hold {promised}"
    );
    // Now it reads: every answer arrives, in order, none lost to the pause.
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read to the end");
    let mut rest = &all[..];
    let mut got = 0;
    while !rest.is_empty() {
        let (status, head, body, after) = take_response(rest);
        assert_eq!(status, 200, "answer {got}: {head}");
        assert!(body.starts_with(b"{"), "answer {got}");
        rest = after;
        got += 1;
    }
    assert_eq!(got, n);
}

#[test]
fn a_log_stream_far_behind_is_sent_in_chunks_its_backlog_bound_holds() {
    // 40 000 stderr lines of 100 bytes, all let through to the log (the rate limiter's burst is
    // five seconds' worth): about 8 MB of SSE records waiting in the log buffer, which has room
    // for all of them (none is dropped while the follower waits).
    use std::io::BufRead;
    let d = start(
        "[daemon]\nlog_buffer_lines = 50000\n[mcp_servers]\nstderr_lines_per_second = 10000\n",
    );
    let fixture = format!(
        "{}/tests/fixtures/mcp_fixture.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let spec = serde_json::json!({"id": "noisy", "command": "python3",
        "args": [fixture, "--stderr-at-start", "4000000"]});
    let (code, v) = d.http("POST", "/api/v1/mcp/servers", Some(&spec.to_string()));
    assert_eq!(code, 200, "{v}");
    let logged = |d: &Daemon| {
        d.http("GET", "/api/v1/logs?lines=0", None).1["data"]["last_seq"]
            .as_u64()
            .unwrap_or(0)
    };
    let last = wait_until(
        "40 000 records logged",
        || logged(&d),
        |n| *n >= 40_000,
        |n| format!("{n}"),
    );
    let rss = |d: &Daemon| loop_stats(d)["rss_bytes"].as_u64().unwrap_or(0);
    let before = rss(&d);
    // A follower asking for the whole buffer, on a socket it does not read.
    let mut s = connect(&d);
    small_receive_buffer(&s);
    let mut raw = request(
        "GET",
        "/api/v1/logs?lines=100000&component=mcp",
        None,
        false,
    );
    raw = raw.replacen("\r\n\r\n", "\r\nAccept: text/event-stream\r\n\r\n", 1);
    s.write_all(raw.as_bytes()).expect("write");
    wait_until(
        "the follower",
        || loop_stats(&d)["log_followers"].as_u64(),
        |n| *n == Some(1),
        |n| format!("{n:?}"),
    );
    // It takes chunks while under its 1 MiB bound, and the kernel takes what it can: wait until
    // the stream is held up at its bound (or the whole buffer was sent: that fails below).
    let unsent = |d: &Daemon| {
        loop_stats(d)["connections_unsent_peak_bytes"]
            .as_u64()
            .unwrap_or(0)
    };
    let limit = vsm_daemon::net::STREAM_BACKLOG_LIMIT as u64;
    let peak = wait_until(
        "the stream to wait on its client",
        || unsent(&d),
        |n| *n >= limit / 2,
        |n| format!("{n} bytes unsent"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let peak = peak.max(unsent(&d));
    let grown = rss(&d).saturating_sub(before);
    eprintln!(
        "the stream held {} KiB unsent at most; RSS grew by {} KiB",
        peak / 1024,
        grown / 1024
    );
    // At most the bound plus one record over it; all at once, it held the rest of the buffer
    // (about 4 MB once the kernel had taken its share).
    assert!(peak <= limit + 4096, "{peak} bytes unsent");
    // Now it reads: every record arrives, in order, up to the newest one logged before.
    let mut lines = std::io::BufReader::new(s).lines();
    let mut ids = Vec::new();
    while ids.last().is_none_or(|id| *id < last) {
        let line = match lines.next() {
            Some(Ok(l)) => l,
            other => panic!("the stream ended after {} records: {other:?}", ids.len()),
        };
        assert!(!line.starts_with("event: dropped"), "nothing is dropped");
        if let Some(id) = line.strip_prefix("id: ") {
            ids.push(id.parse::<u64>().expect("a numeric id"));
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(ids.len() >= 39_000, "{} records", ids.len());
}

// ----- one request after another on a keep-alive connection -------------------------------------

/// Reads the answer to the one request sent on a keep-alive connection.
fn answer_on(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            let len = content_length(&head).expect("a Content-Length");
            if buf.len() >= end + 4 + len {
                let (status, _, body, rest) = take_response(&buf);
                assert!(rest.is_empty(), "one answer only");
                let text = String::from_utf8_lossy(&body).into_owned();
                return (status, text);
            }
        }
        let n = s.read(&mut chunk).expect("read an answer");
        assert!(n > 0, "closed before the answer was whole");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn each_request_on_a_keep_alive_connection_is_read_afresh() {
    // The daemon parses a connection's next request into the buffers of one it has answered:
    // nothing of a request may show in the next one (a token, a body, a longer path, method
    // or query), however the lengths go.
    let d = start("");
    let mut s = connect(&d);
    let mut ask = |raw: String| {
        s.write_all(raw.as_bytes()).expect("write");
        answer_on(&mut s)
    };
    let message = |body: &str| {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        v["errors"][0]["message"].as_str().unwrap_or("").to_string()
    };
    let long = "/api/v1/no-such-route-with-a-rather-long-name?and=a&query=string";
    let (status, body) = ask(request("GET", long, None, false));
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        message(&body),
        "no route for /api/v1/no-such-route-with-a-rather-long-name"
    );
    let (status, body) = ask(request("GET", "/api/v1/x", None, false));
    assert_eq!(
        (status, message(&body).as_str()),
        (404, "no route for /api/v1/x")
    );
    // The token came with the requests before; this one has none of its own.
    let (status, body) = ask("GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n".into());
    assert_eq!(
        (status, error_code(body.as_bytes()).as_str()),
        (401, "unauthorized"),
        "{body}"
    );
    let call = "/api/v1/mcp/servers/none/tools/call";
    let (status, body) = ask(request(
        "POST",
        call,
        Some(r#"{"name":"t","arguments":{}}"#),
        false,
    ));
    assert_ne!(status, 400, "{body}");
    let (status, body) = ask(request("POST", call, Some("[]"), false));
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "the body must be a JSON object"),
        "{body}"
    );
    let (status, body) = ask(request("DELETE", "/api/v1/health", Some(""), false));
    assert_eq!(
        (status, message(&body).as_str()),
        (405, "/api/v1/health does not accept DELETE"),
        "{body}"
    );
    let (status, body) = ask(request("GET", "/api/v1/health", None, false));
    assert_eq!(status, 200, "{body}");
    // A head whose body comes in later reads (the daemon keeps the parsed head meanwhile),
    // then a request whole again.
    let raw = request("POST", call, Some("[1, 2, 3, 4]"), false);
    let (head, body) = raw.split_at(raw.len() - 12);
    s.set_nodelay(true).expect("nodelay");
    for piece in [head, &body[..5], &body[5..]] {
        s.write_all(piece.as_bytes()).expect("write");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = answer_on(&mut s);
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "the body must be a JSON object"),
        "{body}"
    );
    s.write_all(request("GET", "/api/v1/x", None, false).as_bytes())
        .expect("write");
    let (status, body) = answer_on(&mut s);
    assert_eq!(
        (status, message(&body).as_str()),
        (404, "no route for /api/v1/x")
    );
}
