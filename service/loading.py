"""Start-up: resolve one version, choose the runtime that can serve it, verify what it needs.

`RUNTIME=auto` serves the compiled graph when the version has a verified one and ONNX Runtime
is installed, else the pickled pipeline when scikit-learn is. The default image has no
scikit-learn at all, so it can only ever serve a graph; the `-sklearn` image can serve both.
"""

from __future__ import annotations

from importlib.util import find_spec

from modelstore import LoadedModel, Metadata, ModelRef, ModelStore, ModelStoreError
from service.settings import Settings

SKLEARN_IMAGE = "the serving image tagged with a -sklearn suffix"


class RuntimeUnavailableError(ModelStoreError):
    """The requested runtime cannot serve this version here; `str()` says what can."""


def installed(module: str) -> bool:
    return find_spec(module) is not None


def load_model(settings: Settings) -> LoadedModel:
    """Resolve and verify exactly one version for one runtime; any error stops start-up."""
    store = ModelStore(settings.model_dir)
    ref = store.resolve(settings.model_name, settings.model_version)
    # Held while the caller keeps the result (a server: for its life), so `prune` leaves the
    # version alone and a worker that restarts finds it.
    hold = store.hold(ref)
    try:
        metadata = store.metadata(ref)
        if choose_runtime(settings.runtime, ref, metadata) == "onnx":
            graph = store.read_graph(ref, metadata)
            return LoadedModel(ref, metadata, graph=graph, hold=hold)
        import sklearn

        versions = {"scikit-learn": sklearn.__version__}
        estimator = store.load_estimator(ref, metadata, runtime_versions=versions)
        return LoadedModel(ref, metadata, estimator=estimator, hold=hold)
    except BaseException:
        hold.close()
        raise


def choose_runtime(wanted: str, ref: ModelRef, metadata: Metadata) -> str:
    no_graph = missing_graph_reason(metadata)
    onnx, sklearn = installed("onnxruntime"), installed("sklearn")
    if wanted == "onnx":
        if not onnx:
            raise RuntimeUnavailableError("RUNTIME=onnx, but ONNX Runtime is not installed here")
        if no_graph:
            where = "" if sklearn else f" in {SKLEARN_IMAGE}"
            raise RuntimeUnavailableError(
                f"RUNTIME=onnx, but {ref.path} has no verified ONNX graph ({no_graph}): "
                f"serve it with RUNTIME=sklearn{where}"
            )
        return "onnx"
    if wanted == "sklearn":
        if not sklearn:
            raise RuntimeUnavailableError(
                f"RUNTIME=sklearn, but this image has no scikit-learn: use {SKLEARN_IMAGE}"
            )
        return "sklearn"
    if onnx and not no_graph:
        return "onnx"
    if sklearn:
        return "sklearn"
    raise RuntimeUnavailableError(
        f"{ref.path} has no verified ONNX graph ({no_graph}) and this image has no "
        f"scikit-learn to run model.joblib: use {SKLEARN_IMAGE}"
    )


def missing_graph_reason(metadata: Metadata) -> str | None:
    if metadata.onnx is None:
        return "it was trained before versions carried one"
    if not metadata.onnx.verified:
        return metadata.onnx.reason or "it did not pass its check"
    return None
