"""A plugin's config form from its ConfigFields: the controls to draw, the submitted text
turned into typed values, and each field's problem to show beside it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..config import HOST_KEYS
from ..host.registry import ConfigField, check_settings

__all__ = ["FormField", "build_fields", "parse_submission"]

_INTEGER: Final = re.compile(r"[+-]?\d+")
# JSON literals the text box shows for a boolean; anything else is the operator's typo.
_BOOLEANS: Final = {"true": True, "false": False}


@dataclass(frozen=True)
class FormField:
    """One control of the form: its field, the text it shows and the problem beside it."""

    field: ConfigField
    text: str
    error: str | None = None

    @property
    def control(self) -> str:
        """select (enum, boolean), textarea (array, object) or input."""
        if self.field.type in ("enum", "boolean"):
            return "select"
        return "textarea" if self.field.type in ("array", "object") else "input"

    @property
    def options(self) -> list[str]:
        if self.field.type == "boolean":
            return ["true", "false"]
        return list(self.field.enum_values)

    @property
    def inputmode(self) -> str | None:
        # A text box, not type=number: the browser would refuse "abc" itself, silently,
        # where the host's message says what it expected.
        return {"integer": "numeric", "number": "decimal"}.get(self.field.type)


def editable(fields: Iterable[ConfigField]) -> list[ConfigField]:
    """The plugin's own fields: the host's keys (enabled, priority, ...) are the host's,
    even where a plugin declares one, as check_settings rules."""
    return [f for f in fields if f.name not in HOST_KEYS]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def build_fields(
    fields: Iterable[ConfigField],
    values: Mapping[str, Any],
    errors: Mapping[str, str] | None = None,
) -> list[FormField]:
    """The controls for `fields`, showing `values` (text as submitted, or the config's
    values) and `errors` by field name."""
    errors = errors or {}
    return [FormField(f, _text(values.get(f.name)), errors.get(f.name)) for f in editable(fields)]


def _typed(field: ConfigField, text: str) -> Any:
    """The value the text means for the field's type; the text itself when it means none
    (check_settings then names what was expected)."""
    kind = field.type
    if kind == "integer" and _INTEGER.fullmatch(text):
        return int(text)
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if _INTEGER.fullmatch(text) else number
    if kind == "boolean":
        return _BOOLEANS.get(text, text)
    return text


def parse_submission(
    fields: Iterable[ConfigField], form: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The patch a submitted form asks for (an empty box: the key is removed, None) and the
    problems by field name, worded as the API words them."""
    patch: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in editable(fields):
        text = form.get(field.name, "").strip()
        if not text:
            patch[field.name] = None
            continue
        if field.type in ("array", "object"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                errors[field.name] = f"expected JSON ({field.type}): {exc}"
                continue
        else:
            value = _typed(field, text)
        problems = check_settings([field], {field.name: value})
        if problems:
            # check_settings prefixes the key; beside its field, the reason suffices.
            errors[field.name] = problems[0].removeprefix(f"{field.name}: ")
        else:
            patch[field.name] = value
    return patch, errors
