//! Crash-safe persistence of the daemon's small JSON state documents (config overrides,
//! registered MCP servers, capability records, the decision log).
//!
//! Invariants:
//! - `<dir>/<name>` is never modified in place. It is only replaced by `rename(2)` of a fully
//!   written and fsynced `<name>.tmp`, and the directory is fsynced afterwards, so at every
//!   instant (including after SIGKILL) it holds either the complete old or the complete new
//!   document.
//! - Before the replacement the previous version is hard-linked (or copied) to `<name>.bak.tmp`
//!   and renamed to `<name>.bak`: there is never a moment without `<name>` or without `<name>.bak`.
//! - Every document is wrapped as `{"version", "written_at", "data"}`. A file that does not parse
//!   is never deleted: it is renamed to `<name>.corrupt-<unix seconds>[-n]`, logged, and the
//!   `.bak` is restored in its place if it parses. A file from a newer format version is left
//!   untouched, so a downgrade cannot destroy a newer daemon's data.
//! - Nothing this build does not understand is overwritten: a document whose read failed for any
//!   reason other than "missing" or "corrupt (moved aside)" (a newer format version, a directory
//!   or other non-regular file in its place, an I/O error) becomes read-only for the life of the
//!   [`StateDir`]; [`StateDir::write`] and [`StateDir::remove`] refuse it with
//!   [`StateError::ReadOnly`], and [`StateDir::read_only`] lists it for health checks.
//! - A write either fully happens or leaves the previous document in place: a failed temp write
//!   removes the temp file (so a full disk gets its space back), and a failure after the rename
//!   puts the previous version back. `Ok` means the new document is durable.
//! - Leftover `*.tmp` files from a crash are never read; the next write truncates them.
//! - One process at a time: [`StateDir`] holds an exclusive `flock` on `<dir>/lock` for its whole
//!   life. The lock file is opened close-on-exec, so spawned children never inherit the lock.
//!   Its holder writes who it is into it ([`StateDir::record_owner`]: pid and socket), so a
//!   second daemon can say "already running (pid N, socket S)" instead of "locked".

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who holds a state dir: what its holder wrote into `<dir>/lock` (see
/// [`StateDir::record_owner`]), as `pid N` and `socket PATH` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOwner {
    /// The holder's pid.
    pub pid: i32,
    /// Its control socket.
    pub socket: PathBuf,
}

/// Largest lock file [`lock_owner`] reads (a pid and a socket path fit in far less).
const LOCK_OWNER_MAX: u64 = 8 * 1024;

impl LockOwner {
    fn to_text(&self) -> String {
        format!("pid {}\nsocket {}\n", self.pid, self.socket.display())
    }

    /// Parses the lock file's text; `None` unless it has a positive pid and a socket path.
    pub fn parse(text: &str) -> Option<LockOwner> {
        let (mut pid, mut socket) = (None, None);
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("pid", v)) => pid = v.trim().parse::<i32>().ok().filter(|&p| p > 0),
                Some(("socket", v)) if !v.is_empty() => socket = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        Some(LockOwner {
            pid: pid?,
            socket: socket?,
        })
    }
}

/// What the holder of the state dir `dir` recorded about itself, if anything readable.
pub fn lock_owner(dir: &Path) -> Option<LockOwner> {
    let bytes = read_small_file(&dir.join("lock"), LOCK_OWNER_MAX).ok()?;
    LockOwner::parse(std::str::from_utf8(&bytes).ok()?)
}

/// Reads a small file named by configuration (a token file, the config file) without ever
/// blocking the caller on something that is not a regular file: it is opened with `O_NONBLOCK`
/// (a FIFO cannot hang the open), must be a regular file (`/dev/zero`, a FIFO or a directory
/// is refused with `InvalidInput`), and may hold at most `cap` bytes (`FileTooLarge`
/// otherwise, and never more than `cap + 1` bytes are read).
///
/// # Errors
/// The open, stat or read error, or one of the refusals above, with a message naming why.
pub fn read_small_file(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > cap {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("{} bytes, more than the {cap} allowed", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("more than the {cap} bytes allowed"),
        ));
    }
    Ok(bytes)
}

/// Version written into every envelope; files with a larger version are refused, not touched.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Where the state lives when not configured: root -> /var/lib/vsm-daemon, else
/// $XDG_STATE_HOME/vsm-daemon, else $HOME/.local/state/vsm-daemon. Relative values of those
/// variables are ignored (XDG spec); with neither usable, /var/lib/vsm-daemon is returned.
pub fn default_state_dir() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if is_root() {
        PathBuf::from("/var/lib/vsm-daemon")
    } else if let Some(xdg) = absolute("XDG_STATE_HOME") {
        xdg.join("vsm-daemon")
    } else if let Some(home) = absolute("HOME") {
        home.join(".local/state/vsm-daemon")
    } else {
        PathBuf::from("/var/lib/vsm-daemon")
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Ok(false) when another open file description holds the lock.
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: the fd is owned by `file`, which is borrowed (hence open) for the whole call;
        // flock only changes kernel lock state and touches no user memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Documents that cannot be written, found without writing: a document's path (`dir/<name>`)
/// existing as something other than a regular file (a directory, a FIFO, a symlink). Each
/// problem names the path. One `lstat` per name.
pub fn check_documents(dir: &Path, names: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for name in names {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_file() => problems.push(format!(
                "state file {} is not a regular file ({})",
                path.display(),
                file_kind(&meta.file_type())
            )),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("state file {}: {e}", path.display())),
        }
    }
    problems
}

fn file_kind(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Errors of the state store; every variant names the path it concerns.
#[derive(Debug)]
pub enum StateError {
    /// An I/O operation failed (`InvalidInput` for a bad file name, `InvalidData` for a value
    /// that cannot be serialized).
    Io {
        /// File or directory the operation was on.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// Another process (or another open in this one) holds the state directory lock.
    Locked {
        /// The state directory.
        path: PathBuf,
    },
    /// The file did not parse and no usable `.bak` existed; the file was moved aside.
    Corrupt {
        /// Where the file was.
        path: PathBuf,
        /// Where the corrupt file now is.
        moved_to: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The file was written by a newer daemon; it was left untouched.
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Highest version this build understands.
        supported: u32,
    },
    /// The document could not be read or understood when it was loaded, so this daemon does not
    /// write it (see the module invariants).
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// Why it was not loaded.
        reason: String,
    },
}

impl StateError {
    /// Whether the error is "no space left" (`ENOSPC`) or "quota exceeded" (`EDQUOT`): the
    /// storage is full rather than broken.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            Self::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            _ => false,
        }
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "state file {}: {source}", path.display()),
            Self::Locked { path } => write!(f, "state dir {} is locked elsewhere", path.display()),
            Self::Corrupt {
                path,
                moved_to,
                reason,
            } => write!(
                f,
                "state file {} is corrupt ({reason}) and has no usable backup; moved to {}",
                path.display(),
                moved_to.display()
            ),
            Self::UnsupportedVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "state file {} has format version {found}, newer than supported {supported}",
                path.display()
            ),
            Self::ReadOnly { path, reason } => write!(
                f,
                "state file {} is read-only for this daemon ({reason}); fix or move it, then restart",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { path, source }
}

/// An open, exclusively locked state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// Document name -> why it is read-only (its load failed in a way that is not "corrupt").
    read_only: BTreeMap<String, String>,
    _lock: File,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    version: u32,
    written_at: String,
    data: &'a T,
}

impl StateDir {
    /// Creates the directory (mode 0700, parents as needed) and takes an exclusive non-blocking
    /// flock on `<dir>/lock`, held for the life of the value. A second open of the same directory
    /// (from another process, or another open in this one) fails with [`StateError::Locked`].
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_err(path))?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if !try_lock_exclusive(&lock).map_err(io_err(&lock_path))? {
            return Err(StateError::Locked { path: path.into() });
        }
        Ok(StateDir {
            path: path.into(),
            read_only: BTreeMap::new(),
            _lock: lock,
        })
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `owner` into the held lock file (replacing what a previous holder left there), for
    /// [`lock_owner`] to read. Advisory only: the flock, not this text, is the lock.
    ///
    /// # Errors
    /// The write error.
    pub fn record_owner(&self, owner: &LockOwner) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let text = owner.to_text();
        self._lock.set_len(0)?;
        self._lock.write_all_at(text.as_bytes(), 0)
    }

    /// Atomically replaces `<dir>/<name>` with the pretty JSON envelope
    /// `{"version": STATE_FORMAT_VERSION, "written_at": <RFC 3339 UTC, ms>, "data": value}`:
    /// write and fsync `<name>.tmp` (mode 0600), make `<name>.bak` a copy of the current
    /// `<name>` (hard link + rename), rename the tmp over `<name>`, fsync the directory.
    /// The same as [`StateDir::prepare`] then [`PreparedWrite::commit`].
    ///
    /// # Errors
    /// [`StateError::ReadOnly`] for a document this daemon could not load (nothing is touched);
    /// an I/O error otherwise (see [`StateError::is_out_of_space`]), after which `<name>` holds
    /// the previous document and no `<name>.tmp` is left.
    pub fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        self.prepare(name, value)?.commit()
    }

    /// Checks the name and the read-only documents and serializes the envelope, without any
    /// I/O, so that the blocking part ([`PreparedWrite::commit`]) can run on another thread.
    ///
    /// # Errors
    /// An invalid name, [`StateError::ReadOnly`], or a value that does not serialize.
    pub fn prepare<T: Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<PreparedWrite, StateError> {
        let path = self.file(name)?;
        if let Some(reason) = self.read_only.get(name) {
            let reason = reason.clone();
            return Err(StateError::ReadOnly { path, reason });
        }
        let written_at = rfc3339_utc_millis(SystemTime::now());
        let envelope = Envelope {
            version: STATE_FORMAT_VERSION,
            written_at,
            data: value,
        };
        let mut bytes = serde_json::to_vec_pretty(&envelope)
            .map_err(|e| io_err(&path)(io::Error::new(ErrorKind::InvalidData, e)))?;
        bytes.push(b'\n');
        Ok(PreparedWrite {
            dir: self.path.clone(),
            path,
            bytes,
        })
    }

    /// Documents this daemon will not write, with the reason (see the module invariants).
    pub fn read_only(&self) -> impl Iterator<Item = (&str, &str)> {
        self.read_only.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `<dir>/<name>` for a removal: refused when the document is read-only or its path is not
    /// a regular file.
    fn writable_file(&self, name: &str) -> Result<PathBuf, StateError> {
        let path = self.file(name)?;
        if let Some(reason) = self.read_only.get(name) {
            let reason = reason.clone();
            return Err(StateError::ReadOnly { path, reason });
        }
        regular_or_missing(&path)?;
        Ok(path)
    }

    /// Reads `<dir>/<name>`; missing -> `Ok(None)`. Unparsable JSON, a wrong envelope or `data`
    /// not matching `T` -> the file is moved to `<name>.corrupt-<unix seconds>[-n]` (logged) and
    /// `<name>.bak` is tried: if it parses it is restored as `<name>` and returned, otherwise
    /// [`StateError::Corrupt`]. A newer format version -> [`StateError::UnsupportedVersion`]
    /// with the file left untouched. Any error but [`StateError::Corrupt`] makes the document
    /// read-only for this [`StateDir`].
    pub fn read<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, StateError> {
        let result = self.read_inner(name);
        match &result {
            Ok(_) | Err(StateError::Corrupt { .. }) => {}
            Err(e) => {
                let reason = match e {
                    StateError::Io { source, .. } => format!("cannot be read: {source}"),
                    StateError::UnsupportedVersion {
                        found, supported, ..
                    } => format!("format version {found}, newer than supported {supported}"),
                    other => other.to_string(),
                };
                self.read_only.insert(name.to_owned(), reason);
            }
        }
        result
    }

    fn read_inner<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        let path = self.file(name)?;
        let bytes = match read_document(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let reason = match parse(&path, &bytes)? {
            Ok(value) => return Ok(Some(value)),
            Err(reason) => reason,
        };
        let moved_to = self.move_aside(&path)?;
        let (from, to) = (path.display(), moved_to.display());
        log::error!("state file {from} is corrupt ({reason}); moved it to {to}");
        let bak = sibling(&path, ".bak");
        if let Some(value) = read_document(&bak)
            .ok()
            .and_then(|b| parse(&bak, &b).ok()?.ok())
        {
            replicate(&bak, &sibling(&path, ".tmp"), &path)?;
            self.sync_dir()?;
            log::warn!("recovered state file {from} from {}", bak.display());
            return Ok(Some(value));
        }
        Err(StateError::Corrupt {
            path,
            moved_to,
            reason,
        })
    }

    /// Removes `<name>`; missing is Ok. The removed document is kept as `<name>.bak` (one atomic
    /// rename), so a removal can be undone by hand like any other write.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.writable_file(name)?;
        match fs::rename(&path, sibling(&path, ".bak")) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// `<dir>/<name>` if `name` is a plain, non-reserved file name.
    fn file(&self, name: &str) -> Result<PathBuf, StateError> {
        let valid = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && name != "lock"
            && !name.ends_with(".tmp")
            && !name.ends_with(".bak")
            && !name.contains(".corrupt-");
        let path = self.path.join(name);
        if valid {
            return Ok(path);
        }
        let msg = format!("invalid state file name {name:?}");
        Err(io_err(&path)(io::Error::new(ErrorKind::InvalidInput, msg)))
    }

    fn move_aside(&self, path: &Path) -> Result<PathBuf, StateError> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base = sibling(path, &format!(".corrupt-{secs}"));
        let mut target = base.clone();
        for n in 1.. {
            if !target.try_exists().map_err(io_err(&target))? {
                break;
            }
            target = sibling(&base, &format!("-{n}"));
        }
        fs::rename(path, &target).map_err(io_err(path))?;
        self.sync_dir()?;
        Ok(target)
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        sync_dir(&self.path)
    }
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Refuses a document path that exists as something other than a regular file (renaming over
/// a directory would fail anyway; this says why).
fn regular_or_missing(path: &Path) -> Result<(), StateError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            let kind = file_kind(&meta.file_type());
            let msg = format!("not a regular file ({kind})");
            Err(io_err(path)(io::Error::new(ErrorKind::InvalidInput, msg)))
        }
        _ => Ok(()),
    }
}

/// A serialized document ready to replace `<dir>/<name>` ([`StateDir::prepare`]). It owns
/// everything it needs, so the blocking [`PreparedWrite::commit`] can run on the worker.
#[derive(Debug, Clone)]
pub struct PreparedWrite {
    dir: PathBuf,
    path: PathBuf,
    bytes: Vec<u8>,
}

impl PreparedWrite {
    /// Writes the document durably (see [`StateDir::write`] for the steps and the errors).
    /// Blocks on fsync: call it where blocking is allowed.
    ///
    /// # Errors
    /// As [`StateDir::write`]; `<name>` then holds the previous document.
    pub fn commit(self) -> Result<(), StateError> {
        let PreparedWrite { dir, path, bytes } = self;
        regular_or_missing(&path)?;
        let tmp = sibling(&path, ".tmp");
        let bak = sibling(&path, ".bak");
        let replaced = write_synced(&tmp, &bytes)
            .and_then(|()| replicate(&path, &sibling(&path, ".bak.tmp"), &bak))
            .and_then(|had_previous| {
                fs::rename(&tmp, &path).map_err(io_err(&path))?;
                Ok(had_previous)
            });
        let had_previous = match replaced {
            Ok(had) => had,
            Err(e) => {
                // Give a full disk its space back; `<name>` was not touched.
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        sync_dir(&dir).inspect_err(|_| {
            // The rename may not be durable: put the previous document back so that what is
            // on disk matches the refusal the caller is about to give.
            let undone = if had_previous {
                replicate(&bak, &tmp, &path).map(|_| ())
            } else {
                fs::remove_file(&path).map_err(io_err(&path))
            };
            if let Err(u) = undone {
                log::error!(
                    "cannot restore {} after a failed write: {u}",
                    path.display()
                );
            }
        })
    }
}

/// Coalesced writes of one document: at most one write in flight; changes that arrive
/// meanwhile wait (at most `cap` of them) and all go out together in the next write, so a
/// burst of changes costs two writes, not one each. Pure bookkeeping: the caller builds the
/// document (the state as it will be after every pending change) and runs the write.
#[derive(Debug)]
pub struct WriteQueue<C> {
    in_flight: Vec<C>,
    writing: bool,
    waiting: Vec<C>,
    cap: usize,
}

impl<C> WriteQueue<C> {
    /// An idle queue holding at most `cap` waiting changes.
    pub fn new(cap: usize) -> Self {
        WriteQueue {
            in_flight: Vec::new(),
            writing: false,
            waiting: Vec::new(),
            cap,
        }
    }

    /// Adds a change to the next write.
    ///
    /// # Errors
    /// The change back when `cap` changes are already waiting.
    pub fn push(&mut self, change: C) -> Result<(), C> {
        if self.waiting.len() >= self.cap {
            return Err(change);
        }
        self.waiting.push(change);
        Ok(())
    }

    /// When no write is in flight and changes are waiting, they become the write in flight
    /// and `true` says: write the document now.
    pub fn start(&mut self) -> bool {
        if self.writing || self.waiting.is_empty() {
            return false;
        }
        self.in_flight = std::mem::take(&mut self.waiting);
        self.writing = true;
        true
    }

    /// The write in flight finished (either way): its changes, in order.
    pub fn finish(&mut self) -> Vec<C> {
        self.writing = false;
        std::mem::take(&mut self.in_flight)
    }

    /// Takes the waiting changes out (to validate them again after a failed write).
    pub fn take_waiting(&mut self) -> Vec<C> {
        std::mem::take(&mut self.waiting)
    }

    /// Every change not yet on disk, in order: the write in flight, then the waiting ones.
    pub fn pending(&self) -> impl Iterator<Item = &C> {
        self.in_flight.iter().chain(&self.waiting)
    }

    /// Changes in the write in flight.
    pub fn in_flight(&self) -> &[C] {
        &self.in_flight
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))
}

/// Atomically makes `to` a copy of `from` (hard link, or copy if links are unsupported, to `via`,
/// then rename). Does nothing if `from` does not exist; `Ok(true)` when it did.
fn replicate(from: &Path, via: &Path, to: &Path) -> Result<bool, StateError> {
    match fs::remove_file(via) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_err(via)(e)),
        _ => {}
    }
    match fs::hard_link(from, via) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(_) => match fs::read(from) {
            Ok(bytes) => write_synced(via, &bytes).inspect_err(|_| {
                let _ = fs::remove_file(via);
            })?,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(from)(e)),
        },
    }
    fs::rename(via, to).map_err(io_err(to))?;
    // rename(2) is a no-op when `via` and `to` already name the same inode (after a restore).
    match fs::remove_file(via) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err(via)(e)),
        _ => Ok(true),
    }
}

/// Largest state document read back; far above what the daemon writes (1000 server specs).
const MAX_DOCUMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A state document's bytes: a regular file only (a FIFO put in its place cannot hang the
/// read), at most [`MAX_DOCUMENT_BYTES`].
fn read_document(path: &Path) -> io::Result<Vec<u8>> {
    read_small_file(path, MAX_DOCUMENT_BYTES)
}

/// Outer error: newer version (leave the file alone); inner error: corrupt, with the reason.
fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<Result<T, String>, StateError> {
    let mut doc: Value = match serde_json::from_slice(bytes) {
        Ok(doc) => doc,
        Err(e) => return Ok(Err(format!("invalid JSON: {e}"))),
    };
    let Some(version) = doc.get("version").and_then(Value::as_u64) else {
        return Ok(Err("no integer \"version\" field".into()));
    };
    if version > u64::from(STATE_FORMAT_VERSION) {
        let found = u32::try_from(version).unwrap_or(u32::MAX);
        let (path, supported) = (path.to_path_buf(), STATE_FORMAT_VERSION);
        return Err(StateError::UnsupportedVersion {
            path,
            found,
            supported,
        });
    }
    match doc.get_mut("data").map(Value::take) {
        _ if version == 0 => Ok(Err("version 0".into())),
        None => Ok(Err("no \"data\" field".into())),
        Some(data) => Ok(serde_json::from_value(data).map_err(|e| format!("bad \"data\": {e}"))),
    }
}

/// `t` as RFC 3339 UTC with whole seconds, e.g. `2026-11-25T15:49:51Z` (floor for sub-seconds).
pub fn rfc3339_utc(t: SystemTime) -> String {
    let mut out = civil(unix_millis(t).div_euclid(1000));
    out.push('Z');
    out
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-11-25T15:49:51.123Z`.
pub fn rfc3339_utc_millis(t: SystemTime) -> String {
    let ms = unix_millis(t);
    let mut out = civil(ms.div_euclid(1000));
    let ms = ms.rem_euclid(1000) as u32; // [0, 999]
    out.push('.');
    push_digits(&mut out, ms, 3);
    out.push('Z');
    out
}

/// [`rfc3339_utc_millis`] made without allocating (for years 0–9999, the text of every
/// answer's envelope); deref to read it.
#[derive(Debug)]
pub enum Stamp {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, ASCII.
    Common([u8; 24]),
    /// Any other year.
    Other(String),
}

impl std::ops::Deref for Stamp {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // ASCII digits and separators only.
            Stamp::Common(text) => std::str::from_utf8(text).unwrap_or_default(),
            Stamp::Other(text) => text,
        }
    }
}

/// `t` as [`rfc3339_utc_millis`] gives it, in a [`Stamp`].
pub fn rfc3339_utc_millis_stamp(t: SystemTime) -> Stamp {
    let ms = unix_millis(t);
    match i64::try_from(ms.div_euclid(1000))
        .ok()
        .and_then(civil_digits)
    {
        Some(day) => {
            let mut text = *b"0000-00-00T00:00:00.000Z";
            text[..19].copy_from_slice(&day);
            write_digits(&mut text[20..23], ms.rem_euclid(1000) as u32); // [0, 999]
            Stamp::Common(text)
        }
        None => Stamp::Other(rfc3339_utc_millis(t)),
    }
}

/// Appends the last `width` decimal digits of `n` (zero-padded).
fn push_digits(out: &mut String, n: u32, width: usize) {
    let mut digits = [0u8; 4];
    write_digits(&mut digits[..width], n);
    // ASCII digits only.
    out.push_str(std::str::from_utf8(&digits[..width]).unwrap_or_default());
}

/// Fills `out` with the last `out.len()` decimal digits of `n` (zero-padded).
fn write_digits(out: &mut [u8], mut n: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn unix_millis(t: SystemTime) -> i128 {
    let nanos = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    nanos.div_euclid(1_000_000)
}

/// `YYYY-MM-DDTHH:MM:SS` for Unix seconds, via Howard Hinnant's days-to-civil algorithm.
///
/// Every answer's envelope carries a timestamp, so the common case (years 0–9999, which fit
/// an `i64`) is computed in 64 bits and written digit by digit: `i128` division and `format!`
/// were a seventh of the CPU of a `GET /api/v1/health`.
fn civil(secs: i128) -> String {
    if let Some(s) = i64::try_from(secs).ok().and_then(civil_fast) {
        return s;
    }
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}")
}

/// [`civil`] in 64 bits for years 0–9999 (`None` outside them).
fn civil_fast(secs: i64) -> Option<String> {
    let text = civil_digits(secs)?;
    // ASCII digits and separators only.
    let mut s = String::with_capacity(24); // room for the milliseconds and the `Z`
    s.push_str(std::str::from_utf8(&text).ok()?);
    Some(s)
}

/// [`civil_fast`]'s text, ASCII, on the stack.
fn civil_digits(secs: i64) -> Option<[u8; 19]> {
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let y = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
    let mut out = *b"0000-00-00T00:00:00";
    write_digits(&mut out[0..4], y);
    write_digits(&mut out[5..7], m as u32);
    write_digits(&mut out[8..10], d as u32);
    write_digits(&mut out[11..13], (sod / 3600) as u32);
    write_digits(&mut out[14..16], (sod / 60 % 60) as u32);
    write_digits(&mut out[17..19], (sod % 60) as u32);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_owner_round_trips_and_refuses_partial_text() {
        let o = LockOwner {
            pid: 42,
            socket: PathBuf::from("/run/x y/control.sock"),
        };
        assert_eq!(LockOwner::parse(&o.to_text()), Some(o));
        for bad in [
            "",
            "pid 42\n",
            "socket /s\n",
            "pid -3\nsocket /s\n",
            "pid x\nsocket /s",
        ] {
            assert_eq!(LockOwner::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_holder_is_recorded_in_the_lock_file() {
        let dir = std::env::temp_dir().join(format!("vsm-state-owner-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).expect("open");
        assert_eq!(lock_owner(&dir), None);
        let long = LockOwner {
            pid: 7,
            socket: PathBuf::from(format!("/{}", "s".repeat(200))),
        };
        state.record_owner(&long).expect("record");
        let short = LockOwner {
            pid: 8,
            socket: PathBuf::from("/s"),
        };
        state.record_owner(&short).expect("record");
        assert_eq!(lock_owner(&dir), Some(short));
        drop(state);
        let _ = fs::remove_dir_all(&dir);
    }
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn setup() -> (TempDir, StateDir) {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let t = TempDir(std::env::temp_dir().join(format!("vsm-state-{}-{n}", std::process::id())));
        let _ = fs::remove_dir_all(&t.0);
        let d = StateDir::open(&t.0.join("a/b")).unwrap();
        (t, d)
    }

    fn names(d: &StateDir) -> Vec<String> {
        let entries = fs::read_dir(d.path()).unwrap();
        let mut v: Vec<_> = entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn raw(d: &StateDir, name: &str) -> Value {
        serde_json::from_slice(&fs::read(d.path().join(name)).unwrap()).unwrap()
    }

    #[test]
    fn round_trip_modes_and_remove() {
        let (_t, mut d) = setup();
        let v = json!({"a": [1, 2]});
        assert_eq!(d.read::<Value>("x.json").unwrap(), None);
        d.write("x.json", &v).unwrap();
        assert_eq!(d.read::<Value>("x.json").unwrap(), Some(v));
        let raw = raw(&d, "x.json");
        assert!(raw["version"] == 1 && raw["written_at"].as_str().unwrap().ends_with('Z'));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            [mode(d.path()), mode(&d.path().join("x.json"))],
            [0o700, 0o600]
        );
        d.remove("x.json").unwrap();
        d.remove("x.json").unwrap();
        assert_eq!(d.read::<Value>("x.json").unwrap(), None);
        assert_eq!(names(&d), ["lock", "x.json.bak"]);
    }

    #[test]
    fn bak_holds_previous_version() {
        let (_t, mut d) = setup();
        for v in 1..=3 {
            d.write("s.json", &v).unwrap();
        }
        assert_eq!(d.read::<u32>("s.json").unwrap(), Some(3));
        assert_eq!(raw(&d, "s.json.bak")["data"], 2);
        assert_eq!(names(&d), ["lock", "s.json", "s.json.bak"]);
    }

    #[test]
    fn corrupt_is_moved_aside_and_bak_recovered() {
        let (_t, mut d) = setup();
        d.write("s.json", &1).unwrap();
        d.write("s.json", &2).unwrap();
        fs::write(d.path().join("s.json"), b"{\"version\": 1, \"da").unwrap();
        assert_eq!(d.read::<u32>("s.json").unwrap(), Some(1));
        assert_eq!(
            d.read::<u32>("s.json").unwrap(),
            Some(1),
            "backup restored in place"
        );
        let n = names(&d);
        assert!(n[3].starts_with("s.json.corrupt-"), "{n:?}");
        assert_eq!(
            fs::read(d.path().join(&n[3])).unwrap(),
            b"{\"version\": 1, \"da"
        );
        d.write("s.json", &4).unwrap();
        assert_eq!(raw(&d, "s.json.bak")["data"], 1);
        assert_eq!(names(&d).len(), 4, "no .tmp leftovers: {:?}", names(&d));
    }

    #[test]
    fn corrupt_without_bak_is_error_and_kept() {
        let (_t, mut d) = setup();
        let junk: [&[u8]; 4] = [
            b"",
            b"[1]",
            b"{\"data\": 1}",
            br#"{"version": 1, "data": "s"}"#,
        ];
        for junk in junk {
            fs::write(d.path().join("s.json"), junk).unwrap();
            match d.read::<u32>("s.json") {
                Err(StateError::Corrupt { path, moved_to, .. }) => {
                    assert!(!path.exists() && moved_to.to_str().unwrap().contains(".corrupt-"));
                    assert_eq!(fs::read(&moved_to).unwrap(), junk);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            names(&d).len(),
            5,
            "every corrupt file kept under its own name"
        );
    }

    #[test]
    fn newer_version_is_refused_and_untouched() {
        let (_t, mut d) = setup();
        let doc = br#"{"version": 2, "written_at": "2030-01-01T00:00:00Z", "data": {"x": 1}}"#;
        fs::write(d.path().join("s.json"), doc).unwrap();
        let err = d.read::<Value>("s.json").unwrap_err();
        assert!(
            matches!(err, StateError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        assert_eq!(fs::read(d.path().join("s.json")).unwrap(), doc);
        assert_eq!(names(&d), ["lock", "s.json"]);
        // ... and it stays untouched: writes and removal are refused from now on.
        let err = d.write("s.json", &1).unwrap_err();
        assert!(matches!(err, StateError::ReadOnly { .. }), "{err}");
        assert!(err.to_string().contains("format version 2"), "{err}");
        assert!(matches!(
            d.remove("s.json"),
            Err(StateError::ReadOnly { .. })
        ));
        assert_eq!(fs::read(d.path().join("s.json")).unwrap(), doc);
        assert_eq!(names(&d), ["lock", "s.json"]);
        assert_eq!(d.read_only().count(), 1);
        d.write("other.json", &1).unwrap();
    }

    #[test]
    fn non_regular_document_is_refused_by_name() {
        let (_t, mut d) = setup();
        d.write("s.json", &1).unwrap();
        fs::remove_file(d.path().join("s.json")).unwrap();
        fs::create_dir(d.path().join("s.json")).unwrap();
        let problems = check_documents(d.path(), &["s.json", "missing.json"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("s.json is not a regular file (a directory)"));
        // A write names the problem and leaves no temp file behind.
        let err = d.write("s.json", &2).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(!err.is_out_of_space());
        assert_eq!(names(&d), ["lock", "s.json"]);
        // Reading it makes it read-only for this StateDir.
        assert!(matches!(
            d.read::<u32>("s.json"),
            Err(StateError::Io { .. })
        ));
        assert!(matches!(
            d.write("s.json", &3),
            Err(StateError::ReadOnly { .. })
        ));
    }

    #[test]
    fn failed_temp_write_leaves_the_document_and_no_temp() {
        let (_t, d) = setup();
        d.write("s.json", &1).unwrap();
        // A directory where the temp file goes makes the temp write fail.
        fs::create_dir(d.path().join("s.json.tmp")).unwrap();
        assert!(d.write("s.json", &2).is_err());
        fs::remove_dir(d.path().join("s.json.tmp")).unwrap();
        assert_eq!(raw(&d, "s.json")["data"], 1);
        d.write("s.json", &3).unwrap();
        assert_eq!(names(&d), ["lock", "s.json", "s.json.bak"]);
    }

    #[test]
    fn write_queue_coalesces_behind_one_write_in_flight() {
        let mut q = WriteQueue::new(2);
        assert!(!q.start(), "nothing to write");
        q.push(1).unwrap();
        assert!(q.start());
        q.push(2).unwrap();
        q.push(3).unwrap();
        assert_eq!(q.push(4), Err(4), "bounded");
        assert!(!q.start(), "one write in flight at a time");
        assert_eq!(q.pending().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(q.in_flight(), [1]);
        assert_eq!(q.finish(), [1]);
        assert!(q.start(), "the waiting changes go out together");
        assert_eq!(q.in_flight(), [2, 3]);
        q.push(5).unwrap();
        assert_eq!(q.take_waiting(), [5]);
        assert_eq!(q.finish(), [2, 3]);
        assert!(!q.start() && q.pending().next().is_none());
    }

    #[test]
    fn prepared_write_commits_elsewhere() {
        let (_t, mut d) = setup();
        let prepared = d.prepare("p.json", &json!({"a": 1})).unwrap();
        assert_eq!(
            d.read::<Value>("p.json").unwrap(),
            None,
            "nothing written yet"
        );
        std::thread::spawn(move || prepared.commit())
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(d.read::<Value>("p.json").unwrap(), Some(json!({"a": 1})));
    }

    #[test]
    fn second_open_is_locked_even_in_same_process() {
        let (t, d) = setup();
        let err = StateDir::open(&t.0.join("a/b")).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        drop(d);
        StateDir::open(&t.0.join("a/b")).unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        let (_t, mut d) = setup();
        for bad in "|.hidden|a/b|../x|lock|x.tmp|x.bak|x.corrupt-1|sp ace|é".split('|') {
            match d.write(bad, &1) {
                Err(StateError::Io { source, .. }) => {
                    assert_eq!(source.kind(), ErrorKind::InvalidInput)
                }
                other => panic!("{bad:?}: {other:?}"),
            }
            assert!(d.read::<u32>(bad).is_err() && d.remove(bad).is_err());
        }
        assert_eq!(names(&d), ["lock"]);
        assert!(default_state_dir().is_absolute() && default_state_dir().ends_with("vsm-daemon"));
    }

    #[test]
    fn rfc3339_known_values() {
        let at = |s: i64, ms: u64| {
            let (d, t) = (
                Duration::from_secs(s.unsigned_abs()),
                UNIX_EPOCH + Duration::from_millis(ms),
            );
            let t = if s < 0 { t - d } else { t + d };
            (rfc3339_utc(t), rfc3339_utc_millis(t))
        };
        assert_eq!(at(0, 0).0, "1970-01-01T00:00:00Z");
        assert_eq!(at(1_709_164_800, 0).0, "2024-02-29T00:00:00Z");
        assert_eq!(at(951_868_800, 0).0, "2000-03-01T00:00:00Z");
        assert_eq!(at(951_868_799, 0).0, "2000-02-29T23:59:59Z");
        assert_eq!(at(4_102_444_800, 0).0, "2100-01-01T00:00:00Z");
        assert_eq!(at(253_402_300_799, 999).1, "9999-12-31T23:59:59.999Z");
        assert_eq!(at(1_795_621_791, 123).0, "2026-11-25T15:49:51Z");
        assert_eq!(at(1_795_621_791, 123).1, "2026-11-25T15:49:51.123Z");
        assert_eq!(at(-1, 500).1, "1969-12-31T23:59:59.500Z");
    }

    #[test]
    fn the_fast_civil_agrees_with_the_general_one() {
        let general = |secs: i64| {
            let secs = i128::from(secs);
            let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i128::from(m <= 2);
            let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}")
        };
        // Year 0 to 9999, in uneven steps that land on every time of day and month length.
        let (first, last) = (-62_167_219_200_i64, 253_402_300_799_i64);
        let mut secs = first;
        while secs <= last {
            assert_eq!(
                civil_fast(secs).as_deref(),
                Some(general(secs).as_str()),
                "{secs}"
            );
            secs += 86_400 * 7 + 3_599;
        }
        assert_eq!(civil_fast(last).as_deref(), Some("9999-12-31T23:59:59"));
        assert_eq!(civil_fast(first).as_deref(), Some("0000-01-01T00:00:00"));
        assert_eq!(civil_fast(last + 1), None);
        assert_eq!(civil_fast(first - 1), None);
        // The envelope's stamp is the same text, the milliseconds too, in and out of range.
        for ms in [
            first * 1000,
            first * 1000 - 1,
            -1,
            0,
            1_764_201_600_123,
            last * 1000 + 999,
            (last + 1) * 1000,
        ] {
            let t = if ms < 0 {
                UNIX_EPOCH - std::time::Duration::from_millis(ms.unsigned_abs())
            } else {
                UNIX_EPOCH + std::time::Duration::from_millis(ms as u64)
            };
            assert_eq!(&*rfc3339_utc_millis_stamp(t), rfc3339_utc_millis(t), "{ms}");
        }
        let stamp = rfc3339_utc_millis_stamp(UNIX_EPOCH + std::time::Duration::from_millis(1_500));
        assert!(matches!(stamp, Stamp::Common(_)));
        assert_eq!(&*stamp, "1970-01-01T00:00:01.500Z");
        assert_eq!(civil(i128::from(last) + 1), "10000-01-01T00:00:00");
    }

    #[test]
    fn read_small_file_refuses_what_is_not_a_small_regular_file() {
        let dir = std::env::temp_dir().join(format!("vsm-small-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok");
        fs::write(&ok, b"secret\n").unwrap();
        assert_eq!(read_small_file(&ok, 7).unwrap(), b"secret\n");
        assert_eq!(
            read_small_file(&ok, 6).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
        assert_eq!(
            read_small_file(&dir, 100).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            read_small_file(Path::new("/dev/zero"), 100)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            read_small_file(&fifo, 100).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
