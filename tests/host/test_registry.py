"""Registration validation and the one dispatch-ordering rule."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from cliproxy_host.abi import SCHEMA_VERSION
from cliproxy_host.backends.protocol import Health
from cliproxy_host.errors import InvalidRegistration, PluginLoadError
from cliproxy_host.host.registry import (
    NativeHandler,
    Record,
    Registration,
    Snapshot,
    dispatch_order,
    parse_registration,
)


def registration(**overrides: Any) -> dict[str, Any]:
    reg: dict[str, Any] = {
        "schema_version": 1,
        "metadata": {
            "Name": "p",
            "Version": "1.0.0",
            "Author": "a",
            "GitHubRepository": "https://example.invalid/p",
            "ConfigFields": [{"Name": "mode", "Type": "enum", "EnumValues": ["a", "b"]}],
        },
        "capabilities": {"executor": True},
    }
    reg.update(overrides)
    return reg


def test_valid_registration_is_parsed() -> None:
    reg = parse_registration(registration(), "p")
    assert reg.metadata.name == "p"
    assert reg.metadata.config_fields[0].enum_values == ("a", "b")
    assert reg.flags == {"executor"}
    assert "executor.execute" in reg.methods


def test_keys_are_read_case_insensitively() -> None:
    reg = parse_registration(
        {
            "Schema_Version": 2,
            "METADATA": {"name": "p", "version": "1", "author": "a", "githubrepository": "r"},
            "Capabilities": {"model_router": True},
        },
        "p",
    )
    assert reg.schema_version == 2
    assert reg.flags == {"model_router"}


def test_missing_schema_version_means_one() -> None:
    data = registration()
    del data["schema_version"]
    assert parse_registration(data, "p").schema_version == 1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r["metadata"].update(Name=""), "name"),
        (lambda r: r["metadata"].update(Version="  "), "version"),
        (lambda r: r["metadata"].pop("Author"), "author"),
        (lambda r: r["metadata"].pop("GitHubRepository"), "githubrepository"),
        (lambda r: r.update(capabilities={}), "no capability flag"),
        (lambda r: r.update(capabilities={"executor": False}), "no capability flag"),
        (lambda r: r.update(capabilities={"executr": True}), "unknown flags: executr"),
        (lambda r: r.update(schema_version=SCHEMA_VERSION + 1), "newer than this host"),
        (lambda r: r["metadata"].update(ConfigFields=[{"Name": "x", "Type": "color"}]), "type"),
        (lambda r: r.pop("metadata"), "metadata"),
    ],
)
def test_invalid_registrations_are_refused_with_the_reason(mutate: Any, reason: str) -> None:
    data = registration()
    mutate(data)
    with pytest.raises(PluginLoadError) as info:
        parse_registration(data, "p")
    assert isinstance(info.value, InvalidRegistration)
    assert info.value.code == "invalid_registration"
    assert reason in str(info.value)
    assert info.value.plugin_id == "p"


def test_a_registration_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(PluginLoadError, match="expected a JSON object"):
        parse_registration([1], "p")


def test_metadata_is_written_back_in_the_go_spelling() -> None:
    meta = parse_registration(registration(), "p").metadata.to_json()
    assert set(meta) == {"Name", "Version", "Author", "GitHubRepository", "Logo", "ConfigFields"}


class _Backend:
    plugin_id = "x"
    path = Path("x")

    def call(self, method: str, request: bytes) -> bytes:
        raise AssertionError("not called")

    def close(self) -> None:
        pass

    def health(self) -> Health:
        return Health()


REG = Registration.model_validate(
    {
        "metadata": {"name": "n", "version": "1", "author": "a", "githubrepository": "g"},
        "capabilities": {"executor": True},
    }
)


def rec(pid: str, priority: int, enabled: bool = True) -> Record:
    return Record(pid, priority, _Backend(), REG, enabled)


def test_higher_priority_runs_first_and_ties_go_by_id() -> None:
    records = [rec("b", 1), rec("a", 1), rec("c", 5), rec("z", -3), rec("m", 0)]
    assert [r.plugin_id for r in dispatch_order([], records)] == ["c", "a", "b", "m", "z"]


def test_native_handlers_come_first_in_registration_order() -> None:
    natives = [NativeHandler("n2", "m", None), NativeHandler("n1", "m", None)]
    order = dispatch_order(natives, [rec("a", 100)])
    assert [getattr(h, "name", None) or h.plugin_id for h in order] == ["n2", "n1", "a"]


def test_disabled_plugins_are_left_out() -> None:
    assert [r.plugin_id for r in dispatch_order([], [rec("a", 1, False), rec("b", 0)])] == ["b"]


def test_order_is_the_same_for_every_input_permutation() -> None:
    records = [rec("a", 2), rec("b", 2), rec("c", 3), rec("d", -1), rec("e", 0, False), rec("f", 3)]
    expected = ["c", "f", "a", "b", "d"]
    for perm in itertools.permutations(records):
        assert [r.plugin_id for r in dispatch_order([], perm)] == expected


def test_snapshot_indexes_providers_per_method_in_order() -> None:
    snap = Snapshot([rec("low", 0), rec("high", 9), rec("off", 99, False)])
    assert [r.plugin_id for r in snap.providers("executor.execute")] == ["high", "low"]
    assert snap.providers("usage.handle") == ()
    assert snap.get("low") is not None
    assert snap.get("nope") is None
