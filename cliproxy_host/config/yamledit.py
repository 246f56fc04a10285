"""Round-trip YAML: parse a file into ruamel's document, change it keeping the user's
comments, quoting and layout, and write YAML that other parsers read back the same."""

from __future__ import annotations

import datetime
import io
import math
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ruamel.yaml import YAML, tokens
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar, merge_attrib
from ruamel.yaml.error import CommentMark, MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scalarfloat import ScalarFloat
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.tokens import CommentToken

from ..errors import ConfigError

# -- reading -------------------------------------------------------------------------------


_OPENS: Final = (
    tokens.BlockMappingStartToken,
    tokens.BlockSequenceStartToken,
    tokens.FlowMappingStartToken,
    tokens.FlowSequenceStartToken,
)
_CLOSES: Final = (tokens.BlockEndToken, tokens.FlowMappingEndToken, tokens.FlowSequenceEndToken)


def _too_deep(text: str, max_depth: int) -> int | None:
    """The 1-based line where `text` nests deeper than `max_depth` collections, or None.

    Scanned token by token before ruamel composes the document: its scanner slows down
    with the nesting depth (quadratically), its composer recurses once per level, and the
    scan stops at the first level too many."""
    depth = 0
    for token in YAML(typ="rt").scan(text):
        if isinstance(token, _OPENS):
            depth += 1
            if depth > max_depth:
                return int(token.start_mark.line) + 1
        elif isinstance(token, _CLOSES):
            depth -= 1
    return None


def parse_yaml(yaml: YAML, text: str, source: str, *, max_depth: int) -> Any:
    """The document in `text`; invalid YAML, or YAML nested deeper than `max_depth`
    collections, raises ConfigError naming the file and line."""
    try:
        line = _too_deep(text, max_depth)
        if line is not None:
            raise ConfigError(
                f"{source}:{line}: nested deeper than {max_depth} levels"
                " (MAX_NESTING_DEPTH): flatten it"
            )
        return yaml.load(text)
    except MarkedYAMLError as exc:
        raise ConfigError(_yaml_error_message(source, exc)) from None
    except YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    except ValueError as exc:
        # A scalar ruamel cannot construct: an integer over Python's 4300 digits, a date
        # that does not exist. ruamel gives no line for these.
        raise ConfigError(f"{source}: invalid YAML value: {exc}") from None
    except RecursionError:
        # ruamel composes nested nodes recursively: a document nested a few hundred levels
        # deep overflows it (far past the depth the schema allows).
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None


def _yaml_error_message(source: str, exc: MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = exc.problem or exc.context or "syntax error"
    context = f" ({exc.context})" if exc.context and exc.problem else ""
    return f"{where}: invalid YAML: {problem}{context}"


def plain(value: Any) -> Any:
    """ruamel's round-trip values as the plain Python types they stand for."""
    if isinstance(value, Mapping):
        # Keys must stay hashable: a complex key (`? [a, b]`) is kept as ruamel made it.
        return {plain_scalar(key): plain(item) for key, item in value.items()}
    if is_list(value):
        return [plain(item) for item in value]
    return plain_scalar(value)


def plain_scalar(value: Any) -> Any:
    """One round-trip scalar as the plain type it stands for."""
    if isinstance(value, TaggedScalar):
        return value.value
    # ScalarInt, ScalarFloat, ScalarBoolean and the quoted-string types are subclasses.
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def is_list(value: Any) -> bool:
    """Whether a value is a YAML sequence (a string is not)."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


# -- writing -------------------------------------------------------------------------------


def _writes_blocks(yaml: YAML) -> YAML:
    """What every YAML the host writes has in common."""
    yaml.default_flow_style = False  # new mappings and lists are written as blocks
    yaml.allow_unicode = True
    yaml.width = sys.maxsize  # never fold a long line (the user wrote it on one)
    return yaml


class _FileRepresenter(RoundTripRepresenter):
    """ruamel's round-trip writer, except that a float is never written as another number."""


def _represent_exact_float(representer: RoundTripRepresenter, data: ScalarFloat) -> Any:
    # ruamel re-creates a float from the digits, width and exponent it read, and gets the
    # last digit wrong for some (5.219248898251513e+299 came back ...512e+299): where its
    # text does not read back as the same number, Python's shortest exact form is written.
    node = representer.represent_scalar_float(data)
    if math.isfinite(data):
        try:
            exact = float(node.value) == float(data)
        except ValueError:
            exact = False
        if not exact:
            return representer.represent_scalar("tag:yaml.org,2002:float", repr(float(data)))
    return node


_FileRepresenter.add_representer(ScalarFloat, _represent_exact_float)


def round_trip_yaml(text: str) -> YAML:
    """A ruamel parser and writer for `text` that writes it back in the file's own style."""
    yaml = YAML(typ="rt")
    yaml.Representer = _FileRepresenter
    yaml.preserve_quotes = True
    _writes_blocks(yaml)
    mapping, sequence, offset = _indentation(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


_KEY_OPENS_BLOCK: Final = re.compile(r"[^#]*:(\s+#.*)?")


def _indentation(text: str) -> tuple[int, int, int]:
    """ruamel's (mapping, sequence, offset) indents as the file uses them, since ruamel
    writes one style for the whole file; where the file does not show, the host's style."""
    mapping: int | None = None
    dash: tuple[int, int] | None = None
    opener: int | None = None  # the indent of the previous line, if it was a bare `key:`
    for line in text.splitlines():
        content = line.lstrip(" ")
        if not content or content.startswith("#"):
            continue
        indent = len(line) - len(content)
        is_item = content.startswith("- ")
        if opener is not None:
            if is_item and dash is None:
                item = content[2:]
                spaces = len(item) - len(item.lstrip(" "))
                dash = (indent - opener, indent + 2 + spaces - opener)
            elif not is_item and mapping is None and indent > opener:
                mapping = indent - opener
        opener = indent if not is_item and _KEY_OPENS_BLOCK.fullmatch(content.rstrip()) else None
    mapping = mapping or 2
    offset, sequence = dash or (mapping, mapping + 2)
    return mapping, sequence, offset


def empty_document(text: str) -> CommentedMap:
    """The document for a file with no mapping yet; comment lines in it are kept on top."""
    document = CommentedMap()
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and all(line.lstrip().startswith("#") for line in lines):
        header = text if text.endswith("\n") else text + "\n"
        document.ca.comment = [None, [CommentToken(header, CommentMark(0))]]
    return document


# -- changes to the document ---------------------------------------------------------------
# Each keeps the nodes it does not need to replace, since the user's comments, quoting and
# layout live on them.


def section(parent: CommentedMap, key: str) -> CommentedMap:
    """parent[key] as a mapping this change may edit in place; made when missing or null."""
    value = parent.get(key)
    if isinstance(value, CommentedMap) and not _is_shared(value):
        if not value:
            value.fa.set_block_style()  # a `{}` written by hand grows as a block
        return value
    # A mapping that other places reach through an anchor gets a copy of its own, so that
    # the change stays where it was asked for.
    made = _yaml_mapping(plain(value) if isinstance(value, Mapping) else {})
    parent[key] = made
    return made


def _is_shared(node: CommentedMap) -> bool:
    """Whether the node carries an anchor (`&name`) or merges one in (`<<: *name`)."""
    anchor = node.yaml_anchor()
    return (anchor is not None and anchor.value is not None) or bool(
        getattr(node, merge_attrib, None)
    )


def replace_mapping(target: CommentedMap, values: Mapping[Any, Any]) -> None:
    """Make `target` hold exactly `values`, in their order."""
    if not target:
        target.fa.set_block_style()
    for key in [key for key in target if key not in values]:
        delete(target, key)
    for key, value in values.items():
        put(target, key, value)
    if list(target) != list(values):
        for key in values:
            target.move_to_end(key)


def put(mapping: CommentedMap, key: Any, value: Any) -> None:
    """Set mapping[key], keeping the node there wherever it already holds the value."""
    if key not in mapping:
        mapping[_yaml_key(key)] = _to_yaml(value)
        return
    current = mapping[key]
    if isinstance(value, Mapping) and isinstance(current, CommentedMap) and not _is_shared(current):
        replace_mapping(current, value)
    elif not _same(current, value):
        keeps_quotes = isinstance(value, str) and "\n" not in value and isinstance(current, _QUOTED)
        mapping[key] = type(current)(value) if keeps_quotes else _to_yaml(value)


def delete(mapping: CommentedMap, key: Any) -> None:
    """Remove a key with the comment lines above it (attached to it when read)."""
    was_first = next(iter(mapping)) == key
    del mapping[key]
    mapping.ca.items.pop(key, None)
    if was_first and mapping:
        # The next key is first now: blank lines that parted it from the removed key go.
        tokens = (mapping.ca.items.get(next(iter(mapping))) or [None, None])[1] or []
        while tokens and not str(tokens[0].value).strip():
            tokens.pop(0)
        if tokens:
            tokens[0].value = str(tokens[0].value).lstrip("\n")


def _same(old: Any, new: Any) -> bool:
    """Whether `old`, from the document, already is `new`: equal, with the same types."""
    if isinstance(new, Mapping):
        return (
            isinstance(old, Mapping)
            and list(old) == list(new)
            and all(_same(old[key], new[key]) for key in new)
        )
    if is_list(new):
        return is_list(old) and len(old) == len(new) and all(map(_same, old, new))
    old = plain_scalar(old)
    return type(old) is type(new) and bool(old == new)


_QUOTED: Final = (SingleQuotedScalarString, DoubleQuotedScalarString)


def _to_yaml(value: Any) -> Any:
    """Plain Python as ruamel's round-trip types: mappings and lists written as blocks,
    strings quoted wherever a YAML 1.1 parser (a plugin's, another program's) would take
    them for something else, and multi-line strings as literal blocks."""
    if isinstance(value, Mapping):
        return _yaml_mapping(value)
    if isinstance(value, list | tuple):
        return CommentedSeq(_to_yaml(item) for item in value)
    if isinstance(value, str):
        return LiteralScalarString(value) if "\n" in value else _yaml_key(value)
    if value is None or isinstance(value, bool | int | float | datetime.date):
        return value
    raise TypeError(f"cannot write a {type(value).__name__} to the config file: {value!r}")


def _yaml_mapping(values: Mapping[Any, Any]) -> CommentedMap:
    mapping = CommentedMap()
    for key, value in values.items():
        mapping[_yaml_key(key)] = _to_yaml(value)
    return mapping


def _yaml_key(key: Any) -> Any:
    if isinstance(key, str) and _reads_as_no_string(key):
        return SingleQuotedScalarString(key)
    return key


# -- YAML for plugins ----------------------------------------------------------------------


class _PluginYamlRepresenter(RoundTripRepresenter):
    """Writes what plugins read: explicit nulls, and strings quoted wherever a YAML 1.1
    parser (libyaml, Go's yaml) would take them for something else, such as `yes` or `on`."""


_YAML11: Final = VersionedResolver(version=(1, 1))
_STR_TAG: Final = "tag:yaml.org,2002:str"


def _reads_as_no_string(text: str) -> bool:
    """Whether a YAML 1.1 parser would take `text`, written unquoted, for a non-string."""
    return str(_YAML11.resolve(ScalarNode, text, (True, False))) != _STR_TAG


def _represent_str(representer: RoundTripRepresenter, data: str) -> Any:
    if "\n" in data:
        style: str | None = "|"
    elif _reads_as_no_string(data):
        style = "'"
    else:
        style = None
    return representer.represent_scalar(_STR_TAG, data, style=style)


def _represent_none(representer: RoundTripRepresenter, data: None) -> Any:
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


_PluginYamlRepresenter.add_representer(str, _represent_str)
_PluginYamlRepresenter.add_representer(type(None), _represent_none)


def dump_for_plugin(mapping: Mapping[Any, Any]) -> bytes:
    """`mapping` as block-style UTF-8 YAML, the same bytes for the same mapping."""
    yaml = YAML(typ="rt")
    yaml.Representer = _PluginYamlRepresenter
    _writes_blocks(yaml)
    yaml.indent(mapping=2, sequence=4, offset=2)
    stream = io.StringIO()
    yaml.dump(mapping, stream)
    return stream.getvalue().encode("utf-8")
