//! The acquisition room's rows: integrate a capability, show an acquisition, decisions, for the ops table ([`crate::ops`]): the router, the WebSocket named commands, the
//! CLI and the OpenAPI document are derived from them.

use crate::api::{AcquireRequest, ApiError, BodySpec, ErrorCode, In, Op, Param, Request, Ty};
use serde_json::{json, Value};

/// `POST /api/v1/capabilities/integrate`.
pub const CAPABILITIES_INTEGRATE: Op = Op {
    ws: Some("integrate_capability"),
    body: Some(BodySpec {
        required: true,
        schema: integrate_body,
    }),
    errors: &[ErrorCode::Busy, ErrorCode::Conflict],
    ..Op::new(
        "POST",
        "/api/v1/capabilities/integrate",
        "integrateCapability",
        "acquisition",
        "Install, sandbox-test, assess, register and start a package (202 with the acquisition id; follow it at its status_url or through capability_acquisition_* events)",
        |mut a| {
            let Some(body) = a.take_body() else {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "body must be {\"package\": \"npm:NAME@VERSION\"} or a registry server entry",
                ));
            };
            Ok(Request::Acquire(AcquireRequest::Integrate { body }))
        },
    )
};

const ACQUISITION_ID: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::Str,
    description: "Acquisition id (`acq-N`)",
};

/// `GET /api/v1/capabilities/acquisitions/{id}`.
pub const ACQUISITION_SHOW: Op = Op {
    ws: Some("get_acquisition"),
    params: &[ACQUISITION_ID],
    errors: &[ErrorCode::NotFound],
    ..Op::new(
        "GET",
        "/api/v1/capabilities/acquisitions/{id}",
        "getAcquisition",
        "acquisition",
        "One acquisition: its state, the step it is at, each step's time and outcome, and the assessment",
        |a| Ok(Request::Acquire(AcquireRequest::Show { id: a.id })),
    )
};

/// `GET /api/v1/capabilities/acquisitions`.
pub const ACQUISITIONS: Op = Op {
    ws: Some("list_acquisitions"),
    ..Op::new(
        "GET",
        "/api/v1/capabilities/acquisitions",
        "listAcquisitions",
        "acquisition",
        "Every acquisition kept (queued, running and the last finished ones), newest first, each with who asked for it",
        |_| Ok(Request::Acquire(AcquireRequest::List)),
    )
};

/// `GET /api/v1/decisions`.
pub const DECISIONS: Op = Op {
    ws: Some("get_decisions"),
    params: &[
        Param::query("since", Ty::UInt, "Only decisions with an id greater than this"),
        Param::query(
            "verdict",
            Ty::Enum(&["approved", "refused"]),
            "Only approved or only refused decisions",
        ),
    ],
    ..Op::new(
        "GET",
        "/api/v1/decisions",
        "listDecisions",
        "acquisition",
        "Decision records of the acquisition pipeline (every criterion, reason, package, time and who asked), oldest first; bounded, persisted",
        |a| {
            let verdict = match a.text("verdict").as_deref() {
                None => None,
                Some("approved") => Some("approved"),
                Some("refused") => Some("refused"),
                Some(other) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "verdict",
                        format!("'{other}' is not one of approved, refused"),
                    ))
                }
            };
            Ok(Request::Acquire(AcquireRequest::Decisions {
                since: a.number("since")?,
                verdict,
            }))
        },
    )
};

/// The acquisition pipeline's rows.
pub const OPS: &[Op] = &[
    CAPABILITIES_INTEGRATE,
    ACQUISITIONS,
    ACQUISITION_SHOW,
    DECISIONS,
];

fn integrate_body() -> Value {
    json!({
        "type": "object",
        "description": "A package named exactly, or an MCP registry server entry (its first npm or PyPI package with stdio transport)",
        "properties": {
            "package": {"type": "string", "description": "npm:NAME@VERSION or pypi:NAME==VERSION"},
            "capabilities": {"type": "array", "items": {"type": "string"}, "maxItems": 64},
            "server": {"type": "object", "description": "registry server.json (name, version, packages)"},
            "_meta": {"type": "object"}
        }
    })
}
