"""What every stage returns, and how a user-given path is resolved to a stage output.

Stages write ``<root>/<fingerprint>/`` and record the newest fingerprint in
``<root>/latest`` so that the command line can chain stages by root directory
(``bertpipe wordpiece DOCS`` after ``bertpipe ingest ... --out DOCS``) while the flows pass
exact fingerprinted paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertpipe import cache


@dataclass(frozen=True)
class StageResult:
    stage: str
    fingerprint: str
    path: Path
    manifest: dict[str, Any]
    cached: bool  # True when an existing complete output was reused

    def summary(self) -> str:
        state = "cached" if self.cached else "built"
        return f"{self.stage} {state}: {self.path}"


def publish_latest(root: Path, fp: str) -> None:
    tmp = root / f".latest.tmp-{os.getpid()}"
    tmp.write_text(fp + "\n")
    os.replace(tmp, root / "latest")


def resolve_stage_dir(path: str | Path, stage: str | None = None) -> Path:
    """Accept a complete stage directory, or a root whose ``latest`` names one."""
    p = Path(path)
    if cache.is_complete(p):
        resolved = p
    elif (p / "latest").is_file():
        resolved = p / (p / "latest").read_text().strip()
        if not cache.is_complete(resolved):
            raise FileNotFoundError(f"{p}/latest points to {resolved}, which is not a complete stage output")
    else:
        raise FileNotFoundError(f"{p} is neither a complete stage output nor a stage root with a 'latest' file")
    if stage is not None:
        got = cache.read_manifest(resolved).get("stage")
        if got != stage:
            raise ValueError(f"{resolved} holds a '{got}' output; expected '{stage}'")
    return resolved
