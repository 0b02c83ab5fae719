//! Test harness: runs the real `vsm-daemon` binary in a temp dir with its own socket and
//! state dir, waits on conditions with generous deadlines, and kills the daemon on drop.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Deadline for anything that should happen "soon" on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The binary under test: cargo's build of this tree, or `VSM_TEST_BIN` (so that `.ci/run`
/// runs the suite against the shipped static build too).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("VSM_TEST_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_vsm-daemon").to_string())
    })
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "vsm-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `cond` until it is true or the deadline passes.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// Options for starting a daemon.
#[derive(Default)]
pub struct Setup {
    pub config: Option<String>,
    pub env: Vec<(String, String)>,
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    /// `--listen` (default `127.0.0.1:0`).
    pub listen: Option<String>,
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub dir: TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub config_path: Option<PathBuf>,
    pub pid: u32,
    /// The TCP address the REST API listens on.
    pub http: Option<std::net::SocketAddr>,
    /// The TCP API's bearer token at start (asked over the control socket, as
    /// `vsm-daemon token` does); empty if the daemon did not tell.
    pub token: String,
    stderr_path: PathBuf,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(Setup::default())
    }

    pub fn start_with(setup: Setup) -> Daemon {
        let dir = TempDir::new("daemon");
        Daemon::start_in(dir, setup).unwrap_or_else(|e| panic!("daemon did not start: {e}"))
    }

    /// Starts in `dir`; on failure returns the exit status and stderr.
    pub fn start_in(dir: TempDir, setup: Setup) -> Result<Daemon, String> {
        let socket = setup
            .socket
            .unwrap_or_else(|| dir.path().join("run/control.sock"));
        let state_dir = setup.state_dir.unwrap_or_else(|| dir.path().join("state"));
        let stderr_path = dir.path().join(format!(
            "stderr-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut cmd = Command::new(bin());
        cmd.arg("start")
            .arg("--json")
            .arg("--listen")
            .arg(setup.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir);
        let config_path = setup.config.map(|text| {
            let p = dir.path().join("config.toml");
            std::fs::write(&p, text).expect("write config");
            p
        });
        if let Some(p) = &config_path {
            cmd.arg("--config").arg(p);
        }
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("VSM_DAEMON_SOCKET")
            .env_remove("VSM_DAEMON_STATE_DIR")
            .env("RUST_LOG", "debug");
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn vsm-daemon");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(PATIENCE).unwrap_or_default();
        let ready: Value = serde_json::from_str(line.trim()).unwrap_or(Value::Null);
        if ready["event"] != "ready" {
            let code = child.wait().ok().and_then(|s| s.code());
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err(format!("exit code {code:?}, stderr:\n{err}"));
        }
        let pid = child.id();
        let http = ready["http"].as_str().and_then(|a| a.parse().ok());
        let raw = raw_exchange(
            &socket,
            b"GET /api/v1/auth/token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        let (_, _, body) = split_response(&raw);
        let token = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["data"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(Daemon {
            http,
            token,
            child,
            dir,
            socket,
            state_dir,
            config_path,
            pid,
            stderr_path,
        })
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("VSM_DAEMON_SOCKET")
            .stdin(Stdio::null())
            .output()
            .expect("run cli")
    }

    /// Runs the CLI with `--json` and parses stdout.
    pub fn cli_json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), value)
    }

    /// One raw HTTP exchange on a fresh connection; returns status and parsed JSON body.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let raw = raw_exchange(
            &self.socket,
            format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.map_or(0, str::len),
                body.unwrap_or("")
            )
            .as_bytes(),
        );
        let (status, _, body) = split_response(&raw);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// `Bearer TOKEN` for the TCP API.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, which is not reaped before drop.
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("daemon did not exit; stderr:\n{}", self.stderr());
    }

    /// SIGKILLs the daemon and reaps it, keeping the temp dir.
    pub fn kill9(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = TempDir(self.dir.0.clone());
        // The original TempDir must not delete the folder we hand back.
        self.dir.0 = PathBuf::new();
        dir
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `request` on a fresh connection and reads until the daemon closes it.
pub fn raw_exchange(socket: &Path, request: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Splits one HTTP response into status, head and body (by Content-Length when present).
pub fn split_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        return (0, text, String::new());
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(rest.len());
    (
        status,
        head.to_string(),
        rest[..len.min(rest.len())].to_string(),
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `probe` until `done` accepts what it returned, and returns that value; on timeout the
/// panic names `what` and adds `explain(last value seen)`.
pub fn wait_until<T>(
    what: &str,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
    explain: impl FnOnce(&T) -> String,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = probe();
        if done(&value) {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", explain(&value));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
