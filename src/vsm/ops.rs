//! The VSM room's rows: the five systems and their actions, for the ops table ([`crate::ops`]): the router, the WebSocket named commands, the
//! CLI and the OpenAPI document are derived from them.

use crate::api::{ApiError, BodySpec, ErrorCode, In, Op, Param, Request, Ty, VsmRequest};
use serde_json::{json, Value};

const SYSTEM_ID: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::Str,
    description: "VSM system: `system1`…`system5` or `operations`, `coordination`, `control`, `intelligence`, `policy`",
};

/// `GET /api/v1/vsm/systems`.
pub const VSM_SYSTEMS: Op = Op {
    ws: Some("vsm_systems"),
    ..Op::new(
        "GET",
        "/api/v1/vsm/systems",
        "listVsmSystems",
        "vsm",
        "The five VSM systems: status (and why), counter by kind, recent activity, action",
        |_| Ok(Request::Vsm(VsmRequest::List)),
    )
};

/// `GET /api/v1/vsm/systems/{id}`.
pub const VSM_SYSTEM: Op = Op {
    ws: Some("vsm_system"),
    params: &[SYSTEM_ID],
    errors: &[ErrorCode::SystemNotFound],
    ..Op::new(
        "GET",
        "/api/v1/vsm/systems/{id}",
        "getVsmSystem",
        "vsm",
        "One VSM system",
        |a| Ok(Request::Vsm(VsmRequest::Show { id: a.id })),
    )
};

/// `POST /api/v1/vsm/systems/{id}/action`.
pub const VSM_ACTION: Op = Op {
    ws: Some("vsm_action"),
    params: &[SYSTEM_ID],
    body: Some(BodySpec {
        required: true,
        schema: vsm_action_body,
    }),
    errors: &[
        ErrorCode::SystemNotFound,
        ErrorCode::Busy,
        ErrorCode::ServerNotFound,
        ErrorCode::ToolError,
        ErrorCode::Timeout,
    ],
    ..Op::new(
        "POST",
        "/api/v1/vsm/systems/{id}/action",
        "runVsmAction",
        "vsm",
        "Run a system's action: S1 `call` ({server, tool, arguments, timeout_ms}), S2 `reset_backoff`, S3 `audit`; S4 `scan` and S5 `decide` answer 501 until their rooms exist",
        |a| {
            let Some(action) = a.field_text("action")? else {
                return Err(ApiError::field(
                    ErrorCode::InvalidParameter,
                    "action",
                    "required: the action's name",
                ));
            };
            let parameters = a.field("parameters").cloned().unwrap_or(Value::Null);
            if !(parameters.is_object() || parameters.is_null()) {
                return Err(ApiError::field(
                    ErrorCode::InvalidParameter,
                    "parameters",
                    "must be an object",
                ));
            }
            Ok(Request::Vsm(VsmRequest::Action {
                id: a.id,
                action,
                parameters,
            }))
        },
    )
};

/// The VSM systems.
pub const OPS: &[Op] = &[VSM_SYSTEMS, VSM_SYSTEM, VSM_ACTION];

fn vsm_action_body() -> Value {
    json!({
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"type": "string", "enum": ["call", "reset_backoff", "audit", "scan", "decide"]},
            "parameters": {"type": ["object", "null"]},
        },
    })
}
