//! Where the rooms that measure hand their readings to the room that decides.

use super::*;
use crate::monitor::observation::Observation;

impl Daemon {
    /// A reading of a check. The alerts room is not wired yet: until it is, readings are only
    /// logged at debug level (the check's own state is shown by its room).
    pub(super) fn observe(&mut self, _cx: &mut Cx<'_, Timer>, obs: Observation) {
        log::debug!(
            "observed {} {}={} bad={}",
            obs.rule,
            obs.metric,
            obs.value,
            obs.bad
        );
    }
}
