"""Reading a user's table: one reader for training and for scoring, so that the same file gives
the same cells on both sides (scoring the training file itself rejects nothing).

The standard library's csv module only: both images carry this package and neither needs
pandas to read. What it decides, once:
- the encoding: UTF-8, with or without a byte-order mark, unless one is given;
- the separator: `,` `;` tab or `|`, detected from the first lines unless one is given;
- blank lines are skipped; a row with fewer cells than the header is padded with empty ones;
- the missing-value markers (pandas' usual ones, so a frame written by pandas reads back);
- the unnamed leading column that pandas' `to_csv()` and R's `write.csv` write (row numbers) is
  recognised, for training to leave out;
- a Parquet file (`.parquet`) is read through pyarrow, each typed value turned into the text a
  CSV would hold for it, so the same typing rules read both.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

MISSING_MARKERS = frozenset(
    {
        "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
        "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    }
)  # fmt: skip
SEPARATORS = (",", ";", "\t", "|")
DEFAULT_ENCODING = "utf-8-sig"
# Names a leading row-number column has: none (the CSV as written), or pandas' for it (in a
# CSV read back, or the index pandas stores in a Parquet file).
ROW_NUMBER_NAMES = frozenset({"", "Unnamed: 0", "__index_level_0__"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_PARQUET_BATCH = 20_000
_SAMPLE_LINES = 20
_SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


class IrregularTableError(Exception):
    """A table Arrow does not read as `rows()` does (a row of another width, a byte the
    encoding cannot read, an encoding other than UTF-8): read it with `rows()`, which names the
    fault or reads it as it is."""


class TableError(Exception):
    """A table that cannot be read; `str()` is one line, naming the option that would help.
    `option` is how the caller's users set the encoding (a config key or a flag)."""


class TableReader:
    """An open table: `header`, then `rows()` once, each a list of text cells."""

    def __init__(
        self,
        path: Path,
        encoding: str | None = None,
        sep: str | None = None,
        option: str = "",
        noun: str = "",
    ) -> None:
        self.path = path
        self.what = f"{noun} {path}".strip()
        self.encoding = encoding or DEFAULT_ENCODING
        self._option = option or "an encoding"
        if encoding is not None:
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise TableError(f"unknown encoding {encoding!r}") from None
        if sep is not None and len(sep) != 1:
            raise TableError(f"the separator must be one character, not {sep!r}")
        if not path.exists():
            raise TableError(f"{self.what} not found")
        if not path.is_file():
            raise TableError(f"{self.what} is not a file")
        self._parquet: Any = None
        if path.suffix.lower() in PARQUET_SUFFIXES:
            self._open_parquet()
            return
        try:
            self._handle: IO[str] = path.open(newline="", encoding=self.encoding)
        except OSError as exc:
            raise TableError(f"cannot read {self.what}: {exc.strerror}") from None
        try:
            sample = self._read_sample()
            self.sep = sep or detect_separator(sample)
            self._reader = csv.reader(self._handle, delimiter=self.sep)
            header = next(self._nonblank(), None)
        except TableError:
            self._handle.close()
            raise
        if header is None:
            self._handle.close()
            raise TableError(f"{self.what} is empty: it needs a header row")
        self.header = header
        self._width = len(header)
        self._header_line = self._reader.line_num  # 1 unless blank lines come first

    def _open_parquet(self) -> None:
        """A Parquet file: typed columns, each value then written as the text a CSV holds for it
        (so the same typing rules read both). pyarrow is a training and scoring dependency;
        it is imported only here."""
        try:
            import pyarrow.parquet as parquet
        except ImportError:
            raise TableError(f"{self.what} is Parquet, and pyarrow is not installed here") from None
        try:
            self._parquet = parquet.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises its own kinds for a damaged file
            raise TableError(f"{self.what} is not a readable Parquet file: {exc}") from None
        self.header = list(self._parquet.schema_arrow.names)
        self._width = len(self.header)
        self.sep = ""

    @property
    def separator_name(self) -> str:
        if self._parquet is not None:
            return "Parquet"
        return _SEPARATOR_NAMES.get(self.sep, repr(self.sep))

    @property
    def row_number_column(self) -> bool:
        """Whether the first column is the unnamed row-number column pandas and R write."""
        return len(self.header) > 1 and self.header[0] in ROW_NUMBER_NAMES

    def rows(self) -> Iterator[list[str]]:
        """Every data row, padded to the header's width when short (a trailing gap)."""
        if self._parquet is not None:
            yield from self._parquet_rows()
            return
        width = self._width
        with self._decoding():
            for cells in self._nonblank():
                if len(cells) < width:
                    cells += [""] * (width - len(cells))
                yield cells

    def text_batches(self, block_bytes: int = 1 << 20) -> Iterator[Any]:
        """The data rows as Arrow record batches of text, column i the header's i-th (named
        f0, f1...), blank rows left out: the cells `rows()` gives, at C speed. Raises
        IrregularTableError where only `rows()` reads the file as it is."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as arrow_csv

        names = [f"f{i}" for i in range(self._width)]
        if self._parquet is not None:
            for batch in self._parquet.iter_batches(batch_size=_PARQUET_BATCH):
                texts = [text_column(c) for c in batch.columns]
                yield _without_blank_rows(pa.RecordBatch.from_arrays(texts, names=names), pc)
            return
        if codecs.lookup(self.encoding).name not in ("utf-8", "utf-8-sig"):
            raise IrregularTableError(f"{self.encoding} text")
        if self._header_line != 1:
            raise IrregularTableError("lines before the header")
        try:
            reader = arrow_csv.open_csv(
                self.path,
                read_options=arrow_csv.ReadOptions(
                    column_names=names, skip_rows=1, block_size=block_bytes
                ),
                parse_options=arrow_csv.ParseOptions(
                    delimiter=self.sep, newlines_in_values=True, invalid_row_handler=_refuse
                ),
                convert_options=arrow_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                yield _without_blank_rows(batch, pc)
        except pa.ArrowInvalid as exc:
            raise IrregularTableError(str(exc).splitlines()[0]) from None

    def _parquet_rows(self) -> Iterator[list[str]]:
        try:
            for batch in self._parquet.iter_batches(batch_size=_PARQUET_BATCH):
                columns = [[_as_text(v) for v in column.to_pylist()] for column in batch.columns]
                yield from (list(cells) for cells in zip(*columns, strict=True))
        except OSError as exc:
            raise TableError(f"cannot read {self.what}: {exc}") from None

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            return
        self._handle.close()

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_sample(self) -> str:
        """The first lines, for the separator; then back to the start."""
        with self._decoding():
            lines = [line for _, line in zip(range(_SAMPLE_LINES), self._handle, strict=False)]
        self._handle.seek(0)
        return "".join(lines)

    def _nonblank(self) -> Iterator[list[str]]:
        with self._decoding():
            for cells in self._reader:
                if cells and any(cells):
                    yield cells

    @contextmanager
    def _decoding(self) -> Iterator[None]:
        """A decoding or parsing failure anywhere in the file is one TableError line."""
        try:
            yield
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start]
            raise TableError(
                f"{self.what} is not {_encoding_name(self.encoding)} text (byte 0x{byte:02x} "
                f"cannot be read): set {self._option}, for example latin-1 or cp1252"
            ) from None
        except csv.Error as exc:
            raise TableError(f"{self.what} is not a readable CSV: {exc}") from None
        except OSError as exc:
            raise TableError(f"cannot read {self.what}: {exc.strerror}") from None


def detect_separator(sample: str) -> str:
    """The candidate that splits the sample's lines into the same number of cells, the most of
    them; a comma when none splits anything."""
    lines = [line for line in sample.splitlines() if line.strip()]
    best, best_width = ",", 1
    for candidate in SEPARATORS:
        widths = {
            len(cells) for cells in csv.reader(io.StringIO("\n".join(lines)), delimiter=candidate)
        }
        if len(widths) == 1:
            (width,) = widths
            if width > best_width:
                best, best_width = candidate, width
    if best_width == 1 and lines:
        # Lines of uneven width (a quoted newline, a short row): the header decides.
        counts = {c: lines[0].count(c) for c in SEPARATORS}
        candidate = max(counts, key=lambda c: counts[c])
        if counts[candidate]:
            best = candidate
    return best


def text_column(column: Any) -> Any:
    """A typed Arrow column as the text cells a CSV holds for it (see `_as_text`): what a
    Parquet file or a Spark DataFrame gives the same checks as a CSV's cells."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pc.fill_null(column, "").cast(pa.string())
    return pa.array([_as_text(v) for v in column.to_pylist()], pa.string())


def _as_text(value: Any) -> str:
    """A typed Parquet value as the cell a CSV would hold: "" for a gap (None, NaN)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _refuse(row: Any) -> str:
    """Arrow's answer to a row of another width: stop (`rows()` reads the file instead)."""
    return "error"


def _without_blank_rows(batch: Any, pc: Any) -> Any:
    """Rows whose every cell is empty are blank lines to the csv module: left out alike."""
    if batch.num_columns == 0 or batch.num_rows == 0:
        return batch
    blank = pc.equal(batch.column(0), "")
    for column in batch.columns[1:]:
        blank = pc.and_(blank, pc.equal(column, ""))
    if not pc.any(blank).as_py():
        return batch
    return batch.filter(pc.invert(blank))


def _encoding_name(encoding: str) -> str:
    return "UTF-8" if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig") else encoding


def is_missing(text: str, extra: frozenset[str] = frozenset()) -> bool:
    return text in MISSING_MARKERS or text in extra
