//! Foundation benchmark: size, start-up latency, idle footprint and control-socket latency
//! of the `vsm-daemon` binary.
//!
//! Run with `cargo bench --bench foundation`. Environment:
//! - `VSM_BENCH_BIN`: binary under test (default: the one cargo built for this bench).
//! - `VSM_BENCH_STATIC_BIN`: a static build (`packaging/build-static.sh`); when set, its size
//!   is reported too and every run-time metric is measured with it (that is what ships).
//!
//! Prints one table (metric | value | target | verdict). A missed target is reported as
//! `MISSED`, never a panic; the process exits non-zero only when something could not be
//! measured (the daemon failed to start, a request failed, a deadline passed, ...).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MB: u64 = 1024 * 1024;
const SIZE_TARGET: u64 = 2 * MB;
const RSS_TARGET: u64 = 3 * MB;
const READY_TARGET: Duration = Duration::from_millis(10);
const RAW_P50_TARGET: Duration = Duration::from_millis(2);

const READY_RUNS: usize = 20;
const RAW_REQUESTS: usize = 2_000;
const RAW_WARMUP: usize = 20;
const CLI_RUNS: usize = 50;
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Bound on every wait for the daemon (ready, exit, a request).
const DEADLINE: Duration = Duration::from_secs(10);

const NO_CHECK_DUE_CONFIG: &str = "[monitoring]\nhealth_check_interval_ms = 3600000\n";
const STATUS_REQUEST: &[u8] =
    b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

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
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
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

fn fmt_bytes(b: u64) -> String {
    format!("{b} B ({:.2} MiB)", b as f64 / MB as f64)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Nearest-rank percentile of an already sorted slice.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Median of a sorted slice (mean of the two middle values for an even count).
fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` without a date crate (Howard Hinnant's civil-from-days).
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

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

// ---------------------------------------------------------------------------------------
// A daemon under test: its own temp dir, killed and cleaned up on drop.

static RUN: AtomicUsize = AtomicUsize::new(0);

struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    /// The `{"event":"ready",...}` line, when started with [`Daemon::start_ready`].
    ready: Option<serde_json::Value>,
}

impl Daemon {
    /// A fresh `temp_dir()/vsm-bench-<pid>-<n>` holding the socket, state dir and config.
    fn fresh_dir(config: Option<&str>) -> Result<(PathBuf, Vec<String>)> {
        let n = RUN.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vsm-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut args = vec![
            "start".to_string(),
            "--socket".into(),
            dir.join("sock").display().to_string(),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--json".into(),
        ];
        if let Some(text) = config {
            let file = dir.join("config.toml");
            if let Err(e) = std::fs::write(&file, text) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("write {}: {e}", file.display()));
            }
            args.push("--config".into());
            args.push(file.display().to_string());
        }
        Ok((dir, args))
    }

    fn command(bin: &Path, args: &[String], dir: &Path, stdout: Stdio) -> Result<Command> {
        let log = std::fs::File::create(dir.join("daemon.log"))
            .map_err(|e| format!("create daemon.log: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .env_remove("NOTIFY_SOCKET");
        Ok(cmd)
    }

    /// Spawns and times exec until the first successful `connect` on the control socket.
    fn start_timed(bin: &Path) -> Result<(Daemon, Duration)> {
        let (dir, args) = Self::fresh_dir(None)?;
        let socket = dir.join("sock");
        let mut daemon = Daemon {
            child: None,
            dir,
            socket,
            ready: None,
        };
        let mut cmd = Self::command(bin, &args, &daemon.dir, Stdio::null())?;
        let t0 = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        daemon.child = Some(child);
        let mut spins: u32 = 0;
        loop {
            if UnixStream::connect(&daemon.socket).is_ok() {
                let elapsed = t0.elapsed();
                return Ok((daemon, elapsed));
            }
            spins = spins.wrapping_add(1);
            // Checking for an early exit costs a syscall: do it only now and then.
            if spins % 256 == 0 {
                daemon.check_alive()?;
                if t0.elapsed() > DEADLINE {
                    return Err(daemon.failure("socket not connectable within 10 s"));
                }
            }
            std::thread::yield_now();
        }
    }

    /// Spawns and waits (bounded) for the ready line on stdout.
    fn start_ready(bin: &Path, config: Option<&str>) -> Result<Daemon> {
        let (dir, args) = Self::fresh_dir(config)?;
        let socket = dir.join("sock");
        let mut daemon = Daemon {
            child: None,
            dir,
            socket,
            ready: None,
        };
        let mut cmd = Self::command(bin, &args, &daemon.dir, Stdio::piped())?;
        let mut child = cmd
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
            let first = lines.next();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => return Err(daemon.failure("daemon closed stdout before the ready line")),
            Err(_) => return Err(daemon.failure("no ready line within 10 s")),
        };
        let ready: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| daemon.failure(&format!("ready line is not JSON ({e}): {line}")))?;
        if ready["event"] != "ready" {
            return Err(daemon.failure(&format!("unexpected first line: {line}")));
        }
        let pid = ready["pid"].as_u64();
        if pid != Some(u64::from(daemon.pid())) {
            return Err(daemon.failure(&format!(
                "ready pid {pid:?} is not the spawned pid {}",
                daemon.pid()
            )));
        }
        daemon.ready = Some(ready);
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

    /// An error message with the tail of the daemon's log.
    fn failure(&self, what: &str) -> String {
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        if tail.is_empty() {
            what.to_string()
        } else {
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{what}; daemon log tail: {}", tail.join(" / "))
        }
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
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(None) => return Err(self.failure("daemon did not exit within 10 s of SIGTERM")),
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Talking to the daemon.

/// One request on a fresh connection, read to EOF; the raw response.
fn raw_request(socket: &Path, request: &[u8]) -> Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(DEADLINE))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(2048);
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    if !buf.starts_with(b"HTTP/1.1 200") {
        let head = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned();
        return Err(format!("unexpected response: {head:?}"));
    }
    Ok(buf)
}

/// `vsm-daemon --socket S status [extra..] --json`, parsed.
fn cli_status(bin: &Path, socket: &Path, extra: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(bin)
        .arg("--socket")
        .arg(socket)
        .arg("status")
        .args(extra)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run status: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "status exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("status output is not JSON: {e}"))
}

fn proc_status_field(path: &Path, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// (voluntary, nonvoluntary, threads) summed over `/proc/PID/task/*/status`.
fn ctxt_switches(pid: u32) -> Result<(u64, u64, usize)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("read /proc/{pid}/task: {e}"))?;
    let (mut vol, mut nonvol, mut threads) = (0, 0, 0);
    for task in tasks.flatten() {
        let status = task.path().join("status");
        // A thread may exit between readdir and read; skip it.
        if let (Some(v), Some(n)) = (
            proc_status_field(&status, "voluntary_ctxt_switches"),
            proc_status_field(&status, "nonvoluntary_ctxt_switches"),
        ) {
            vol += v;
            nonvol += n;
            threads += 1;
        }
    }
    if threads == 0 {
        return Err(format!("no readable task under /proc/{pid}/task"));
    }
    Ok((vol, nonvol, threads))
}

// ---------------------------------------------------------------------------------------
// The measurements.

fn measure_sizes(under_test: &Path, static_bin: Option<&Path>) -> Result<Vec<Row>> {
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("stat {}: {e}", p.display()))
    };
    let mut rows = vec![Row::info(
        "binary size (binary under test)",
        fmt_bytes(size(under_test)?),
    )];
    match static_bin {
        None => rows.push(Row {
            metric: "binary size (static)".into(),
            value: "not measured: VSM_BENCH_STATIC_BIN unset".into(),
            target: "<= 2 MiB".into(),
            verdict: "n/a",
        }),
        Some(p) => {
            let bytes = size(p)?;
            rows.push(Row::new(
                "binary size (static)",
                fmt_bytes(bytes),
                "<= 2 MiB (2097152 B)",
                bytes <= SIZE_TARGET,
            ));
            let out = Command::new("ldd")
                .arg(p)
                .output()
                .map_err(|e| format!("run ldd: {e}"))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // glibc's ldd says "not a dynamic executable" for a static non-PIE binary and
            // "statically linked" for a static-pie one (what `+crt-static` gives on
            // x86_64-unknown-linux-gnu): both mean no interpreter and no shared library.
            let not_dynamic = text.contains("not a dynamic executable");
            let static_pie = text.contains("statically linked");
            let first = text.lines().next().unwrap_or("").trim().to_string();
            let value = if not_dynamic {
                format!("yes (ldd: {first})")
            } else if static_pie {
                format!("no, static-pie instead (ldd: {first})")
            } else {
                format!("no, dynamic (ldd: {first} ...)")
            };
            rows.push(Row::new(
                "static: ldd says \"not a dynamic executable\"",
                value,
                "static (non-PIE or static-pie)",
                not_dynamic || static_pie,
            ));
        }
    }
    Ok(rows)
}

fn measure_ready(bin: &Path) -> Result<Vec<Row>> {
    let mut times = Vec::with_capacity(READY_RUNS);
    for _ in 0..READY_RUNS {
        let (mut daemon, t) = Daemon::start_timed(bin)?;
        times.push(t);
        daemon.stop()?;
    }
    times.sort();
    let med = median(&times);
    Ok(vec![
        Row::new(
            format!("exec -> socket connectable, median of {READY_RUNS}"),
            ms(med),
            "<= 10 ms",
            med <= READY_TARGET,
        ),
        Row::info(
            format!("exec -> socket connectable, max of {READY_RUNS}"),
            ms(*times.last().unwrap_or(&Duration::ZERO)),
        ),
    ])
}

fn measure_rss(bin: &Path) -> Result<Vec<Row>> {
    let mut daemon = Daemon::start_ready(bin, None)?;
    raw_request(&daemon.socket, STATUS_REQUEST)?;
    std::thread::sleep(Duration::from_secs(1));
    daemon.check_alive()?;
    let pid = daemon.pid();
    let rss_kb = proc_status_field(Path::new(&format!("/proc/{pid}/status")), "VmRSS")
        .ok_or("no VmRSS in /proc/PID/status")?;
    // Where the resident memory is, for the diagnosis of a miss.
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    let rss = rss_kb * 1024;
    let mut rows = vec![Row::new(
        "idle RSS (VmRSS, 1 s after one status)",
        fmt_bytes(rss),
        "<= 3 MiB",
        rss <= RSS_TARGET,
    )];
    if let (Some(anon), Some(file)) = (field("Anonymous"), field("Rss")) {
        rows.push(Row::info(
            "idle RSS split (smaps_rollup)",
            format!(
                "anon {anon} kB, file-backed {} kB, threads {}",
                file.saturating_sub(anon),
                ctxt_switches(pid).map(|c| c.2).unwrap_or(0)
            ),
        ));
    }
    daemon.stop()?;
    Ok(rows)
}

fn measure_idle(bin: &Path) -> Result<Vec<Row>> {
    let mut daemon = Daemon::start_ready(bin, Some(NO_CHECK_DUE_CONFIG))?;
    let pid = daemon.pid();
    let wakeups = |d: &Daemon| -> Result<u64> {
        cli_status(bin, &d.socket, &["--detailed"])?["loop"]["wakeups"]
            .as_u64()
            .ok_or_else(|| "status --detailed has no loop.wakeups".to_string())
    };
    // How this is measured:
    // - Context switches: the first `status` call (w0) happens *before* the 1 s settling
    //   pause and the first /proc read, so its accept/read/write/close handling is over by
    //   c0. Between c0 and c1 nothing talks to the daemon; reading /proc/PID/task/*/status
    //   does not schedule the daemon's threads. So c1 - c0 is the daemon's own activity
    //   over the 10 s idle window (all threads: the loop and the worker).
    // - Wake-ups: each `status --detailed` call adds some loop wake-ups itself (accept,
    //   request, then the client's close after the counter was read). w1 - w0 therefore
    //   holds the idle wake-ups plus one call's worth: the tail of call 0 and the head of
    //   call 1 together are exactly the wake-ups of one whole call. A third call right
    //   after the second (w2 - w1, no idle time in between) measures that per-call cost,
    //   and idle wake-ups = (w1 - w0) - (w2 - w1), over the ~11 s from w0 to w1.
    let w0 = wakeups(&daemon)?;
    std::thread::sleep(Duration::from_secs(1));
    daemon.check_alive()?;
    let c0 = ctxt_switches(pid)?;
    std::thread::sleep(IDLE_WINDOW);
    let c1 = ctxt_switches(pid)?;
    daemon.check_alive()?;
    let w1 = wakeups(&daemon)?;
    let w2 = wakeups(&daemon)?;
    let switches = (c1.0 + c1.1).saturating_sub(c0.0 + c0.1);
    let per_call = w2.saturating_sub(w1);
    let idle_wakeups = w1.saturating_sub(w0).saturating_sub(per_call);
    daemon.stop()?;
    Ok(vec![
        Row::new(
            "context switches over 10 s idle (all threads, vol+nonvol)",
            format!(
                "{switches} (vol {}, nonvol {}, {} threads)",
                c1.0.saturating_sub(c0.0),
                c1.1.saturating_sub(c0.1),
                c1.2
            ),
            "0",
            switches == 0,
        ),
        Row::new(
            "loop wake-ups over ~11 s idle (status calls subtracted)",
            format!(
                "{idle_wakeups} (raw delta {}, minus {per_call} per status call)",
                w1.saturating_sub(w0)
            ),
            "0",
            idle_wakeups == 0,
        ),
    ])
}

fn measure_round_trip(bin: &Path) -> Result<Vec<Row>> {
    let mut daemon = Daemon::start_ready(bin, None)?;
    for _ in 0..RAW_WARMUP {
        raw_request(&daemon.socket, STATUS_REQUEST)?;
    }
    let mut raw = Vec::with_capacity(RAW_REQUESTS);
    for _ in 0..RAW_REQUESTS {
        let t0 = Instant::now();
        raw_request(&daemon.socket, STATUS_REQUEST)?;
        raw.push(t0.elapsed());
    }
    raw.sort();
    let mut cli = Vec::with_capacity(CLI_RUNS);
    for _ in 0..CLI_RUNS {
        let t0 = Instant::now();
        let out = Command::new(bin)
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run status: {e}"))?;
        let t = t0.elapsed();
        if !out.status.success() {
            return Err(format!("status exited with {}", out.status));
        }
        cli.push(t);
    }
    cli.sort();
    daemon.check_alive()?;
    daemon.stop()?;
    let p50 = percentile(&raw, 50.0);
    Ok(vec![
        Row::new(
            format!("status over raw socket, p50 of {RAW_REQUESTS} (fresh conn each)"),
            us(p50),
            "<= 2 ms",
            p50 <= RAW_P50_TARGET,
        ),
        Row::info(
            format!("status over raw socket, p99 of {RAW_REQUESTS}"),
            us(percentile(&raw, 99.0)),
        ),
        Row::info(
            format!("`status --json` CLI incl. spawn, p50 of {CLI_RUNS}"),
            ms(percentile(&cli, 50.0)),
        ),
        Row::info(
            format!("`status --json` CLI incl. spawn, p99 of {CLI_RUNS}"),
            ms(percentile(&cli, 99.0)),
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

    println!("# vsm-daemon foundation benchmark");
    println!("binary under test: {}", under_test.display());
    match &static_bin {
        Some(p) => println!(
            "static binary:     {} (run-time metrics use this one)",
            p.display()
        ),
        None => println!("static binary:     none (set VSM_BENCH_STATIC_BIN to measure one)"),
    }
    println!("measured:          {}", measured.display());
    println!("kernel:            {}", kernel());
    println!("date:              {}", utc_now());
    println!();

    let mut rows = Vec::new();
    let mut failed = false;
    let mut run = |name: &str, f: &dyn Fn() -> Result<Vec<Row>>| match f() {
        Ok(r) => rows.extend(r),
        Err(e) => {
            eprintln!("foundation bench: {name}: {e}");
            rows.push(Row::error(name, &e));
            failed = true;
        }
    };
    run("binary size", &|| {
        measure_sizes(&under_test, static_bin.as_deref())
    });
    run("exec to socket ready", &|| measure_ready(&measured));
    run("idle RSS", &|| measure_rss(&measured));
    run("idle context switches", &|| measure_idle(&measured));
    run("status round trip", &|| measure_round_trip(&measured));

    print_table(&rows);
    println!();
    match on_path("supervisorctl") {
        Some(p) => println!(
            "note: supervisorctl found at {} but is not measured by this bench",
            p.display()
        ),
        None => println!(
            "note: supervisorctl is not on PATH, so its `status` is not measured for comparison"
        ),
    }
    println!(
        "note: raw round trips are preceded by {RAW_WARMUP} unmeasured warm-up requests; \
         percentiles are nearest-rank"
    );
    if failed {
        eprintln!("foundation bench: some metrics could not be measured");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
