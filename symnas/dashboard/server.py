"""optuna-dashboard serving symnas studies live, from the study file a search is writing.

The dashboard (optuna-dashboard's own web UI) reads the study file through ``OptunaStorageView``;
the search needs no change and no second storage. It polls every few seconds, so trials appear
while the search runs, in this process or another one.

Example::

    from symnas.dashboard import DashboardServer
    server = DashboardServer("runs.db", port=0).start()     # a free port, in a background thread
    print(server.url)                                        # http://127.0.0.1:PORT/dashboard
    ...
    server.stop()

From the shell: ``symnas dashboard runs.db --port 8080``.
"""
from __future__ import annotations

import os
import socketserver
import threading
import wsgiref.simple_server
from typing import Optional, Union

from symnas.storage import Storage

__all__ = ["DashboardServer"]


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True   # a browser keeps connections open; they must not hold the exit


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass   # one line per request (polled every few seconds) would drown the search's output


class DashboardServer:
    """optuna-dashboard over a symnas storage (a SQLite study file or a ``Storage``).

    ``port=0`` picks a free port; ``url`` tells which once bound. ``start()`` serves in a daemon thread
    and returns the server; ``serve_forever()`` blocks (the command line's way); ``stop()`` ends it.
    """

    def __init__(self, storage: Union[str, os.PathLike, Storage], host: str = "127.0.0.1",
                 port: int = 8080, log_requests: bool = False):
        self.storage = storage
        self.host = host
        self.port = port
        self.log_requests = log_requests
        self._server: Optional[_ThreadingWSGIServer] = None
        self._thread: Optional[threading.Thread] = None

    def bind(self) -> None:
        """Opens the port (``url`` is known from then on); ``start``/``serve_forever`` do it if needed."""
        self._bind()

    def _bind(self) -> _ThreadingWSGIServer:
        if self._server is not None:
            return self._server
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an integer in [0, 65535], got {self.port!r}.")
        try:
            import optuna_dashboard  # pylint: disable=import-outside-toplevel
        except ImportError as error:
            raise ImportError("The dashboard needs optuna-dashboard: pip install 'symnas[dashboard]'.") from error
        from symnas.dashboard.optuna_view import OptunaStorageView  # pylint: disable=import-outside-toplevel
        app = optuna_dashboard.wsgi(OptunaStorageView(self.storage))
        handler = wsgiref.simple_server.WSGIRequestHandler if self.log_requests else _QuietHandler
        try:
            self._server = wsgiref.simple_server.make_server(self.host, self.port, app,
                                                             server_class=_ThreadingWSGIServer,
                                                             handler_class=handler)
        except OSError as error:
            raise OSError(f"Cannot serve the dashboard on {self.host}:{self.port}: "
                          f"{error.strerror or error}.") from error
        return self._server

    @property
    def url(self) -> str:
        """The dashboard's address (known once started)."""
        if self._server is None:
            raise RuntimeError("The dashboard is not started yet: call start() or serve_forever().")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/dashboard"

    def start(self) -> "DashboardServer":
        """Serves in a background (daemon) thread; returns self."""
        server = self._bind()
        if self._thread is None:
            self._thread = threading.Thread(target=server.serve_forever, name="symnas-dashboard",
                                            daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serves in this thread until interrupted (Ctrl-C) or stopped from another thread."""
        self._bind().serve_forever()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "DashboardServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
