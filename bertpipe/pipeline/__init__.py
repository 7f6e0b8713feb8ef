"""The pretraining pipeline as a library: its config (``config``), its stage graph (``graph``) and
the one loop that runs it (``runner``), used alike by the Prefect flows, ``bertpipe reproduce``,
the benchmarks and notebooks."""

from bertpipe.pipeline.config import PipelineConfig, load_pipeline_config, pipeline_config, preset_names, with_overrides
from bertpipe.pipeline.graph import GRAPH, FinetuneJob, Job, PlannedStage, plan, stage_fingerprints
from bertpipe.pipeline.runner import (
    NoTracking,
    PipelineOutcome,
    Submit,
    Tracker,
    in_process,
    run_finetunes,
    run_pipeline,
)

__all__ = ["GRAPH", "FinetuneJob", "Job", "NoTracking", "PipelineConfig", "PipelineOutcome", "PlannedStage", "Submit",
           "Tracker", "in_process", "load_pipeline_config", "pipeline_config", "plan", "preset_names", "run_finetunes",
           "run_pipeline", "stage_fingerprints", "with_overrides"]
