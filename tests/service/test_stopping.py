"""A stopping server answers the connections queued on its listening socket (CI caught one
reset under load: a keep-alive client reconnecting in the instant a worker closed its listener).

The instant is made exact here: the server's loop itself connects the clients and sends their
requests at the tick on which it decides to stop, after its last accept and before any close.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import Server

from service.app import create_app
from service.server.connections import GuardedProtocol
from service.server.stopping import StoppingServer
from service.settings import Settings
from tests.e2e.test_hostile_clients import answer_of, status_of
from tests.e2e.test_process import free_port
from tests.service.in_thread import predict_request, start_in_thread

QUEUED = 12


class ClientsAtStop:
    """At the tick after `now` is set: connect the clients, send their requests, then stop."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request
        self.now = threading.Event()
        self.queued: list[socket.socket] = []

    def stop(self) -> bool:
        if not self.now.is_set():
            return False
        for _ in range(QUEUED):  # the kernel completes each connection: nobody accepts
            client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            client.sendall(self.request)
            self.queued.append(client)
        return True


class ServiceServer(StoppingServer):
    clients: ClientsAtStop

    async def on_tick(self, counter: int) -> bool:
        return await super().on_tick(counter) or self.clients.stop()


class UvicornServer(Server):
    clients: ClientsAtStop

    async def on_tick(self, counter: int) -> bool:
        return await super().on_tick(counter) or self.clients.stop()


@pytest.mark.parametrize(
    ("base", "expected"),
    [(ServiceServer, "200"), (UvicornServer, "reset")],
    ids=["the service's server answers them", "uvicorn's own resets them"],
)
def test_connections_queued_when_the_server_stops(
    penguins_store: Path,
    penguin_example: dict[str, Any],
    base: type[ServiceServer | UvicornServer],
    expected: str,
) -> None:
    request = predict_request(penguin_example)
    app = create_app(Settings(model_dir=penguins_store, grpc_port=0))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), loop="uvloop", http=GuardedProtocol
    )
    server = base(config)
    server.clients = clients = ClientsAtStop(config.port, request)
    thread = start_in_thread(server)
    try:
        with socket.create_connection(("127.0.0.1", config.port), timeout=30) as warm:
            warm.sendall(request.replace(b"Host: x", b"Host: x\r\nConnection: close"))
            assert status_of(answer_of(warm, 30)[0]) == 200  # serving
        clients.now.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        server.should_exit = True
    outcomes: dict[str, int] = {}
    for client in clients.queued:
        answer, _ = answer_of(client, 10)
        client.close()
        outcome = "reset" if answer.endswith(b"<reset>") else str(status_of(answer))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "200":
            assert b"connection: close" in answer.lower()
    print(f"\n{QUEUED} connections queued as {base.__name__} stopped: {outcomes}")
    assert outcomes == {expected: QUEUED}
