//! The MCP room's rows: the servers, their lifecycle, tools and tool calls, for the ops table ([`crate::ops`]): the router, the WebSocket named commands, the
//! CLI and the OpenAPI document are derived from them.

use crate::api::{ApiError, Args, BodySpec, ErrorCode, In, McpRequest, Op, Param, Request, Ty};
use crate::mcp::jsonrpc::Arguments;
use crate::spec::ServerSpec;
use serde_json::{json, Value};

const ID: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::ServerId,
    description: "MCP server id",
};

const SERVER_NOT_FOUND: &[ErrorCode] = &[ErrorCode::ServerNotFound];

const SERVER_START: &[ErrorCode] = &[ErrorCode::ServerNotFound, ErrorCode::Conflict];

/// `GET /api/v1/mcp/servers`.
pub const MCP_LIST: Op = Op {
    ws: Some("mcp_list_servers"),
    params: &[Param::query(
        "status",
        Ty::Enum(&["active", "inactive", "all"]),
        "Filter by state; default all",
    )],
    ..Op::new(
        "GET",
        "/api/v1/mcp/servers",
        "listMcpServers",
        "mcp",
        "List MCP servers",
        |a| {
            let status = match a.text("status").as_deref() {
                None | Some("all") => "all",
                Some("active") => "active",
                Some("inactive") => "inactive",
                Some(other) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "status",
                        format!("'{other}' is not one of active, inactive, all"),
                    ))
                }
            };
            Ok(Request::Mcp(McpRequest::List { status }))
        },
    )
};

/// `POST /api/v1/mcp/servers`.
pub const MCP_REGISTER: Op = Op {
    ws: Some("mcp_register_server"),
    body: Some(BodySpec {
        required: true,
        schema: server_spec_ref,
    }),
    errors: &[
        ErrorCode::AlreadyExists,
        ErrorCode::CapabilityNotAllowed,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::Busy,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers",
        "registerMcpServer",
        "mcp",
        "Register an MCP server (kept across restarts; started when `autostart`)",
        |mut a| {
            let Some(spec) = a.take_body() else {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "body must be a server spec object",
                ));
            };
            let spec: ServerSpec = serde_json::from_value(spec).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("invalid server spec: {e}"),
                )
            })?;
            Ok(Request::Mcp(McpRequest::Register {
                spec: Box::new(spec),
            }))
        },
    )
};

/// `GET /api/v1/mcp/servers/{id}`.
pub const MCP_SHOW: Op = Op {
    ws: Some("mcp_get_server"),
    params: &[ID],
    errors: SERVER_NOT_FOUND,
    ..Op::new(
        "GET",
        "/api/v1/mcp/servers/{id}",
        "getMcpServer",
        "mcp",
        "One MCP server: spec, state history, tools, last errors, stderr tail",
        |a| Ok(Request::Mcp(McpRequest::Show { id: a.id })),
    )
};

/// `DELETE /api/v1/mcp/servers/{id}`.
pub const MCP_UNREGISTER: Op = Op {
    ws: Some("mcp_unregister_server"),
    params: &[ID],
    errors: &[
        ErrorCode::ServerNotFound,
        ErrorCode::Conflict,
        ErrorCode::StateReadOnly,
        ErrorCode::PersistFailed,
        ErrorCode::Busy,
        ErrorCode::InsufficientStorage,
    ],
    ..Op::new(
        "DELETE",
        "/api/v1/mcp/servers/{id}",
        "unregisterMcpServer",
        "mcp",
        "Unregister an MCP server, stopping it first (409 for servers declared in the config file)",
        |a| Ok(Request::Mcp(McpRequest::Unregister { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/start`.
pub const MCP_START: Op = Op {
    ws: Some("mcp_start_server"),
    params: &[ID],
    errors: SERVER_START,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/start",
        "startMcpServer",
        "mcp",
        "Start an MCP server (409 when `max_concurrent_servers` is reached)",
        |a| Ok(Request::Mcp(McpRequest::Start { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/stop`.
pub const MCP_STOP: Op = Op {
    ws: Some("mcp_stop_server"),
    params: &[ID],
    errors: SERVER_NOT_FOUND,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/stop",
        "stopMcpServer",
        "mcp",
        "Stop an MCP server",
        |a| Ok(Request::Mcp(McpRequest::Stop { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/restart`.
pub const MCP_RESTART: Op = Op {
    ws: Some("mcp_restart_server"),
    params: &[ID],
    errors: SERVER_START,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/restart",
        "restartMcpServer",
        "mcp",
        "Restart an MCP server",
        |a| Ok(Request::Mcp(McpRequest::Restart { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/reset`.
pub const MCP_RESET: Op = Op {
    ws: Some("mcp_reset_server"),
    params: &[ID],
    errors: SERVER_START,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/reset",
        "resetMcpServer",
        "mcp",
        "Close an MCP server's open circuit breaker (and start it)",
        |a| Ok(Request::Mcp(McpRequest::Reset { id: a.id })),
    )
};

/// `GET /api/v1/mcp/servers/{id}/tools`.
pub const MCP_TOOLS: Op = Op {
    ws: Some("mcp_list_tools"),
    params: &[ID],
    errors: SERVER_NOT_FOUND,
    ..Op::new(
        "GET",
        "/api/v1/mcp/servers/{id}/tools",
        "listMcpTools",
        "mcp",
        "An MCP server's tools with their input schemas",
        |a| Ok(Request::Mcp(McpRequest::Tools { id: a.id })),
    )
};

/// `POST /api/v1/mcp/servers/{id}/tools/call`.
pub const MCP_CALL: Op = Op {
    ws: Some("mcp_call_tool"),
    params: &[ID],
    body: Some(BodySpec {
        required: true,
        schema: tool_call_body,
    }),
    errors: &[
        ErrorCode::ServerNotFound,
        ErrorCode::ToolNotFound,
        ErrorCode::CapabilityBlocked,
        ErrorCode::Conflict,
        ErrorCode::ToolError,
        ErrorCode::McpError,
        ErrorCode::ServerExited,
        ErrorCode::Busy,
        ErrorCode::Timeout,
    ],
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/tools/call",
        "callMcpTool",
        "mcp",
        "Call a tool (the tool's result in `data`; `isError` answers 422 `tool_error`)",
        tool_call_request,
    )
};

fn tool_call_request(mut a: Args) -> Result<Request, ApiError> {
    let name = a.take_text("name")?.ok_or_else(|| {
        ApiError::field(
            ErrorCode::InvalidParameter,
            "name",
            "the tool name is required",
        )
    })?;
    let arguments = match a.field("arguments") {
        None => Some(Arguments::empty()),
        Some(v) => Arguments::from_value(v),
    };
    let Some(arguments) = arguments else {
        return Err(ApiError::field(
            ErrorCode::InvalidParameter,
            "arguments",
            "must be an object",
        ));
    };
    let timeout_ms = match a.field("timeout_ms") {
        None => None,
        // JSON Schema's integer includes 3056.0.
        Some(v) => match v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }) {
            Some(n) if (1..=3_600_000).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::field(
                    ErrorCode::InvalidParameter,
                    "timeout_ms",
                    "must be an integer between 1 and 3600000",
                ))
            }
        },
    };
    Ok(Request::Mcp(McpRequest::Call {
        id: a.id,
        name,
        arguments,
        timeout_ms,
        progress_token: None,
        input: None,
    }))
}

/// `GET /api/v1/mcp/servers/{id}/resources`.
pub const MCP_RESOURCES: Op = Op {
    ws: Some("mcp_list_resources"),
    params: &[ID],
    errors: SERVER_NOT_FOUND,
    ..Op::new(
        "GET",
        "/api/v1/mcp/servers/{id}/resources",
        "listMcpResources",
        "mcp",
        "An MCP server's resources and resource templates as it last listed them (empty when its capabilities offer none)",
        |a| Ok(Request::Mcp(McpRequest::Resources { id: a.id })),
    )
};

/// `GET /api/v1/mcp/servers/{id}/prompts`.
pub const MCP_PROMPTS: Op = Op {
    ws: Some("mcp_list_prompts"),
    params: &[ID],
    errors: SERVER_NOT_FOUND,
    ..Op::new(
        "GET",
        "/api/v1/mcp/servers/{id}/prompts",
        "listMcpPrompts",
        "mcp",
        "An MCP server's prompts as it last listed them (empty when its capabilities offer none)",
        |a| Ok(Request::Mcp(McpRequest::Prompts { id: a.id })),
    )
};

/// Errors of a request forwarded to a server (`resources/read`, `prompts/get`).
const FORWARD_ERRORS: &[ErrorCode] = &[
    ErrorCode::ServerNotFound,
    ErrorCode::Conflict,
    ErrorCode::McpError,
    ErrorCode::ServerExited,
    ErrorCode::Busy,
    ErrorCode::Timeout,
];

/// `POST /api/v1/mcp/servers/{id}/resources/read`.
pub const MCP_READ_RESOURCE: Op = Op {
    ws: Some("mcp_read_resource"),
    params: &[ID],
    body: Some(BodySpec {
        required: true,
        schema: read_resource_body,
    }),
    errors: FORWARD_ERRORS,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/resources/read",
        "readMcpResource",
        "mcp",
        "Read a resource of an MCP server (its `resources/read` result in `data.result`), under the server's call deadline",
        |a| {
            let uri = a.field_text("uri")?.filter(|u| !u.is_empty()).ok_or_else(|| {
                ApiError::field(ErrorCode::InvalidParameter, "uri", "the resource URI is required")
            })?;
            Ok(Request::Mcp(McpRequest::ReadResource {
                id: a.id,
                uri,
                progress_token: None,
                timeout_ms: None,
                input: None,
            }))
        },
    )
};

/// `POST /api/v1/mcp/servers/{id}/prompts/get`.
pub const MCP_GET_PROMPT: Op = Op {
    ws: Some("mcp_get_prompt"),
    params: &[ID],
    body: Some(BodySpec {
        required: true,
        schema: get_prompt_body,
    }),
    errors: FORWARD_ERRORS,
    ..Op::new(
        "POST",
        "/api/v1/mcp/servers/{id}/prompts/get",
        "getMcpPrompt",
        "mcp",
        "Get a prompt of an MCP server with its arguments (its `prompts/get` result in `data.result`), under the server's call deadline",
        |a| {
            let name = a.field_text("name")?.filter(|n| !n.is_empty()).ok_or_else(|| {
                ApiError::field(ErrorCode::InvalidParameter, "name", "the prompt name is required")
            })?;
            let arguments = match a.field("arguments") {
                None => Value::Object(Default::default()),
                Some(Value::Object(m)) if m.values().all(Value::is_string) => {
                    Value::Object(m.clone())
                }
                Some(_) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "arguments",
                        "must be an object of strings",
                    ))
                }
            };
            Ok(Request::Mcp(McpRequest::GetPrompt {
                id: a.id,
                name,
                arguments,
                progress_token: None,
                timeout_ms: None,
                input: None,
            }))
        },
    )
};

fn read_resource_body() -> Value {
    json!({
        "type": "object",
        "required": ["uri"],
        "properties": {
            "uri": {"type": "string", "minLength": 1, "description": "The resource's URI, as the server lists it or as one of its templates expands"},
        },
    })
}

fn get_prompt_body() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "description": "The prompt's name on the server"},
            "arguments": {"type": "object", "additionalProperties": {"type": "string"}, "default": {}, "description": "The prompt's arguments"},
        },
    })
}

/// MCP servers.
pub const OPS: &[Op] = &[
    MCP_LIST,
    MCP_REGISTER,
    MCP_SHOW,
    MCP_UNREGISTER,
    MCP_START,
    MCP_STOP,
    MCP_RESTART,
    MCP_RESET,
    MCP_TOOLS,
    MCP_CALL,
    MCP_RESOURCES,
    MCP_PROMPTS,
    MCP_READ_RESOURCE,
    MCP_GET_PROMPT,
];

fn server_spec_ref() -> Value {
    json!({"$ref": "#/components/schemas/ServerSpec"})
}

fn tool_call_body() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "description": "Tool name"},
            "arguments": {"type": "object", "default": {}, "description": "Tool arguments"},
            "timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": 3_600_000,
                "description": "Deadline; default the server's `call_timeout_ms`",
            },
        },
    })
}
