//! Gateway benchmark: what `/mcp` (the daemon as one MCP endpoint) costs a tool call, how it
//! holds up under many clients, and what its sessions weigh.
//!
//! Run with `cargo bench --bench gateway` (`-- WORD..` runs only the sections whose name
//! contains a WORD: `latency`, `concurrent`, `sessions`). Environment:
//! - `VSM_BENCH_BIN`: binary under test (default: the one cargo built for this bench).
//! - `VSM_BENCH_STATIC_BIN`: a static build (`packaging/build-static.sh`); when set, every
//!   metric is measured with it.
//!
//! Sections (the server is `tests/fixtures/mcp_fixture.py`, its `echo` tool):
//! - **latency**: the same call six ways, alternating in blocks of 100 so drift hits all
//!   alike: (a) direct stdio to a fixture this bench spawns, (b) `tools/call` of `fx__echo`
//!   on `/mcp` (one session, one keep-alive TCP connection with the token), (c)
//!   `POST /api/v1/mcp/servers/fx/tools/call` on the same kind of connection, (d) and (e) the
//!   same two on the control socket (what `benches/mcp.rs` measures REST on), (f) the lines of
//!   (a) through a relay process that does nothing but copy bytes between a loopback TCP
//!   connection and the fixture's pipes (this bench binary itself, started as a relay). p50
//!   and p99 of each; target: p50(b) − p50(a) ≤ 50 µs. (f) − (a) is what one more process and
//!   a TCP hop cost on this machine with no work at all (on a small VM, mostly waking idle
//!   vCPUs); (b) − (f) is the daemon's own share.
//! - **latency on one CPU**: the same, with this bench and so every process it starts (the
//!   fixtures, the relay, the daemon and the daemon's server) bound to one CPU, as on a
//!   single-core edge host. On a VM of two or more vCPUs the first run's figures are mostly the
//!   hypervisor waking halted vCPUs: each hop between processes on different vCPUs costs what
//!   the relay's floor (f) − (a) shows, for the direct call too. On one CPU a hop is a context
//!   switch, so (b) − (a) is what the daemon adds. Both runs are checked against the target.
//! - **concurrent**: 100 clients, each its own TCP connection and `/mcp` session, start
//!   together and make 10 calls each, one after the other. Throughput (calls over the wall
//!   time from the start signal to the last answer), per-call p50/p99, and the daemon's
//!   VmRSS and VmHWM afterwards.
//! - **sessions**: the daemon's VmRSS before and after 50 `/mcp` sessions are opened (each
//!   with its own keep-alive connection, left open).
//!
//! Prints one table; a missed target is `MISSED`, never a panic. Exits non-zero only when
//! something could not be measured.

mod common;

use common::{
    cpu_ticks_split, cpus, fmt_kb, kernel, on_path, percentile, real_python, relay_main, tcp_as,
    ticks_per_sec, unix, us, utc_now, vm_rss_kb, wait_for, Binaries, DaemonGuard, DaemonSetup,
    DirectFixture, Fixtures, Http, Result, Row, Sections, DEADLINE, RELAY_ENV,
};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const OVERHEAD_P50_TARGET_US: f64 = 50.0;
const CALLS: usize = 2_000;
const WARMUP: usize = 100;
const BLOCK: usize = 100;
/// `/mcp` calls over which the daemon's own CPU per call is counted (clock ticks are 10 ms).
const CPU_CALLS: usize = 10_000;
const CLIENTS: usize = 100;
const CALLS_PER_CLIENT: usize = 10;
const SESSIONS: usize = 50;

/// No health round (no ping) during the measurements; sessions, connections per address (all
/// clients are 127.0.0.1) and in-flight calls enough for 100 clients at once.
const CONFIG: &str = "[daemon]\nhttp_listen = \"127.0.0.1:0\"\n\
[http]\nmax_connections_per_peer = 256\n\
[monitoring]\nhealth_check_interval_ms = 3600000\nperformance_check_interval_ms = 3600000\n\
[gateway]\nmax_sessions = 256\n\
[mcp_servers]\nmax_in_flight_calls = 256\n";

fn us_f(v: f64) -> String {
    format!("{v:.1} µs")
}

fn start(bin: &Path, label: &str) -> Result<DaemonGuard> {
    DaemonGuard::start_ready(
        bin,
        &DaemonSetup {
            dir_name: "vsm-bench-gateway",
            label,
            config: Some(CONFIG),
            args: &[],
            keep_log_as: None,
        },
    )
}

/// Registers the fixture as `fx` and waits until it is active.
fn register_fx(daemon: &DaemonGuard, f: &Fixtures) -> Result<()> {
    let mut http = unix(&daemon.socket)?;
    http.post("/api/v1/mcp/servers", &f.spec("fx", json!({})))?;
    wait_for("fx active", DEADLINE, Duration::from_millis(10), || {
        let s = http.get("/api/v1/mcp/servers/fx")?;
        Ok((s["status"] == "active").then_some(()))
    })?;
    // The gateway's catalogue follows the servers' snapshot: wait until it offers the tool.
    let mut client = McpClient::open(daemon.http_addr()?, &daemon.token)?;
    wait_for(
        "fx__echo on /mcp",
        DEADLINE,
        Duration::from_millis(10),
        || {
            let tools = client.rpc("tools/list", json!({}))?;
            let names: Vec<&str> = tools["tools"]
                .as_array()
                .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
                .unwrap_or_default();
            Ok(names.contains(&"fx__echo").then_some(()))
        },
    )
}

/// One `/mcp` session over one keep-alive connection (TCP with the token, or the control
/// socket, where the uid is the credential).
struct McpClient<S: Read + Write> {
    http: Http<S>,
    head: String,
    next_id: u64,
}

impl McpClient<TcpStream> {
    /// Connects over TCP and opens a session.
    fn open(addr: SocketAddr, token: &str) -> Result<Self> {
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        );
        McpClient::start(tcp_as(addr, token)?, head)
    }
}

impl McpClient<UnixStream> {
    /// Connects to the control socket and opens a session.
    fn open_unix(socket: &Path) -> Result<Self> {
        let head = "POST /mcp HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n";
        McpClient::start(unix(socket)?, head.to_string())
    }
}

impl<S: Read + Write> McpClient<S> {
    /// Sends `initialize` (+ `notifications/initialized`).
    fn start(http: Http<S>, head: String) -> Result<Self> {
        let mut c = McpClient {
            http,
            head,
            next_id: 1,
        };
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "vsm-bench", "version": "0"}},
        });
        let r = c.post(&init.to_string())?;
        let session = r
            .head
            .split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("mcp-session-id")
                    .then(|| v.trim().to_string())
            })
            .ok_or_else(|| format!("initialize: no Mcp-Session-Id (HTTP {})", r.status))?;
        c.head.push_str(&format!(
            "Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\n"
        ));
        let r = c.post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)?;
        if r.status != 202 {
            return Err(format!("notifications/initialized: HTTP {}", r.status));
        }
        Ok(c)
    }

    fn request_bytes(&self, body: &str) -> Vec<u8> {
        let mut r = self.head.clone().into_bytes();
        let _ = write!(r, "Content-Length: {}\r\n\r\n{body}", body.len());
        r
    }

    fn post(&mut self, body: &str) -> Result<common::Response> {
        let bytes = self.request_bytes(body);
        self.http.send_raw(&bytes)?;
        self.http.read_response()
    }

    /// A request; its `result`.
    fn rpc(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let r = self.post(&body.to_string())?;
        let mut v: Value =
            serde_json::from_slice(&r.body).map_err(|e| format!("{method}: not JSON: {e}"))?;
        if r.status != 200 || v["id"] != json!(id) || v.get("result").is_none() {
            return Err(format!("{method}: HTTP {}: {v}", r.status));
        }
        Ok(v["result"].take())
    }

    /// One echo call through the gateway, timed from the first byte written to the last read.
    fn echo(&mut self) -> Result<Duration> {
        let id = self.next_id;
        self.next_id += 1;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"fx__echo","arguments":{{"message":"m"}}}}}}"#
        );
        let bytes = self.request_bytes(&body);
        let t0 = Instant::now();
        self.http.send_raw(&bytes)?;
        let r = self.http.read_response()?;
        let t = t0.elapsed();
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("/mcp answer: {e}"))?;
        if r.status != 200 || v["id"] != json!(id) || echo_text(&v["result"]) != Some("m") {
            return Err(format!("unexpected /mcp answer (HTTP {}): {v}", r.status));
        }
        Ok(t)
    }
}

fn echo_text(result: &Value) -> Option<&str> {
    result["content"][0]["text"].as_str()
}

/// One direct stdio call (write → answer line).
fn direct_call(fx: &mut DirectFixture, id: u64) -> Result<Duration> {
    let msg = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"m"}}}}}}"#
    );
    let mut line = msg.into_bytes();
    line.push(b'\n');
    let t0 = Instant::now();
    fx.stdin
        .write_all(&line)
        .map_err(|e| format!("write to fixture: {e}"))?;
    let resp = fx.read_line()?;
    let t = t0.elapsed();
    let v: Value = serde_json::from_slice(&resp).map_err(|e| format!("fixture answer: {e}"))?;
    if v["id"] != json!(id) || echo_text(&v["result"]) != Some("m") {
        return Err(format!("unexpected fixture answer: {v}"));
    }
    Ok(t)
}

/// One REST call on a keep-alive TCP connection.
fn rest_call<S: Read + Write>(http: &mut Http<S>, request: &[u8]) -> Result<Duration> {
    let t0 = Instant::now();
    http.send_raw(request)?;
    let r = http.read_response()?;
    let t = t0.elapsed();
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("REST answer: {e}"))?;
    if r.status != 200 || echo_text(&v["data"]["result"]) != Some("m") {
        return Err(format!("unexpected REST answer (HTTP {}): {v}", r.status));
    }
    Ok(t)
}

fn p50_p99(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (percentile(v, 50.0), percentile(v, 99.0))
}

fn measure_latency(bin: &Path, f: &Fixtures, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut fx = DirectFixture::spawn(f)?;
    let exe = std::env::current_exe().map_err(|e| format!("this bench's path: {e}"))?;
    let mut relayed = DirectFixture::relayed(&exe, &[f.python.as_os_str(), f.script.as_os_str()])?;
    let mut daemon = start(bin, "latency")?;
    register_fx(&daemon, f)?;
    let addr = daemon.http_addr()?;
    let mut mcp = McpClient::open(addr, &daemon.token)?;
    let mut rest = tcp_as(addr, &daemon.token)?;
    let mut mcp_unix = McpClient::open_unix(&daemon.socket)?;
    let mut rest_unix = unix(&daemon.socket)?;
    let body: &[u8] = br#"{"name":"echo","arguments":{"message":"m"}}"#;
    let path = "/api/v1/mcp/servers/fx/tools/call";
    let rest_request = rest.build("POST", path, Some(body));
    let rest_unix_request = rest_unix.build("POST", path, Some(body));
    let mut id = 1;
    for _ in 0..WARMUP {
        direct_call(&mut fx, id)?;
        direct_call(&mut relayed, id)?;
        id += 1;
        mcp.echo()?;
        rest_call(&mut rest, &rest_request)?;
        mcp_unix.echo()?;
        rest_call(&mut rest_unix, &rest_unix_request)?;
    }
    // direct, /mcp TCP, REST TCP, /mcp Unix, REST Unix, through the zero-work relay.
    let mut series: [Vec<Duration>; 6] = Default::default();
    let t_all = Instant::now();
    while series[0].len() < CALLS {
        let n = BLOCK.min(CALLS - series[0].len());
        for _ in 0..n {
            series[0].push(direct_call(&mut fx, id)?);
            id += 1;
        }
        for _ in 0..n {
            series[1].push(mcp.echo()?);
        }
        for _ in 0..n {
            series[2].push(rest_call(&mut rest, &rest_request)?);
        }
        for _ in 0..n {
            series[3].push(mcp_unix.echo()?);
        }
        for _ in 0..n {
            series[4].push(rest_call(&mut rest_unix, &rest_unix_request)?);
        }
        for _ in 0..n {
            series[5].push(direct_call(&mut relayed, id)?);
            id += 1;
        }
    }
    let elapsed = t_all.elapsed();
    // The daemon's own CPU (user + system, all threads) per /mcp call, over a run of its own:
    // what it spends, apart from the wake-ups of three processes that make the wall clock on
    // a small (virtual) machine.
    let per_call = |pid: u32, calls: &mut dyn FnMut() -> Result<()>| -> Result<(f64, f64)> {
        let (u0, s0) = cpu_ticks_split(pid).ok_or("no cpu ticks")?;
        for _ in 0..CPU_CALLS {
            calls()?;
        }
        let (u1, s1) = cpu_ticks_split(pid).ok_or("no cpu ticks")?;
        let us = |t: u64| t as f64 * 1e6 / ticks_per_sec() / CPU_CALLS as f64;
        Ok((us(u1.saturating_sub(u0)), us(s1.saturating_sub(s0))))
    };
    let (cpu_user, cpu_system) = per_call(daemon.pid(), &mut || mcp.echo().map(drop))?;
    // The same for the zero-work relay (f): the CPU any process in the middle spends.
    let relay_pid = relayed.child.id();
    let (relay_user, relay_system) = per_call(relay_pid, &mut || {
        id += 1;
        direct_call(&mut relayed, id).map(drop)
    })?;
    daemon.check_alive()?;
    let rss = vm_rss_kb(daemon.pid()).unwrap_or(0);
    daemon.finish(notes);
    drop(fx);
    drop(relayed);
    let [a, b, c, d, e, f] = series.map(|mut v| p50_p99(&mut v));
    let diff = |x: Duration, y: Duration| (x.as_secs_f64() - y.as_secs_f64()) * 1e6;
    let shown = |(p50, p99): (Duration, Duration)| format!("{} / {}", us(p50), us(p99));
    Ok(vec![
        Row::info(
            format!("(a) direct stdio echo, p50 / p99 of {CALLS}"),
            shown(a),
        ),
        Row::info(
            format!(
                "(b) /mcp tools/call fx__echo, TCP with token, one session, p50 / p99 of {CALLS}"
            ),
            shown(b),
        ),
        Row::info(
            format!("(c) POST /api/v1/mcp/servers/fx/tools/call, TCP, p50 / p99 of {CALLS}"),
            shown(c),
        ),
        Row::info("(d) as (b) on the control socket, p50 / p99", shown(d)),
        Row::info("(e) as (c) on the control socket, p50 / p99", shown(e)),
        Row::info(
            "(f) as (a) through a zero-work relay process (loopback TCP ↔ pipes), p50 / p99",
            shown(f),
        ),
        Row::new(
            "/mcp overhead over direct stdio, p50(b) − p50(a)",
            us_f(diff(b.0, a.0)),
            "≤ 50 µs",
            diff(b.0, a.0) <= OVERHEAD_P50_TARGET_US,
        ),
        Row::info(
            "  of which the machine's floor for one more process and a TCP hop, p50(f) − p50(a) \
             | the daemon's own share, p50(b) − p50(f)",
            format!("{} | {}", us_f(diff(f.0, a.0)), us_f(diff(b.0, f.0))),
        ),
        Row::info(
            format!(
                "daemon CPU per /mcp call over {CPU_CALLS} more, user + system | the relay's for (f)"
            ),
            format!(
                "{} + {} | {} + {}",
                us_f(cpu_user),
                us_f(cpu_system),
                us_f(relay_user),
                us_f(relay_system)
            ),
        ),
        Row::info(
            "  same, p99(b) − p99(a) | on the control socket, p50(d) − p50(a)",
            format!("{} | {}", us_f(diff(b.1, a.1)), us_f(diff(d.0, a.0))),
        ),
        Row::info(
            "REST over direct, p50(c) − p50(a) | /mcp − REST p50, TCP (b − c) | Unix (d − e)",
            format!(
                "{} | {} | {}",
                us_f(diff(c.0, a.0)),
                us_f(diff(b.0, c.0)),
                us_f(diff(d.0, e.0))
            ),
        ),
        Row::info(
            "daemon after the calls",
            format!(
                "VmRSS {}; the six series took {:.2} s",
                fmt_kb(rss),
                elapsed.as_secs_f64()
            ),
        ),
    ])
}

fn measure_concurrent(bin: &Path, f: &Fixtures, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut daemon = start(bin, "concurrent")?;
    register_fx(&daemon, f)?;
    let addr = daemon.http_addr()?;
    let pid = daemon.pid();
    let rss0 = vm_rss_kb(pid)?;
    // Every client connects and opens its session first; then all start together.
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut c = McpClient::open(addr, &daemon.token)?;
        c.echo()?;
        clients.push(c);
    }
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> Result<(Vec<Duration>, Instant)> {
                barrier.wait();
                let mut times = Vec::with_capacity(CALLS_PER_CLIENT);
                for _ in 0..CALLS_PER_CLIENT {
                    times.push(c.echo()?);
                }
                Ok((times, Instant::now()))
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    let mut all = Vec::with_capacity(CLIENTS * CALLS_PER_CLIENT);
    let mut last = t0;
    for t in threads {
        let (times, done) = t
            .join()
            .map_err(|_| "a client thread panicked".to_string())??;
        all.extend(times);
        last = last.max(done);
    }
    let wall = last.duration_since(t0);
    daemon.check_alive()?;
    let rss = vm_rss_kb(pid)?;
    let hwm = common::proc_status_kb(pid, "VmHWM").unwrap_or(0);
    daemon.finish(notes);
    let (p50, p99) = p50_p99(&mut all);
    let n = all.len();
    Ok(vec![
        Row::info(
            format!("{CLIENTS} clients × {CALLS_PER_CLIENT} calls on /mcp: throughput"),
            format!(
                "{:.0} calls/s ({n} calls in {:.1} ms)",
                n as f64 / wall.as_secs_f64(),
                wall.as_secs_f64() * 1e3
            ),
        ),
        Row::info(
            "  per-call latency p50 / p99",
            format!("{} / {}", us(p50), us(p99)),
        ),
        Row::info(
            "  daemon VmRSS before → after | VmHWM",
            format!("{} → {} | {}", fmt_kb(rss0), fmt_kb(rss), fmt_kb(hwm)),
        ),
    ])
}

fn measure_sessions(bin: &Path, f: &Fixtures, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut daemon = start(bin, "sessions")?;
    register_fx(&daemon, f)?;
    let addr = daemon.http_addr()?;
    let pid = daemon.pid();
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = vm_rss_kb(pid)?;
    let mut open = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let mut c = McpClient::open(addr, &daemon.token)?;
        c.rpc("tools/list", json!({}))?;
        open.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    daemon.check_alive()?;
    let rss = vm_rss_kb(pid)?;
    drop(open);
    daemon.finish(notes);
    let per = rss.saturating_sub(rss0) as f64 / SESSIONS as f64;
    Ok(vec![Row::info(
        format!("daemon VmRSS with {SESSIONS} open /mcp sessions (own connection each)"),
        format!(
            "{} → {} (+{per:.1} kB per session with its connection)",
            fmt_kb(rss0),
            fmt_kb(rss)
        ),
    )])
}

/// Runs `f` with this process bound to one CPU (the last it may run on), so that the
/// processes `f` starts inherit that; the CPUs it had are given back after. The rows get
/// `prefix` on their names.
fn on_one_cpu(f: impl FnOnce() -> Result<Vec<Row>>, prefix: &str) -> Result<Vec<Row>> {
    // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity with pid 0 and its own size
    // read or write only that set.
    let mut had: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut had) } != 0 {
        return Err(format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    let cpu = (0..libc::CPU_SETSIZE as usize)
        .rev()
        .find(|&c| unsafe { libc::CPU_ISSET(c, &had) })
        .ok_or("this process may run on no CPU")?;
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut one) };
    if unsafe { libc::sched_setaffinity(0, size, &one) } != 0 {
        return Err(format!(
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    let rows = f();
    if unsafe { libc::sched_setaffinity(0, size, &had) } != 0 {
        eprintln!(
            "gateway bench: the CPUs could not be given back: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut rows = rows?;
    for r in &mut rows {
        r.metric = format!("{prefix}{}", r.metric);
    }
    rows.insert(
        0,
        Row::info(format!("{prefix}bound to CPU"), cpu.to_string()),
    );
    Ok(rows)
}

fn main() -> ExitCode {
    if std::env::var_os(RELAY_ENV).is_some() {
        return relay_main(std::env::args_os().skip(1));
    }
    let bins = Binaries::from_env();
    let measured = &bins.measured;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_fixture.py");
    let python = on_path("python3").map(|p| real_python(&p));
    println!("# vsm-daemon gateway (/mcp) benchmark");
    bins.print("all metrics use this one");
    println!("kernel:            {}", kernel());
    println!("cpus:              {}", cpus());
    println!("date:              {}", utc_now());
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average:      {}", load.trim());
    }
    println!();
    let mut sections = Sections::new("gateway", Sections::filters_from_args());
    match python {
        Some(Ok(python)) if script.is_file() => {
            let fx = Fixtures { python, script };
            sections.run("latency", |n| measure_latency(measured, &fx, n));
            sections.run("latency on one CPU", |n| {
                on_one_cpu(|| measure_latency(measured, &fx, n), "[one CPU] ")
            });
            sections.run("concurrent", |n| measure_concurrent(measured, &fx, n));
            sections.run("sessions", |n| measure_sessions(measured, &fx, n));
        }
        other => {
            let why = match other {
                Some(Err(e)) => e,
                None => "python3 is not on PATH".into(),
                Some(Ok(_)) => format!("{} not found", script.display()),
            };
            sections.run("latency", |_| Err(why));
        }
    }
    sections.table.print();
    for n in &sections.notes {
        println!("{n}");
    }
    sections.exit_code()
}
