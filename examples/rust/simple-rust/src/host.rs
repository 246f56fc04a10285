//! Calling back into the host (`host->call`), safely.

use std::ffi::CString;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::abi::{CliproxyBuffer, CliproxyHostApi};
use crate::json::{self, Value};

/// The host's API table, as handed to `cliproxy_plugin_init`. The host keeps it alive
/// until the plugin is shut down; `shutdown` puts NULL back. An AtomicPtr rather than a
/// OnceLock because a library that the loader does not really unload (glibc keeps a
/// Rust cdylib with TLS destructors mapped) may be initialised again with a new table.
static HOST: AtomicPtr<CliproxyHostApi> = AtomicPtr::new(ptr::null_mut());

pub fn install(api: *const CliproxyHostApi) {
    HOST.store(api.cast_mut(), Ordering::Release);
}

pub fn uninstall() {
    HOST.store(ptr::null_mut(), Ordering::Release);
}

/// The contents of an error envelope: one the host answered, or one this plugin answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub retryable: Option<bool>,
    pub http_status: Option<f64>,
}

impl ApiError {
    pub fn new(code: &str, message: String) -> Self {
        ApiError {
            code: code.to_string(),
            message,
            retryable: None,
            http_status: None,
        }
    }
}

/// Calls host method `method` with the JSON `request` and answers the envelope's
/// `result` (an empty object when the host sent none), or its error.
pub fn call(method: &str, request: &Value) -> Result<Value, ApiError> {
    let raw = call_raw(method, request.to_json().as_bytes())?;
    parse_envelope(method, &raw)
}

/// The raw response bytes of one host call, already copied into Rust memory and the
/// host's buffer released.
pub fn call_raw(method: &str, request: &[u8]) -> Result<Vec<u8>, ApiError> {
    let api = HOST.load(Ordering::Acquire);
    if api.is_null() {
        return Err(ApiError::new(
            "host_unavailable",
            "the plugin is not initialised or already shut down".to_string(),
        ));
    }
    // SAFETY: a non-null pointer was given to us by the host at init, which keeps it
    // valid until shutdown (ABI.md section 1, step 3).
    let api = unsafe { &*api };
    let (Some(call), Some(free_buffer)) = (api.call, api.free_buffer) else {
        return Err(ApiError::new(
            "host_unavailable",
            "the host API has no call or free_buffer".to_string(),
        ));
    };
    let cmethod = CString::new(method).map_err(|_| {
        ApiError::new(
            "invalid_request",
            format!("method name {method:?} contains a NUL byte"),
        )
    })?;
    let mut response = CliproxyBuffer {
        ptr: ptr::null_mut(),
        len: 0,
    };
    // SAFETY: every pointer is valid for the duration of the call; the request slice is
    // only read. The response buffer, if any, is ours to release with free_buffer.
    let rc = unsafe {
        call(
            api.host_ctx,
            cmethod.as_ptr(),
            if request.is_empty() {
                ptr::null()
            } else {
                request.as_ptr()
            },
            request.len(),
            ptr::addr_of_mut!(response),
        )
    };
    let data = if response.ptr.is_null() {
        Vec::new()
    } else {
        // SAFETY: the host allocated `len` bytes at `ptr`; copy them out, then hand the
        // buffer back exactly once.
        let copy =
            unsafe { std::slice::from_raw_parts(response.ptr.cast::<u8>(), response.len) }.to_vec();
        unsafe { free_buffer(response.ptr, response.len) };
        copy
    };
    if rc != 0 {
        // Malformed call (ABI: rc 1). Prefer the host's own error envelope if it sent one.
        if let Err(e) = parse_envelope(method, &data) {
            if e.code != "invalid_response" {
                return Err(e);
            }
        }
        return Err(ApiError::new(
            "host_call_failed",
            format!("host call {method} returned {rc}"),
        ));
    }
    Ok(data)
}

/// Reads an envelope: `{"ok":true,"result":...}` or `{"ok":false,"error":{...}}`.
pub fn parse_envelope(method: &str, data: &[u8]) -> Result<Value, ApiError> {
    let invalid = |why: String| {
        ApiError::new(
            "invalid_response",
            format!("host call {method} answered {why}"),
        )
    };
    let envelope = json::parse_bytes(data).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    if !envelope.is_object() {
        return Err(invalid("a non-object envelope".to_string()));
    }
    match envelope.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(match envelope.get("result") {
            None | Some(Value::Null) => Value::Object(Vec::new()),
            Some(result) => result.clone(),
        }),
        _ => {
            let error = envelope.get("error");
            let field = |k: &str| error.and_then(|e| e.get(k));
            Err(ApiError {
                code: field("code")
                    .and_then(Value::as_str)
                    .unwrap_or("host_call_failed")
                    .to_string(),
                message: field("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("host call {method} failed without a message")),
                retryable: field("retryable").and_then(Value::as_bool),
                http_status: field("http_status").and_then(Value::as_f64),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        assert_eq!(
            parse_envelope("m", br#"{"ok":true,"result":{"a":1}}"#)
                .unwrap()
                .get("a"),
            Some(&Value::Number(1.0))
        );
        assert_eq!(
            parse_envelope("m", br#"{"OK":true}"#).unwrap(),
            Value::Object(vec![])
        );
        let e = parse_envelope("m", br#"{"ok":false,"error":{"Code":"denied","message":"no","retryable":true,"http_status":403}}"#)
            .unwrap_err();
        assert_eq!(
            (
                e.code.as_str(),
                e.message.as_str(),
                e.retryable,
                e.http_status
            ),
            ("denied", "no", Some(true), Some(403.0))
        );
        assert_eq!(
            parse_envelope("m", br#"{"ok":false}"#).unwrap_err().code,
            "host_call_failed"
        );
        assert_eq!(
            parse_envelope("m", b"nope").unwrap_err().code,
            "invalid_response"
        );
        assert_eq!(
            parse_envelope("m", b"[]").unwrap_err().code,
            "invalid_response"
        );
    }
}
