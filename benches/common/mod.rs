//! Harness code shared by the `harness = false` benchmarks (`foundation`, `mcp`, `api`).
//!
//! - the result table ([`Row`], [`Table`]) and the section runner that fills it ([`Sections`]:
//!   a section that cannot be measured becomes an `ERROR` row and a non-zero exit, never a
//!   panic);
//! - the binaries under test ([`Binaries`]) and the host's description ([`kernel`],
//!   [`cpus`], [`utc_now`]);
//! - formatting ([`us`], [`fmt_kb`]) and statistics ([`percentile`], [`median`]);
//! - `/proc` readers ([`proc_status_kb`], [`rollup_kb`], [`open_fds`], [`cpu_ticks`],
//!   [`children_of`], ...);
//! - polling with a deadline ([`wait_for`]);
//! - a daemon under test in its own temp dir, killed and cleaned up on drop ([`DaemonGuard`],
//!   [`TempDir`]);
//! - HTTP/1.1 over one keep-alive connection, TCP or Unix ([`Http`], [`tcp`], [`unix`]);
//! - the MCP fixture server's spec ([`Fixtures`]) and a direct stdio client of it
//!   ([`DirectFixture`], the baseline a daemon-mediated call is compared with).
//!
//! Each bench includes it with `mod common;`. Cargo builds no target of its own from
//! `benches/common/`: the benches are declared explicitly in Cargo.toml (`autobenches = false`).

// Each bench uses a subset of this module; what one bench leaves unused is not dead code.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub type Result<T> = std::result::Result<T, String>;

pub const MB: u64 = 1024 * 1024;

/// Bound on every single wait (daemon ready or exited, one response, one line, ...).
pub const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The table.

/// One line of the result table.
pub struct Row {
    pub metric: String,
    pub value: String,
    pub target: String,
    pub verdict: &'static str,
}

impl Row {
    /// A figure with a target: verdict `ok`, or `MISSED`.
    pub fn new(metric: impl Into<String>, value: impl Into<String>, target: &str, ok: bool) -> Row {
        Row {
            metric: metric.into(),
            value: value.into(),
            target: target.into(),
            verdict: if ok { "ok" } else { "MISSED" },
        }
    }

    /// A figure reported for information only, without a target.
    pub fn info(metric: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            metric: metric.into(),
            value: value.into(),
            target: "-".into(),
            verdict: "info",
        }
    }

    /// A metric that was not measured because something is missing (not an error).
    pub fn skipped(metric: impl Into<String>, why: &str, target: &str) -> Row {
        Row {
            metric: metric.into(),
            value: why.into(),
            target: target.into(),
            verdict: "n/a",
        }
    }

    /// A metric that could not be measured.
    pub fn error(metric: &str, err: &str) -> Row {
        Row {
            metric: metric.into(),
            value: format!("could not measure: {err}"),
            target: "-".into(),
            verdict: "ERROR",
        }
    }
}

/// The result table: metric | value | target | verdict.
#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
}

impl Table {
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn extend(&mut self, rows: impl IntoIterator<Item = Row>) {
        self.rows.extend(rows);
    }

    /// Prints the table as Markdown, its columns padded to the widest cell (in chars).
    pub fn print(&self) {
        let header = ["metric", "value", "target", "verdict"];
        let cells: Vec<[&str; 4]> = self
            .rows
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
}

/// Runs a bench's measurement sections into one [`Table`]. A section that fails becomes an
/// `ERROR` row (and the error goes to stderr); [`Sections::exit_code`] then says FAILURE.
pub struct Sections {
    bench: &'static str,
    filters: Vec<String>,
    pub table: Table,
    /// Notes the sections leave (log summaries, how long each section took, ...).
    pub notes: Vec<String>,
    failed: bool,
}

impl Sections {
    /// `bench` names the bench in stderr messages; a section runs only when its name
    /// contains one of `filters` (all run when there is none).
    pub fn new(bench: &'static str, filters: Vec<String>) -> Sections {
        Sections {
            bench,
            filters,
            table: Table::default(),
            notes: Vec::new(),
            failed: false,
        }
    }

    /// The words of `cargo bench --bench NAME -- WORD..` (cargo itself passes `--bench`,
    /// which is not a filter).
    pub fn filters_from_args() -> Vec<String> {
        std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect()
    }

    /// Runs one section (unless filtered out) and notes how long it took.
    pub fn run(&mut self, name: &str, f: impl FnOnce(&mut Vec<String>) -> Result<Vec<Row>>) {
        if !self.filters.is_empty() && !self.filters.iter().any(|w| name.contains(w.as_str())) {
            return;
        }
        let t0 = Instant::now();
        match f(&mut self.notes) {
            Ok(rows) => self.table.extend(rows),
            Err(e) => {
                eprintln!("{} bench: {name}: {e}", self.bench);
                self.table.push(Row::error(name, &e));
                self.failed = true;
            }
        }
        self.notes.push(format!(
            "[{name}] section took {:.1} s",
            t0.elapsed().as_secs_f64()
        ));
    }

    /// FAILURE when some section could not be measured (said on stderr), else SUCCESS.
    pub fn exit_code(&self) -> ExitCode {
        if self.failed {
            eprintln!("{} bench: some metrics could not be measured", self.bench);
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

// ---------------------------------------------------------------------------------------
// The binaries under test and the host.

/// The binaries a bench looks at, from the environment.
pub struct Binaries {
    /// `VSM_BENCH_BIN`, or the binary cargo built for this bench.
    pub under_test: PathBuf,
    /// `VSM_BENCH_STATIC_BIN`: a static build (`packaging/build-static.sh`).
    pub static_bin: Option<PathBuf>,
    /// The one the run-time metrics use: the static build when there is one.
    pub measured: PathBuf,
}

impl Binaries {
    pub fn from_env() -> Binaries {
        let env_path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let under_test = env_path("VSM_BENCH_BIN")
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vsm-daemon")));
        let static_bin = env_path("VSM_BENCH_STATIC_BIN");
        let measured = static_bin.clone().unwrap_or_else(|| under_test.clone());
        Binaries {
            under_test,
            static_bin,
            measured,
        }
    }

    /// The `binary under test` / `static binary` / `measured` header lines; `static_use`
    /// says what the static binary is used for.
    pub fn print(&self, static_use: &str) {
        println!("binary under test: {}", self.under_test.display());
        match &self.static_bin {
            Some(p) => println!("static binary:     {} ({static_use})", p.display()),
            None => println!("static binary:     none (set VSM_BENCH_STATIC_BIN to measure one)"),
        }
        println!("measured:          {}", self.measured.display());
    }
}

/// `ostype osrelease (version)` from /proc/sys/kernel.
pub fn kernel() -> String {
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

/// How many CPUs this process may use (0 when unknown).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

/// `name` in a directory of PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `name` on PATH, or in the sbin directories (nginx lives in /usr/sbin, often not on PATH).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------
// Dates without a date crate (Howard Hinnant's algorithms).

/// `(year, month, day)` to days since 1970-01-01 (days-from-civil).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to `(year, month, day)` (civil-from-days).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
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

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
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

// ---------------------------------------------------------------------------------------
// Formatting and statistics.

pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn fmt_kb(kb: u64) -> String {
    format!("{kb} kB ({:.2} MiB)", kb as f64 / 1024.0)
}

/// Nearest-rank percentile of an already sorted slice.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Median of a sorted slice (mean of the two middle values for an even count).
pub fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

// ---------------------------------------------------------------------------------------
// /proc readers.

/// The first number of a `Field:` line in a `status` file (`/proc/PID/status`, or a
/// task's `/proc/PID/task/TID/status`).
pub fn status_field(path: &Path, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    status_field(Path::new(&format!("/proc/{pid}/status")), field)
}

pub fn vm_rss_kb(pid: u32) -> Result<u64> {
    proc_status_kb(pid, "VmRSS").ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// A `/proc/PID/smaps_rollup` field in kB.
pub fn rollup_kb(pid: u32, name: &str) -> Option<u64> {
    status_field(Path::new(&format!("/proc/{pid}/smaps_rollup")), name)
}

/// How many file descriptors the process has open.
pub fn open_fds(pid: u32) -> Result<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .map_err(|e| format!("read /proc/{pid}/fd: {e}"))
}

/// utime + stime of a process (all its threads) in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    cpu_ticks_split(pid).map(|(user, system)| user + system)
}

/// `(user, system)` clock ticks a process has used, all its threads.
pub fn cpu_ticks_split(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based) -> 0-based 11, 12 here.
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 when unknown).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `(pid, state)` of every process whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
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

/// Pids of the processes whose parent is `parent`.
pub fn child_pids(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Waiting.

/// Polls `f` every `every` until it yields a value or `within` has passed.
pub fn wait_for<T>(
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
// A temp dir, and a daemon under test in one.

static RUN: AtomicUsize = AtomicUsize::new(0);

/// A fresh `temp_dir()/<name>-<pid>-<n>`, removed with all it holds on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> Result<TempDir> {
        let n = RUN.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How to start a daemon under test.
pub struct DaemonSetup<'a> {
    /// Its temp dir is `temp_dir()/<dir_name>-<pid>-<n>`.
    pub dir_name: &'a str,
    /// Tag of its notes: `[label] ...`.
    pub label: &'a str,
    /// Written to `config.toml` and passed with `--config`; none: the embedded defaults.
    pub config: Option<&'a str>,
    /// More arguments right after `start` (e.g. `--listen 127.0.0.1:0`).
    pub args: &'a [&'a str],
    /// On drop, the daemon's log is copied to this file name in `VSM_BENCH_KEEP_LOGS`
    /// (when that is set); none: never copied.
    pub keep_log_as: Option<String>,
}

/// A daemon under test (`start --json`) with its own temp dir holding the control socket,
/// the state dir, the config and `daemon.log` (its stderr). Drop SIGKILLs a daemon that is
/// still running and removes the dir.
pub struct DaemonGuard {
    child: Option<Child>,
    /// The control socket.
    pub socket: PathBuf,
    pub label: String,
    /// The parsed ready line (`Null` unless started with [`DaemonGuard::start_ready`]).
    pub ready: Value,
    /// The TCP API's bearer token (asked over the control socket by
    /// [`DaemonGuard::start_ready`], as `vsm-daemon token` does; empty otherwise).
    pub token: String,
    keep_log_as: Option<String>,
    // Last: fields drop after `Drop::drop`, so the dir goes once the daemon is dead.
    dir: TempDir,
}

impl DaemonGuard {
    /// Creates the temp dir (with the config file) and the command; spawns nothing, so
    /// that a caller can time [`DaemonGuard::spawn`] alone.
    pub fn prepare(
        bin: &Path,
        setup: &DaemonSetup,
        stdout: Stdio,
    ) -> Result<(DaemonGuard, Command)> {
        let dir = TempDir::new(setup.dir_name)?;
        let guard = DaemonGuard {
            child: None,
            socket: dir.join("sock"),
            label: setup.label.to_string(),
            ready: Value::Null,
            token: String::new(),
            keep_log_as: setup.keep_log_as.clone(),
            dir,
        };
        let mut cmd = Command::new(bin);
        cmd.arg("start")
            .args(setup.args)
            .arg("--socket")
            .arg(&guard.socket)
            .arg("--state-dir")
            .arg(guard.dir.join("state"));
        if let Some(text) = setup.config {
            let file = guard.dir.join("config.toml");
            std::fs::write(&file, text).map_err(|e| format!("write {}: {e}", file.display()))?;
            cmd.arg("--config").arg(file);
        }
        let log = std::fs::File::create(guard.dir.join("daemon.log"))
            .map_err(|e| format!("create daemon.log: {e}"))?;
        cmd.arg("--json")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .env_remove("NOTIFY_SOCKET");
        Ok((guard, cmd))
    }

    /// Spawns the command from [`DaemonGuard::prepare`]; the guard owns the child.
    pub fn spawn(&mut self, cmd: &mut Command) -> Result<()> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", Path::new(cmd.get_program()).display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Spawns the daemon and waits (bounded) for the ready line on stdout, which must name
    /// the spawned pid.
    pub fn start_ready(bin: &Path, setup: &DaemonSetup) -> Result<DaemonGuard> {
        let (mut daemon, mut cmd) = Self::prepare(bin, setup, Stdio::piped())?;
        daemon.spawn(&mut cmd)?;
        let stdout = daemon
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .ok_or("no stdout pipe")?;
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
        daemon.ready = ready;
        daemon.token = unix(&daemon.socket)?.get("/api/v1/auth/token")?["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(daemon)
    }

    /// The TCP address the ready line names (`"http"`).
    pub fn http_addr(&self) -> Result<SocketAddr> {
        self.ready["http"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| self.failure(&format!("no \"http\" address in: {}", self.ready)))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn check_alive(&mut self) -> Result<()> {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// An error message with the tail of the daemon's log.
    pub fn failure(&self, what: &str) -> String {
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
    pub fn log_summary(&self) -> Vec<String> {
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
    pub fn stop(&mut self) -> Result<()> {
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

    /// Stops the daemon at the end of a section; a failure to stop becomes a note (the
    /// measurements are taken by then, and Drop SIGKILLs it), and so does the log summary.
    pub fn finish(mut self, notes: &mut Vec<String>) {
        if let Err(e) = self.stop() {
            notes.push(format!("[{}] {e}", self.label));
        }
        notes.extend(self.log_summary());
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
        let keep = std::env::var_os("VSM_BENCH_KEEP_LOGS").filter(|v| !v.is_empty());
        if let (Some(keep), Some(name)) = (keep, &self.keep_log_as) {
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(self.dir.join("daemon.log"), keep.join(name));
        }
        // `self.dir` is removed right after this, when the fields drop.
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 over one keep-alive connection (TCP or Unix).

pub struct Response {
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    pub body: Vec<u8>,
    /// Head + body bytes on the wire.
    pub wire: usize,
}

pub struct Http<S: Read + Write> {
    pub stream: S,
    host: String,
    /// `Authorization` header value sent with every request, if any.
    auth: Option<String>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// The server answered `Connection: close`.
    pub closed: bool,
}

/// A TCP connection (`TCP_NODELAY`, bounded reads and writes).
pub fn tcp(addr: SocketAddr) -> Result<Http<TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true)
        .map_err(|e| format!("set_nodelay: {e}"))?;
    Http::new(s, &addr.to_string())
}

/// A TCP connection that sends `Authorization: Bearer TOKEN` with every request.
pub fn tcp_as(addr: SocketAddr, token: &str) -> Result<Http<TcpStream>> {
    let mut http = tcp(addr)?;
    http.auth = Some(format!("Bearer {token}"));
    Ok(http)
}

/// A connection to the control socket (bounded reads and writes).
pub fn unix(socket: &Path) -> Result<Http<UnixStream>> {
    let s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(DEADLINE))
        .and_then(|()| s.set_write_timeout(Some(DEADLINE)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    Ok(Http::raw(s, "localhost"))
}

impl Http<TcpStream> {
    pub fn new(stream: TcpStream, host: &str) -> Result<Self> {
        stream
            .set_read_timeout(Some(DEADLINE))
            .and_then(|()| stream.set_write_timeout(Some(DEADLINE)))
            .map_err(|e| format!("socket timeouts: {e}"))?;
        Ok(Http::raw(stream, host))
    }
}

impl<S: Read + Write> Http<S> {
    pub fn raw(stream: S, host: &str) -> Self {
        Http {
            stream,
            host: host.to_string(),
            auth: None,
            buf: Vec::with_capacity(64 * 1024),
            scratch: vec![0; 64 * 1024],
            closed: false,
        }
    }

    /// The bytes of one request (JSON body, if any).
    pub fn build(&self, method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
        let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host).into_bytes();
        if let Some(auth) = &self.auth {
            let _ = write!(r, "Authorization: {auth}\r\n");
        }
        if let Some(b) = body {
            let _ = write!(
                r,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            );
        } else if method != "GET" && method != "HEAD" {
            // Over TCP every state-changing request must declare JSON, body or not.
            r.extend_from_slice(b"Content-Type: application/json\r\n");
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
    pub fn read_response(&mut self) -> Result<Response> {
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
            head,
            body,
            wire: head_end + len,
        })
    }

    pub fn send_raw(&mut self, request: &[u8]) -> Result<()> {
        if self.closed {
            return Err(
                "the server answered `Connection: close` on the keep-alive connection".into(),
            );
        }
        self.stream
            .write_all(request)
            .map_err(|e| format!("write: {e}"))
    }

    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
        let req = self.build(method, path, body);
        self.send_raw(&req)?;
        self.read_response()
    }

    /// A request whose envelope must say `success`; the whole envelope.
    pub fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let r = self.request(method, path, bytes.as_deref())?;
        envelope(method, path, &r)
    }

    /// GET; the envelope's `data`.
    pub fn get(&mut self, path: &str) -> Result<Value> {
        Ok(self.call("GET", path, None)?["data"].take())
    }

    /// POST a JSON body; the envelope's `data`.
    pub fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        Ok(self.call("POST", path, Some(body))?["data"].take())
    }
}

/// The API envelope of a response, which must be a 2xx saying `success`.
pub fn envelope(method: &str, path: &str, r: &Response) -> Result<Value> {
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
// The MCP fixture server (`tests/fixtures/mcp_fixture.py`).

pub struct Fixtures {
    pub python: PathBuf,
    pub script: PathBuf,
}

impl Fixtures {
    /// The registration spec of a fixture server `id`, with `extra` fields merged in.
    pub fn spec(&self, id: &str, extra: Value) -> Value {
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

/// The interpreter behind `python3` (`sys.executable`): version-manager shims (pyenv) are
/// shell scripts that would add their own start-up to every spawn.
pub fn real_python(python3: &Path) -> Result<PathBuf> {
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

// ---------------------------------------------------------------------------------------
// The fixture, spawned directly (no daemon) with pipes.

/// Waits until `fd` is readable, at most until `deadline`.
pub fn wait_readable(fd: i32, deadline: Instant) -> Result<()> {
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

/// What a [`DirectFixture`] reads answers from: a pipe or a socket that `poll(2)` can wait on.
pub trait Input: Read + AsRawFd + Send {}
impl<T: Read + AsRawFd + Send> Input for T {}

pub struct DirectFixture {
    /// The fixture, or the relay process in front of it ([`DirectFixture::relayed`]).
    pub child: Child,
    pub stdin: Box<dyn Write + Send>,
    stdout: Box<dyn Input>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl DirectFixture {
    pub fn spawn(f: &Fixtures) -> Result<DirectFixture> {
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
        Self::over(child, Box::new(stdin), Box::new(stdout))
    }

    /// The fixture behind a relay process that does no work of its own: `relay` is started
    /// with `args`, prints the TCP port it listens on, and copies bytes between the one
    /// connection it accepts and the fixture it spawns (see [`relay_main`]). What a call
    /// costs more this way than over [`DirectFixture::spawn`] is the machine's price of one
    /// more process and a loopback TCP hop, the floor under any gateway.
    pub fn relayed(relay: &Path, args: &[&std::ffi::OsStr]) -> Result<DirectFixture> {
        let mut child = Command::new(relay)
            .args(args)
            .env(RELAY_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn the relay {}: {e}", relay.display()))?;
        let port = child.stdout.take().and_then(|out| {
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).ok()?;
            line.trim().parse::<u16>().ok()
        });
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the relay did not say its port".into());
        };
        let connected = TcpStream::connect(("127.0.0.1", port)).and_then(|s| {
            s.set_nodelay(true)?;
            Ok((s.try_clone()?, s))
        });
        match connected {
            Ok((w, r)) => Self::over(child, Box::new(w), Box::new(r)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("connect to the relay: {e}"))
            }
        }
    }

    fn over(child: Child, stdin: Box<dyn Write + Send>, stdout: Box<dyn Input>) -> Result<Self> {
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
    pub fn send(&mut self, line: &[u8]) -> Result<()> {
        let mut msg = Vec::with_capacity(line.len() + 1);
        msg.extend_from_slice(line);
        msg.push(b'\n');
        self.stdin
            .write_all(&msg)
            .map_err(|e| format!("write to fixture: {e}"))
    }

    /// Reads one line (poll(2) then read(2), as the daemon's loop does with epoll).
    pub fn read_line(&mut self) -> Result<Vec<u8>> {
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

/// Set in the environment of a bench binary started as a relay ([`DirectFixture::relayed`]).
pub const RELAY_ENV: &str = "VSM_BENCH_RELAY";

/// The relay process: `COMMAND ARGS..` is the MCP server. Listens on a loopback port (printed
/// on stdout), accepts one connection, spawns the server and copies bytes both ways with
/// blocking `read`/`write`, one thread each way, until either side closes. No parsing, no
/// buffering beyond one read: the least any process in the middle can do.
pub fn relay_main(mut args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let run = || -> std::io::Result<()> {
        let program = args
            .next()
            .ok_or_else(|| std::io::Error::other("relay: no server command"))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        println!("{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        let (socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (Some(mut to_server), Some(mut from_server)) =
            (child.stdin.take(), child.stdout.take())
        else {
            return Err(std::io::Error::other("relay: server pipes missing"));
        };
        let mut to_client = socket.try_clone()?;
        let back = std::thread::spawn(move || copy_plain(&mut from_server, &mut to_client));
        let mut from_client = socket;
        let _ = copy_plain(&mut from_client, &mut to_server);
        drop(to_server);
        let _ = child.wait();
        let _ = back.join();
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `read` then `write_all`, until end of file (`std::io::copy` may splice instead).
fn copy_plain(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl Drop for DirectFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
