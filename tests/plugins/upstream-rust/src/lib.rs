//! upstream-rust: a model executor (format openai, model "rust-up-1") for the /v1 tests,
//! with no dependencies. Its config key `upstream` is a URL (a loopback fake upstream).
//!
//! `executor.execute` GETs the upstream through `host.http.do` and answers a chat
//! completion whose content is the upstream's body. `executor.execute_stream` answers no
//! chunks, then a thread of its own GETs the upstream and emits one chat.completion.chunk
//! per line of its body through `host.stream.emit`, then closes the stream; it stops at
//! the first refused emit. `stats` answers `{"emits_ok", "emits_failed", "running",
//! "last_failure", "upstream_calls"}`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicI64, AtomicPtr, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

#[repr(C)]
pub struct Buffer {
    ptr: *mut c_void,
    len: usize,
}

type HostCall = unsafe extern "C" fn(*mut c_void, *const c_char, *const u8, usize, *mut Buffer) -> c_int;
type HostFree = unsafe extern "C" fn(*mut c_void, usize);

#[repr(C)]
pub struct HostApi {
    abi_version: u32,
    host_ctx: *mut c_void,
    call: Option<HostCall>,
    free_buffer: Option<HostFree>,
}

type PluginCall = unsafe extern "C" fn(*const c_char, *const u8, usize, *mut Buffer) -> c_int;
type PluginFree = unsafe extern "C" fn(*mut c_void, usize);

#[repr(C)]
pub struct PluginApi {
    abi_version: u32,
    call: Option<PluginCall>,
    free_buffer: Option<PluginFree>,
    shutdown: Option<unsafe extern "C" fn()>,
}

static HOST: AtomicPtr<HostApi> = AtomicPtr::new(ptr::null_mut());
static EMITS_OK: AtomicI64 = AtomicI64::new(0);
static EMITS_FAILED: AtomicI64 = AtomicI64::new(0);
static RUNNING: AtomicI64 = AtomicI64::new(0);
static UPSTREAM_CALLS: AtomicI64 = AtomicI64::new(0);
static UPSTREAM: Mutex<String> = Mutex::new(String::new());
static LAST_FAILURE: Mutex<String> = Mutex::new(String::new());

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The raw text after `"key":` up to the next `,` or `}` (enough for the host's requests).
fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Calls the host; Ok(answer) when it answered ok, else the envelope it answered.
fn host_call(method: &CStr, request: &str) -> Result<String, String> {
    let host = HOST.load(Ordering::Acquire);
    if host.is_null() {
        return Err("no host".into());
    }
    // SAFETY: the host keeps its API valid until shutdown, which waits for our threads.
    let api = unsafe { &*host };
    let (Some(call), Some(free)) = (api.call, api.free_buffer) else {
        return Err("no host functions".into());
    };
    let mut resp = Buffer { ptr: ptr::null_mut(), len: 0 };
    // SAFETY: pointers and lengths describe live buffers for the duration of the call.
    let rc = unsafe { call(api.host_ctx, method.as_ptr(), request.as_ptr(), request.len(), &mut resp) };
    let answer = if resp.ptr.is_null() {
        String::new()
    } else {
        // SAFETY: the host answered `len` bytes at `ptr`, which we free right after.
        let bytes = unsafe { std::slice::from_raw_parts(resp.ptr as *const u8, resp.len) };
        let text = String::from_utf8_lossy(bytes).into_owned();
        unsafe { free(resp.ptr, resp.len) };
        text
    };
    if rc == 0 && answer.starts_with("{\"ok\":true") {
        Ok(answer)
    } else {
        Err(answer)
    }
}

fn unbase64(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match B64.iter().position(|&b| b == c) {
            Some(v) => v as u32,
            None => continue, // '=' padding and anything else
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

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

unsafe extern "C" fn plugin_call(
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    response: *mut Buffer,
) -> c_int {
    if response.is_null() {
        return 1;
    }
    let run = AssertUnwindSafe(|| {
        // SAFETY: the host passes a NUL-terminated method and `request_len` bytes.
        let method = if method.is_null() { "" } else { unsafe { CStr::from_ptr(method) }.to_str().unwrap_or("") };
        let request = if request.is_null() || request_len == 0 {
            ""
        } else {
            std::str::from_utf8(unsafe { std::slice::from_raw_parts(request, request_len) }).unwrap_or("")
        };
        handle(method, request)
    });
    let answer = panic::catch_unwind(run).unwrap_or_else(|_| {
        "{\"ok\":false,\"error\":{\"code\":\"internal_error\",\"message\":\"panic\"}}".to_string()
    });
    let bytes = answer.into_bytes().into_boxed_slice();
    let len = bytes.len();
    // SAFETY: response is non-null; the box is released in plugin_free with its length.
    unsafe {
        (*response).ptr = Box::into_raw(bytes) as *mut c_void;
        (*response).len = len;
    }
    0
}

unsafe extern "C" fn plugin_free(ptr: *mut c_void, len: usize) {
    if !ptr.is_null() {
        // SAFETY: ptr and len come from plugin_call's Box<[u8]>.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr as *mut u8, len)) });
    }
}

/// Waits (bounded) for the emitting threads: the library must not be unmapped under them.
unsafe extern "C" fn plugin_shutdown() {
    for _ in 0..500 {
        if RUNNING.load(Ordering::SeqCst) <= 0 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// # Safety
/// `host` and `plugin` must be valid as the ABI says.
#[no_mangle]
pub unsafe extern "C" fn cliproxy_plugin_init(host: *const HostApi, plugin: *mut PluginApi) -> c_int {
    if host.is_null() || plugin.is_null() {
        return 1;
    }
    HOST.store(host as *mut HostApi, Ordering::Release);
    // SAFETY: checked non-null; the host hands us this struct to fill.
    unsafe {
        plugin.write(PluginApi {
            abi_version: 1,
            call: Some(plugin_call),
            free_buffer: Some(plugin_free),
            shutdown: Some(plugin_shutdown),
        });
    }
    0
}
