//! The C types of `include/cliproxy_plugin.h`, field for field and in the same order.
//!
//! The header is the source of truth; these must stay layout-compatible with it
//! (`#[repr(C)]`, C integer types, nullable function pointers as `Option<fn>`).

use std::ffi::{c_char, c_int, c_void};

/// The ABI version this plugin speaks (`CLIPROXY_ABI_VERSION`).
pub const ABI_VERSION: u32 = 1;

/// `cliproxy_buffer`: a byte buffer handed across the boundary.
#[repr(C)]
#[derive(Debug)]
pub struct CliproxyBuffer {
    pub ptr: *mut c_void,
    pub len: usize,
}

/// `int (*call)(void* host_ctx, const char* method, const uint8_t* request,
///              size_t request_len, cliproxy_buffer* response)`
pub type HostCallFn = unsafe extern "C" fn(
    host_ctx: *mut c_void,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    response: *mut CliproxyBuffer,
) -> c_int;

/// `void (*free_buffer)(void* ptr, size_t len)`, used by both sides.
pub type FreeBufferFn = unsafe extern "C" fn(ptr: *mut c_void, len: usize);

/// `int (*call)(const char* method, const uint8_t* request, size_t request_len,
///              cliproxy_buffer* response)`
pub type PluginCallFn = unsafe extern "C" fn(
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    response: *mut CliproxyBuffer,
) -> c_int;

/// `void (*shutdown)(void)`
pub type ShutdownFn = unsafe extern "C" fn();

/// `cliproxy_host_api`: filled by the host; it stays valid until this plugin is shut down.
#[repr(C)]
pub struct CliproxyHostApi {
    pub abi_version: u32,
    pub host_ctx: *mut c_void,
    pub call: Option<HostCallFn>,
    pub free_buffer: Option<FreeBufferFn>,
}

/// `cliproxy_plugin_api`: zeroed by the host, filled by `cliproxy_plugin_init`.
#[repr(C)]
pub struct CliproxyPluginApi {
    pub abi_version: u32,
    pub call: Option<PluginCallFn>,
    pub free_buffer: Option<FreeBufferFn>,
    pub shutdown: Option<ShutdownFn>,
}
