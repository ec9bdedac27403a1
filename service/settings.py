"""Service configuration, read once from the environment (names as in the README)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """A configuration a user must fix before the service can start."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        protected_namespaces=(),
        frozen=True,
        env_ignore_empty=True,  # API_KEY= (as compose passes an unset key) means no key
    )

    model_dir: Path = Field(Path("models"), description="root of the model store")
    model_name: str | None = Field(None, description="model to serve; default: the only one")
    model_version: str = Field("latest", description="a version number or 'latest'")
    api_key: SecretStr | None = Field(None, description="require this key on /predict and /model")
    api_key_file: Path | None = Field(None, description="read the key from this file instead")
    runtime: Literal["auto", "onnx", "sklearn"] = Field(
        "auto",
        description="onnx: the compiled graph; sklearn: the pickled pipeline; auto: onnx "
        "when the version has a verified graph",
    )
    unknown_categories: Literal["reject", "accept"] = Field(
        "reject",
        description="reject: a category not seen in training is a 422; accept: it is predicted "
        "as the pipeline does offline (encoded as unseen) and counted",
    )
    drift_window: int = Field(
        10_000,
        ge=0,
        description="rows (per worker) the drift PSI compares with the training profile; "
        "0 turns drift monitoring off",
    )
    drift_rows_per_second: int = Field(
        50_000,
        ge=0,
        description="rows a second (per worker) drift monitoring counts at most: past it, "
        "requests are counted at random, each row with the same chance; 0 counts every row",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="the Open Inference Protocol over gRPC (images with grpcio: the -grpc tag); "
        "0 turns it off",
    )
    workers: int = Field(1, ge=1, le=64)
    payload_log: str | None = Field(
        None,
        description="each prediction's inputs and outputs as CloudEvents: an http(s):// URL "
        "(batches POSTed) or file:/path.jsonl (rotated JSON lines); unset: off",
        pattern=r"^(https?://\S+|file:/\S+)$",
    )
    payload_log_sample: float = Field(
        1.0, ge=0.0, le=1.0, description="the share of predictions logged"
    )
    payload_log_queue: int = Field(
        10_000, ge=1, description="predictions waiting to be logged; past it they are dropped"
    )
    payload_log_file_bytes: int = Field(64 << 20, ge=1024, description="rotate files at this size")
    payload_log_file_count: int = Field(5, ge=1, description="rotated files kept")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "console"
    max_batch_size: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=64)
    max_queue: int = Field(
        256, ge=1, description="requests waiting for the model thread before 503 and Retry-After"
    )
    header_timeout: float = Field(
        10.0, gt=0, description="seconds a client may take to send a request's headers"
    )
    body_timeout: float = Field(
        30.0, gt=0, description="seconds a client may take to send a request's body"
    )
    write_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a client may leave the answer unread before the connection is dropped",
    )
    max_request_line: int = Field(
        8192, ge=256, description="bytes of a request's target (path and query); past it, 414"
    )
    max_header_bytes: int = Field(
        65536, ge=1024, description="bytes of a request's headers together; past them, 431"
    )
    keepalive_timeout: float = Field(
        5.0, gt=0, description="seconds an idle keep-alive connection stays open"
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="open connections per process; past it, requests other than the health "
        "probes get 503 with Retry-After",
    )
    shutdown_timeout: float = Field(
        10.0, gt=0, description="seconds to finish in-flight requests (rounded up to whole seconds)"
    )

    @property
    def shutdown_grace_seconds(self) -> int:
        """uvicorn takes whole seconds; rounding down would turn 0.5 into no grace at all."""
        return math.ceil(self.shutdown_timeout)

    def api_keys(self) -> tuple[bytes, ...] | None:
        """The accepted keys, if any. A key file holds one or more, one per line (blank lines
        and `#` comments ignored), so a new key can be added before an old one is retired."""
        if self.api_key is not None and self.api_key_file is not None:
            raise SettingsError("set API_KEY or API_KEY_FILE, not both")
        if self.api_key_file is not None:
            return read_key_file(self.api_key_file)
        if self.api_key is not None:
            key = self.api_key.get_secret_value().strip()
            if not key:
                raise SettingsError("API_KEY is set but empty")
            return (_header_safe(key, "API_KEY"),)
        return None


def read_key_file(path: Path) -> tuple[bytes, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read API_KEY_FILE {path}: {exc}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if key and not key.startswith("#"):
            keys.append(_header_safe(key, f"the key on line {number} of API_KEY_FILE {path}"))
    if not keys:
        raise SettingsError(f"API_KEY_FILE {path} holds no key")
    return tuple(keys)


def _header_safe(key: str, where: str) -> bytes:
    """HTTP headers carry bytes that servers read as Latin-1, so only printable ASCII can match."""
    if not (key.isascii() and key.isprintable()):
        raise SettingsError(
            f"{where} must be printable ASCII: a header cannot carry other characters, "
            "so such a key could never match"
        )
    return key.encode("ascii")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise SettingsError(f"invalid {name}: {first['msg']}") from None
