"""Comparing the shape (keys and value types) of what ccxt parsed with a captured case."""

from __future__ import annotations

from typing import Any


def kind(value: Any) -> str:
    """A JSON-level type name: ints and floats are both numbers (JSON has one number type)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def shape_diff(captured: Any, ours: Any, path: str = "$", allow_none: bool = False,
               item_shapes: dict[str, Any] | None = None) -> list[str]:
    """Differences in keys and types of `ours` against `captured`.

    A None in the captured case accepts anything (it carries no type), unless `item_shapes`
    gives a stricter reference for that key (e.g. `fee` → a captured trade's fee). A None in
    ours is a difference unless `allow_none`. Under `info` (the raw answer) only the keys are
    compared: the captured fixtures write some integers as strings, Binance as JSON numbers.
    Lists: every element of ours is compared with the
    captured list's first element, or with `item_shapes[key]` when the captured list is empty.
    """
    item_shapes = item_shapes or {}
    key = path.rsplit(".", 1)[-1]
    if captured is None and key in item_shapes and ours is not None:
        captured = item_shapes[key]
    if captured is None:
        return []
    if ours is None:
        return [] if allow_none else [f"{path}: None, captured {kind(captured)}"]
    if kind(captured) != kind(ours):
        return [f"{path}: {kind(ours)}, captured {kind(captured)}"]
    if isinstance(captured, dict):
        out = [f"{path}: missing key {k!r}" for k in captured if k not in ours]
        out += [f"{path}: extra key {k!r}" for k in ours if k not in captured]
        if key == "info":  # the raw answer: captured ids are strings, real ones numbers
            return out
        for k in captured:
            if k in ours:
                out += shape_diff(captured[k], ours[k], f"{path}.{k}", allow_none, item_shapes)
        return out
    if isinstance(captured, list):
        reference = captured[0] if captured else item_shapes.get(key)
        out = []
        if reference is not None:
            for i, item in enumerate(ours):
                out += shape_diff(reference, item, f"{path}[{i}]", allow_none,
                                  {k: v for k, v in item_shapes.items() if k != key})
        return out
    return []
