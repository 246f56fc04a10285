//! stream-rust: a test plugin for the host's stream tests, with no dependencies.
//!
//! `executor.execute_stream` `{"stream_id", "count"}` answers no chunks, then a thread of
//! its own emits `count` chunks "r0", "r1", ... through `host.stream.emit` and closes
//! the stream with `host.stream.close`. The thread stops at the first refused emit.
//! `stats` answers `{"emits_ok", "emits_failed", "running", "last_failure"}`.

#[path = "../../rust-common/plugin.rs"]
mod plugin;

use plugin::{base64, field, host_call, json_string, RUNNING};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

static EMITS_OK: AtomicI64 = AtomicI64::new(0);
static EMITS_FAILED: AtomicI64 = AtomicI64::new(0);
static LAST_FAILURE: Mutex<String> = Mutex::new(String::new());

fn stream_thread(stream_id: String, count: u64, interval_ms: u64) {
    let id = json_string(&stream_id);
    for i in 0..count {
        let payload = base64(format!("r{i}").as_bytes());
        let request = format!("{{\"stream_id\":{id},\"payload\":\"{payload}\"}}");
        match host_call(c"host.stream.emit", &request) {
            Ok(_) => {
                EMITS_OK.fetch_add(1, Ordering::SeqCst);
            }
            Err(failure) => {
                EMITS_FAILED.fetch_add(1, Ordering::SeqCst);
                *LAST_FAILURE.lock().unwrap_or_else(|e| e.into_inner()) = failure;
                break;
            }
        }
        if interval_ms > 0 {
            thread::sleep(Duration::from_millis(interval_ms));
        }
    }
    let _ = host_call(c"host.stream.close", &format!("{{\"stream_id\":{id}}}"));
    RUNNING.fetch_sub(1, Ordering::SeqCst);
}

fn handle(method: &str, request: &str) -> String {
    match method {
        "plugin.register" | "plugin.reconfigure" => concat!(
            "{\"ok\":true,\"result\":{\"schema_version\":1,",
            "\"metadata\":{\"Name\":\"stream-rust\",\"Version\":\"1.0.0\",\"Author\":\"tests\",",
            "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\",\"Logo\":\"\"},",
            "\"capabilities\":{\"executor\":true,\"executor_input_formats\":[\"openai\"],",
            "\"executor_output_formats\":[\"openai\"]}}}"
        )
        .to_string(),
        "plugin.shutdown" => "{\"ok\":true,\"result\":{}}".to_string(),
        "executor.execute_stream" => {
            let stream_id = field(request, "stream_id").unwrap_or("").to_string();
            let count = field(request, "count").and_then(|v| v.parse().ok()).unwrap_or(3);
            let interval = field(request, "interval_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            RUNNING.fetch_add(1, Ordering::SeqCst);
            let spawned = thread::Builder::new()
                .name("stream-rust-emitter".into())
                .spawn(move || stream_thread(stream_id, count, interval));
            if spawned.is_err() {
                RUNNING.fetch_sub(1, Ordering::SeqCst);
            }
            "{\"ok\":true,\"result\":{\"headers\":{\"X-Plugin\":[\"stream-rust\"]}}}".to_string()
        }
        "stats" => format!(
            "{{\"ok\":true,\"result\":{{\"emits_ok\":{},\"emits_failed\":{},\"running\":{},\"last_failure\":{}}}}}",
            EMITS_OK.load(Ordering::SeqCst),
            EMITS_FAILED.load(Ordering::SeqCst),
            RUNNING.load(Ordering::SeqCst),
            json_string(&LAST_FAILURE.lock().unwrap_or_else(|e| e.into_inner())),
        ),
        _ => format!(
            "{{\"ok\":false,\"error\":{{\"code\":\"unknown_method\",\"message\":{}}}}}",
            json_string(&format!("unknown method: {method}"))
        ),
    }
}

export_plugin!(handle);
