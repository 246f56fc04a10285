"""Comment lines of a round-trip document moved to the key they stand above, once after
reading, so that deleting or replacing an entry takes its own comments and no others.

ruamel attaches a comment line to whatever comes before it, often the last value of the
previous entry: deleting or replacing that entry would take the next one's comment with it.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString
from ruamel.yaml.tokens import CommentToken


def attach_comments_to_keys(mapping: CommentedMap, *, top: bool) -> None:
    """Move every comment line in `mapping` (and the mappings in it) to the key below it;
    `top` is the document itself, whose last lines stay at the end of the file."""
    keys = _own_keys(mapping)
    for index, key in enumerate(keys):
        value = mapping[key]
        if isinstance(value, CommentedMap) and value and not value.fa.flow_style():
            _adopt_leading_comments(mapping, key, value)
            attach_comments_to_keys(value, top=False)
        is_last = index + 1 == len(keys)
        # The lines after a nested mapping's last value stand above its parent's next key.
        lines = "" if is_last and not top else _take_trailing_lines(mapping, key)
        if not lines:
            continue
        token = CommentToken(lines, CommentMark(0))
        if is_last:  # the end of the file
            if mapping.ca.comment is None:
                mapping.ca.comment = [None, None]  # ruamel writes `end` only next to these
            mapping.ca.end = [token, *(mapping.ca.end or [])]
        else:
            _prepend_comments(mapping, keys[index + 1], [token])


def _own_keys(mapping: CommentedMap) -> list[Any]:
    """The keys written in this mapping, not those a merge key (`<<: *base`) brings in."""
    return [key for key, _ in mapping.non_merged_items()]


def _adopt_leading_comments(parent: CommentedMap, key: Any, child: CommentedMap) -> None:
    """Comment lines between `key:` and the child's first key belong to that first key."""
    slots = parent.ca.items.get(key)
    from_parent = slots[3] if slots is not None and len(slots) > 3 else None
    from_child = child.ca.comment[1] if child.ca.comment else None
    # ruamel usually keeps the same list in both places.
    tokens = [*(from_parent or []), *((from_child or []) if from_child is not from_parent else [])]
    first = _own_keys(child)[:1]
    if not tokens or not first:
        return
    if from_parent:
        slots[3] = None
    if from_child:
        child.ca.comment[1] = None
    _prepend_comments(child, first[0], tokens)


def _trailing_slot(container: CommentedMap | CommentedSeq, key: Any) -> tuple[Any, int, Any]:
    """Where ruamel keeps the comment token that ends the value at container[key]: the
    slots, the index in them, and the value the token follows."""
    value = container[key]
    if isinstance(value, CommentedSeq) and value and not value.fa.flow_style():
        return _trailing_slot(value, len(value) - 1)
    if isinstance(value, CommentedMap) and not value.fa.flow_style() and (keys := _own_keys(value)):
        return _trailing_slot(value, keys[-1])
    slots = container.ca.items.get(key)
    index = 2 if isinstance(container, CommentedMap) else 0
    return (slots if slots is not None and len(slots) > index else None), index, value


def _take_trailing_lines(mapping: CommentedMap, key: Any) -> str:
    """Remove and return the whole lines after the value (and its end-of-line comment)."""
    slots, index, value = _trailing_slot(mapping, key)
    token = slots[index] if slots is not None else None
    if token is None:
        return ""
    text = str(token.value)
    if isinstance(value, LiteralScalarString | FoldedScalarString):
        # A block scalar ends its own line, so the token is whole lines; ruamel keeps the
        # first one's indent as the token's column.
        slots[index] = None
        return text if text.startswith("\n") else " " * token.start_mark.column + text
    line, newline, rest = text.partition("\n")
    if rest:
        token.value = line + newline
    return rest


def _prepend_comments(mapping: CommentedMap, key: Any, tokens: list[Any]) -> None:
    slots = mapping.ca.items.setdefault(key, [None, None, None, None])
    slots[1] = [*tokens, *(slots[1] or [])]
