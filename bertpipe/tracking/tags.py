"""Every MLflow tag name bertpipe writes or searches by, in one place.

A stage's child run carries its fingerprint (``FINGERPRINT``), the string that also names its
output directory and keys Prefect's cache; a stage served from cache is tagged
``CACHE_HIT=true`` and linked (``PRODUCED_BY``) to the run that built it. Sweep runs carry the
variant and seed, so a report regroups them from MLflow alone.
"""

PARENT = "mlflow.parentRunId"  # MLflow's own: nests a run under another
RUN_NAME = "mlflow.runName"  # MLflow's own

STAGE = "bertpipe.stage"  # ingest | wordpiece | shards | phase2 | pretrain | finetune
FINGERPRINT = "bertpipe.fingerprint"
CACHE_HIT = "bertpipe.cache_hit"  # "true" | "false"
PRODUCED_BY = "bertpipe.produced_by"  # run id of the child run that built a cached output
PATH = "bertpipe.path"  # the stage output directory
PRESET = "bertpipe.preset"
PLANNED = "bertpipe.fp."  # prefix: the parent run's predicted fingerprint of each stage
CHECKPOINT = "bertpipe.checkpoint"  # the model a fine-tuning run started from
REPRODUCES = "bertpipe.reproduces"  # on a pipeline run made by `bertpipe reproduce`: the run id it re-ran

SWEEP = "bertpipe.sweep"  # "true" on a sweep's own run
SWEEP_NAME = "bertpipe.sweep_name"
VARIANT = "bertpipe.variant"
VARIANT_CHANGES = "bertpipe.variant_changes"
VARIANT_ORDER = "bertpipe.variant_order"  # the variant's place in the sweep: reports list runs in that order
SEED = "bertpipe.seed"

FLOW_RUN_ID = "prefect.flow_run_id"
FLOW_RUN_URL = "prefect.flow_run_url"

GIT_COMMIT = "bertpipe.git_commit"
GIT_DIRTY = "bertpipe.git_dirty"  # "true" when the checkout had uncommitted changes
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own: shown on the run page
VERSION = "bertpipe.version."  # prefix: the version of each library (torch, tokenizers, ...)
REGISTERED_FINGERPRINT = "bertpipe.fingerprint"  # on a registered model version: the run's output
INIT = "bertpipe.init"  # on a pretraining run, and on the model version it registers: the weights it started from
INIT_DIGEST = "bertpipe.init_digest"  # their content digest (what the pretraining's fingerprint includes)
