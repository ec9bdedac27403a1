"""Several worker processes (WORKERS > 1): uvicorn's supervisor, changed where it let users down.

- A worker that dies is replaced; a replacement that cannot start (its version pruned, its
  store unmounted) is logged and retried with a growing pause, while the healthy workers keep
  serving. uvicorn would stop every worker then. Only when no worker is left does the
  supervisor stop, so that the orchestrator restarts the whole server.
- SIGTERM and SIGINT stop new connections at once: the supervisor closes its own copy of the
  listening socket, and each worker closes its copy as it begins to drain. Otherwise the
  supervisor's copy keeps taking connections that no worker will ever answer.
- Each worker stops as `service.server.stopping` says: no queued connection is reset.
- Each worker that ends is marked dead for the metrics (its live gauges leave the sums), and
  the metrics folder the server made is removed when it stops.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import time
from types import FrameType

from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from service.server.stopping import Worker

log = logging.getLogger("service")
FIRST_RETRY_SECONDS = 1.0
LAST_RETRY_SECONDS = 30.0


class Supervisor(Multiprocess):
    def __init__(
        self,
        config: Config,
        sockets: list[socket.socket],
        metrics_dir: str,
        remove_metrics_dir: bool,
    ) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir
        self.remove_metrics_dir = remove_metrics_dir
        self._retry_at: dict[int, float] = {}  # slot -> when to try starting it again
        self._pause: dict[int, float] = {}

    def run(self) -> None:
        # SIGTERM and SIGINT act at once rather than at the supervisor's next half-second
        # tick: new connections are refused from the moment the signal arrives.
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, self._stop_now)
        try:
            super().run()
        finally:
            for process in self.processes:
                self._forget(process)
            if self.remove_metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if slot in self._retry_at:
                self._retry(slot)
                continue
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                self._pause.pop(slot, None)
                continue
            process.kill()  # hung, or already gone
            process.join()
            self._forget(process)
            if self.should_exit.is_set():
                return
            if process.exitcode == STARTUP_FAILURE:
                if not self._others_alive(slot):
                    log.error("no worker could start: stopping the server")
                    self.should_exit.set()
                    return
                pause = min(self._pause.get(slot, FIRST_RETRY_SECONDS / 2) * 2, LAST_RETRY_SECONDS)
                self._pause[slot] = pause
                self._retry_at[slot] = time.monotonic() + pause
                log.error(
                    "a worker failed to start; the others keep serving",
                    extra={"pid": process.pid, "retry_in_s": pause},
                )
                continue
            log.warning("a worker died; starting another", extra={"pid": process.pid})
            self._start(slot)

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = Worker(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        """Rolling replacement (SIGHUP), as uvicorn's: each new worker serves before the one it
        replaces is stopped (and marked dead for the metrics)."""
        timeout = self.config.timeout_worker_healthcheck
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = Worker(self.config, self.sockets)
            new.start()
            if not new.wait_until_ready(timeout, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error(
                        "a new worker was not ready in time; keeping the old one",
                        extra={"pid": old.pid, "timeout_s": timeout},
                    )
                return
            old.terminate()
            old.join()
            self._forget(old)
            self.processes[slot] = new

    def _stop_now(self, signum: int, frame: FrameType | None) -> None:
        for sock in self.sockets:
            sock.close()
        self.should_exit.set()  # the run loop wakes, then stops every worker

    def _retry(self, slot: int) -> None:
        if time.monotonic() >= self._retry_at[slot]:
            del self._retry_at[slot]
            self._start(slot)

    def _start(self, slot: int) -> None:
        process = Worker(self.config, self.sockets)
        process.start()
        self.processes[slot] = process

    def _others_alive(self, slot: int) -> bool:
        return any(
            p.process.is_alive()
            for index, p in enumerate(self.processes)
            if index != slot and index not in self._retry_at
        )

    def _forget(self, process: Process) -> None:
        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
