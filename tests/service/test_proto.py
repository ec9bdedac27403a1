"""The gRPC code checked in is what `make proto` makes from oip.proto now."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PROTO = Path("service/protocols/grpc_v2/oip.proto")
GENERATED = ["oip_pb2.py", "oip_pb2.pyi", "oip_pb2_grpc.py"]


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    (tmp_path / PROTO.parent).mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.",
         "--grpc_python_out=.", str(PROTO)],
        cwd=tmp_path, check=True,
    )  # fmt: skip
    for name in GENERATED:
        fresh = (tmp_path / PROTO.parent / name).read_bytes()
        assert fresh == (ROOT / PROTO.parent / name).read_bytes(), f"run `make proto`: {name}"
