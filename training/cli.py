"""`python -m training`: train, evaluate, gate and publish one model version."""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, get_args

import joblib
import numpy as np
import sklearn
from sklearn.model_selection import train_test_split

from modelstore import (
    FORMAT_VERSION,
    ArtifactInfo,
    Metadata,
    ModelStore,
    ModelStoreError,
    StoreWriteError,
)
from modelstore.metadata import DataInfo, GitInfo, SplitInfo
from modelstore.profile import build_profile
from modelstore.store import StoreLockedError, check_name
from training.config import (
    PACKAGE_DIR,
    Estimator,
    TaskChoice,
    TrainingConfig,
    check_gate_task,
    load_config,
)
from training.data import Dataset, load_dataset
from training.errors import QualityGateError, TrainingError
from training.evaluate import check_gate, score
from training.export import compile_pipeline
from training.pipeline import build_pipeline, effective_params, make_estimator
from training.report import prepare as prepare_report

EXIT_BAD_INPUT = 2
EXIT_GATE = 3
EXIT_STORE_WRITE = 4
EXIT_STORE_LOCKED = 5
T = TypeVar("T")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a scikit-learn model on a CSV and publish it to the model store.",
    )
    parser.add_argument("--config", type=Path, help="TOML config (default: the penguins model)")
    parser.add_argument("--data", type=Path, help="CSV file to train on")
    parser.add_argument("--target", help="column to predict")
    parser.add_argument("--name", help="model name in the store")
    parser.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("MODEL_DIR", "models"))
    )
    parser.add_argument("--seed", type=int, help="random seed for the split and the estimator")
    parser.add_argument(
        "--estimator", choices=get_args(Estimator), help="model family (as [model] estimator)"
    )
    parser.add_argument("--task", choices=get_args(TaskChoice), help="as [model] task")
    parser.add_argument("--sep", help="the CSV's separator (default: detected among , ; tab |)")
    parser.add_argument(
        "--encoding", help="the CSV's text encoding (default: UTF-8, with or without a BOM)"
    )
    parser.add_argument(
        "--no-report", action="store_true", help="publish without report.html (faster)"
    )
    parser.add_argument(
        "--skip-if-present",
        action="store_true",
        help="do nothing if the store already holds a model (for compose's first start)",
    )
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> TrainingConfig:
    # `--data` without `--config` means "any CSV": start from neutral defaults, not penguins.
    config = load_config(args.config) if args.config or not args.data else TrainingConfig()
    if args.data:
        config.data.path = args.data
        if args.target is None and args.config is None:
            raise TrainingError("--target is required with --data")
    if args.target:
        config.data.target = args.target
    if args.seed is not None:
        config.seed = args.seed
    if args.name:
        config.name = args.name
    if args.estimator:
        config.model.estimator = args.estimator
    if args.task:
        config.model.task = args.task
    if args.sep is not None:
        if len(args.sep.replace("\\t", "\t")) != 1:
            raise TrainingError(f"--sep must be one character, not {args.sep!r}")
        config.data.sep = args.sep.replace("\\t", "\t")
    if args.encoding:
        config.data.encoding = args.encoding
    if args.no_report:
        config.report = False
    if config.data.path is None or config.data.target is None:
        raise TrainingError("no data: give --data FILE --target COLUMN or a config with [data]")
    if config.name is None:
        config.name = re.sub(r"[^A-Za-z0-9._-]", "-", config.data.path.stem)[:64] or "model"
    check_name(config.name)  # refuse a bad name before the fit, not after
    return config


def step(label: str, action: Callable[[], T]) -> T:
    """Run one stage with a progress line on stderr, so long fits never look stuck."""
    print(f"  {label} ...", end="", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        result = action()
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    print(f" done ({time.perf_counter() - started:.2f}s)", file=sys.stderr, flush=True)
    return result


def train(config: TrainingConfig, models_dir: Path) -> tuple[Metadata, Path]:
    data_path, target, name = config.data.path, config.data.target, config.name
    if data_path is None or target is None or name is None:
        raise TrainingError("internal: train() needs a resolved config")
    store = ModelStore(models_dir)
    store.check_writable(name)  # a store that cannot take the result fails before the fit
    dataset = step(
        f"reading {data_path}",
        lambda: load_dataset(
            data_path,
            target,
            config.model.task,
            config.data.drop,
            config.data.missing_values,
            config.data.types,
            config.data.encoding,
            config.data.sep,
        ),
    )
    for note in dataset.notes:
        print(f"  note: {note}", file=sys.stderr)
    if config.gate is not None:
        try:
            check_gate_task(config.gate.metric, dataset.task)
        except ValueError as exc:
            raise TrainingError(f"[gate] {exc}") from None
    family = config.model.estimator
    estimator = make_estimator(family, dataset.task, config.model.params, config.seed)
    pipeline = build_pipeline(dataset.features, estimator, family)
    X_train, X_test, y_train, y_test = split(dataset, config)
    step(
        f"fitting {family} {dataset.task} on {len(y_train)} rows"
        f" x {len(dataset.features)} features",
        lambda: _fit(pipeline, X_train, y_train),
    )
    metrics = step(
        f"scoring on {len(y_test)} held-out rows",
        lambda: score(pipeline, X_test, y_test, dataset.task),
    )
    undefined = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if undefined:
        raise TrainingError(
            f"the {len(y_test)} held-out rows give no {', '.join(undefined)}; add rows or raise "
            "test_size; nothing published"
        )
    check_gate(config.gate, metrics)
    compiled = step(
        "compiling to ONNX and checking it on every row",
        lambda: compile_pipeline(
            pipeline,
            dataset.features,
            dataset.task,
            dataset.X,
            float(np.std(dataset.y)) if dataset.task == "regression" else 0.0,
        ),
    )
    if not compiled.info.verified:
        if config.model.require_onnx:
            raise QualityGateError(
                f"no verified ONNX graph ({compiled.info.reason}) and [model] require_onnx is "
                "set; nothing published"
            )
        print(f"  note: published without an ONNX graph: {compiled.info.reason}", file=sys.stderr)
    profile = [build_profile(f, dataset.X[:, i].tolist()) for i, f in enumerate(dataset.features)]
    report = (
        step(
            "drawing the report",
            lambda: prepare_report(
                pipeline,
                dataset.features,
                dataset.X,
                X_test,
                y_test,
                dataset.task,
                config.seed,
                profile,
            ),
        )
        if config.report
        else None
    )
    environment, git = runtime_environment(), git_info()  # outside the store's lock

    def describe(version: int, artifact: ArtifactInfo) -> Metadata:
        return Metadata(
            format_version=FORMAT_VERSION,
            name=name,
            version=version,
            created_at=datetime.now(UTC).replace(microsecond=0),
            task=dataset.task,
            target=target,
            features=dataset.features,
            classes=[_plain(c) for c in pipeline.classes_]
            if dataset.task == "classification"
            else None,
            metrics={k: round(v, 6) for k, v in metrics.items()},
            data=DataInfo(source=_display(data_path), rows=dataset.rows, sha256=dataset.sha256),
            split=SplitInfo(
                test_size=config.test_size, train_rows=len(y_train), test_rows=len(y_test)
            ),
            estimator=f"{family}:{type(estimator).__name__}",
            params=effective_params(estimator, family, dataset.task),
            seed=config.seed,
            environment=environment,
            git=git,
            artifact=artifact,
            example=dataset.example,
            ignored_columns=dataset.ignored,
            onnx=compiled.info,
            profile=profile,
        )

    ref = step(
        f"publishing to {store.root / name}",
        lambda: store.publish(
            name,
            pipeline,
            describe,
            {compiled.info.file: compiled.graph} if compiled.info.file and compiled.graph else {},
            report.render if report is not None else None,
        ),
    )
    # Read back through the verifying path: a write that cannot be served never reports success.
    return store.load(ref).metadata, ref.path


# r2 (regression) is undefined on fewer than two held-out rows.
MIN_HELD_OUT = {"regression": 2, "classification": 1}


def split(dataset: Dataset, config: TrainingConfig) -> tuple[Any, Any, Any, Any]:
    """The train and held-out rows; too few held out for the task's metrics is refused here,
    before the fit, with the smallest test_size that works."""
    held_out = math.ceil(config.test_size * dataset.rows)
    needed = MIN_HELD_OUT[dataset.task]
    if held_out < needed:
        smallest = math.floor((needed - 1) / dataset.rows * 1000 + 1) / 1000
        raise TrainingError(
            f"test_size {config.test_size:g} holds out {held_out} of {dataset.rows} rows, and "
            f"{dataset.task} metrics need at least {needed}: set test_size to {smallest:g} or "
            "more, or add rows"
        )
    stratify = None
    if dataset.task == "classification":
        _, counts = np.unique(dataset.y, return_counts=True)
        test_rows = int(np.ceil(config.test_size * dataset.rows))
        if counts.min() >= 2 and test_rows >= len(counts):
            stratify = dataset.y
    parts: list[Any] = train_test_split(
        dataset.X,
        dataset.y,
        test_size=config.test_size,
        random_state=config.seed,
        stratify=stratify,
    )
    X_train, X_test, y_train, y_test = parts
    if dataset.task == "classification" and len(np.unique(y_train)) < 2:
        raise TrainingError("the training split holds a single class; add rows or lower test_size")
    return X_train, X_test, y_train, y_test


def _fit(pipeline: Any, X: Any, y: Any) -> None:
    try:
        pipeline.fit(X, y)
    except ValueError as exc:  # scikit-learn reports invalid hyper-parameter values this way
        raise TrainingError(f"fitting failed: {str(exc).splitlines()[0]}") from None


def _display(path: Path) -> str:
    """The data path relative to the working directory when inside it, so records travel."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def runtime_environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def git_info() -> GitInfo:
    """The commit the code came from, and whether tracked files had changes; images have no
    .git, so the build passes both in (GIT_COMMIT, GIT_DIRTY), recorded the same way."""
    root = PACKAGE_DIR.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout
        return GitInfo(commit=commit, dirty=bool(status.strip()))
    except (OSError, subprocess.SubprocessError):
        dirty = {"true": True, "false": False}.get(os.environ.get("GIT_DIRTY", ""))
        return GitInfo(commit=os.environ.get("GIT_COMMIT") or None, dirty=dirty)


def summary(metadata: Metadata, path: Path) -> str:
    rows = [
        ("model", f"{metadata.name} version {metadata.version}"),
        ("task", f"{metadata.task} ({metadata.estimator})"),
        (
            "rows",
            f"{metadata.data.rows} ({metadata.split.train_rows} train"
            f" / {metadata.split.test_rows} held out)",
        ),
        *((name, f"{value:.4f}") for name, value in metadata.metrics.items()),
        ("onnx", metadata.onnx_summary),
        ("artifact", str(path)),
    ]
    if metadata.report is not None:
        rows.append(("report", str(path / metadata.report.file)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _holds_a_model(models_dir: Path) -> bool:
    store = ModelStore(models_dir)
    try:
        return any(store.versions(name) for name in store.names())
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.skip_if_present and _holds_a_model(args.models_dir):
        print(f"{args.models_dir} already holds a model; not training", file=sys.stderr)
        return 0
    try:
        config = resolve_config(args)
        metadata, path = train(config, args.models_dir)
    except QualityGateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_GATE
    except StoreLockedError as exc:
        print(f"error: {exc}; nothing published", file=sys.stderr)
        return EXIT_STORE_LOCKED
    except StoreWriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_WRITE
    except (TrainingError, ModelStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted; nothing published", file=sys.stderr)
        return 130
    print(summary(metadata, path))
    return 0
