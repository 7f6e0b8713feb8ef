"""Strict configs: an unknown key is an error that names its full path and the nearest valid names.

Every config model in bertpipe forbids unknown fields (``extra="forbid"``): in a tool made to
measure the effect of a choice, a misspelt key that silently runs the default reports "no
effect", the worst kind of wrong result. ``validate_config`` is how any entry point (the
command line, a deployment's parameters, a preset or sweep file, a reproduced run) turns
plain data into a config: pydantic validates, and its errors become ``ConfigError``, one line
per problem, each naming the dotted path of the key (``evaluate[0].config.lr``)::

    `shards.masking.masked_lm_probability` is not a field; did you mean `masked_lm_prob`?

Keys that were valid once and have been retired are listed by the caller (``retired``: dotted
path → the path that replaces it, or None when it has no successor); they are moved (or
dropped) with a warning before validation, so an old run's config still loads, while a key
that was never valid fails.
"""

from __future__ import annotations

import difflib
import logging
import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bertpipe.core.keys import deep_merge, dotted

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config that cannot be used; its message has one line per problem, each naming a dotted path
    (``unknown``: the lines about keys that are not fields)."""

    def __init__(self, message: str, unknown: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unknown = unknown


def validate_config(model: type[M], data: Any, *, source: str = "", at: str = "",
                    retired: dict[str, str | None] | None = None) -> M:
    """``data`` (plain JSON-like values, or an instance) as a ``model``; ``source`` prefixes each
    error line (``preset tiny``), ``at`` each path (where ``data`` sits in a larger tree: ``finetune``);
    ``retired`` keys are moved or dropped, with a warning."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    if retired and isinstance(data, dict):
        data = apply_retired(data, retired, source)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = explain(e, model, source, at).splitlines()
        raise ConfigError("\n".join(lines), tuple(ln for ln in lines if " is not a field; " in ln)) from None


def explain(error: ValidationError, model: type[BaseModel], source: str = "", at: str = "") -> str:
    """pydantic's errors as lines naming dotted paths (and, for an unknown key, its valid neighbours)."""
    prefix = f"{source}: " if source else ""
    lines = []
    for err in error.errors():
        loc, where = err["loc"], path_text(((at,) if at else ()) + tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            lines.append(f"{prefix}`{where}` is not a field; {_neighbours(str(loc[-1]), valid_names(model, loc))}")
            continue
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        lines.append(f"{prefix}`{where}`: {msg}" if where else f"{prefix}{msg}")
    return "\n".join(lines)


def path_text(loc: tuple[Any, ...]) -> str:
    """``("evaluate", 0, "config", "lr")`` → ``evaluate[0].config.lr``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def valid_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model that holds ``loc``'s last key ([] when it is not a model)."""
    node: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int) or node is None:
            continue  # a list index: the item model was found with the list's field
        field = node.model_fields.get(str(part))
        node = _model_in(field.annotation) if field is not None else None
    return list(node.model_fields) if node is not None else []


def _model_in(ann: Any) -> type[BaseModel] | None:
    """The config model inside an annotation (``X | None``, ``list[X]``, ``Annotated[X, ...]``)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    if typing.get_origin(ann) in (typing.Union, types.UnionType, list, tuple, typing.Annotated):
        for arg in typing.get_args(ann):
            if (found := _model_in(arg)) is not None:
                return found
    return None


def _neighbours(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"
    return "valid names here: " + ", ".join(f"`{n}`" for n in names) if names else "no keys are valid here"


def apply_retired(data: dict[str, Any], retired: dict[str, str | None], source: str = "") -> dict[str, Any]:
    """``data`` with each retired key present moved to its successor (or dropped), with a warning."""
    prefix = f"{source}: " if source else ""
    for old, new in retired.items():
        *parents, leaf = old.split(".")
        node = data
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node[leaf]
        data = _without(data, old.split("."))
        if new is None:
            log.warning("%s`%s` is retired and has no effect any more; it was dropped", prefix, old)
        else:
            log.warning("%s`%s` is retired; its value now sets `%s`", prefix, old, new)
            data = deep_merge(data, dotted(new, value))
    return data


def _without(data: dict[str, Any], path: list[str]) -> dict[str, Any]:
    out = dict(data)
    if len(path) == 1:
        out.pop(path[0], None)
    else:
        out[path[0]] = _without(out[path[0]], path[1:])
    return out
