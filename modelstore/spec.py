"""Rules about a version's features that training, the service and scoring all apply, kept here
once (both images carry this package, and it imports nothing from either side)."""

from __future__ import annotations

import re
from collections.abc import Sequence

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_LONGEST = 64


def graph_input_names(names: Sequence[str]) -> list[str]:
    """The compiled graph's input for each feature, in order.

    Clients use the table's own column names everywhere; only the graph, whose converter
    rewrites names it considers unsafe (spaces, dots, a leading digit...), sees these: ASCII
    letters, digits and `_`, never starting with a digit, unique. Export records them in the
    metadata and the ONNX runtime reads them back, so the two can never disagree.
    """
    taken: set[str] = set()
    inputs = []
    for name in names:
        base = _UNSAFE.sub("_", name)[:_LONGEST] or "feature"
        if base[0].isdigit():
            base = "_" + base
        candidate, number = base, 1
        while candidate in taken:
            number += 1
            candidate = f"{base}_{number}"
        taken.add(candidate)
        inputs.append(candidate)
    return inputs
