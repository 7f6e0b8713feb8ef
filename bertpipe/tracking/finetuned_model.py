"""The MLflow model of a bertpipe fine-tuning: rows of raw text in, the task's answers out.

Logged as an MLflow "model from code" (``bertpipe.tracking.models.log_finetuned``) with one
artifact, the folder ``bertpipe.tasks.predict.bundle`` makes (fine-tuned weights, head,
architecture, vocabulary). ``mlflow.pyfunc.load_model(...).predict(df)`` takes a DataFrame
with the task's columns (``text``; ``text`` and ``text_pair``; ``question`` and ``context``)
and returns one with ``label`` and ``probability``, ``score``, ``tags`` or ``answer``: the
predictions ``bertpipe.tasks.predict.FineTuned`` gives, which are those the run's metrics
counted. As with any MLflow model, loading trusts the model store (MLflow runs this file).
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class FineTunedModel(PythonModel):
    def load_context(self, context) -> None:
        from bertpipe.tasks.predict import FineTuned

        self.model = FineTuned.load(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from bertpipe.tasks.predict import as_rows

        return pd.DataFrame(self.model.predict(as_rows(model_input)))


mlflow.models.set_model(FineTunedModel())
