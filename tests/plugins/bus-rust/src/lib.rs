//! bus-rust: a test plugin for the event bus, plugin-to-plugin calls and service lookups,
//! with no dependencies. It registers `Subscriptions: ["rust.*"]` and the service
//! `{"Name": "kv", "Version": "2"}`.
//!
//! - `relay.host {"method", "request", "host_callback_id"?}` calls the host callback
//!   `method` with `request` (its host_callback_id added when it has one) and answers the
//!   host's envelope as it is.
//! - `event.handle` records the event; `relay.events` answers `{"events": [...]}`.
//! - `relay.echo` answers `{"plugin": "bus-rust", "request": <the request>}`.

#[path = "../../rust-common/plugin.rs"]
mod plugin;

use plugin::{field, host_call, json_string};
use std::ffi::CString;
use std::sync::Mutex;

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

const REGISTRATION: &str = r#"{"ok":true,"result":{"schema_version":1,"metadata":{"Name":"bus-rust","Version":"0.1.0","Author":"tests","GitHubRepository":"https://example.invalid/bus-rust"},"capabilities":{"usage_plugin":true},"Subscriptions":["rust.*"],"Services":[{"Name":"kv","Version":"2"}]}}"#;

fn ok(result: &str) -> String {
    format!("{{\"ok\":true,\"result\":{result}}}")
}

fn error(message: &str) -> String {
    format!("{{\"ok\":false,\"error\":{{\"code\":\"invalid_request\",\"message\":{}}}}}", json_string(message))
}

/// The raw JSON object after `"key":` (braces matched, strings skipped), if there is one.
fn object<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start();
    if !rest.starts_with('{') {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in rest.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

fn relay(request: &str) -> String {
    let Some(method) = field(request, "method") else {
        return error("bus-rust: relay.host needs \"method\"");
    };
    let inner = object(request, "request").unwrap_or("{}");
    let call = match field(request, "host_callback_id") {
        Some(id) if inner.trim() == "{}" => format!("{{\"host_callback_id\":{}}}", json_string(id)),
        Some(id) => format!("{{\"host_callback_id\":{},{}", json_string(id), &inner.trim_start()[1..]),
        None => inner.to_string(),
    };
    let Ok(method) = CString::new(method) else {
        return error("bus-rust: a method name with a NUL byte");
    };
    match host_call(&method, &call) {
        Ok(answer) | Err(answer) => answer,
    }
}

fn handle(method: &str, request: &str) -> String {
    match method {
        "plugin.register" | "plugin.reconfigure" => REGISTRATION.to_string(),
        "plugin.shutdown" => ok("{}"),
        "relay.host" => relay(request),
        "relay.echo" => {
            let body = if request.is_empty() { "null" } else { request };
            ok(&format!("{{\"plugin\":\"bus-rust\",\"request\":{body}}}"))
        }
        "event.handle" => {
            EVENTS.lock().map(|mut events| events.push(request.to_string())).ok();
            ok("{}")
        }
        "relay.events" => {
            let events = EVENTS.lock().map(|events| events.join(",")).unwrap_or_default();
            ok(&format!("{{\"events\":[{events}]}}"))
        }
        "usage.handle" => ok("{\"plugin\":\"bus-rust\"}"),
        _ => format!(
            "{{\"ok\":false,\"error\":{{\"code\":\"unknown_method\",\"message\":{}}}}}",
            json_string(&format!("bus-rust: unknown method {method}"))
        ),
    }
}

export_plugin!(handle);
