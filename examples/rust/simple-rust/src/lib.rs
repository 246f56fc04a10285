//! simple-rust: an example cliproxy-host plugin (ABI version 1, see
//! `include/cliproxy_plugin.h` and ABI.md) with no dependencies.
//!
//! It registers an executor, a request normalizer and a management page; all three
//! upper- or lower-case ASCII text according to the `mode` setting.
//!
//! Threading: the host calls from many threads at once and may call `host->call` back
//! re-entrantly, so the only shared state is the config behind an RwLock (never held
//! across a host call) and the host API pointer in an AtomicPtr.
//!
//! Panics: unwinding across `extern "C"` is undefined behaviour, so every exported
//! function runs its body inside `catch_unwind`; a panic in `call` becomes an
//! `internal_error` envelope with a non-zero return code.

mod abi;
mod base64;
mod config;
mod host;
mod json;

use std::any::Any;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::{PoisonError, RwLock};

use abi::{CliproxyBuffer, CliproxyHostApi, CliproxyPluginApi, ABI_VERSION};
use config::Config;
use host::ApiError;
use json::{arr, obj, s, Value};

const PLUGIN_ID: &str = "simple-rust";

static CONFIG: RwLock<Config> = RwLock::new(Config::DEFAULT);

/// A snapshot, so no lock is held while calling the host (which may call us back).
fn current_config() -> Config {
    // Config is replaced whole, never half-written, so a poisoned lock still holds a
    // consistent value.
    CONFIG
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn set_config(config: Config) {
    *CONFIG.write().unwrap_or_else(PoisonError::into_inner) = config;
}

// ---------------------------------------------------------------------------
// The C surface
// ---------------------------------------------------------------------------

/// The one exported symbol.
///
/// # Safety
/// `host` must point to a `cliproxy_host_api` that stays valid until `shutdown` has
/// run, and `plugin` to a writable `cliproxy_plugin_api` (both per the ABI).
#[no_mangle]
pub unsafe extern "C" fn cliproxy_plugin_init(
    host: *const CliproxyHostApi,
    plugin: *mut CliproxyPluginApi,
) -> c_int {
    let init = AssertUnwindSafe(|| {
        if host.is_null() || plugin.is_null() {
            return 1;
        }
        // SAFETY: checked non-null; validity is the caller's contract.
        let api = unsafe { &*host };
        if api.abi_version != ABI_VERSION {
            return 2;
        }
        if api.host_ctx.is_null() || api.call.is_none() || api.free_buffer.is_none() {
            return 3;
        }
        host::install(host);
        set_config(Config::DEFAULT);
        // SAFETY: checked non-null; the host hands us this struct to fill.
        unsafe {
            plugin.write(CliproxyPluginApi {
                abi_version: ABI_VERSION,
                call: Some(plugin_call),
                free_buffer: Some(plugin_free_buffer),
                shutdown: Some(plugin_shutdown),
            });
        }
        0
    });
    panic::catch_unwind(init).unwrap_or(1)
}

/// `cliproxy_plugin_api.call`.
///
/// Ownership of the response: the bytes are a `Box<[u8]>` (capacity == len) leaked
/// into `response`; the host copies them and hands `(ptr, len)` back to
/// `plugin_free_buffer`, which rebuilds the same box and drops it.
unsafe extern "C" fn plugin_call(
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    response: *mut CliproxyBuffer,
) -> c_int {
    if response.is_null() {
        // Nowhere to put an answer.
        return 1;
    }
    // SAFETY (inside): the pointers come straight from the host, valid for this call.
    let (rc, body) = answer_catching_panics(|| unsafe { handle_raw(method, request, request_len) });
    let boxed: Box<[u8]> = body.into_bytes().into_boxed_slice();
    let len = boxed.len();
    // SAFETY: checked non-null above.
    unsafe {
        (*response).ptr = Box::into_raw(boxed).cast::<c_void>();
        (*response).len = len;
    }
    rc
}

/// `cliproxy_plugin_api.free_buffer`: releases a response from `plugin_call`.
unsafe extern "C" fn plugin_free_buffer(ptr: *mut c_void, len: usize) {
    if ptr.is_null() {
        return;
    }
    let _ = panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: (ptr, len) is exactly what plugin_call leaked from a Box<[u8]>, and
        // the host releases each response once.
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(ptr.cast::<u8>(), len)) });
    }));
}

/// `cliproxy_plugin_api.shutdown`: forget the host table (it is about to go away) and
/// the config, so a later init starts clean.
unsafe extern "C" fn plugin_shutdown() {
    let _ = panic::catch_unwind(|| {
        host::uninstall();
        set_config(Config::DEFAULT);
    });
}

/// Runs a handler; a panic becomes an `internal_error` envelope and return code 1
/// instead of unwinding into C.
fn answer_catching_panics(handler: impl FnOnce() -> String) -> (c_int, String) {
    match panic::catch_unwind(AssertUnwindSafe(handler)) {
        Ok(body) => (0, body),
        Err(payload) => (
            1,
            error_envelope(&ApiError::new(
                "internal_error",
                format!("{PLUGIN_ID} panicked: {}", panic_message(payload.as_ref())),
            )),
        ),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "unknown panic"
    }
}

// ---------------------------------------------------------------------------
// Envelopes and dispatch
// ---------------------------------------------------------------------------

fn ok_envelope(result: &Value) -> String {
    let mut out = String::from("{\"ok\":true,\"result\":");
    result.write_to(&mut out);
    out.push('}');
    out
}

fn error_envelope(error: &ApiError) -> String {
    let mut fields = vec![
        ("code".to_string(), s(error.code.as_str())),
        ("message".to_string(), s(error.message.as_str())),
    ];
    if let Some(retryable) = error.retryable {
        fields.push(("retryable".to_string(), Value::Bool(retryable)));
    }
    if let Some(status) = error.http_status {
        fields.push(("http_status".to_string(), Value::Number(status)));
    }
    obj([("ok", Value::Bool(false)), ("error", Value::Object(fields))]).to_json()
}

fn invalid_request(message: String) -> ApiError {
    ApiError::new("invalid_request", message)
}

/// Turns the raw call into an envelope; never fails (errors become error envelopes).
unsafe fn handle_raw(method: *const c_char, request: *const u8, request_len: usize) -> String {
    if method.is_null() {
        return error_envelope(&invalid_request("method is NULL".to_string()));
    }
    // SAFETY: the host passes a NUL-terminated string valid for the call.
    let method = match unsafe { CStr::from_ptr(method) }.to_str() {
        Ok(m) => m,
        Err(_) => {
            return error_envelope(&invalid_request(
                "method name is not valid UTF-8".to_string(),
            ))
        }
    };
    let request: &[u8] = if request_len == 0 {
        // The pointer may be NULL when the length is 0.
        &[]
    } else if request.is_null() {
        return error_envelope(&invalid_request(format!(
            "request is NULL but request_len is {request_len}"
        )));
    } else {
        // SAFETY: the host's request bytes are valid for the duration of the call.
        unsafe { std::slice::from_raw_parts(request, request_len) }
    };
    match dispatch(method, request) {
        Ok(result) => ok_envelope(&result),
        Err(error) => error_envelope(&error),
    }
}

type Handler = fn(&Value) -> Result<Value, ApiError>;

fn dispatch(method: &str, request: &[u8]) -> Result<Value, ApiError> {
    let handler: Handler = match method {
        "plugin.register" | "plugin.reconfigure" => register,
        "plugin.shutdown" => |_| Ok(obj([])),
        "executor.identifier" => |_| Ok(obj([("identifier", s(PLUGIN_ID))])),
        "executor.execute" => execute,
        "request.normalize" => normalize,
        "management.register" => |_| Ok(management_routes()),
        "management.handle" => management_handle,
        _ => {
            return Err(ApiError::new(
                "unknown_method",
                format!("unknown method: {method}"),
            ));
        }
    };
    // An empty request counts as `{}` so that parameterless calls need no body.
    let request = if request.iter().all(u8::is_ascii_whitespace) {
        obj([])
    } else {
        json::parse_bytes(request)
            .map_err(|e| invalid_request(format!("request is not valid JSON: {e}")))?
    };
    if !request.is_object() {
        return Err(invalid_request("request must be a JSON object".to_string()));
    }
    handler(&request)
}

/// A string field (case-insensitive key); absent or null reads as None, like a Go
/// decoder leaving the zero value.
fn opt_str<'a>(request: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match request.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(invalid_request(format!("{key} must be a string"))),
    }
}

/// A base64 byte field; absent reads as empty.
fn bytes_field(request: &Value, key: &str) -> Result<Vec<u8>, ApiError> {
    base64::decode(opt_str(request, key)?.unwrap_or(""))
        .map_err(|e| invalid_request(format!("{key}: {e}")))
}

fn headers<const N: usize>(pairs: [(&str, &str); N]) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), arr([s(v)])))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

fn register(request: &Value) -> Result<Value, ApiError> {
    let yaml = bytes_field(request, "config_yaml")?;
    let yaml = String::from_utf8(yaml)
        .map_err(|_| invalid_request("config_yaml is not UTF-8".to_string()))?;
    // A bad config is refused and the previous one kept, rather than guessing.
    let config = Config::from_yaml(&yaml).map_err(|m| ApiError::new("invalid_config", m))?;
    set_config(config);
    Ok(registration())
}

fn registration() -> Value {
    obj([
        ("schema_version", Value::Number(1.0)),
        (
            "metadata",
            obj([
                ("Name", s(PLUGIN_ID)),
                ("Version", s(env!("CARGO_PKG_VERSION"))),
                ("Author", s("cliproxy-host")),
                ("GitHubRepository", s("https://github.com/cliproxy-host/cliproxy-host")),
                ("Logo", s("")),
                (
                    "ConfigFields",
                    arr([
                        obj([
                            ("Name", s("mode")),
                            ("Type", s("enum")),
                            ("EnumValues", arr([s("upper"), s("lower")])),
                            ("Description", s("Case applied to payloads and request bodies (default upper)")),
                        ]),
                        obj([
                            ("Name", s("upstream_url")),
                            ("Type", s("string")),
                            ("Description", s("Optional URL the executor fetches through the host instead of echoing the payload")),
                        ]),
                    ]),
                ),
            ]),
        ),
        (
            "capabilities",
            obj([
                ("executor", Value::Bool(true)),
                ("executor_model_scope", s("both")),
                ("executor_input_formats", arr([s("chat-completions")])),
                ("executor_output_formats", arr([s("chat-completions")])),
                ("request_normalizer", Value::Bool(true)),
                ("management_api", Value::Bool(true)),
            ]),
        ),
    ])
}

fn execute(request: &Value) -> Result<Value, ApiError> {
    let model = opt_str(request, "Model")?.unwrap_or("");
    let config = current_config();
    // Logging is best effort: a host that cannot log should not fail the request.
    let _ = host::call(
        "host.log",
        &obj([
            ("level", s("info")),
            ("message", s("simple-rust executing")),
            (
                "fields",
                obj([("model", s(model)), ("mode", s(config.mode.as_str()))]),
            ),
        ]),
    );

    if let Some(url) = &config.upstream_url {
        // The host makes the request so its proxy, timeouts and allow-list apply; a host
        // error is answered as our own error, code and message unchanged.
        let result = host::call(
            "host.http.do",
            &obj([
                ("method", s("GET")),
                ("url", s(url.as_str())),
                ("headers", headers([("X-Plugin", PLUGIN_ID)])),
                ("body", s("")),
            ]),
        )?;
        let status = match result.get("StatusCode").and_then(Value::as_f64) {
            Some(n) if n.fract() == 0.0 && (0.0..=999.0).contains(&n) => n as u32,
            _ => {
                return Err(ApiError::new(
                    "invalid_response",
                    "host.http.do answered without a valid StatusCode".to_string(),
                ))
            }
        };
        let body = opt_str(&result, "Body")
            .map_err(|_| {
                ApiError::new(
                    "invalid_response",
                    "host.http.do answered a non-string Body".to_string(),
                )
            })?
            .unwrap_or("");
        return Ok(obj([
            ("Payload", s(body)),
            (
                "Headers",
                headers([
                    ("X-Plugin", PLUGIN_ID),
                    ("X-Upstream-Status", &status.to_string()),
                ]),
            ),
        ]));
    }

    let mut payload = bytes_field(request, "Payload")?;
    config.mode.apply(&mut payload);
    Ok(obj([
        ("Payload", s(base64::encode(&payload))),
        (
            "Headers",
            headers([("X-Plugin", PLUGIN_ID), ("X-Mode", config.mode.as_str())]),
        ),
    ]))
}

fn normalize(request: &Value) -> Result<Value, ApiError> {
    let mut body = bytes_field(request, "Body")?;
    current_config().mode.apply(&mut body);
    Ok(obj([("Body", s(base64::encode(&body)))]))
}

fn management_routes() -> Value {
    obj([
        (
            "Routes",
            arr([obj([
                ("Method", s("GET")),
                ("Path", s("/simple-rust/status")),
                ("Menu", s("Simple Rust")),
                ("Description", s("Shows the simple-rust mode")),
            ])]),
        ),
        (
            "Resources",
            arr([obj([
                ("Path", s("/index.html")),
                ("Menu", s("Simple Rust")),
                ("Description", s("simple-rust status page")),
            ])]),
        ),
    ])
}

fn management_handle(request: &Value) -> Result<Value, ApiError> {
    let method = opt_str(request, "Method")?.unwrap_or("");
    let path = opt_str(request, "Path")?.unwrap_or("");
    let mode = current_config().mode.as_str();
    let (content_type, body) = if path.ends_with("index.html") {
        // `mode` is one of two fixed words, so it needs no HTML escaping.
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>simple-rust</title></head>\
             <body><h1>simple-rust</h1><p>Mode: <strong id=\"mode\">{mode}</strong></p></body></html>\n"
        );
        ("text/html; charset=utf-8", page)
    } else {
        let status = obj([
            ("plugin", s(PLUGIN_ID)),
            ("mode", s(mode)),
            ("method", s(method)),
            ("path", s(path)),
        ]);
        ("application/json", status.to_json())
    };
    Ok(obj([
        ("StatusCode", Value::Number(200.0)),
        ("Headers", headers([("Content-Type", content_type)])),
        ("Body", s(base64::encode(body.as_bytes()))),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_of(method: &str, request: &str) -> Result<Value, ApiError> {
        dispatch(method, request.as_bytes())
    }

    #[test]
    fn dispatch_errors() {
        let e = result_of("nope.method", "{}").unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("unknown_method", "unknown method: nope.method")
        );
        assert_eq!(
            result_of("request.normalize", "{").unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(
            result_of("request.normalize", "[]").unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(
            result_of("request.normalize", r#"{"Body":"!!"}"#)
                .unwrap_err()
                .code,
            "invalid_request"
        );
        assert_eq!(
            result_of("request.normalize", r#"{"Body":5}"#)
                .unwrap_err()
                .code,
            "invalid_request"
        );
        assert_eq!(
            result_of("executor.identifier", "")
                .unwrap()
                .get("identifier")
                .and_then(Value::as_str),
            Some("simple-rust")
        );
    }

    #[test]
    fn envelopes_are_json() {
        let e = ApiError {
            code: "x".into(),
            message: "a \"quoted\"\nline".into(),
            retryable: Some(false),
            http_status: Some(502.0),
        };
        assert_eq!(
            error_envelope(&e),
            r#"{"ok":false,"error":{"code":"x","message":"a \"quoted\"\nline","retryable":false,"http_status":502}}"#
        );
        assert_eq!(ok_envelope(&obj([])), r#"{"ok":true,"result":{}}"#);
    }

    #[test]
    fn panics_become_error_envelopes() {
        let (rc, body) = answer_catching_panics(|| panic!("boom {}", 42));
        assert_eq!(rc, 1);
        let env = json::parse(&body).unwrap();
        let error = env.get("error").unwrap();
        assert_eq!(
            error.get("code").and_then(Value::as_str),
            Some("internal_error")
        );
        assert_eq!(
            error.get("message").and_then(Value::as_str),
            Some("simple-rust panicked: boom 42")
        );
        assert_eq!(
            answer_catching_panics(|| "{}".to_string()),
            (0, "{}".to_string())
        );
    }

    /// A fake host: records the methods it is called with and answers `{}`.
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    unsafe extern "C" fn fake_host_call(
        _ctx: *mut c_void,
        method: *const c_char,
        _request: *const u8,
        _len: usize,
        response: *mut CliproxyBuffer,
    ) -> c_int {
        let name = unsafe { CStr::from_ptr(method) }
            .to_string_lossy()
            .into_owned();
        SEEN.lock().unwrap().push(name);
        let body: Box<[u8]> = b"{\"ok\":true,\"result\":{}}".to_vec().into_boxed_slice();
        unsafe {
            (*response).len = body.len();
            (*response).ptr = Box::into_raw(body).cast();
        }
        0
    }

    unsafe extern "C" fn fake_host_free(ptr: *mut c_void, len: usize) {
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(ptr.cast::<u8>(), len)) });
    }

    fn call_plugin(api: &CliproxyPluginApi, method: &[u8], request: &[u8]) -> (c_int, Value) {
        let method = std::ffi::CString::new(method).unwrap();
        let mut response = CliproxyBuffer {
            ptr: ptr::null_mut(),
            len: 0,
        };
        let req = if request.is_empty() {
            ptr::null()
        } else {
            request.as_ptr()
        };
        let rc = unsafe {
            (api.call.unwrap())(
                method.as_ptr(),
                req,
                request.len(),
                ptr::addr_of_mut!(response),
            )
        };
        let bytes =
            unsafe { std::slice::from_raw_parts(response.ptr.cast::<u8>(), response.len) }.to_vec();
        unsafe { (api.free_buffer.unwrap())(response.ptr, response.len) };
        (rc, json::parse_bytes(&bytes).unwrap())
    }

    // The only test that touches the global host pointer and config, so parallel tests
    // cannot race on them.
    #[test]
    fn ffi_round_trip() {
        let host = CliproxyHostApi {
            abi_version: ABI_VERSION,
            host_ctx: ptr::NonNull::dangling().as_ptr(),
            call: Some(fake_host_call),
            free_buffer: Some(fake_host_free),
        };
        let mut api = CliproxyPluginApi {
            abi_version: 0,
            call: None,
            free_buffer: None,
            shutdown: None,
        };
        assert_eq!(
            unsafe { cliproxy_plugin_init(ptr::null(), ptr::addr_of_mut!(api)) },
            1
        );
        let wrong = CliproxyHostApi {
            abi_version: 2,
            ..host
        };
        assert_eq!(
            unsafe { cliproxy_plugin_init(ptr::addr_of!(wrong), ptr::addr_of_mut!(api)) },
            2
        );
        assert_eq!(
            unsafe { cliproxy_plugin_init(ptr::addr_of!(host), ptr::addr_of_mut!(api)) },
            0
        );
        assert_eq!(api.abi_version, ABI_VERSION);
        assert!(api.shutdown.is_some());

        let yaml = base64::encode(b"mode: lower\n");
        let (rc, env) = call_plugin(
            &api,
            b"plugin.register",
            format!("{{\"config_yaml\":\"{yaml}\"}}").as_bytes(),
        );
        assert_eq!((rc, env.get("ok")), (0, Some(&Value::Bool(true))));
        let (rc, env) = call_plugin(
            &api,
            b"executor.execute",
            br#"{"Model":"m","Payload":"SGVMTG8="}"#,
        );
        assert_eq!(rc, 0);
        let payload = env
            .get("result")
            .and_then(|r| r.get("Payload"))
            .and_then(Value::as_str)
            .unwrap();
        assert_eq!(base64::decode(payload).unwrap(), b"hello");
        assert_eq!(*SEEN.lock().unwrap(), ["host.log"]);

        let (rc, env) = call_plugin(&api, b"bad\xffname", b"");
        let code = env
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str);
        assert_eq!((rc, code), (0, Some("invalid_request")));

        unsafe { (api.shutdown.unwrap())() };
        assert_eq!(current_config(), Config::DEFAULT);
        assert_eq!(
            host::call_raw("host.log", b"{}").unwrap_err().code,
            "host_unavailable"
        );
    }
}
