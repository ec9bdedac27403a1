"""Where scored rows and rejects go: a CSV, or a Parquet file when the name ends in .parquet.

Each sink takes a header, then lists of rows, and writes into a binary file that the caller
opened (and flushes, syncs and renames into place only when every file is whole).
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
