//! upstream-rust: a model executor (format openai, model "rust-up-1") for the /v1 tests,
//! with no dependencies. Its config key `upstream` is a URL (a loopback fake upstream).
//!
//! `executor.execute` GETs the upstream through `host.http.do` and answers a chat
//! completion whose content is the upstream's body. `executor.execute_stream` answers no
//! chunks, then a thread of its own GETs the upstream and emits one chat.completion.chunk
//! per line of its body through `host.stream.emit`, then closes the stream; it stops at
//! the first refused emit. `stats` answers `{"emits_ok", "emits_failed", "running",
//! "last_failure", "upstream_calls"}`.

#[path = "../../rust-common/plugin.rs"]
mod plugin;

use plugin::{base64, field, host_call, json_string, unbase64, RUNNING};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::thread;

static EMITS_OK: AtomicI64 = AtomicI64::new(0);
static EMITS_FAILED: AtomicI64 = AtomicI64::new(0);
static UPSTREAM_CALLS: AtomicI64 = AtomicI64::new(0);
static UPSTREAM: Mutex<String> = Mutex::new(String::new());
static LAST_FAILURE: Mutex<String> = Mutex::new(String::new());


/// The `upstream:` value of the plugin's config_yaml (base64 in the request).
fn upstream_of(request: &str) -> Option<String> {
    let yaml = String::from_utf8_lossy(&unbase64(field(request, "config_yaml")?)).into_owned();
    let start = yaml.find("upstream: ")? + "upstream: ".len();
    let rest = &yaml[start..];
    let end = rest.find('\n').unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches(['"', '\'']).to_string())
}

/// GETs the upstream through host.http.do; its body, or the failure.
fn fetch_upstream(count: u64) -> Result<String, String> {
    let url = UPSTREAM.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if url.is_empty() {
        return Err("upstream-rust: set `upstream` in the plugin's config".into());
    }
    UPSTREAM_CALLS.fetch_add(1, Ordering::SeqCst);
    let request = format!("{{\"method\":\"GET\",\"url\":{}}}", json_string(&format!("{url}?count={count}")));
    let answer = host_call(c"host.http.do", &request)?;
    let body = field(&answer, "Body").unwrap_or("");
    Ok(String::from_utf8_lossy(&unbase64(body)).into_owned())
}

fn chunk(model: &str, content: Option<&str>) -> String {
    let (delta, finish) = match content {
        Some(text) => (format!("{{\"content\":{}}}", json_string(text)), "null"),
        None => ("{}".to_string(), "\"stop\""),
    };
    format!(
        "{{\"id\":\"chatcmpl-upstream-rust\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}",
        json_string(model)
    )
}

fn emit(id: &str, payload: &str) -> bool {
    let request = format!("{{\"stream_id\":{id},\"payload\":\"{}\"}}", base64(payload.as_bytes()));
    match host_call(c"host.stream.emit", &request) {
        Ok(_) => {
            EMITS_OK.fetch_add(1, Ordering::SeqCst);
            true
        }
        Err(failure) => {
            EMITS_FAILED.fetch_add(1, Ordering::SeqCst);
            *LAST_FAILURE.lock().unwrap_or_else(|e| e.into_inner()) = failure;
            false
        }
    }
}

fn stream_thread(stream_id: String, model: String) {
    let id = json_string(&stream_id);
    let mut error = String::new();
    match fetch_upstream(3) {
        Ok(body) => {
            let mut open = true;
            for line in body.lines().filter(|l| !l.is_empty()) {
                if !emit(&id, &chunk(&model, Some(&format!("{line} ")))) {
                    open = false;
                    break;
                }
            }
            if open {
                emit(&id, &chunk(&model, None));
            }
        }
        Err(failure) => error = failure,
    }
    let close = if error.is_empty() {
        format!("{{\"stream_id\":{id}}}")
    } else {
        format!("{{\"stream_id\":{id},\"error\":{}}}", json_string(&error))
    };
    let _ = host_call(c"host.stream.close", &close);
    RUNNING.fetch_sub(1, Ordering::SeqCst);
}

fn execute(request: &str) -> String {
    let model = field(request, "Model").unwrap_or("").to_string();
    match fetch_upstream(3) {
        Ok(body) => {
            let text = body.lines().collect::<Vec<_>>().join(" ");
            let answer = format!(
                "{{\"id\":\"chatcmpl-upstream-rust\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":{},\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":{}}},\"finish_reason\":\"stop\"}}]}}",
                json_string(&model),
                json_string(&text)
            );
            format!("{{\"ok\":true,\"result\":{{\"Payload\":\"{}\"}}}}", base64(answer.as_bytes()))
        }
        Err(failure) => format!(
            "{{\"ok\":false,\"error\":{{\"code\":\"upstream_failed\",\"message\":{}}}}}",
            json_string(&format!("upstream-rust: {failure}"))
        ),
    }
}

fn handle(method: &str, request: &str) -> String {
    match method {
        "plugin.register" | "plugin.reconfigure" => {
            if let Some(url) = upstream_of(request) {
                *UPSTREAM.lock().unwrap_or_else(|e| e.into_inner()) = url;
            }
            concat!(
                "{\"ok\":true,\"result\":{\"schema_version\":1,",
                "\"metadata\":{\"Name\":\"upstream-rust\",\"Version\":\"1.0.0\",\"Author\":\"tests\",",
                "\"GitHubRepository\":\"https://github.com/cliproxy-host/cliproxy-host\",\"Logo\":\"\"},",
                "\"capabilities\":{\"executor\":true,\"model_provider\":true,",
                "\"executor_input_formats\":[\"openai\"],\"executor_output_formats\":[\"openai\"]}}}"
            )
            .to_string()
        }
        "plugin.shutdown" => "{\"ok\":true,\"result\":{}}".to_string(),
        "model.static" => {
            "{\"ok\":true,\"result\":{\"provider\":\"upstream-rust\",\"models\":[{\"id\":\"rust-up-1\"}]}}".to_string()
        }
        "executor.execute" => execute(request),
        "executor.execute_stream" => {
            let stream_id = field(request, "stream_id").unwrap_or("").to_string();
            let model = field(request, "Model").unwrap_or("").to_string();
            RUNNING.fetch_add(1, Ordering::SeqCst);
            let spawned = thread::Builder::new()
                .name("upstream-rust-emitter".into())
                .spawn(move || stream_thread(stream_id, model));
            if spawned.is_err() {
                RUNNING.fetch_sub(1, Ordering::SeqCst);
            }
            "{\"ok\":true,\"result\":{\"headers\":{\"X-Plugin\":[\"upstream-rust\"]}}}".to_string()
        }
        "stats" => format!(
            "{{\"ok\":true,\"result\":{{\"emits_ok\":{},\"emits_failed\":{},\"running\":{},\"last_failure\":{},\"upstream_calls\":{}}}}}",
            EMITS_OK.load(Ordering::SeqCst),
            EMITS_FAILED.load(Ordering::SeqCst),
            RUNNING.load(Ordering::SeqCst),
            json_string(&LAST_FAILURE.lock().unwrap_or_else(|e| e.into_inner())),
            UPSTREAM_CALLS.load(Ordering::SeqCst),
        ),
        _ => format!(
            "{{\"ok\":false,\"error\":{{\"code\":\"unknown_method\",\"message\":{}}}}}",
            json_string(&format!("unknown method: {method}"))
        ),
    }
}

export_plugin!(handle);
