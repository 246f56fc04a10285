"""Plugin discovery: search order, file names, versions, pins, and what is not a plugin."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cliproxy_host import discovery
from cliproxy_host.discovery import (
    Discovery,
    PluginFile,
    compare_versions,
    cpu_variants,
    discover,
    is_valid_id,
    library_suffix,
    normalize_pin,
    parse_name,
    platform_tag,
    search_dirs,
)

V2_FLAGS = "cx16 lahf_lm popcnt sse4_1 sse4_2 ssse3"
V3_FLAGS = f"{V2_FLAGS} avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
V4_FLAGS = f"{V3_FLAGS} avx512f avx512bw avx512cd avx512dq avx512vl"


def cpuinfo(*flag_lines: str) -> str:
    return "".join(
        f"processor\t: {n}\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme {flags}\n\n"
        for n, flags in enumerate(flag_lines)
    )


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF")
    return path


def scan(
    root: Path, pins: dict[str, str] | None = None, variants: tuple[str, ...] = ()
) -> Discovery:
    return discover(root, pins, os_name="linux", arch="amd64", variants=variants)


# platform_tag


@pytest.mark.parametrize(
    ("sys_platform", "machine", "expected"),
    [
        ("linux", "x86_64", ("linux", "amd64")),
        ("linux", "aarch64", ("linux", "arm64")),
        ("linux", "armv7l", ("linux", "arm")),
        ("linux", "i686", ("linux", "386")),
        ("darwin", "arm64", ("darwin", "arm64")),
        ("darwin", "x86_64", ("darwin", "amd64")),
        ("win32", "AMD64", ("windows", "amd64")),
        ("win32", "ARM64", ("windows", "arm64")),
        ("win32", "x86", ("windows", "386")),
        ("freebsd14", "amd64", ("freebsd", "amd64")),
    ],
)
def test_platform_tag_uses_go_names(
    monkeypatch: pytest.MonkeyPatch, sys_platform: str, machine: str, expected: tuple[str, str]
) -> None:
    monkeypatch.setattr(sys, "platform", sys_platform)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(discovery, "struct", SimpleNamespace(calcsize=lambda fmt: 8))
    assert platform_tag() == expected


@pytest.mark.parametrize(("machine", "arch"), [("x86_64", "386"), ("aarch64", "arm")])
def test_platform_tag_names_the_32_bit_arch_for_a_32_bit_python(
    monkeypatch: pytest.MonkeyPatch, machine: str, arch: str
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(discovery, "struct", SimpleNamespace(calcsize=lambda fmt: 4))
    assert platform_tag() == ("linux", arch)


def test_platform_tag_of_this_machine_is_one_discovery_understands() -> None:
    os_name, arch = platform_tag()
    assert os_name in {"linux", "darwin", "windows", "freebsd"}
    assert arch in {"amd64", "arm64", "386", "arm"}


@pytest.mark.parametrize(
    ("os_name", "suffix"),
    [("linux", ".so"), ("freebsd", ".so"), ("darwin", ".dylib"), ("windows", ".dll")],
)
def test_library_suffix_per_os(os_name: str, suffix: str) -> None:
    assert library_suffix(os_name) == suffix


# cpu_variants


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("", []),
        ("sse sse2", []),
        (V2_FLAGS, ["v2"]),
        (V3_FLAGS, ["v3", "v2"]),
        (V4_FLAGS, ["v4", "v3", "v2"]),
        # lzcnt is the other spelling of abm.
        (V3_FLAGS.replace("abm", "lzcnt"), ["v3", "v2"]),
        # One missing flag drops the level and every level above it.
        (V3_FLAGS.replace("movbe", ""), ["v2"]),
        (V4_FLAGS.replace("avx2", ""), ["v2"]),
        (V4_FLAGS.replace("avx512vl", ""), ["v3", "v2"]),
        (V4_FLAGS.replace("sse4_2", ""), []),
    ],
)
def test_cpu_variants_are_the_x86_64_levels_the_flags_support(
    flags: str, expected: list[str]
) -> None:
    assert cpu_variants("amd64", read_cpuinfo=lambda: cpuinfo(flags)) == expected


def test_cpu_variants_need_every_cpu_to_have_the_flags() -> None:
    text = cpuinfo(V4_FLAGS, V3_FLAGS, V4_FLAGS)
    assert cpu_variants("amd64", read_cpuinfo=lambda: text) == ["v3", "v2"]


@pytest.mark.parametrize("arch", ["arm64", "386", "arm"])
def test_cpu_variants_are_empty_for_other_architectures(arch: str) -> None:
    assert cpu_variants(arch, read_cpuinfo=lambda: cpuinfo(V4_FLAGS)) == []


def test_cpu_variants_are_empty_where_there_is_no_proc_cpuinfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cpu_variants("amd64") == []


# search_dirs


def test_search_dirs_go_from_the_best_variant_to_the_root(tmp_path: Path) -> None:
    assert search_dirs(tmp_path, "linux", "amd64", ["v3", "v2"]) == [
        tmp_path / "linux" / "amd64-v3",
        tmp_path / "linux" / "amd64-v2",
        tmp_path / "linux" / "amd64",
        tmp_path,
    ]


def test_search_dirs_without_variants(tmp_path: Path) -> None:
    assert search_dirs(tmp_path, "darwin", "arm64", []) == [tmp_path / "darwin" / "arm64", tmp_path]


# parse_name


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("simple-c.so", ("simple-c", None)),
        ("simple-c-v1.2.0.so", ("simple-c", "1.2.0")),
        ("Simple_C.2.so", ("Simple_C.2", None)),
        ("a.so", ("a", None)),
        ("x-v1.so", ("x", "1")),
        ("x-v1.0.0-rc.1+build.5.so", ("x", "1.0.0-rc.1+build.5")),
        # Split at the last "-v".
        ("x-v1-v2.so", ("x-v1", "2")),
        ("my-video-v3.so", ("my-video", "3")),
        # "-v" not followed by a valid version: the whole stem is the ID.
        ("my-video.so", ("my-video", None)),
        ("x-v.so", ("x-v", None)),
        ("x-vbeta.so", ("x-vbeta", None)),
        ("x-v1_2.so", ("x-v1_2", None)),
        # The part before "-v" is no valid ID: the whole stem is the ID.
        ("_-v1.so", None),
        ("a_-v1.so", ("a_", "1")),
        # The extension matches whatever its case.
        ("simple-c.SO", ("simple-c", None)),
        ("simple-c-v2.So", ("simple-c", "2")),
    ],
)
def test_parse_name(filename: str, expected: tuple[str, str | None] | None) -> None:
    assert parse_name(filename, ".so") == expected


@pytest.mark.parametrize(
    "filename",
    [
        "simple-c.dll",
        "simple-c.so.1",
        "simple-c.so.bak",
        "simple-c",
        ".so",
        ".hidden.so",
        "-dash.so",
        "_under.so",
        "has space.so",
        "ünicode.so",
        "semi;colon.so",
        f"{'a' * 129}.so",
    ],
)
def test_parse_name_ignores_files_that_are_no_plugin(filename: str) -> None:
    assert parse_name(filename, ".so") is None


def test_parse_name_allows_ids_up_to_128_characters() -> None:
    assert parse_name(f"{'a' * 128}.so", ".so") == ("a" * 128, None)
    assert parse_name(f"{'a' * 128}-v1.so", ".so") == ("a" * 128, "1")


def test_parse_name_uses_the_suffix_given() -> None:
    assert parse_name("plug-v1.dylib", ".dylib") == ("plug", "1")
    assert parse_name("plug.DLL", ".dll") == ("plug", None)
    assert parse_name("plug.so", ".dll") is None


def test_an_id_with_a_trailing_newline_is_invalid() -> None:
    assert not is_valid_id("plug\n")
    assert is_valid_id("plug")


@pytest.mark.parametrize(("pin", "expected"), [("v1.2", "1.2"), ("V1.2", "1.2"), ("1.2", "1.2")])
def test_normalize_pin_strips_one_leading_v(pin: str, expected: str) -> None:
    assert normalize_pin(pin) == expected


# compare_versions


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.2.0", "1.2.0", 0),
        ("1.2", "1.2.0", 0),
        ("1.2.0.0", "1.2", 0),
        ("1.10", "1.9", 1),
        ("1.9", "1.10", -1),
        ("2", "1.99.99", 1),
        ("1.0.1", "1", 1),
        ("01.2", "1.2", 0),
        # Any part that is not a number: the two compare as strings.
        ("1.10-rc1", "1.9", -1),
        ("1.2.0-beta", "1.2.0-alpha", 1),
        ("1.2+b", "1.2+b", 0),
        ("1.2", "1.2.x", -1),
        ("1..2", "1.2", -1),
    ],
)
def test_compare_versions(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


# discover


def test_a_missing_root_finds_nothing(tmp_path: Path) -> None:
    found = scan(tmp_path / "nowhere")
    assert found == Discovery()


def test_a_root_that_is_a_file_finds_nothing(tmp_path: Path) -> None:
    assert scan(touch(tmp_path / "plugins")) == Discovery()


def test_files_in_all_three_levels_are_found(tmp_path: Path) -> None:
    a = touch(tmp_path / "linux" / "amd64-v2" / "a.so")
    b = touch(tmp_path / "linux" / "amd64" / "b.so")
    c = touch(tmp_path / "c.so")
    found = scan(tmp_path, variants=("v2",))
    assert found.files == {
        "a": PluginFile("a", a, None),
        "b": PluginFile("b", b, None),
        "c": PluginFile("c", c, None),
    }
    assert found.problems == {}
    assert found.errors == ()


def test_the_first_directory_in_search_order_wins_among_unversioned_files(tmp_path: Path) -> None:
    best = touch(tmp_path / "linux" / "amd64-v3" / "p.so")
    touch(tmp_path / "linux" / "amd64-v2" / "p.so")
    touch(tmp_path / "linux" / "amd64" / "p.so")
    touch(tmp_path / "p.so")
    found = scan(tmp_path, variants=("v3", "v2"))
    assert found.files["p"].path == best
    assert [f.path for f in found.candidates["p"]] == [
        best,
        tmp_path / "linux" / "amd64-v2" / "p.so",
        tmp_path / "linux" / "amd64" / "p.so",
        tmp_path / "p.so",
    ]


def test_the_arch_dir_beats_the_root(tmp_path: Path) -> None:
    arch = touch(tmp_path / "linux" / "amd64" / "p.so")
    touch(tmp_path / "p.so")
    assert scan(tmp_path).files["p"].path == arch


def test_variant_dirs_the_cpu_lacks_are_not_searched(tmp_path: Path) -> None:
    touch(tmp_path / "linux" / "amd64-v4" / "p.so")
    fallback = touch(tmp_path / "linux" / "amd64" / "p.so")
    only_v4 = touch(tmp_path / "linux" / "amd64-v4" / "q.so")
    found = scan(tmp_path, variants=("v3", "v2"))
    assert found.files["p"].path == fallback
    assert "q" not in found.files
    assert scan(tmp_path, variants=("v4", "v3", "v2")).files["q"].path == only_v4


def test_other_platforms_dirs_are_not_searched(tmp_path: Path) -> None:
    touch(tmp_path / "linux" / "arm64" / "arm.so")
    touch(tmp_path / "darwin" / "amd64" / "mac.so")
    touch(tmp_path / "amd64" / "nested.so")
    assert scan(tmp_path).files == {}


@pytest.mark.parametrize(
    ("os_name", "arch", "name"),
    [
        ("linux", "amd64", "p.so"),
        ("freebsd", "amd64", "p.so"),
        ("darwin", "arm64", "p.dylib"),
        ("windows", "amd64", "p.dll"),
        ("windows", "386", "p.DLL"),
    ],
)
def test_each_os_takes_its_own_extension(
    tmp_path: Path, os_name: str, arch: str, name: str
) -> None:
    for other in ("q.so", "q.dylib", "q.dll"):
        touch(tmp_path / os_name / arch / other)
    wanted = touch(tmp_path / os_name / arch / name)
    found = discover(tmp_path, os_name=os_name, arch=arch, variants=[])
    assert found.files["p"].path == wanted
    assert [f.path.name for f in found.candidates["q"]] == [f"q{library_suffix(os_name)}"]


def test_an_explicit_suffix_overrides_the_os(tmp_path: Path) -> None:
    wanted = touch(tmp_path / "p.plugin")
    touch(tmp_path / "q.so")
    found = discover(tmp_path, os_name="linux", arch="amd64", variants=[], suffix=".plugin")
    assert found.files == {"p": PluginFile("p", wanted, None)}


def test_discover_defaults_to_this_platform(tmp_path: Path) -> None:
    os_name, arch = platform_tag()
    wanted = touch(tmp_path / os_name / arch / f"p{library_suffix(os_name)}")
    assert discover(tmp_path).files["p"].path == wanted


def test_invalid_names_are_ignored(tmp_path: Path) -> None:
    for name in (".hidden.so", "-x.so", "has space.so", "notes.txt", "p.so.bak", "p.so.1"):
        touch(tmp_path / name)
    good = touch(tmp_path / "good.so")
    found = scan(tmp_path)
    assert found.files == {"good": PluginFile("good", good, None)}
    assert set(found.candidates) == {"good"}


def test_a_versioned_file_beats_an_unversioned_one_wherever_it_is(tmp_path: Path) -> None:
    touch(tmp_path / "linux" / "amd64" / "p.so")
    versioned = touch(tmp_path / "p-v0.0.1.so")
    found = scan(tmp_path)
    assert found.files["p"] == PluginFile("p", versioned, "0.0.1")


def test_the_highest_version_wins_across_dirs(tmp_path: Path) -> None:
    touch(tmp_path / "linux" / "amd64-v2" / "p-v1.2.so")
    touch(tmp_path / "linux" / "amd64" / "p-v1.9.so")
    highest = touch(tmp_path / "p-v1.10.so")
    touch(tmp_path / "p.so")
    found = scan(tmp_path, variants=("v2",))
    assert found.files["p"] == PluginFile("p", highest, "1.10")
    assert [f.version for f in found.candidates["p"]] == ["1.2", "1.9", "1.10", None]


def test_the_highest_version_wins_within_a_dir_whatever_the_name_order(tmp_path: Path) -> None:
    touch(tmp_path / "p-v10.0.so")
    touch(tmp_path / "p-v9.0.so")
    touch(tmp_path / "p-v2.0.so")
    assert scan(tmp_path).files["p"].version == "10.0"


def test_equal_versions_go_to_the_first_found(tmp_path: Path) -> None:
    first = touch(tmp_path / "linux" / "amd64" / "p-v1.2.so")
    touch(tmp_path / "p-v1.2.0.so")
    assert scan(tmp_path).files["p"].path == first


def test_equal_versions_in_one_dir_go_to_the_first_name(tmp_path: Path) -> None:
    touch(tmp_path / "p-v1.2.so")
    first = touch(tmp_path / "p-v1.2.0.so")
    # "p-v1.2.0.so" sorts before "p-v1.2.so".
    assert scan(tmp_path).files["p"].path == first


def test_non_numeric_versions_compare_as_strings(tmp_path: Path) -> None:
    touch(tmp_path / "p-v1.0.0-alpha.so")
    beta = touch(tmp_path / "p-v1.0.0-beta.so")
    assert scan(tmp_path).files["p"].path == beta


def test_a_pinned_version_wins_over_a_higher_one(tmp_path: Path) -> None:
    pinned = touch(tmp_path / "linux" / "amd64" / "p-v1.2.0.so")
    touch(tmp_path / "p-v1.3.0.so")
    touch(tmp_path / "p.so")
    found = scan(tmp_path, {"p": "1.2.0"})
    assert found.files["p"] == PluginFile("p", pinned, "1.2.0")
    assert found.problems == {}


def test_a_pin_may_start_with_v(tmp_path: Path) -> None:
    pinned = touch(tmp_path / "p-v1.2.0.so")
    touch(tmp_path / "p-v1.3.0.so")
    assert scan(tmp_path, {"p": "v1.2.0"}).files["p"].path == pinned
    assert scan(tmp_path, {"p": "V1.2.0"}).files["p"].path == pinned


def test_a_pin_matches_the_version_exactly(tmp_path: Path) -> None:
    touch(tmp_path / "p-v1.2.0.so")
    found = scan(tmp_path, {"p": "1.2"})
    assert found.files == {}
    assert found.problems == {"p": "pinned version 1.2 not found; available: 1.2.0"}


def test_a_missing_pinned_version_is_a_problem_listing_the_versions_there_are(
    tmp_path: Path,
) -> None:
    touch(tmp_path / "linux" / "amd64" / "p-v1.3.0.so")
    touch(tmp_path / "p-v1.1.0.so")
    touch(tmp_path / "p-v1.10.0.so")
    touch(tmp_path / "p-v1.3.0.so")
    other = touch(tmp_path / "q-v1.0.so")
    found = scan(tmp_path, {"p": "1.2.0"})
    assert found.files == {"q": PluginFile("q", other, "1.0")}
    assert found.problems == {
        "p": "pinned version 1.2.0 not found; available: 1.1.0, 1.3.0, 1.10.0"
    }
    assert len(found.candidates["p"]) == 4


def test_a_pin_never_takes_an_unversioned_file(tmp_path: Path) -> None:
    touch(tmp_path / "p.so")
    assert scan(tmp_path, {"p": "1.0"}).problems == {
        "p": "pinned version 1.0 not found; available: unversioned"
    }
    touch(tmp_path / "p-v0.9.so")
    assert scan(tmp_path, {"p": "1.0"}).problems == {
        "p": "pinned version 1.0 not found; available: 0.9, unversioned"
    }


def test_pins_of_plugins_without_files_and_empty_pins_change_nothing(tmp_path: Path) -> None:
    newest = touch(tmp_path / "p-v2.so")
    touch(tmp_path / "p-v1.so")
    found = scan(tmp_path, {"absent": "1.0", "p": ""})
    assert found.files == {"p": PluginFile("p", newest, "2")}
    assert found.problems == {}


def test_directories_are_not_plugins(tmp_path: Path) -> None:
    (tmp_path / "dir.so").mkdir()
    (tmp_path / "p-v9.so").mkdir()
    wanted = touch(tmp_path / "p-v1.so")
    found = scan(tmp_path)
    assert found.files == {"p": PluginFile("p", wanted, "1")}
    assert "dir" not in found.candidates


def test_a_symlink_to_a_regular_file_counts_and_keeps_its_own_name(tmp_path: Path) -> None:
    target = touch(tmp_path / "store" / "real-build.bin")
    link = tmp_path / "p-v1.so"
    link.symlink_to(target)
    assert scan(tmp_path).files["p"] == PluginFile("p", link, "1")


def test_symlinks_to_dirs_and_broken_symlinks_are_not_plugins(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "d.so").symlink_to(tmp_path / "adir")
    (tmp_path / "broken.so").symlink_to(tmp_path / "missing.so")
    assert scan(tmp_path) == Discovery()


def test_a_symlinked_platform_dir_is_searched(tmp_path: Path) -> None:
    real = tmp_path / "shared"
    touch(real / "p.so")
    (tmp_path / "linux").mkdir()
    (tmp_path / "linux" / "amd64").symlink_to(real)
    assert scan(tmp_path).files["p"].path == tmp_path / "linux" / "amd64" / "p.so"


def test_an_unreadable_dir_is_reported_and_the_others_still_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "linux" / "amd64"
    touch(locked / "p.so")
    fallback = touch(tmp_path / "p.so")
    real_scandir = os.scandir

    def scandir(path: Path) -> object:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = scan(tmp_path)
    assert found.files["p"].path == fallback
    assert found.errors == (f"cannot list plugin directory {locked}: Permission denied",)


def test_results_are_sorted_by_id(tmp_path: Path) -> None:
    for name in ("zeta.so", "alpha.so", "Mid.so"):
        touch(tmp_path / name)
    found = scan(tmp_path)
    assert list(found.files) == ["Mid", "alpha", "zeta"]
    assert list(found.candidates) == ["Mid", "alpha", "zeta"]


def test_ids_are_case_sensitive(tmp_path: Path) -> None:
    touch(tmp_path / "Plug.so")
    if (tmp_path / "plug.so").exists():
        pytest.skip("case-insensitive file system")
    touch(tmp_path / "plug.so")
    assert set(scan(tmp_path).files) == {"Plug", "plug"}


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_symlink_loop_is_a_problem_of_its_id_not_silence(tmp_path: Path) -> None:
    arch_dir = tmp_path / "linux" / "amd64"
    arch_dir.mkdir(parents=True)
    loop = arch_dir / "loop.so"
    loop.symlink_to(loop.name)
    found = scan(tmp_path)
    assert "loop" not in found.files
    assert found.problems == {
        "loop": f"symlink loop at {loop}; point the link at a plugin library file"
    }


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_symlink_loop_beside_a_good_file_of_its_id_is_passed_over(tmp_path: Path) -> None:
    loop = tmp_path / "linux" / "amd64" / "p.so"
    loop.parent.mkdir(parents=True)
    loop.symlink_to(loop.name)
    good = touch(tmp_path / "p.so")
    found = scan(tmp_path)
    assert found.files["p"].path == good
    assert found.problems == {}
