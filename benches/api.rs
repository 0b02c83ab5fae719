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
//! Uses `wrk` and `nginx` from PATH (or /usr/sbin) when installed; without them the
//! throughput rows say "wrk not installed" / "nginx not installed" and the rest still runs.
//! Needs `python3` on PATH for the tool-call section (`tests/fixtures/mcp_fixture.py`).
//!
//! Prints one table (metric | value | target | verdict). A missed target is reported as
//! `MISSED`, never a panic; the process exits non-zero only when something could not be
//! measured (a daemon failed to start, a request failed, a deadline passed, ...).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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

/// Bound on every single wait (daemon ready, one response, one event, a server coming up).
const DEADLINE: Duration = Duration::from_secs(10);

/// No periodic health round during the measurements (each one pings the worker).
const QUIET: &str = "[monitoring]\nhealth_check_interval_ms = 3600000\n";
const CALL_BODY: &[u8] = br#"{"name":"echo","arguments":{"message":"x"}}"#;
/// The static file nginx serves: exactly 100 bytes.
const STATIC_FILE: &str = "100b.txt";

type Result<T> = std::result::Result<T, String>;

// ---------------------------------------------------------------------------------------
// The table.

struct Row {
    metric: String,
    value: String,
    target: String,
    verdict: &'static str,
}

impl Row {
    fn new(metric: impl Into<String>, value: impl Into<String>, target: &str, ok: bool) -> Row {
        Row {
            metric: metric.into(),
            value: value.into(),
            target: target.into(),
            verdict: if ok { "ok" } else { "MISSED" },
        }
    }

    /// A figure reported for information only, without a target.
    fn info(metric: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            metric: metric.into(),
            value: value.into(),
            target: "-".into(),
            verdict: "info",
        }
    }

    /// A metric that was not measured because a tool is missing (not an error).
    fn skipped(metric: impl Into<String>, why: &str, target: &str) -> Row {
        Row {
            metric: metric.into(),
            value: why.into(),
            target: target.into(),
            verdict: "n/a",
        }
    }

    fn error(metric: &str, err: &str) -> Row {
        Row {
            metric: metric.into(),
            value: format!("could not measure: {err}"),
            target: "-".into(),
            verdict: "ERROR",
        }
    }
}

fn print_table(rows: &[Row]) {
    let header = ["metric", "value", "target", "verdict"];
    let cells: Vec<[&str; 4]> = rows
        .iter()
        .map(|r| [&*r.metric, &*r.value, &*r.target, r.verdict])
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: [&str; 4]| {
        let mut s = String::from("|");
        for (c, w) in row.iter().zip(widths) {
            let _ = write!(s, " {c:<w$} |");
        }
        s
    };
    println!("{}", line(header));
    let mut sep = String::from("|");
    for w in widths {
        let _ = write!(sep, "{}|", "-".repeat(w + 2));
    }
    println!("{sep}");
    for row in cells {
        println!("{}", line(row));
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers.

fn fmt_kb(kb: u64) -> String {
    format!("{kb} kB ({:.2} MiB)", kb as f64 / 1024.0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Nearest-rank percentile of an already sorted slice.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn kernel() -> String {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{f}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    format!(
        "{} {} ({})",
        read("ostype"),
        read("osrelease"),
        read("version")
    )
}

/// `name` on PATH, or in the sbin directories (nginx lives in /usr/sbin, often not on PATH).
fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn vm_rss_kb(pid: u32) -> Result<u64> {
    proc_status_kb(pid, "VmRSS").ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// A `/proc/PID/smaps_rollup` field in kB.
fn rollup_kb(pid: u32, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
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

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// utime + stime of a process (all its threads) in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based) -> 0-based 11, 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
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

/// Pids of the processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
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

/// Polls `f` every `every` until it yields a value or `within` has passed.
fn wait_for<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if t0.elapsed() > within {
            return Err(format!("{what}: not within {} s", within.as_secs()));
        }
        std::thread::sleep(every);
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

static RUN: AtomicUsize = AtomicUsize::new(0);

fn temp_dir(kind: &str) -> Result<PathBuf> {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vsm-bench-{kind}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    http: SocketAddr,
    label: &'static str,
}

impl Daemon {
    /// Spawns `start --listen 127.0.0.1:0 --json` in a fresh temp dir and waits (bounded)
    /// for the ready line on stdout, which names the TCP address.
    fn start_ready(bin: &Path, config: &str, label: &'static str) -> Result<Daemon> {
        let dir = temp_dir("api")?;
        let mut daemon = Daemon {
            child: None,
            socket: dir.join("sock"),
            dir,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            label,
        };
        let file = daemon.dir.join("config.toml");
        std::fs::write(&file, config).map_err(|e| format!("write {}: {e}", file.display()))?;
        let log = std::fs::File::create(daemon.dir.join("daemon.log"))
            .map_err(|e| format!("create daemon.log: {e}"))?;
        let mut child = Command::new(bin)
            .arg("start")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("--state-dir")
            .arg(daemon.dir.join("state"))
            .arg("--config")
            .arg(&file)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .env_remove("NOTIFY_SOCKET")
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let stdout = child.stdout.take();
        daemon.child = Some(child);
        let stdout = stdout.ok_or("no stdout pipe")?;
        // A blocking read can't time out: read on a helper thread, wait with a deadline.
        // The thread ends at EOF, i.e. when the daemon exits.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => return Err(daemon.failure("daemon closed stdout before the ready line")),
            Err(_) => return Err(daemon.failure("no ready line within 10 s")),
        };
        let ready: Value = serde_json::from_str(&line)
            .map_err(|e| daemon.failure(&format!("ready line is not JSON ({e}): {line}")))?;
        if ready["event"] != "ready" || ready["pid"].as_u64() != Some(u64::from(daemon.pid())) {
            return Err(daemon.failure(&format!("unexpected ready line: {line}")));
        }
        daemon.http = ready["http"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| daemon.failure(&format!("no \"http\" address in: {line}")))?;
        Ok(daemon)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn check_alive(&mut self) -> Result<()> {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(format!("wait failed: {e}")),
            None => Some("not running".into()),
        };
        match exited {
            Some(how) => Err(self.failure(&format!("daemon exited early ({how})"))),
            None => Ok(()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// An error message with the tail of the daemon's log.
    fn failure(&self, what: &str) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        if tail.is_empty() {
            what.to_string()
        } else {
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{what}; daemon log tail: {}", tail.join(" / "))
        }
    }

    /// Lines per level, and the WARN/ERROR lines grouped by shape (digits folded), most
    /// frequent first, with one example each.
    fn log_summary(&self) -> Vec<String> {
        let log = self.log();
        let mut levels: BTreeMap<&str, usize> = BTreeMap::new();
        let mut shapes: BTreeMap<String, (usize, &str)> = BTreeMap::new();
        for line in log.lines() {
            let mut parts = line.splitn(3, char::is_whitespace);
            let _ts = parts.next();
            let level = parts.next().unwrap_or("?");
            let level = if level.is_empty() { "?" } else { level };
            *levels.entry(level).or_default() += 1;
            if level == "WARN" || level == "ERROR" {
                let mut shape = String::new();
                for c in parts.next().unwrap_or("").trim_start().chars() {
                    if c.is_ascii_digit() {
                        if !shape.ends_with('#') {
                            shape.push('#');
                        }
                    } else {
                        shape.push(c);
                    }
                }
                shapes.entry(shape).or_insert((0, line)).0 += 1;
            }
        }
        let mut out = vec![format!(
            "[{}] daemon log: {} lines ({})",
            self.label,
            log.lines().count(),
            levels
                .iter()
                .map(|(l, n)| format!("{l} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        let mut shapes: Vec<(usize, &str)> = shapes.into_values().collect();
        shapes.sort_by_key(|s| std::cmp::Reverse(s.0));
        for (n, example) in shapes.into_iter().take(6) {
            out.push(format!("[{}]   {n} x like: {example}", self.label));
        }
        out
    }

    /// Graceful stop: SIGTERM, then wait (bounded) for the exit.
    fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    self.child = None;
                    return Ok(());
                }
                Ok(None) if t0.elapsed() < DEADLINE => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => return Err(self.failure("daemon did not exit within 10 s of SIGTERM")),
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }

    /// Stops the daemon at the end of a section; a failure to stop becomes a note (the
    /// measurements are taken by then, and Drop SIGKILLs it).
    fn finish(mut self, notes: &mut Vec<String>) {
        if let Err(e) = self.stop() {
            notes.push(format!("[{}] {e}", self.label));
        }
        notes.extend(self.log_summary());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
        if let Some(keep) = std::env::var_os("VSM_BENCH_KEEP_LOGS").filter(|v| !v.is_empty()) {
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(
                self.dir.join("daemon.log"),
                keep.join(format!("api-{}.log", self.label)),
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// nginx serving one static file on loopback: its own temp dir, stopped and removed on drop.

struct Nginx {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    workers: u32,
}

impl Nginx {
    fn start(bin: &Path, workers: u32) -> Result<Nginx> {
        let dir = temp_dir("nginx")?;
        let port = free_port()?;
        let mut nginx = Nginx {
            child: None,
            dir,
            port,
            workers,
        };
        let d = nginx.dir.display().to_string();
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
            .arg(&nginx.dir)
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
                let up = children_of(nginx.pid()).len() as u32 >= workers;
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
        pids.extend(children_of(master));
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
        let workers = children_of(child.id());
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 over one keep-alive connection (TCP or Unix).

struct Response {
    status: u16,
    body: Vec<u8>,
    /// Head + body bytes on the wire.
    wire: usize,
}

struct Http<S: Read + Write> {
    stream: S,
    host: String,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    closed: bool,
}

fn tcp(addr: SocketAddr) -> Result<Http<TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true)
        .map_err(|e| format!("set_nodelay: {e}"))?;
    Http::new(s, &addr.to_string())
}

fn unix(socket: &Path) -> Result<Http<UnixStream>> {
    let s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(DEADLINE))
        .and_then(|()| s.set_write_timeout(Some(DEADLINE)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    Ok(Http::raw(s, "localhost"))
}

impl Http<TcpStream> {
    fn new(stream: TcpStream, host: &str) -> Result<Self> {
        stream
            .set_read_timeout(Some(DEADLINE))
            .and_then(|()| stream.set_write_timeout(Some(DEADLINE)))
            .map_err(|e| format!("socket timeouts: {e}"))?;
        Ok(Http::raw(stream, host))
    }
}

impl<S: Read + Write> Http<S> {
    fn raw(stream: S, host: &str) -> Self {
        Http {
            stream,
            host: host.to_string(),
            buf: Vec::with_capacity(64 * 1024),
            scratch: vec![0; 64 * 1024],
            closed: false,
        }
    }

    fn build(&self, method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
        let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host).into_bytes();
        if let Some(b) = body {
            let _ = write!(
                r,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            );
        }
        r.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            r.extend_from_slice(b);
        }
        r
    }

    fn fill(&mut self, t0: Instant) -> Result<()> {
        if t0.elapsed() > DEADLINE {
            return Err("no complete response within 10 s".into());
        }
        match self.stream.read(&mut self.scratch) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&self.scratch[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// Reads one response, delimited by its Content-Length.
    fn read_response(&mut self) -> Result<Response> {
        let t0 = Instant::now();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill(t0)?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut len = None;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
                {
                    self.closed = true;
                }
            }
        }
        let len = len.ok_or_else(|| format!("response without Content-Length: {head:?}"))?;
        while self.buf.len() < head_end + len {
            self.fill(t0)?;
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok(Response {
            status,
            body,
            wire: head_end + len,
        })
    }

    fn send_raw(&mut self, request: &[u8]) -> Result<()> {
        if self.closed {
            return Err(
                "the server answered `Connection: close` on the keep-alive connection".into(),
            );
        }
        self.stream
            .write_all(request)
            .map_err(|e| format!("write: {e}"))
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
        let req = self.build(method, path, body);
        self.send_raw(&req)?;
        self.read_response()
    }

    /// A request whose envelope must say `success`; the whole envelope.
    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let r = self.request(method, path, bytes.as_deref())?;
        envelope(method, path, &r)
    }

    fn get(&mut self, path: &str) -> Result<Value> {
        Ok(self.call("GET", path, None)?["data"].take())
    }

    fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        Ok(self.call("POST", path, Some(body))?["data"].take())
    }
}

fn envelope(method: &str, path: &str, r: &Response) -> Result<Value> {
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
        format!(
            "{method} {path}: HTTP {}: body is not JSON ({e}): {}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
        )
    })?;
    if !(200..300).contains(&r.status) || v["status"] != "success" {
        return Err(format!(
            "{method} {path}: HTTP {}: {}",
            r.status, v["errors"]
        ));
    }
    Ok(v)
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
fn run_wrk(wrk: &Path, url: &str, server: &dyn Fn() -> Vec<u32>) -> Result<Wrk> {
    let pids = server();
    let ticks = |pids: &[u32]| pids.iter().filter_map(|&p| cpu_ticks(p)).sum::<u64>();
    let cpu0 = ticks(&pids);
    let child_cpu0 = children_cpu();
    let t0 = Instant::now();
    let mut child = Command::new(wrk)
        .args(WRK_ARGS)
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
    let daemon = Daemon::start_ready(bin, QUIET, "throughput")?;
    let addr = daemon.http;
    let pid = daemon.pid();
    // What one answer costs on the wire, for context.
    let sizes = {
        let mut http = tcp(addr)?;
        let health = http.request("GET", "/api/v1/health", None)?;
        let status = http.request("GET", "/api/v1/status", None)?;
        (health.wire, status.wire)
    };
    let daemon_pids = move || vec![pid];
    let health = run_wrk(wrk, &format!("http://{addr}/api/v1/health"), &daemon_pids)?;
    // What one health round looked like right after the load (the worker's fsync probe).
    let round = tcp(addr)?.get("/api/v1/health")?;
    let round = format!(
        "worker {}; state {}",
        round["components"]["worker"]["message"]
            .as_str()
            .unwrap_or("?"),
        round["components"]["state"]["message"]
            .as_str()
            .unwrap_or("?")
    );
    let status = run_wrk(wrk, &format!("http://{addr}/api/v1/status"), &daemon_pids)?;
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
    let nginx2 = run_wrk(wrk, &n2.url(), &move || n2_pids.clone())?;
    let nginx_wire = tcp(SocketAddr::from(([127, 0, 0, 1], n2.port)))?
        .request("GET", &format!("/{STATIC_FILE}"), None)?
        .wire;
    n2.stop();
    drop(n2);
    let mut n1 = Nginx::start(nginx_bin, 1)?;
    let n1_pids = n1.pids();
    let nginx1 = run_wrk(wrk, &n1.url(), &move || n1_pids.clone())?;
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
    let mut daemon = Daemon::start_ready(bin, QUIET, "idle-conns")?;
    let pid = daemon.pid();
    // Warm the request path over the Unix socket: the TCP limit (256 per listener by
    // default) stays free for the 256 connections.
    unix(&daemon.socket)?.get("/api/v1/status")?;
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = vm_rss_kb(pid)?;
    let fds0 = open_fds(pid);
    let mut conns = Vec::with_capacity(IDLE_CONNS);
    for _ in 0..IDLE_CONNS {
        conns.push(tcp(daemon.http)?);
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
    let fds1 = open_fds(pid);
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
fn ws_subscriber(addr: SocketAddr) -> Result<WebSocket<TcpStream>> {
    let stream =
        TcpStream::connect_timeout(&addr, DEADLINE).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(DEADLINE))
        .and_then(|()| stream.set_write_timeout(Some(DEADLINE)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("socket options: {e}"))?;
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws/monitor"), stream)
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
    let config = format!("{QUIET}[http]\nmax_connections = 2000\n");
    let mut daemon = Daemon::start_ready(bin, &config, "fan-out")?;
    let pid = daemon.pid();
    let addr = daemon.http;
    let rss0 = vm_rss_kb(pid)?;
    let t_setup = Instant::now();
    let mut clients = Vec::with_capacity(WS_CLIENTS);
    for i in 0..WS_CLIENTS {
        clients.push(ws_subscriber(addr).map_err(|e| daemon.failure(&format!("client {i}: {e}")))?);
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

    let mut trigger = tcp(addr)?;
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

struct Fixtures {
    python: PathBuf,
    script: PathBuf,
}

impl Fixtures {
    fn spec(&self, id: &str, extra: Value) -> Value {
        let mut spec = json!({
            "id": id,
            "command": self.python.display().to_string(),
            "args": [self.script.display().to_string()],
        });
        if let (Some(s), Value::Object(extra)) = (spec.as_object_mut(), extra) {
            s.extend(extra);
        }
        spec
    }
}

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
    let mut daemon = Daemon::start_ready(bin, QUIET, "tool-calls")?;
    let mut ux = unix(&daemon.socket)?;
    let mut tc = tcp(daemon.http)?;
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
    let env_path = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let under_test = env_path("VSM_BENCH_BIN")
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vsm-daemon")));
    let static_bin = env_path("VSM_BENCH_STATIC_BIN");
    let measured = static_bin.clone().unwrap_or_else(|| under_test.clone());
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
    println!("binary under test: {}", under_test.display());
    match &static_bin {
        Some(p) => println!(
            "static binary:     {} (all metrics use this one)",
            p.display()
        ),
        None => println!("static binary:     none (set VSM_BENCH_STATIC_BIN to measure one)"),
    }
    println!("measured:          {}", measured.display());
    println!("wrk:               {}", show(&wrk));
    println!("nginx:             {}", show(&nginx));
    println!("fixture:           {} {}", show(&python), script.display());
    println!("fd limit:          soft {soft}, hard {hard}");
    println!("kernel:            {}", kernel());
    println!(
        "cpus:              {}",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("date:              {}", utc_now());
    println!();

    // `cargo bench --bench api -- WORD..`: only the sections whose name contains a WORD
    // (cargo itself passes `--bench`, which is not a filter).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut failed = false;
    let mut run = |name: &str,
                   notes: &mut Vec<String>,
                   f: &mut dyn FnMut(&mut Vec<String>) -> Result<Vec<Row>>| {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            return;
        }
        let t0 = Instant::now();
        match f(notes) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("api bench: {name}: {e}");
                rows.push(Row::error(name, &e));
                failed = true;
            }
        }
        notes.push(format!(
            "[{name}] section took {:.1} s",
            t0.elapsed().as_secs_f64()
        ));
    };
    run("keep-alive throughput", &mut notes, &mut |n| {
        measure_throughput(&measured, wrk.as_deref(), nginx.as_deref(), n)
    });
    run("256 idle connections", &mut notes, &mut |n| {
        measure_idle_conns(&measured, n)
    });
    let fixtures = match python {
        Some(python) if script.is_file() => Ok(Fixtures { python, script }),
        Some(_) => Err(format!("{} not found", script.display())),
        None => Err("python3 is not on PATH".to_string()),
    };
    match &fixtures {
        Ok(fx) => {
            run("WebSocket fan-out", &mut notes, &mut |n| {
                measure_fanout(&measured, fx, n)
            });
            run("tool call TCP vs Unix", &mut notes, &mut |n| {
                measure_tool_calls(&measured, fx, n)
            });
        }
        Err(e) => {
            for name in ["WebSocket fan-out", "tool call TCP vs Unix"] {
                run(name, &mut notes, &mut |_| Err(e.clone()));
            }
        }
    }

    print_table(&rows);
    println!();
    println!(
        "note: wrk runs `wrk {} URL`; server CPU is utime+stime of the server's processes over \
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
    for n in &notes {
        println!("note: {n}");
    }
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());
    if failed {
        eprintln!("api bench: some metrics could not be measured");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
