"""MLflow tracking: tag names (``tags``), client helpers (``runs``), what each stage logs (``stages``),
the pipeline runner's tracker (``tracker``), lineage (``lineage``), sweeps read back (``sweeps``)."""

from bertpipe.tracking.runs import client_for, default_tracking_uri
from bertpipe.tracking.stages import (
    MetricLogger,
    PipelineRun,
    checkpoint_tags,
    finetune_inputs,
    metric_logger,
    pipeline_tags,
    prefect_tags,
    preset_tags,
    run_link,
    stage_inputs,
    track_finetune,
)
from bertpipe.tracking.tracker import MlflowTracker

__all__ = ["MetricLogger", "MlflowTracker", "PipelineRun", "checkpoint_tags", "client_for", "default_tracking_uri", "finetune_inputs", "metric_logger",
           "pipeline_tags", "prefect_tags", "preset_tags", "run_link", "stage_inputs", "track_finetune"]
