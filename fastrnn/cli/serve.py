"""``fastrnn serve``: the model of a checkpoint behind an HTTP server (:mod:`fastrnn.server`, on uvicorn).

It binds before it loads anything else it serves with, so a port in use is one line and exit 2. Ctrl-C
(SIGINT) or SIGTERM stops it cleanly: no new connections, requests in flight end (a streamed one with an
``error`` event), then exit 130 or 143.
"""
from __future__ import annotations

import socket
import sys

from .._entry import interrupted_status, interruption
from ..checkpoint import load_checkpoint
from ..model_info import file_info
from .exits import UsageError


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: one the system picks), or a one-line UsageError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r} is not an address to listen on ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def run_serve(args) -> int:
    try:
        import uvicorn
        from ..server import create_app
    except ImportError as e:
        raise UsageError(f"fastrnn serve needs the serve extra ({e.name} is missing): "
                         f"pip install 'fastrnn[serve]'") from None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in [0, 65535], got {args.port}")
    for name in ("max_length", "max_batch"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    ckpt = load_checkpoint(args.checkpoint)
    info = file_info(args.checkpoint)
    sock = listening_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    app = create_app(ckpt.model, info, max_length=args.max_length, max_batch=args.max_batch)
    class Server(uvicorn.Server):
        stopped_by = None  # the first signal that asked it to stop

        def handle_exit(self, sig, frame):
            self.stopped_by = self.stopped_by or sig
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, access_log=False))
    shown = f"[{host}]" if ":" in host else host
    print(f"fastrnn serve: {args.checkpoint} on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    # uvicorn raises the signal again once it has stopped; where that signal is ignored, say it here
    print("fastrnn serve: stopped", file=sys.stderr)
    return interrupted_status(interruption(server.stopped_by)) if server.stopped_by else 0
