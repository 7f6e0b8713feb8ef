"""MLflow tracking: tag names (``tags``), client helpers (``runs``) and what each stage logs (``stages``)."""

from bertpipe.tracking.runs import client_for, default_tracking_uri
from bertpipe.tracking.stages import (
    PipelineRun,
    checkpoint_tags,
    metric_logger,
    pipeline_tags,
    prefect_tags,
    preset_tags,
    track_finetune,
)

__all__ = ["PipelineRun", "checkpoint_tags", "client_for", "default_tracking_uri", "metric_logger", "pipeline_tags", "prefect_tags", "preset_tags", "track_finetune"]
