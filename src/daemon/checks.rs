//! Wiring of the checks room ([`crate::monitor::checks::room`]): entering it, and where its
//! outputs go (readings to [`Daemon::observe`], answers to the effect bus). Thin on purpose:
//! the logic is in `monitor/`.

use super::*;
use crate::monitor::checks::room::{Checks, Output as ChecksOutput};
use crate::room::RoomCx;

impl Daemon {
    /// Runs `f` on the checks room, then delivers what it said.
    pub(super) fn with_checks<X>(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        f: impl FnOnce(&mut Checks, &mut RoomCx<'_, Checks>) -> X,
    ) -> X {
        let mut out = Vec::new();
        let x = rooms::enter(
            &mut self.rooms.checks,
            cx,
            &mut self.worker,
            &mut self.jobs,
            &mut out,
            f,
        );
        self.checks_outputs(cx, out);
        x
    }

    /// The checks room's outputs: readings to the deciding room, answers to the bus. The MCP
    /// room's orphan sweep is told which children are the checks' own.
    pub(super) fn checks_outputs(&mut self, cx: &mut Cx<'_, Timer>, out: Vec<ChecksOutput>) {
        self.spare_children();
        for o in out {
            match o {
                ChecksOutput::Effect(e) => self.effects.push(e),
                ChecksOutput::Observe(obs) => self.observe(cx, obs),
            }
        }
    }
}

impl Daemon {
    /// Runs `f` on the actions room, then delivers what it said.
    pub(super) fn with_actions<X>(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        f: impl FnOnce(
            &mut crate::monitor::actions::Actions,
            &mut RoomCx<'_, crate::monitor::actions::Actions>,
        ) -> X,
    ) -> X {
        let mut out = Vec::new();
        let x = rooms::enter(
            &mut self.rooms.actions,
            cx,
            &mut self.worker,
            &mut self.jobs,
            &mut out,
            f,
        );
        self.actions_outputs(cx, out);
        x
    }

    /// The actions room's answers go to the bus; its children are spared by the MCP sweep.
    pub(super) fn actions_outputs(&mut self, _cx: &mut Cx<'_, Timer>, out: Vec<Effect>) {
        self.spare_children();
        self.effects.extend(out);
    }

    /// Tells the MCP room's orphan sweep which children belong to the checks and actions.
    fn spare_children(&mut self) {
        let mut pids = self.rooms.checks.child_pids();
        pids.extend(self.rooms.actions.child_pids());
        self.rooms.mcp.spare_pids = pids;
    }
}
