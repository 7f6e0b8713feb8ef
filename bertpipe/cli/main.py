"""The ``bertpipe`` command: one subcommand per stage, flags generated from the configs.

Each subcommand calls the same plain function the Prefect flows call, prints where the
output went (built or reused from cache) and its key counts. Errors in the input are
printed as one clear line and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path

from bertpipe.cli.args import add_config_args, config_from_args
from bertpipe.data.readers import InputError


def _cmd_ingest(args: argparse.Namespace) -> None:
    from bertpipe.data.ingest import IngestConfig, ingest

    cfg = config_from_args(IngestConfig, args)
    res = ingest(args.inputs, cfg, args.out, map_units=_executor(args))
    c = res.manifest["counts"]
    print(res.summary())
    print(f"  {c['documents']} documents, {c['sentences']} sentences, {c['characters']} characters from {c['files']} files")
    print(f"  skipped: {c['files_skipped']} files, {c['short_documents_dropped']} short documents, "
          f"{c['duplicates_dropped']} duplicates, {c['bad_records_skipped']} bad records; "
          f"{c['utf8_replacements']} UTF-8 replacements")
    if "near_duplicates_dropped" in c:
        nd = res.manifest["near_duplicates"]
        print(f"  near-duplicates dropped: {c['near_duplicates_dropped']} (Jaccard >= {nd['threshold']}, shingles of "
              f"{nd['shingle']} words, {nd['perms']} permutations; examples in the manifest)")
    if rules := {k: v for k, v in c.items() if k.startswith(("filtered_", "lines_removed_"))}:
        print("  quality filters: " + ", ".join(f"{k.split('_', 1)[1].removeprefix('removed_')} {v}"
                                                 + (" lines" if k.startswith("lines") else "") for k, v in rules.items()))
    for f in res.manifest["files"]:  # only with --on-bad-file skip: otherwise the stage failed naming them
        if f["status"] != "ok":
            print(f"bertpipe ingest: skipped {f['path']}: {f['status'].split(':', 1)[1]}", file=sys.stderr)
    for f in res.manifest["unsupported"]:
        print(f"bertpipe ingest: skipped {f['path']}: {f['reason']}", file=sys.stderr)


def _executor(args: argparse.Namespace):
    from bertpipe.core.executors import on_dask

    return on_dask(args.dask) if args.dask else None


def _cmd_wordpiece(args: argparse.Namespace) -> None:
    from bertpipe.data.wordpiece import WordPieceConfig, train_wordpiece

    cfg = config_from_args(WordPieceConfig, args)
    if args.docs is None and cfg.vocab_file is None:
        raise SystemExit("bertpipe wordpiece: give a documents directory to train on, or --vocab-file to import")
    res = train_wordpiece(args.docs, cfg, args.out)
    print(res.summary())
    print(f"  vocabulary: {res.manifest['counts']['vocab_size']} tokens; special ids {res.manifest['special_ids']}")


def _cmd_shards(args: argparse.Namespace) -> None:
    from bertpipe.data.shards import ShardsConfig, build_shards

    cfg = config_from_args(ShardsConfig, args)
    res = build_shards(args.docs, args.tokenizer, cfg, args.out, map_units=_executor(args))
    c = res.manifest["counts"]
    print(res.summary())
    print(f"  {c['rows']} instances in {len(res.manifest['shards'])} shards, mean length {c['tokens'] / c['rows']:.1f}, "
          f"label 1 (random next / swapped): {c['random_next'] / c['rows']:.3f}")
    if c.get("masked"):
        print(f"  masked {c['masked'] / c['tokens']:.3f} of tokens: [MASK] {c['masked_as_mask'] / c['masked']:.3f}, "
              f"random {c['masked_as_random'] / c['masked']:.3f}, kept {c['masked_as_kept'] / c['masked']:.3f}")


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from bertpipe.train.config import PretrainConfig
    from bertpipe.train.launcher import FollowerNode
    from bertpipe.train.stage import TrainingInterrupted, pretrain_stage

    cfg = config_from_args(PretrainConfig, args, json.loads(Path(args.config).read_text()) if args.config else None,
                           source=args.config or "")
    try:
        res = pretrain_stage(args.shards, cfg, args.out, phase2=args.phase2_shards, resume=not args.no_resume)
    except TrainingInterrupted as e:
        logging.warning("%s", e)
        raise SystemExit(143) from None
    except FollowerNode as e:
        print(f"pretrain: {e}")
        return
    m = res.manifest
    print(res.summary())
    print(f"  {m['step']} steps, {m['parameters']:,} parameters; model in {res.file(m['final'])}")
    if ev := m.get("eval"):
        print(f"  held-out MLM loss {ev['mlm_loss']:.4f}, accuracy {ev['mlm_acc']:.4f}"
              + (f"; NSP accuracy {ev['nsp_acc']:.4f}" if ev.get("nsp_acc") is not None else ""))


def _cmd_convert(args: argparse.Namespace) -> None:
    from bertpipe.model.hf import import_hf

    report = import_hf(args.from_hf, args.out)
    print(f"imported {args.from_hf} -> {args.out}")
    for key in report.missing:
        print(f"  left at initialization (not in the HF weights): {key}")


def _cmd_export(args: argparse.Namespace) -> None:
    from bertpipe.model.hf import export_hf

    print(f"exported {args.checkpoint} -> {export_hf(args.checkpoint, args.hf)} (transformers.BertForPreTraining format)")


def _cmd_finetune(args: argparse.Namespace) -> None:
    from bertpipe.tasks.config import FinetuneConfig
    from bertpipe.tasks.finetune import finetune_stage

    cfg = config_from_args(FinetuneConfig, args, task=args.task)
    res = finetune_stage(args.checkpoint, args.train, args.eval, cfg, args.out)
    summary, main = res.manifest, res.manifest["main_metric"]
    print(res.summary())
    print(f"  {args.task}: {main} {summary[main]:.4f} ± {summary[main + '_std']:.4f} over seeds {summary['seeds']} "
          f"-> {res.path / 'metrics.json'}")
    if uri := (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        from bertpipe.tracking import track_finetune

        run = track_finetune(uri, res, str(args.checkpoint), str(args.train), str(args.eval), cfg.model_dump(mode="json"))
        print(f"  tracked in MLflow run {run}")


def _cmd_report(args: argparse.Namespace) -> None:
    from bertpipe.core.settings import base_dir
    from bertpipe.experiments.report import report_from_csv, sweep_report
    from bertpipe.tracking import client_for

    if args.from_csv:  # the tables from an exported runs.csv, no tracking store
        out = Path(args.out or base_dir() / "reports" / args.from_csv.stem)
        print(report_from_csv(args.from_csv, out, args.experiment, args.baseline)["markdown"].read_text())
        print(f"report written to {out}")
        return
    if not args.experiment:
        raise SystemExit("bertpipe report: give the sweep's MLflow experiment, or --from-csv RUNS.csv")
    out = Path(args.out or base_dir() / "reports" / args.experiment)
    paths = sweep_report(client_for(args.tracking_uri), args.experiment, out, args.run, log_to_mlflow=not args.no_log)
    print(paths["markdown"].read_text())
    print(f"report written to {out}" + ("" if args.no_log else " and logged to the sweep's MLflow run"))


DASK_HELP = ("run the units on the Dask scheduler at ADDRESS (tcp://host:8786) instead of local processes; "
             "inputs and --out must be on storage every worker sees at the same path")


def build_parser() -> argparse.ArgumentParser:
    from bertpipe.data.ingest import IngestConfig
    from bertpipe.data.shards import ShardsConfig
    from bertpipe.data.wordpiece import WordPieceConfig

    parser = argparse.ArgumentParser(prog="bertpipe", description="Pretrain and evaluate BERT-style encoders on your own corpus.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="raw text (txt, JSONL(.gz|.zst), Parquet, MediaWiki XML(.bz2), dirs, globs) → documents")
    p.add_argument("inputs", nargs="+", help="files, directories or glob patterns")
    p.add_argument("--out", type=Path, required=True, help="stage root: output goes to OUT/<fingerprint>/, OUT/latest names it")
    p.add_argument("--dask", metavar="ADDRESS", help=DASK_HELP)
    add_config_args(p, IngestConfig)
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("wordpiece", help="train a WordPiece vocabulary on documents, or import a vocab.txt")
    p.add_argument("docs", nargs="?", type=Path, help="ingest output (directory or its root)")
    p.add_argument("--out", type=Path, required=True, help="stage root")
    add_config_args(p, WordPieceConfig)
    p.set_defaults(func=_cmd_wordpiece)

    p = sub.add_parser("shards", help="documents + vocabulary → NSP/SOP pairs, masked, in Parquet shards")
    p.add_argument("docs", type=Path, help="ingest output (directory or its root)")
    p.add_argument("--tokenizer", type=Path, required=True, help="wordpiece output (directory or its root)")
    p.add_argument("--out", type=Path, required=True, help="stage root")
    p.add_argument("--dask", metavar="ADDRESS", help=DASK_HELP)
    add_config_args(p, ShardsConfig)
    p.set_defaults(func=_cmd_shards)

    from bertpipe.train.config import PretrainConfig

    p = sub.add_parser("pretrain", help="pretrain on shards (MLM + NSP); --devices N runs N processes under torchrun")
    p.add_argument("shards", help="shards output (directory or its root)")
    p.add_argument("--out", type=Path, required=True, help="stage root: output goes to OUT/<fingerprint>/; a stopped run "
                   "resumes from OUT/.<fingerprint>.partial/ when run again")
    p.add_argument("--phase2-shards", help="shards for phase 2 (e.g. length 512)")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an interrupted run")
    p.add_argument("--config", help="JSON file of PretrainConfig fields; flags override it")
    add_config_args(p, PretrainConfig, aliases={"init": "--init-from"})
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("convert", help="import a HF BERT directory (config.json + model.safetensors) as a bertpipe checkpoint")
    p.add_argument("--from-hf", type=Path, required=True, help="HF model directory")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("export", help="export a bertpipe checkpoint to a HF directory (BertForPreTraining)")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (e.g. RUN/final)")
    p.add_argument("--hf", type=Path, required=True, help="HF directory to write")
    p.set_defaults(func=_cmd_export)

    from bertpipe.tasks.config import FinetuneConfig

    p = sub.add_parser("finetune", help="fine-tune (or train a feature-based head) and evaluate: classify, pair, qa, tag")
    p.add_argument("task", choices=["classify", "pair", "qa", "tag"])
    p.add_argument("--checkpoint", type=Path, required=True, help="bertpipe checkpoint dir (e.g. RUN/final, or bertpipe convert output)")
    p.add_argument("--train", type=Path, required=True, help="training file (TSV, SQuAD JSON, CoNLL)")
    p.add_argument("--eval", type=Path, required=True, help="evaluation file, same format")
    p.add_argument("--out", type=Path, required=True, help="stage root: OUT/<fingerprint>/ gets metrics.json, model.safetensors, head.json")
    p.add_argument("--tracking-uri", help="log to MLflow here (default: $MLFLOW_TRACKING_URI if set)")
    add_config_args(p, FinetuneConfig, skip={"task"})
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("report", help="a sweep's table (mean ± std over seeds), plots and markdown, from MLflow alone")
    p.add_argument("experiment", nargs="?", help="MLflow experiment of the sweep (e.g. sweep-masking-rate); "
                   "with --from-csv, the sweep's name (default: from the file name)")
    p.add_argument("--from-csv", type=Path, help="rebuild the tables and differences from a report's runs.csv "
                   "(e.g. docs/results/fusion-runs.csv) instead of MLflow")
    p.add_argument("--baseline", help="with --from-csv: the variant to compare with (default: the sweep's baseline)")
    p.add_argument("--run", help="the sweep's MLflow run id (default: the newest finished sweep)")
    p.add_argument("--out", help="output folder (default: reports/EXPERIMENT)")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the base dir)")
    p.add_argument("--no-log", action="store_true", help="do not log the report as artifacts of the sweep run")
    p.set_defaults(func=_cmd_report)

    from bertpipe.cli.plan import add_commands

    add_commands(sub)  # plan, reproduce

    from bertpipe.cli.bench import add_commands as add_bench

    add_bench(sub)  # bench data|scale|wiki|train|gpu|tiny|quality|finetune|init|features
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        args.func(args)
    except (InputError, ValueError) as e:  # ConfigError included: one line per problem
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"bertpipe {args.command}: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as e:  # the environment: a missing or unreadable path, --out under a file, a full disk
        print(f"bertpipe {args.command}: error: {environment_fault(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as e:  # a full disk, as torch and safetensors report it
        if (fault := disk_full(e)) is None:
            raise
        print(f"bertpipe {args.command}: error: {fault}", file=sys.stderr)
        raise SystemExit(2) from None


def environment_fault(e: OSError) -> str:
    """``<path>: <cause>`` for an OS error; a message of ours (no errno) as it is."""
    if e.errno is None:
        return str(e)
    cause = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e)).lower()
    paths = [p for p in (e.filename, e.filename2) if p is not None]
    return f"{' -> '.join(map(str, paths))}: {cause}" if paths else cause


def disk_full(e: Exception) -> str | None:
    """A full disk, whichever writer hit it: torch says ``[enforce fail at inline_container.cc] .
    unexpected pos``, safetensors ``I/O error: No space left on device``."""
    text = str(e)
    if "unexpected pos" in text or "No space left on device" in text:
        return "no space left on device (while writing a checkpoint)"
    return None


if __name__ == "__main__":
    main()
