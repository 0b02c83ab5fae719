//! HTTP/WebSocket benchmark: keep-alive throughput against nginx, the memory cost of idle
//! keep-alive connections, fan-out of one event to 1,000 WebSocket subscribers, and a tool
//! call over TCP vs over the Unix control socket.
//!
//! Run with `cargo bench --bench api`. Environment:
//! - `VSM_BENCH_BIN`: binary under test (default: the one cargo built for this bench).
//! - `VSM_BENCH_STATIC_BIN`: a static build (`packaging/build-static.sh`); when set, every
//!   metric is measured with it (that is what ships).
//! - `VSM_BENCH_KEEP_LOGS`: a directory; each daemon's log is copied there before its temp
//!   dir is removed.
//!
//! `cargo bench --bench api -- WORD` runs only the sections whose name contains WORD
//! (`throughput`, `idle`, `fan-out`, `tool call`).
//!
//! Uses `wrk` and `nginx` from PATH (or /usr/sbin) when installed (Debian: `apt-get install
//! -y wrk nginx-light`); without them the throughput rows say "wrk not installed" / "nginx not
//! installed" and the rest still runs. Wall-clock req/s on a shared machine vary from run to
//! run: `benches/callgrind.sh PATH` counts the instructions per request instead (valgrind).
//! Needs `python3` on PATH for the tool-call section (`tests/fixtures/mcp_fixture.py`).
//!
//! Prints one table (metric | value | target | verdict). A missed target is reported as
//! `MISSED`, never a panic; the process exits non-zero only when something could not be
//! measured (a daemon failed to start, a request failed, a deadline passed, ...).

mod common;

use common::{
    child_pids, cpu_ticks, cpus, envelope, find_tool, fmt_kb, kernel, open_fds, percentile,
    rollup_kb, tcp, tcp_as, ticks_per_sec, unix, us, utc_now, vm_rss_kb, wait_for, Binaries,
    DaemonGuard, DaemonSetup, Fixtures, Http, Result, Row, Sections, TempDir, DEADLINE,
};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const RATIO_TARGET: f64 = 0.9;
const FANOUT_TARGET: Duration = Duration::from_millis(20);

const WRK_ARGS: [&str; 4] = ["-t2", "-c64", "-d10s", "--latency"];
const WRK_DEADLINE: Duration = Duration::from_secs(40);
const IDLE_CONNS: usize = 256;
const WS_CLIENTS: usize = 1_000;
const WS_THREADS: usize = 4;
/// Events triggered one at a time; the first one is the measured one, the others show spread.
const FANOUT_ROUNDS: usize = 5;
const CALLS: usize = 1_000;
const CALL_WARMUP: usize = 100;
/// TCP and Unix calls alternate in blocks of this many (drift hits both alike).
const CALL_BLOCK: usize = 100;

/// No periodic health round during the measurements (each one pings the worker).
const QUIET: &str =
    "[monitoring]\nhealth_check_interval_ms = 3600000\nperformance_check_interval_ms = 3600000\n";
/// Every load generator here is one local address; the per-peer limit (64 by default) is
/// raised so that it measures the daemon, not its admission policy.
const ONE_PEER: &str = "[http]\nmax_connections_per_peer = 2000\n";
const CALL_BODY: &[u8] = br#"{"name":"echo","arguments":{"message":"x"}}"#;
/// The static file nginx serves: exactly 100 bytes.
const STATIC_FILE: &str = "100b.txt";

// ---------------------------------------------------------------------------------------
// Small helpers.

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn rss_split(pid: u32) -> String {
    match (rollup_kb(pid, "Rss"), rollup_kb(pid, "Anonymous")) {
        (Some(rss), Some(anon)) => format!(
            "anon {anon} kB, file-backed {} kB",
            rss.saturating_sub(anon)
        ),
        _ => "smaps_rollup unreadable".into(),
    }
}

/// The main thread's (the daemon's loop) `/proc/PID/task/PID/schedstat`: time on a CPU,
/// time runnable but waiting for one, and the number of time slices.
fn schedstat(pid: u32) -> Option<(Duration, Duration, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let run = f.next()??;
    let wait = f.next()??;
    let slices = f.next()??;
    Some((
        Duration::from_nanos(run),
        Duration::from_nanos(wait),
        slices,
    ))
}

/// CPU time used by the terminated, reaped children of this process so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises this process's soft fd limit to at least `want` (up to the hard limit); the
/// daemons spawned afterwards inherit it. Returns (soft, hard) after the change.
fn raise_fd_limit(want: u64) -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return (0, 0);
        }
        if (r.rlim_cur as u64) < want {
            let mut n = r;
            n.rlim_cur = (want as libc::rlim_t).min(r.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &n) == 0 {
                r = n;
            }
        }
        (r.rlim_cur as u64, r.rlim_max as u64)
    }
}

/// A free loopback port (bound, then released; the small race is acceptable here).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

// ---------------------------------------------------------------------------------------
// A daemon under test: its own temp dir, killed and cleaned up on drop.

/// Spawns `start --listen 127.0.0.1:0 --json` with `config` in a fresh
/// `temp_dir()/vsm-bench-api-<pid>-<n>` and waits (bounded) for the ready line on stdout;
/// the daemon and the TCP address the ready line names. `label` tags its notes and names its
/// kept log (`VSM_BENCH_KEEP_LOGS/api-<label>.log`).
fn start_daemon(bin: &Path, config: &str, label: &str) -> Result<(DaemonGuard, SocketAddr)> {
    let daemon = DaemonGuard::start_ready(
        bin,
        &DaemonSetup {
            dir_name: "vsm-bench-api",
            label,
            config: Some(config),
            args: &["--listen", "127.0.0.1:0"],
            keep_log_as: Some(format!("api-{label}.log")),
        },
    )?;
    let addr = daemon.http_addr()?;
    Ok((daemon, addr))
}

// ---------------------------------------------------------------------------------------
// nginx serving one static file on loopback: its own temp dir, stopped and removed on drop.

struct Nginx {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    workers: u32,
}

impl Nginx {
    fn start(bin: &Path, workers: u32) -> Result<Nginx> {
        let dir = TempDir::new("vsm-bench-nginx")?;
        let port = free_port()?;
        let mut nginx = Nginx {
            child: None,
            dir,
            port,
            workers,
        };
        let d = nginx.dir.path().display().to_string();
        let www = nginx.dir.join("www");
        std::fs::create_dir_all(&www).map_err(|e| format!("create {}: {e}", www.display()))?;
        std::fs::write(www.join(STATIC_FILE), [b'x'; 100])
            .map_err(|e| format!("write the static file: {e}"))?;
        let conf = nginx.dir.join("nginx.conf");
        let text = format!(
            "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\n\
             http {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port};\n    \
             location / {{ root {d}/www; }}\n  }}\n}}\n"
        );
        std::fs::write(&conf, text).map_err(|e| format!("write {}: {e}", conf.display()))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(nginx.dir.path())
            .arg("-e")
            .arg(nginx.dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        nginx.child = Some(child);
        // Ready when the file is served (and the workers are up).
        let url_path = format!("/{STATIC_FILE}");
        wait_for(
            "nginx serving",
            Duration::from_secs(5),
            Duration::from_millis(20),
            || {
                if let Some(Ok(Some(status))) = nginx.child.as_mut().map(Child::try_wait) {
                    return Err(nginx.failure(&format!("nginx exited ({status})")));
                }
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                else {
                    return Ok(None);
                };
                let mut http = Http::new(stream, &addr.to_string())?;
                let r = http.request("GET", &url_path, None)?;
                if r.status != 200 || r.body.len() != 100 {
                    return Err(format!(
                        "nginx answered {} with {} bytes",
                        r.status,
                        r.body.len()
                    ));
                }
                let up = child_pids(nginx.pid()).len() as u32 >= workers;
                Ok(up.then_some(()))
            },
        )?;
        Ok(nginx)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The master and its workers.
    fn pids(&self) -> Vec<u32> {
        let master = self.pid();
        let mut pids = vec![master];
        pids.extend(child_pids(master));
        pids
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{STATIC_FILE}", self.port)
    }

    fn failure(&self, what: &str) -> String {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{what}; nginx error.log: {}", tail.join(" / "))
    }

    /// SIGTERM (fast shutdown: the master stops its workers), bounded wait; then SIGKILL for
    /// the master and whatever worker is left.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers = child_pids(child.id());
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        let exited = loop {
            match child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if t0.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => break false,
            }
        };
        if !exited {
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
        for w in workers {
            // Only if it is still one of our nginx workers (not a recycled pid).
            let comm = std::fs::read_to_string(format!("/proc/{w}/comm")).unwrap_or_default();
            if comm.trim() == "nginx" {
                // SAFETY: kill(2) on a worker of the nginx we started.
                unsafe { libc::kill(w as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        // `self.dir` is removed right after this, when the fields drop.
    }
}

// ---------------------------------------------------------------------------------------
// 1. Keep-alive throughput: wrk against the daemon and against nginx.

struct Wrk {
    rps: f64,
    p50: Option<Duration>,
    p99: Duration,
    requests: u64,
    non_2xx: u64,
    socket_errors: Option<String>,
    /// CPU used by wrk itself.
    wrk_cpu: Duration,
    /// CPU used by the server's processes over the run, in cores (1.0 = one core busy).
    server_cores: f64,
    elapsed: Duration,
}

impl Wrk {
    fn summary(&self) -> String {
        let mut s = format!(
            "{:.0} req/s, p99 {}{}; server CPU {:.2} cores = {:.1} µs/req, wrk CPU {:.2} cores",
            self.rps,
            ms(self.p99),
            self.p50
                .map_or(String::new(), |p| format!(" (p50 {})", ms(p))),
            self.server_cores,
            self.server_cores / self.rps * 1e6,
            self.wrk_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
        );
        if self.non_2xx > 0 {
            let _ = write!(s, "; {} non-2xx of {}", self.non_2xx, self.requests);
        }
        if let Some(e) = &self.socket_errors {
            let _ = write!(s, "; socket errors: {e}");
        }
        s
    }
}

/// `768.00us`, `10.88ms`, `1.02s`, `2.00m` -> Duration.
fn parse_wrk_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// The report's figures (the CPU fields are left zero for the caller).
fn parse_wrk(out: &str) -> Result<Wrk> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = 0;
    let mut non_2xx = 0;
    let mut socket_errors = None;
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = parse_wrk_duration(v);
        } else if let Some(v) = t.strip_prefix("50%") {
            p50 = parse_wrk_duration(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            socket_errors = Some(v.trim().to_string());
        } else if t.contains(" requests in ") {
            requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    match (rps, p99) {
        (Some(rps), Some(p99)) => Ok(Wrk {
            rps,
            p50,
            p99,
            requests,
            non_2xx,
            socket_errors,
            wrk_cpu: Duration::ZERO,
            server_cores: 0.0,
            elapsed: Duration::ZERO,
        }),
        _ => Err(format!(
            "no `Requests/sec:` or `99%` line in wrk's output: {}",
            out.trim()
        )),
    }
}

/// Runs `wrk -t2 -c64 -d10s --latency URL` (bounded) and parses its report; `server` lists
/// the processes whose CPU time is counted as the server's.
fn run_wrk(wrk: &Path, url: &str, header: &str, server: &dyn Fn() -> Vec<u32>) -> Result<Wrk> {
    let pids = server();
    let ticks = |pids: &[u32]| pids.iter().filter_map(|&p| cpu_ticks(p)).sum::<u64>();
    let cpu0 = ticks(&pids);
    let child_cpu0 = children_cpu();
    let t0 = Instant::now();
    let mut child = Command::new(wrk)
        .args(WRK_ARGS)
        .arg("-H")
        .arg(header)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", wrk.display()))?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("wrk pipes missing".into());
    };
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        (out, err)
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t0.elapsed() < WRK_DEADLINE => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "wrk did not finish within {} s",
                    WRK_DEADLINE.as_secs()
                ));
            }
            Err(e) => return Err(format!("wait for wrk: {e}")),
        }
    };
    let elapsed = t0.elapsed();
    let wrk_cpu = children_cpu().saturating_sub(child_cpu0);
    let cpu1 = ticks(&pids);
    let (out, err) = reader.join().map_err(|_| "wrk reader panicked")?;
    if !status.success() {
        return Err(format!("wrk exited with {status}: {}", err.trim()));
    }
    let mut report = parse_wrk(&out)?;
    report.server_cores =
        cpu1.saturating_sub(cpu0) as f64 / ticks_per_sec() / elapsed.as_secs_f64();
    report.wrk_cpu = wrk_cpu;
    report.elapsed = elapsed;
    Ok(report)
}

fn measure_throughput(
    bin: &Path,
    wrk: Option<&Path>,
    nginx: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<Vec<Row>> {
    let Some(wrk) = wrk else {
        let t = format!(">= {RATIO_TARGET}");
        return Ok(vec![
            Row::skipped(
                "keep-alive GET /api/v1/health, daemon (wrk -t2 -c64 -d10s)",
                "wrk not installed",
                "-",
            ),
            Row::skipped(
                "keep-alive GET /api/v1/status, daemon",
                "wrk not installed",
                "-",
            ),
            Row::skipped(
                "keep-alive static 100 B file, nginx (2 workers)",
                "wrk not installed",
                "-",
            ),
            Row::skipped(
                "ratio daemon/nginx req/s, GET /api/v1/health",
                "wrk not installed",
                &t,
            ),
            Row::skipped(
                "ratio daemon/nginx req/s, GET /api/v1/status",
                "wrk not installed",
                &t,
            ),
        ]);
    };
    let mut rows = Vec::new();
    let (daemon, addr) = start_daemon(bin, &format!("{QUIET}{ONE_PEER}"), "throughput")?;
    let pid = daemon.pid();
    // What one answer costs on the wire, for context.
    let sizes = {
        let mut http = tcp_as(addr, &daemon.token)?;
        let health = http.request("GET", "/api/v1/health", None)?;
        let status = http.request("GET", "/api/v1/status", None)?;
        (health.wire, status.wire)
    };
    let daemon_pids = move || vec![pid];
    let auth = format!("Authorization: Bearer {}", daemon.token);
    let health = run_wrk(
        wrk,
        &format!("http://{addr}/api/v1/health"),
        &auth,
        &daemon_pids,
    )?;
    // What one health round looked like right after the load (the worker's fsync probe).
    let round = tcp_as(addr, &daemon.token)?.get("/api/v1/health")?;
    let round = format!(
        "worker {}; state {}",
        round["components"]["worker"]["message"]
            .as_str()
            .unwrap_or("?"),
        round["components"]["state"]["message"]
            .as_str()
            .unwrap_or("?")
    );
    let status = run_wrk(
        wrk,
        &format!("http://{addr}/api/v1/status"),
        &auth,
        &daemon_pids,
    )?;
    let mut daemon = daemon;
    daemon.check_alive()?;
    let rss = vm_rss_kb(pid).unwrap_or(0);
    daemon.finish(notes);

    rows.push(Row::info(
        "keep-alive GET /api/v1/health, daemon (wrk -t2 -c64 -d10s)",
        health.summary(),
    ));
    rows.push(Row::info(
        "  one health round right after (what each request waits for)",
        round,
    ));
    rows.push(Row::info(
        "keep-alive GET /api/v1/status, daemon (no health round)",
        status.summary(),
    ));
    rows.push(Row::info(
        "  response sizes on the wire; daemon VmRSS after both runs",
        format!(
            "health {} B, status {} B (nginx: 100 B body + headers); {}",
            sizes.0,
            sizes.1,
            fmt_kb(rss)
        ),
    ));

    let t = format!(">= {RATIO_TARGET}");
    let Some(nginx_bin) = nginx else {
        rows.push(Row::skipped(
            "keep-alive static 100 B file, nginx (2 workers)",
            "nginx not installed",
            "-",
        ));
        rows.push(Row::skipped(
            "ratio daemon/nginx req/s, GET /api/v1/health",
            "nginx not installed",
            &t,
        ));
        rows.push(Row::skipped(
            "ratio daemon/nginx req/s, GET /api/v1/status",
            "nginx not installed",
            &t,
        ));
        return Ok(rows);
    };
    let mut n2 = Nginx::start(nginx_bin, 2)?;
    let n2_pids = n2.pids();
    let nginx2 = run_wrk(wrk, &n2.url(), &auth, &move || n2_pids.clone())?;
    let nginx_wire = tcp(SocketAddr::from(([127, 0, 0, 1], n2.port)))?
        .request("GET", &format!("/{STATIC_FILE}"), None)?
        .wire;
    n2.stop();
    drop(n2);
    let mut n1 = Nginx::start(nginx_bin, 1)?;
    let n1_pids = n1.pids();
    let nginx1 = run_wrk(wrk, &n1.url(), &auth, &move || n1_pids.clone())?;
    n1.stop();
    let workers = n1.workers;
    drop(n1);

    rows.push(Row::info(
        "keep-alive static 100 B file, nginx (2 workers)",
        format!("{}; {nginx_wire} B on the wire", nginx2.summary()),
    ));
    let r_health = health.rps / nginx2.rps;
    let r_status = status.rps / nginx2.rps;
    rows.push(Row::new(
        "ratio daemon/nginx req/s, GET /api/v1/health",
        format!(
            "{r_health:.2} ({:.0} / {:.0}); p99 {} vs {}",
            health.rps,
            nginx2.rps,
            ms(health.p99),
            ms(nginx2.p99)
        ),
        &t,
        r_health >= RATIO_TARGET,
    ));
    rows.push(Row::new(
        "ratio daemon/nginx req/s, GET /api/v1/status (fair: no health round)",
        format!(
            "{r_status:.2} ({:.0} / {:.0}); p99 {} vs {}",
            status.rps,
            nginx2.rps,
            ms(status.p99),
            ms(nginx2.p99)
        ),
        &t,
        r_status >= RATIO_TARGET,
    ));
    rows.push(Row::info(
        format!("  nginx with {workers} worker (single core, like the daemon's loop)"),
        format!(
            "{}; daemon status / this = {:.2}",
            nginx1.summary(),
            status.rps / nginx1.rps
        ),
    ));
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// 2. RSS with 256 idle keep-alive connections.

fn measure_idle_conns(bin: &Path, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let (mut daemon, addr) = start_daemon(bin, &format!("{QUIET}{ONE_PEER}"), "idle-conns")?;
    let pid = daemon.pid();
    // Warm the request path over the Unix socket: the TCP limit (256 per listener by
    // default) stays free for the 256 connections.
    unix(&daemon.socket)?.get("/api/v1/status")?;
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = vm_rss_kb(pid)?;
    let fds0 = open_fds(pid).unwrap_or(0);
    let mut conns = Vec::with_capacity(IDLE_CONNS);
    for _ in 0..IDLE_CONNS {
        conns.push(tcp_as(addr, &daemon.token)?);
    }
    for c in &mut conns {
        let req = c.build("GET", "/api/v1/status", None);
        c.send_raw(&req)?;
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c.read_response()?;
        envelope("GET", "/api/v1/status", &r).map_err(|e| format!("connection {i}: {e}"))?;
        if c.closed {
            return Err(format!(
                "connection {i} was answered with Connection: close"
            ));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    daemon.check_alive()?;
    let rss1 = vm_rss_kb(pid)?;
    let split = rss_split(pid);
    let fds1 = open_fds(pid).unwrap_or(0);
    // Still open? A peek that would block means the daemon has not closed it.
    let mut still_open = 0;
    for c in &conns {
        c.stream
            .set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        let mut b = [0u8; 1];
        if matches!(c.stream.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            still_open += 1;
        }
    }
    drop(conns);
    std::thread::sleep(Duration::from_millis(500));
    let rss2 = vm_rss_kb(pid)?;
    daemon.finish(notes);
    let per = (rss1 as f64 - rss0 as f64) / IDLE_CONNS as f64;
    Ok(vec![
        Row::info(
            "daemon VmRSS before the idle connections (after 1 status)",
            format!("{}; {fds0} fds", fmt_kb(rss0)),
        ),
        Row::info(
            format!("daemon VmRSS with {IDLE_CONNS} idle keep-alive TCP conns (1 status each, 1 s after)"),
            format!(
                "{}; {fds1} fds; {still_open}/{IDLE_CONNS} still open; {split}",
                fmt_kb(rss1)
            ),
        ),
        Row::info(
            "  per idle connection",
            format!(
                "{per:.1} kB ({:+} kB for {IDLE_CONNS}); after closing them all: {}",
                rss1 as i64 - rss0 as i64,
                fmt_kb(rss2)
            ),
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// 3. Fan-out of one event to 1,000 WebSocket subscribers.

enum ToReader {
    /// Watch for `mcp_server_registered` of this server id.
    Arm(String),
}

enum FromReader {
    Armed,
    /// Receive instant per client (None: not received before the deadline), and errors.
    Done(Vec<Option<Instant>>, Vec<String>),
}

/// One client: TCP connect, WebSocket handshake, the hello, subscribe, the reply.
fn ws_subscriber(addr: SocketAddr, token: &str) -> Result<WebSocket<TcpStream>> {
    let stream =
        TcpStream::connect_timeout(&addr, DEADLINE).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(DEADLINE))
        .and_then(|()| stream.set_write_timeout(Some(DEADLINE)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("socket options: {e}"))?;
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws/monitor?token={token}"), stream)
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    let next_text = |ws: &mut WebSocket<TcpStream>| -> Result<Value> {
        loop {
            match ws.read().map_err(|e| format!("ws read: {e}"))? {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str())
                        .map_err(|e| format!("ws message is not JSON: {e}"))
                }
                Message::Close(c) => return Err(format!("closed by the daemon: {c:?}")),
                _ => {}
            }
        }
    };
    let hello = next_text(&mut ws)?;
    if hello["type"] != "connected" {
        return Err(format!("unexpected first message: {hello}"));
    }
    ws.send(Message::text(
        r#"{"id":1,"command":"subscribe","channels":["mcp_servers"]}"#,
    ))
    .map_err(|e| format!("ws send: {e}"))?;
    let reply = next_text(&mut ws)?;
    let subscribed = reply["data"]["subscribed"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == "mcp_servers"));
    if reply["type"] != "response" || reply["status"] != "success" || !subscribed {
        return Err(format!("unexpected subscribe reply: {reply}"));
    }
    Ok(ws)
}

/// Reads what is there on one client; the instant the awaited event came, if it did.
fn drain(
    ws: &mut WebSocket<TcpStream>,
    want: Option<&str>,
    dead: &mut bool,
    errors: &mut Vec<String>,
) -> Option<Instant> {
    let mut got = None;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let at = Instant::now();
                let Some(id) = want else { continue };
                // Parse only the rare candidate (most messages are not the awaited one).
                if t.as_str().contains("mcp_server_registered") {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if v["type"] == "mcp_server_registered" && v["data"]["server_id"] == id {
                        got.get_or_insert(at);
                    }
                }
            }
            Ok(Message::Close(c)) => {
                errors.push(format!("closed by the daemon: {c:?}"));
                *dead = true;
                return got;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return got
            }
            Err(e) => {
                errors.push(format!("ws read: {e}"));
                *dead = true;
                return got;
            }
        }
    }
}

/// A reader thread: owns a share of the clients (non-blocking), and per round records the
/// instant each client receives the awaited event.
fn ws_reader(
    idx: usize,
    mut clients: Vec<WebSocket<TcpStream>>,
    rx: mpsc::Receiver<ToReader>,
    tx: mpsc::Sender<(usize, FromReader)>,
) {
    let n = clients.len();
    let mut errors = Vec::new();
    for ws in &mut clients {
        if let Err(e) = ws.get_mut().set_nonblocking(true) {
            errors.push(format!("set_nonblocking: {e}"));
        }
    }
    let mut dead = vec![false; n];
    while let Ok(ToReader::Arm(id)) = rx.recv() {
        // Nothing stale left behind.
        for (ws, d) in clients.iter_mut().zip(dead.iter_mut()) {
            if !*d {
                drain(ws, None, d, &mut errors);
            }
        }
        if tx.send((idx, FromReader::Armed)).is_err() {
            return;
        }
        let mut got: Vec<Option<Instant>> = vec![None; n];
        let deadline = Instant::now() + DEADLINE;
        loop {
            let waiting: Vec<usize> = (0..n).filter(|&i| got[i].is_none() && !dead[i]).collect();
            if waiting.is_empty() || Instant::now() >= deadline {
                break;
            }
            let mut fds: Vec<libc::pollfd> = waiting
                .iter()
                .map(|&i| libc::pollfd {
                    fd: clients[i].get_ref().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: a valid array of pollfds for the duration of the call.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            if r <= 0 {
                continue;
            }
            for (p, &i) in fds.iter().zip(&waiting) {
                if p.revents != 0 {
                    if let Some(at) = drain(&mut clients[i], Some(&id), &mut dead[i], &mut errors) {
                        got[i] = Some(at);
                    }
                }
            }
        }
        if tx
            .send((idx, FromReader::Done(got, std::mem::take(&mut errors))))
            .is_err()
        {
            return;
        }
    }
}

fn measure_fanout(bin: &Path, f: &Fixtures, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let config = format!("{QUIET}{ONE_PEER}max_connections = 2000\n");
    let (mut daemon, addr) = start_daemon(bin, &config, "fan-out")?;
    let pid = daemon.pid();
    let rss0 = vm_rss_kb(pid)?;
    let t_setup = Instant::now();
    let mut clients = Vec::with_capacity(WS_CLIENTS);
    for i in 0..WS_CLIENTS {
        clients.push(
            ws_subscriber(addr, &daemon.token)
                .map_err(|e| daemon.failure(&format!("client {i}: {e}")))?,
        );
    }
    let setup = t_setup.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let rss1 = vm_rss_kb(pid)?;
    let ws_count =
        unix(&daemon.socket)?.get("/api/v1/metrics")?["connections"]["websocket_clients"].as_u64();

    let (tx, rx) = mpsc::channel();
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    let per = WS_CLIENTS.div_ceil(WS_THREADS);
    let mut offsets = Vec::new();
    let mut idx = 0;
    while !clients.is_empty() {
        let share: Vec<_> = clients.drain(..per.min(clients.len())).collect();
        offsets.push(share.len());
        let (to_tx, to_rx) = mpsc::channel();
        let tx = tx.clone();
        senders.push(to_tx);
        handles.push(std::thread::spawn(move || ws_reader(idx, share, to_rx, tx)));
        idx += 1;
    }
    drop(tx);
    let threads = senders.len();

    let mut trigger = tcp_as(addr, &daemon.token)?;
    trigger.get("/api/v1/status")?;
    struct Round {
        all: Vec<Duration>,
        missing: usize,
        answered: Duration,
        processing_ms: f64,
        errors: Vec<String>,
        /// The loop thread over the round: (on CPU, runnable but waiting for a CPU, slices).
        sched: Option<(Duration, Duration, u64)>,
    }
    let mut rounds = Vec::new();
    for r in 0..FANOUT_ROUNDS {
        let id = format!("fan{r}");
        for s in &senders {
            s.send(ToReader::Arm(id.clone()))
                .map_err(|_| "a reader thread is gone")?;
        }
        let mut armed = 0;
        while armed < threads {
            match rx.recv_timeout(DEADLINE) {
                Ok((_, FromReader::Armed)) => armed += 1,
                Ok(_) => return Err("reader answered out of turn".into()),
                Err(_) => return Err("reader threads not armed within 10 s".into()),
            }
        }
        let spec = f.spec(&id, json!({"autostart": false}));
        let body = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
        let req = trigger.build("POST", "/api/v1/mcp/servers", Some(&body));
        let sched0 = schedstat(pid);
        let t0 = Instant::now();
        trigger.send_raw(&req)?;
        let resp = trigger.read_response()?;
        let answered = t0.elapsed();
        let env = envelope("POST", "/api/v1/mcp/servers", &resp)?;
        let processing_ms = env["metadata"]["processing_time_ms"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let mut all = Vec::with_capacity(WS_CLIENTS);
        let mut missing = 0;
        let mut errors = Vec::new();
        let mut done = 0;
        while done < threads {
            match rx.recv_timeout(DEADLINE + Duration::from_secs(5)) {
                Ok((_, FromReader::Done(got, errs))) => {
                    done += 1;
                    for g in got {
                        match g {
                            Some(at) => all.push(at.saturating_duration_since(t0)),
                            None => missing += 1,
                        }
                    }
                    errors.extend(errs);
                }
                Ok(_) => return Err("reader answered out of turn".into()),
                Err(_) => return Err("reader threads did not report within 15 s".into()),
            }
        }
        let sched = schedstat(pid).zip(sched0).map(|(b, a)| {
            (
                b.0.saturating_sub(a.0),
                b.1.saturating_sub(a.1),
                b.2.saturating_sub(a.2),
            )
        });
        all.sort();
        rounds.push(Round {
            all,
            missing,
            answered,
            processing_ms,
            errors,
            sched,
        });
    }
    drop(senders);
    for h in handles {
        let _ = h.join();
    }
    daemon.check_alive()?;
    daemon.finish(notes);

    let first = &rounds[0];
    if first.all.is_empty() {
        return Err(format!(
            "no client received the event; errors: {:?}",
            first.errors.iter().take(3).collect::<Vec<_>>()
        ));
    }
    for (i, r) in rounds.iter().enumerate() {
        if r.missing > 0 || !r.errors.is_empty() {
            notes.push(format!(
                "[fan-out] round {}: {} client(s) without the event after 10 s; {} error(s), e.g. {:?}",
                i + 1,
                r.missing,
                r.errors.len(),
                r.errors.first()
            ));
        }
    }
    let last = first.all[first.all.len() - 1];
    let complete = first.missing == 0;
    let med = percentile(&first.all, 50.0);
    let others: Vec<String> = rounds[1..]
        .iter()
        .map(|r| {
            r.all
                .last()
                .map_or("none".into(), |l| format!("{:.1}", l.as_secs_f64() * 1e3))
        })
        .collect();
    Ok(vec![
        Row::new(
            format!("WS fan-out: POST sent -> last of {WS_CLIENTS} subscribers has the event"),
            format!(
                "{}{}",
                ms(last),
                if complete {
                    String::new()
                } else {
                    format!(" ({} clients never got it)", first.missing)
                }
            ),
            "<= 20 ms",
            complete && last <= FANOUT_TARGET,
        ),
        Row::info(
            "  median / p90 / first subscriber",
            format!(
                "{} / {} / {}",
                ms(med),
                ms(percentile(&first.all, 90.0)),
                ms(first.all[0])
            ),
        ),
        Row::info(
            "  POST answered (HTTP response read) after; daemon's processing_time_ms",
            format!(
                "{}; {:.3} ms (the event goes out after the answer)",
                ms(first.answered),
                first.processing_ms
            ),
        ),
        Row::info(
            "  answer read -> last subscriber (broadcast + client reads)",
            ms(last.saturating_sub(first.answered)),
        ),
        Row::info(
            "  daemon loop thread over each round: on CPU / waiting for a CPU",
            rounds
                .iter()
                .map(|r| {
                    r.sched.map_or("?".into(), |(run, wait, _)| {
                        format!(
                            "{:.1}/{:.1}",
                            run.as_secs_f64() * 1e3,
                            wait.as_secs_f64() * 1e3
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join(", ")
                + " ms (schedstat; round 1 first)",
        ),
        Row::info(
            format!("  last subscriber in rounds 2-{FANOUT_ROUNDS} (one event each)"),
            format!(
                "{} ms; POST answered after {} ms",
                others.join(", "),
                rounds[1..]
                    .iter()
                    .map(|r| format!("{:.1}", r.answered.as_secs_f64() * 1e3))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Row::info(
            format!("  setup: {WS_CLIENTS} clients connected + subscribed"),
            format!(
                "in {:.2} s; {threads} reader threads; daemon VmRSS {} -> {} ({:.1} kB per client){}",
                setup.as_secs_f64(),
                fmt_kb(rss0),
                fmt_kb(rss1),
                (rss1 as f64 - rss0 as f64) / WS_CLIENTS as f64,
                ws_count.map_or(String::new(), |n| format!("; daemon counts {n} WS clients"))
            ),
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// 4. A tool call over TCP vs over the Unix socket.

fn tool_call<S: Read + Write>(http: &mut Http<S>, request: &[u8]) -> Result<Duration> {
    let t0 = Instant::now();
    http.send_raw(request)?;
    let r = http.read_response()?;
    let t = t0.elapsed();
    let v = envelope("POST", "/api/v1/mcp/servers/fx/tools/call", &r)?;
    if v["data"]["result"]["content"][0]["text"] != "x" {
        return Err(format!("unexpected tools/call answer: {v}"));
    }
    Ok(t)
}

fn measure_tool_calls(bin: &Path, f: &Fixtures, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let (mut daemon, addr) = start_daemon(bin, &format!("{QUIET}{ONE_PEER}"), "tool-calls")?;
    let mut ux = unix(&daemon.socket)?;
    let mut tc = tcp_as(addr, &daemon.token)?;
    ux.post("/api/v1/mcp/servers", &f.spec("fx", json!({})))?;
    wait_for("fx active", DEADLINE, Duration::from_millis(10), || {
        let s = ux.get("/api/v1/mcp/servers/fx")?;
        if s["status"] == "failed" {
            return Err(format!("fx failed: {}", s["history"]));
        }
        Ok((s["status"] == "active").then_some(()))
    })?;
    let req_tcp = tc.build("POST", "/api/v1/mcp/servers/fx/tools/call", Some(CALL_BODY));
    let req_ux = ux.build("POST", "/api/v1/mcp/servers/fx/tools/call", Some(CALL_BODY));
    for _ in 0..CALL_WARMUP {
        tool_call(&mut tc, &req_tcp)?;
        tool_call(&mut ux, &req_ux)?;
    }
    let mut over_tcp = Vec::with_capacity(CALLS);
    let mut over_unix = Vec::with_capacity(CALLS);
    let t_all = Instant::now();
    while over_tcp.len() < CALLS {
        for _ in 0..CALL_BLOCK.min(CALLS - over_tcp.len()) {
            over_tcp.push(tool_call(&mut tc, &req_tcp)?);
        }
        for _ in 0..CALL_BLOCK.min(CALLS - over_unix.len()) {
            over_unix.push(tool_call(&mut ux, &req_ux)?);
        }
    }
    let elapsed = t_all.elapsed();
    let calls = ux.get("/api/v1/mcp/servers/fx")?["calls"]["ok"].clone();
    daemon.check_alive()?;
    drop((tc, ux));
    daemon.finish(notes);
    over_tcp.sort();
    over_unix.sort();
    let (t50, t99) = (percentile(&over_tcp, 50.0), percentile(&over_tcp, 99.0));
    let (u50, u99) = (percentile(&over_unix, 50.0), percentile(&over_unix, 99.0));
    Ok(vec![
        Row::info(
            format!("tool call (echo) over HTTP/TCP, 1 keep-alive conn, p50 / p99 of {CALLS}"),
            format!("{} / {}", us(t50), us(t99)),
        ),
        Row::info(
            format!("tool call (echo) over the Unix socket, 1 keep-alive conn, p50 / p99 of {CALLS}"),
            format!("{} / {}", us(u50), us(u99)),
        ),
        Row::info(
            "  TCP - Unix",
            format!(
                "p50 {:+.1} µs, p99 {:+.1} µs; {CALLS}+{CALLS} calls in {:.2} s; the server counts {calls} ok calls",
                (t50.as_secs_f64() - u50.as_secs_f64()) * 1e6,
                (t99.as_secs_f64() - u99.as_secs_f64()) * 1e6,
                elapsed.as_secs_f64()
            ),
        ),
    ])
}

// ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and maybe a filter); nothing here takes options.
    let bins = Binaries::from_env();
    let measured = &bins.measured;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_fixture.py");
    let python = find_tool("python3");
    let wrk = find_tool("wrk");
    let nginx = find_tool("nginx");
    // 1,000 WebSocket clients plus the daemon's ends of them: raise the limit before any
    // daemon is spawned (they inherit it).
    let (soft, hard) = raise_fd_limit(4096);
    let show = |p: &Option<PathBuf>| {
        p.as_deref()
            .map_or("NOT FOUND".into(), |p| p.display().to_string())
    };

    println!("# vsm-daemon HTTP/WebSocket benchmark");
    bins.print("all metrics use this one");
    println!("wrk:               {}", show(&wrk));
    println!("nginx:             {}", show(&nginx));
    println!("fixture:           {} {}", show(&python), script.display());
    println!("fd limit:          soft {soft}, hard {hard}");
    println!("kernel:            {}", kernel());
    println!("cpus:              {}", cpus());
    println!("date:              {}", utc_now());
    println!();

    // `cargo bench --bench api -- WORD..`: only the sections whose name contains a WORD.
    let mut sections = Sections::new("api", Sections::filters_from_args());
    let started = Instant::now();
    sections.run("keep-alive throughput", |n| {
        measure_throughput(measured, wrk.as_deref(), nginx.as_deref(), n)
    });
    sections.run("256 idle connections", |n| measure_idle_conns(measured, n));
    let fixtures = match python {
        Some(python) if script.is_file() => Ok(Fixtures { python, script }),
        Some(_) => Err(format!("{} not found", script.display())),
        None => Err("python3 is not on PATH".to_string()),
    };
    match &fixtures {
        Ok(fx) => {
            sections.run("WebSocket fan-out", |n| measure_fanout(measured, fx, n));
            sections.run("tool call TCP vs Unix", |n| {
                measure_tool_calls(measured, fx, n)
            });
        }
        Err(e) => {
            for name in ["WebSocket fan-out", "tool call TCP vs Unix"] {
                sections.run(name, |_| Err(e.clone()));
            }
        }
    }

    sections.table.print();
    println!();
    println!(
        "note: wrk runs `wrk {} -H 'Authorization: Bearer TOKEN' URL` (nginx gets the same \
         header, so both parse the same request); server CPU is utime+stime of the server's processes over \
         the run (1.00 = one core), wrk CPU its own rusage",
        WRK_ARGS.join(" ")
    );
    println!(
        "note: fan-out: {WS_CLIENTS} tungstenite clients on {WS_THREADS} reader threads (poll(2), \
         non-blocking reads); the event is `mcp_server_registered` from POST /api/v1/mcp/servers \
         (autostart false); times run from just before the POST is written to each client's read"
    );
    println!(
        "note: tool calls: {CALL_WARMUP} unmeasured warm-up calls each, then TCP and Unix \
         alternate in blocks of {CALL_BLOCK}; percentiles are nearest-rank"
    );
    println!("note: health_check_interval_ms = 3600000 in every daemon (no periodic rounds)");
    for n in &sections.notes {
        println!("note: {n}");
    }
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());
    sections.exit_code()
}
