"""The metadata contract of one model version: what training records and serving trusts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# 2: `example` holds typical values (medians, most frequent), not a training row,
#    `ignored_columns` lists the data columns training did not use, and `onnx` describes the
#    compiled graph and its check.
# 3: `report` records report.html and `profile` the training distribution of every feature
#    (the reference the service measures drift against). Formats 1 and 2 still load.
FORMAT_VERSION: Final = 3

FeatureType = Literal["number", "integer", "boolean", "string"]
Task = Literal["classification", "regression"]
Label = str | int | float | bool
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    name: str = Field(min_length=1)
    type: FeatureType
    nullable: bool
    categories: list[str] | None = None

    @model_validator(mode="after")
    def _categories_only_for_strings(self) -> Feature:
        if (self.type == "string") != (self.categories is not None):
            raise ValueError("categories are required for string features and only for them")
        return self


class DataInfo(_Strict):
    source: str
    rows: int = Field(ge=1)
    sha256: Sha256


class SplitInfo(_Strict):
    test_size: float = Field(gt=0, lt=1)
    train_rows: int = Field(ge=1)
    test_rows: int = Field(ge=1)


class GitInfo(_Strict):
    commit: str | None
    dirty: bool | None


class ArtifactInfo(_Strict):
    file: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    sha256: Sha256
    bytes: int = Field(ge=1)


class ProbeCheck(_Strict):
    """How many rows of one kind the graph was compared on, and its largest deviation there."""

    rows: int = Field(ge=0)
    max_deviation: float
    labels_identical: bool | None = None


class CompiledInfo(_Strict):
    """The ONNX graph of a version and how it was checked against the scikit-learn pipeline.

    `verified` false means there is no graph (`file` is None) and `reason` says why.
    """

    verified: bool
    reason: str | None = None
    file: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$")
    sha256: Sha256 | None = None
    bytes: int | None = Field(None, ge=1)
    checked_rows: int = Field(0, ge=0, description="training and held-out rows compared")
    synthetic_rows: int = Field(
        0, ge=0, description="probe rows: edges, thresholds, large integers, random"
    )
    deviation: Literal["probability", "value"]
    max_deviation: float | None = None
    tolerance: float
    labels_identical: bool | None = None
    tools: dict[str, str] = Field(default_factory=dict)
    # The graph's input name for each feature, in feature order (modelstore.spec); absent in
    # versions written before names were mapped, whose inputs are the feature names themselves.
    inputs: list[str] | None = None
    # The type numeric inputs enter the graph as: float64 since the graph computes as the
    # pipeline does; float32 in versions compiled before.
    precision: Literal["float32", "float64"] = "float32"
    # Rows compared per kind (data, edges, thresholds, large integers, random); absent in
    # versions compiled before the adversarial check.
    checks: dict[str, ProbeCheck] | None = None

    @model_validator(mode="after")
    def _graph_when_verified(self) -> CompiledInfo:
        if self.verified != (self.file is not None and self.sha256 is not None):
            raise ValueError("a verified graph needs its file and sha256, and only then")
        if not self.verified and not self.reason:
            raise ValueError("a version without a graph must say why")
        return self


class FeatureProfile(_Strict):
    """How one feature was spread in the training data, in at most MAX_BINS bins.

    Numbers and integers: `edges` cut the line into right-closed bins (-inf, e0], (e0, e1], ...,
    (e_last, inf). Strings and booleans: each of `categories` is a bin, and one last bin takes
    every other value (rarer training categories, unseen ones). `shares` are of present values;
    `missing` is the share of rows with no value.
    """

    name: str
    missing: float = Field(ge=0, le=1)
    edges: list[float] | None = None
    categories: list[str] | None = None
    shares: list[float]

    @model_validator(mode="after")
    def _bins_match(self) -> FeatureProfile:
        if (self.edges is None) == (self.categories is None):
            raise ValueError("a profile has either edges or categories")
        bins = len(self.edges if self.edges is not None else self.categories or []) + 1
        if len(self.shares) != bins:
            raise ValueError(f"{bins} bins need {bins} shares, not {len(self.shares)}")
        if self.edges is not None and self.edges != sorted(set(self.edges)):
            raise ValueError("edges must increase")
        return self


class Metadata(_Strict):
    format_version: Literal[1, 2, 3]
    name: ModelName
    version: int = Field(ge=1)
    created_at: datetime
    task: Task
    target: str
    features: list[Feature] = Field(min_length=1)
    classes: list[Label] | None
    metrics: dict[str, float]
    data: DataInfo
    split: SplitInfo
    estimator: str
    params: dict[str, Any]
    seed: int
    environment: dict[str, str]
    git: GitInfo
    artifact: ArtifactInfo
    example: dict[str, Any]
    ignored_columns: list[str] = Field(default_factory=list)
    # None: written before versions carried a compiled graph.
    onnx: CompiledInfo | None = None
    # None: written before versions carried a report or a drift reference.
    report: ArtifactInfo | None = None
    profile: list[FeatureProfile] | None = None

    @property
    def has_graph(self) -> bool:
        return self.onnx is not None and self.onnx.verified

    @property
    def onnx_summary(self) -> str:
        """One line on the compiled graph, for the training summary and `modelstore show`."""
        compiled = self.onnx
        if compiled is None:
            return "none (written before versions carried a graph)"
        if not compiled.verified:
            return f"none: {compiled.reason}"
        return (
            f"verified on {compiled.checked_rows} rows + {compiled.synthetic_rows} probe rows"
            f" ({compiled.precision}): largest {compiled.deviation} deviation"
            f" {compiled.max_deviation:.2g} (tolerance {compiled.tolerance:.2g})"
        )

    @property
    def onnx_checks(self) -> list[tuple[str, int, float, str]]:
        """(kind, rows, largest deviation, labels) for each kind of row the graph was checked
        on; empty for versions compiled before the adversarial check."""
        compiled = self.onnx
        if compiled is None or compiled.checks is None:
            return []
        labels = {True: "same", False: "differ", None: "-"}
        return [
            (kind, c.rows, c.max_deviation, labels[c.labels_identical])
            for kind, c in compiled.checks.items()
        ]

    @property
    def example_is_typical(self) -> bool:
        """Format 1 recorded a real training row as the example; it must never be shown."""
        return self.format_version >= 2

    @model_validator(mode="after")
    def _consistent(self) -> Metadata:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if (self.task == "classification") != (self.classes is not None):
            raise ValueError("classes are required for classification and only for it")
        if self.classes is not None and len(self.classes) < 2:
            raise ValueError("a classifier needs at least two classes")
        if set(self.example) != set(names):
            raise ValueError("example must name exactly the features")
        if set(self.ignored_columns) & set(names):
            raise ValueError("a column cannot be both a feature and ignored")
        if self.profile is not None and [p.name for p in self.profile] != names:
            raise ValueError("profile must describe exactly the features, in order")
        return self


def class_key(label: Label) -> str:
    """A class as a JSON object key: what `probabilities` uses (`true`, `3`, `Adelie`)."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)
