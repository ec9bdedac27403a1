"""The model store: layout, version allocation, atomic publish and verified reading."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from modelstore import (
    ArtifactInfo,
    Metadata,
    ModelNotFoundError,
    ModelStore,
    VerificationError,
)
from modelstore.store import StoreLockedError
from tests.conftest import ROOT


def clone_metadata(source: Path) -> dict[str, Any]:
    return json.loads((source / "metadata.json").read_text())  # type: ignore[no-any-return]


def describer(template: dict[str, Any], name: str) -> Any:
    def describe(version: int, artifact: ArtifactInfo) -> Metadata:
        return Metadata.model_validate(
            {**template, "name": name, "version": version, "artifact": artifact.model_dump()}
        )

    return describe


@pytest.fixture
def template(penguins_store: Path) -> dict[str, Any]:
    """Real metadata, minus the graph: these tests publish a pickle alone."""
    return {**clone_metadata(penguins_store / "penguins" / "1"), "onnx": None}


@pytest.fixture
def store_copy(penguins_store: Path, tmp_path: Path) -> ModelStore:
    shutil.copytree(penguins_store, tmp_path / "models")
    return ModelStore(tmp_path / "models")


def test_concurrent_publishers_never_collide(tmp_path: Path, template: dict[str, Any]) -> None:
    store = ModelStore(tmp_path / "models")
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            store.publish("race", {"weights": list(range(100))}, describer(template, "race"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.versions("race") == list(range(1, 9))
    for version in store.versions("race"):
        assert store.load(store.resolve("race", version)).metadata.version == version
    assert (
        sorted(
            p.name for p in (tmp_path / "models" / "race").iterdir() if p.name.startswith(".tmp")
        )
        == []
    )


def test_failure_while_publishing_leaves_nothing(tmp_path: Path, template: dict[str, Any]) -> None:
    store = ModelStore(tmp_path / "models")

    def broken(version: int, artifact: ArtifactInfo) -> Metadata:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.publish("half", {"x": 1}, broken)
    assert store.versions("half") == []
    assert not (tmp_path / "models" / "half").exists()  # the folder this publish made is gone


def test_crash_in_the_middle_of_publishing_leaves_no_visible_version(
    tmp_path: Path, template: dict[str, Any]
) -> None:
    """A process killed after writing files but before the rename leaves only a hidden folder."""
    (tmp_path / "template.json").write_text(json.dumps(template))
    script = textwrap.dedent(
        f"""
        import json, os
        from pathlib import Path
        from modelstore import ArtifactInfo, Metadata, ModelStore
        template = json.loads(Path({str(tmp_path / "template.json")!r}).read_text())
        def describe(version, artifact):
            return Metadata.model_validate({{**template, "name": "crash", "version": version,
                                            "artifact": artifact.model_dump()}})
        os.rename = lambda *a, **k: os._exit(9)  # die exactly where the version would appear
        ModelStore({str(tmp_path / "models")!r}).publish("crash", {{"x": 1}}, describe)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=False, timeout=60)
    assert result.returncode == 9
    folder = tmp_path / "models" / "crash"
    leftovers = [p for p in folder.iterdir() if p.name.startswith(".tmp-") and p.is_dir()]
    assert len(leftovers) == 1
    assert (leftovers[0] / "metadata.json").exists()
    assert leftovers[0].with_name(leftovers[0].name + ".owner").exists()
    store = ModelStore(tmp_path / "models")
    assert store.versions("crash") == []
    with pytest.raises(ModelNotFoundError, match="has no versions"):
        store.resolve("crash")
    ref = store.publish("crash", {"x": 1}, describer(template, "crash"))
    assert ref.version == 1
    # The next publish found the dead process's folder unlocked and cleaned it up.
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "1"]


def test_resolve_latest_and_explicit(tmp_path: Path, template: dict[str, Any]) -> None:
    store = ModelStore(tmp_path / "models")
    for _ in range(3):
        store.publish("m", {"x": 1}, describer(template, "m"))
    (tmp_path / "models" / "m" / "notes").mkdir()  # stray folders are not versions
    assert store.resolve().version == 3
    assert store.resolve("m", "latest").version == 3
    assert store.resolve("m", "2").path == tmp_path / "models" / "m" / "2"


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        (None, "latest", "does not exist"),
        ("m", "7", "no version 7 of model 'm'"),
        ("other", "latest", "no model named 'other'"),
        ("m", "first", "must be 'latest' or a positive integer"),
        ("../etc", "latest", "invalid model name"),
    ],
)
def test_resolve_errors(
    tmp_path: Path, template: dict[str, Any], name: str | None, version: str, message: str
) -> None:
    root = tmp_path / "models"
    if message != "does not exist":
        ModelStore(root).publish("m", {"x": 1}, describer(template, "m"))
    with pytest.raises(
        ModelNotFoundError if "invalid" not in message else Exception, match=message
    ):
        ModelStore(root).resolve(name, version)


def test_resolve_refuses_an_ambiguous_store(tmp_path: Path, template: dict[str, Any]) -> None:
    store = ModelStore(tmp_path)
    store.publish("a", {"x": 1}, describer(template, "a"))
    store.publish("b", {"x": 1}, describer(template, "b"))
    with pytest.raises(ModelNotFoundError, match=r"several models .* \(a, b\): set MODEL_NAME"):
        store.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no models in"):
        ModelStore(tmp_path / "empty").resolve()


def test_load_verifies_checksum(store_copy: ModelStore) -> None:
    ref = store_copy.resolve()
    with (ref.path / "model.joblib").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(VerificationError, match="sha256 mismatch"):
        store_copy.load(ref)


def test_load_verifies_metadata(store_copy: ModelStore) -> None:
    ref = store_copy.resolve()
    meta = clone_metadata(ref.path)
    del meta["features"]
    (ref.path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(VerificationError, match="not valid metadata: features: Field required"):
        store_copy.load(ref)
    (ref.path / "metadata.json").write_text("{not json")
    with pytest.raises(VerificationError, match="not valid metadata"):
        store_copy.load(ref)
    (ref.path / "metadata.json").unlink()
    with pytest.raises(VerificationError, match=r"metadata\.json is missing"):
        store_copy.load(ref)


def test_load_refuses_version_skew(store_copy: ModelStore) -> None:
    ref = store_copy.resolve()
    with pytest.raises(
        VerificationError, match=r"trained with scikit-learn .*, this runtime has 0\.1"
    ):
        store_copy.load(ref, runtime_versions={"scikit-learn": "0.1"})


def test_a_live_publishers_staging_is_never_cleaned(
    tmp_path: Path, template: dict[str, Any]
) -> None:
    """Cleaning at publish only takes folders whose owner lock is free (their process died)."""
    import fcntl

    folder = tmp_path / "models" / "busy"
    folder.mkdir(parents=True)
    live = folder / ".tmp-live"
    live.mkdir()
    owner = (folder / ".tmp-live.owner").open("x")
    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a publisher in progress holds it
    dead = folder / ".tmp-dead"
    dead.mkdir()
    (folder / ".tmp-dead.owner").touch()  # its process is gone: nobody holds the lock
    pruned = folder / ".removed-3-abcd"
    pruned.mkdir()
    try:
        ModelStore(tmp_path / "models").publish("busy", {"x": 1}, describer(template, "busy"))
        names = sorted(p.name for p in folder.iterdir())
        assert names == [".lock", ".tmp-live", ".tmp-live.owner", "1"]
    finally:
        owner.close()


def test_a_lock_held_too_long_is_a_clear_error(
    tmp_path: Path, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    import modelstore.store

    monkeypatch.setattr(modelstore.store, "LOCK_TIMEOUT_SECONDS", 0.3)
    folder = tmp_path / "models" / "held"
    folder.mkdir(parents=True)
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another process, stuck while publishing
        with pytest.raises(StoreLockedError, match=r"locked by another process \(waited 0\.3s"):
            ModelStore(tmp_path / "models").publish("held", {"x": 1}, describer(template, "held"))
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing half-written
