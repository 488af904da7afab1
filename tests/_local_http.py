"""A local HTTP server for tests of the HTTP clients: 127.0.0.1 only, one daemon thread per request.

The listen backlog is raised from socketserver's 5 to 128: the annotators open up to 32 connections at
once, and a full backlog on a loaded machine resets connections, which a test with no retries reports as a
failed request.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalHTTPServer(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


def start_local_server(handler: type[BaseHTTPRequestHandler]) -> tuple[LocalHTTPServer, int]:
    """Serve ``handler`` on a free port of 127.0.0.1 in a daemon thread; returns the server and its port.
    Stop it with ``server.shutdown(); server.server_close()``."""
    httpd = LocalHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return httpd, httpd.server_address[1]
