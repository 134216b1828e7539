"""kafka-python's transports keep the bytes that arrive with the broker's close.

kafka-python (3.0.12) reads a socket until it would block; when that read ends at the end of
the stream, its read loop returns the bytes and the error together and aborts on the error,
dropping the bytes. A broker that answers and then closes, which is how Kafka refuses a
login (the SaslAuthenticate response with SASL_AUTHENTICATION_FAILED, then the close after
`connection.failed.authentication.delay.ms`), loses its answer whenever both reach the
socket before the client reads: on a busy machine, often. The client then sees a bare
"socket disconnected", retries until its bootstrap timeout, and a wrong password reads as
"cannot reach Kafka ... Unable to bootstrap" (found by the security tests under CPU load).

`install()` wraps each transport's `_sock_recv`: bytes that came with the end of the stream
are delivered first, and the end is reported by the next read (the socket stays readable at
its end, so the read loop comes back at once). With a kafka-python that never returns both,
the wrapper changes nothing.

>>> import socket
>>> from kafka.net.transport import KafkaTCPTransport
>>> install()
>>> ours, broker = socket.socketpair()
>>> broker.sendall(b"refused"); broker.close()
>>> ours.setblocking(False)
>>> transport = KafkaTCPTransport(None, ours)  # no loop: only its reads are used here
>>> transport._sock_recv()
(b'refused', None)
>>> data, error = transport._sock_recv()
>>> data, type(error).__name__
(b'', 'KafkaConnectionError')
>>> ours.close()
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from kafka.net import transport as _transport

_PENDING = "_fraud_stream_end_of_stream"
Receive = Callable[[Any], tuple[bytes, BaseException | None]]
_installed = False


def _delivering_first(receive: Receive) -> Receive:
    @functools.wraps(receive)
    def _sock_recv(self: Any) -> tuple[bytes, BaseException | None]:
        pending = self.__dict__.pop(_PENDING, None)
        if pending is not None:
            return b"", pending
        data, error = receive(self)
        if data and error is not None:
            setattr(self, _PENDING, error)
            return data, None
        return data, error
    return _sock_recv


def install() -> None:
    """Wrap kafka-python's TCP and SSL transports once (module docstring)."""
    global _installed
    if _installed:
        return
    for cls in (_transport.KafkaTCPTransport, _transport.KafkaSSLTransport):
        if "_sock_recv" in vars(cls):
            cls._sock_recv = _delivering_first(vars(cls)["_sock_recv"])  # type: ignore[method-assign]
    _installed = True
