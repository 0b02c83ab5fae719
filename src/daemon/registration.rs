//! Registering and unregistering MCP servers over the API, acknowledged only once durable.
//!
//! Every change runs validate → persist → apply: the new `servers.json` document is computed
//! from the specs registered now plus the change ([`registry::with_added`],
//! [`registry::without`]), written, and only when the write succeeded is the server
//! registered in memory and started, or unregistered and stopped. A failed write answers the
//! error ([`persist_error`]: 507 on a full disk, 409 for a document this daemon must not
//! overwrite, 500 otherwise) and leaves memory and disk as they were, so what a restart loads
//! is exactly what was acknowledged.

use super::*;
use crate::mcp::registry;

impl Daemon {
    pub(super) fn mcp_register(&mut self, cx: &mut Cx<'_, Timer>, spec: ServerSpec) -> Answer {
        self.mcp.check_register(&spec)?;
        let document = registry::with_added(self.mcp.api_specs(), &spec);
        self.state
            .write(REGISTRY_FILE, &document)
            .map_err(|e| persist_error(&e))?;
        let autostart = spec.autostart;
        let result = self
            .mcp
            .register(cx, spec, Source::Api, autostart, &mut self.outputs);
        if result.is_err() {
            // check_register passed a moment ago, so this is a bug; keep the disk honest.
            self.rewrite_registry();
        }
        result
    }

    pub(super) fn mcp_unregister(&mut self, cx: &mut Cx<'_, Timer>, id: &str) -> Answer {
        self.mcp.check_unregister(id)?;
        let document = registry::without(self.mcp.api_specs(), id);
        self.state
            .write(REGISTRY_FILE, &document)
            .map_err(|e| persist_error(&e))?;
        let result = self.mcp.unregister(cx, id, &mut self.outputs);
        if result.is_err() {
            self.rewrite_registry();
        }
        result
    }

    /// Writes what memory holds; only after an apply step failed against its own check.
    fn rewrite_registry(&self) {
        if let Err(e) = self.state.write(REGISTRY_FILE, &self.mcp.api_specs()) {
            log::error!("cannot save registered MCP servers: {e}");
        }
    }
}
