"""KServe v1 and the Open Inference Protocol in the document: they reuse `/predict`'s per-feature
value schemas and the feature spec's datatypes, so the three routes cannot disagree."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.features import DATATYPES as FEATURE_DATATYPES
from service.openapi.common import (
    PROTOCOL_ERROR_SCHEMA,
    PROTOCOL_ERRORS,
    V1_PREDICT,
    V2_INFER,
    bare,
    flag,
    json_ref,
    protocol_error,
)
from service.openapi.native import docs_example, label_schema
from service.protocols.v2_tensors import DATATYPES

if TYPE_CHECKING:  # the runtime imports the protocols, which the docs describe
    from service.runtime import Runtime


def describe_protocols(schema: dict[str, Any], runtime: Runtime) -> None:
    meta = runtime.loaded.metadata
    model = runtime.tensors
    components = schema["components"]["schemas"]
    features = components["Instance"]["properties"]
    value_schemas = {f.name: bare(features[f.name]) for f in meta.features}
    components["ProtocolError"] = PROTOCOL_ERROR_SCHEMA
    components.update(v2_components(runtime, value_schemas))
    batch = runtime.settings.max_batch_size
    as_list = {
        "type": "array",
        "description": "the features in this order: " + ", ".join(value_schemas),
        "prefixItems": list(value_schemas.values()),
        "items": False,
        "minItems": len(value_schemas),
        "maxItems": len(value_schemas),
    }
    components["V1PredictRequest"] = {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "maxItems": batch,
                "items": {"anyOf": [{"$ref": "#/components/schemas/Instance"}, as_list]},
            }
        },
        "examples": [{"instances": [components["Instance"]["examples"][0]]}],
    }
    prediction = label_schema(meta) if model.is_classifier else {"type": "number"}
    components["V1PredictResponse"] = {
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {"type": "array", "items": prediction}},
    }
    name = {"name": "name", "in": "path", "required": True, "schema": {"enum": [meta.name]}}
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"enum": [str(meta.version)]},
    }
    paths = schema["paths"]
    for path in V2_INFER:
        paths[path] = {
            "post": {
                "summary": "OIP v2: predict for tensors (JSON, or the binary tensor extension)",
                "operationId": "v2_infer" + ("_version" if "versions" in path else ""),
                "requestBody": {
                    "required": True,
                    "content": {
                        **json_ref("V2InferRequest"),
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"},
                            "description": "a JSON header of Inference-Header-Content-Length "
                            "bytes, then each binary input's bytes in order",
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "the requested outputs",
                        "content": {
                            **json_ref("V2InferResponse"),
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                    **{code: protocol_error(text) for code, text in PROTOCOL_ERRORS.items()},
                },
            }
        }
    paths[V1_PREDICT] = {
        "post": {
            "summary": "KServe v1: labels or values for instances (objects or feature lists)",
            "operationId": "v1_predict",
            "requestBody": {"required": True, "content": json_ref("V1PredictRequest")},
            "responses": {
                "200": {
                    "description": "one per instance",
                    "content": json_ref("V1PredictResponse"),
                },
                **{code: protocol_error(text) for code, text in PROTOCOL_ERRORS.items()},
            },
        }
    }
    documented = {
        "/v2": ("V2ServerMetadata", ()),
        "/v2/health/live": ("V2Live", ()),
        "/v2/health/ready": ("V2Ready", ("503",)),
        "/v2/models/{name}": ("V2ModelMetadata", ("401", "404")),
        "/v2/models/{name}/versions/{version}": ("V2ModelMetadata", ("401", "404")),
        "/v2/models/{name}/ready": ("ModelReady", ("404",)),
        "/v2/models/{name}/versions/{version}/ready": ("ModelReady", ("404",)),
        "/v1/models/{name}": ("ModelReady", ("404",)),
        **dict.fromkeys(V2_INFER, ("V2InferResponse", ())),
        V1_PREDICT: ("V1PredictResponse", ()),
    }
    for path, (answer, errors) in documented.items():
        for operation in paths[path].values():
            params = [name] if "{name}" in path else []
            if "{version}" in path:
                params.append(version)
            if params:
                operation["parameters"] = params
            if path in V2_INFER or path == V1_PREDICT:
                continue
            operation["responses"] = {
                "200": {"description": "OK", "content": json_ref(answer)},
                **{code: protocol_error(PROTOCOL_ERRORS[code]) for code in errors},
            }


def v2_components(runtime: Runtime, value_schemas: dict[str, Any]) -> dict[str, Any]:
    meta = runtime.loaded.metadata
    model = runtime.tensors
    tensors = []
    for feature in meta.features:
        tensors.append(
            {
                "type": "object",
                "title": feature.name,
                "required": ["name", "datatype", "shape", "data"],
                "properties": {
                    "name": {"const": feature.name},
                    "datatype": {"enum": list(FEATURE_DATATYPES[feature.type])},
                    "shape": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "minItems": 1,
                        "maxItems": 2,
                        "description": "[rows] or [rows, 1]",
                    },
                    "data": {
                        "type": "array",
                        "items": value_schemas[feature.name],
                        "description": "one value per row (nested lists are flattened)",
                    },
                    "parameters": {"type": "object"},
                },
            }
        )
    if model.all_numeric:
        tensors.append(
            {
                "type": "object",
                "title": "all features as one [rows, features] tensor",
                "required": ["name", "datatype", "shape", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"enum": ["FP64", "FP32", "INT64", "INT32"]},
                    "shape": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "minItems": 2,
                        "maxItems": 2,
                        "description": f"[rows, {len(meta.features)}]",
                    },
                    "data": {"type": "array", "description": "row after row, in feature order"},
                    "parameters": {"type": "object"},
                },
            }
        )
    outputs = model.output_names
    example = components_example(runtime)
    return {
        "V2InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "description": "One tensor per feature, every tensor with the same number of rows "
            "(at most MAX_BATCH_SIZE)"
            + (", or one [rows, features] tensor" if model.all_numeric else "")
            + ". A missing value is null (JSON), NaN (binary floats) or an empty string "
            "(binary BYTES), for features that had gaps in training.",
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data_output": {"type": "boolean"}},
                },
                "inputs": {"type": "array", "minItems": 1, "items": {"oneOf": tensors}},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"enum": outputs},
                            "parameters": {
                                "type": "object",
                                "properties": {"binary_data": {"type": "boolean"}},
                            },
                        },
                    },
                },
            },
            "examples": [example],
        },
        "V2InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"const": meta.name},
                "model_version": {"const": str(meta.version)},
                "id": {"type": "string"},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "datatype", "shape"],
                        "properties": {
                            "name": {"enum": outputs},
                            "datatype": {"enum": list(DATATYPES)},
                            "shape": {"type": "array", "items": {"type": "integer"}},
                            "data": {"type": "array"},
                            "parameters": {"type": "object"},
                        },
                    },
                },
            },
        },
        "V2ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "V2Live": flag("live"),
        "V2Ready": flag("ready"),
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"const": meta.name}, "ready": {"type": "boolean"}},
        },
        "V2ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"const": meta.name},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
                "parameters": {"type": "object"},
            },
            # The answer itself is keyed: an example of it only where anyone may read it.
            **({} if runtime.keys.required else {"examples": [model.metadata_response()]}),
        },
        "V2Tensor": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": {"enum": list(DATATYPES)},
                "shape": {"type": "array", "items": {"type": "integer"}},
            },
        },
    }


def components_example(runtime: Runtime) -> dict[str, Any]:
    """The docs' typical instance as a one-row v2 request."""
    example = docs_example(runtime.loaded.metadata)
    return {
        "inputs": [
            {
                "name": f.name,
                "datatype": FEATURE_DATATYPES[f.type][0],
                "shape": [1],
                "data": [example[f.name]],
            }
            for f in runtime.loaded.metadata.features
        ]
    }
