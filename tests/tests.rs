//! The one integration test binary: everything here drives the real `vsm-daemon` binary or
//! the library's public API, never internals.

mod acquire;
mod alerts;
mod api;
mod ask;
mod autonomy;
mod checks;
mod container;
mod control;
mod discovery;
mod eras;
mod gateway;
mod mcp;
mod net;
mod packaging;
mod page;
mod prometheus;
mod properties;
mod reflect;
mod security;
mod state_config;
mod state_crash;
mod tls;
mod upstream;
mod util;
mod variety;
mod vsm;
