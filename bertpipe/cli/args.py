"""Command-line flags generated from the stage config models, so no option is written twice.

Every field of a pydantic config (nested models flattened: ``masking.masked_lm_prob`` →
``--masked-lm-prob``) becomes a flag whose help text is the field's description and
default. Booleans get ``--x/--no-x``, ``Literal`` fields get choices, tuples are written
comma-separated (``--mask-split 0.8,0.1,0.1``). Flags default to "not given", so the
config's own defaults (and validators) stay the single source of truth.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from bertpipe.core.config import ConfigError, validate_config


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], FieldInfo]]:
    out = []
    for name, info in model.model_fields.items():
        ann = _unwrap_optional(info.annotation)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_leaves(ann, prefix + (name,)))
        else:
            out.append((prefix + (name,), info))
    return out


def _unwrap_optional(ann: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` → ``X`` (bounds are checked by pydantic, not here)."""
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            ann = args[0]
    return typing.get_args(ann)[0] if typing.get_origin(ann) is typing.Annotated else ann


def _tuple_parser(item_types: tuple[Any, ...]):
    def parse(text: str) -> tuple:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != len(item_types):
            raise argparse.ArgumentTypeError(f"expected {len(item_types)} comma-separated values, got {text!r}")
        return tuple(t(p) for t, p in zip(item_types, parts, strict=True))

    return parse


def add_config_args(parser: argparse.ArgumentParser, model: type[BaseModel], skip: set[str] = frozenset(),
                    aliases: dict[str, str] | None = None) -> None:
    """A flag per leaf field of ``model``; ``aliases``: field name → a second flag for it."""
    group = parser.add_argument_group(f"{model.__name__} options")
    for path, info in _leaves(model):
        if path[-1] in skip:
            continue
        flag = "--" + path[-1].replace("_", "-")
        ann = _unwrap_optional(info.annotation)
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = None
        help_text = (info.description or "") + f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": "cfg:" + ".".join(path), "default": None, "help": help_text, "metavar": path[-1].upper()}
        if ann is bool:
            kwargs.pop("metavar")
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(ann) is Literal:
            kwargs["choices"] = list(typing.get_args(ann))
            kwargs.pop("metavar")
            kwargs["type"] = type(kwargs["choices"][0])
        elif typing.get_origin(ann) is tuple:
            kwargs["type"] = _tuple_parser(typing.get_args(ann))
            kwargs["metavar"] = ",".join(["X"] * len(typing.get_args(ann)))
        elif typing.get_origin(ann) is list:
            item = typing.get_args(ann)[0]
            if typing.get_origin(item) is Literal:  # a list of named choices
                kwargs["choices"], item = list(typing.get_args(item)), str
                kwargs.pop("metavar")
            kwargs["type"], kwargs["nargs"] = item, "+"
        elif ann in (int, float, str):
            kwargs["type"] = ann
        elif ann is Path or (isinstance(ann, type) and issubclass(ann, Path)):
            kwargs["type"] = Path
        else:
            kwargs["type"] = str
        group.add_argument(flag, *[(aliases or {})[path[-1]]] if path[-1] in (aliases or {}) else [], **kwargs)


def config_from_args(model: type[BaseModel], args: argparse.Namespace, base: dict[str, Any] | None = None,
                     source: str = "", **fixed: Any) -> BaseModel:
    """The config from ``base`` (e.g. a JSON file, named by ``source`` in errors) and ``fixed``
    values, overridden by the flags that were given; a ``ConfigError`` names each bad key or flag."""
    # start from the full dump so nested defaults (e.g. a default_factory's) survive partial overrides
    data: dict[str, Any] = validate_config(model, {**(base or {}), **fixed}, source=source).model_dump()
    for key, value in vars(args).items():
        if not key.startswith("cfg:") or value is None:
            continue
        node = data
        *parents, leaf = key[4:].split(".")
        for p in parents:
            if node.get(p) is None:  # an optional nested config that was off
                node[p] = {}
            node = node[p]
        node[leaf] = value
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            names = [x for x in err["loc"] if isinstance(x, str)]
            where = "--" + names[-1].replace("_", "-") if names else "options"
            lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("\n".join(lines)) from None
