"""Validation errors of a YAML document as messages that name the file, the line and the key,
say what was expected and show the value as the user wrote it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

# The error type of the host's own rules, whose message is complete as it stands.
_OWN_RULE: Final = "cliproxy_config_rule"


def broken_rule(message: str) -> PydanticCustomError:
    """The error a validator of the host's own raises; `message` is shown as it is."""
    # Passed as context, not as the template: braces in it are not placeholders.
    return PydanticCustomError(_OWN_RULE, "{message}", {"message": message})


def yaml_name(name: str, info: FieldInfo) -> str:
    """How a model's field is spelled in the YAML file."""
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    return info.alias or name


def where(source: str, line: int | None) -> str:
    """`file:line`, or the file alone when the line is not known."""
    return f"{source}:{line}" if line is not None else source


def line_of(document: Any, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the deepest part of `loc` present in a ruamel document."""
    line: int | None = None
    node = document
    if isinstance(node, CommentedMap | CommentedSeq):
        line = node.lc.line
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0]
            elif isinstance(node, CommentedSeq) and isinstance(part, int):
                line = node.lc.item(part)[0]
            else:
                break
        except (KeyError, IndexError, TypeError):
            break
        node = node[part]
    return None if line is None else line + 1


def describe(value: Any) -> str:
    """A value as the user wrote it in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence):
        return "a list"
    return repr(value)


def validation_message(
    source: str, document: Any, exc: ValidationError, model: type[BaseModel]
) -> str:
    """Every error of validating `document` against `model`, one line each, in line order."""
    problems = sorted(
        (_error_message(source, document, error, model) for error in exc.errors()),
        key=lambda problem: problem[0] or 0,
    )
    return "\n".join(text for _, text in problems)


_EXPECTED: Final = {
    "bool_type": "expected true or false",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
}


def _error_message(
    source: str, document: Any, error: ErrorDetails, model: type[BaseModel]
) -> tuple[int | None, str]:
    """(line, message) for one validation error."""
    loc = list(error["loc"])
    kind = error["type"]
    value = error["input"]
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc.pop()
    if kind == _OWN_RULE:
        text = error["msg"]
    elif is_key or kind == "invalid_key":
        text = f"expected a string key, got {describe(value)}"
    elif kind == "extra_forbidden":
        text = f"unknown key; expected one of: {', '.join(_section_keys(model, loc[:-1]))}"
    elif kind in _EXPECTED:
        text = f"{_EXPECTED[kind]}, got {describe(value)}"
        if kind == "string_type" and isinstance(value, int | float):
            text += " (put it in quotes)"
    elif kind == "greater_than":
        text = f"expected a number greater than {error.get('ctx', {}).get('gt', 0):g}, got {value}"
    elif kind == "string_too_short":
        text = "expected a non-empty string"
    else:
        text = f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {describe(value)}"
    line = line_of(document, loc)
    path = _key_path(document, loc)
    return (
        line,
        f"{where(source, line)}: {path}: {text}" if path else f"{where(source, line)}: {text}",
    )


def _key_path(data: Any, loc: Sequence[int | str]) -> str:
    """`plugins.configs.p.priority`, `http.allowed-hosts[1]`: a place in the config."""
    path = ""
    node = data
    for part in loc:
        is_index = isinstance(node, Sequence) and not isinstance(node, str)
        path += f"[{part}]" if is_index else f".{part}"
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return path.removeprefix(".")


def _section_keys(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys of the section at `loc` below `model`, if a model section is there."""
    section = model
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list of sections (api-keys): the section itself
        fields = {yaml_name(name, info): info for name, info in section.model_fields.items()}
        info = fields.get(str(part))
        kind = _section_model(info.annotation) if info is not None else None
        if kind is None:
            return []
        section = kind
    return [yaml_name(name, info) for name, info in section.model_fields.items()]


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a section, also of a list of sections; None for anything else."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Annotated):
        return _section_model(get_args(annotation)[0])
    return None
