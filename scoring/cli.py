"""`python -m scoring --model NAME[:VERSION] --data in.csv --out out.csv`.

Exit codes follow the trainer's: 0 done (rejected rows are counted, not fatal), 2 bad input (no
such file, model or column), 4 the output cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from modelstore import LoadedModel, ModelStoreError, SeveralModelsError
from scoring.batch import BatchScorer, ScoringError, Summary
from service.loading import RuntimeUnavailableError, load_model
from service.settings import Settings

EXIT_BAD_INPUT = 2
EXIT_WRITE = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scoring", description=__doc__)
    parser.add_argument(
        "--model", metavar="NAME[:VERSION]", help="default: the only model in the store, latest"
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="the CSV or Parquet file to score (a header row)"
    )
    parser.add_argument("--out", required=True, type=Path, help="input columns plus predictions")
    parser.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="spark: read, score and write with Apache Spark (--data and --out any path Spark "
        "takes; the outputs are directories of part files)",
    )
    parser.add_argument(
        "--master", help="with --engine spark: the Spark master (default: spark-submit's, or local)"
    )
    parser.add_argument(
        "--rejects", type=Path, help="rows that failed validation (default: OUT's name + .rejects)"
    )
    parser.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("MODEL_DIR", "models"))
    )
    parser.add_argument("--runtime", choices=["auto", "onnx", "sklearn"], default="auto")
    parser.add_argument(
        "--unknown-categories",
        choices=["reject", "accept"],
        default="reject",
        help="accept: score a category not seen in training as the pipeline does (as unseen)",
    )
    parser.add_argument("--sep", help="the CSV's separator (default: detected among , ; tab |)")
    parser.add_argument(
        "--encoding", help="the CSV's text encoding (default: UTF-8, with or without a BOM)"
    )
    parser.add_argument(
        "--missing-values",
        default="",
        help="extra comma-separated markers read as missing, as a config's [data] missing_values",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name, _, version = (args.model or "").partition(":")
    rejects = args.rejects or args.out.with_name(f"{args.out.stem}.rejects{args.out.suffix}")
    spark = args.engine == "spark"
    if spark and args.runtime == "sklearn":
        print("error: Spark scoring runs the version's ONNX graph: drop --runtime", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not spark and not args.data.is_file():
        print(f"error: {args.data} is not a file", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        settings = Settings(
            model_dir=args.models_dir,
            model_name=name or None,
            model_version=version or "latest",
            runtime="onnx" if spark else args.runtime,
        )
        loaded = load_model(settings)
    except SeveralModelsError as exc:
        print(
            f"error: several models in {exc.root} ({', '.join(exc.names)}): choose one with "
            "--model NAME[:VERSION]",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except (ModelStoreError, RuntimeUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:  # the version stays held (prune spares it) until the files are written
        if spark:
            from scoring.spark_cli import run_on_spark

            return run_on_spark(args, loaded, str(rejects))
        return _score(args, loaded, rejects)
    finally:
        if loaded.hold is not None:
            loaded.hold.close()


def _score(args: argparse.Namespace, loaded: LoadedModel, rejects: Path) -> int:
    markers = [m for m in args.missing_values.split(",") if m]
    scorer = BatchScorer(loaded, markers, args.unknown_categories == "accept")
    started = time.perf_counter()
    show = _progress(started) if sys.stderr.isatty() else None
    try:
        sep = args.sep.replace("\\t", "\t") if args.sep else None
        summary = scorer.score(args.data, args.out, rejects, show, args.encoding, sep)
    except ScoringError as exc:
        print(f"\nerror: {exc}" if show else f"error: {exc}", file=sys.stderr)
        return EXIT_WRITE if "cannot write" in str(exc) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted; nothing written", file=sys.stderr)
        return 130
    if show:
        print(file=sys.stderr)
    seconds = time.perf_counter() - started
    ref = loaded.ref
    print(
        f"scored {summary.scored} of {summary.rows} rows with {ref.name} version {ref.version} "
        f"({scorer.predictor.runtime}) in {seconds:.1f}s -> {args.out}"
    )
    if summary.rejected:
        print(f"rejected {summary.rejected} rows (row number and reason) -> {rejects}")
    return 0


def _progress(started: float) -> Callable[[Summary], None]:
    def show(summary: Summary) -> None:
        rate = summary.rows / max(time.perf_counter() - started, 1e-9)
        print(
            f"\r  {summary.rows:,} rows read, {summary.rejected:,} rejected, {rate:,.0f} rows/s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return show
