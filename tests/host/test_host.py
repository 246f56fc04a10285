"""PluginHost end to end: real plugin files, a real YAML config, loading and dispatch."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cliproxy_host import errors
from cliproxy_host.config.schema import HostConfig
from cliproxy_host.host.facade import NOT_HANDLED, BroadcastResult, PluginHost

from ..conftest import CompilePlugin, HostFactory


@pytest.fixture
def hosts() -> Iterator[list[PluginHost]]:
    made: list[PluginHost] = []
    yield made
    for host in made:
        host.close()


def start(factory: HostFactory, hosts: list[PluginHost], **config: Any) -> PluginHost:
    factory.write_config(**config)
    host = PluginHost.from_config(factory.config_path)
    hosts.append(host)
    return host


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def registration_file(tmp_path: Path, name: str, capabilities: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "metadata": {
                    "Name": name,
                    "Version": "0.1.0",
                    "Author": "tests",
                    "GitHubRepository": "https://example.invalid/x",
                },
                "capabilities": capabilities,
            }
        )
    )
    return path


# -- the examples ----------------------------------------------------------------------


def test_c_and_rust_examples_register_in_priority_order(
    examples: dict[str, Path], host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    for pid, lib in examples.items():
        host_factory.add(pid, lib)
    host = start(
        host_factory,
        hosts,
        configs={
            "simple-c": {"enabled": True, "priority": 10, "mode": "fast"},
            "http-c": {"enabled": True, "priority": 10, "base_url": "http://127.0.0.1:1/"},
            "simple-rust": {"enabled": True, "priority": 20},
        },
    )
    infos = host.plugins()
    assert [i.id for i in infos] == ["simple-rust", "http-c", "simple-c"]
    assert all(i.registered and i.error is None for i in infos), infos
    assert infos[0].metadata is not None
    assert infos[0].metadata["Name"] == "simple-rust"
    assert infos[2].capabilities["request_translator"] is True
    assert host.dispatch("executor.identifier", {}) == {"identifier": "simple-rust"}


def test_simple_c_answers_by_its_config_and_follows_reconfigure(
    examples: dict[str, Path], host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host_factory.add("simple-c", examples["simple-c"])
    host = start(host_factory, hosts, configs={"simple-c": {"enabled": True, "mode": "safe"}})
    request = {"Model": "m1", "Payload": b64('{"q": 1}')}
    out = host.call("simple-c", "executor.execute", request)
    assert json.loads(unb64(out["Payload"]))["mode"] == "safe"

    host_factory.write_config(configs={"simple-c": {"enabled": True, "mode": "fast"}})
    host.apply(HostConfig.load(host_factory.config_path))
    out = host.call("simple-c", "executor.execute", request)
    assert json.loads(unb64(out["Payload"])) == {
        "plugin": "simple-c",
        "mode": "fast",
        "model": "m1",
        "payload_bytes": 8,
    }


def test_rust_example_transforms_by_mode(
    examples: dict[str, Path], host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host_factory.add("simple-rust", examples["simple-rust"])
    host = start(host_factory, hosts, configs={"simple-rust": {"enabled": True, "mode": "lower"}})
    out = host.call("simple-rust", "request.normalize", {"Body": b64("HeLLo")})
    assert unb64(out["Body"]) == "hello"
    merged = host.dispatch("request.normalize", {"Body": b64("ABC"), "Model": "m"})
    assert unb64(merged["Body"]) == "abc"
    assert merged["Model"] == "m"


# -- configuration ---------------------------------------------------------------------


def test_no_plugin_loads_while_plugins_are_off(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host_factory.add("tp", testplugin)
    host = start(host_factory, hosts, configs={"tp": {"enabled": True}}, enabled=False)
    assert [(i.id, i.registered) for i in host.plugins()] == [("tp", False)]
    with pytest.raises(errors.PluginError, match="plugins are off") as info:
        host.call("tp", "echo", {})
    assert info.value.code == "plugin_not_loaded"


def test_a_symlink_loop_is_listed_with_its_error(
    host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    # Issue 11: it was listed with error None, as if it were merely not there.
    loop = host_factory.arch_dir / "loop.so"
    loop.symlink_to(loop.name)
    host = start(host_factory, hosts, configs={"loop": {"enabled": True}})
    [info] = host.plugins()
    assert (info.id, info.registered) == ("loop", False)
    assert info.error == f"symlink loop at {loop}; point the link at a plugin library file"
    with pytest.raises(errors.PluginNotLoaded, match="symlink loop at"):
        host.call("loop", "echo", {})


def test_a_plugin_loads_only_when_its_config_enables_it(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host_factory.add("tp", testplugin)
    host = start(host_factory, hosts, configs={})
    info = host.plugins()[0]
    assert (info.id, info.configured, info.enabled, info.registered) == ("tp", False, False, False)
    with pytest.raises(errors.PluginError, match=r"plugins\.configs\.tp\.enabled: true"):
        host.call("tp", "echo", {})


def test_unknown_plugin_id_is_not_found(host_factory: HostFactory, hosts: list[PluginHost]) -> None:
    host = start(host_factory, hosts, configs={})
    with pytest.raises(errors.PluginError) as info:
        host.call("ghost", "echo", {})
    assert info.value.code == "plugin_not_found"


def test_register_receives_config_yaml_and_schema_version(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host_factory.add("tp", testplugin)
    host = start(host_factory, hosts, configs={"tp": {"enabled": True, "color": "blue"}})
    got = host.call("tp", "last_config", {})
    assert base64.b64decode(got["config_yaml"]) == host.config.config_yaml("tp")
    assert b"color: blue" in base64.b64decode(got["config_yaml"])
    assert (got["register_calls"], got["reconfigure_calls"]) == (1, 0)


def test_unchanged_config_does_not_reconfigure_and_changed_one_does(
    testplugin: Path, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host_factory.add("tp", testplugin)
    host = start(host_factory, hosts, configs={"tp": {"enabled": True, "color": "blue"}})
    host.apply(HostConfig.load(host_factory.config_path))
    assert host.call("tp", "last_config", {})["reconfigure_calls"] == 0
    host_factory.write_config(configs={"tp": {"enabled": True, "color": "red"}})
    host.apply(HostConfig.load(host_factory.config_path))
    got = host.call("tp", "last_config", {})
    assert got["reconfigure_calls"] == 1
    assert b"color: red" in base64.b64decode(got["config_yaml"])


def test_disabling_a_plugin_unloads_it(
    compile_plugin: CompilePlugin,
    marker: Path,
    host_factory: HostFactory,
    hosts: list[PluginHost],
) -> None:
    host_factory.add("tp", compile_plugin(TP_WITH_SHUTDOWN=True, TP_MARKER=marker))
    host = start(host_factory, hosts, configs={"tp": {"enabled": True}})
    host_factory.write_config(configs={"tp": {"enabled": False}})
    host.apply(HostConfig.load(host_factory.config_path))
    assert not host.plugins()[0].registered
    assert marker.read_text().split() == ["init", "register", "plugin.shutdown", "shutdown"]


def test_a_higher_version_file_replaces_the_loaded_one(
    compile_plugin: CompilePlugin, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host_factory.add("tp", compile_plugin(TP_NAME="old"), version="1.0.0")
    host = start(host_factory, hosts, configs={"tp": {"enabled": True}})
    assert host.call("tp", "executor.identifier", {}) == {"identifier": "old"}
    host_factory.add("tp", compile_plugin(TP_NAME="new"), version="1.10.0")
    host.apply()
    assert host.call("tp", "executor.identifier", {}) == {"identifier": "new"}
    assert host.plugins()[0].version == "1.10.0"


def test_a_pinned_version_wins_over_a_higher_one(
    compile_plugin: CompilePlugin, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host_factory.add("tp", compile_plugin(TP_NAME="one"), version="1.0.0")
    host_factory.add("tp", compile_plugin(TP_NAME="two"), version="2.0.0")
    host = start(
        host_factory, hosts, configs={"tp": {"enabled": True, "store": {"version": "v1.0.0"}}}
    )
    assert host.call("tp", "executor.identifier", {}) == {"identifier": "one"}


# -- registration failures -------------------------------------------------------------


def test_invalid_registration_is_not_loaded_and_its_reason_is_listed(
    compile_plugin: CompilePlugin,
    tmp_path: Path,
    host_factory: HostFactory,
    hosts: list[PluginHost],
) -> None:
    reg = registration_file(tmp_path, "nocaps", {"executor": False})
    host_factory.add("nocaps", compile_plugin(TP_REGISTRATION_FILE=reg))
    host = start(host_factory, hosts, configs={"nocaps": {"enabled": True}})
    info = host.plugins()[0]
    assert not info.registered
    assert info.error is not None
    assert "no capability flag" in info.error
    with pytest.raises(errors.PluginError, match="no capability flag"):
        host.call("nocaps", "echo", {})


def test_registration_timeout_is_reported_and_other_plugins_still_load(
    compile_plugin: CompilePlugin,
    testplugin: Path,
    host_factory: HostFactory,
    hosts: list[PluginHost],
) -> None:
    host_factory.add("slow", compile_plugin(TP_REGISTER_SLEEP_MS=2000))
    host_factory.add("quick", testplugin)
    host_factory.write_config(configs={"slow": {"enabled": True}, "quick": {"enabled": True}})
    text = host_factory.config_path.read_text().replace(
        "plugins:\n", "plugins:\n  registration-timeout-seconds: 0.2\n", 1
    )
    host_factory.config_path.write_text(text)
    host = PluginHost.from_config(host_factory.config_path)
    hosts.append(host)
    infos = {i.id: i for i in host.plugins()}
    assert infos["quick"].registered
    assert not infos["slow"].registered
    assert infos["slow"].error is not None
    assert "within 0.2s" in infos["slow"].error


# -- dispatch --------------------------------------------------------------------------


@pytest.fixture
def two_plugins(
    compile_plugin: CompilePlugin, host_factory: HostFactory, hosts: list[PluginHost]
) -> PluginHost:
    host_factory.add("tp-a", compile_plugin(TP_NAME="a"))
    host_factory.add("tp-b", compile_plugin(TP_NAME="b"))
    return start(
        host_factory,
        hosts,
        configs={
            "tp-a": {"enabled": True, "priority": 1},
            "tp-b": {"enabled": True, "priority": 5},
        },
    )


def test_first_mode_answers_from_the_highest_priority_plugin(two_plugins: PluginHost) -> None:
    assert two_plugins.dispatch("executor.identifier", {}) == {"identifier": "b"}


def test_native_handlers_run_before_plugins(two_plugins: PluginHost) -> None:
    two_plugins.register_native("executor.identifier", "app", lambda req: {"identifier": "app"})
    assert two_plugins.dispatch("executor.identifier", {}) == {"identifier": "app"}


def test_a_native_handler_that_declines_lets_plugins_answer(two_plugins: PluginHost) -> None:
    two_plugins.register_native("executor.identifier", "app", lambda req: NOT_HANDLED)
    assert two_plugins.dispatch("executor.identifier", {}) == {"identifier": "b"}


def test_chain_feeds_each_output_to_the_next_stage(two_plugins: PluginHost) -> None:
    two_plugins.register_native(
        "request.normalize",
        "app",
        lambda req: {"Body": b64(base64.b64decode(req["Body"]).decode() + "|app")},
    )
    out = two_plugins.dispatch("request.normalize", {"Body": b64("x"), "Model": "m"})
    assert unb64(out["Body"]) == "x|app|b|a"
    assert out["Model"] == "m"


def test_broadcast_reaches_every_observer(two_plugins: PluginHost) -> None:
    seen: list[Any] = []
    two_plugins.register_native("usage.handle", "app", seen.append)
    results = two_plugins.dispatch("usage.handle", {"Model": "m"})
    assert [r.name for r in results] == ["app", "tp-b", "tp-a"]
    assert all(r.error is None for r in results)
    assert seen == [{"Model": "m"}]
    assert two_plugins.call("tp-a", "usage_count", {}) == {"count": 1}


def test_an_observer_that_fails_does_not_stop_the_rest(two_plugins: PluginHost) -> None:
    def boom(request: Any) -> Any:
        raise RuntimeError("observer broke")

    two_plugins.register_native("usage.handle", "app", boom)
    results = two_plugins.dispatch("usage.handle", {})
    assert isinstance(results[0], BroadcastResult)
    assert results[0].error is not None
    assert [r.error for r in results[1:]] == [None, None]


def test_a_plugin_that_declines_is_skipped(
    compile_plugin: CompilePlugin,
    tmp_path: Path,
    host_factory: HostFactory,
    hosts: list[PluginHost],
) -> None:
    # Both declare model_router; the test plugin answers unknown_method to model.route.
    reg = registration_file(tmp_path, "router", {"model_router": True, "executor": True})
    host_factory.add("decliner", compile_plugin(TP_REGISTRATION_FILE=reg))
    host = start(host_factory, hosts, configs={"decliner": {"enabled": True, "priority": 9}})
    host.register_native("model.route", "fallback", lambda req: NOT_HANDLED)
    with pytest.raises(errors.PluginError) as info:
        host.dispatch("model.route", {"Model": "m"})
    assert info.value.code == "no_handler"
    assert "model_router" in info.value.message


def test_a_failing_first_handler_raises_its_error(
    compile_plugin: CompilePlugin, host_factory: HostFactory, hosts: list[PluginHost]
) -> None:
    host_factory.add("tp", compile_plugin())
    host = start(host_factory, hosts, configs={"tp": {"enabled": True}})
    with pytest.raises(errors.PluginError) as info:
        host.call("tp", "fail", {})
    assert info.value.code == "plugin_error"
    assert info.value.plugin_id == "tp"


def test_requests_may_be_bytes_or_objects(two_plugins: PluginHost) -> None:
    assert two_plugins.call("tp-a", "echo", b'{"k": 1}') == {"k": 1}
    assert two_plugins.call("tp-a", "echo", {"k": 1}) == orjson.loads(b'{"k": 1}')


def test_two_go_built_plugins_in_process_are_warned_about(
    compile_plugin: CompilePlugin,
    host_factory: HostFactory,
    hosts: list[PluginHost],
    caplog: pytest.LogCaptureFixture,
) -> None:
    host_factory.add("go-a", compile_plugin(TP_GO_MARKER=True, TP_NAME="a"))
    host_factory.add("go-b", compile_plugin(TP_GO_MARKER=True, TP_NAME="b"))
    host_factory.add("c-only", compile_plugin(TP_NAME="c"))
    start(
        host_factory,
        hosts,
        configs={
            "go-a": {"enabled": True},
            "go-b": {"enabled": True},
            "c-only": {"enabled": True},
        },
    )
    warnings = [r.getMessage() for r in caplog.records if "built with Go" in r.getMessage()]
    assert warnings
    assert "go-a, go-b are built with Go" in warnings[0]
    assert "c-only" not in warnings[0]


def test_one_go_plugin_in_process_and_one_isolated_is_fine(
    compile_plugin: CompilePlugin,
    host_factory: HostFactory,
    hosts: list[PluginHost],
    caplog: pytest.LogCaptureFixture,
) -> None:
    host_factory.add("go-a", compile_plugin(TP_GO_MARKER=True, TP_NAME="a"))
    host_factory.add("go-b", compile_plugin(TP_GO_MARKER=True, TP_NAME="b"))
    host = start(
        host_factory,
        hosts,
        configs={"go-a": {"enabled": True}, "go-b": {"enabled": True, "isolation": "process"}},
    )
    assert host.call("go-b", "executor.identifier", {}) == {"identifier": "b"}
    assert not [r for r in caplog.records if "built with Go" in r.getMessage()]
