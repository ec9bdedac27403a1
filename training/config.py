"""The training configuration: one TOML file, strictly validated, then CLI overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelstore.metadata import FeatureType
from training.errors import TrainingError

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = PACKAGE_DIR / "configs" / "default.toml"

Estimator = Literal["linear", "random_forest", "hist_gradient_boosting"]
TaskChoice = Literal["auto", "classification", "regression"]
GateMetric = Literal["accuracy", "f1_macro", "roc_auc", "rmse", "mae", "r2"]
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
REGRESSION_METRICS = frozenset({"rmse", "mae", "r2"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Section):
    path: Path | None = None
    target: str | None = None
    drop: list[str] = Field(default_factory=list, description="columns never used as features")
    missing_values: list[str] = Field(
        default_factory=list, description="extra cell values that mean missing, such as '?'"
    )
    types: dict[str, FeatureType] = Field(
        default_factory=dict, description="column types that override inference"
    )
    encoding: str | None = Field(
        None, description="the file's text encoding (default: UTF-8, with or without a BOM)"
    )
    sep: str | None = Field(
        None, min_length=1, max_length=1, description="the separator (default: detected)"
    )


class ModelSection(_Section):
    task: TaskChoice = "auto"
    estimator: Estimator = "hist_gradient_boosting"
    params: dict[str, Any] = Field(default_factory=dict)
    require_onnx: bool = Field(
        False, description="refuse to publish a version whose ONNX graph fails to compile or verify"
    )


class GateSection(_Section):
    metric: GateMetric
    threshold: float = Field(description="minimum score, or maximum error for rmse and mae")


class TrainingConfig(_Section):
    name: str | None = None
    # Whether to draw report.html (`--no-report` turns it off for one run).
    report: bool = True
    seed: int = 42
    test_size: float = Field(default=0.2, gt=0, lt=1)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    gate: GateSection | None = None

    @model_validator(mode="after")
    def _gate_fits_task(self) -> TrainingConfig:
        if self.gate is not None and self.model.task != "auto":
            check_gate_task(self.gate.metric, self.model.task)
        return self


def check_gate_task(metric: str, task: str) -> None:
    """A gate metric must be one the task computes; checked before any fitting."""
    if (metric in REGRESSION_METRICS) != (task == "regression"):
        fits = "rmse, mae or r2" if task == "regression" else "accuracy, f1_macro or roc_auc"
        raise ValueError(f"gate metric {metric} does not apply to {task}: use {fits}")


def load_config(path: Path | None) -> TrainingConfig:
    """Read a TOML config; a relative data path is taken relative to the config file."""
    source = path or DEFAULT_CONFIG
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingError(f"config file {source} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read config file {source}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TrainingError(f"config file {source} is not valid TOML: {exc}") from None
    try:
        config = TrainingConfig.model_validate(raw)
    except ValidationError as exc:
        raise TrainingError(f"config file {source}: {describe_error(exc)}") from None
    if config.data.path is not None and not config.data.path.is_absolute():
        config.data.path = (source.parent / config.data.path).resolve()
    return config


def describe_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more)" if more else ""
    return f"{where}: {message}{suffix}" if where else f"{message}{suffix}"
