//! model-rust: a test plugin for host.model.*, with no dependencies. One library, two roles,
//! chosen by its config (`serves: <model>` in its plugin entry):
//!
//! - With `serves`, it lists that model (model.static) and streams it:
//!   `executor.execute_stream` answers no chunks, then a thread of its own emits `count`
//!   chunks "s0", "s1", ... every `interval` ms (both read from the request's Payload,
//!   `count=N;interval=M`) and closes the stream; it stops at the first refused emit.
//! - Without, its `executor.execute` (any model) calls `host.model.execute_stream` on model
//!   `target` (from the Payload, default "inner-stream") with its Payload as the body,
//!   reads up to `reads` chunks with `host.model.stream_read`, then (unless `close=0`)
//!   calls `host.model.stream_close` and reads once more. It answers the chunks read,
//!   joined by ",", then "|done-after-close=<bool>". A host error is answered as it is.
//!
//! `stats` answers `{"emits_ok", "emits_failed", "running"}`.

#[path = "../../rust-common/plugin.rs"]
mod plugin;

use plugin::{base64, field, host_call, json_string, unbase64, RUNNING};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

static EMITS_OK: AtomicI64 = AtomicI64::new(0);
static EMITS_FAILED: AtomicI64 = AtomicI64::new(0);
static SERVES: Mutex<String> = Mutex::new(String::new());

/// `name=value` from a `a=1;b=2` text.
fn setting<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split(';').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn emit_thread(stream_id: String, count: u64, interval_ms: u64) {
    let id = json_string(&stream_id);
    for i in 0..count {
        let payload = base64(format!("s{i}").as_bytes());
        let request = format!("{{\"stream_id\":{id},\"payload\":\"{payload}\"}}");
        if host_call(c"host.stream.emit", &request).is_ok() {
            EMITS_OK.fetch_add(1, Ordering::SeqCst);
        } else {
            EMITS_FAILED.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if interval_ms > 0 {
            thread::sleep(Duration::from_millis(interval_ms));
        }
    }
    let _ = host_call(c"host.stream.close", &format!("{{\"stream_id\":{id}}}"));
    RUNNING.fetch_sub(1, Ordering::SeqCst);
}

fn payload_text(request: &str) -> String {
    String::from_utf8_lossy(&unbase64(field(request, "Payload").unwrap_or(""))).into_owned()
}

fn serve_stream(request: &str) -> String {
    let settings = payload_text(request);
    let count = setting(&settings, "count").and_then(|v| v.parse().ok()).unwrap_or(3);
    let interval = setting(&settings, "interval").and_then(|v| v.parse().ok()).unwrap_or(0);
    let stream_id = field(request, "stream_id").unwrap_or("").to_string();
    RUNNING.fetch_add(1, Ordering::SeqCst);
    let spawned = thread::Builder::new()
        .name("model-rust-emitter".into())
        .spawn(move || emit_thread(stream_id, count, interval));
    if spawned.is_err() {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
    "{\"ok\":true,\"result\":{\"headers\":{}}}".to_string()
}

fn call_model(request: &str) -> Result<String, String> {
    let settings = payload_text(request);
    let target = setting(&settings, "target").unwrap_or("inner-stream");
    let reads: usize = setting(&settings, "reads").and_then(|v| v.parse().ok()).unwrap_or(100);
    let close = setting(&settings, "close") != Some("0");
    let body = field(request, "Payload").unwrap_or("");
    let callback_id = json_string(field(request, "host_callback_id").unwrap_or(""));
    let opened = host_call(
        c"host.model.execute_stream",
        &format!(
            "{{\"model\":{},\"stream\":true,\"entry_protocol\":\"openai\",\"body\":\"{body}\",\"host_callback_id\":{callback_id}}}",
            json_string(target)
        ),
    )?;
    let stream_id = json_string(field(&opened, "stream_id").unwrap_or(""));
    let read = format!("{{\"stream_id\":{stream_id}}}");
    let mut chunks = Vec::new();
    for _ in 0..reads {
        let answer = host_call(c"host.model.stream_read", &read)?;
        let payload = unbase64(field(&answer, "payload").unwrap_or(""));
        if !payload.is_empty() {
            chunks.push(String::from_utf8_lossy(&payload).into_owned());
        }
        if field(&answer, "done") == Some("true") {
            break;
        }
    }
    let mut after = String::from("open");
    if close {
        host_call(c"host.model.stream_close", &read)?;
        let answer = host_call(c"host.model.stream_read", &read)?;
        after = field(&answer, "done").unwrap_or("").to_string();
    }
    let text = format!("{}|done-after-close={after}", chunks.join(","));
    Ok(format!(
        "{{\"ok\":true,\"result\":{{\"Payload\":\"{}\",\"Headers\":{{}}}}}}",
        base64(text.as_bytes())
    ))
}

fn register(request: &str) -> String {
    let yaml = String::from_utf8_lossy(&unbase64(field(request, "config_yaml").unwrap_or(""))).into_owned();
    let serves = yaml
        .lines()
        .find_map(|l| l.strip_prefix("serves:"))
        .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
        .unwrap_or_default();
    let provider = if serves.is_empty() { "" } else { "\"model_provider\":true," };
    *SERVES.lock().unwrap_or_else(|e| e.into_inner()) = serves;
    format!(
        concat!(
            "{{\"ok\":true,\"result\":{{\"schema_version\":3,",
            "\"metadata\":{{\"Name\":\"model-rust\",\"Version\":\"1.0.0\",\"Author\":\"tests\",",
            "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\",\"Logo\":\"\"}},",
            "\"capabilities\":{{\"executor\":true,{}\"executor_input_formats\":[\"openai\"],",
            "\"executor_output_formats\":[\"openai\"]}}}}}}"
        ),
        provider
    )
}

fn handle(method: &str, request: &str) -> String {
    match method {
        "plugin.register" | "plugin.reconfigure" => register(request),
        "plugin.shutdown" | "model.for_auth" => "{\"ok\":true,\"result\":{}}".to_string(),
        "model.static" => {
            let serves = SERVES.lock().unwrap_or_else(|e| e.into_inner()).clone();
            format!(
                "{{\"ok\":true,\"result\":{{\"Provider\":\"model-rust\",\"Models\":[{{\"ID\":{}}}]}}}}",
                json_string(&serves)
            )
        }
        "executor.execute_stream" => serve_stream(request),
        "executor.execute" => call_model(request).unwrap_or_else(|failure| failure),
        "stats" => format!(
            "{{\"ok\":true,\"result\":{{\"emits_ok\":{},\"emits_failed\":{},\"running\":{}}}}}",
            EMITS_OK.load(Ordering::SeqCst),
            EMITS_FAILED.load(Ordering::SeqCst),
            RUNNING.load(Ordering::SeqCst),
        ),
        _ => format!(
            "{{\"ok\":false,\"error\":{{\"code\":\"unknown_method\",\"message\":{}}}}}",
            json_string(&format!("unknown method: {method}"))
        ),
    }
}

export_plugin!(handle);
