"""Dotted keys and nested dicts: the one converter between ``shards.masking.masked_lm_prob`` and
``{"shards": {"masking": {"masked_lm_prob": ...}}}``.

Sweeps write their changes as dotted keys, plans and reports compare flattened configs,
MLflow stores a config as flattened params, and reproducing a run nests them back; all of them
use these functions, so a key means the same thing everywhere. Lists are values (a list of
tasks is not flattened into ``evaluate.0.name``), which is how MLflow params hold them too.
"""

from __future__ import annotations

from typing import Any


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: nested dicts merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dotted(key: str, value: Any) -> dict[str, Any]:
    """``"shards.masking.masked_lm_prob", 0.4`` → ``{"shards": {"masking": {"masked_lm_prob": 0.4}}}``."""
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys → one nested dict (later keys merge into earlier ones)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        out = deep_merge(out, dotted(key, value))
    return out


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict → dotted keys (``masking.masked_lm_prob``); lists and scalars are values."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: obj}
