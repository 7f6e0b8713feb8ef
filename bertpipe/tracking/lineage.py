"""Lineage in MLflow's own terms: what a run consumed (datasets) and what code produced it.

Each stage run logs its inputs as MLflow datasets, so the runs table's Dataset column and the
run page show them: the corpus files for ingest; the upstream stage outputs for the others
(documents, vocabulary, shards, a checkpoint), each named by its stage, with the upstream
fingerprint as the digest, its directory as the source, its schema and counts as schema and
profile. Every run is tagged with the code that made it: the git commit of the bertpipe
checkout (MLflow's own ``mlflow.source.git.commit``, shown on the run page), whether the
checkout had uncommitted changes, and the versions of bertpipe and the libraries whose
behaviour shapes results. An installed wheel has no checkout: only the versions are tagged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient

from bertpipe.core.fingerprint import hash_file
from bertpipe.core.stage import StageResult
from bertpipe.tracking import tags
from bertpipe.tracking.runs import RACED_INSERT, retrying

LIBRARIES = ("bertpipe", "torch", "tokenizers", "transformers", "prefect", "mlflow", "pyarrow", "numpy")
_INPUT_NAMES = {"ingest": "documents", "wordpiece": "vocabulary", "shards": "shards"}


@functools.lru_cache(maxsize=1)
def code_tags() -> dict[str, str]:
    """Git commit and dirty flag of the bertpipe checkout (when it is one), and library versions."""
    out = {}
    for lib in LIBRARIES:
        try:
            out[tags.VERSION + lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    here = str(Path(__file__).resolve().parents[1])
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            status = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            out |= {tags.GIT_COMMIT: commit.stdout.strip(), tags.MLFLOW_GIT_COMMIT: commit.stdout.strip(),
                    tags.GIT_DIRTY: str(bool(status.stdout.strip())).lower()}
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def output_dataset(result: StageResult, name: str | None = None) -> Dataset:
    """A stage output as an MLflow dataset: digest = its fingerprint, source = its directory."""
    m = result.manifest
    schema = m.get("schema")
    profile = m.get("counts") or {k: m[k] for k in ("step", "parameters") if k in m}
    return Dataset(name=name or _INPUT_NAMES.get(result.stage, result.stage), digest=result.fingerprint, source_type="local",
                   source=json.dumps({"uri": str(result.path)}), schema=json.dumps({"columns": schema}) if schema else None,
                   profile=json.dumps(profile) if profile else None)


def files_dataset(name: str, files: list[str], source: list[str] | None = None) -> Dataset:
    """Input files as one MLflow dataset: digest = a hash of their content hashes, in order;
    ``source``: the paths as the user gave them (directories, globs), default the files."""
    digest = hashlib.sha256("".join(hash_file(f) for f in files).encode()).hexdigest()[:16]
    where = source or files
    return Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": where[0] if len(where) == 1 else
                                                                                      where}),
                   profile=json.dumps({"files": len(files)}))


def log_datasets(client: MlflowClient, run_id: str, datasets: list[Dataset], context: str = "training") -> None:
    if datasets:  # concurrent runs may log the same dataset at once: the loser's retry links the winner's row
        inputs = [DatasetInput(d, tags=[InputTag(key="mlflow.data.context", value=context)]) for d in datasets]
        retrying(lambda: client.log_inputs(run_id, inputs), transient=RACED_INSERT)
