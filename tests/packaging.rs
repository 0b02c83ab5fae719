//! Static checks of the service-manager packaging in `packaging/`.
//!
//! Included from `tests/tests.rs` with `mod packaging;`. Uses std only.
//! Optional tools (`systemd-analyze`, `checkbashisms`) are used when they are
//! on PATH and skipped with a note otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const UNIT: &str = "vsm-daemon.service";
const OPENRC: &str = "vsm-daemon.openrc";
const BUILD_STATIC: &str = "build-static.sh";

fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging")
}

fn read_packaging(name: &str) -> String {
    let path = packaging_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("vsm-daemon-{tag}-{}-{n}", std::process::id()));
        // A stale directory can only be left by an earlier process that
        // had our pid; clear it.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Full path of `tool` if it is an executable file in one of PATH's entries.
fn find_on_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

fn describe(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A systemd unit as (section, key, value) triples, in file order.
/// Panics on any line that is not blank, a comment, a known section header
/// or `Key=Value`.
fn parse_unit(text: &str) -> Vec<(String, String, String)> {
    const SECTIONS: [&str; 3] = ["Unit", "Service", "Install"];
    let mut section: Option<String> = None;
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !raw.ends_with('\\'),
            "line {lineno}: keep directives on one line (no continuations): {raw:?}"
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            assert!(
                SECTIONS.contains(&name),
                "line {lineno}: unexpected section [{name}]"
            );
            section = Some(name.to_string());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {lineno}: not Key=Value: {raw:?}"));
        let key = key.trim();
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "line {lineno}: bad key {key:?}"
        );
        let section = section
            .clone()
            .unwrap_or_else(|| panic!("line {lineno}: {key}= before any [Section]"));
        entries.push((section, key.to_string(), value.trim().to_string()));
    }
    entries
}

/// The value of the last `key=` in `section` (later assignments win in systemd).
fn unit_value<'a>(
    entries: &'a [(String, String, String)],
    section: &str,
    key: &str,
) -> Option<&'a str> {
    entries
        .iter()
        .rev()
        .find(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
}

#[test]
fn systemd_unit_is_well_formed_and_complete() {
    let entries = parse_unit(&read_packaging(UNIT));
    let get = |section: &str, key: &str| {
        unit_value(&entries, section, key)
            .unwrap_or_else(|| panic!("{UNIT}: [{section}] {key}= missing"))
    };

    let expected = [
        ("Unit", "After", "network-online.target"),
        ("Unit", "Wants", "network-online.target"),
        ("Service", "Type", "notify"),
        ("Service", "NotifyAccess", "main"),
        ("Service", "WatchdogSec", "30s"),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Service", "KillMode", "mixed"),
        ("Service", "TimeoutStopSec", "30s"),
        ("Service", "Restart", "on-failure"),
        ("Service", "RestartSec", "2s"),
        ("Service", "User", "vsm-daemon"),
        ("Service", "Group", "vsm-daemon"),
        ("Service", "StateDirectory", "vsm-daemon"),
        ("Service", "StateDirectoryMode", "0700"),
        ("Service", "RuntimeDirectory", "vsm-daemon"),
        ("Service", "RuntimeDirectoryMode", "0700"),
        ("Service", "ConfigurationDirectory", "vsm-daemon"),
        ("Service", "UMask", "0077"),
        ("Service", "NoNewPrivileges", "yes"),
        ("Service", "ProtectSystem", "strict"),
        ("Service", "ProtectHome", "yes"),
        ("Service", "PrivateTmp", "yes"),
        ("Service", "PrivateDevices", "yes"),
        (
            "Service",
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        ("Service", "SystemCallArchitectures", "native"),
        ("Service", "LimitNOFILE", "8192"),
        ("Service", "TasksMax", "512"),
        ("Install", "WantedBy", "multi-user.target"),
    ];
    for (section, key, want) in expected {
        assert_eq!(get(section, key), want, "{UNIT}: [{section}] {key}=");
    }

    let exec_start = get("Service", "ExecStart");
    assert!(
        exec_start.starts_with("/usr/bin/vsm-daemon "),
        "ExecStart must run /usr/bin/vsm-daemon: {exec_start}"
    );
    for needle in [
        " start ",
        "--config /etc/vsm-daemon/config.toml",
        "--socket /run/vsm-daemon/control.sock",
        "--state-dir /var/lib/vsm-daemon",
    ] {
        assert!(
            exec_start.contains(needle),
            "ExecStart lacks {needle:?}: {exec_start}"
        );
    }

    // V8/Node JIT in MCP children needs W+X memory.
    assert!(
        entries
            .iter()
            .all(|(_, k, _)| k != "MemoryDenyWriteExecute"),
        "{UNIT} must not set MemoryDenyWriteExecute"
    );
    // Sized by operators: the children share the cgroup.
    assert!(
        entries.iter().all(|(_, k, _)| k != "MemoryMax"),
        "{UNIT} must not set MemoryMax"
    );
}

#[test]
fn systemd_analyze_verify_accepts_unit() {
    let Some(analyze) = find_on_path("systemd-analyze") else {
        eprintln!(
            "note: systemd-analyze not on PATH (Debian package: systemd); \
             skipping `systemd-analyze verify` of {UNIT}"
        );
        return;
    };

    // verify insists that ExecStart's binary exists, so point it at one that
    // does. The file keeps its name: systemd derives the unit name from it.
    let real_binary = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("no /bin/true or /usr/bin/true");
    let unit = read_packaging(UNIT).replace("/usr/bin/vsm-daemon", real_binary);
    let dir = TempDir::new("unit");
    let unit_path = dir.path().join(UNIT);
    fs::write(&unit_path, unit).unwrap_or_else(|e| panic!("write {}: {e}", unit_path.display()));

    let out = run(Command::new(&analyze)
        .arg("verify")
        .arg("--man=no")
        .arg(&unit_path)
        // Keep the message wording (Unknown/Invalid/Failed) untranslated.
        .env("LC_ALL", "C"));
    assert!(
        out.status.success(),
        "systemd-analyze verify failed\n{}",
        describe(&out)
    );

    // Unknown keys and unparsable values are only warnings ("... ignoring")
    // with exit status 0, so look for them explicitly. Lines about other units
    // (possible on a machine where systemd is not PID 1) are not ours to judge.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(UNIT))
        .filter(|l| {
            ["Unknown", "Invalid", "Failed", "ignoring"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complained about {UNIT}:\n{}",
        complaints.join("\n")
    );
}

#[test]
fn openrc_script_is_posix_sh() {
    let path = packaging_dir().join(OPENRC);
    let text = read_packaging(OPENRC);

    assert_eq!(
        text.lines().next(),
        Some("#!/sbin/openrc-run"),
        "{OPENRC} must start with #!/sbin/openrc-run"
    );
    let defines = |func: &str| {
        text.lines()
            .map(str::trim_start)
            .any(|l| l.starts_with(&format!("{func}()")) || l.starts_with(&format!("{func} ()")))
    };
    for func in ["depend", "start_pre", "reload"] {
        assert!(defines(func), "{OPENRC} must define {func}()");
    }
    let has_line = |want: &str| text.lines().any(|l| l.trim() == want);
    for want in [
        "supervisor=supervise-daemon",
        "command=/usr/bin/vsm-daemon",
        "command_user=\"vsm-daemon:vsm-daemon\"",
        "extra_started_commands=\"reload\"",
        "retry=\"TERM/30/KILL/5\"",
        "need net",
        "after firewall",
        "supervise-daemon \"$RC_SVCNAME\" --signal HUP",
    ] {
        assert!(has_line(want), "{OPENRC} lacks the line {want:?}");
    }

    let out = run(Command::new("/bin/sh").arg("-n").arg(&path));
    assert!(
        out.status.success(),
        "/bin/sh -n {}\n{}",
        path.display(),
        describe(&out)
    );

    match find_on_path("checkbashisms") {
        Some(tool) => {
            // --force: the #!/sbin/openrc-run shebang is not one checkbashisms
            // recognises as sh, and it would skip the file without it.
            let out = run(Command::new(tool).arg("--force").arg("--posix").arg(&path));
            assert!(
                out.status.success(),
                "checkbashisms {}\n{}",
                path.display(),
                describe(&out)
            );
        }
        None => eprintln!(
            "note: checkbashisms not on PATH (Debian package: devscripts); \
             only `/bin/sh -n` was run on {OPENRC}"
        ),
    }
}

#[test]
fn build_static_script_parses() {
    let path = packaging_dir().join(BUILD_STATIC);
    let text = read_packaging(BUILD_STATIC);
    assert!(
        text.starts_with("#!/usr/bin/env bash\n"),
        "{BUILD_STATIC} must be a bash script"
    );
    assert!(
        text.lines().any(|l| l.trim() == "set -euo pipefail"),
        "{BUILD_STATIC} must `set -euo pipefail`"
    );
    let out = run(Command::new("bash").arg("-n").arg(&path));
    assert!(
        out.status.success(),
        "bash -n {}\n{}",
        path.display(),
        describe(&out)
    );
}

#[test]
fn link_ordered_puts_the_listed_functions_first_whatever_their_hashes() {
    // The size build links through packaging/link-ordered.sh with the toolchain's lld. Here
    // it links a small C program whose functions stand in for Rust symbols: the list names
    // them without their crate hash, the objects define them with one, and the listed ones
    // must come first in .text, in the list's order, ahead of those defined before them.
    let sysroot = run(Command::new("rustc").args(["--print", "sysroot"]));
    let gcc_ld = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim())
        .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld");
    if !cfg!(target_arch = "x86_64")
        || !gcc_ld.join("ld.lld").exists()
        || find_on_path("cc").is_none()
    {
        eprintln!(
            "skipped: needs x86_64, cc and the toolchain's lld ({})",
            gcc_ld.display()
        );
        return;
    }
    let dir = TempDir::new("link-ordered");
    let src = dir.path().join("p.c");
    fs::write(
        &src,
        "void _RNvCs1a2B3c_4demo4cold(void) { __asm__ volatile(\"\" ::: \"memory\"); }\n\
         void _RNvCs9zY8x_4demo3hot(void) { __asm__ volatile(\"\" ::: \"memory\"); }\n\
         void plain_c_hot(void) { __asm__ volatile(\"\" ::: \"memory\"); }\n\
         int main(void) { _RNvCs1a2B3c_4demo4cold(); _RNvCs9zY8x_4demo3hot(); plain_c_hot(); return 0; }\n",
    )
    .expect("write p.c");
    let obj = dir.path().join("p.o");
    let out = run(Command::new("cc")
        .args(["-c", "-O1", "-ffunction-sections", "-o"])
        .arg(&obj)
        .arg(&src));
    assert!(out.status.success(), "cc -c\n{}", describe(&out));
    let list = dir.path().join("list.txt");
    fs::write(
        &list,
        "# test\nplain_c_hot\n_RNvC4demo3hot\n_RNvC4demo7missing\n",
    )
    .expect("list");
    let exe = dir.path().join("p");
    let out = run(Command::new(packaging_dir().join("link-ordered.sh"))
        .env("VSM_STARTUP_FUNCTIONS", &list)
        .arg("-fuse-ld=lld")
        .arg("-B")
        .arg(&gcc_ld)
        .arg(&obj)
        .arg("-o")
        .arg(&exe));
    assert!(out.status.success(), "link-ordered.sh\n{}", describe(&out));
    let nm = run(Command::new("nm").arg(&exe));
    assert!(nm.status.success(), "nm\n{}", describe(&nm));
    let text = String::from_utf8_lossy(&nm.stdout).into_owned();
    let addr = |name: &str| {
        text.lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .and_then(|l| u64::from_str_radix(l.split(' ').next().unwrap_or(""), 16).ok())
            .unwrap_or_else(|| panic!("{name} not in nm output:\n{text}"))
    };
    let (c, hot, cold) = (
        addr("plain_c_hot"),
        addr("_RNvCs9zY8x_4demo3hot"),
        addr("_RNvCs1a2B3c_4demo4cold"),
    );
    assert!(
        c < hot && hot < cold,
        "order: plain_c_hot {c:#x}, hot {hot:#x}, cold {cold:#x}"
    );
}
