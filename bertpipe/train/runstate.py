"""Run state a pretraining checkpoint must carry for an exact resume, and device facts.

``capture_rng`` / ``restore_rng``: the torch, CUDA, NumPy and Python RNG states as tensors and
plain containers, so checkpoints load with ``torch.load(weights_only=True)`` (nothing is
unpickled). ``truncate_metrics``: a resumed run's records up to its checkpoint, rewritten
atomically. ``peak_flops``: the dense bf16/fp16 peak of known GPUs, for MFU. Trade-off: the
GPU table is hand-kept; an unknown card simply reports no MFU.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertpipe.core.stagedir import commit_file


def capture_rng(device: torch.device) -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "gauss": float(gauss)},
            "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss}}


def restore_rng(s: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(s["torch"])
    if device.type == "cuda" and s["cuda"].numel():
        torch.cuda.set_rng_state(s["cuda"], device)
    n, p = s["numpy"], s["python"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Dense bf16/fp16 tensor-core peak of known GPUs, for MFU; None when unknown or fp32."""
    name = torch.cuda.get_device_name(device)
    table = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
    return None if precision == "fp32" else next((v for k, v in table.items() if k in name), None)


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of steps up to ``step`` (none for 0); a new file, so that a follower of
    the old one (the launcher's) starts over in it."""
    keep = [ln for ln in path.read_text().splitlines() if ln and step and json.loads(ln).get("step", 0) <= step]
    (tmp := path.with_name(f".{path.name}.tmp")).write_text("".join(ln + "\n" for ln in keep))
    commit_file(tmp, path)
