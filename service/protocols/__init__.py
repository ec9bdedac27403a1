"""The protocols a client can speak: each parses its envelope into the one validated row form,
calls the shared runtime, and encodes the answer.

- `native`: `/predict`, `/model`, the probes and `/metrics`;
- `kserve_v1`: KServe v1; `oip_v2`: the Open Inference Protocol v2 over REST, whose tensors are
  decoded by `v2_tensors` (the wire format) and `v2_model` (what they mean for the model);
- `http`: what every route shares (the runtime, the model a path names, request bodies).

Importing the package imports no route module, so the runtime can import `v2_model` without
an import cycle through the routes.
"""
