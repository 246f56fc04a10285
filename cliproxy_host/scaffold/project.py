"""`cliproxy-host new`: write a C or Rust plugin project that builds offline and passes check."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

import orjson

from ..abi import CAPABILITY_METHODS, HEADER_NAME, header_path
from ..discovery import is_valid_id

LANGUAGES: Final = ("c", "rust", "python")
DEFAULT_CAPABILITIES: Final = ("executor",)
TEMPLATE_SUFFIX: Final = ".tmpl"
_TOKEN: Final = re.compile(r"@@[A-Z_]+@@")

# How the generated plugin answers each method: a kind of answer the templates
# implement, and for "fixed" the result JSON. A test pins that every method is here.
_ANSWERS: Final[dict[str, tuple[str, str | None]]] = {
    "model.register": ("fixed", "{}"),
    "model.static": ("fixed", '{"Models":[]}'),
    "model.for_auth": ("fixed", '{"Models":[]}'),
    "auth.identifier": ("identifier", None),
    "auth.parse": ("fixed", "{}"),
    "auth.login.start": ("fixed", "{}"),
    "auth.login.poll": ("fixed", "{}"),
    "auth.refresh": ("fixed", "{}"),
    "frontend_auth.identifier": ("identifier", None),
    "frontend_auth.authenticate": ("fixed", '{"Authenticated":false}'),
    "scheduler.pick": ("fixed", "{}"),
    "model.route": ("echo_model", None),
    "executor.identifier": ("identifier", None),
    "executor.execute": ("execute", None),
    "executor.execute_stream": ("execute_stream", None),
    "executor.count_tokens": ("count_tokens", None),
    "executor.http_request": ("http_request", None),
    "request.translate": ("echo_body", None),
    "request.normalize": ("echo_body", None),
    "request.intercept_before": ("echo_body", None),
    "request.intercept_after": ("echo_body", None),
    "request.complete": ("fixed", "{}"),
    "response.translate": ("echo_body", None),
    "response.normalize_before": ("echo_body", None),
    "response.normalize_after": ("echo_body", None),
    "response.intercept_after": ("echo_body", None),
    "response.intercept_stream_chunk": ("echo_body", None),
    "thinking.identifier": ("identifier", None),
    "thinking.apply": ("echo_body", None),
    "usage.handle": ("fixed", "{}"),
    "command_line.register": ("fixed", '{"Commands":[]}'),
    "command_line.execute": ("fixed", '{"ExitCode":0,"Stdout":"","Stderr":""}'),
    "management.register": ("fixed", '{"Routes":[],"Resources":[]}'),
    "management.handle": ("management_handle", None),
}

# kind -> (C enumerator, Rust variant, what the README says it does)
_KINDS: Final[dict[str, tuple[str, str, str]]] = {
    "fixed": ("ANSWER_FIXED", "Fixed", "answers `{fixed}`"),
    "identifier": ("ANSWER_IDENTIFIER", "Identifier", 'answers `{{"identifier": "{name}"}}`'),
    "echo_body": ("ANSWER_ECHO_BODY", "EchoBody", "answers the request's `Body` unchanged"),
    "echo_model": ("ANSWER_ECHO_MODEL", "EchoModel", "routes the request's `Model` to itself"),
    "execute": ("ANSWER_EXECUTE", "Execute", "echoes the request's `Payload`"),
    "execute_stream": (
        "ANSWER_EXECUTE_STREAM",
        "ExecuteStream",
        "answers no chunks, then a thread of its own emits the request's `Payload` and "
        '`{{"done":true}}` with `host.stream.emit` and ends with `host.stream.close`',
    ),
    "count_tokens": (
        "ANSWER_COUNT_TOKENS",
        "CountTokens",
        "counts about four bytes of `Payload` per token",
    ),
    "http_request": (
        "ANSWER_HTTP_REQUEST",
        "HttpRequest",
        "sends the request upstream through `host.http.do`",
    ),
    "management_handle": (
        "ANSWER_MANAGEMENT_HANDLE",
        "ManagementHandle",
        "answers 200 with a small JSON body",
    ),
}

# Settings that go with a capability flag when it is on (ABI.md section 3).
_QUALIFIERS: Final[dict[str, dict[str, object]]] = {
    "executor": {
        "executor_model_scope": "both",
        "executor_input_formats": ["chat-completions"],
        "executor_output_formats": ["chat-completions"],
    },
    "frontend_auth_provider": {"frontend_auth_provider_exclusive": False},
}


class ScaffoldError(Exception):
    """The project cannot be written as asked; the message says why and what to do."""


def _c_string(text: str) -> str:
    """The inside of a C string literal; the templates only ever pass printable ASCII."""
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"not printable ASCII: {text!r}")
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _author() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"
    # The name lands in C and JSON string literals: keep it to characters safe in both.
    safe = re.sub(r"[^A-Za-z0-9._-]", "", user)
    return safe or "unknown"


def _capabilities(chosen: Sequence[str]) -> list[str]:
    unknown = sorted(set(chosen) - set(CAPABILITY_METHODS))
    if unknown:
        raise ScaffoldError(
            f"unknown capability {', '.join(unknown)}; choose from " + ", ".join(CAPABILITY_METHODS)
        )
    wanted = set(chosen or DEFAULT_CAPABILITIES)
    return [flag for flag in CAPABILITY_METHODS if flag in wanted]


# `new --wheel`: what a Rust project gets to build a wheel (templates/rust-wheel/ on top).
_WHEEL_MAKE: Final = """
# A Python wheel carrying the library (maturin, offline): dist/@@LIB@@-*.whl.
wheel:
\t$(MATURIN) build --release --offline --out dist
"""
_WHEEL_README: Final = """## As a Python wheel

```sh
make wheel                    # maturin build --release --offline: dist/@@LIB@@-*.whl
pip install dist/@@LIB@@-*.whl  # into the environment cliproxy-host runs in
```

The wheel carries the library. The host finds it through the entry point
`@@NAME@@ = "@@LIB@@"` of the group `cliproxy_host.plugins` (`pyproject.toml`) and takes
it like a file `@@NAME@@-v<version>.so` under its plugins dir, after the files there.

"""


def _tokens(name: str, flags: Sequence[str], *, wheel: bool = False) -> dict[str, str]:
    capabilities: dict[str, object] = {}
    for flag in flags:
        capabilities[flag] = True
        capabilities.update(_QUALIFIERS.get(flag, {}))
    capabilities_json = orjson.dumps(capabilities).decode()
    methods = [m for flag in flags for m in CAPABILITY_METHODS[flag]]
    c_rows, rust_rows, py_rows, readme = [], [], [], []
    for method in methods:
        kind, fixed = _ANSWERS[method]
        c_kind, rust_kind, described = _KINDS[kind]
        c_fixed = f'"{_c_string(fixed)}"' if fixed is not None else "NULL"
        c_rows.append(f'    {{"{method}", {c_kind}, {c_fixed}}},')
        rust_value = f'Answer::Fixed(r#"{fixed}"#)' if fixed is not None else f"Answer::{rust_kind}"
        rust_rows.append(f'    ("{method}", {rust_value}),')
        py_fixed = f"json.loads({fixed!r})" if fixed is not None else "None"
        py_rows.append(f'    "{method}": ("{kind}", {py_fixed}),')
        readme.append(f"- `{method}` {described.format(fixed=fixed, name=name)}")
    author = _author()
    crate = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    if not crate[0].isalpha():
        crate = f"plugin_{crate}"
    return {
        "@@NAME@@": name,
        "@@AUTHOR@@": author,
        "@@REPOSITORY@@": f"https://github.com/{author}/{name}",
        "@@CAPABILITY_LIST@@": ", ".join(flags),
        "@@CAPABILITIES_C@@": _c_string(capabilities_json),
        "@@CAPABILITIES_JSON@@": capabilities_json,
        "@@METHODS_C@@": "\n".join(c_rows),
        "@@METHODS_RUST@@": "\n".join(rust_rows),
        "@@METHODS_PY@@": "\n".join(py_rows),
        "@@METHOD_LIST@@": "\n".join(readme),
        "@@CMAKE_PROJECT@@": re.sub(r"[^A-Za-z0-9_]", "_", name),
        "@@CRATE@@": crate,
        "@@LIB@@": crate.replace("-", "_"),
        "@@MAKE_COMMON@@": _templates().joinpath("Makefile.common").read_text("utf-8"),
        # _render puts these in first: they hold tokens of their own.
        "@@WHEEL_MAKE@@": ("MATURIN ?= maturin\n" + _WHEEL_MAKE) if wheel else "",
        "@@WHEEL_PHONY@@": " wheel" if wheel else "",
        "@@WHEEL_README@@": _WHEEL_README if wheel else "",
    }


def _templates() -> Traversable:
    # Package data, so the templates ship in the wheel with the code that fills them.
    return resources.files(__package__ or "cliproxy_host").joinpath("templates")


def _walk(directory: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        relative = f"{prefix}{entry.name}"
        if entry.is_dir():
            yield from _walk(entry, f"{relative}/")
        else:
            yield relative, entry


def _render(text: str, tokens: dict[str, str]) -> str:
    # The wheel's snippets hold tokens of their own: put them in first.
    for token in ("@@WHEEL_MAKE@@", "@@WHEEL_README@@"):
        text = text.replace(token, tokens[token])
    for token, value in tokens.items():
        text = text.replace(token, value)
    left = _TOKEN.search(text)
    if left:
        raise RuntimeError(f"template placeholder {left.group()} has no value")
    return text


def create_project(
    name: str,
    lang: str,
    capabilities: Sequence[str] = (),
    parent: Path = Path("."),
    *,
    wheel: bool = False,
) -> Path:
    """Write PARENT/NAME/, a plugin project for `lang` with `capabilities`; answer its path.

    `wheel` (Rust only) adds what builds it as a Python wheel with maturin."""
    if not is_valid_id(name):
        raise ScaffoldError(
            f"{name!r} is not a valid plugin ID: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes the library's file name)"
        )
    if lang not in LANGUAGES:
        raise ScaffoldError(f"unknown language {lang!r}; choose from {', '.join(LANGUAGES)}")
    if wheel and lang != "rust":
        raise ScaffoldError("--wheel is for Rust plugins (maturin); drop it or use --lang rust")
    flags = _capabilities(capabilities)
    target = parent / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(
            f"{target} already exists and is not empty; choose another NAME or --dir"
        )
    tokens = _tokens(name, flags, wheel=wheel)
    layers = [lang, *(["rust-wheel"] if wheel else [])]

    parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed into place, so a failure leaves no half-made project.
    staging = parent / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        sources = [item for layer in layers for item in _walk(_templates().joinpath(layer))]
        for relative, source in sources:
            dest = staging / _render(relative, tokens)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if relative.endswith(TEMPLATE_SUFFIX):
                dest = dest.with_name(dest.name.removesuffix(TEMPLATE_SUFFIX))
                dest.write_text(_render(source.read_text("utf-8"), tokens), "utf-8")
            else:
                dest.write_bytes(source.read_bytes())
        if lang != "python":  # a program speaks the protocol: no C header
            (staging / "include").mkdir(exist_ok=True)
            shutil.copyfile(header_path(), staging / "include" / HEADER_NAME)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
