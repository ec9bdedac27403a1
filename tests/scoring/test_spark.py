"""Scoring on a real Apache Spark: local mode and a standalone cluster started here, each held to
`python -m scoring` row by row (labels identical, probabilities within float tolerance, rejects
identical). Spark binds 127.0.0.1 only. Needs Java 17+ and pyspark (requirements/spark.txt):
skipped with the reason without them, a failure in CI."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as arrow_csv
import pyarrow.parquet as pq
import pytest

from scoring.cli import main
from tests.conftest import PENGUINS_CSV, ROOT

ROWS = 200_000
HOST = "127.0.0.1"


def _spark_missing() -> str | None:
    if shutil.which("java") is None:
        return "no Java runtime on PATH (Spark needs 17 or later)"
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -r requirements/spark.txt)"
    return None


_MISSING = _spark_missing()
if _MISSING and os.environ.get("CI"):
    pytest.fail(f"Spark tests must run in CI: {_MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    os.environ["SPARK_LOCAL_IP"] = HOST
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("sklearn-serve tests")
        .config("spark.driver.host", HOST)
        .config("spark.driver.bindAddress", HOST)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Small splits, so the 200,000 rows and their bad ones spread over many partitions.
        .config("spark.sql.files.maxPartitionBytes", str(512 << 10))
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _defect(row: int) -> dict[str, str] | None:
    """Several kinds of bad row, about 300 of them, spread through the file."""
    if row % 661:
        return None
    kinds: list[dict[str, str]] = [
        {"island": "Atlantis"},
        {"island": ""},  # a gap where training had none
        {"bill_length_mm": "long"},
        {"year": "2007.5"},
        {"body_mass_g": "1e20"},
        {"flipper_length_mm": "inf"},
    ]
    return kinds[(row // 661) % len(kinds)]


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with PENGUINS_CSV.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        base = list(reader)
    path = tmp_path_factory.mktemp("spark-data") / "penguins-200k.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        for row in range(1, ROWS + 1):
            cells = dict(base[row % len(base)])
            cells.update(_defect(row) or {})
            writer.writerow(cells)
    return path


@pytest.fixture(scope="module")
def big_parquet(big_csv: Path) -> Path:
    """The same rows as typed columns (numbers as doubles, the year as an integer where it is
    one), each defect that a type can hold kept."""
    table = arrow_csv.read_csv(
        big_csv,
        convert_options=arrow_csv.ConvertOptions(
            column_types={"island": pa.string(), "sex": pa.string(), "species": pa.string()},
            null_values=["NA", ""],
            strings_can_be_null=True,
        ),
    )
    path = big_csv.with_suffix(".parquet")
    # Plain row groups of 10,000 rows: a file large enough that Spark splits it at them.
    pq.write_table(table, path, row_group_size=10_000, use_dictionary=False, compression="none")
    return path


def _cli(store: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["--models-dir", str(store), "--data", str(data), "--out", str(out), *extra])


def _read_csv(path: Path) -> pa.Table:
    """A CSV file, or the part files of a Spark output folder in order, as text."""
    parts = sorted(path.glob("part-*")) if path.is_dir() else [path]
    tables = []
    for part in parts:
        with part.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        types = dict.fromkeys(header, pa.string())
        options = arrow_csv.ConvertOptions(column_types=types, strings_can_be_null=False)
        tables.append(arrow_csv.read_csv(part, convert_options=options))
    return pa.concat_tables([t for t in tables if t.num_rows]).combine_chunks()


def _assert_same(local: pa.Table, spark: pa.Table) -> None:
    assert spark.num_rows == local.num_rows
    assert spark.column("prediction").to_pylist() == local.column("prediction").to_pylist()
    for name in local.column_names:
        if name.startswith("probability_"):
            ours = spark.column(name).to_numpy().astype(float)
            theirs = local.column(name).to_numpy().astype(float)
            assert abs(ours - theirs).max() <= 1e-12, name


def _pairs(rejects: pa.Table) -> list[tuple[int, str]]:
    rows = [int(r) for r in rejects.column("row").to_pylist()]
    return list(zip(rows, rejects.column("reason").to_pylist(), strict=True))


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_spark_scores_as_the_one_machine_engine(
    spark: Any, penguins_store: Path, big_csv: Path, big_parquet: Path, tmp_path: Path, kind: str
) -> None:
    from scoring.spark import score_dataframe

    source = big_csv if kind == "csv" else big_parquet
    assert _cli(penguins_store, source, tmp_path / "local.csv") == 0
    local = _read_csv(tmp_path / "local.csv")
    local_rejects = _read_csv(tmp_path / "local.rejects.csv")

    if kind == "csv":
        df = spark.read.csv(str(source), header=True, inferSchema=False)
    else:
        df = spark.read.parquet(str(source))
    partitions = df.rdd.getNumPartitions()
    started = time.perf_counter()
    scores = score_dataframe(df, penguins_store, "penguins")
    predictions = scores.predictions.toArrow()
    rejects = scores.rejects.toArrow()
    seconds = time.perf_counter() - started
    scores.unpersist()
    print(
        f"\n{kind}: {ROWS:,} rows in {partitions} partitions, local[2]: {predictions.num_rows:,} "
        f"scored, {rejects.num_rows} rejected in {seconds:.1f}s; the CLI: {local.num_rows:,} "
        f"scored, {local_rejects.num_rows} rejected"
    )
    assert partitions > 1
    assert rejects.num_rows >= 250
    _assert_same(local, predictions)
    assert _pairs(rejects) == _pairs(local_rejects)
    assert {reason.split(":")[0] for _, reason in _pairs(rejects)} >= {
        "island", "bill_length_mm", "body_mass_g",
    }  # fmt: skip


def test_rejects_can_carry_an_id_column_of_the_caller_s(
    spark: Any, penguins_store: Path, big_csv: Path
) -> None:
    from scoring.spark import score_dataframe

    rows = spark.read.csv(str(big_csv), header=True).limit(1400).collect()
    records = [{**row.asDict(), "id": f"p-{number}"} for number, row in enumerate(rows, start=1)]
    df = spark.createDataFrame(records)
    scores = score_dataframe(df, penguins_store, "penguins", keep=["id"], row_id="id")
    rejects = scores.rejects.toArrow()
    predictions = scores.predictions.toArrow()
    scores.unpersist()
    assert rejects.column("row").to_pylist() == ["p-661", "p-1322"]  # the defects' rows
    assert predictions.column_names[0] == "id"
    assert predictions.num_rows == 1398


def test_the_command_line_engine_writes_part_files(
    spark: Any, penguins_store: Path, big_csv: Path, tmp_path: Path, capsys: Any
) -> None:
    """`--engine spark` in this process (it joins the running session): CSV part files out."""
    assert _cli(penguins_store, big_csv, tmp_path / "local.csv") == 0
    out = tmp_path / "spark-out.csv"
    assert _cli(penguins_store, big_csv, out, "--engine", "spark") == 0
    said = capsys.readouterr().out
    assert f"of {ROWS} rows with penguins version 1 (onnx, Spark local[2])" in said
    assert (out / "_SUCCESS").is_file()
    _assert_same(_read_csv(tmp_path / "local.csv"), _read_csv(out))
    local_rejects = _read_csv(tmp_path / "local.rejects.csv")
    assert _pairs(_read_csv(tmp_path / "spark-out.rejects.csv")) == _pairs(local_rejects)


def _tampered(store: Path, folder: Path) -> Path:
    copy = folder / "tampered"
    shutil.copytree(store, copy)
    graph = copy / "penguins" / "1" / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    return copy


def test_bad_references_fail_before_any_scoring_with_the_cli_s_words(
    spark: Any, penguins_store: Path, big_csv: Path, tmp_path: Path, capsys: Any
) -> None:
    without_island = tmp_path / "no-island.csv"
    with big_csv.open() as source, without_island.open("w") as target:
        for _, line in zip(range(50), source, strict=False):
            cells = line.rstrip("\n").split(",")
            target.write(",".join(cells[:1] + cells[2:]) + "\n")
    cases = {
        "unknown model": (penguins_store, big_csv, ["--model", "nosuch"]),
        "tampered graph": (_tampered(penguins_store, tmp_path), big_csv, []),
        "missing column": (penguins_store, without_island, []),
    }
    for case, (store, data, extra) in cases.items():
        out = tmp_path / f"{case.replace(' ', '-')}.csv"
        assert _cli(store, data, out, *extra) == 2, case
        local = capsys.readouterr().err.strip()
        assert _cli(store, data, out, *extra, "--engine", "spark") == 2, case
        ours = capsys.readouterr().err.strip()
        print(f"\n{case}: {ours}")
        assert ours == local, case
        assert "\n" not in ours
        assert not out.exists(), case  # nothing written


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing listened on {port} within {seconds}s")


def test_spark_submit_to_a_standalone_cluster(
    penguins_store: Path, big_csv: Path, tmp_path: Path
) -> None:
    """A master and one worker (one core, 1 GiB) on 127.0.0.1, started here from pyspark's
    own installation; the job submitted with spark-submit, as on a user's cluster."""
    import pyspark

    home = Path(pyspark.__file__).parent
    small = tmp_path / "penguins-20k.csv"
    with big_csv.open() as source, small.open("w") as target:
        for _, line in zip(range(20_001), source, strict=False):
            target.write(line)
    assert _cli(penguins_store, small, tmp_path / "local.csv") == 0

    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": HOST,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(tmp_path / "logs"),
        "SPARK_WORKER_DIR": str(tmp_path / "work"),
    }
    master_port, worker_port = _free_port(), _free_port()
    spark_class = str(home / "bin" / "spark-class")
    daemons = [
        subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", HOST,
             "--port", str(master_port), "--webui-port", str(_free_port())],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
    ]  # fmt: skip
    try:
        _wait_for_port(master_port, daemons[0], 90)
        url = f"spark://{HOST}:{master_port}"
        daemons.append(
            subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", HOST,
                 "--port", str(worker_port), "--webui-port", str(_free_port()),
                 "--cores", "1", "--memory", "1g"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )  # fmt: skip
        _wait_for_port(worker_port, daemons[1], 90)
        out = tmp_path / "cluster-out.csv"
        started = time.perf_counter()
        done = subprocess.run(
            [str(home / "bin" / "spark-submit"), "--master", url,
             "--conf", f"spark.driver.host={HOST}", "--conf", f"spark.driver.bindAddress={HOST}",
             "--conf", "spark.ui.enabled=false",
             str(ROOT / "scoring" / "spark_submit.py"),
             "--models-dir", str(penguins_store), "--model", "penguins:1",
             "--data", str(small), "--out", str(out)],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        print(f"\nspark-submit to {url}: exit {done.returncode} in {seconds:.1f}s")
        print(done.stdout.strip())
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"(onnx, Spark {url})" in done.stdout
        _assert_same(_read_csv(tmp_path / "local.csv"), _read_csv(out))
        local_rejects = _pairs(_read_csv(tmp_path / "local.rejects.csv"))
        assert local_rejects
        assert _pairs(_read_csv(tmp_path / "cluster-out.rejects.csv")) == local_rejects
    finally:
        for daemon in reversed(daemons):
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGTERM)
        for daemon in daemons:
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(timeout=10)
