"""`python -m modelstore`: look at the store, compare versions, check them, prune old ones.

Exit codes follow the trainer's: 0 done, 1 `verify` found a problem, 2 bad input (an unknown
model or version, a bad name, a refused prompt), 4 the store could not be written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelstore.metadata import Metadata
from modelstore.store import (
    ModelRef,
    ModelStore,
    ModelStoreError,
    StoreWriteError,
    VersionInUseError,
    recorded_files,
)

EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2
EXIT_STORE_WRITE = 4
# The score a list shows for each task: the first of these the version recorded.
HEADLINE = {"classification": ("accuracy", "f1_macro"), "regression": ("r2", "rmse")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m modelstore", description=__doc__)
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("MODEL_DIR", "models")),
        help="the store (default: $MODEL_DIR or ./models)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="every version: created, task, estimator, score, runtimes")
    show = commands.add_parser("show", help="one version in full")
    show.add_argument("model", metavar="NAME[:VERSION]")
    show.add_argument("--json", action="store_true", help="print metadata.json as stored")
    compare = commands.add_parser("compare", help="two versions side by side, differences marked")
    compare.add_argument("name")
    compare.add_argument("a", metavar="A")
    compare.add_argument("b", metavar="B")
    verify = commands.add_parser("verify", help="check metadata and every file's sha256")
    verify.add_argument("model", nargs="?", metavar="NAME[:VERSION]", help="default: everything")
    prune = commands.add_parser("prune", help="remove the oldest versions of a model")
    prune.add_argument("name")
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="versions to keep")
    prune.add_argument("--yes", action="store_true", help="do not ask")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store = ModelStore(args.models_dir)
    try:
        if args.command == "list":
            print(list_table(store))
        elif args.command == "show":
            print(show(store, *split_ref(args.model), as_json=args.json))
        elif args.command == "compare":
            print(compare(store, args.name, args.a, args.b))
        elif args.command == "verify":
            return verify(store, args.model)
        else:
            return prune(store, args.name, args.keep, args.yes)
    except StoreWriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_WRITE
    except (ModelStoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def split_ref(text: str) -> tuple[str, str]:
    name, _, version = text.partition(":")
    return name, version or "latest"


def headline(metadata: Metadata) -> str:
    for metric in HEADLINE[metadata.task]:
        if metric in metadata.metrics:
            return f"{metric} {metadata.metrics[metric]:.4f}"
    return "-"


def runtimes(metadata: Metadata) -> str:
    return "onnx, sklearn" if metadata.has_graph else "sklearn"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header]]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def list_table(store: ModelStore) -> str:
    rows = []
    for name in store.names():
        for version in store.versions(name):
            ref = ModelRef(name, version, store.root / name / str(version))
            try:
                meta = store.metadata(ref)
            except ModelStoreError as exc:
                rows.append([name, str(version), "-", "-", f"unreadable: {exc}", "-", "-"])
                continue
            created = meta.created_at.strftime("%Y-%m-%d %H:%M")
            rows.append(
                [
                    name,
                    str(version),
                    created,
                    meta.task,
                    meta.estimator,
                    headline(meta),
                    runtimes(meta),
                ]
            )
    if not rows:
        return f"no models in {store.root}"
    header = ["name", "version", "created (UTC)", "task", "estimator", "score", "runtimes"]
    return table(header, rows)


def show(store: ModelStore, name: str, version: str, as_json: bool = False) -> str:
    ref = store.resolve(name, version)
    meta = store.metadata(ref)
    if as_json:
        return json.dumps(meta.model_dump(mode="json"), indent=2)
    lines = [
        f"{meta.name} version {meta.version}  ({ref.path})",
        f"created    {meta.created_at.isoformat()}",
        f"task       {meta.task}, target {meta.target!r}",
        f"estimator  {meta.estimator}",
        f"data       {meta.data.source} ({meta.data.rows} rows, sha256 {meta.data.sha256[:12]})",
        f"split      {meta.split.train_rows} train / {meta.split.test_rows} held out",
        "metrics    " + ", ".join(f"{k} {v:.4f}" for k, v in meta.metrics.items()),
        f"runtimes   {runtimes(meta)}",
        f"onnx       {meta.onnx_summary}",
        f"git        {meta.git.commit or 'unknown'}{' (dirty)' if meta.git.dirty else ''}",
        f"seed       {meta.seed}",
    ]
    if meta.onnx_checks:
        lines += ["", "graph checked against the pipeline:"]
        lines.append(
            table(
                [
                    "rows",
                    "count",
                    f"largest {meta.onnx.deviation if meta.onnx else ''} deviation",
                    "labels",
                ],
                [[k, str(n), f"{d:.3g}", same] for k, n, d, same in meta.onnx_checks],
            )
        )
    if meta.report is not None:
        lines.append(f"report     {ref.path / meta.report.file}")
    if meta.classes is not None:
        lines.append(f"classes    {', '.join(map(str, meta.classes))}")
    lines += ["", "features:"]
    lines.append(
        table(
            ["name", "type", "nullable", "categories"],
            [
                [f.name, f.type, "yes" if f.nullable else "no", describe_categories(f.categories)]
                for f in meta.features
            ],
        )
    )
    if meta.ignored_columns:
        lines.append(f"ignored columns: {', '.join(meta.ignored_columns)}")
    lines += ["", "files:"]
    for file_name, sha256 in recorded_files(meta).items():
        path = ref.path / file_name
        size = path.stat().st_size if path.exists() else 0
        lines.append(f"  {file_name}  {size} bytes  sha256 {sha256[:12]}")
    return "\n".join(lines)


def describe_categories(categories: list[str] | None) -> str:
    if categories is None:
        return ""
    shown = ", ".join(categories[:8])
    return shown + (f", ... ({len(categories)} in all)" if len(categories) > 8 else "")


def compare(store: ModelStore, name: str, a: str, b: str) -> str:
    left, right = (store.metadata(store.resolve(name, v)) for v in (a, b))
    rows: list[list[str]] = []

    def row(label: str, x: Any, y: Any) -> None:
        mark = "" if x == y else "*"
        rows.append([mark, label, _text(x), _text(y)])

    row("created", left.created_at.isoformat(), right.created_at.isoformat())
    row("task", left.task, right.task)
    row("estimator", left.estimator, right.estimator)
    row("data", left.data.source, right.data.source)
    row("data sha256", left.data.sha256[:12], right.data.sha256[:12])
    row("data rows", left.data.rows, right.data.rows)
    row("runtimes", runtimes(left), runtimes(right))
    for metric in sorted(set(left.metrics) | set(right.metrics)):
        x, y = left.metrics.get(metric), right.metrics.get(metric)
        rows.append(
            ["" if x == y else "*", f"metric {metric}", _number(x), _number(y) + _delta(x, y)]
        )
    for param in sorted(set(left.params) | set(right.params)):
        row(f"param {param}", left.params.get(param), right.params.get(param))
    features = {f.name: f for f in left.features}
    others = {f.name: f for f in right.features}
    for feature in [*features, *(n for n in others if n not in features)]:
        was, now = features.get(feature), others.get(feature)
        mark = "" if was == now else "*"  # the full schema, categories included
        rows.append([mark, f"feature {feature}", _feature(was), _feature(now)])
    header = ["", "", f"{name} {left.version}", f"{name} {right.version}"]
    return table(header, rows) + "\n(* marks a difference)"


def _feature(feature: Any) -> str:
    if feature is None:
        return "(absent)"
    text = feature.type + (", nullable" if feature.nullable else "")
    if feature.categories is not None:
        text += f", {len(feature.categories)} categories"
    return str(text)


def _text(value: Any) -> str:
    return "(absent)" if value is None else str(value)


def _number(value: float | None) -> str:
    return "(absent)" if value is None else f"{value:.4f}"


def _delta(x: float | None, y: float | None) -> str:
    return "" if x is None or y is None or x == y else f" ({y - x:+.4f})"


def verify(store: ModelStore, target: str | None) -> int:
    if target is None:
        refs = [
            ModelRef(name, version, store.root / name / str(version))
            for name in store.names()
            for version in store.versions(name)
        ]
        if not refs:
            raise ModelStoreError(f"no models in {store.root}")
    else:
        name, version = split_ref(target)
        if ":" in target:
            refs = [store.resolve(name, version)]
        else:
            store.resolve(name)  # the same message as elsewhere for an unknown name
            refs = [ModelRef(name, v, store.root / name / str(v)) for v in store.versions(name)]
    failed = 0
    for ref in refs:
        problems = store.verify(ref)
        status = "ok" if not problems else f"{len(problems)} problem(s)"
        print(f"{ref.name}:{ref.version}  {status}")
        for problem in problems:
            print(f"  - {problem}")
        failed += bool(problems)
    print(f"{len(refs) - failed} of {len(refs)} versions verified")
    return EXIT_PROBLEMS if failed else 0


def prune(store: ModelStore, name: str, keep: int, yes: bool) -> int:
    if keep < 1:
        raise ValueError("--keep must be at least 1: prune never removes every version")
    store.resolve(name)  # an unknown model is an error, not a silent no-op
    versions = store.versions(name)
    doomed = versions[:-keep] if len(versions) > keep else []
    if not doomed:
        print(f"{name}: {len(versions)} version(s), nothing to remove with --keep {keep}")
        return 0
    listing = ", ".join(map(str, doomed))
    if not yes:
        if not sys.stdin.isatty():
            raise ValueError(f"would remove {name} versions {listing}: pass --yes to confirm")
        answer = input(f"remove {name} versions {listing}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing removed")
            return EXIT_BAD_INPUT
    removed, served = [], []
    for version in doomed:
        try:
            store.remove(ModelRef(name, version, store.root / name / str(version)))
            removed.append(version)
        except VersionInUseError:
            served.append(version)
    kept = sorted(set(versions) - set(removed))
    done = f"removed {name} versions {', '.join(map(str, removed))}" if removed else "removed none"
    print(f"{done}; kept {', '.join(map(str, kept))}")
    if served:
        print(
            f"kept {name} version(s) {', '.join(map(str, served))}: a running server holds "
            "them (stop it or move it to a newer version, then prune again)"
        )
    return 0
