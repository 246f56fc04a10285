;; The Extism peer of bench_plugin.c's echo: answers its input back, byte for byte.
;; Compiled at bench time with wasmtime.wat2wasm (bench/baselines/extism_echo.py), so no
;; wasm toolchain is needed. Imports are Extism's kernel functions (extism:host/env).
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "echo") (result i32)
    (local $n i64) (local $offset i64) (local $i i64)
    (local.set $n (call $input_length))
    (local.set $offset (call $alloc (local.get $n)))
    (block $done
      (loop $copy
        (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
        (call $store_u8
          (i64.add (local.get $offset) (local.get $i))
          (call $input_load_u8 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $copy)))
    (call $output_set (local.get $offset) (local.get $n))
    (i32.const 0)))
