"""Declare and serve every deployment: ``python deployments/serve.py`` (stops on SIGTERM).

pretrain/tiny (CPU minutes on the sample corpus), pretrain/base (BERT-Base, the paper's
recipe), pretrain/large, sweep/masking (masking rate x embedding fusion, tiny) and
finetune/default (a checkpoint on the four shared downstream tasks). Each deployment is just a preset name from deployments/presets/;
runs take JSON overrides, e.g.
``prefect deployment run pretrain/base --param overrides='{"pretrain": {"steps": 10}}'``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import serve  # noqa: E402

from flows.pretrain import pretrain_flow  # noqa: E402
from flows.finetune import DEFAULT_TASKS, finetune_flow  # noqa: E402
from flows.sweep import sweep_flow  # noqa: E402

DEPLOYMENTS = {
    "tiny": "tiny preset on the bundled sample corpus: CPU minutes",
    "base": "BERT-Base (L=12, H=768, A=12) with the paper's recipe; give it your corpus",
    "large": "BERT-Large (L=24, H=1024, A=16) with the paper's recipe",
}

if __name__ == "__main__":
    serve(*(pretrain_flow.to_deployment(name, parameters={"preset": name}, description=desc, tags=["bertpipe"])
            for name, desc in DEPLOYMENTS.items()),
          sweep_flow.to_deployment("masking", parameters={"preset": "tiny", "experiment": "sweep-masking", "grid": {
              "shards.masking.masked_lm_prob": [0.15, 0.4], "pretrain.model.embedding_fusion": ["sum", "concat"]}},
              description="masking rate x embedding fusion on the tiny preset", tags=["bertpipe"]),
          finetune_flow.to_deployment("default", parameters={"tasks": [t.model_dump(mode="json") for t in DEFAULT_TASKS]},
              description="fine-tune a checkpoint (parameter 'checkpoint') on the four shared tasks", tags=["bertpipe"]))
