"""The two ways to run a version: ONNX Runtime on its compiled graph (`onnx`) and
scikit-learn on its pickled pipeline (`sklearn`), both behind `base.Predictor` ("rows in,
probabilities or values out"). Each module imports only `base`; this one picks, and imports the
chosen runtime only then, so an image without scikit-learn never loads it.
"""

from __future__ import annotations

from modelstore import LoadedModel
from service.runtimes.base import Predictor


def make_predictor(loaded: LoadedModel) -> Predictor:
    """The runtime the loader chose: a graph means ONNX Runtime, an estimator scikit-learn."""
    if loaded.graph is not None:
        from service.runtimes.onnx import OnnxPredictor

        return OnnxPredictor(loaded.metadata, loaded.graph)
    from service.runtimes.sklearn import SklearnPredictor

    return SklearnPredictor(loaded.metadata, loaded.estimator)
