//! The one integration test binary: everything here drives the real `vsm-daemon` binary or
//! the library's public API, never internals.

mod alerts;
mod api;
mod control;
mod mcp;
mod net;
mod packaging;
mod security;
mod state_config;
mod state_crash;
mod util;
