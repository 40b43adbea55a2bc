"""One deadline per HTTP exchange: connect, TLS handshake, send, reply head and body.

A read timeout bounds each socket read, not the exchange: a server that trickles its status
line one byte a second kept a request with ``timeout=2`` busy for 25 s (each byte restarts
the timer), outliving ``stop()`` and the lease of the batch. Here every socket operation of an
exchange first sets the socket's timeout to what is left of one monotonic deadline, and raises
``socket.timeout`` once it has passed, whatever the server does.

How it hooks in, using only what urllib3 1.26 and 2.x share: connection pools whose
``ConnectionCls`` (a) gives the new TCP socket what is left before the TLS handshake (CPython
bounds a whole handshake by the socket's timeout) and (b) once connected, replaces
``self.sock`` by a :class:`DeadlineSocket`, through which ``http.client`` writes
(``sendall``) and reads (``makefile("rb")``, then ``recv_into``). The deadline is a
thread-local set by the transport around each exchange (:func:`bounded`); a socket used
outside one behaves as before. Not bounded: name resolution (``getaddrinfo`` takes no
timeout), the ``CONNECT`` reply of a tunnelling proxy (read before ``connect()`` returns:
per read only), and SOCKS proxies (their pools are left as they are).

Reproduce the old behaviour: a raw socket server on 127.0.0.1 that sends ``HTTP/1.1 202``
one byte per 0.5 s, and a 1 s request timeout (``tests/reliability/test_hostile_network.py``).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

__all__ = [
    "DeadlineHTTPConnection",
    "DeadlineHTTPSConnection",
    "DeadlineSocket",
    "bound_pools",
    "bounded",
    "extend",
    "remaining",
]

_local = threading.local()
#: A timeout of 0 would make the socket non-blocking; what is left is never less than this.
_MIN_TIMEOUT = 0.001


def remaining() -> float | None:
    """Seconds left of this thread's exchange deadline; None outside an exchange."""
    deadline: float | None = getattr(_local, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()


@contextlib.contextmanager
def bounded(deadline: float) -> Iterator[None]:
    """Bound every socket operation of this thread by ``deadline`` (``time.monotonic()``)."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


def extend(deadline: float) -> None:
    """Move this thread's deadline to ``deadline`` if that is later (a grace for the body)."""
    current = getattr(_local, "deadline", None)
    if current is not None and deadline > current:
        _local.deadline = deadline


def _arm(sock: socket.socket) -> None:
    """Give ``sock`` what is left of the deadline; raise socket.timeout once it has passed."""
    left = remaining()
    if left is None:
        return
    if left <= 0:
        raise TimeoutError("the exchange deadline has passed")
    sock.settimeout(max(left, _MIN_TIMEOUT))


class _DeadlineIO(socket.SocketIO):
    """The raw file under ``http.client``'s buffered reader: each read is armed first."""

    def readinto(self, b: Any) -> int | None:
        _arm(self._sock)  # type: ignore[attr-defined]
        return super().readinto(b)


class DeadlineSocket:
    """A connected socket (plain or TLS) whose reads and writes honour the deadline.

    Everything else (``fileno``, ``settimeout``, ``shutdown``, ``close``, TLS attributes) is the
    wrapped socket's own.
    """

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    @property
    def wrapped(self) -> socket.socket:
        """The socket underneath."""
        return self._sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    # The arguments are passed on as given: ssl.SSLSocket and socket.socket differ in defaults.
    def sendall(self, data: Any, *args: Any) -> None:
        """``sendall`` within what is left (the socket's timeout bounds the whole call)."""
        _arm(self._sock)
        self._sock.sendall(data, *args)

    def send(self, data: Any, *args: Any) -> int:
        """``send`` within what is left."""
        _arm(self._sock)
        return self._sock.send(data, *args)

    def recv(self, bufsize: int, *args: Any) -> bytes:
        """``recv`` within what is left."""
        _arm(self._sock)
        return self._sock.recv(bufsize, *args)

    def recv_into(self, buffer: Any, *args: Any) -> int:
        """``recv_into`` within what is left."""
        _arm(self._sock)
        return self._sock.recv_into(buffer, *args)

    def makefile(self, mode: str = "r", buffering: int | None = None, **kwargs: Any) -> Any:
        """A binary reader like ``socket.makefile("rb")`` whose every read is armed first."""
        if mode not in ("r", "rb") or kwargs:
            return self._sock.makefile(mode, buffering, **kwargs)  # type: ignore[call-overload]
        raw = _DeadlineIO(self._sock, "rb")
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile counts it
        if buffering == 0:
            return raw
        size = io.DEFAULT_BUFFER_SIZE if buffering is None or buffering < 0 else buffering
        return io.BufferedReader(raw, size)

    def __repr__(self) -> str:
        return f"DeadlineSocket({self._sock!r})"


class _DeadlineConnection:
    """What both connection classes add: the deadline on the new socket and on the exchange."""

    sock: Any

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        left = remaining()
        if left is not None:  # the TLS handshake that follows gets what is left, no more
            sock.settimeout(max(left, _MIN_TIMEOUT))
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        if self.sock is not None and not isinstance(self.sock, DeadlineSocket):
            self.sock = DeadlineSocket(self.sock)


class DeadlineHTTPConnection(_DeadlineConnection, HTTPConnection):
    """``urllib3.connection.HTTPConnection`` bounded by the exchange deadline."""


class DeadlineHTTPSConnection(_DeadlineConnection, HTTPSConnection):
    """``urllib3.connection.HTTPSConnection`` bounded by the exchange deadline."""


class _DeadlineHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class _DeadlineHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


def bound_pools(manager: PoolManager) -> PoolManager:
    """Make ``manager``'s new http and https pools use the deadline connections.

    A manager with pool classes of its own (a SOCKS proxy manager) is left as it is.
    """
    classes = manager.pool_classes_by_scheme
    stock_http = classes.get("http") in (HTTPConnectionPool, _DeadlineHTTPConnectionPool)
    stock_https = classes.get("https") in (HTTPSConnectionPool, _DeadlineHTTPSConnectionPool)
    if stock_http and stock_https:
        manager.pool_classes_by_scheme = {
            **classes,
            "http": _DeadlineHTTPConnectionPool,
            "https": _DeadlineHTTPSConnectionPool,
        }
    return manager
