"""The one error type the training CLI turns into a one-line reason and a non-zero exit."""


class TrainingError(Exception):
    """Bad input or configuration; `str()` is a single line a data scientist can act on."""


class QualityGateError(TrainingError):
    """The held-out score missed the configured gate, so nothing was published."""
