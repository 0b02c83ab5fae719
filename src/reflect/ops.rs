//! The reflection room's rows (`/api/v1/consciousness/...`), for the ops table ([`crate::ops`]): the router, the WebSocket named commands, the
//! CLI and the OpenAPI document are derived from them.

use crate::api::{ApiError, BodySpec, ErrorCode, Op, Param, ReflectRequest, Request, Ty};
use serde_json::{json, Value};

/// `GET /api/v1/consciousness`.
pub const CONSCIOUSNESS_STATE: Op = Op {
    ws: Some("consciousness_state"),
    ..Op::new(
        "GET",
        "/api/v1/consciousness",
        "getConsciousness",
        "consciousness",
        "The self-model: what the daemon is doing, health, variety, firing alerts, resource use and its trend, the last reflection and what changed since",
        |_| Ok(Request::Reflect(ReflectRequest::State)),
    )
};

/// `POST /api/v1/consciousness/reflect`.
pub const CONSCIOUSNESS_REFLECT: Op = Op {
    ws: Some("consciousness_reflect"),
    ..Op::new(
        "POST",
        "/api/v1/consciousness/reflect",
        "reflect",
        "consciousness",
        "Run the analysers over the record now; answers with the new insights",
        |_| Ok(Request::Reflect(ReflectRequest::Reflect)),
    )
};

/// `GET /api/v1/consciousness/insights`.
pub const CONSCIOUSNESS_INSIGHTS: Op = Op {
    ws: Some("consciousness_insights"),
    params: &[
        Param::query("since", Ty::UInt, "Only insights with a larger id"),
        Param::query(
            "type",
            Ty::Str,
            "Only this insight type (`pattern_recognition`, `trend`, `anomaly`) or analyser",
        ),
        Param::query(
            "min_significance",
            Ty::Str,
            "Only insights at least this significant (0 to 1)",
        ),
    ],
    ..Op::new(
        "GET",
        "/api/v1/consciousness/insights",
        "listInsights",
        "consciousness",
        "Insights kept (bounded by consciousness.memory_limit), oldest first, with evidence and recommendations",
        |a| {
            let min_significance = match a.text("min_significance") {
                None => None,
                Some(t) => match t.parse::<f64>() {
                    Ok(v) if (0.0..=1.0).contains(&v) => Some(v),
                    _ => {
                        return Err(ApiError::field(
                            ErrorCode::InvalidParameter,
                            "min_significance",
                            format!("'{t}' is not a number from 0 to 1"),
                        ))
                    }
                },
            };
            Ok(Request::Reflect(ReflectRequest::Insights {
                since: a.number("since")?,
                kind: a.text("type"),
                min_significance,
            }))
        },
    )
};

/// `POST /api/v1/consciousness/query`.
pub const CONSCIOUSNESS_QUERY: Op = Op {
    ws: Some("consciousness_query"),
    body: Some(BodySpec {
        required: true,
        schema: query_body,
    }),
    errors: &[ErrorCode::SubjectNotFound],
    ..Op::new(
        "POST",
        "/api/v1/consciousness/query",
        "queryConsciousness",
        "consciousness",
        "A structured question answered from the record: {\"about\": \"server\"|\"capability\"|\"alert\"|\"decision\", \"id\"}",
        |a| {
            let need = |k: &str| -> Result<String, ApiError> {
                a.field_text(k)?.ok_or_else(|| {
                    ApiError::field(ErrorCode::InvalidParameter, k, "required: a string")
                })
            };
            Ok(Request::Reflect(ReflectRequest::Query {
                about: need("about")?,
                id: need("id")?,
            }))
        },
    )
};

/// `POST /api/v1/consciousness/decision`.
pub const CONSCIOUSNESS_DECISION: Op = Op {
    ws: Some("consciousness_decision"),
    body: Some(BodySpec {
        required: true,
        schema: decision_body,
    }),
    errors: &[ErrorCode::SubjectNotFound],
    ..Op::new(
        "POST",
        "/api/v1/consciousness/decision",
        "decisionSupport",
        "consciousness",
        "Rank the options for a situation (`degraded_server`: restart, stop or wait) with each criterion's score and the weights",
        |a| {
            let need = |k: &str| -> Result<String, ApiError> {
                a.field_text(k)?.ok_or_else(|| {
                    ApiError::field(ErrorCode::InvalidParameter, k, "required: a string")
                })
            };
            Ok(Request::Reflect(ReflectRequest::Decision {
                situation: need("situation")?,
                subject: need("subject")?,
            }))
        },
    )
};

/// Reflection.
pub const OPS: &[Op] = &[
    CONSCIOUSNESS_STATE,
    CONSCIOUSNESS_REFLECT,
    CONSCIOUSNESS_INSIGHTS,
    CONSCIOUSNESS_QUERY,
    CONSCIOUSNESS_DECISION,
];

fn query_body() -> Value {
    json!({
        "type": "object",
        "required": ["about", "id"],
        "properties": {
            "about": {"type": "string", "enum": ["server", "capability", "alert", "decision"]},
            "id": {"type": "string"},
        },
    })
}

fn decision_body() -> Value {
    json!({
        "type": "object",
        "required": ["situation", "subject"],
        "properties": {
            "situation": {"type": "string", "enum": ["degraded_server"]},
            "subject": {"type": "string", "description": "MCP server id"},
        },
    })
}
