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
static SERVES: Mutex<String> = Mutex::new(String::new());

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

fn unbase64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let Some(v) = B64.iter().position(|&b| b == c) else { continue };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The raw text after `"key":` up to the next `,` or `}` (enough for the host's JSON).
fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

/// `name=value` from a `a=1;b=2` text.
fn setting<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split(';').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
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

/// Calls the host: Ok(answer) when it answered ok, else Err(the envelope it answered).
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
