"""Registered models: the pretrained encoder and each fine-tuned model as MLflow models, a new
version per run that trained one.

``log_encoder`` logs a checkpoint as an MLflow pyfunc model (``encoder_model.py``, with an
input example and a tensor signature) in the pretraining's run and registers it as a new
version of ``bertpipe-<experiment>``, tagged with the run's fingerprint; ``load_model`` gives
back the encoder's last hidden states. ``log_finetuned`` does the same for a fine-tuning
(``finetuned_model.py``: raw text in, the task's answers out) as ``bertpipe-<experiment>-<task>``. Trade-off: the model is MLflow's pyfunc, not the
``transformers`` flavor, so that every architecture bertpipe trains (concatenated
embeddings, left-to-right attention) loads the same way; for Hugging Face, the run also holds
the ``model-hf`` export where one exists.
"""

from __future__ import annotations

import tempfile
import threading
from importlib import metadata
from pathlib import Path

import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema, TensorSpec

from bertpipe.model.hf import load_config
from bertpipe.tracking import tags
from bertpipe.tracking.runs import RACED_INSERT, retrying

_FLUENT = threading.Lock()  # MLflow's model logging goes through its process-wide tracking URI


def registered_name(experiment: str) -> str:
    return f"bertpipe-{experiment}"


def log_encoder(tracking_uri: str, run_id: str, checkpoint: Path, experiment: str, fingerprint: str,
                parent: str | None = None) -> ModelVersion:
    """Log ``checkpoint`` as the run's ``encoder`` model and register it; returns the new version.
    ``parent``: the weights its pretraining started from (``models:/NAME/VERSION`` or a path)."""
    import mlflow

    cfg = load_config(checkpoint)
    ids = np.array([[2, 7, 11, 3, 0], [2, 5, 3, 0, 0]], dtype=np.int64) % cfg.vocab_size
    example = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": (ids != cfg.pad_token_id).astype(np.int64)}
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.int64), (-1, -1), "input_ids"),
                       TensorSpec(np.dtype(np.int64), (-1, -1), "token_type_ids"),
                       TensorSpec(np.dtype(np.int64), (-1, -1), "attention_mask")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, cfg.hidden_size))]))
    requirements = [f"{lib}=={metadata.version(lib)}" for lib in ("bertpipe", "torch", "safetensors", "numpy")]
    with _FLUENT:
        mlflow.set_tracking_uri(tracking_uri)
        with mlflow.start_run(run_id=run_id, nested=True):
            info = mlflow.pyfunc.log_model(name="encoder", python_model=str(Path(__file__).with_name("encoder_model.py")),
                                           artifacts={"checkpoint": str(checkpoint)}, input_example=example,
                                           signature=signature, pip_requirements=requirements)
        version = retrying(lambda: mlflow.register_model(  # concurrent runs may take the same version number: retried
            info.model_uri, registered_name(experiment),
            tags={tags.REGISTERED_FINGERPRINT: fingerprint} | ({tags.INIT: parent} if parent else {})), RACED_INSERT)
    if parent:
        mlflow.MlflowClient(tracking_uri).update_model_version(version.name, version.version,
                                                               description=f"continued pretraining of {parent}")
    return version


# An input example per task type (the columns ``bertpipe.tasks.predict.INPUTS`` names).
_EXAMPLES = {"classify": {"text": ["a fine example", "another one"]},
             "pair": {"text": ["the first sentence", "one more"], "text_pair": ["the second sentence", "and its pair"]},
             "tag": {"text": ["Alice went to Paris", "no entities here"]},
             "qa": {"question": ["who went to Paris?"], "context": ["Alice went to Paris in May."]}}


def log_finetuned(tracking_uri: str, run_id: str, finetuned: Path, checkpoint: Path, name: str, fingerprint: str) -> ModelVersion:
    """Log a fine-tuning's output as the run's ``model`` (with the checkpoint's architecture and
    vocabulary) and register it as a new version of ``bertpipe-<name>``; returns the version."""
    import mlflow
    import pandas as pd

    from bertpipe.tasks.predict import FineTuned, bundle

    requirements = [f"{lib}=={metadata.version(lib)}" for lib in ("bertpipe", "torch", "safetensors", "numpy", "tokenizers", "pandas")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = bundle(finetuned, checkpoint, Path(tmp) / "model")
        task = FineTuned.load(folder).task
        example = pd.DataFrame(_EXAMPLES[task])
        signature = ModelSignature(inputs=Schema([ColSpec("string", c) for c in example.columns]))
        with _FLUENT:
            mlflow.set_tracking_uri(tracking_uri)
            with mlflow.start_run(run_id=run_id, nested=True):
                info = mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("finetuned_model.py")),
                                               artifacts={"model": str(folder)}, input_example=example,
                                               signature=signature, pip_requirements=requirements)
            return retrying(lambda: mlflow.register_model(info.model_uri, registered_name(name),
                                                          tags={tags.REGISTERED_FINGERPRINT: fingerprint}), RACED_INSERT)
