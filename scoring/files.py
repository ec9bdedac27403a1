"""What scoring does with files: faults while reading are one line, and outputs appear whole
or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from modelstore.table import TableError


class ScoringError(Exception):
    """A fault in the input or the output that stops the whole run: `str()` is one line."""


@contextmanager
def table_errors() -> Iterator[None]:
    """A fault found while reading (an undecodable byte deep in the file) is one line."""
    try:
        yield
    except TableError as exc:
        raise ScoringError(str(exc)) from None


@contextmanager
def written_on_success(*paths: Path) -> Iterator[list[IO[bytes]]]:
    """Write into hidden files beside `paths`; rename them into place only once every one is
    whole (flushed to disk), so they appear together or not at all."""
    temporaries = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in paths]
    handles: list[IO[bytes]] = []
    renamed: list[Path] = []
    current = paths[0]
    try:
        for path, temporary in zip(paths, temporaries, strict=True):
            current = path
            handles.append(temporary.open("wb"))
        yield handles
        for path, handle in zip(paths, handles, strict=True):
            current = path
            handle.flush()
            os.fsync(handle.fileno())
        for path, temporary in zip(paths, temporaries, strict=True):
            current = path
            os.replace(temporary, path)
            renamed.append(path)
    except OSError as exc:
        for path in renamed:  # one landed and the next could not: take it back
            path.unlink(missing_ok=True)
        raise ScoringError(f"cannot write {current}: {exc.strerror}") from None
    finally:
        for handle in handles:
            with suppress(OSError):
                handle.close()
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
