"""The thinnest server we can write for the same artifact: the bench's yardstick.

Raw ASGI, orjson in and out, no validation, no auth, no metrics, no logging. It does not
verify the artifact either; it exists only so `make bench` can report service / baseline.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson

from bench.asgi import read_request_body

_VERSION = Path(os.environ["BASELINE_MODEL_PATH"])
_META = json.loads((_VERSION / "metadata.json").read_text())
_MODEL = joblib.load(_VERSION / "model.joblib")
_NAMES = [f["name"] for f in _META["features"]]
_CLASSES = [str(c) for c in _MODEL.classes_]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":  # readiness probe for the bench
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = await read_request_body(receive)
    instances = orjson.loads(body)["instances"]
    rows = np.array(
        [[math.nan if i[n] is None else i[n] for n in _NAMES] for i in instances], dtype=object
    )
    proba = _MODEL.predict_proba(rows)
    best = proba.argmax(axis=1).tolist()
    predictions = [
        {"label": _CLASSES[b], "probabilities": dict(zip(_CLASSES, p, strict=True))}
        for b, p in zip(best, proba.tolist(), strict=True)
    ]
    payload = orjson.dumps({"predictions": predictions})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
