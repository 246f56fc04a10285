/*
 * cliproxy_example.h - small helpers for C plugins: the examples, the test plugins, and the
 * projects `cliproxy-host new` writes (it copies this file into them).
 *
 * Header-only: every function is `static inline`, so a file that uses only some
 * of them still compiles warning-free (no "defined but not used").
 *
 *   cpx_buf            growable byte buffer for building responses
 *   cpx_base64_*       standard base64 (RFC 4648, with padding)
 *   cpx_json_*         read top-level keys of a JSON object, case-insensitively
 *   cpx_yaml_scalar    read a top-level `key: value` from YAML (not a YAML parser)
 *   cpx_ok / cpx_error / cpx_respond   envelopes and handing a response to the host
 *
 * Nothing here keeps state, so every helper is safe to call from many threads.
 */
#ifndef CLIPROXY_EXAMPLE_H
#define CLIPROXY_EXAMPLE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cliproxy_plugin.h"

#define CPX_STATIC static inline

#if defined(__GNUC__) || defined(__clang__)
#define CPX_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define CPX_PRINTF(fmt_index, first_arg)
#endif

/* ------------------------------------------------------------------------ */
/* Growable buffer                                                          */
/* ------------------------------------------------------------------------ */

/* Zero-initialise (`cpx_buf b = {0};`). Errors are sticky: after a failed
 * allocation every append is a no-op and `failed` stays set, so callers check
 * once at the end instead of after every append. data is always NUL-terminated
 * when non-NULL (handy for string functions), the NUL is not counted in len. */
typedef struct {
    char*  data;
    size_t len;
    size_t cap;
    int    failed;
} cpx_buf;

CPX_STATIC int cpx_buf_reserve(cpx_buf* b, size_t extra) {
    if (b->failed) return 0;
    if (extra > SIZE_MAX - b->len - 1) {
        b->failed = 1;
        return 0;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char* p = (char*)realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return 0;
    }
    b->data = p;
    b->cap = cap;
    return 1;
}

CPX_STATIC void cpx_buf_append(cpx_buf* b, const void* p, size_t n) {
    if (!cpx_buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

CPX_STATIC void cpx_buf_puts(cpx_buf* b, const char* s) { cpx_buf_append(b, s, strlen(s)); }

CPX_PRINTF(2, 3)
CPX_STATIC void cpx_buf_printf(cpx_buf* b, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
    } else if (cpx_buf_reserve(b, (size_t)n)) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
}

CPX_STATIC void cpx_buf_free(cpx_buf* b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

/* Appends s as a quoted JSON string. Bytes >= 0x80 pass through unchanged, so s
 * must already be UTF-8 (everything crossing the ABI is). */
CPX_STATIC void cpx_buf_json_string(cpx_buf* b, const char* s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    cpx_buf_append(b, "\"", 1);
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char* esc = NULL;
        char u[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0';
                u[4] = hex[c >> 4], u[5] = hex[c & 15], u[6] = '\0';
                esc = u;
            }
        }
        if (esc) {
            cpx_buf_append(b, s + run, i - run);
            cpx_buf_puts(b, esc);
            run = i + 1;
        }
    }
    cpx_buf_append(b, s + run, n - run);
    cpx_buf_append(b, "\"", 1);
}

CPX_STATIC void cpx_buf_json_cstring(cpx_buf* b, const char* s) {
    cpx_buf_json_string(b, s, strlen(s));
}

/* ------------------------------------------------------------------------ */
/* Base64                                                                   */
/* ------------------------------------------------------------------------ */

/* Appends the base64 of data (no quotes). */
CPX_STATIC void cpx_buf_base64(cpx_buf* b, const uint8_t* data, size_t n) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (n > (SIZE_MAX / 4) * 3 - 3) {
        b->failed = 1;
        return;
    }
    size_t out = (n + 2) / 3 * 4;
    if (!cpx_buf_reserve(b, out)) return;
    char* o = b->data + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *o++ = abc[v >> 18 & 63];
        *o++ = abc[v >> 12 & 63];
        *o++ = abc[v >> 6 & 63];
        *o++ = abc[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < n) v |= (uint32_t)data[i + 1] << 8;
        *o++ = abc[v >> 18 & 63];
        *o++ = abc[v >> 12 & 63];
        *o++ = i + 1 < n ? abc[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    b->len += out;
    b->data[b->len] = '\0';
}

/* Returns a malloc'd NUL-terminated base64 string (length in *out_len), NULL on OOM. */
CPX_STATIC char* cpx_base64_encode(const uint8_t* data, size_t n, size_t* out_len) {
    cpx_buf b = {0};
    cpx_buf_base64(&b, data, n);
    if (!b.failed && !b.data) cpx_buf_append(&b, "", 0);
    if (b.failed) {
        cpx_buf_free(&b);
        return NULL;
    }
    if (out_len) *out_len = b.len;
    return b.data;
}

CPX_STATIC int cpx_base64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes standard base64. Padding may be omitted and CR/LF are skipped (as Go's
 * decoder does); anything else outside the alphabet is an error. Returns a
 * malloc'd buffer with an extra NUL after the data (not counted in *out_len), or
 * NULL on invalid input or OOM. */
CPX_STATIC uint8_t* cpx_base64_decode(const char* s, size_t n, size_t* out_len) {
    uint8_t* out = (uint8_t*)malloc(n / 4 * 3 + 4);
    if (!out) return NULL;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0, count = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' || c == '\n') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = cpx_base64_value(c);
        if (v < 0 || pad) goto invalid; /* data after padding */
        acc = (acc << 6 | (uint32_t)v) & 0xFFFFFF;
        bits += 6;
        count++;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (count % 4 == 1 || pad > 2 || (pad && (count + pad) % 4 != 0)) goto invalid;
    out[o] = 0;
    if (out_len) *out_len = o;
    return out;
invalid:
    free(out);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* JSON reading                                                             */
/* ------------------------------------------------------------------------ */

/* A slice of the request: ptr is NOT NUL-terminated. */
typedef struct {
    const char* ptr;
    size_t      len;
} cpx_span;

CPX_STATIC const char* cpx_json_ws(const char* p, const char* end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* p points at '"'; returns just past the closing quote, or NULL. */
CPX_STATIC const char* cpx_json_skip_string(const char* p, const char* end) {
    if (p >= end || *p != '"') return NULL;
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\\') {
            if (++p >= end) return NULL;
        } else if (c == '"') {
            return p + 1;
        } else if (c < 0x20) {
            return NULL;
        }
    }
    return NULL;
}

/* Returns just past the value starting at p (after whitespace), or NULL.
 * A value skipper, not a validator: objects and arrays are skipped by counting
 * brackets outside strings, iteratively so that deep nesting cannot exhaust the
 * stack; scalars must look like a number or true/false/null. */
CPX_STATIC const char* cpx_json_skip_value(const char* p, const char* end) {
    p = cpx_json_ws(p, end);
    if (p >= end) return NULL;
    if (*p == '"') return cpx_json_skip_string(p, end);
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                p = cpx_json_skip_string(p, end);
                if (!p) return NULL;
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    static const char* const words[] = {"true", "false", "null"};
    for (size_t i = 0; i < 3; i++) {
        size_t wl = strlen(words[i]);
        if ((size_t)(end - p) >= wl && memcmp(p, words[i], wl) == 0) return p + wl;
    }
    if (*p == '-') p++;
    const char* digits = p;
    while (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' ||
                       *p == '+' || *p == '-'))
        p++;
    if (p == digits || !(*digits >= '0' && *digits <= '9')) return NULL;
    return p;
}

CPX_STATIC int cpx_hex4(const char* p, uint32_t* out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* Unescapes the inside of a JSON string (s..s+n, without the quotes) into a
 * malloc'd NUL-terminated UTF-8 string; *out_len excludes the NUL (the text may
 * itself contain NULs from \u0000). NULL on a bad escape or OOM. The output is
 * never longer than the input, which bounds the allocation. */
CPX_STATIC char* cpx_json_unescape(const char* s, size_t n, size_t* out_len) {
    char* out = (char*)malloc(n + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c != '\\') {
            out[o++] = c;
            continue;
        }
        if (++i >= n) goto invalid;
        switch (s[i]) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (n - i < 5 || !cpx_hex4(s + i + 1, &cp)) goto invalid;
            i += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && n - i >= 7 && s[i + 1] == '\\' &&
                s[i + 2] == 'u' && cpx_hex4(s + i + 3, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            } else if (cp >= 0xD800 && cp < 0xE000) {
                cp = 0xFFFD; /* lone surrogate: replace, as Go does */
            }
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                out[o++] = (char)(0xC0 | cp >> 6);
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[o++] = (char)(0xE0 | cp >> 12);
                out[o++] = (char)(0x80 | (cp >> 6 & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[o++] = (char)(0xF0 | cp >> 18);
                out[o++] = (char)(0x80 | (cp >> 12 & 0x3F));
                out[o++] = (char)(0x80 | (cp >> 6 & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: goto invalid;
        }
    }
    out[o] = '\0';
    if (out_len) *out_len = o;
    return out;
invalid:
    free(out);
    return NULL;
}

CPX_STATIC int cpx_ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* 2: exact match, 1: ASCII case-insensitive match, 0: no match. raw is the key
 * as written (inside the quotes, possibly with escapes). */
CPX_STATIC int cpx_json_key_match(const char* raw, size_t raw_len, const char* key, size_t klen) {
    char* unescaped = NULL;
    if (memchr(raw, '\\', raw_len)) {
        unescaped = cpx_json_unescape(raw, raw_len, &raw_len);
        if (!unescaped) return 0;
        raw = unescaped;
    }
    int match = 0;
    if (raw_len == klen) {
        match = 2;
        for (size_t i = 0; i < klen && match; i++) {
            if (raw[i] == key[i]) continue;
            match = cpx_ascii_lower((unsigned char)raw[i]) == cpx_ascii_lower((unsigned char)key[i])
                        ? 1
                        : 0;
        }
    }
    free(unescaped);
    return match;
}

/* Finds the top-level key of the object in json..json+len; the key is matched
 * case-insensitively (Go's encoding/json does the same, and plugins built for
 * the Go host rely on it). An exact-case match wins, otherwise the first
 * case-insensitive one. *out is the raw value: a string keeps its quotes.
 * Returns 1 found, 0 absent, -1 when json is not a well-formed object. */
CPX_STATIC int cpx_json_find(const char* json, size_t len, const char* key, cpx_span* out) {
    if (!json) return -1;
    const char* end = json + len;
    const char* p = cpx_json_ws(json, end);
    size_t klen = strlen(key);
    int best = 0;
    if (p >= end || *p != '{') return -1;
    p = cpx_json_ws(p + 1, end);
    if (p < end && *p == '}') {
        p = cpx_json_ws(p + 1, end);
        return p == end ? 0 : -1;
    }
    for (;;) {
        const char* ks = p;
        p = cpx_json_skip_string(p, end);
        if (!p) return -1;
        const char* ke = p - 1; /* the key's closing quote */
        p = cpx_json_ws(p, end);
        if (p >= end || *p != ':') return -1;
        const char* vs = cpx_json_ws(p + 1, end);
        p = cpx_json_skip_value(vs, end);
        if (!p) return -1;
        int m = cpx_json_key_match(ks + 1, (size_t)(ke - (ks + 1)), key, klen);
        if (m > best) {
            best = m;
            if (out) {
                out->ptr = vs;
                out->len = (size_t)(p - vs);
            }
        }
        p = cpx_json_ws(p, end);
        if (p < end && *p == ',') {
            p = cpx_json_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') break;
        return -1;
    }
    p = cpx_json_ws(p + 1, end);
    if (p != end) return -1;
    return best ? 1 : 0;
}

CPX_STATIC int cpx_span_is(cpx_span v, const char* literal) {
    size_t n = strlen(literal);
    return v.len == n && memcmp(v.ptr, literal, n) == 0;
}

CPX_STATIC int cpx_span_is_string(cpx_span v) {
    return v.len >= 2 && v.ptr[0] == '"' && v.ptr[v.len - 1] == '"';
}

/* The unescaped text of a string value (malloc'd, NUL-terminated), or NULL when
 * v is not a string or on a bad escape / OOM. */
CPX_STATIC char* cpx_span_string(cpx_span v, size_t* out_len) {
    if (!cpx_span_is_string(v)) return NULL;
    return cpx_json_unescape(v.ptr + 1, v.len - 2, out_len);
}

/* Non-negative integer value (no fraction or exponent). 1 on success. */
CPX_STATIC int cpx_span_uint(cpx_span v, unsigned long long* out) {
    if (v.len == 0 || v.len > 20) return 0;
    unsigned long long n = 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.ptr[i];
        if (c < '0' || c > '9') return 0;
        unsigned d = (unsigned)(c - '0');
        if (n > (~0ULL - d) / 10) return 0;
        n = n * 10 + d;
    }
    *out = n;
    return 1;
}

/* Convenience: the unescaped string value of a top-level key, or NULL when the
 * key is absent, null, not a string, or the request is not an object. */
CPX_STATIC char* cpx_json_get_string(const char* json, size_t len, const char* key,
                                     size_t* out_len) {
    cpx_span v;
    if (cpx_json_find(json, len, key, &v) != 1) return NULL;
    return cpx_span_string(v, out_len);
}

/* Convenience: a top-level non-negative integer; dflt when absent or not one. */
CPX_STATIC unsigned long long cpx_json_get_uint(const char* json, size_t len, const char* key,
                                                unsigned long long dflt) {
    cpx_span v;
    unsigned long long n;
    if (cpx_json_find(json, len, key, &v) != 1 || !cpx_span_uint(v, &n)) return dflt;
    return n;
}

/* ------------------------------------------------------------------------ */
/* YAML                                                                     */
/* ------------------------------------------------------------------------ */

/* Reads a top-level scalar `key: value` from YAML text and returns it as a
 * malloc'd string, or NULL when the key is absent, null (~, null, empty) or
 * not a one-line scalar. This is NOT a YAML parser: it handles plain,
 * 'single-quoted' and "double-quoted" values on the key's own line (quotes and
 * surrounding whitespace stripped, a trailing " # comment" dropped from plain
 * values), which is what the host writes for simple config values. Enough for
 * the examples; a real plugin should use a YAML library. */
CPX_STATIC char* cpx_yaml_scalar(const char* text, size_t len, const char* key) {
    if (!text) return NULL;
    const char* end = text + len;
    size_t klen = strlen(key);
    for (const char* line = text; line < end;) {
        const char* eol = (const char*)memchr(line, '\n', (size_t)(end - line));
        if (!eol) eol = end;
        const char* next = eol < end ? eol + 1 : end;
        const char* le = eol;
        if (le > line && le[-1] == '\r') le--;
        const char* p = line;
        line = next;
        /* indented lines belong to nested mappings; '#' comments; '-' lists or '---' */
        if (p >= le || *p == ' ' || *p == '\t' || *p == '#' || *p == '-') continue;

        const char* ks = p;
        const char* ke;
        if (*p == '"' || *p == '\'') {
            char q = *p;
            ks = ++p;
            while (p < le && *p != q) p++;
            if (p >= le) continue;
            ke = p++;
        } else {
            while (p < le && !(*p == ':' && (p + 1 == le || p[1] == ' ' || p[1] == '\t'))) p++;
            ke = p;
            while (ke > ks && (ke[-1] == ' ' || ke[-1] == '\t')) ke--;
        }
        while (p < le && (*p == ' ' || *p == '\t')) p++;
        if (p >= le || *p != ':') continue;
        if ((size_t)(ke - ks) != klen || memcmp(ks, key, klen) != 0) continue;

        p++;
        while (p < le && (*p == ' ' || *p == '\t')) p++;
        cpx_buf v = {0};
        if (p < le && (*p == '"' || *p == '\'')) {
            char q = *p++;
            for (; p < le; p++) {
                if (q == '\'' && *p == '\'') {
                    if (p + 1 < le && p[1] == '\'') { /* '' is an escaped quote */
                        cpx_buf_append(&v, "'", 1);
                        p++;
                        continue;
                    }
                    break;
                }
                if (q == '"' && *p == '"') break;
                if (q == '"' && *p == '\\' && p + 1 < le) {
                    char c = *++p;
                    char r = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
                    cpx_buf_append(&v, &r, 1);
                    continue;
                }
                cpx_buf_append(&v, p, 1);
            }
            cpx_buf_append(&v, "", 0); /* "" is a value, not null */
        } else {
            const char* ve = p;
            while (ve < le && !(*ve == '#' && ve > p && (ve[-1] == ' ' || ve[-1] == '\t'))) ve++;
            while (ve > p && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            size_t n = (size_t)(ve - p);
            /* empty (a nested mapping follows), null, or a block scalar: not handled */
            if (n == 0 || (n == 1 && *p == '~') || (n == 4 && memcmp(p, "null", 4) == 0) ||
                *p == '|' || *p == '>')
                return NULL;
            cpx_buf_append(&v, p, n);
        }
        if (v.failed) {
            cpx_buf_free(&v);
            return NULL;
        }
        return v.data;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Envelopes and responses                                                  */
/* ------------------------------------------------------------------------ */

/* cpx_ok_begin(b); <append the result value>; cpx_ok_end(b); */
CPX_STATIC void cpx_ok_begin(cpx_buf* b) { cpx_buf_puts(b, "{\"ok\":true,\"result\":"); }
CPX_STATIC void cpx_ok_end(cpx_buf* b) { cpx_buf_puts(b, "}"); }

/* Replaces whatever b holds with an error envelope. */
CPX_STATIC void cpx_error(cpx_buf* b, const char* code, const char* message) {
    if (!b->failed) b->len = 0;
    cpx_buf_puts(b, "{\"ok\":false,\"error\":{\"code\":");
    cpx_buf_json_cstring(b, code);
    cpx_buf_puts(b, ",\"message\":");
    cpx_buf_json_cstring(b, message);
    cpx_buf_puts(b, "}}");
}

CPX_STATIC void cpx_unknown_method(cpx_buf* b, const char* method) {
    cpx_buf msg = {0};
    cpx_buf_puts(&msg, "unknown method: ");
    cpx_buf_puts(&msg, method);
    if (msg.failed) {
        b->failed = 1;
    } else {
        cpx_error(b, "unknown_method", msg.data);
    }
    cpx_buf_free(&msg);
}

/* Hands b's bytes to the host as the response; the host releases them through
 * the plugin's free_buffer, which for plugins using this is plain free(). On an
 * earlier allocation failure there is nothing sensible to answer: return 1 with
 * no response, which the host reports as a failed call. */
CPX_STATIC int cpx_respond(cpx_buf* b, cliproxy_buffer* response, int rc) {
    if (b->failed || !b->data) {
        cpx_buf_free(b);
        return 1;
    }
    response->ptr = b->data;
    response->len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return rc;
}

#endif /* CLIPROXY_EXAMPLE_H */
