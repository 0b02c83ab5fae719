//! MCP benchmark: tool-call overhead of the daemon, its footprint with 20 supervised servers,
//! how fast a dead child gets its restart scheduled, and what 1,000 spawn/kill cycles leave
//! behind (zombies, file descriptors, memory).
//!
//! Run with `cargo bench --bench mcp` (`-- WORD..` runs only the sections whose name contains
//! a WORD, e.g. `-- tool` or `-- spawn`). Environment:
//! - `VSM_BENCH_BIN`: binary under test (default: the one cargo built for this bench).
//! - `VSM_BENCH_STATIC_BIN`: a static build (`packaging/build-static.sh`); when set, every
//!   metric is measured with it (that is what ships).
//! - `VSM_BENCH_KEEP_LOGS`: a directory; each daemon's log is copied there before its temp
//!   dir is removed.
//!
//! Needs `python3` on PATH (the servers are `tests/fixtures/mcp_fixture.py`).
//!
//! Prints one table (metric | value | target | verdict). A missed target is reported as
//! `MISSED`, never a panic; the process exits non-zero only when something could not be
//! measured (a daemon failed to start, a request failed, a deadline passed, ...).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MB: u64 = 1024 * 1024;
const OVERHEAD_P50_TARGET_US: f64 = 100.0;
const RSS_20_TARGET: u64 = 6 * MB;
const RESTART_TARGET_MS: i64 = 10;

const CALLS: usize = 2_000;
const CALL_WARMUP: usize = 100;
/// Direct and daemon-mediated calls alternate in blocks of this many (drift hits both alike).
const CALL_BLOCK: usize = 100;
const SERVERS: usize = 20;
const KILLS: usize = 20;
const FLAP_CYCLES: u64 = 1_000;

/// Bound on every single wait (daemon ready, one response, one line from a fixture).
const DEADLINE: Duration = Duration::from_secs(10);
/// Bound on 20 python fixtures coming up together (slow hosts start python in ~250 ms).
const SERVERS_UP_DEADLINE: Duration = Duration::from_secs(60);
const FLAP_DEADLINE: Duration = Duration::from_secs(120);

/// No health round (and so no ping) during the measurements; the TCP listener on a free
/// port, so that no daemon of this bench clashes with anything on the default port.
const BASE_CONFIG: &str =
    "[daemon]\nhttp_listen = \"127.0.0.1:0\"\n[monitoring]\nhealth_check_interval_ms = 3600000\n";
const CALL_BODY: &[u8] = br#"{"name":"echo","arguments":{"message":"m"}}"#;

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

fn us_f(v: f64) -> String {
    format!("{v:.1} µs")
}

/// Nearest-rank percentile of an already sorted slice.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// `(year, month, day)` to days since 1970-01-01 (Howard Hinnant's days-from-civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to `(year, month, day)` (civil-from-days).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (what the daemon writes) to Unix milliseconds.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z';
    if !shape_ok {
        return None;
    }
    let num = |from: usize, to: usize| s.get(from..to)?.parse::<i64>().ok();
    let days = days_from_civil(num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let secs = ((days * 24 + num(11, 13)?) * 60 + num(14, 16)?) * 60 + num(17, 19)?;
    Some(secs * 1000 + num(20, 23)?)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn utc_now() -> String {
    let secs = unix_ms(SystemTime::now()).div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
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

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The interpreter behind `python3` (`sys.executable`): version-manager shims (pyenv) are
/// shell scripts that would add their own start-up to every spawn.
fn real_python(python3: &Path) -> Result<PathBuf> {
    let mut child = Command::new(python3)
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("run {}: {e}", python3.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let out = rx.recv_timeout(DEADLINE);
    let _ = child.kill();
    let _ = child.wait();
    let path = PathBuf::from(
        out.map_err(|_| format!("{} -c ... gave no answer within 10 s", python3.display()))?
            .trim(),
    );
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("sys.executable {} is not a file", path.display()))
    }
}

/// `(on-CPU ns, run-queue wait ns)` from a `schedstat` file (`/proc/PID/schedstat`).
fn schedstat(path: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut f = text.split_whitespace();
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// `(busy, total, steal)` clock ticks of all CPUs together, from the first line of /proc/stat.
fn cpu_times() -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let total: u64 = f.iter().sum();
    let idle = f.get(3)? + f.get(4)?;
    Some((total - idle, total, *f.get(7)?))
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
    match (
        rollup_kb(pid, "Rss"),
        rollup_kb(pid, "Anonymous"),
        rollup_kb(pid, "Private_Dirty"),
    ) {
        (Some(rss), Some(anon), Some(dirty)) => format!(
            "anon {anon} kB, file-backed {} kB, private dirty {dirty} kB, VmHWM {} kB",
            rss.saturating_sub(anon),
            proc_status_kb(pid, "VmHWM").unwrap_or(0)
        ),
        _ => "smaps_rollup unreadable".into(),
    }
}

fn open_fds(pid: u32) -> Result<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .map_err(|e| format!("read /proc/{pid}/fd: {e}"))
}

/// `(pid, state)` of every process whose parent is `parent`.
fn children_of(parent: u32) -> Vec<(u32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            (ppid == parent).then_some((pid, state))
        })
        .collect()
}

/// The CPU a task last ran on (field 39 of a `stat` file such as `/proc/PID/stat`).
fn last_cpu(stat_path: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 3 (state) is the first after the comm.
    rest.split_whitespace().nth(39 - 3)?.parse().ok()
}

/// utime + stime of a process in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based) -> 0-based 11, 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
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

// ---------------------------------------------------------------------------------------
// A daemon under test: its own temp dir, killed and cleaned up on drop.

static RUN: AtomicUsize = AtomicUsize::new(0);

struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    label: &'static str,
}

impl Daemon {
    /// Spawns `start --json` in a fresh `temp_dir()/vsm-bench-mcp-<pid>-<n>` and waits
    /// (bounded) for the ready line on stdout.
    fn start_ready(bin: &Path, config: &str, label: &'static str) -> Result<Daemon> {
        let n = RUN.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vsm-bench-mcp-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut daemon = Daemon {
            child: None,
            socket: dir.join("sock"),
            dir,
            label,
        };
        let file = daemon.dir.join("config.toml");
        std::fs::write(&file, config).map_err(|e| format!("write {}: {e}", file.display()))?;
        let log = std::fs::File::create(daemon.dir.join("daemon.log"))
            .map_err(|e| format!("create daemon.log: {e}"))?;
        let mut child = Command::new(bin)
            .arg("start")
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
                let msg = parts.next().unwrap_or("").trim_start();
                for c in msg.chars() {
                    if c.is_ascii_digit() {
                        if !shape.ends_with('#') {
                            shape.push('#');
                        }
                    } else {
                        shape.push(c);
                    }
                }
                let e = shapes.entry(shape).or_insert((0, line));
                e.0 += 1;
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
                keep.join(format!("{}.log", self.label)),
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 over the control socket, one keep-alive connection.

struct Response {
    status: u16,
    body: Vec<u8>,
}

struct Http {
    stream: UnixStream,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    closed: bool,
}

fn build_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
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

impl Http {
    fn connect(socket: &Path) -> Result<Http> {
        let stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(DEADLINE))
            .and_then(|()| stream.set_write_timeout(Some(DEADLINE)))
            .map_err(|e| format!("socket timeouts: {e}"))?;
        Ok(Http {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            scratch: vec![0; 64 * 1024],
            closed: false,
        })
    }

    fn fill(&mut self, t0: Instant) -> Result<()> {
        if t0.elapsed() > DEADLINE {
            return Err("no complete response within 10 s".into());
        }
        match self.stream.read(&mut self.scratch) {
            Ok(0) => Err("the daemon closed the connection".into()),
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
        Ok(Response { status, body })
    }

    fn send_raw(&mut self, request: &[u8]) -> Result<()> {
        if self.closed {
            return Err(
                "the daemon answered `Connection: close` on the keep-alive connection".into(),
            );
        }
        self.stream
            .write_all(request)
            .map_err(|e| format!("write: {e}"))
    }

    /// A request whose envelope must say `success`; its `data`.
    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        self.send_raw(&build_request(method, path, bytes.as_deref()))?;
        let r = self.read_response()?;
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
        Ok(v["data"].clone())
    }

    fn get(&mut self, path: &str) -> Result<Value> {
        self.call("GET", path, None)
    }

    fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        self.call("POST", path, Some(body))
    }
}

// ---------------------------------------------------------------------------------------
// The fixture, spawned directly (no daemon) with pipes.

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

/// Waits until `fd` is readable, at most until `deadline`.
fn wait_readable(fd: i32, deadline: Instant) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("not readable within 10 s".into());
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return Ok(());
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
    }
}

struct DirectFixture {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl DirectFixture {
    fn spawn(f: &Fixtures) -> Result<DirectFixture> {
        let mut child = Command::new(&f.python)
            .arg(&f.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", f.python.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("fixture pipes missing".into());
        };
        let mut fx = DirectFixture {
            child,
            stdin,
            stdout,
            buf: Vec::with_capacity(64 * 1024),
            scratch: vec![0; 64 * 1024],
        };
        // The same handshake the daemon does.
        fx.send(
            br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"vsm-bench","version":"0"}}}"#,
        )?;
        let line = fx.read_line()?;
        let v: Value = serde_json::from_slice(&line).map_err(|e| format!("initialize: {e}"))?;
        if v["result"]["protocolVersion"].as_str().is_none() {
            return Err(format!("initialize answered {v}"));
        }
        fx.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)?;
        Ok(fx)
    }

    /// Writes one line (the newline is added here, in the same write).
    fn send(&mut self, line: &[u8]) -> Result<()> {
        let mut msg = Vec::with_capacity(line.len() + 1);
        msg.extend_from_slice(line);
        msg.push(b'\n');
        self.stdin
            .write_all(&msg)
            .map_err(|e| format!("write to fixture: {e}"))
    }

    /// Reads one line (poll(2) then read(2), as the daemon's loop does with epoll).
    fn read_line(&mut self) -> Result<Vec<u8>> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..=i);
                return Ok(line);
            }
            wait_readable(self.stdout.as_raw_fd(), deadline)?;
            match self.stdout.read(&mut self.scratch) {
                Ok(0) => return Err("the fixture closed its stdout".into()),
                Ok(n) => self.buf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read from fixture: {e}")),
            }
        }
    }
}

impl Drop for DirectFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// 1. Tool-call overhead.

fn echo_text(result: &Value) -> Option<&str> {
    result["content"][0]["text"].as_str()
}

fn measure_tool_calls(bin: &Path, f: &Fixtures, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut fx = DirectFixture::spawn(f)?;
    let mut daemon = Daemon::start_ready(bin, BASE_CONFIG, "tool-calls")?;
    let mut http = Http::connect(&daemon.socket)?;
    http.post("/api/v1/mcp/servers", &f.spec("fx", json!({})))?;
    let fx_pid = wait_for("fx active", DEADLINE, Duration::from_millis(10), || {
        let s = http.get("/api/v1/mcp/servers/fx")?;
        Ok((s["status"] == "active")
            .then(|| s["pid"].as_u64())
            .flatten())
    })?;

    let mut next_id: u64 = 1;
    // One direct call: write -> response line.
    let mut direct_call = |fx: &mut DirectFixture| -> Result<Duration> {
        let id = next_id;
        next_id += 1;
        let msg = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"m"}},"_meta":{{"progressToken":"fx:{id}"}}}}}}"#
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
    };
    let request = build_request("POST", "/api/v1/mcp/servers/fx/tools/call", Some(CALL_BODY));
    let mut inner_ms = Vec::with_capacity(CALLS);
    // One call through the daemon: request written -> whole response read.
    let mut daemon_call = |http: &mut Http, keep: bool| -> Result<Duration> {
        let t0 = Instant::now();
        http.send_raw(&request)?;
        let r = http.read_response()?;
        let t = t0.elapsed();
        let v: Value =
            serde_json::from_slice(&r.body).map_err(|e| format!("tools/call answer: {e}"))?;
        if r.status != 200 || echo_text(&v["data"]["result"]) != Some("m") {
            return Err(format!(
                "unexpected tools/call answer (HTTP {}): {v}",
                r.status
            ));
        }
        if keep {
            inner_ms.push(v["data"]["duration_ms"].as_f64().unwrap_or(f64::NAN));
        }
        Ok(t)
    };

    for _ in 0..CALL_WARMUP {
        direct_call(&mut fx)?;
        daemon_call(&mut http, false)?;
    }
    let mut direct = Vec::with_capacity(CALLS);
    let mut mediated = Vec::with_capacity(CALLS);
    // Where the time goes: on-CPU time and run-queue wait of the processes serving the calls
    // (direct fixture, daemon's fixture, daemon) and of this thread. The series alternate
    // and each process serves one series only, so each delta belongs to one series.
    let sched_paths = [
        format!("/proc/{}/schedstat", fx.child.id()),
        format!("/proc/{fx_pid}/schedstat"),
        format!("/proc/{}/schedstat", daemon.pid()),
    ];
    let sched = || {
        let mut v: Vec<_> = sched_paths.iter().map(|p| schedstat(p)).collect();
        v.push(schedstat("/proc/thread-self/schedstat"));
        v
    };
    let sched0 = sched();
    let cpu0 = cpu_times();
    // Placement: after each daemon block, where the daemon, its fixture and this thread
    // last ran (cross-CPU wake-ups are much dearer than same-CPU ones in a VM).
    let (d_stat, f_stat) = (
        format!("/proc/{}/stat", daemon.pid()),
        format!("/proc/{fx_pid}/stat"),
    );
    let (mut blocks, mut fx_with_daemon, mut me_with_daemon) = (0, 0, 0);
    let t_all = Instant::now();
    while direct.len() < CALLS {
        for _ in 0..CALL_BLOCK.min(CALLS - direct.len()) {
            direct.push(direct_call(&mut fx)?);
        }
        for _ in 0..CALL_BLOCK.min(CALLS - mediated.len()) {
            mediated.push(daemon_call(&mut http, true)?);
        }
        let d = last_cpu(&d_stat);
        blocks += 1;
        fx_with_daemon += usize::from(d.is_some() && last_cpu(&f_stat) == d);
        me_with_daemon += usize::from(d.is_some() && last_cpu("/proc/thread-self/stat") == d);
    }
    let elapsed = t_all.elapsed();
    let sched1 = sched();
    let cpu1 = cpu_times();
    let stats = http.get("/api/v1/mcp/servers/fx")?;
    drop(http);
    daemon.check_alive()?;
    let daemon_pid = daemon.pid();
    let fds = open_fds(daemon_pid).unwrap_or(0);
    let rss = vm_rss_kb(daemon_pid).unwrap_or(0);
    daemon.finish(notes);
    drop(fx);

    direct.sort();
    mediated.sort();
    inner_ms.retain(|v| v.is_finite());
    inner_ms.sort_by(f64::total_cmp);
    let (a50, a99) = (percentile(&direct, 50.0), percentile(&direct, 99.0));
    let (b50, b99) = (percentile(&mediated, 50.0), percentile(&mediated, 99.0));
    let over50 = (b50.as_secs_f64() - a50.as_secs_f64()) * 1e6;
    let over99 = (b99.as_secs_f64() - a99.as_secs_f64()) * 1e6;
    let mut rows = vec![
        Row::info(
            format!("(a) direct stdio echo, p50 / p99 of {CALLS}"),
            format!("{} / {}", us(a50), us(a99)),
        ),
        Row::info(
            format!("(b) echo via daemon (1 keep-alive conn), p50 / p99 of {CALLS}"),
            format!("{} / {}", us(b50), us(b99)),
        ),
        Row::new(
            "tool-call overhead p50(b) - p50(a)",
            us_f(over50),
            "<= 100 µs",
            over50 <= OVERHEAD_P50_TARGET_US,
        ),
        Row::info("tool-call overhead p99(b) - p99(a)", us_f(over99)),
    ];
    if !inner_ms.is_empty() {
        let i50 = percentile(&inner_ms, 50.0) * 1e3;
        rows.push(Row::info(
            "(b) split: daemon's own pipe round trip (data.duration_ms) p50",
            format!(
                "{} -> HTTP/routing/JSON part ≈ {}",
                us_f(i50),
                us_f(b50.as_secs_f64() * 1e6 - i50)
            ),
        ));
    }
    // Per call, µs: (on-CPU, run-queue wait) of direct fixture, daemon's fixture, daemon.
    let per_call: Vec<Option<(f64, f64)>> = sched0
        .iter()
        .zip(&sched1)
        .map(|(a, b)| {
            let ((c0, w0), (c1, w1)) = ((*a)?, (*b)?);
            let n = CALLS as f64 * 1e3;
            Some((
                c1.saturating_sub(c0) as f64 / n,
                w1.saturating_sub(w0) as f64 / n,
            ))
        })
        .collect();
    if let [Some(a), Some(f), Some(d), Some(me)] = per_call[..] {
        rows.push(Row::info(
            "  on-CPU per call (schedstat): fixture (a) | fixture (b) + daemon (b)",
            format!("{} | {} + {}", us_f(a.0), us_f(f.0), us_f(d.0)),
        ));
        rows.push(Row::info(
            "  run-queue wait per call (CPU contention): same three",
            format!("{} | {} + {}", us_f(a.1), us_f(f.1), us_f(d.1)),
        ));
        if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
            let total = c1.1.saturating_sub(c0.1).max(1) as f64;
            let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
            // Our four processes' on-CPU time as a share of all CPUs over the series.
            let ours =
                (a.0 + f.0 + d.0 + me.0) * CALLS as f64 / 1e6 / (elapsed.as_secs_f64() * cpus)
                    * 100.0;
            let busy = c1.0.saturating_sub(c0.0) as f64 / total * 100.0;
            let steal = c1.2.saturating_sub(c0.2) as f64 / total * 100.0;
            // Ticks are 10 ms: only a clear excess over our own share means other load.
            let verdict = if busy > ours + 15.0 {
                "other work competed"
            } else {
                "no other load to speak of"
            };
            rows.push(Row::info(
                "  all CPUs busy during the series (/proc/stat) | ours | steal",
                format!("{busy:.0} % | {ours:.0} % | {steal:.0} % ({verdict})"),
            ));
        }
    }
    rows.push(Row::info(
        "  blocks ending with the daemon on the CPU of its fixture | of this client",
        format!(
            "{fx_with_daemon}/{blocks} | {me_with_daemon}/{blocks} (cross-CPU hops cost most here)"
        ),
    ));
    rows.push(Row::info(
        "(b) daemon after the calls",
        format!(
            "calls {}, VmRSS {}, {fds} fds; both series took {:.2} s",
            stats["calls"],
            fmt_kb(rss),
            elapsed.as_secs_f64()
        ),
    ));
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// 2. RSS with 20 active servers.

fn measure_rss_20(bin: &Path, f: &Fixtures, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let config = format!("{BASE_CONFIG}[mcp_servers]\nmax_concurrent_servers = 25\n");
    let mut daemon = Daemon::start_ready(bin, &config, "rss-20")?;
    let pid = daemon.pid();
    let mut http = Http::connect(&daemon.socket)?;
    http.get("/api/v1/status")?;
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = vm_rss_kb(pid)?;
    let t0 = Instant::now();
    for i in 1..=SERVERS {
        http.post("/api/v1/mcp/servers", &f.spec(&format!("fx{i}"), json!({})))?;
    }
    let servers = wait_for(
        "20 servers active",
        SERVERS_UP_DEADLINE,
        Duration::from_millis(50),
        || {
            let list = http.get("/api/v1/mcp/servers")?;
            let servers = list["servers"].as_array().cloned().unwrap_or_default();
            if let Some(bad) = servers
                .iter()
                .find(|s| s["status"] == "failed" || s["status"] == "backoff")
            {
                return Err(format!("a server did not come up: {bad}"));
            }
            let active = servers.iter().filter(|s| s["status"] == "active").count();
            Ok((active == SERVERS).then_some(servers))
        },
    )?;
    let up = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    daemon.check_alive()?;
    let rss = vm_rss_kb(pid)?;
    let split = rss_split(pid);
    let fds = open_fds(pid)?;
    let pids: Vec<u32> = servers
        .iter()
        .filter_map(|s| s["pid"].as_u64().map(|p| p as u32))
        .collect();
    let fixtures_kb: u64 = pids.iter().filter_map(|&p| vm_rss_kb(p).ok()).sum();
    drop(http);
    daemon.finish(notes);
    // The daemon is gone: its servers must be too (closed stdin, or the reaper).
    let survivors = wait_for(
        "servers gone",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || {
            let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
            Ok(left.is_empty().then_some(Vec::new()))
        },
    )
    .unwrap_or_else(|_| pids.iter().copied().filter(|&p| alive(p)).collect());
    if !survivors.is_empty() {
        notes.push(format!(
            "[rss-20] {} fixture(s) outlived the daemon's graceful stop by 3 s: {survivors:?} (killed now)",
            survivors.len()
        ));
        for p in survivors {
            // SAFETY: kill(2); these were the daemon's children, now orphans of init.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
        }
    }

    let rss_b = rss * 1024;
    Ok(vec![
        Row::new(
            format!("daemon VmRSS with {SERVERS} active fixture servers (1 s after)"),
            fmt_kb(rss),
            "<= 6 MiB",
            rss_b <= RSS_20_TARGET,
        ),
        Row::info(
            "  same daemon before registering any server",
            format!(
                "{}; +{:.1} kB per server",
                fmt_kb(rss0),
                rss.saturating_sub(rss0) as f64 / SERVERS as f64
            ),
        ),
        Row::info("  RSS split (smaps_rollup)", format!("{split}; {fds} fds")),
        Row::info(
            format!(
                "sum of the {} fixtures' VmRSS (python, context)",
                pids.len()
            ),
            format!(
                "{} (all {SERVERS} active {:.1} s after the first register)",
                fmt_kb(fixtures_kb),
                up.as_secs_f64()
            ),
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// 3. Child death -> restart scheduled.

fn measure_restart(bin: &Path, f: &Fixtures, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut daemon = Daemon::start_ready(bin, BASE_CONFIG, "child-death")?;
    let mut http = Http::connect(&daemon.socket)?;
    // backoff_max_ms and max_failures keep the 20 restarts at 100 ms each: otherwise the
    // delay doubles per failed start and the breaker opens after 5 (default policy).
    http.post(
        "/api/v1/mcp/servers",
        &f.spec(
            "fx",
            json!({"backoff_initial_ms": 100, "backoff_max_ms": 100, "max_failures": 1000}),
        ),
    )?;
    let mut stamped: Vec<i64> = Vec::with_capacity(KILLS);
    let mut observed: Vec<Duration> = Vec::with_capacity(KILLS);
    let mut last_pid = 0u64;
    let mut sample_reason = String::new();
    let mut to_exit: Vec<Duration> = Vec::with_capacity(KILLS);
    let mut exit_to_backoff: Vec<i64> = Vec::with_capacity(KILLS);
    for _ in 0..KILLS {
        let pid = wait_for("fx active", DEADLINE, Duration::from_millis(5), || {
            let s = http.get("/api/v1/mcp/servers/fx")?;
            if s["status"] == "failed" {
                return Err(format!("fx failed: {}", s["history"]));
            }
            let pid = s["pid"].as_u64().unwrap_or(0);
            Ok((s["status"] == "active" && pid != 0 && pid != last_pid).then_some(pid))
        })?;
        last_pid = pid;
        // A pidfd turns readable when the process has exited: that splits the latency into
        // the kernel's part (kill -> exit) and the daemon's (exit -> backoff recorded).
        // SAFETY: pidfd_open(2) with a pid and no flags; the result is checked.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        // SAFETY: a non-negative result is a new fd that nothing else owns.
        let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
        let wall = SystemTime::now();
        let mono = Instant::now();
        // SAFETY: kill(2) on the daemon's child, active (not reaped) as just reported.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } != 0 {
            return Err(format!("kill {pid}: {}", std::io::Error::last_os_error()));
        }
        let kill_ms = unix_ms(wall);
        let exited = match &pidfd {
            Some(fd) => {
                wait_readable(fd.as_raw_fd(), mono + DEADLINE)
                    .map_err(|e| format!("pidfd of {pid} after SIGKILL: {e}"))?;
                Some((mono.elapsed(), unix_ms(SystemTime::now())))
            }
            None => None,
        };
        let (at_ms, seen, reason) = wait_for(
            "backoff after the kill",
            DEADLINE,
            Duration::from_micros(500),
            || {
                let s = http.get("/api/v1/mcp/servers/fx")?;
                let hit = s["history"].as_array().and_then(|h| {
                    h.iter().rev().find_map(|e| {
                        let at = parse_rfc3339_ms(e["at"].as_str()?)?;
                        (e["status"] == "backoff" && at >= kill_ms)
                            .then(|| (at, e["reason"].as_str().unwrap_or("").to_string()))
                    })
                });
                Ok(hit.map(|(at, r)| (at, mono.elapsed(), r)))
            },
        )?;
        stamped.push(at_ms - kill_ms);
        observed.push(seen);
        if let Some((t, exit_ms)) = exited {
            to_exit.push(t);
            exit_to_backoff.push(at_ms - exit_ms);
        }
        sample_reason = reason;
    }
    let restarts = http.get("/api/v1/mcp/servers/fx")?["restarts"].clone();
    drop(http);
    daemon.check_alive()?;
    daemon.finish(notes);
    stamped.sort_unstable();
    observed.sort();
    let med = percentile(&stamped, 50.0);
    let max = stamped[stamped.len() - 1];
    let show = |ms: i64| {
        if ms <= 0 {
            "< 1 ms".to_string()
        } else {
            format!("{ms} ms")
        }
    };
    let mut rows = vec![
        Row::new(
            format!("SIGKILL -> `backoff` in history (its `at`), median of {KILLS}"),
            show(med),
            "<= 10 ms",
            med <= RESTART_TARGET_MS,
        ),
        Row::new(
            format!("SIGKILL -> `backoff` in history (its `at`), max of {KILLS}"),
            show(max),
            "<= 10 ms",
            max <= RESTART_TARGET_MS,
        ),
        Row::info(
            "  same, as seen by polling GET every 0.5 ms, median / max",
            format!(
                "{} / {} (upper bound: includes the poll)",
                us(percentile(&observed, 50.0)),
                us(observed[observed.len() - 1])
            ),
        ),
    ];
    if !to_exit.is_empty() {
        to_exit.sort();
        exit_to_backoff.sort_unstable();
        rows.push(Row::info(
            "  split: SIGKILL -> process exited (pidfd), median / max",
            format!(
                "{} / {}",
                us(percentile(&to_exit, 50.0)),
                us(to_exit[to_exit.len() - 1])
            ),
        ));
        rows.push(Row::info(
            "  split: exited -> `backoff` `at` (ms, signed), median / max",
            format!(
                "{} ms / {} ms (<= 0: within the ms the bench saw the exit)",
                percentile(&exit_to_backoff, 50.0),
                exit_to_backoff[exit_to_backoff.len() - 1]
            ),
        ));
    }
    rows.push(Row::info(
        "  last backoff reason; restarts counted",
        format!("\"{sample_reason}\"; {restarts}"),
    ));
    Ok(rows)
}

// ---------------------------------------------------------------------------------------
// 4. 1,000 spawn/kill cycles.

fn measure_flap(bin: &Path, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let config = format!("{BASE_CONFIG}[mcp_servers]\nfailure_window_ms = 1000\n");
    let mut daemon = Daemon::start_ready(bin, &config, "flap")?;
    let pid = daemon.pid();
    let mut http = Http::connect(&daemon.socket)?;
    http.get("/api/v1/status")?;
    std::thread::sleep(Duration::from_millis(300));
    // Our keep-alive connection is open in both counts.
    let fds0 = open_fds(pid)?;
    let rss0 = vm_rss_kb(pid)?;
    let cpu0 = cpu_ticks(pid).unwrap_or(0);
    let children0 = children_of(pid).len();
    let t0 = Instant::now();
    http.post(
        "/api/v1/mcp/servers",
        &json!({"id": "flap", "command": "/bin/sh", "args": ["-c", "exit 1"],
                "backoff_initial_ms": 10, "backoff_max_ms": 10, "max_failures": 1000}),
    )?;
    let mut max_fds = fds0;
    let (restarts, elapsed) = wait_for(
        "1000 restarts",
        FLAP_DEADLINE,
        Duration::from_millis(50),
        || {
            let s = http.get("/api/v1/mcp/servers/flap")?;
            max_fds = max_fds.max(open_fds(pid).unwrap_or(0));
            if s["status"] == "failed" {
                return Err(format!(
                    "the circuit breaker opened after {} restarts: {}",
                    s["restarts"],
                    s["history"][s["history"]
                        .as_array()
                        .map_or(0, Vec::len)
                        .saturating_sub(1)]
                ));
            }
            let n = s["restarts"].as_u64().unwrap_or(0);
            Ok((n >= FLAP_CYCLES).then(|| (n, t0.elapsed())))
        },
    )
    .map_err(|e| daemon.failure(&e))?;
    let cpu1 = cpu_ticks(pid).unwrap_or(0);
    http.post("/api/v1/mcp/servers/flap/stop", &json!({}))?;
    let final_restarts = wait_for("flap stopped", DEADLINE, Duration::from_millis(10), || {
        let s = http.get("/api/v1/mcp/servers/flap")?;
        Ok((s["status"] == "stopped").then(|| s["restarts"].clone()))
    })?;
    std::thread::sleep(Duration::from_millis(300));
    daemon.check_alive()?;
    let children = children_of(pid);
    let zombies: Vec<u32> = children
        .iter()
        .filter(|(_, st)| *st == 'Z')
        .map(|(p, _)| *p)
        .collect();
    let fds1 = open_fds(pid)?;
    let rss1 = vm_rss_kb(pid)?;
    drop(http);
    daemon.finish(notes);

    // What the daemon's orphan sweep does on every child exit: read every /proc/*/stat.
    let scans = 20;
    let t_scan = Instant::now();
    let mut procs = 0;
    for _ in 0..scans {
        procs = std::fs::read_dir("/proc").map_or(0, |d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count()
        });
        let _ = children_of(std::process::id());
    }
    let scan = t_scan.elapsed() / scans;
    let growth = fds1 as i64 - fds0 as i64;
    let cps = restarts as f64 / elapsed.as_secs_f64();
    let cpu_ms = (cpu1.saturating_sub(cpu0)) as f64 * 1000.0 / ticks_per_sec() as f64;
    Ok(vec![
        Row::info(
            "spawn/kill cycles (`restarts` >= 1000)",
            format!(
                "{restarts} in {:.2} s = {cps:.1} cycles/s (backoff 10 ms ±20 %); daemon CPU {:.0} ms = {:.2} ms/cycle",
                elapsed.as_secs_f64(),
                cpu_ms,
                cpu_ms / restarts as f64
            ),
        ),
        Row::info(
            "  one full /proc scan here (the daemon sweeps /proc per child exit)",
            format!("{} over {procs} processes (incl. a readdir to count them)", us(scan)),
        ),
        Row::new(
            "zombies among the daemon's children after stop",
            format!(
                "{} (children: {} now, {children0} before)",
                zombies.len(),
                children.len()
            ),
            "0",
            zombies.is_empty(),
        ),
        Row::new(
            "daemon open fds, before -> after",
            format!("{fds0} -> {fds1} (growth {growth}; peak seen {max_fds})"),
            "growth 0",
            growth == 0,
        ),
        Row::info(
            "daemon VmRSS, before -> after",
            format!(
                "{} -> {} (+{} kB); restarts at stop {final_restarts}",
                fmt_kb(rss0),
                fmt_kb(rss1),
                rss1 as i64 - rss0 as i64
            ),
        ),
    ])
}

// ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; other arguments are section filters (see `run`).
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
    let python = on_path("python3").map(|p| real_python(&p));

    println!("# vsm-daemon MCP benchmark");
    println!("binary under test: {}", under_test.display());
    match &static_bin {
        Some(p) => println!(
            "static binary:     {} (all metrics use this one)",
            p.display()
        ),
        None => println!("static binary:     none (set VSM_BENCH_STATIC_BIN to measure one)"),
    }
    println!("measured:          {}", measured.display());
    println!(
        "fixture:           {} {}",
        match &python {
            Some(Ok(p)) => p.display().to_string(),
            Some(Err(e)) => format!("python3 unusable: {e}"),
            None => "python3 (NOT FOUND)".into(),
        },
        script.display()
    );
    println!("kernel:            {}", kernel());
    println!(
        "cpus:              {}",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("date:              {}", utc_now());
    println!();

    let started = Instant::now();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut failed = false;
    // `cargo bench --bench mcp -- WORD..` runs only the sections whose name contains a WORD.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut run = |name: &str,
                   notes: &mut Vec<String>,
                   f: &mut dyn FnMut(&mut Vec<String>) -> Result<Vec<Row>>| {
        if !filters.is_empty() && !filters.iter().any(|w| name.contains(w.as_str())) {
            return;
        }
        let t0 = Instant::now();
        match f(notes) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("mcp bench: {name}: {e}");
                rows.push(Row::error(name, &e));
                failed = true;
            }
        }
        notes.push(format!(
            "[{name}] section took {:.1} s",
            t0.elapsed().as_secs_f64()
        ));
    };
    let fixtures = match python {
        Some(Ok(python)) if script.is_file() => Ok(Fixtures { python, script }),
        Some(Ok(_)) => Err(format!("{} not found", script.display())),
        Some(Err(e)) => Err(e),
        None => Err("python3 is not on PATH".to_string()),
    };
    match &fixtures {
        Ok(fx) => {
            run("tool-call overhead", &mut notes, &mut |n| {
                measure_tool_calls(&measured, fx, n)
            });
            run("RSS with 20 servers", &mut notes, &mut |n| {
                measure_rss_20(&measured, fx, n)
            });
            run("child death -> restart", &mut notes, &mut |n| {
                measure_restart(&measured, fx, n)
            });
        }
        Err(e) => {
            for name in [
                "tool-call overhead",
                "RSS with 20 servers",
                "child death -> restart",
            ] {
                run(name, &mut notes, &mut |_| Err(e.clone()));
            }
        }
    }
    run("1000 spawn/kill cycles", &mut notes, &mut |n| {
        measure_flap(&measured, n)
    });

    print_table(&rows);
    println!();
    println!(
        "note: tool calls: {CALL_WARMUP} unmeasured warm-up calls each, then (a) and (b) alternate \
         in blocks of {CALL_BLOCK}; (a) times write -> response line on the fixture's pipes, \
         (b) times request written -> response read by Content-Length; percentiles are nearest-rank"
    );
    println!(
        "note: child death latency = history `at` (ms, truncated) - floor(kill time in ms); \
         0 is shown as \"< 1 ms\"; the spec adds backoff_max_ms 100 and max_failures 1000 so \
         20 kills neither slow down (doubling) nor open the breaker"
    );
    println!("note: health_check_interval_ms = 3600000 in every daemon (no pings during the runs)");
    for n in &notes {
        println!("note: {n}");
    }
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());
    if failed {
        eprintln!("mcp bench: some metrics could not be measured");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
