"""A small HTTP server that idle or slow clients cannot grow: what serves /metrics and probes.

`http.server.ThreadingHTTPServer` starts one thread per connection, listens with a backlog
of 5 and never times a connection out: 400 idle connections were 400 more threads in the
scorer, each waiting forever for a request line. This server:

- reads requests in one thread, with a selector: a connection costs a file descriptor and a
  small buffer, no thread, until its whole request head (request line and headers, at most
  `max_head` bytes) has arrived; one that is still incomplete `head_timeout_s` after it was
  accepted (idle, or trickling a byte at a time) is closed, and when more than
  `max_connections` are open the oldest is closed first;
- answers complete requests on a fixed pool of `workers` threads, one request per
  connection (HTTP/1.0: the server closes), with a socket timeout of `write_timeout_s` for
  a client that does not read its answer; when `max_pending` requests already wait for a
  worker, a new one is dropped instead of queued without bound;
- listens with a backlog of `backlog` (128 by default).

So it runs `workers + 1` threads whatever the clients do, and the endpoints still answer
while hundreds of connections sit idle (tests/unit/test_health.py opens them).
"""

from __future__ import annotations

import io
import logging
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

log = logging.getLogger(__name__)
_END_OF_HEAD = b"\r\n\r\n"


class _Connection:
    """A socket whose request head was read already: the handler reads it from memory
    (`makefile("rb")`) and writes its answer to the socket."""

    def __init__(self, sock: socket.socket, head: bytes) -> None:
        self._sock = sock
        self._head = head

    def makefile(self, mode: str, buffering: int = -1) -> Any:
        if "r" in mode:
            return io.BytesIO(self._head)
        return self._sock.makefile(mode, buffering)  # type: ignore[call-overload]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BoundedHTTPServer(HTTPServer):
    """`HTTPServer` reading requests with a selector and answering on a fixed pool.

    `start()` runs the reading loop in a daemon thread; `stop()` ends it, closes every open
    connection and the listening socket, and waits for the workers.
    """

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 workers: int = 4, backlog: int = 128, head_timeout_s: float = 10.0,
                 write_timeout_s: float = 5.0, max_connections: int = 512,
                 max_pending: int = 64, max_head: int = 16 * 1024) -> None:
        self.request_queue_size = backlog  # read by server_activate (listen)
        self.head_timeout_s = head_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_connections = max_connections
        self.max_head = max_head
        super().__init__(address, handler)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metrics-http")
        self._pending = threading.BoundedSemaphore(max_pending)
        self._reading: dict[socket.socket, tuple[float, bytearray]] = {}  # accepted at, head
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def open_connections(self) -> int:
        """Connections accepted whose request is not complete yet (none holds a thread)."""
        return len(self._reading)

    def start(self) -> BoundedHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.server_close()

    # -- the reading loop (one thread) -------------------------------------------------------
    def _loop(self) -> None:
        self.socket.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(timeout=0.2):
                    if key.fileobj is self.socket:
                        self._accept()
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                self._expire(time.monotonic() - self.head_timeout_s)
        finally:
            for conn in list(self._reading):
                self._drop(conn)
            self._selector.close()

    def _accept(self) -> None:
        for _ in range(64):  # drain the backlog in bursts, without starving reads
            try:
                conn, _address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, ...: try again next round
                log.warning("metrics server: accept failed: %s", exc)
                return
            if len(self._reading) >= self.max_connections:
                self._drop(min(self._reading, key=lambda c: self._reading[c][0]))
            conn.setblocking(False)
            self._reading[conn] = (time.monotonic(), bytearray())
            self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        head = self._reading[conn][1]
        try:
            chunk = conn.recv(self.max_head + 1 - len(head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk or len(head) + len(chunk) > self.max_head:
            self._drop(conn)  # closed by the client, or not a request we would serve
            return
        head += chunk
        if _END_OF_HEAD in head:
            self._selector.unregister(conn)
            del self._reading[conn]
            self._hand_over(conn, bytes(head))

    def _hand_over(self, conn: socket.socket, head: bytes) -> None:
        if not self._pending.acquire(blocking=False):
            self._close(conn)  # every worker busy and the queue full: shed, do not queue
            return
        conn.setblocking(True)
        conn.settimeout(self.write_timeout_s)
        try:
            self._pool.submit(self._serve, conn, head)
        except RuntimeError:  # the pool is shutting down
            self._pending.release()
            self._close(conn)

    def _expire(self, accepted_before: float) -> None:
        for conn, (since, _head) in list(self._reading.items()):
            if since < accepted_before:
                self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._reading.pop(conn, None)
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        self._close(conn)

    # -- a worker ----------------------------------------------------------------------------
    def _serve(self, conn: socket.socket, head: bytes) -> None:
        try:
            self.finish_request(_Connection(conn, head), conn.getpeername())  # type: ignore[arg-type]
        except OSError:  # reset, timed out, gone: nothing to tell the client
            pass
        except Exception:  # noqa: BLE001 - a handler bug must not kill the worker
            log.exception("metrics server: request failed")
        finally:
            self._close(conn)
            self._pending.release()

    @staticmethod
    def _close(conn: socket.socket) -> None:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()
