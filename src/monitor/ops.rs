//! The monitoring rooms' rows: alerts, the declared checks and the actions' test, for the ops table ([`crate::ops`]): the router, the WebSocket named commands, the
//! CLI and the OpenAPI document are derived from them.

use crate::api::{AlertsRequest, ApiError, ChecksRequest, ErrorCode, In, Op, Param, Request, Ty};

/// `GET /api/v1/alerts`.
pub const ALERTS_LIST: Op = Op {
    ws: Some("get_alerts"),
    params: &[Param::query(
        "state",
        Ty::Enum(&["firing", "resolved", "all"]),
        "Only firing or only resolved alerts; default all",
    )],
    ..Op::new(
        "GET",
        "/api/v1/alerts",
        "listAlerts",
        "alerts",
        "Alerts raised by the monitors (firing and recently resolved), newest first",
        |a| {
            let state = match a.text("state").as_deref() {
                None | Some("all") => None,
                Some("firing") => Some("firing"),
                Some("resolved") => Some("resolved"),
                Some(other) => {
                    return Err(ApiError::field(
                        ErrorCode::InvalidParameter,
                        "state",
                        format!("'{other}' is not one of firing, resolved, all"),
                    ))
                }
            };
            Ok(Request::Alerts(AlertsRequest::List { state }))
        },
    )
};

/// `POST /api/v1/alerts/{id}/ack`.
pub const ALERTS_ACK: Op = Op {
    ws: Some("ack_alert"),
    params: &[Param {
        name: "id",
        loc: In::Path,
        ty: Ty::Str,
        description: "Alert id (`a-N`)",
    }],
    errors: &[ErrorCode::AlertNotFound],
    ..Op::new(
        "POST",
        "/api/v1/alerts/{id}/ack",
        "ackAlert",
        "alerts",
        "Acknowledge an alert (it stays in the list, marked `acked`)",
        |a| Ok(Request::Alerts(AlertsRequest::Ack { id: a.id })),
    )
};

const CHECK_NAME: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::Str,
    description: "check name (`[[checks]]` name)",
};

/// `GET /api/v1/checks`.
pub const CHECKS_LIST: Op = Op {
    ws: Some("checks_list"),
    ..Op::new(
        "GET",
        "/api/v1/checks",
        "listChecks",
        "checks",
        "Declared checks with their last result (up/down, message, duration, last change, consecutive failures)",
        |_| Ok(Request::Checks(ChecksRequest::List)),
    )
};

/// `POST /api/v1/checks/{id}/run`.
pub const CHECKS_RUN: Op = Op {
    ws: Some("checks_run"),
    params: &[CHECK_NAME],
    errors: &[ErrorCode::NotFound, ErrorCode::Busy],
    ..Op::new(
        "POST",
        "/api/v1/checks/{id}/run",
        "runCheck",
        "checks",
        "Run a declared check now (or join its run in flight) and answer with the result when it ends",
        |a| Ok(Request::Checks(ChecksRequest::Run { name: a.id })),
    )
};

const ACTION_NAME: Param = Param {
    name: "id",
    loc: In::Path,
    ty: Ty::Str,
    description: "action name (`[actions.NAME]`)",
};

/// `POST /api/v1/actions/{id}/test`.
pub const ACTIONS_TEST: Op = Op {
    ws: Some("actions_test"),
    params: &[ACTION_NAME],
    errors: &[ErrorCode::NotFound, ErrorCode::Busy],
    ..Op::new(
        "POST",
        "/api/v1/actions/{id}/test",
        "testAction",
        "checks",
        "Run a webhook or exec action with a test alert (answers with the delivery id; its outcome is listed under `actions.deliveries` of GET /api/v1/checks)",
        |a| Ok(Request::Checks(ChecksRequest::TestAction { name: a.id })),
    )
};

/// Every row of the room, in routing order.
pub const OPS: &[Op] = &[
    ALERTS_LIST,
    ALERTS_ACK,
    CHECKS_LIST,
    CHECKS_RUN,
    ACTIONS_TEST,
];
