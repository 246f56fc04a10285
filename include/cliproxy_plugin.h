/*
 * cliproxy_plugin.h - the CLIProxy plugin ABI, version 1.
 *
 * The single source of truth for the C types shared by a plugin and its host;
 * docs/ABI.md in the cliproxy-host repository gives the rules behind them
 * (load order, envelopes, registration, host callbacks).
 * cliproxy-host (Python) builds its cffi declarations from the region between
 * the CLIPROXY_CDEF markers below, so keep that region plain C: no macros other
 * than CLIPROXY_EXPORT, no preprocessor lines.
 *
 * Memory ownership, in one place:
 *   - Request bytes belong to the caller and are valid only during the call.
 *   - A response buffer belongs to the side that allocated it and is released
 *     through that side's free_buffer, exactly once, by the other side:
 *       host -> plugin call: the plugin allocates the response, the host copies
 *                            it and then calls plugin->free_buffer(ptr, len);
 *       plugin -> host call: the host allocates the response with C malloc,
 *                            the plugin calls host->free_buffer(ptr, len).
 *   - Every body is UTF-8 JSON (an "envelope", see docs/ABI.md section 2).
 */
#ifndef CLIPROXY_PLUGIN_H
#define CLIPROXY_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define CLIPROXY_ABI_VERSION 1

#if defined(_WIN32) || defined(__CYGWIN__)
#define CLIPROXY_EXPORT __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#define CLIPROXY_EXPORT __attribute__((visibility("default")))
#else
#define CLIPROXY_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* CLIPROXY_CDEF_BEGIN */

/* A byte buffer handed across the boundary. Zeroed by the caller before a call. */
typedef struct {
    void*  ptr;
    size_t len;
} cliproxy_buffer;

/* Filled by the host before cliproxy_plugin_init; the plugin may keep the pointer
 * until it has been shut down. call() may be used from any thread, including
 * while the host is inside a call to this plugin. */
typedef struct {
    uint32_t abi_version;  /* the host sets CLIPROXY_ABI_VERSION */
    void*    host_ctx;     /* opaque: identifies the calling plugin to the host */
    /* Returns 0 with an envelope in *response (malloc'd by the host, release it
     * with free_buffer), or 1 when the call itself is malformed (NULL host_ctx or
     * method, unknown host_ctx). */
    int  (*call)(void* host_ctx, const char* method,
                 const uint8_t* request, size_t request_len,
                 cliproxy_buffer* response);
    void (*free_buffer)(void* ptr, size_t len);
} cliproxy_host_api;

/* Filled by the plugin inside cliproxy_plugin_init (the host passes it zeroed). */
typedef struct {
    uint32_t abi_version;  /* the plugin sets CLIPROXY_ABI_VERSION */
    /* Returns 0 with an envelope in *response (allocated by the plugin); non-zero
     * on failure, optionally with an error envelope in *response. request may be
     * NULL when request_len is 0. Must be thread-safe. */
    int  (*call)(const char* method, const uint8_t* request, size_t request_len,
                 cliproxy_buffer* response);
    /* Releases a response buffer that call() allocated. */
    void (*free_buffer)(void* ptr, size_t len);
    /* Called once before the library is closed; may be NULL. */
    void (*shutdown)(void);
} cliproxy_plugin_api;

/* The one exported symbol. Returns 0 on success. */
CLIPROXY_EXPORT int cliproxy_plugin_init(const cliproxy_host_api* host,
                                         cliproxy_plugin_api* plugin);

/* CLIPROXY_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* CLIPROXY_PLUGIN_H */
