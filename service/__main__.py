"""`python -m service`: verify the model in this process first, then hand over to uvicorn."""

from __future__ import annotations

import signal

# SIGHUP rotates keys once the server is up; until then it must not kill the process (its
# default action), so it is ignored before anything slow, the imports below included.
signal.signal(signal.SIGHUP, signal.SIG_IGN)

import gc
import logging
import os
import sys
import tempfile
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from modelstore import ModelStoreError
from service.app import create_app
from service.headers import SECURITY_HEADERS
from service.loading import load_model
from service.logs import configure_logging
from service.server.connections import GuardedProtocol
from service.server.stopping import StoppingServer
from service.server.workers import Supervisor
from service.settings import SettingsError, load_settings

log = logging.getLogger("service")


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        configure_logging("info", os.environ.get("LOG_FORMAT", "console").lower())
        log.error("start-up failed", extra={"reason": str(exc)})
        return 2
    configure_logging(settings.log_level, settings.log_format)
    # Fail fast with one line, before uvicorn starts: no traceback, never an unverified model.
    # Exit 2 for a setting to fix, 1 for a model that cannot be served.
    where = {"model_dir": str(settings.model_dir)}
    try:
        settings.api_keys()
    except SettingsError as exc:
        log.error("start-up failed", extra={**where, "reason": str(exc)})
        return 2
    try:
        loaded = load_model(settings)
    except ModelStoreError as exc:
        log.error("start-up failed", extra={**where, "reason": str(exc)})
        return 1
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        "server_header": False,
        "headers": SECURITY_HEADERS,
        # No X-Forwarded-* rewriting: nothing here uses the client address, and it costs a
        # middleware pass on every request.
        "proxy_headers": False,
        "loop": "uvloop",
        # uvicorn's httptools protocol, plus header and body deadlines and a connection cap.
        "http": GuardedProtocol,
        "timeout_keep_alive": settings.keepalive_timeout,
    }
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to this handler:
    # a requested, graceful stop exits 0 rather than dying by the signal.
    signal.signal(signal.SIGTERM, _exit_quietly)
    if settings.workers == 1:
        server = StoppingServer(uvicorn.Config(create_app(settings, loaded), **common))  # type: ignore[arg-type]
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    # Several processes: each worker loads the model in its own lifespan, and metrics are shared
    # through files so /metrics reports the whole server. Every worker, including one uvicorn
    # restarts later, must serve the version verified here, not whatever `latest` is by then.
    os.environ["MODEL_NAME"] = loaded.ref.name
    os.environ["MODEL_VERSION"] = str(loaded.ref.version)
    held = loaded.hold  # noqa: F841  (kept open for the supervisor's life: prune spares it)
    del loaded  # the supervisor never predicts: it keeps no copy of the model
    gc.collect()
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    made = not metrics_dir
    if not metrics_dir:
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
            prefix="service-metrics-"
        )
    config = uvicorn.Config(
        "service.app:create_worker_app",
        factory=True,
        workers=settings.workers,
        **common,  # type: ignore[arg-type]
    )
    # uvicorn's own supervisor, changed where it failed users (see service.server.workers).
    Supervisor(config, [config.bind_socket()], metrics_dir, remove_metrics_dir=made).run()
    return 0


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
