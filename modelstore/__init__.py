"""The versioned model store shared by training (writes) and the service (reads)."""

from modelstore.metadata import FORMAT_VERSION, ArtifactInfo, Feature, Metadata, class_key
from modelstore.store import (
    LoadedModel,
    ModelNotFoundError,
    ModelRef,
    ModelStore,
    ModelStoreError,
    StoreWriteError,
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
    "StoreWriteError",
    "VerificationError",
    "class_key",
    "sha256_file",
]
