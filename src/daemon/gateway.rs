//! Glue of the gateway room (`/mcp`): requests for `/mcp` go to it after the access checks,
//! and its transport steps (answers, the SSE stream, pushes) go to the network floor. The
//! MCP room's servers and tools reach it through the room list (`[follows servers]`).

use super::*;
use crate::gateway::Output as GatewayOutput;

impl Daemon {
    /// A request for `/mcp`, already through the access checks.
    pub(super) fn gateway_http(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        request: &http::Request,
        reply: ReplyTo,
    ) {
        let reply = match reply {
            ReplyTo::Http {
                conn,
                seq,
                started,
                request_id,
                method,
                ..
            } => ReplyTo::Http {
                conn,
                seq,
                started,
                request_id,
                route: "/mcp",
                method,
            },
            other => other,
        };
        let server = &self.server;
        self.rooms.gateway.prune_streams(|c| server.is_open(c));
        let mut out = std::mem::take(&mut self.gateway_out);
        rooms::enter(
            &mut self.rooms.gateway,
            cx,
            &mut self.worker,
            &mut self.jobs,
            &mut out,
            |room, rcx| room.on_http(rcx, request, reply, Instant::now()),
        );
        self.gateway_outputs(cx, out);
    }

    /// Connections closed or hung up since the last look: `/mcp` cancels the calls whose
    /// client went away (only looked at while calls are in flight).
    pub(super) fn gateway_hangups(&mut self, cx: &mut Cx<'_, Timer>) {
        if std::mem::take(&mut self.server.hangups) == 0 || !self.rooms.gateway.has_calls() {
            return;
        }
        let server = &self.server;
        let mut out = std::mem::take(&mut self.gateway_out);
        rooms::enter(
            &mut self.rooms.gateway,
            cx,
            &mut self.worker,
            &mut self.jobs,
            &mut out,
            |room, rcx| room.on_hangups(rcx, |c| server.is_gone(c)),
        );
        self.gateway_outputs(cx, out);
    }

    /// Carries out the gateway's outputs, and keeps the emptied vector for the gateway's next
    /// entry (a small one, and only when a nested entry did not keep its own).
    pub(super) fn gateway_outputs(&mut self, cx: &mut Cx<'_, Timer>, mut out: Vec<GatewayOutput>) {
        for output in out.drain(..) {
            match output {
                GatewayOutput::Effect(e) => self.effects.push(e),
                GatewayOutput::Http { reply, response } => {
                    let ReplyTo::Http {
                        conn,
                        seq,
                        started,
                        route,
                        method,
                        ..
                    } = reply
                    else {
                        continue;
                    };
                    self.telemetry.http_request(
                        route,
                        method,
                        response.status,
                        started.elapsed().as_secs_f64(),
                    );
                    self.server.respond(
                        &mut cx.narrow(Timer::Net).cx(),
                        conn,
                        seq,
                        &response,
                        false,
                        &mut self.incoming,
                    );
                }
                GatewayOutput::Stream { reply } => {
                    if let ReplyTo::Http {
                        conn,
                        seq,
                        started,
                        route,
                        method,
                        ..
                    } = reply
                    {
                        self.telemetry.http_request(
                            route,
                            method,
                            200,
                            started.elapsed().as_secs_f64(),
                        );
                        self.server.start_stream(
                            &mut cx.narrow(Timer::Net).cx(),
                            conn,
                            seq,
                            &mut self.incoming,
                        );
                    }
                }
                GatewayOutput::Push { conn, bytes } => {
                    // A client that stopped reading loses notifications, not our memory.
                    let _ = self.server.push_stream(
                        &mut cx.narrow(Timer::Net).cx(),
                        conn,
                        &bytes,
                        &mut self.incoming,
                    );
                }
                GatewayOutput::Close { conn } => {
                    self.server.close(&mut cx.narrow(Timer::Net).cx(), conn);
                }
                GatewayOutput::End { conn } => {
                    self.server.end_stream(
                        &mut cx.narrow(Timer::Net).cx(),
                        conn,
                        &mut self.incoming,
                    );
                }
            }
        }
        if out.capacity() <= rooms::KEPT_OUT && self.gateway_out.capacity() == 0 {
            self.gateway_out = out;
        }
    }
}
