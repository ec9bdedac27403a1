"""The model store on disk: `<root>/<name>/<version>/{model.joblib,model.onnx,metadata.json}`.

This module is the only code that knows the layout. Training publishes through it, the service
resolves and loads through it, and neither writes or reads a version directory by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from modelstore.metadata import ArtifactInfo, Metadata

ARTIFACT_FILE = "model.joblib"
GRAPH_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
REPORT_FILE = "report.html"
_VERSION_DIR = re.compile(r"^[1-9][0-9]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TEMP_PREFIX = ".tmp-"
_REMOVED_PREFIX = ".removed-"
_OWNER_SUFFIX = ".owner"
# How long a publish or prune waits for another one on the same model before giving up.
LOCK_TIMEOUT_SECONDS = 60.0
_LOCK_FILE = ".lock"


class ModelStoreError(Exception):
    """A store problem a user can fix; `str()` is a one-line reason fit to print."""


class ModelNotFoundError(ModelStoreError):
    """The requested model or version does not exist."""


class StoreWriteError(ModelStoreError):
    """The store cannot be written: not a directory, no permission, disk full."""


class StoreLockedError(StoreWriteError):
    """Another process has held the model's lock for longer than LOCK_TIMEOUT_SECONDS."""


class SeveralModelsError(ModelNotFoundError):
    """No model named, and the store holds several: the caller says how to choose one."""

    def __init__(self, root: Path, names: list[str]) -> None:
        super().__init__(f"several models in {root} ({', '.join(names)}): set MODEL_NAME")
        self.root = root
        self.names = names


class VersionInUseError(ModelStoreError):
    """A running server holds the version: removing it would break that server's restarts."""


class VerificationError(ModelStoreError):
    """A version exists but cannot be trusted: bad metadata, wrong checksum, version skew."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    path: Path


@dataclass(frozen=True)
class LoadedModel:
    ref: ModelRef
    metadata: Metadata
    estimator: Any = None
    graph: bytes | None = None
    # Open while the version is in use: prune leaves it alone (see ModelStore.hold).
    hold: IO[bytes] | None = None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ModelStoreError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    return name


class ModelStore:
    """A folder of named models, each with immutable integer versions."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name) for p in folder.iterdir() if p.is_dir() and _VERSION_DIR.fullmatch(p.name)
        )

    def resolve(self, name: str | None = None, version: str | int = "latest") -> ModelRef:
        """Find one version; `name=None` means the only model in the store."""
        if not self.root.is_dir():
            raise ModelNotFoundError(f"model directory {self.root} does not exist")
        if name is None:
            names = self.names()
            if not names:
                raise ModelNotFoundError(f"no models in {self.root}")
            if len(names) > 1:
                raise SeveralModelsError(self.root, names)
            name = names[0]
        check_name(name)
        versions = self.versions(name)
        if not versions:
            if (self.root / name).is_dir():
                raise ModelNotFoundError(f"model {name!r} in {self.root} has no versions")
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(f"no model named {name!r} in {self.root} (available: {known})")
        wanted = _parse_version(version)
        if wanted is None:
            wanted = versions[-1]
        elif wanted not in versions:
            known = ", ".join(map(str, versions))
            raise ModelNotFoundError(
                f"no version {wanted} of model {name!r} in {self.root} (available: {known})"
            )
        return ModelRef(name, wanted, self.root / name / str(wanted))

    def metadata(self, ref: ModelRef) -> Metadata:
        """The version's metadata, checked against its schema and against where it lies."""
        metadata = read_metadata(ref.path)
        if (metadata.name, metadata.version) != (ref.name, ref.version):
            raise VerificationError(
                f"{ref.path / METADATA_FILE} describes {metadata.name} version "
                f"{metadata.version}, not {ref.name} version {ref.version}"
            )
        return metadata

    def read_graph(self, ref: ModelRef, metadata: Metadata) -> bytes:
        """The version's verified ONNX graph, its bytes checked against the metadata."""
        compiled = metadata.onnx
        if compiled is None or compiled.file is None or compiled.sha256 is None:
            raise VerificationError(f"{ref.path} has no compiled ONNX graph")
        return _read_checked(ref.path / compiled.file, compiled.sha256)

    def load_estimator(
        self, ref: ModelRef, metadata: Metadata, *, runtime_versions: dict[str, str] | None = None
    ) -> Any:
        """Unpickle the scikit-learn pipeline; with `runtime_versions`, refuse any version skew.

        Metadata and checksum are checked before unpickling, so a tampered or foreign file is
        never executed by joblib. joblib is imported here only: the ONNX image has none.
        """
        if runtime_versions:
            for package, running in runtime_versions.items():
                trained = metadata.environment.get(package)
                if trained != running:
                    raise VerificationError(
                        f"{ref.path} was trained with {package} {trained}, "
                        f"this runtime has {running}: retrain or use a matching image"
                    )
        artifact = ref.path / metadata.artifact.file
        payload = _read_checked(artifact, metadata.artifact.sha256)
        import joblib

        try:
            return joblib.load(io.BytesIO(payload))
        except Exception as exc:  # a corrupt pickle can raise almost anything
            raise VerificationError(f"cannot unpickle {artifact}: {exc}") from None

    def load(self, ref: ModelRef, *, runtime_versions: dict[str, str] | None = None) -> LoadedModel:
        """Metadata, the unpickled pipeline and (when there is one) the checked graph."""
        metadata = self.metadata(ref)
        estimator = self.load_estimator(ref, metadata, runtime_versions=runtime_versions)
        graph = self.read_graph(ref, metadata) if metadata.has_graph else None
        return LoadedModel(ref, metadata, estimator, graph)

    def verify(self, ref: ModelRef) -> list[str]:
        """Every problem with one version, one line each: its metadata (valid, and describing
        this folder), and every file (listed with the right sha256, nothing unlisted)."""
        try:
            metadata = self.metadata(ref)
        except VerificationError as exc:
            return [str(exc)]
        problems = []
        listed = recorded_files(metadata)
        for file_name, sha256 in listed.items():
            try:
                _read_checked(ref.path / file_name, sha256)
            except VerificationError as exc:
                problems.append(str(exc))
        try:
            present = {p.name for p in ref.path.iterdir()}
        except OSError as exc:
            return [*problems, f"cannot list {ref.path}: {_reason(exc)}"]
        for extra in sorted(present - set(listed) - {METADATA_FILE}):
            problems.append(f"{ref.path / extra} is not recorded in the metadata")
        return problems

    def hold(self, ref: ModelRef) -> IO[bytes]:
        """Mark a version as served for as long as the returned file stays open: a shared lock
        on its metadata file, which `remove` will not take from a live server. flock works
        across processes and containers on one host and needs only read access, so a store
        mounted read-only can be held too."""
        path = ref.path / METADATA_FILE
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ModelNotFoundError(f"{ref.path} was removed") from None
        except OSError as exc:
            raise VerificationError(f"cannot read {path}: {_reason(exc)}") from None
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if not same:  # removed between the open and the lock
            handle.close()
            raise ModelNotFoundError(f"{ref.path} was removed")
        return handle

    def remove(self, ref: ModelRef) -> None:
        """Delete one version atomically: under the model's lock it is renamed out of sight
        (a reader sees it whole or not at all), then the hidden copy is deleted. A version a
        running server holds (see `hold`) is refused with VersionInUseError."""
        folder = self.root / ref.name
        hidden = folder / f"{_REMOVED_PREFIX}{ref.version}-{uuid.uuid4().hex[:8]}"
        try:
            with _locked(folder), (ref.path / METADATA_FILE).open("rb") as metadata:
                try:
                    # Held through the rename, so no server can begin to hold it meanwhile.
                    fcntl.flock(metadata, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise VersionInUseError(
                        f"{ref.name} version {ref.version} is being served by a running server"
                    ) from None
                os.rename(ref.path, hidden)
                _fsync_dir(folder)
        except OSError as exc:
            raise StoreWriteError(f"cannot remove {ref.path}: {_reason(exc)}") from None
        shutil.rmtree(hidden, ignore_errors=True)  # what is left is invisible to the store

    def check_writable(self, name: str) -> None:
        """Refuse early (before a long fit) a store that publish could not write into.

        Creates nothing: the nearest existing folder on the way must be a writable directory.
        """
        check_name(name)
        path = self.root / name
        while not path.exists():
            if path.parent == path:
                break
            path = path.parent
        if not path.is_dir():
            raise StoreWriteError(
                f"cannot write models into {self.root}: {path} is not a directory"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise StoreWriteError(f"cannot write models into {self.root}: {path} is not writable")

    def publish(
        self,
        name: str,
        estimator: Any,
        describe: Callable[[int, ArtifactInfo], Metadata],
        extra_files: dict[str, bytes] | None = None,
        report: Callable[[Metadata], bytes] | None = None,
    ) -> ModelRef:
        """Write a new version atomically and return it.

        `report`, given the version's metadata, returns report.html, whose checksum the
        metadata then records. It runs under the lock, so it should only format, not compute.

        Files are written into a hidden temporary folder beside the versions; the version
        number is claimed under an exclusive lock and the folder renamed into place, so a
        version appears whole or not at all and concurrent publishers never collide. Any I/O
        failure removes what this call created and raises StoreWriteError.
        """
        check_name(name)
        folder = self.root / name
        created = not folder.exists()
        staging = folder / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
        owner = staging.with_name(staging.name + _OWNER_SUFFIX)
        handle: IO[str] | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _remove_stale_staging(folder)
            # The owner file's lock says "in use" for as long as this process lives, whichever
            # host or container it runs in; a crash releases it, and the next publish cleans up.
            handle = owner.open("x")
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            staging.mkdir()
        except OSError as exc:
            if handle is not None:
                handle.close()
            owner.unlink(missing_ok=True)
            if created:
                _remove_if_unused(folder)
            raise StoreWriteError(f"cannot write models into {self.root}: {_reason(exc)}") from None
        try:
            return self._publish_staged(
                name, folder, staging, estimator, describe, extra_files or {}, report
            )
        except OSError as exc:
            raise StoreWriteError(
                f"cannot write model {name!r} into {self.root}: {_reason(exc)}; nothing published"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
            owner.unlink(missing_ok=True)  # staging first, then its owner: never the reverse
            handle.close()
            if created:
                _remove_if_unused(folder)

    def _publish_staged(
        self,
        name: str,
        folder: Path,
        staging: Path,
        estimator: Any,
        describe: Callable[[int, ArtifactInfo], Metadata],
        extra_files: dict[str, bytes],
        report: Callable[[Metadata], bytes] | None,
    ) -> ModelRef:
        import joblib

        for file_name, data in extra_files.items():
            _write_durably(staging / file_name, data)
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer)
        payload = buffer.getvalue()
        _write_durably(staging / ARTIFACT_FILE, payload)
        artifact = ArtifactInfo(
            file=ARTIFACT_FILE, sha256=sha256_bytes(payload), bytes=len(payload)
        )
        with _locked(folder):
            version = max(self.versions(name), default=0) + 1
            metadata = describe(version, artifact)
            if report is not None:
                page = report(metadata)
                _write_durably(staging / REPORT_FILE, page)
                info = ArtifactInfo(file=REPORT_FILE, sha256=sha256_bytes(page), bytes=len(page))
                metadata = metadata.model_copy(update={"report": info})
            _write_durably(staging / METADATA_FILE, metadata_json(metadata))
            # Read back by the readers' own code: a version nothing could read never lands.
            read_metadata(staging)
            target = folder / str(version)
            os.rename(staging, target)  # atomic; under the lock the target cannot exist
            _fsync_dir(folder)
        return ModelRef(name, version, target)


def recorded_files(metadata: Metadata) -> dict[str, str]:
    """The files a version's metadata vouches for, with their sha256."""
    files = {metadata.artifact.file: metadata.artifact.sha256}
    compiled = metadata.onnx
    if compiled is not None and compiled.file is not None and compiled.sha256 is not None:
        files[compiled.file] = compiled.sha256
    if metadata.report is not None:
        files[metadata.report.file] = metadata.report.sha256
    return files


def metadata_json(metadata: Metadata) -> bytes:
    return metadata.model_dump_json(indent=2).encode() + b"\n"


def read_metadata(version_dir: Path) -> Metadata:
    path = version_dir / METADATA_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VerificationError(f"{path} is missing") from None
    except OSError as exc:
        raise VerificationError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return Metadata.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise VerificationError(f"{path} is not valid metadata: {where}: {first['msg']}") from None


def _parse_version(version: str | int) -> int | None:
    if isinstance(version, int):
        text = str(version)
    else:
        text = version.strip()
        if text == "latest":
            return None
    if not _VERSION_DIR.fullmatch(text):
        raise ModelNotFoundError(
            f"model version must be 'latest' or a positive integer, not {version!r}"
        )
    return int(text)


def _read_checked(path: Path, sha256: str) -> bytes:
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise VerificationError(f"cannot read {path}: {exc.strerror}") from None
    actual = sha256_bytes(payload)
    if actual != sha256:
        raise VerificationError(
            f"sha256 mismatch for {path}: metadata says {sha256[:12]}..., file has {actual[:12]}..."
        )
    return payload


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _remove_if_unused(folder: Path) -> None:
    """Drop a model folder this publish created if no version landed in it (only the lock)."""
    try:
        entries = {p.name for p in folder.iterdir()}
        if entries <= {_LOCK_FILE}:
            (folder / _LOCK_FILE).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass  # another publisher is using it, or it is already gone


def _remove_if_old(entry: Path) -> None:
    """A staging folder with no owner file, removed once it is a day old; another publisher
    may delete it first (then there is nothing left to do)."""
    try:
        old = time.time() - entry.stat().st_mtime > 86400
    except OSError:
        return
    if old:
        shutil.rmtree(entry, ignore_errors=True)


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """The model's lock, waited for at most LOCK_TIMEOUT_SECONDS (a stuck holder must not
    hang a training job forever)."""
    with (folder / _LOCK_FILE).open("a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{folder} is locked by another process (waited"
                        f" {LOCK_TIMEOUT_SECONDS:g}s for {folder / _LOCK_FILE}); try again later"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_staging(folder: Path) -> None:
    """Delete what crashed publishes and prunes left behind, never what a live one uses.

    A staging folder is in use while its owner file is locked; its process dying releases the
    lock. A folder without an owner file (an older release's, or a crash between the two
    deletions) is removed once it is a day old.
    """
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(_REMOVED_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)  # out of sight already; only a delete left
        elif entry.name.startswith(_TEMP_PREFIX) and entry.is_dir():
            owner = entry.with_name(entry.name + _OWNER_SUFFIX)
            try:
                with owner.open("r") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while in use
                    shutil.rmtree(entry, ignore_errors=True)
                    owner.unlink(missing_ok=True)
            except FileNotFoundError:
                _remove_if_old(entry)
            except OSError:
                continue  # locked: a publish in progress
