//! The REST API and the WebSocket monitor over TCP, with real clients (ureq, tungstenite).

use crate::util::*;
use serde_json::Value;

fn get(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let addr = d.http.expect("the daemon reports its TCP address");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().expect("HTTP exchange");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn tcp_listener_serves_the_same_api_and_refuses_foreign_hosts() {
    let d = Daemon::start();
    let (status, v) = get(&d, "/api/v1/status", &[]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"]["daemon"]["http_listen"],
        d.http.map(|a| a.to_string()).unwrap_or_default()
    );
    let (status, v) = get(&d, "/api/v1/status", &[("Host", "rebind.example")]);
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["errors"][0]["code"], "forbidden");
}

#[test]
fn websocket_subscribes_and_answers_commands() {
    let d = Daemon::start();
    let addr = d.http.expect("http");
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws/monitor")).expect("ws connect");
    let hello: Value =
        serde_json::from_str(ws.read().expect("hello").to_text().expect("text")).expect("json");
    assert_eq!(hello["type"], "connected");
    ws.send(tungstenite::Message::text(
        r#"{"id": 1, "command": "subscribe", "channels": ["mcp_servers"]}"#,
    ))
    .expect("send");
    let v: Value =
        serde_json::from_str(ws.read().expect("reply").to_text().expect("text")).expect("json");
    assert_eq!(v["id"], 1);
    assert_eq!(v["data"]["subscribed"][0], "mcp_servers");
    ws.send(tungstenite::Message::text(
        r#"{"id": "s", "command": "status", "parameters": {"detailed": true}}"#,
    ))
    .expect("send");
    let v: Value =
        serde_json::from_str(ws.read().expect("reply").to_text().expect("text")).expect("json");
    assert_eq!(v["id"], "s");
    assert_eq!(v["type"], "response");
    assert!(v["data"]["loop"]["wakeups"].as_u64().is_some());
}
