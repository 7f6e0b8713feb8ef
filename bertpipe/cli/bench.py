"""``bertpipe bench ...``: the benchmarks, each printing its figures with a last line of one JSON object.

Kept out of ``cli/main.py`` (the stage commands) and registered by ``add_commands``. This is
only the entry: each subcommand parses its flags here and calls one function of the
``benchmarks`` package, imported when the subcommand runs, so parsing flags never imports
torch, transformers or the benchmarks. ``benchmarks`` is not part of the bertpipe wheel (it
imports the peers it measures against and reads data from the source checkout): a checkout
installs it with ``make`` or ``pip install -e ./benchmarks``; without it, a bench subcommand
says so in one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

from bertpipe.experiments.suite import TASKS as SUITE  # light: pydantic only, no torch

NOT_INSTALLED = ("the benchmarks are not installed (they are not part of the bertpipe package): in a source checkout "
                 "of bertpipe, run `make` or `pip install -e ./benchmarks`, then `bertpipe bench` again")


def benchmark(name: str) -> ModuleType:
    """The module ``benchmarks.<name>``; without the ``benchmarks`` package, one line and exit status 2."""
    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ImportError as e:
        if e.name not in ("benchmarks", f"benchmarks.{name}"):
            raise  # installed, but something it imports is missing: that traceback says what
        print(f"bertpipe bench: error: {NOT_INSTALLED}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_bench_train(args: argparse.Namespace) -> None:
    bench_train = benchmark("train").bench_train

    if args.compile and args.size != "small":
        raise SystemExit("bertpipe bench train: error: --compile is measured at the small size only")
    print(json.dumps(bench_train(steps=args.steps, repeats=args.repeats, profile=args.profile, with_compile=args.compile,
                                 size=args.size)))


def _cmd_bench_gpu(args: argparse.Namespace) -> None:
    gpu = benchmark("gpu")

    res = gpu.bench_gpu(args.device, True if args.tiny else None, args.work, args.out, args.corpus,
                        tuple(args.parts or gpu.PARTS), args.budget)
    print(json.dumps(res))
    if not res["ok"]:
        raise SystemExit(1)


def _cmd_bench_finetune(args: argparse.Namespace) -> None:
    bench_finetune = benchmark("finetune").bench_finetune

    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    print(json.dumps(bench_finetune(args.work, args.tasks, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                    seeds=tuple(args.seeds), precisions=precisions, train_rows=args.train_rows, profile=args.profile)))


def _cmd_bench_features(args: argparse.Namespace) -> None:
    bench_features = benchmark("finetune").bench_features

    print(json.dumps(bench_features(args.work, args.checkpoint, epochs=args.epochs, lr=args.lr, feature_lr=args.feature_lr,
                                    batch_size=args.batch_size)))


def _cmd_bench_tiny(args: argparse.Namespace) -> None:
    bench_tiny = benchmark("tiny").bench_tiny

    print(json.dumps(bench_tiny(args.work, args.preset, json.loads(args.overrides) if args.overrides else None)))


def _cmd_bench_quality(args: argparse.Namespace) -> None:
    bench_quality = benchmark("quality").bench_quality

    print(json.dumps(bench_quality(args.work, args.preset, json.loads(args.overrides) if args.overrides else None,
                                   [str(c) for c in args.corpus] if args.corpus else None, eval_points=args.eval_points,
                                   eval_sequences=args.eval_sequences, heldout_fraction=args.heldout_fraction, seed=args.seed,
                                   plot_path=args.plot, map_workers=args.map_workers, loader_workers=args.loader_workers,
                                   threads=args.threads, train_seeds=args.train_seeds)))


def _cmd_bench_init(args: argparse.Namespace) -> None:
    bench_init = benchmark("finetune").bench_init

    print(json.dumps(bench_init(args.checkpoint, args.work, args.tasks, tuple(args.seeds),
                                json.loads(args.settings) if args.settings else None,
                                json.loads(args.train_rows) if args.train_rows else None, args.lrs)))


def _cmd_bench_scale(args: argparse.Namespace) -> None:
    if args.compressed:
        print(json.dumps(benchmark("compressed").bench_compressed(args.work, mb=args.mb, scale=args.scale, repeats=args.repeats)))
        return
    bench_scale = benchmark("scale").bench_scale

    print(json.dumps(bench_scale(args.work, mb=args.mb, scale=args.scale, repeats=args.repeats)))


def _cmd_bench_dedup(args: argparse.Namespace) -> None:
    bench_dedup = benchmark("dedup").bench_dedup

    print(json.dumps(bench_dedup(args.corpus, args.threshold, args.shingle, args.perms, args.words, args.docs)))


def _cmd_bench_wiki(args: argparse.Namespace) -> None:
    bench_wiki = benchmark("wiki").bench_wiki

    bench_wiki(args.dump, args.work, processes=args.processes, repeats=args.repeats)  # prints its table and JSON


def _cmd_bench_sweep(args: argparse.Namespace) -> None:
    bench_sweep = benchmark("sweep").bench_sweep

    print(json.dumps(bench_sweep(args.work, steps=args.steps, seeds=args.seeds)))


def _cmd_bench_data(args: argparse.Namespace) -> None:
    bench_data = benchmark("data").bench_data

    print(json.dumps(bench_data(args.corpus, workers=args.workers, dupe_factor=args.dupe_factor, scale=args.scale,
                                 repeats=args.repeats)))


def add_commands(sub) -> None:
    """Register ``bench`` and its subcommands on the top-level subparsers ``sub``."""
    bench = sub.add_parser("bench", help="benchmarks (print figures; last line is one JSON object)")
    bsub = bench.add_subparsers(dest="bench", required=True)
    p = bsub.add_parser("data", help="raw text → masked shards throughput, tokenizer ceiling, peak RSS at 1x and 4x")
    p.add_argument("--corpus", nargs="+", default=None, help="input files (default: ../shared/data/corpora gutenberg + sotu)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--dupe-factor", type=int, default=5)
    p.add_argument("--scale", type=int, default=4, help="size of the larger corpus for the RSS comparison")
    p.add_argument("--repeats", type=int, default=3, help="runs on the 1x corpus; the median is reported")
    p.set_defaults(func=_cmd_bench_data)
    p = bsub.add_parser("scale", help="ingest (one MediaWiki dump, one JSONL) and shards at 1 and 2 workers, local and Dask")
    p.add_argument("--work", type=Path, default=Path("cache/bench-scale"), help="inputs and outputs (inputs are reused)")
    p.add_argument("--mb", type=int, default=100, help="size of each single input file")
    p.add_argument("--scale", type=int, default=4, help="size of the larger inputs for the memory check, as a multiple")
    p.add_argument("--repeats", type=int, default=3, help="runs of each (stage, executor); the median is reported")
    p.add_argument("--compressed", action="store_true", help="instead: whole `bertpipe ingest` commands on the inputs "
                   "compressed as published (one bzip2 stream, .jsonl.gz, .jsonl.zst), 1 and 2 workers, local and Dask")
    p.set_defaults(func=_cmd_bench_scale)
    p = bsub.add_parser("dedup", help="near-duplicate removal (MinHash LSH) vs datasketch: documents per CPU-second, "
                        "recall and false removals against the exact Jaccard")
    p.add_argument("--corpus", type=Path, default=None, help="JSONL.gz with a text field (default: the shared sotu.jsonl.gz)")
    p.add_argument("--threshold", type=float, default=0.75, help="Jaccard threshold, both sides")
    p.add_argument("--shingle", type=int, default=5, help="words per shingle, both sides")
    p.add_argument("--perms", type=int, default=128, help="MinHash permutations, both sides")
    p.add_argument("--words", type=int, default=300, help="words per document")
    p.add_argument("--docs", type=int, default=2000, help="original documents (each also gets an edited copy)")
    p.set_defaults(func=_cmd_bench_dedup)
    p = bsub.add_parser("sweep", help="a 2-variant sweep's whole command: one run after another vs max_parallel 2 on "
                        "two Prefect workers (one thread each)")
    p.add_argument("--work", type=Path, default=Path("cache/bench-sweep"), help="servers' homes, stores and outputs (wiped)")
    p.add_argument("--steps", type=int, default=300, help="pretraining steps of each run (tiny preset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds per variant")
    p.set_defaults(func=_cmd_bench_sweep)
    p = bsub.add_parser("wiki", help="MediaWiki ingest vs WikiExtractor on one dump: CPU-s, residue, words kept")
    p.add_argument("dump", type=Path, help="MediaWiki XML dump (benchmarks.wikidump writes one from real text)")
    p.add_argument("--work", type=Path, default=Path("cache/bench-wiki"), help="where both outputs go")
    p.add_argument("--processes", type=int, default=1, help="processes for each extractor")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each; the median by CPU is reported")
    p.set_defaults(func=_cmd_bench_wiki)
    p = bsub.add_parser("train", help="training tokens/s and MFU: ours vs transformers.BertForPreTraining")
    p.add_argument("--size", choices=["small", "base", "minilm"], default="small",
                   help="small: hidden 256, 4 layers (minutes); base: BERT-Base shape, both sides in fp32 and bf16 (about 10 "
                   "minutes on 2 cores); minilm: MiniLM-L6 with its published weights")
    p.add_argument("--steps", type=int, default=None, help="timed steps per repetition (default: the size's: 8 small, "
                   "3 base, 8 minilm)")
    p.add_argument("--repeats", type=int, default=None, help="alternating repetitions; medians are reported (default 3)")
    p.add_argument("--profile", action="store_true", help="also: our steps' operator time by kind of work (torch.profiler)")
    p.add_argument("--compile", action="store_true", help="also: our bf16 step under torch.compile (inductor)")
    p.set_defaults(func=_cmd_bench_train)
    p = bsub.add_parser("gpu", help="the GPU check: BERT-Base/Large seq/s and MFU, 200-step pretraining, compile, torchrun "
                        "(tiny sizes on CPU); writes one JSON")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cuda, cuda:1, cpu")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (the default without CUDA)")
    p.add_argument("--work", type=Path, default=Path("cache/bench-gpu"), help="data stages (reused) and runs")
    p.add_argument("--out", type=Path, default=Path("cache/bench-gpu/gpu-check.json"), help="the JSON result")
    p.add_argument("--corpus", type=Path, nargs="+", default=None, help="corpus for the pretraining (default: data/sample)")
    p.add_argument("--parts", nargs="+", choices=["throughput", "pretrain", "compile", "torchrun"], default=None,
                   help="run only these parts")
    # 280 s: the throughput part stops starting new shapes at 45% of it, so the whole check stays under 5 minutes
    p.add_argument("--budget", type=float, default=280.0, help="seconds the check aims to finish in")
    p.set_defaults(func=_cmd_bench_gpu)
    p = bsub.add_parser("tiny", help="the tiny preset on the sample corpus: held-out MLM/NSP after its 10-minute run")
    p.add_argument("--work", type=Path, default=Path("cache/bench-tiny"), help="scratch folder (data stages reused)")
    p.add_argument("--preset", default="tiny", help="pipeline preset (bertpipe/experiments/presets or $BERTPIPE_PRESETS)")
    p.add_argument("--overrides", help="JSON deep-merged into the preset, e.g. '{\"pretrain\": {\"seed\": 7}}'")
    p.set_defaults(func=_cmd_bench_tiny)
    p = bsub.add_parser("quality", help="held-out MLM loss vs wall-clock time from the same raw text: our pipeline vs "
                        "transformers + datasets (run_mlm recipe, Trainer)")
    p.add_argument("--work", type=Path, default=Path("cache/bench-quality"), help="scratch folder (emptied first: all timed afresh)")
    p.add_argument("--preset", default="tiny-shared", help="our recipe; both sides take its model, vocabulary, steps, "
                   "batch, length and optimizer")
    p.add_argument("--overrides", help="JSON deep-merged into the preset, e.g. '{\"pretrain\": {\"steps\": 1000}}'")
    p.add_argument("--corpus", type=Path, nargs="+", default=None, help="raw corpus (default: the preset's)")
    p.add_argument("--eval-points", type=int, default=15, help="checkpoints per side, evenly spaced in steps")
    p.add_argument("--eval-sequences", type=int, default=2048, help="held-out windows evaluated")
    p.add_argument("--heldout-fraction", type=float, default=0.05, help="documents of each input file held out")
    p.add_argument("--seed", type=int, default=12345, help="held-out split and masking")
    p.add_argument("--train-seeds", type=int, nargs="+", default=None,
                   help="train both sides once per seed and compare the seeds' mean curves (default: the preset's one seed)")
    p.add_argument("--plot", type=Path, default=Path("docs/results/quality-loss-vs-time.png"), help="loss/accuracy vs time")
    p.add_argument("--map-workers", type=int, default=None, help="transformers side: datasets map num_proc")
    p.add_argument("--loader-workers", type=int, default=1, help="transformers side: dataloader_num_workers (1: measured best here)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    p.set_defaults(func=_cmd_bench_quality)
    p = bsub.add_parser("finetune", help="fine-tuning MiniLM's real weights: ours vs a plain transformers loop, 4 shared tasks")
    p.add_argument("--work", type=Path, default=Path("cache/bench-finetune"), help="scratch folder")
    p.add_argument("--tasks", nargs="+", choices=list(SUITE), default=None)
    p.add_argument("--epochs", type=float, default=None, help="override every task's epochs (default: per task)")
    p.add_argument("--lr", type=float, default=None, help="override every task's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="override every task's batch size")
    p.add_argument("--precision", choices=["fp32", "bf16", "both"], default="fp32",
                   help="both sides in fp32, or both under bf16 autocast, or each of the two")
    p.add_argument("--train-rows", type=int, default=None, help="train on this many seeded random rows (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="fine-tune each side once per seed: mean scores, the gap's 95%% interval, summed times")
    p.add_argument("--profile", action="store_true", help="also: operator time by kind for a few steps of each side")
    p.set_defaults(func=_cmd_bench_finetune)
    p = bsub.add_parser("init", help="a checkpoint vs random init of its architecture on the 4 shared tasks, over seeds")
    p.add_argument("checkpoint", type=Path, help="bertpipe checkpoint directory (e.g. RUN/final)")
    p.add_argument("--work", type=Path, default=Path("cache/bench-init"), help="scratch folder")
    p.add_argument("--tasks", nargs="+", choices=list(SUITE), default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--settings", help="JSON: per-task fine-tuning settings over the defaults, by task name")
    p.add_argument("--train-rows", help='JSON: training rows sampled per TSV task (default {"bible-paraphrase": 2000}; '
                   '{} = all rows)')
    p.add_argument("--lrs", nargs="+", type=float, default=None,
                   help="each init at its own best of these learning rates, chosen on the first seed")
    p.set_defaults(func=_cmd_bench_init)
    p = bsub.add_parser("features", help="Table 7 on WNUT-16: fine-tuned vs BiLSTM on six frozen layer combinations")
    p.add_argument("--checkpoint", type=Path, help="bertpipe checkpoint (default: MiniLM's weights, imported)")
    p.add_argument("--work", type=Path, default=Path("cache/bench-features"), help="working folder")
    p.add_argument("--epochs", type=float, default=4)
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate")
    p.add_argument("--feature-lr", type=float, default=1e-3, help="learning rate of the BiLSTM on frozen features")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=_cmd_bench_features)
