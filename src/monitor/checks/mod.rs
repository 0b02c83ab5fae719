//! Operator-declared checks (`[[checks]]`): their specs and the room that runs them.

pub mod probe;
pub mod room;
pub mod spec;
