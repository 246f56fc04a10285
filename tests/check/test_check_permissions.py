"""`check` lists the host callbacks a plugin used as the permissions it needs."""

from __future__ import annotations

from cliproxy_host.check import run_checks
from tests.conftest import REPO, CompilePlugin

BUS_SRC = REPO / "tests" / "plugins" / "busplugin.c"


def test_check_lists_the_callbacks_a_plugin_used_as_the_permissions_it_needs(
    compile_plugin: CompilePlugin,
) -> None:
    library = compile_plugin(source=BUS_SRC, BP_NAME="bus", BP_USAGE_CALLS=True)
    report = run_checks(library, cycles=1)
    results = {r.name: r for r in report.results}
    permissions = results["permissions"]
    # usage.handle called host.log (a Go callback) and host.event.publish (this host's).
    assert permissions.status == "warn", report.table()
    assert "callbacks: [host.event.publish, host.log]" in permissions.reason
    assert "publish: [*]" in permissions.reason
    assert f"plugins.configs.{library.stem}.permissions" in permissions.fix
    # The host calls themselves were accepted: the fake host knows this host's callbacks.
    assert results["host callbacks"].status == "pass", report.table()


def test_a_plugin_using_only_go_callbacks_needs_nothing_granted_by_default(
    compile_plugin: CompilePlugin,
) -> None:
    library = compile_plugin(source=REPO / "tests" / "plugins" / "modelcaller.c")
    report = run_checks(library, cycles=1)
    permissions = {r.name: r for r in report.results}["permissions"]
    assert permissions.status == "pass", report.table()
    assert "callbacks: [host.model.execute]" in permissions.reason
    assert "allowed by default" in permissions.reason
