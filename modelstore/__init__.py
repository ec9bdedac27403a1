"""The versioned model store shared by training (writes) and the service (reads)."""

from modelstore.metadata import (
    FORMAT_VERSION,
    ArtifactInfo,
    CompiledInfo,
    Feature,
    Metadata,
    ProbeCheck,
    class_key,
)
from modelstore.store import (
    GRAPH_FILE,
    LoadedModel,
    ModelNotFoundError,
    ModelRef,
    ModelStore,
    ModelStoreError,
    SeveralModelsError,
    StoreWriteError,
    VerificationError,
    VersionInUseError,
    sha256_file,
)

__all__ = [
    "FORMAT_VERSION",
    "GRAPH_FILE",
    "ArtifactInfo",
    "CompiledInfo",
    "Feature",
    "LoadedModel",
    "Metadata",
    "ModelNotFoundError",
    "ModelRef",
    "ModelStore",
    "ModelStoreError",
    "ProbeCheck",
    "SeveralModelsError",
    "StoreWriteError",
    "VerificationError",
    "VersionInUseError",
    "class_key",
    "sha256_file",
]
