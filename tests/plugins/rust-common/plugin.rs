//! The ABI glue every Rust test plugin shares: the C types, the host pointer, base64,
//! a small JSON field reader, `host_call`, and `export_plugin!`, which defines
//! `plugin_call`, `plugin_free`, `plugin_shutdown` and `cliproxy_plugin_init` around a
//! plugin's own `handle(method, request) -> String`. Included with `#[path]` (a module,
//! not a crate: the plugins build offline with no dependencies).

#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicI64, AtomicPtr, Ordering};

#[repr(C)]
pub struct Buffer {
    pub ptr: *mut c_void,
    pub len: usize,
}

pub type HostCall = unsafe extern "C" fn(*mut c_void, *const c_char, *const u8, usize, *mut Buffer) -> c_int;
pub type HostFree = unsafe extern "C" fn(*mut c_void, usize);

#[repr(C)]
pub struct HostApi {
    pub abi_version: u32,
    pub host_ctx: *mut c_void,
    pub call: Option<HostCall>,
    pub free_buffer: Option<HostFree>,
}

pub type PluginCall = unsafe extern "C" fn(*const c_char, *const u8, usize, *mut Buffer) -> c_int;
pub type PluginFree = unsafe extern "C" fn(*mut c_void, usize);

#[repr(C)]
pub struct PluginApi {
    pub abi_version: u32,
    pub call: Option<PluginCall>,
    pub free_buffer: Option<PluginFree>,
    pub shutdown: Option<unsafe extern "C" fn()>,
}

pub static HOST: AtomicPtr<HostApi> = AtomicPtr::new(ptr::null_mut());
/// Threads of the plugin still running; `plugin_shutdown` waits (bounded) for them.
pub static RUNNING: AtomicI64 = AtomicI64::new(0);

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64(data: &[u8]) -> String {
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

pub fn unbase64(text: &str) -> Vec<u8> {
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
pub fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

pub fn json_string(text: &str) -> String {
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
pub fn host_call(method: &CStr, request: &str) -> Result<String, String> {
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

/// Defines the plugin's exported entry points around `$handle(method, request) -> String`.
#[macro_export]
macro_rules! export_plugin {
    ($handle:ident) => {
        unsafe extern "C" fn plugin_call(
            method: *const ::std::ffi::c_char,
            request: *const u8,
            request_len: usize,
            response: *mut crate::plugin::Buffer,
        ) -> ::std::ffi::c_int {
            if response.is_null() {
                return 1;
            }
            let run = ::std::panic::AssertUnwindSafe(|| {
                // SAFETY: the host passes a NUL-terminated method and `request_len` bytes.
                let method = if method.is_null() { "" } else { unsafe { ::std::ffi::CStr::from_ptr(method) }.to_str().unwrap_or("") };
                let request = if request.is_null() || request_len == 0 {
                    ""
                } else {
                    ::std::str::from_utf8(unsafe { ::std::slice::from_raw_parts(request, request_len) }).unwrap_or("")
                };
                $handle(method, request)
            });
            let answer = ::std::panic::catch_unwind(run).unwrap_or_else(|_| {
                "{\"ok\":false,\"error\":{\"code\":\"internal_error\",\"message\":\"panic\"}}".to_string()
            });
            let bytes = answer.into_bytes().into_boxed_slice();
            let len = bytes.len();
            // SAFETY: response is non-null; the box is released in plugin_free with its length.
            unsafe {
                (*response).ptr = Box::into_raw(bytes) as *mut ::std::ffi::c_void;
                (*response).len = len;
            }
            0
        }

        unsafe extern "C" fn plugin_free(ptr: *mut ::std::ffi::c_void, len: usize) {
            if !ptr.is_null() {
                // SAFETY: ptr and len come from plugin_call's Box<[u8]>.
                drop(unsafe { Box::from_raw(::std::ptr::slice_from_raw_parts_mut(ptr as *mut u8, len)) });
            }
        }

        /// Waits (bounded) for the emitting threads: the library must not be unmapped under them.
        unsafe extern "C" fn plugin_shutdown() {
            for _ in 0..500 {
                if crate::plugin::RUNNING.load(::std::sync::atomic::Ordering::SeqCst) <= 0 {
                    break;
                }
                ::std::thread::sleep(::std::time::Duration::from_millis(10));
            }
        }

        /// # Safety
        /// `host` and `plugin` must be valid as the ABI says.
        #[no_mangle]
        pub unsafe extern "C" fn cliproxy_plugin_init(host: *const crate::plugin::HostApi, plugin: *mut crate::plugin::PluginApi) -> ::std::ffi::c_int {
            if host.is_null() || plugin.is_null() {
                return 1;
            }
            crate::plugin::HOST.store(host as *mut crate::plugin::HostApi, ::std::sync::atomic::Ordering::Release);
            // SAFETY: checked non-null; the host hands us this struct to fill.
            unsafe {
                plugin.write(crate::plugin::PluginApi {
                    abi_version: 1,
                    call: Some(plugin_call),
                    free_buffer: Some(plugin_free),
                    shutdown: Some(plugin_shutdown),
                });
            }
            0
        }
    };
}
