"""Random bodies, seeded and bounded: whatever arrives, the answer is a clean 4xx or a 200."""

from __future__ import annotations

import json
import random
from typing import Any

from fastapi.testclient import TestClient

ATOMS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**70,
    1.5,
    -0.0,
    1e308,
    "",
    "Biscoe",
    "x" * 300,
    "\u0000",
    "ü",
]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(ATOMS)
    if roll < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["island", "year", "sex", "instances", "zz"]): random_value(rng, depth + 1)}


def mutate(rng: random.Random, example: dict[str, Any]) -> Any:
    instance = dict(example)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice([*instance, "extra"])
        if rng.random() < 0.2:
            instance.pop(key, None)
        else:
            instance[key] = random_value(rng)
    return {"instances": [example, instance]}


def test_random_bodies_never_get_a_500(client: TestClient, penguin_example: dict[str, Any]) -> None:
    rng = random.Random(20261128)
    for _ in range(300):
        kind = rng.random()
        if kind < 0.5:
            raw = json.dumps(mutate(rng, penguin_example)).encode()
        elif kind < 0.8:
            raw = json.dumps(random_value(rng)).encode()
        else:
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        response = client.post(
            "/predict", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code in (200, 413, 422), (raw[:200], response.text)
        assert "Traceback" not in response.text
        assert isinstance(response.json(), dict)
