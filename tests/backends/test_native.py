"""The in-process loader against plugins compiled to fail in each way ABI.md section 1 names."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cliproxy_host import envelope as env
from cliproxy_host import errors
from cliproxy_host.backends.native import NativePlugin
from cliproxy_host.binfmt import host_target, load_problem

from ..conftest import CompilePlugin

Handler = Callable[[str, str, bytes], bytes]


def answer_ok(plugin_id: str, method: str, request: bytes) -> bytes:
    return env.ok(
        {"plugin": plugin_id, "method": method, "request": orjson.loads(request or b"{}")}
    )


@pytest.fixture
def load() -> Iterator[Callable[..., NativePlugin]]:
    loaded: list[NativePlugin] = []

    def load_(path: Path, handler: Handler = answer_ok, plugin_id: str = "tp") -> NativePlugin:
        plugin = NativePlugin(plugin_id, path, handler)
        loaded.append(plugin)
        return plugin

    yield load_
    for plugin in loaded:
        plugin.close()


def result(plugin: NativePlugin, method: str, request: Any = None) -> Any:
    data = b"" if request is None else orjson.dumps(request)
    return env.decode(plugin.call(method, data), plugin_id=plugin.plugin_id, method=method)


# -- loading ---------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.so"
    with pytest.raises(errors.PluginLoadError) as info:
        NativePlugin("nope", missing, answer_ok)
    assert info.value.code == "plugin_load_failed"
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_file_that_is_not_a_shared_library_is_refused_before_dlopen(tmp_path: Path) -> None:
    # Issue 11: said as what the file is, not as the loader's "invalid ELF header".
    fake = tmp_path / "fake.so"
    fake.write_text("#!/bin/sh\necho not a library\n")
    with pytest.raises(errors.PluginLoadError) as info:
        NativePlugin("fake", fake, answer_ok)
    assert str(fake) in str(info.value)
    assert f"cannot load {fake}: not a shared library (a script)" in str(info.value)


# -- what the file's header says, before dlopen (issue 11) ------------------------------

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the files below are built as ELF"
)
_SHARED = "build it as a shared library (-shared in C, crate-type cdylib in Rust)"


def _load_message(path: Path) -> str:
    with pytest.raises(errors.PluginLoadError) as info:
        NativePlugin("bad", path, answer_ok)
    assert info.value.code == "plugin_load_failed"
    message = info.value.message
    assert "\n" not in message
    assert "find_library" not in message
    assert "Additionally" not in message
    return message


def _elf_header(machine: int) -> bytes:
    # ELF spec: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, padding; ET_DYN, e_machine.
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    return ident + struct.pack("<HHI", 3, machine, 1) + bytes(48)


def test_a_library_built_for_this_host_passes_the_header_check(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    assert load_problem(testplugin) is None
    assert result(load(testplugin), "echo", {"ok": 1}) == {"ok": 1}


@linux_only
def test_a_library_for_another_architecture_names_both(tmp_path: Path) -> None:
    host = host_target().machine
    other, machine = ("x86-64", 62) if host == "aarch64" else ("aarch64", 183)
    path = tmp_path / "foreign.so"
    path.write_bytes(_elf_header(machine))
    assert _load_message(path) == (
        f"cannot load {path}: built for {other}, this host is {host}; build the plugin for {host}"
    )


def test_an_empty_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.so"
    path.touch()
    assert _load_message(path) == (
        f"cannot load {path}: empty file, not a shared library; copy or build the plugin again"
    )


@linux_only
@pytest.mark.parametrize(
    ("header", "os_name", "kind"),
    [
        # MH_MAGIC_64, CPU_TYPE_ARM64, subtype, MH_DYLIB
        (struct.pack("<IiiIIIII", 0xFEEDFACF, 0x0100000C, 0, 6, 0, 0, 0, 0), "macOS", "a Mach-O"),
        # DOS stub with e_lfanew = 0x40, "PE\0\0", AMD64, IMAGE_FILE_DLL | EXECUTABLE_IMAGE
        (
            b"MZ"
            + bytes(0x3A)
            + struct.pack("<I", 0x40)
            + b"PE\0\0"
            + struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, 0xF0, 0x2002),
            "Windows",
            "a PE",
        ),
    ],
    ids=["mach-o", "pe"],
)
def test_a_macos_or_windows_library_names_its_os(
    tmp_path: Path, header: bytes, os_name: str, kind: str
) -> None:
    path = tmp_path / "other-os.so"
    path.write_bytes(header)
    assert _load_message(path) == (
        f"cannot load {path}: built for {os_name} ({kind} shared library), this host is "
        "Linux; use the plugin's Linux build"
    )


@linux_only
@pytest.mark.parametrize("pie", [True, False], ids=["pie", "no-pie"])
def test_an_executable_is_not_a_shared_library(tmp_path: Path, pie: bool) -> None:
    source = tmp_path / "main.c"
    source.write_text("int main(void) { return 0; }\n")
    path = tmp_path / "main.so"
    cc = shutil.which("cc") or "cc"
    subprocess.run(
        [cc, "-pie" if pie else "-no-pie", "-fPIE" if pie else "-fno-pie", "-o", path, source],
        check=True,
        capture_output=True,
    )
    assert _load_message(path) == (
        f"cannot load {path}: not a shared library (an ELF executable); {_SHARED}"
    )


def test_a_text_file_is_not_a_shared_library(tmp_path: Path) -> None:
    path = tmp_path / "notes.so"
    path.write_text("these are not the bytes you are looking for\n")
    assert _load_message(path) == (
        f"cannot load {path}: not a shared library (a text file); {_SHARED}"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_symlink_loop_is_named(tmp_path: Path) -> None:
    path = tmp_path / "loop.so"
    path.symlink_to(path.name)
    assert _load_message(path) == (
        f"symlink loop at {path}; point the link at a plugin library file"
    )


@linux_only
def test_a_missing_dependency_keeps_only_the_loaders_reason(tmp_path: Path) -> None:
    cc = shutil.which("cc") or "cc"
    (tmp_path / "dep.c").write_text("int dep_fn(void) { return 0; }\n")
    (tmp_path / "p.c").write_text(
        "int dep_fn(void);\nint cliproxy_plugin_init(void *h, void *p) "
        "{ (void)h; (void)p; return dep_fn(); }\n"
    )
    dep = tmp_path / "libi11dep.so"
    path = tmp_path / "needsdep.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", dep, tmp_path / "dep.c"], check=True)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", path, tmp_path / "p.c", f"-L{tmp_path}", "-li11dep"],
        check=True,
    )
    dep.unlink()
    assert load_problem(path) is None  # the file itself is fine: dlopen is asked
    assert _load_message(path) == (
        f"cannot load {path}: libi11dep.so: cannot open shared object file: No such file or "
        f"directory; install the libraries it needs (ldd {path} lists them) or rebuild it "
        "for this system"
    )


def test_library_without_init_symbol_is_refused(compile_plugin: CompilePlugin) -> None:
    path = compile_plugin(TP_NO_INIT=True)
    with pytest.raises(errors.PluginLoadError, match="does not export cliproxy_plugin_init"):
        NativePlugin("noinit", path, answer_ok)


def test_init_failure_shuts_the_plugin_down_and_reports_rc(
    compile_plugin: CompilePlugin, marker: Path
) -> None:
    path = compile_plugin(TP_INIT_RC=7, TP_WITH_SHUTDOWN=True, TP_MARKER=marker)
    with pytest.raises(errors.PluginLoadError) as info:
        NativePlugin("initfail", path, answer_ok)
    assert info.value.code == "plugin_init_failed"
    assert "returned 7" in str(info.value)
    assert marker.read_text().split() == ["init", "shutdown"]


def test_wrong_abi_version_is_refused(compile_plugin: CompilePlugin, marker: Path) -> None:
    path = compile_plugin(TP_ABI_VERSION=2, TP_WITH_SHUTDOWN=True, TP_MARKER=marker)
    with pytest.raises(errors.PluginLoadError) as info:
        NativePlugin("abi2", path, answer_ok)
    assert info.value.code == "abi_version_mismatch"
    assert "ABI version 2" in str(info.value)
    assert marker.read_text().split() == ["init", "shutdown"]


@pytest.mark.parametrize(
    ("knob", "name"), [("TP_NULL_CALL", "call"), ("TP_NULL_FREE", "free_buffer")]
)
def test_null_function_pointers_are_refused(
    compile_plugin: CompilePlugin, knob: str, name: str
) -> None:
    path = compile_plugin(**{knob: True})
    with pytest.raises(errors.PluginLoadError) as info:
        NativePlugin("nullfn", path, answer_ok)
    assert info.value.code == "plugin_init_failed"
    assert f"left {name} NULL" in str(info.value)


def test_null_shutdown_is_allowed(compile_plugin: CompilePlugin) -> None:
    plugin = NativePlugin("noshutdown", compile_plugin(), answer_ok)
    assert result(plugin, "echo", {"a": 1}) == {"a": 1}
    plugin.close()
    assert plugin.closed


# -- calling ---------------------------------------------------------------------------


def test_nonzero_return_with_error_envelope_uses_the_envelope(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    plugin = load(testplugin)
    with pytest.raises(errors.PluginError) as info:
        plugin.call("rc_with_envelope", b"{}")
    err = info.value
    assert (err.code, err.message, err.retryable, err.http_status) == (
        "quota_exceeded",
        "try later",
        True,
        429,
    )
    assert (err.plugin_id, err.method) == ("tp", "rc_with_envelope")


def test_nonzero_return_without_envelope_reports_rc_and_text(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    plugin = load(testplugin)
    with pytest.raises(errors.PluginError) as info:
        plugin.call("rc_without_envelope", b"{}")
    assert info.value.code == "plugin_call_failed"
    assert info.value.message == "plugin call rc_without_envelope returned 4: boom: not an envelope"
    with pytest.raises(errors.PluginError, match="returned 5: \\(no response\\)"):
        plugin.call("rc_no_response", b"{}")


@pytest.mark.parametrize(
    ("method", "fragment"),
    [("not_json", "not JSON"), ("not_utf8", "not valid UTF-8"), ("empty", "empty response")],
)
def test_malformed_responses_are_typed_errors(
    testplugin: Path, load: Callable[..., NativePlugin], method: str, fragment: str
) -> None:
    plugin = load(testplugin)
    with pytest.raises(errors.PluginResponseError, match=fragment):
        result(plugin, method, {})


def test_null_response_pointer_with_length_is_refused(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    plugin = load(testplugin)
    with pytest.raises(errors.PluginResponseError, match="pointer is NULL but its length is 7"):
        plugin.call("null_with_len", b"{}")


def test_unknown_method_is_an_error_envelope(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    plugin = load(testplugin)
    with pytest.raises(errors.PluginError) as info:
        result(plugin, "no.such.method", {})
    assert info.value.code == "unknown_method"


def test_empty_request_is_allowed(testplugin: Path, load: Callable[..., NativePlugin]) -> None:
    assert result(load(testplugin), "echo") == {}


def test_every_response_buffer_is_freed_exactly_once(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    plugin = load(testplugin)
    for method in ("echo", "not_json", "rc_with_envelope", "rc_without_envelope", "big", "fail"):
        with contextlib.suppress(errors.PluginError):
            result(plugin, method, {"bytes": 1000})
    stats = result(plugin, "stats", {})
    # stats reads its counters before it allocates its own answer
    assert stats["allocs"] == stats["frees"] == 6
    assert stats["bad_frees"] == 0


def test_large_response_is_copied_whole(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    data = result(load(testplugin), "big", {"bytes": 8 * 1024 * 1024})["data"]
    assert len(data) == 8 * 1024 * 1024
    assert set(data) == {"a"}


def test_the_gil_is_released_during_plugin_calls(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    plugin = load(testplugin)
    window: list[float] = []

    def sleeper() -> None:
        window.append(time.monotonic())
        result(plugin, "sleep", {"ms": 600})
        window.append(time.monotonic())

    worker = threading.Thread(target=sleeper)
    ticks: list[float] = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.monotonic())
    worker.join()
    start, end = window
    # Python ran in this thread while the other one was inside C: only possible without the GIL.
    inside = [t for t in ticks if start + 0.1 < t < end - 0.1]
    assert inside, "no Python ran while the plugin slept: the GIL was held"


# -- host callbacks --------------------------------------------------------------------


@pytest.mark.parametrize("via", ["host", "host_thread"])
def test_plugin_calls_the_host_from_its_call_and_from_its_own_thread(
    testplugin: Path, load: Callable[..., NativePlugin], via: str
) -> None:
    seen: list[tuple[str, str, bytes, str]] = []

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        seen.append((plugin_id, method, request, threading.current_thread().name))
        return env.ok({"pong": True})

    plugin = load(testplugin, handler, plugin_id="caller")
    answer = result(plugin, via, {"method": "host.ping", "request": {"x": [1, 2]}})
    assert answer == {"pong": True}
    assert len(seen) == 1
    plugin_id, method, request, thread = seen[0]
    assert (plugin_id, method, orjson.loads(request)) == ("caller", "host.ping", {"x": [1, 2]})
    if via == "host_thread":
        assert thread != threading.current_thread().name


def test_host_callback_may_reenter_the_plugin(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    box: dict[str, NativePlugin] = {}

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        # plugin -> host -> plugin again, while the first call is still running
        return box["p"].call("echo", b'{"inner": true}')

    box["p"] = load(testplugin, handler)
    assert result(box["p"], "host", {"method": "host.any", "request": {}}) == {"inner": True}


def test_exception_in_a_host_callback_becomes_an_error_envelope(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        raise RuntimeError("callback exploded")

    plugin = load(testplugin, handler)
    with pytest.raises(errors.PluginError) as info:
        result(plugin, "host_thread", {"method": "host.log", "request": {}})
    assert info.value.code == "host_call_failed"
    assert "callback exploded" in info.value.message


def test_a_host_answer_is_handed_over_byte_for_byte(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    # NUL bytes included: the copy for the plugin must not stop at the first one
    answers = [b'{"ok":true,"result":{}}\x00after the NUL', b'{"ok":true,"result":{"a":1}}']

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        return answers[0]

    plugin = load(testplugin, handler)
    for answer in answers[:]:
        answers[0] = answer
        request = orjson.dumps({"method": "host.any", "request": {}})
        assert plugin.call("host", request) == answer


def test_a_handler_answering_no_bytes_makes_the_host_call_return_one(
    testplugin: Path, load: Callable[..., NativePlugin], caplog: pytest.LogCaptureFixture
) -> None:
    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        return "not bytes"  # type: ignore[return-value]

    plugin = load(testplugin, handler)
    with pytest.raises(errors.PluginError) as info:
        result(plugin, "host", {"method": "host.any", "request": {}})
    assert (info.value.code, info.value.message) == ("host_rc", "host call returned 1")
    assert "host callback host.any answered no bytes" in caplog.text
    assert result(plugin, "stats", {})["bad_frees"] == 0


def test_malformed_host_calls_return_one(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    plugin = load(testplugin)
    assert result(plugin, "host_bad_ctx", {}) == {"null_ctx": 1, "null_method": 1, "bogus_ctx": 1}


def test_eight_threads_call_while_the_plugin_calls_back(
    testplugin: Path, load: Callable[..., NativePlugin]
) -> None:
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def handler(plugin_id: str, method: str, request: bytes) -> bytes:
        with lock:
            counts[method] = counts.get(method, 0) + 1
        return env.ok(orjson.loads(request))

    plugin = load(testplugin, handler)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(200):
                via = "host_thread" if i % 10 == 0 else "host"
                got = result(plugin, via, {"method": "host.echo", "request": {"n": n, "i": i}})
                assert got == {"n": n, "i": i}
                assert result(plugin, "echo", {"n": n}) == {"n": n}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert counts == {"host.echo": 1600}
    stats = result(plugin, "stats", {})
    assert stats["bad_frees"] == 0


# -- shutdown --------------------------------------------------------------------------


def test_close_waits_for_calls_in_flight_then_shuts_down_in_order(
    compile_plugin: CompilePlugin, marker: Path
) -> None:
    plugin = NativePlugin("tp", compile_plugin(TP_WITH_SHUTDOWN=True, TP_MARKER=marker), answer_ok)
    answers: list[Any] = []
    worker = threading.Thread(target=lambda: answers.append(result(plugin, "sleep", {"ms": 300})))
    worker.start()
    while plugin.inflight == 0:
        time.sleep(0.001)
    plugin.close()
    worker.join()
    assert answers == [{"slept_ms": 300}]
    assert plugin.closed
    assert marker.read_text().split() == ["init", "plugin.shutdown", "shutdown"]


def test_calls_after_close_are_refused(testplugin: Path) -> None:
    plugin = NativePlugin("tp", testplugin, answer_ok)
    plugin.close()
    with pytest.raises(errors.PluginError) as info:
        plugin.call("echo", b"{}")
    assert info.value.code == "plugin_unloading"


def test_library_is_closed_by_the_last_call_that_outlives_the_drain_timeout(
    compile_plugin: CompilePlugin, marker: Path
) -> None:
    plugin = NativePlugin("tp", compile_plugin(TP_WITH_SHUTDOWN=True, TP_MARKER=marker), answer_ok)
    answers: list[Any] = []
    worker = threading.Thread(target=lambda: answers.append(result(plugin, "sleep", {"ms": 500})))
    worker.start()
    while plugin.inflight == 0:
        time.sleep(0.001)
    plugin.close(timeout=0.05)
    assert not plugin.closed
    worker.join()
    assert answers == [{"slept_ms": 500}]
    assert plugin.closed
    assert marker.read_text().split() == ["init", "plugin.shutdown", "shutdown"]


def test_a_relative_path_is_loaded_from_the_working_directory(
    testplugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rel.so").write_bytes(testplugin.read_bytes())
    monkeypatch.chdir(tmp_path)
    plugin = NativePlugin("rel", Path("rel.so"), answer_ok)
    assert result(plugin, "echo", {"r": 1}) == {"r": 1}
    plugin.close()


def test_the_worker_process_imports_no_http_client_or_config_parser() -> None:
    # The backends import the answer gate; it must not drag the rest of callbacks (httpx)
    # or the config (pydantic) into every worker a host starts.
    code = (
        "import sys, cliproxy_host.backends.isolated.worker; "
        "print(sorted(m for m in ('httpx', 'pydantic', 'ruamel') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
