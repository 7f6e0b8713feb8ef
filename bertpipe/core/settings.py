"""Where relative paths, presets and sweeps are found: settings from the environment, never
from the library's own location, so an installed wheel behaves as a source checkout does.

- ``BERTPIPE_BASE_DIR``: relative paths in configs (corpus, ``work_dir``, task files) and the
  default MLflow store (``mlflow.db``, ``mlartifacts/``) are under it; default: the working
  directory of the process (``make run`` serves the deployments from the project folder).
- ``BERTPIPE_PRESETS`` / ``BERTPIPE_SWEEPS``: extra folders of ``<name>.json`` files
  (``os.pathsep``-separated), searched before the ones shipped in ``bertpipe.experiments``,
  so a team adds or shadows a preset without touching the package.
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

BASE_DIR = "BERTPIPE_BASE_DIR"
PRESET_DIRS = "BERTPIPE_PRESETS"
SWEEP_DIRS = "BERTPIPE_SWEEPS"


def base_dir() -> Path:
    return Path(os.environ.get(BASE_DIR) or Path.cwd()).expanduser().resolve()


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the SQLite store ``mlflow.db`` in the base directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{base_dir() / 'mlflow.db'}"


def resolve(path: str | os.PathLike) -> Path:
    """A config path: absolute as given, relative ones under ``base_dir()``."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir() / p


def _folders(variable: str, shipped: str) -> list[Path | Traversable]:
    user = [Path(d).expanduser() for d in os.environ.get(variable, "").split(os.pathsep) if d]
    return [*user, resources.files("bertpipe.experiments") / shipped]


def named_json(kind: str, name: str) -> str:
    """The text of preset or sweep ``name`` (``kind`` is "presets" or "sweeps"), first found wins."""
    for folder in _folders(PRESET_DIRS if kind == "presets" else SWEEP_DIRS, kind):
        f = folder / f"{name}.json"
        if f.is_file():
            return f.read_text()
    raise ValueError(f"unknown {kind[:-1]} {name!r}; available: {', '.join(json_names(kind))}")


def json_names(kind: str) -> list[str]:
    """Every preset or sweep name, shipped and user-provided."""
    names = set()
    for folder in _folders(PRESET_DIRS if kind == "presets" else SWEEP_DIRS, kind):
        if folder.is_dir():
            names.update(f.name.removesuffix(".json") for f in folder.iterdir() if f.name.endswith(".json"))
    return sorted(names)
