//! Where the alerts room's action requests go to the room that runs actions.

use super::*;
use crate::monitor::observation::ActionRun;

impl Daemon {
    /// An alert asks for a `webhook:NAME` or `exec:NAME` action. The actions room is not wired
    /// yet: until it is, the request is logged at warning level so an operator sees it was not run.
    #[allow(dead_code)]
    pub(super) fn act(&mut self, _cx: &mut Cx<'_, Timer>, run: ActionRun) {
        log::warn!(
            "action {} for a {} alert was not run: actions are not wired yet",
            run.action,
            run.transition
        );
    }
}
