"""uvicorn, run the way `star serve` needs: queued work rejected at the first Ctrl-C / SIGTERM, running
work finished; and a server on a background thread for tests, benchmarks and embedding."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def http_url(host: str, port: int) -> str:
    """The server's address as a client writes it: an IPv6 host in brackets (http://[::1]:8000)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class GracefulServer(uvicorn.Server):
    """On Ctrl-C / SIGTERM: every model stops taking work and rejects what waits (503); the requests
    already running finish within the config's graceful-shutdown time."""

    def __init__(self, config: uvicorn.Config, workers: dict):
        super().__init__(config)
        self.workers = workers

    def handle_exit(self, sig, frame):
        for w in self.workers.values():
            w.stop_accepting()
        super().handle_exit(sig, frame)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """`with BackgroundServer(app) as url:` serves `app` on 127.0.0.1 at a free port in a thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        self.config = uvicorn.Config(app, host=host, port=port or free_port(host), log_level="warning",
                                     access_log=False, lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return http_url(self.config.host, self.config.port)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
