"""`plain_numbers`, the step every large JSON body's numbers pass on their way into the model's
block: the same float64 values numpy makes of them, bit for bit, and None for anything else."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from service.features import plain_numbers


def _awkward_numbers(count: int, seed: int) -> list[Any]:
    """Floats and ints whose conversion to float64 is easy to get wrong (the edges first, then
    drawn at random)."""
    chance = random.Random(seed)
    edges: list[Any] = [
        0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
        2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 2**64 + 1, 10**20, 0, -1, 7,
        0.1, 1 / 3, 1e15, -1e15,
    ]  # fmt: skip
    values = list(edges)
    while len(values) < count:
        if chance.random() < 0.5:
            values.append(chance.uniform(-1e6, 1e6))
        else:
            values.append(chance.randint(-(2**60), 2**60))
    return values[:count]


# (rows, width): a few values (checked one by one) and many (packed by struct).
SIZES = [(1, 1), (1, 5), (2, 30), (40, 1), (40, 3), (40, 30)]


@pytest.mark.parametrize(("count", "width"), SIZES)
def test_rows_become_the_float64s_numpy_makes(count: int, width: int) -> None:
    flat = _awkward_numbers(width * count, seed=width)
    rows = [flat[i : i + width] for i in range(0, len(flat), width)]
    expected = np.array(rows, dtype=np.float64)
    for given in (rows, [tuple(row) for row in rows]):
        made = plain_numbers(given, nested=True)
        assert made is not None
        assert made.shape == (count, width)
        assert made.dtype == np.float64
        assert made.tobytes() == expected.tobytes()  # bit for bit: -0.0 and subnormals too
        assert made.flags.writeable
    made = plain_numbers(flat, nested=False)
    assert made is not None
    assert made.tobytes() == np.array(flat, dtype=np.float64).tobytes()
    assert made.flags.writeable


@pytest.mark.parametrize(
    "odd",
    [True, False, None, "1.5", [1.0], {"x": 1.0}, 10**400],
    ids=["true", "false", "null", "text", "list", "object", "beyond-float64"],
)
@pytest.mark.parametrize("count", [1, 4, 50])
def test_anything_but_a_plain_number_is_left_to_the_rules(odd: Any, count: int) -> None:
    rows = [[1.0, 2.0, 3.0] for _ in range(count)]
    rows[count // 2][1] = odd
    assert plain_numbers(rows, nested=True) is None
    assert plain_numbers([v for row in rows for v in row], nested=False) is None


@pytest.mark.parametrize("count", [1, 4, 50])
def test_rows_of_other_lengths_are_left_to_the_rules(count: int) -> None:
    rows: list[Any] = [[1.0, 2.0, 3.0] for _ in range(count)]
    for ragged in ([1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [], 1.0, {"a": 1.0}):
        assert plain_numbers([*rows, ragged], nested=True) is None
        assert plain_numbers([ragged, *rows], nested=True) is None


def test_no_rows_is_an_empty_block() -> None:
    made = plain_numbers([], nested=True)
    assert made is not None
    assert made.shape == (0, 0)
