//! Where the alerts room's action requests go to the room that runs actions.

use super::*;
use crate::monitor::observation::ActionRun;

impl Daemon {
    /// An alert asks for a `webhook:NAME` or `exec:NAME` action: the actions room runs it (an
    /// action that is not configured is recorded as failed there, and logged here).
    pub(super) fn act(&mut self, cx: &mut Cx<'_, Timer>, run: ActionRun) {
        if let Err(e) =
            self.with::<crate::monitor::actions::Actions, _>(cx, |room, rcx| room.run(rcx, &run))
        {
            log::warn!(
                "action {} for a {} alert was not run: {}",
                run.action,
                run.transition,
                e.message
            );
        }
    }
}
