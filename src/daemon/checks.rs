//! Wiring of the checks room ([`crate::monitor::checks::room`]): entering it, and where its
//! outputs go (readings to [`Daemon::observe`], answers to the effect bus). Thin on purpose:
//! the logic is in `monitor/`.

use super::*;
use crate::monitor::checks::room::Output as ChecksOutput;

impl Daemon {
    /// The checks room's outputs: readings to the deciding room, answers to the bus.
    pub(super) fn checks_outputs(&mut self, cx: &mut Cx<'_, Timer>, out: Vec<ChecksOutput>) {
        for o in out {
            match o {
                ChecksOutput::Effect(e) => self.effects.push(e),
                ChecksOutput::Observe(obs) => self.observe(cx, obs),
            }
        }
    }
}

impl Daemon {
    /// The security room's readings go to the deciding room; when it asks, it gets the MCP
    /// servers' pids (each server is its own session) to scan for listening sockets.
    pub(super) fn security_outputs(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        out: Vec<crate::monitor::security::Output>,
    ) {
        use crate::monitor::security::Output as O;
        for o in out {
            match o {
                O::Effect(e) => self.effects.push(e),
                O::Observe(obs) => self.observe(cx, obs),
                O::WantServers => {
                    let list = self.rooms.mcp.list("all");
                    let servers: Vec<(String, i32)> = list["servers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| {
                            let pid = s["pid"].as_i64().filter(|p| *p > 0)?;
                            Some((s["id"].as_str()?.to_string(), i32::try_from(pid).ok()?))
                        })
                        .collect();
                    self.with::<crate::monitor::security::Security, _>(cx, |room, rcx| {
                        room.scan(rcx, servers)
                    });
                }
            }
        }
    }
}

impl Daemon {
    /// The checks room's requests: the list gathers the actions' and security rooms' states
    /// beside the checks'; a run and an action test answer when they end.
    pub(super) fn serve_checks(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        request: crate::api::ChecksRequest,
        reply: ReplyTo,
    ) {
        use crate::api::ChecksRequest as R;
        let answer = match request {
            R::List => {
                let mut list = self.rooms.checks.list();
                list["actions"] = self.rooms.actions.status();
                list["security"] = self.rooms.security.status();
                Ok(list)
            }
            R::TestAction { name } => {
                self.with::<crate::monitor::actions::Actions, _>(cx, |room, rcx| {
                    room.test(rcx, &name, reply)
                });
                return;
            }
            R::Run { name } => {
                match self.with::<crate::monitor::checks::room::Checks, _>(cx, |room, rcx| {
                    room.run_now(rcx, &name, reply)
                }) {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
        };
        self.answer(cx, reply, answer);
    }
}
