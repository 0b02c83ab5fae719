//! The components' rows: health, control, diagnostics and the configuration, for the ops table ([`crate::ops`]): the router, the WebSocket named commands, the
//! CLI and the OpenAPI document are derived from them.

use crate::api::{
    Access, ApiError, BodySpec, ConfigRequest, ControlRequest, DiagnosticsRequest, ErrorCode,
    HealthRequest, Op, Param, Request, Ty,
};
use serde_json::{json, Value};

/// `GET /api/v1/health`.
pub const HEALTH: Op = Op {
    ws: Some("health"),
    params: &[Param::query(
        "component",
        Ty::Str,
        "Only check this component",
    )],
    errors: &[ErrorCode::ComponentNotFound, ErrorCode::Unhealthy],
    access: Access::Public,
    ..Op::new(
        "GET",
        "/api/v1/health",
        "getHealth",
        "daemon",
        "Run the health checks (503 `unhealthy` with the results, `failing` listing the failing components, in `data`)",
        |a| {
            Ok(Request::Health(HealthRequest {
                component: a.text("component"),
            }))
        },
    )
};

/// `POST /api/v1/control/start`.
pub const CONTROL_START: Op = Op {
    ws: Some("control_start"),
    body: Some(BodySpec {
        required: false,
        schema: service_body,
    }),
    errors: &[ErrorCode::ComponentNotFound],
    ..Op::new(
        "POST",
        "/api/v1/control/start",
        "controlStart",
        "control",
        "Start one stopped component, or every stopped one",
        |a| {
            Ok(Request::Control(ControlRequest::Start {
                service: a.field_text("service")?,
            }))
        },
    )
};

/// `POST /api/v1/control/stop`.
pub const CONTROL_STOP: Op = Op {
    ws: Some("control_stop"),
    body: Some(BodySpec {
        required: false,
        schema: stop_body,
    }),
    errors: &[ErrorCode::ComponentNotFound, ErrorCode::Conflict],
    ..Op::new(
        "POST",
        "/api/v1/control/stop",
        "controlStop",
        "control",
        "Stop components, or (with `shutdown`) the whole daemon",
        |a| {
            Ok(Request::Control(ControlRequest::Stop {
                service: a.field_text("service")?,
                shutdown: a.field_flag("shutdown")?.unwrap_or(false),
                graceful: a.field_flag("graceful")?.unwrap_or(true),
            }))
        },
    )
};

/// `POST /api/v1/control/restart`.
pub const CONTROL_RESTART: Op = Op {
    ws: Some("control_restart"),
    body: Some(BodySpec {
        required: false,
        schema: service_body,
    }),
    errors: &[ErrorCode::ConfigInvalid, ErrorCode::ComponentNotFound],
    ..Op::new(
        "POST",
        "/api/v1/control/restart",
        "controlRestart",
        "control",
        "Restart one component, or reload the config and restart every component",
        |a| {
            Ok(Request::Control(ControlRequest::Restart {
                service: a.field_text("service")?,
            }))
        },
    )
};

/// `POST /api/v1/diagnostics/run`.
pub const DIAGNOSTICS: Op = Op {
    ws: Some("run_diagnostics"),
    params: &[Param::query(
        "full",
        Ty::Bool,
        "Also run the slower checks (fsync timing in the state dir)",
    )],
    body: Some(BodySpec {
        required: false,
        schema: diagnostics_body,
    }),
    errors: &[ErrorCode::Unhealthy],
    ..Op::new(
        "POST",
        "/api/v1/diagnostics/run",
        "runDiagnostics",
        "daemon",
        "Self-diagnostics (503 `unhealthy` with the checks in `data` when one fails)",
        |a| {
            Ok(Request::Diagnostics(DiagnosticsRequest {
                full: a.flag("full")? || a.field_flag("full")?.unwrap_or(false),
            }))
        },
    )
};

/// `GET /api/v1/config`.
pub const CONFIG_SHOW: Op = Op {
    ws: Some("get_config"),
    params: &[Param::query(
        "section",
        Ty::Str,
        "Only this section, such as `monitoring`",
    )],
    errors: &[ErrorCode::ConfigKeyNotFound],
    ..Op::new(
        "GET",
        "/api/v1/config",
        "getConfig",
        "config",
        "Effective configuration (secrets redacted) and runtime overrides",
        |a| {
            Ok(Request::Config(ConfigRequest::Show {
                section: a.text("section"),
            }))
        },
    )
};

/// `PUT /api/v1/config`.
pub const CONFIG_UPDATE: Op = Op {
    ws: Some("update_config"),
    body: Some(BodySpec {
        required: true,
        schema: config_patch_body,
    }),
    errors: &[
        ErrorCode::ConfigInvalid,
        ErrorCode::ConfigKeyNotFound,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::Busy,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "PUT",
        "/api/v1/config",
        "updateConfig",
        "config",
        "Apply a JSON merge patch to the runtime overrides (validated, applied live, persisted)",
        |mut a| match a.take_body() {
            Some(patch @ Value::Object(_)) => Ok(Request::Config(ConfigRequest::Update { patch })),
            _ => Err(ApiError::new(
                ErrorCode::BadRequest,
                "body must be a JSON object in the shape of the configuration (a merge patch)",
            )),
        },
    )
};

/// `POST /api/v1/config/reload`.
pub const CONFIG_RELOAD: Op = Op {
    ws: Some("reload_config"),
    errors: &[ErrorCode::ConfigInvalid],
    ..Op::new(
        "POST",
        "/api/v1/config/reload",
        "reloadConfig",
        "config",
        "Re-read the configuration file (an invalid file is refused and the old config stays)",
        |_| Ok(Request::Config(ConfigRequest::Reload)),
    )
};

/// `GET /api/v1/config/schema`.
pub const CONFIG_SCHEMA: Op = Op {
    ws: Some("get_config_schema"),
    ..Op::new(
        "GET",
        "/api/v1/config/schema",
        "getConfigSchema",
        "config",
        "JSON Schema (draft 2020-12) of the configuration",
        |_| Ok(Request::Config(ConfigRequest::Schema)),
    )
};

fn service_body() -> Value {
    json!({
        "type": "object",
        "properties": {
            "service": {
                "type": ["string", "null"],
                "description": "Component (`control`, `worker`, `monitor`); all when absent",
            },
        },
    })
}

fn stop_body() -> Value {
    let mut body = service_body();
    body["properties"]["shutdown"] = json!({
        "type": ["boolean", "null"],
        "default": false,
        "description": "End the daemon process",
    });
    body["properties"]["graceful"] = json!({
        "type": ["boolean", "null"],
        "default": true,
        "description": "Stop children gracefully instead of killing them",
    });
    body
}

fn diagnostics_body() -> Value {
    json!({
        "type": "object",
        "properties": {"full": {"type": ["boolean", "null"], "default": false}},
    })
}

fn config_patch_body() -> Value {
    json!({
        "type": "object",
        "description": "RFC 7386 JSON merge patch in the shape of the configuration (see \
            `GET /api/v1/config/schema`); `null` removes an override",
    })
}

/// Every row of the room, in routing order.
pub const OPS: &[Op] = &[
    HEALTH,
    CONTROL_START,
    CONTROL_STOP,
    CONTROL_RESTART,
    DIAGNOSTICS,
    CONFIG_SHOW,
    CONFIG_UPDATE,
    CONFIG_RELOAD,
    CONFIG_SCHEMA,
];
