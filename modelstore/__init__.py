"""The versioned model store shared by training (writes) and the service (reads)."""

from modelstore.metadata import FORMAT_VERSION, ArtifactInfo, Feature, Metadata
from modelstore.store import (
    LoadedModel,
    ModelNotFoundError,
    ModelRef,
    ModelStore,
    ModelStoreError,
    VerificationError,
    sha256_file,
)

__all__ = [
    "FORMAT_VERSION",
    "ArtifactInfo",
    "Feature",
    "LoadedModel",
    "Metadata",
    "ModelNotFoundError",
    "ModelRef",
    "ModelStore",
    "ModelStoreError",
    "VerificationError",
    "sha256_file",
]
