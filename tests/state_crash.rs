//! Crash-consistency test for `StateDir::write`: a writer process is SIGKILLed at random moments
//! and the state file must always parse as the old or the new state, never as anything else.
//!
//! The writer is this test binary itself, re-executed with `VSM_STATE_CRASH_WRITER=<dir>` so that
//! only `crash_writer_child` runs. The file is self-contained so it can be `mod`-included into
//! another integration test binary; it only needs `vsm_daemon::state::*` and `serde_json`.
//! Set `VSM_STATE_CRASH_SEED=<n>` to replay a run with the seed it printed.

use serde_json::{json, Value};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vsm_daemon::state::{StateDir, StateError};

const WRITER_ENV: &str = "VSM_STATE_CRASH_WRITER";
const FILE: &str = "crash.json";
const ROUNDS: u32 = 150;
const WALL: Duration = Duration::from_secs(60);

/// ~20 KiB payload derived from `seq`, so a torn or mixed file cannot pass `check`.
fn pad(seq: u64) -> String {
    format!("{seq:016x}").repeat(1280)
}

fn check(v: &Value) -> u64 {
    let seq = v["seq"].as_u64().expect("seq field");
    assert_eq!(
        v["pad"].as_str(),
        Some(pad(seq).as_str()),
        "torn payload at seq {seq}"
    );
    seq
}

/// The writer: a no-op unless re-executed by `sigkill_during_writes_never_corrupts`.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let mut state = StateDir::open(Path::new(&dir)).expect("writer: open");
    let last = state.read::<Value>(FILE).expect("writer: read");
    let mut seq = last.map_or(0, |v| check(&v) + 1);
    loop {
        let doc = json!({"seq": seq, "pad": pad(seq)});
        state.write(FILE, &doc).expect("writer: write");
        seq += 1;
    }
}

/// libtest names a test by its module path without the crate name.
fn writer_test_name() -> String {
    match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::crash_writer_child"),
        None => "crash_writer_child".to_string(),
    }
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn spawn_writer(dir: &Path, log: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            "--exact",
            &writer_test_name(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("writer log"))
        .spawn()
        .expect("spawn writer")
}

/// Identity of the write tmp file's last change (inode change time), if it exists.
fn tmp_stamp(path: &Path) -> Option<(i64, i64)> {
    fs::metadata(path).ok().map(|m| (m.ctime(), m.ctime_nsec()))
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn sigkill_during_writes_never_corrupts() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seed = match std::env::var("VSM_STATE_CRASH_SEED") {
        Ok(s) => s.parse().expect("VSM_STATE_CRASH_SEED"),
        Err(_) => now.as_nanos() as u64 | 1,
    };
    println!("crash test seed {seed} (VSM_STATE_CRASH_SEED={seed} replays the delays)");
    let name = format!("vsm-state-crash-{}-{}", std::process::id(), now.as_nanos());
    let tmp = TempDir(std::env::temp_dir().join(name));
    let (dir, log) = (tmp.0.join("state"), tmp.0.join("writer.log"));
    fs::create_dir_all(&tmp.0).expect("temp dir");
    let tmp_file = dir.join(format!("{FILE}.tmp"));
    let (mut rng, start) = (seed.max(1), Instant::now());
    let (mut rounds, mut absent, mut advanced, mut mid_write) = (0u32, 0u32, 0u32, 0u32);
    let mut last: Option<u64> = None;

    while rounds < ROUNDS && start.elapsed() < WALL {
        let before = tmp_stamp(&tmp_file);
        let mut child = spawn_writer(&dir, &log);
        std::thread::sleep(Duration::from_millis(1 + xorshift(&mut rng) % 40));
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "writer exited early ({status}): {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        child.kill().expect("SIGKILL writer");
        child.wait().expect("reap writer");
        rounds += 1;
        let after = tmp_stamp(&tmp_file);
        if after.is_some() && after != before {
            mid_write += 1; // the tmp was created or truncated this round and never renamed
        }
        let mut state = StateDir::open(&dir).expect("open after kill");
        match state.read::<Value>(FILE) {
            Ok(None) => {
                assert_eq!(last, None, "round {rounds}: state file vanished");
                absent += 1;
            }
            Ok(Some(v)) => {
                let seq = check(&v);
                assert!(
                    last.is_none_or(|l| seq >= l),
                    "round {rounds}: seq {seq} < {last:?}"
                );
                advanced += u32::from(last != Some(seq));
                last = Some(seq);
            }
            Err(e) => panic!("round {rounds}: {e}"),
        }
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("dir entry").file_name();
            let entry = entry.to_string_lossy();
            assert!(
                !entry.contains(".corrupt-"),
                "round {rounds}: read() saw a torn file: {entry}"
            );
        }
    }
    let last = last.expect("no write completed in any round");
    println!(
        "crash test: {rounds} rounds in {:.1?}, {} writes completed, seq advanced in {advanced} \
         rounds, absent in {absent}, killed mid-write (tmp changed and not renamed) in {mid_write}",
        start.elapsed(),
        last + 1
    );
    assert!(rounds >= 20, "only {rounds} rounds in {WALL:?}");

    // Cross-process lock: while a live writer holds the directory, open() must be refused.
    let mut child = spawn_writer(&dir, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    let lock_result = loop {
        let raw = fs::read(dir.join(FILE)).ok();
        let doc = raw.and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if doc
            .and_then(|d| d["data"]["seq"].as_u64())
            .is_some_and(|s| s > last)
        {
            break StateDir::open(&dir).map(drop);
        }
        assert!(Instant::now() < deadline, "writer made no progress");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().expect("SIGKILL writer");
    child.wait().expect("reap writer");
    assert!(
        matches!(lock_result, Err(StateError::Locked { .. })),
        "{lock_result:?}"
    );

    // A leftover tmp (garbage) is never read, and the next write overwrites it.
    fs::write(&tmp_file, b"{\"version\": 1, \"data\": {\"seq\": 999999999").expect("garbage");
    let mut state = StateDir::open(&dir).expect("open");
    let seq = check(&state.read::<Value>(FILE).expect("read").expect("present"));
    state
        .write(FILE, &json!({"seq": seq + 1, "pad": pad(seq + 1)}))
        .expect("write");
    assert_eq!(
        check(&state.read::<Value>(FILE).expect("read").expect("present")),
        seq + 1
    );
    assert!(
        !tmp_file.exists(),
        "tmp left behind after a completed write"
    );
}
