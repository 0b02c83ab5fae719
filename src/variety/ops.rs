//! The variety room's rows: the analysis and the required capabilities, for the ops table ([`crate::ops`]): the router, the WebSocket named commands, the
//! CLI and the OpenAPI document are derived from them.

use crate::api::{ApiError, BodySpec, ErrorCode, In, Op, Param, Request, Ty, VarietyRequest};
use serde_json::{json, Value};

/// `GET /api/v1/vsm/variety`.
pub const VARIETY_GET: Op = Op {
    ws: Some("get_variety"),
    ..Op::new(
        "GET",
        "/api/v1/vsm/variety",
        "getVariety",
        "variety",
        "The last variety analysis: ratio, capabilities with their providers, gaps (each saying what would close it), threats, opportunities, how allowed_capabilities scores, trend",
        |_| Ok(Request::Variety(VarietyRequest::Analysis)),
    )
};

/// `POST /api/v1/vsm/variety/recalculate`.
pub const VARIETY_RECALCULATE: Op = Op {
    ws: Some("trigger_variety_analysis"),
    body: Some(BodySpec {
        required: false,
        schema: variety_analysis_body,
    }),
    ..Op::new(
        "POST",
        "/api/v1/vsm/variety/recalculate",
        "recalculateVariety",
        "variety",
        "Analyse now and answer with the analysis (without `force`, an analysis younger than a second is answered as it is)",
        |a| {
            Ok(Request::Variety(VarietyRequest::Recalculate {
                force: a.field_flag("force")?.unwrap_or(false),
                external_scan: a.field_flag("include_external_scan")?.unwrap_or(false),
            }))
        },
    )
};

/// `GET /api/v1/metrics/variety`.
pub const VARIETY_METRICS: Op = Op {
    ws: Some("get_variety_metrics"),
    ..Op::new(
        "GET",
        "/api/v1/metrics/variety",
        "getVarietyMetrics",
        "metrics",
        "Variety ratio, required and provided counts, gaps, threats and the trend of the last analyses",
        |_| Ok(Request::Variety(VarietyRequest::Metrics)),
    )
};

/// `GET /api/v1/capabilities`.
pub const CAPABILITIES_LIST: Op = Op {
    ws: Some("list_capabilities"),
    ..Op::new(
        "GET",
        "/api/v1/capabilities",
        "listCapabilities",
        "variety",
        "Every capability (required or provided), its providers and why each provides it, and the recorded requests",
        |_| Ok(Request::Variety(VarietyRequest::Capabilities)),
    )
};

/// `GET /api/v1/capabilities/gaps`.
pub const CAPABILITIES_GAPS: Op = Op {
    ws: Some("list_capability_gaps"),
    ..Op::new(
        "GET",
        "/api/v1/capabilities/gaps",
        "listCapabilityGaps",
        "variety",
        "Required capabilities without an active provider, most severe first",
        |_| Ok(Request::Variety(VarietyRequest::Gaps)),
    )
};

/// `POST /api/v1/capabilities/acquire`.
pub const CAPABILITIES_ACQUIRE: Op = Op {
    ws: Some("acquire_capability"),
    body: Some(BodySpec {
        required: true,
        schema: acquire_body,
    }),
    errors: &[
        ErrorCode::Conflict,
        ErrorCode::Busy,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "POST",
        "/api/v1/capabilities/acquire",
        "acquireCapability",
        "variety",
        "Require a capability (kept across restarts): answers with the gap it opens, or that it is provided already. Installing a server for it is the acquisition pipeline's",
        |a| {
            let capability = a.field_text("capability_type")?.ok_or_else(|| {
                ApiError::field(
                    ErrorCode::InvalidParameter,
                    "capability_type",
                    "the capability is required",
                )
            })?;
            Ok(Request::Variety(VarietyRequest::Acquire {
                capability,
                method: a
                    .field_text("acquisition_method")?
                    .unwrap_or_else(|| "mcp_server".into()),
                priority: a
                    .field_text("priority")?
                    .unwrap_or_else(|| "medium".into()),
            }))
        },
    )
};

/// `DELETE /api/v1/capabilities/{id}`.
pub const CAPABILITIES_REMOVE: Op = Op {
    ws: Some("remove_capability"),
    params: &[Param {
        name: "id",
        loc: In::Path,
        ty: Ty::Str,
        description: "The capability a request recorded",
    }],
    errors: &[
        ErrorCode::CapabilityNotFound,
        ErrorCode::Conflict,
        ErrorCode::Busy,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "DELETE",
        "/api/v1/capabilities/{id}",
        "removeCapability",
        "variety",
        "Remove a recorded capability request (409 for a capability [variety] required names)",
        |a| Ok(Request::Variety(VarietyRequest::Remove { id: a.id })),
    )
};

/// Variety: analysis and required capabilities.
pub const OPS: &[Op] = &[
    VARIETY_GET,
    VARIETY_RECALCULATE,
    VARIETY_METRICS,
    CAPABILITIES_LIST,
    CAPABILITIES_GAPS,
    CAPABILITIES_ACQUIRE,
    CAPABILITIES_REMOVE,
];

fn variety_analysis_body() -> Value {
    json!({
        "type": "object",
        "properties": {
            "force": {"type": "boolean", "default": false, "description": "Analyse even when the last analysis is younger than a second"},
            "include_external_scan": {"type": "boolean", "default": false, "description": "Also scan external sources for candidates (discovery's; the answer says when it is not run)"},
        },
    })
}

fn acquire_body() -> Value {
    json!({
        "type": "object",
        "required": ["capability_type"],
        "properties": {
            "capability_type": {"type": "string", "minLength": 1, "maxLength": 64, "description": "The capability, e.g. `memory`"},
            "acquisition_method": {"type": "string", "enum": ["mcp_server"], "default": "mcp_server"},
            "priority": {"type": "string", "enum": ["low", "medium", "high", "critical"], "default": "medium", "description": "The severity of the gap it opens"},
        },
    })
}
