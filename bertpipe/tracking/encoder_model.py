"""The MLflow model of a bertpipe encoder: token ids in, the encoder's last hidden states out.

Logged as an MLflow "model from code" (``bertpipe.tracking.models``): MLflow keeps a copy of
this file beside the checkpoint (safetensors) and runs it to load the model, so
``mlflow.pyfunc.load_model("models:/<name>/<version>")`` gives a model whatever the embedding
fusion or attention direction (concatenated or causal models have no Hugging Face
equivalent). Loading needs ``bertpipe`` installed, and, as with any MLflow model, trusts
the model store: MLflow executes this file when it loads the model.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class BertEncoder(PythonModel):
    def load_context(self, context) -> None:
        from bertpipe.model.hf import load_checkpoint

        self.model = load_checkpoint(context.artifacts["checkpoint"]).eval()

    def predict(self, context, model_input, params=None) -> np.ndarray:
        """``input_ids`` (B, T) int64, and optionally ``token_type_ids`` and ``attention_mask`` (B, T);
        returns the last hidden states (B, T, H) as float32."""
        import torch

        def tensor(name: str) -> torch.Tensor | None:
            value = model_input.get(name) if isinstance(model_input, dict) else None
            return None if value is None else torch.as_tensor(np.asarray(value), dtype=torch.long)

        ids = tensor("input_ids") if isinstance(model_input, dict) else torch.as_tensor(np.asarray(model_input), dtype=torch.long)
        with torch.no_grad():
            out = self.model.bert(ids, tensor("token_type_ids"), tensor("attention_mask"))
        return out.last_hidden_state.float().numpy()


mlflow.models.set_model(BertEncoder())
