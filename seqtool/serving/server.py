"""Running the app under uvicorn: bind, announce the address, serve until SIGTERM or Ctrl-C.

uvicorn's graceful shutdown is the drain: on SIGTERM or SIGINT it stops accepting connections,
closes idle ones and waits (up to DRAIN_SECONDS) for the requests in flight to be answered, then
stops the batch worker. The process then exits 0: it stopped as asked.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn

from seqtool.api import LoadedModel, load
from seqtool.errors import SeqtoolError
from seqtool.serving.app import Limits, create_app

DRAIN_SECONDS = 60


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the address is known before uvicorn starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise SeqtoolError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server(model: LoadedModel, limits: Limits, *, on_ready: Callable[[], None] = lambda: None,
           access_log: bool = True) -> uvicorn.Server:
    """The uvicorn server of the app; `.run(sockets=[sock])` serves until `.should_exit` is set (what its
    signal handlers do in the main thread)."""
    config = uvicorn.Config(create_app(model, limits, on_ready), log_level="info", access_log=access_log,
                            timeout_graceful_shutdown=DRAIN_SECONDS, lifespan="on")
    return uvicorn.Server(config)


def serve(model: LoadedModel, sock: socket.socket, limits: Limits, *, on_ready: Callable[[], None] = lambda: None,
          access_log: bool = True) -> None:
    """Serve on `sock` until SIGTERM or SIGINT (in the main thread) has drained it."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            # uvicorn re-raises the signal that stopped it once it has drained; ignoring it then lets
            # the command end normally instead of dying of it (or raising KeyboardInterrupt).
            signal.signal(sig, lambda *_: None)
    server(model, limits, on_ready=on_ready, access_log=access_log).run(sockets=[sock])


def serve_run(target: str | Path, *, host: str, port: int, device: str, limits: Limits, access_log: bool,
              say: Callable[[str], None]) -> None:
    """`seqtool serve`: load a run, listen, say where, serve until stopped."""
    model = load(target, device=device)
    if model.task != "translation":
        raise SeqtoolError(f"{model.run.path}: a {model.task!r} run; serve needs a translation run")
    sock = bind(host, port)
    url = address(sock)
    serve(model, sock, limits, access_log=access_log,
          on_ready=lambda: say(f"seqtool: serving {model.run.path} on {url} (SIGTERM or Ctrl-C stops it after "
                               "answering the requests in flight)"))
    say("seqtool: stopped")
