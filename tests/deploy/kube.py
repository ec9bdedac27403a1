"""Helpers for the deploy tests: rendering kustomizations and validating against real schemas."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import yaml
from kubernetes_validate.utils import schema_contents

from tests.conftest import ROOT

# The Kubernetes release the manifests are checked against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.33.0"
KSERVE_SDK = ROOT / ".venv" / "kserve-sdk" / "kserve" / "models"


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render_with_tool(folder: Path) -> list[dict[str, Any]]:
    command = kustomize_command()
    assert command is not None
    done = subprocess.run(
        [*command, str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def render(folder: Path) -> list[dict[str, Any]]:
    """What `kustomize build` makes of the features these kustomizations use: resources,
    namespace, images and strategic-merge patches of maps. The tool is used when present; this
    stands in where it is not, and a test holds the two to the same output."""
    config = yaml.safe_load((folder / "kustomization.yaml").read_text())
    allowed = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
    assert set(config) <= allowed, f"render() does not handle {set(config) - allowed}"
    documents: list[dict[str, Any]] = []
    for entry in config.get("resources", []):
        path = folder / entry
        if path.is_dir():
            documents += render(path)
        else:
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in config.get("patches", []):
        change = yaml.safe_load((folder / patch["path"]).read_text())
        target = next(
            d
            for d in documents
            if d["kind"] == change["kind"] and d["metadata"]["name"] == change["metadata"]["name"]
        )
        _merge(target, change)
    for image in config.get("images", []):
        for document in documents:
            for container in _containers(document):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    if "namespace" in config:
        for document in documents:
            document["metadata"]["namespace"] = config["namespace"]
    return documents


def _merge(target: dict[str, Any], change: dict[str, Any]) -> None:
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif _named(value) and _named(target.get(key)):
            # Lists of named items (containers, env, volumes) merge item by item on `name`, as
            # strategic merge does, new items first (as kustomize puts them); others are replaced.
            items = {item["name"]: item for item in target[key]}
            added = []
            for item in value:
                if item["name"] in items:
                    _merge(items[item["name"]], item)
                else:
                    added.append(copy.deepcopy(item))
            target[key][:0] = added
        else:
            target[key] = copy.deepcopy(value)


def _named(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and "name" in item for item in value)
    )


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [d["kind"] for d in documents]
    assert len(set(kinds)) == len(kinds), kinds
    return {d["kind"]: d for d in documents}


@functools.cache
def _definitions() -> referencing.Resource[Any]:
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
    return referencing.Resource.from_contents(
        schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    )


def validate_part(value: Any, schema_file: str) -> None:
    """One Kubernetes object part (a Container, an ObjectMeta) against its strict schema."""
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
    schema = schema_contents(f"{folder}/{schema_file}", KUBERNETES_VERSION)
    registry: referencing.Registry[Any] = _definitions() @ referencing.Registry()
    jsonschema.Draft202012Validator(schema, registry=registry).validate(value)


def kserve_fields(model: str) -> dict[str, tuple[str, str]]:
    """A KServe SDK model's fields: JSON name -> (python name, declared type).

    Read from the generated source, not imported (the SDK's dependencies are not installed).
    """
    source = (KSERVE_SDK / f"{_snake(model)}.py").read_text()
    types = dict(re.findall(r"'(\w+)': '([^']+)'", _block(source, "openapi_types")))
    names = dict(re.findall(r"'(\w+)': '([^']+)'", _block(source, "attribute_map")))
    assert types, f"no fields found for {model}"
    return {names[python]: (python, kind) for python, kind in types.items()}


def _block(source: str, name: str) -> str:
    match = re.search(name + r" = \{(.*?)\n    \}", source, re.S)
    assert match is not None, name
    return match[1]


def _snake(model: str) -> str:
    # V1beta1PredictorSpec -> v1beta1_predictor_spec
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", model).lower()


def kubernetes_schema_file(model: str) -> str:
    """The strict schema file of a core type the KServe SDK names V1Container, V1ObjectMeta."""
    name = model.removeprefix("V1").lower()
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
    for candidate in (f"{name}-v1.json", f"{name}-meta-v1.json"):
        try:
            schema_contents(f"{folder}/{candidate}", KUBERNETES_VERSION)
        except FileNotFoundError:
            continue
        return candidate
    raise AssertionError(f"no Kubernetes schema for {model}")


def check_kserve(value: Any, declared: str, where: str) -> None:
    """Walk a value against the KServe SDK's declared type, down to Kubernetes' own types."""
    if declared.startswith("list["):
        assert isinstance(value, list), f"{where}: expected a list"
        for index, item in enumerate(value):
            check_kserve(item, declared[5:-1], f"{where}[{index}]")
    elif declared.startswith("dict("):
        assert isinstance(value, dict), f"{where}: expected a map"
    elif declared in {"str", "int", "bool", "float", "object", "ResourceQuantity"}:
        kinds = {"str": str, "int": int, "bool": bool, "float": (int, float)}
        if declared in kinds:
            assert isinstance(value, kinds[declared]), f"{where}: expected {declared}"
    elif declared.startswith("V1") and not declared.startswith(("V1beta1", "V1alpha")):
        validate_part(value, kubernetes_schema_file(declared))
    else:
        assert isinstance(value, dict), f"{where}: expected an object ({declared})"
        fields = kserve_fields(declared)
        for key, item in value.items():
            assert key in fields, f"{where}.{key} is not a field of KServe's {declared}"
            check_kserve(item, fields[key][1], f"{where}.{key}")


def main() -> int:
    """`make lint`'s manifest check: every kustomization rendered and validated, and the
    InferenceService walked through KServe's fields. The tests check more (image facts)."""
    import kubernetes_validate

    tool = kustomize_command()
    how = " ".join(tool) if tool else "the tests' own renderer (no kustomize binary here)"
    for folder in (ROOT / "deploy/kubernetes/base", ROOT / "deploy/kubernetes/overlays/example"):
        documents = render_with_tool(folder) if tool else render(folder)
        for document in documents:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        print(
            f"{folder.relative_to(ROOT)}: {len(documents)} objects valid for Kubernetes"
            f" {KUBERNETES_VERSION} (strict), rendered by {how}"
        )
    for path in sorted((ROOT / "deploy/kserve").glob("*.yaml")):
        service = yaml.safe_load(path.read_text())
        check_kserve(service, "V1beta1InferenceService", "InferenceService")
        name = path.relative_to(ROOT)
        print(f"{name}: only fields KServe 0.21's InferenceService defines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
