//! Test plugin: `auth.list|get|get_runtime|save` relay their request bytes to
//! `host.auth.<same>` through `host->call` and answer the host's envelope unchanged.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

#[repr(C)]
pub struct Buffer {
    ptr: *mut c_void,
    len: usize,
}

type HostCall = unsafe extern "C" fn(*mut c_void, *const c_char, *const u8, usize, *mut Buffer) -> c_int;
type FreeBuffer = unsafe extern "C" fn(*mut c_void, usize);
type PluginCall = unsafe extern "C" fn(*const c_char, *const u8, usize, *mut Buffer) -> c_int;

#[repr(C)]
pub struct HostApi {
    abi_version: u32,
    host_ctx: *mut c_void,
    call: Option<HostCall>,
    free_buffer: Option<FreeBuffer>,
}

#[repr(C)]
pub struct PluginApi {
    abi_version: u32,
    call: Option<PluginCall>,
    free_buffer: Option<FreeBuffer>,
    shutdown: Option<unsafe extern "C" fn()>,
}

static HOST: AtomicPtr<HostApi> = AtomicPtr::new(ptr::null_mut());

const REGISTRATION: &[u8] = br#"{"ok":true,"result":{"schema_version":1,"metadata":{"Name":"auth-rust","Version":"0.1.0","Author":"tests","GitHubRepository":"https://example.invalid/auth-rust","Logo":"","ConfigFields":[]},"capabilities":{"usage_plugin":true}}}"#;

#[no_mangle]
pub unsafe extern "C" fn cliproxy_plugin_init(host: *const HostApi, plugin: *mut PluginApi) -> c_int {
    if host.is_null() || plugin.is_null() || (*host).abi_version != 1 {
        return 1;
    }
    HOST.store(host as *mut HostApi, Ordering::Release);
    plugin.write(PluginApi {
        abi_version: 1,
        call: Some(plugin_call),
        free_buffer: Some(plugin_free),
        shutdown: None,
    });
    0
}

fn answer(bytes: Vec<u8>, response: *mut Buffer) -> c_int {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    // SAFETY: the host passes a valid response slot; plugin_free rebuilds this box.
    unsafe {
        (*response).ptr = Box::into_raw(boxed) as *mut u8 as *mut c_void;
        (*response).len = len;
    }
    0
}

unsafe extern "C" fn plugin_free(ptr: *mut c_void, len: usize) {
    if !ptr.is_null() {
        drop(Box::from_raw(ptr::slice_from_raw_parts_mut(ptr as *mut u8, len)));
    }
}

fn error(message: &str) -> Vec<u8> {
    format!(r#"{{"ok":false,"error":{{"code":"plugin_error","message":"{message}"}}}}"#).into_bytes()
}

unsafe extern "C" fn plugin_call(method: *const c_char, request: *const u8, len: usize, response: *mut Buffer) -> c_int {
    if method.is_null() || response.is_null() {
        return 1;
    }
    let method = CStr::from_ptr(method).to_bytes();
    let request: &[u8] = if request.is_null() { &[] } else { std::slice::from_raw_parts(request, len) };
    match method {
        b"plugin.register" | b"plugin.reconfigure" => answer(REGISTRATION.to_vec(), response),
        b"auth.list" | b"auth.get" | b"auth.get_runtime" | b"auth.save" => answer(relay(method, request), response),
        _ => answer(error("unknown method"), response),
    }
}

/// Calls host.<method> with the request bytes; the host's envelope, copied, or an error.
unsafe fn relay(method: &[u8], request: &[u8]) -> Vec<u8> {
    let host = HOST.load(Ordering::Acquire);
    let (Some(call), Some(free)) = ((*host).call, (*host).free_buffer) else {
        return error("no host API");
    };
    let mut name = b"host.".to_vec();
    name.extend_from_slice(method);
    let name = CString::new(name).expect("no NUL in a method name");
    let mut out = Buffer { ptr: ptr::null_mut(), len: 0 };
    let rc = call((*host).host_ctx, name.as_ptr(), request.as_ptr(), request.len(), &mut out);
    let bytes = if out.ptr.is_null() { Vec::new() } else { std::slice::from_raw_parts(out.ptr as *const u8, out.len).to_vec() };
    if !out.ptr.is_null() {
        free(out.ptr, out.len);
    }
    if rc != 0 {
        return error(&format!("host call returned {rc}"));
    }
    bytes
}
