"""Executor formats: the Go host's aliases, a declared list made canonical, and selection."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from ..errors import UnsupportedFormat

# Format names the Go host's translator knows (sdk/translator/formats.go).
KNOWN_FORMATS: Final = frozenset(
    {"openai", "openai-response", "claude", "gemini", "codex", "antigravity", "interactions"}
)

_ALIASES: Final = {
    "chat-completions": "openai",
    "chat_completions": "openai",
    "openai-chat-completions": "openai",
    "openai_chat_completions": "openai",
    "responses": "openai-response",
    "openai-responses": "openai-response",
    "openai_responses": "openai-response",
    "anthropic": "claude",
}

DEFAULT_FORMAT: Final = "openai"


def canonical(raw: Any) -> str:
    """One format name as the Go host reads it: aliases folded, "" and "none" empty."""
    if not isinstance(raw, str):
        return ""
    name = raw.strip().lower()
    if name in ("", "none"):
        return ""
    return _ALIASES.get(name, name)


def canonical_list(raw: Any) -> tuple[str, ...]:
    """A declared format list: aliases folded, empties dropped, first occurrence kept."""
    if not isinstance(raw, list | tuple):
        return ()
    seen: dict[str, None] = {}
    for item in raw:
        name = canonical(item)
        if name:
            seen.setdefault(name, None)
    return tuple(seen)


def declared(capabilities: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input, output) formats an executor's registration declares."""
    return (
        canonical_list(capabilities.get("executor_input_formats")),
        canonical_list(capabilities.get("executor_output_formats")),
    )


def missing_formats(capabilities: dict[str, Any]) -> str | None:
    """Why an executor's registration cannot serve a call, or None when its formats are fine."""
    if capabilities.get("executor") is not True:
        return None
    inputs, outputs = declared(capabilities)
    lacking = [kind for kind, fmts in (("input", inputs), ("output", outputs)) if not fmts]
    if not lacking:
        return None
    keys = " and ".join(f"executor_{kind}_formats" for kind in lacking)
    return (
        f"the executor declares no {' or '.join(lacking)} formats; every call would fail. "
        f'Add {keys} to the registration\'s capabilities (e.g. ["openai"])'
    )


# (from, to) -> whether something can translate between them.
CanTranslate = Callable[[str, str], bool]


def select_input(
    executor: str, inputs: Iterable[str], requested: str, can_translate: CanTranslate
) -> str:
    """The executor's input format: the requested one if listed, else the first reachable."""
    listed = tuple(inputs)
    if not listed:
        raise UnsupportedFormat(
            f"executor {executor} declares no input formats", plugin_id=executor
        )
    if requested in listed:
        return requested
    for fmt in listed:
        if not requested or can_translate(requested, fmt):
            return fmt
    raise UnsupportedFormat(
        f"executor {executor} does not support input format {requested!r} "
        f"(it takes {', '.join(listed)} and no request translator reaches them)",
        plugin_id=executor,
    )


def select_output(
    executor: str,
    outputs: Iterable[str],
    requested: str,
    input_format: str,
    can_translate: CanTranslate,
) -> str:
    """The executor's output format: the requested one, else the input one, else the first
    whose answer can be translated back to the requested format."""
    listed = tuple(outputs)
    if not listed:
        raise UnsupportedFormat(
            f"executor {executor} declares no output formats", plugin_id=executor
        )
    if requested in listed:
        return requested
    if input_format in listed and can_translate(input_format, requested):
        return input_format
    for fmt in listed:
        if not requested or can_translate(fmt, requested):
            return fmt
    raise UnsupportedFormat(
        f"executor {executor} does not support output format {requested!r} "
        f"(it answers {', '.join(listed)} and no response translator reaches it)",
        plugin_id=executor,
    )
