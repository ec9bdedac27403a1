"""Where scored rows and rejects go: a CSV, or a Parquet file when the name ends in .parquet.

Scored rows come as Arrow batches (`open_batch_sink`), rejects as lists of rows (`open_sink`).
Each sink writes into a binary file that the caller opened (and flushes, syncs and renames
into place only when every file is whole).
"""

from __future__ import annotations

import csv
import io
from typing import IO, Any

PARQUET_SUFFIXES = (".parquet", ".pq")


class CsvSink:
    def __init__(self, handle: IO[bytes], header: list[str]) -> None:
        self.text = io.TextIOWrapper(handle, encoding="utf-8", newline="", write_through=False)
        self.writer = csv.writer(self.text)
        self.writer.writerow(header)

    def write(self, rows: list[list[Any]]) -> None:
        self.writer.writerows(rows)

    def finish(self) -> None:
        self.text.flush()
        self.text.detach()  # the caller closes the file itself


class ParquetSink:
    """Input cells as text (as they were read), answers typed: `types` maps the columns that
    are not text to "float64", "int64" or "bool"."""

    def __init__(self, handle: IO[bytes], header: list[str], types: dict[str, str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as parquet

        self.pa = pa
        kinds = {"float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}
        self.schema = pa.schema(
            [(name, kinds.get(types.get(name, ""), pa.string())) for name in header]
        )
        self.writer = parquet.ParquetWriter(handle, self.schema)

    def write(self, rows: list[list[Any]]) -> None:
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        self.writer.write_table(self.pa.Table.from_arrays(list(columns), schema=self.schema))

    def finish(self) -> None:
        self.writer.close()


def open_sink(
    handle: IO[bytes], name: str, header: list[str], types: dict[str, str]
) -> CsvSink | ParquetSink:
    if name.lower().endswith(PARQUET_SUFFIXES):
        return ParquetSink(handle, header, types)
    return CsvSink(handle, header)


class ArrowCsvSink:
    """Scored rows from Arrow batches, written by Arrow's CSV writer (text cells quoted, numbers
    as their shortest round-trip form)."""

    def __init__(self, handle: IO[bytes], schema: Any) -> None:
        import pyarrow.csv as arrow_csv

        self.schema = schema
        options = arrow_csv.WriteOptions(quoting_style="needed")
        self.writer = arrow_csv.CSVWriter(_KeptOpen(handle), schema, write_options=options)

    def write_batch(self, batch: Any) -> None:
        if batch.num_rows:
            self.writer.write_batch(_renamed(batch, self.schema))

    def finish(self) -> None:
        self.writer.close()


class ArrowParquetSink:
    def __init__(self, handle: IO[bytes], schema: Any) -> None:
        import pyarrow.parquet as parquet

        self.schema = schema
        self.writer = parquet.ParquetWriter(handle, schema)

    def write_batch(self, batch: Any) -> None:
        if batch.num_rows:
            self.writer.write_batch(_renamed(batch, self.schema))

    def finish(self) -> None:
        self.writer.close()


def open_batch_sink(
    handle: IO[bytes], name: str, header: list[str], types: dict[str, str]
) -> ArrowCsvSink | ArrowParquetSink:
    """The sink for scored rows: input cells as text, answers typed as `types` says."""
    import pyarrow as pa

    kinds = {"float64": pa.float64(), "string": pa.string()}
    schema = pa.schema([(column, kinds[types.get(column, "string")]) for column in header])
    if name.lower().endswith(PARQUET_SUFFIXES):
        return ArrowParquetSink(handle, schema)
    return ArrowCsvSink(handle, schema)


def _renamed(batch: Any, schema: Any) -> Any:
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


class _KeptOpen:
    """The caller's file as Arrow's writers see it: closing the writer leaves the file open
    (the caller syncs and renames it)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.closed = False

    def write(self, data: Any) -> int:
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.flush()
        self.closed = True
