//! The settings room: the configuration's layers (file, stored overrides, effective), and
//! `config show`, `config set` (persisted overrides), `config reload` and `config schema`.
//!
//! An update (`config set`, `PUT /api/v1/config`) is validate → persist → apply: the patch is
//! checked alone, then against the overrides as they will be once every pending patch is
//! saved; `overrides.json` is written through [`Effect::Persist`] (the coalescing writer on
//! the worker) with the acknowledgement addressed to this room, at most one write in flight
//! (later patches wait, at most [`MAX_WAITING_PATCHES`], and are checked again when the write
//! before them failed). The change is applied and answered only once its write is on disk;
//! a failed write changes nothing. Patches saved by one write get the same report. The
//! effective config is computed again at apply time: a reload in between may have changed the
//! file layer.
//!
//! What the room cannot do itself it hands to the wiring as [`Output::Apply`]: the TCP access
//! policy (built by the wiring's check, which the room holds as a closure so it never sees the
//! network floor), the log level, the connection limits, and every room's `apply_config`
//! (generated from the room list). The wiring reads the effective configuration from
//! [`Settings::config`].
//!
//! Invariant: `layers.effective` is the base with the stored overrides applied, or the base
//! alone when they conflict with it (`problem` says why); `layers.overrides` is what
//! `overrides.json` holds on disk.

use crate::api::{Answer, ApiError, ConfigRequest, ErrorCode, ReplyTo};
use crate::config::{self, Config, ConfigError};
use crate::room::{Effect, Room, RoomCx, Serve};
use crate::state;
use serde_json::{json, Value};
use std::path::PathBuf;

/// Name of the overrides document in the state directory.
pub const OVERRIDES_FILE: &str = "overrides.json";

/// Configuration changes that may wait behind the overrides write in flight.
pub const MAX_WAITING_PATCHES: usize = 16;

/// Where the configuration comes from and what overrides it.
#[derive(Debug)]
pub struct Layers {
    /// The config file (`--config`), if any.
    pub file: Option<PathBuf>,
    /// The file's configuration (or the defaults).
    pub base: Config,
    /// What `overrides.json` holds.
    pub overrides: Value,
    /// Why some or all of the stored overrides are not applied.
    pub problem: Option<String>,
    /// The configuration in effect.
    pub effective: Config,
}

/// The wiring's check of a configuration's TCP access policy: the policy it builds (type `A`,
/// opaque to the room), or why it cannot be built.
pub type AccessCheck<A> = Box<dyn Fn(&Config) -> Result<A, ApiError>>;

/// What the settings room hands to the wiring.
#[derive(Debug)]
pub enum Output<A> {
    /// A common effect.
    Effect(Effect),
    /// A new effective configuration ([`Settings::config`]) was adopted: apply what only the
    /// wiring holds and hand it to every room.
    Apply {
        /// The keys that changed.
        changed: Vec<String>,
        /// The new TCP access policy; `None` keeps the one in force.
        access: Option<A>,
    },
}

impl<A> From<Effect> for Output<A> {
    fn from(e: Effect) -> Self {
        Output::Effect(e)
    }
}

/// A merge patch waiting for its `overrides.json` write, with the document it leads to.
#[derive(Debug)]
struct PendingPatch {
    patch: Value,
    overrides: Value,
    reply: ReplyTo,
}

/// The settings room.
pub struct Settings<A> {
    layers: Layers,
    check_access: AccessCheck<A>,
    writes: state::WriteQueue<PendingPatch>,
    /// The tag of the overrides write in flight (its acknowledgement comes back with it).
    writing: Option<u64>,
    next_tag: u64,
}

impl<A: 'static> Settings<A> {
    /// The room over `layers`, checking access policies with `check_access`.
    pub fn new(layers: Layers, check_access: AccessCheck<A>) -> Self {
        Settings {
            layers,
            check_access,
            writes: state::WriteQueue::new(MAX_WAITING_PATCHES),
            writing: None,
            next_tag: 1,
        }
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.layers.effective
    }

    /// Why some stored overrides are not applied, if so.
    pub fn problem(&self) -> Option<&str> {
        self.layers.problem.as_deref()
    }

    /// Where the configuration comes from, for people.
    pub fn source(&self) -> String {
        match &self.layers.file {
            Some(p) => p.display().to_string(),
            None => "embedded defaults".to_string(),
        }
    }

    fn show(&self, section: Option<&str>) -> Answer {
        let effective = &self.layers.effective;
        let config = match section {
            None => effective.to_json_redacted(),
            Some(s) => effective.section_json(s).ok_or_else(|| {
                ApiError::field(
                    ErrorCode::ConfigKeyNotFound,
                    "section",
                    format!("no configuration section '{s}'"),
                )
            })?,
        };
        let not_enforced: Vec<&str> = config::not_enforced_keys()
            .filter(|k| section.is_none_or(|s| k.starts_with(s) && k[s.len()..].starts_with('.')))
            .collect();
        Ok(json!({
            "source": self.source(),
            "section": section,
            "config": config,
            "not_enforced": not_enforced,
            "overrides": self.layers.overrides,
            "overrides_warning": self.layers.problem,
        }))
    }

    /// Queues a merge patch of the overrides; the answer goes to `reply` once the new
    /// `overrides.json` is saved (and the change applied), or the save failed (nothing
    /// changed).
    ///
    /// # Errors
    /// Refused at once: an invalid patch, a result that does not validate, busy.
    fn update(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        patch: Value,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        // The patch alone first: a bad value is refused before anything is cloned. It may not
        // add a key this build does not know, but may remove one (null); unknown keys already
        // stored (from a newer daemon) neither block it nor get lost.
        Config::check_patch(&patch).map_err(|e| config_error(&e))?;
        let overrides = self.overrides_after(&patch)?;
        if self.writing.is_some() {
            log::debug!("a configuration patch waits for the {OVERRIDES_FILE} write in flight");
        }
        let pending = PendingPatch {
            patch,
            overrides,
            reply,
        };
        self.writes.push(pending).map_err(|_| {
            ApiError::new(
                ErrorCode::Busy,
                format!("{MAX_WAITING_PATCHES} configuration changes are waiting to be saved; try again"),
            )
        })?;
        self.start_write(cx);
        Ok(())
    }

    /// The stored overrides once every pending patch and `patch` are applied, checked: the
    /// effective config validates and its TCP access policy can be built.
    fn overrides_after(&self, patch: &Value) -> Result<Value, ApiError> {
        let mut overrides = self
            .writes
            .pending()
            .last()
            .map_or(&self.layers.overrides, |p| &p.overrides)
            .clone();
        config::merge_patch(&mut overrides, patch);
        prune_empty(&mut overrides);
        let split = config::StoredOverrides::split(&overrides);
        let effective = self
            .layers
            .base
            .with_overrides(&split.known)
            .map_err(|e| config_error(&e))?;
        (self.check_access)(&effective)?;
        Ok(overrides)
    }

    fn start_write(&mut self, cx: &mut RoomCx<'_, Self>) {
        if !self.writes.start() {
            return;
        }
        // The last pending document holds every earlier patch too.
        let Some(document) = self.writes.in_flight().last().map(|p| p.overrides.clone()) else {
            return;
        };
        log::debug!(
            "saving {OVERRIDES_FILE} ({} change(s))",
            self.writes.in_flight().len()
        );
        let tag = self.next_tag;
        self.next_tag += 1;
        self.writing = Some(tag);
        let ack = ReplyTo::Room {
            room: Self::NAME,
            tag,
        };
        cx.persist(OVERRIDES_FILE, document, Some((ack, Value::Null)));
    }

    /// The overrides write finished: apply and answer its patches, or refuse them.
    fn write_finished(&mut self, cx: &mut RoomCx<'_, Self>, result: Result<(), ApiError>) {
        let done = self.writes.finish();
        match result {
            Ok(()) => {
                let Some(last) = done.last() else {
                    return self.start_write(cx);
                };
                self.layers.overrides = last.overrides.clone();
                // Computed again: a reload may have changed the file layer meanwhile.
                let (effective, mut problem) =
                    apply_stored_overrides(&self.layers.base, &self.layers.overrides);
                let access = match (self.check_access)(&effective) {
                    Ok(access) => Some(access),
                    Err(e) => {
                        let msg =
                            format!("saved, but the TCP access policy was kept: {}", e.message);
                        log::error!("{msg}");
                        problem = Some(problem.map_or(msg.clone(), |p| format!("{p}; {msg}")));
                        None
                    }
                };
                self.layers.problem = problem;
                let report = self.adopt(cx, effective, access);
                log::info!("configuration updated over the API: {}", report["changed"]);
                for p in done {
                    cx.reply(p.reply, Ok(report.clone()));
                }
            }
            Err(error) => {
                for p in done {
                    cx.reply(p.reply, Err(error.clone()));
                }
                // Waiting patches were checked on top of the failed ones: check them again.
                for p in self.writes.take_waiting() {
                    let checked = self.overrides_after(&p.patch).and_then(|overrides| {
                        let again = PendingPatch { overrides, ..p };
                        self.writes
                            .push(again)
                            .map_err(|_| ApiError::new(ErrorCode::Busy, "try again"))
                    });
                    if let Err(refused) = checked {
                        cx.reply(p.reply, Err(refused));
                    }
                }
            }
        }
        self.start_write(cx);
    }

    /// Re-reads the config file and applies it with the stored overrides; an invalid file (or
    /// an unusable access policy) is refused and the running configuration stays.
    ///
    /// # Errors
    /// The file does not parse or validate, or its access policy cannot be built.
    pub fn reload(&mut self, cx: &mut RoomCx<'_, Self>) -> Answer {
        let base = match &self.layers.file {
            Some(path) => Config::from_file(path).map_err(|e| config_error(&e))?,
            None => Config::default(),
        };
        let (effective, problem) = apply_stored_overrides(&base, &self.layers.overrides);
        let access = (self.check_access)(&effective)?;
        self.layers.base = base;
        self.layers.problem = problem;
        let report = self.adopt(cx, effective, Some(access));
        log::info!(
            "configuration reloaded from {}: {}",
            self.source(),
            report["changed"]
        );
        Ok(report)
    }

    /// Makes `new` the effective config and asks the wiring to apply it; the report says what
    /// changed.
    fn adopt(&mut self, cx: &mut RoomCx<'_, Self>, new: Config, access: Option<A>) -> Value {
        let changed = self.layers.effective.changed_keys(&new);
        let restart_required: Vec<&String> = changed
            .iter()
            .filter(|k| config::requires_restart(k))
            .collect();
        // No silent promises: a change to a key nothing reads yet is said out loud.
        let promised = new.not_enforced_set();
        let not_enforced: Vec<&String> = changed.iter().filter(|k| promised.contains(k)).collect();
        for key in &not_enforced {
            log::warn!(
                "{key} is set but {}: it has no effect",
                config::NOT_ENFORCED
            );
        }
        let report = json!({
            "changed": changed,
            "restart_required": restart_required,
            "not_enforced": not_enforced,
            "warning": self.layers.problem,
        });
        self.layers.effective = new;
        cx.emit(Output::Apply { changed, access });
        report
    }
}

impl<A: 'static> Room for Settings<A> {
    type Timer = ();
    type Job = ();
    type Output = Output<A>;
    const NAME: &'static str = "settings";

    fn on_timer(&mut self, _cx: &mut RoomCx<'_, Self>, (): ()) {}
    fn on_job(&mut self, _cx: &mut RoomCx<'_, Self>, (): ()) {}

    /// The acknowledgement of an overrides write (the only thing this room asks for).
    fn on_answer(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, answer: Answer) {
        if self.writing != Some(tag) {
            log::error!("settings: an acknowledgement (tag {tag}) for no write in flight");
            return;
        }
        self.writing = None;
        self.write_finished(cx, answer.map(|_| ()));
    }
}

impl<A: 'static> Serve for Settings<A> {
    type Request = ConfigRequest;

    fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: ConfigRequest, reply: ReplyTo) {
        let answer = match request {
            ConfigRequest::Show { section } => self.show(section.as_deref()),
            ConfigRequest::Update { patch } => match self.update(cx, patch, reply) {
                Ok(()) => return,
                Err(e) => Err(e),
            },
            ConfigRequest::Reload => self.reload(cx),
            ConfigRequest::Schema => Ok(config::schema()),
        };
        cx.reply(reply, answer);
    }
}

/// `base` with the known part of the stored overrides applied, and the warning to show (and
/// log) when some keys are unknown (kept in the file, not applied) or the rest conflicts with
/// `base` (then none is applied; the file stays as it is so nothing is lost).
pub fn apply_stored_overrides(base: &Config, stored: &Value) -> (Config, Option<String>) {
    let split = config::StoredOverrides::split(stored);
    let unknown = split.warning();
    if let Some(w) = &unknown {
        log::warn!("{OVERRIDES_FILE}: {w}");
    }
    match base.with_overrides(&split.known) {
        Ok(effective) => (effective, unknown),
        Err(e) => {
            let msg =
                format!("stored overrides not applied (they conflict with the config file): {e}");
            log::error!("{msg}");
            let problem = unknown.map_or(msg.clone(), |w| format!("{msg}; {w}"));
            (base.clone(), Some(problem))
        }
    }
}

/// Drops `{}` left behind by merge-patch deletions so the stored overrides stay minimal.
fn prune_empty(value: &mut Value) {
    if let Value::Object(map) = value {
        for v in map.values_mut() {
            prune_empty(v);
        }
        map.retain(|_, v| !matches!(v, Value::Object(m) if m.is_empty()) && !v.is_null());
    }
}

/// A configuration error as the API says it.
pub fn config_error(e: &ConfigError) -> ApiError {
    match e {
        ConfigError::UnknownKey { key } => {
            ApiError::field(ErrorCode::ConfigKeyNotFound, key.clone(), e.to_string())
        }
        _ => ApiError {
            code: ErrorCode::ConfigInvalid,
            message: e.to_string(),
            field: e.key().map(str::to_string),
            data: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::testing::{enter, Inline};
    use crate::room::Persist;

    fn room() -> Settings<()> {
        let layers = Layers {
            file: None,
            base: Config::default(),
            overrides: json!({}),
            problem: None,
            effective: Config::default(),
        };
        Settings::new(layers, Box::new(|_| Ok(())))
    }

    fn client(tag: u64) -> ReplyTo {
        ReplyTo::Room {
            room: "client",
            tag,
        }
    }

    /// The overrides write asked for (its document and acknowledgement tag), and the answers
    /// to clients, in order.
    type Seen = (Vec<(Value, u64)>, Vec<(u64, bool)>, Vec<Vec<String>>);

    fn sort(out: Vec<Output<()>>) -> Seen {
        let (mut writes, mut answers, mut applied) = (Vec::new(), Vec::new(), Vec::new());
        for o in out {
            match o {
                Output::Effect(Effect::Persist(Persist {
                    file,
                    document,
                    ack: Some((ReplyTo::Room { room, tag }, _)),
                })) => {
                    assert_eq!((file, room), (OVERRIDES_FILE, "settings"));
                    writes.push((document, tag));
                }
                Output::Effect(Effect::Reply(ReplyTo::Room { tag, .. }, answer)) => {
                    answers.push((tag, answer.is_ok()))
                }
                Output::Apply { changed, .. } => applied.push(changed),
                other => panic!("unexpected {other:?}"),
            }
        }
        (writes, answers, applied)
    }

    #[test]
    fn a_patch_is_applied_and_answered_only_once_its_write_is_acknowledged() {
        let (mut settings, mut wiring) = (room(), Inline::new());
        let mut out = Vec::new();
        let patch = |patch: Value| ConfigRequest::Update { patch };
        enter(&mut settings, &mut wiring, &mut out, |r, cx| {
            r.handle(
                cx,
                patch(json!({"daemon": {"log_level": "debug"}})),
                client(1),
            );
            r.handle(
                cx,
                patch(json!({"daemon": {"log_buffer_lines": 500}})),
                client(2),
            );
        });
        // One write in flight; the second patch waits; nobody answered, nothing applied.
        let (writes, answers, applied) = sort(std::mem::take(&mut out));
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0, json!({"daemon": {"log_level": "debug"}}));
        assert!(answers.is_empty() && applied.is_empty());
        assert_eq!(settings.config().daemon.log_level, "info");

        // The first write fails: its patch is refused, nothing changes, and the waiting patch
        // is checked again and written on its own (not on top of the failed one).
        let failed = ApiError::new(ErrorCode::PersistFailed, "disk");
        let first = writes[0].1;
        enter(&mut settings, &mut wiring, &mut out, |r, cx| {
            r.on_answer(cx, first, Err(failed))
        });
        let (writes, answers, applied) = sort(std::mem::take(&mut out));
        assert_eq!(answers, [(1, false)]);
        assert!(applied.is_empty());
        assert_eq!(settings.config().daemon.log_level, "info");
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0, json!({"daemon": {"log_buffer_lines": 500}}));

        // A stale acknowledgement is ignored; the right one applies and answers.
        enter(&mut settings, &mut wiring, &mut out, |r, cx| {
            r.on_answer(cx, first, Ok(Value::Null))
        });
        assert!(out.is_empty(), "a stale ack does nothing");
        let second = writes[0].1;
        enter(&mut settings, &mut wiring, &mut out, |r, cx| {
            r.on_answer(cx, second, Ok(Value::Null))
        });
        let (writes, answers, applied) = sort(std::mem::take(&mut out));
        assert!(writes.is_empty());
        assert_eq!(applied, [vec!["daemon.log_buffer_lines".to_string()]]);
        assert_eq!(answers, [(2, true)]);
        assert_eq!(settings.config().daemon.log_level, "info");
        assert_eq!(settings.config().daemon.log_buffer_lines, 500);
    }

    #[test]
    fn a_patch_the_access_check_refuses_is_refused_at_once() {
        let layers = Layers {
            file: None,
            base: Config::default(),
            overrides: json!({}),
            problem: None,
            effective: Config::default(),
        };
        let mut settings: Settings<()> = Settings::new(
            layers,
            Box::new(|c: &Config| {
                if c.security.api_token.is_empty() {
                    Ok(())
                } else {
                    Err(ApiError::new(ErrorCode::ConfigInvalid, "no"))
                }
            }),
        );
        let (mut wiring, mut out) = (Inline::new(), Vec::new());
        let request = ConfigRequest::Update {
            patch: json!({"security": {"api_token": "0123456789abcdef0123456789abcdef"}}),
        };
        enter(&mut settings, &mut wiring, &mut out, |r, cx| {
            r.handle(cx, request, client(7))
        });
        let (writes, answers, applied) = sort(out);
        assert!(writes.is_empty() && applied.is_empty());
        assert_eq!(answers, [(7, false)]);
    }
}
