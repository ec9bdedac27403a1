"""The protocols a client can speak: each parses its envelope into the one validated row form,
calls the shared runtime, and encodes the answer.

- `native`: `/predict`, `/model`, the probes and `/metrics`;
- `kserve_v1`: KServe v1; `oip_v2`: the Open Inference Protocol v2 over REST, whose tensors are
  decoded by `v2_tensors` (the wire format) and `v2_model` (what they mean for the model);
- `http`: what every route shares (the runtime, the model a path names, request bodies).
"""

from __future__ import annotations

from fastapi import FastAPI

from service.protocols import kserve_v1, oip_v2


def mount_protocol_routes(app: FastAPI) -> None:
    oip_v2.mount(app)
    kserve_v1.mount(app)
