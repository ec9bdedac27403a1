"""How a serving process stops without losing a request a client has already sent.

Closing a listening socket resets every connection the kernel has completed but no process has
taken yet: the requests on them are lost, and their clients cannot tell whether they were
served. Under load, a keep-alive client that reconnects after a `Connection: close` lands in
that queue in the instant between the event loop's last accept and the close. So a stopping
server first takes every queued connection itself and answers it with `Connection: close`, as it
does the connections it already has; a client that connects after that is refused by the kernel
(never accepted: safe to retry). Connections made once the server is stopping (those uvicorn
accepted but had not yet handed to their protocol, and those taken here) drain too: see
`GuardedProtocol.connection_made`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import weakref
from typing import Any

from uvicorn.server import Server, ServerState
from uvicorn.supervisors.multiprocess import Process

log = logging.getLogger("service")
_STOPPING: weakref.WeakSet[ServerState] = weakref.WeakSet()


def is_stopping(state: ServerState) -> bool:
    """Whether the server that owns `state` has begun to stop."""
    return state in _STOPPING


class StoppingServer(Server):
    _taking: set[asyncio.Task[object]]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        _STOPPING.add(self.server_state)
        self._take_queued()
        # No await before uvicorn's shutdown closes the listeners: nothing is accepted between.
        await super().shutdown(sockets)

    def _take_queued(self) -> None:
        self._taking = set()
        taken = sum(self._take_from(listener) for s in self.servers for listener in s.sockets)
        if taken:
            log.info("took connections queued at shutdown", extra={"connections": taken})

    def _take_from(self, listener: Any) -> int:
        loop = asyncio.get_running_loop()
        taken = 0
        # A second descriptor of the same socket: closing it leaves the listener open.
        with socket.socket(fileno=os.dup(listener.fileno())) as queue:
            queue.setblocking(False)
            while True:
                try:
                    connection, _ = queue.accept()
                except ConnectionAbortedError:
                    continue  # the client gave up while queued
                except OSError:
                    return taken  # the queue is empty (or no descriptor is left to take one)
                connection.setblocking(False)
                task = loop.create_task(
                    loop.connect_accepted_socket(self._protocol, connection, ssl=self.config.ssl)
                )
                self._taking.add(task)
                task.add_done_callback(self._taken)
                taken += 1

    def _taken(self, task: asyncio.Task[object]) -> None:
        self._taking.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info(
                "a connection queued at shutdown was gone", extra={"reason": str(task.exception())}
            )

    def _protocol(self) -> asyncio.Protocol:
        """What uvicorn's own listener would have made for the connection."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )


class Worker(Process):
    """uvicorn's worker process, serving with a StoppingServer."""

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = StoppingServer(config=self.config)
        return self._server
