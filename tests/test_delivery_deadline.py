"""The exchange deadline: every socket operation of an exchange is bounded by one deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from urllib3.poolmanager import PoolManager

from mosaic_telemetry._delivery import deadline
from mosaic_telemetry._delivery.deadline import DeadlineSocket, bound_pools, bounded, extend


@pytest.fixture
def pair() -> Iterator[tuple[DeadlineSocket, socket.socket]]:
    """A connected pair: ours (blocking, no timeout of its own) and the peer's."""
    ours, peer = socket.socketpair()
    ours.settimeout(None)
    yield DeadlineSocket(ours), peer
    ours.close()
    peer.close()


def test_outside_an_exchange_a_socket_is_not_bounded(
    pair: tuple[DeadlineSocket, socket.socket],
) -> None:
    """Without a deadline, reads work as on the plain socket (and remaining() is None)."""
    sock, peer = pair
    peer.sendall(b"hi")
    assert deadline.remaining() is None
    assert sock.recv(2) == b"hi"


def test_a_read_after_the_deadline_raises_at_once(
    pair: tuple[DeadlineSocket, socket.socket],
) -> None:
    """Once the deadline has passed, recv, recv_into, sendall and the makefile reader raise."""
    sock, peer = pair
    peer.sendall(b"data waiting")
    reader = sock.makefile("rb")
    with bounded(time.monotonic() - 1):
        for operation in (
            lambda: sock.recv(1),
            lambda: sock.recv_into(bytearray(1)),
            lambda: sock.sendall(b"x"),
            lambda: reader.read(1),
        ):
            with pytest.raises(socket.timeout):
                operation()
    reader.close()


def test_a_silent_peer_is_cut_at_the_deadline(pair: tuple[DeadlineSocket, socket.socket]) -> None:
    """A blocking socket whose peer says nothing raises socket.timeout at the deadline."""
    sock, _ = pair
    reader = sock.makefile("rb")
    with bounded(time.monotonic() + 0.2), pytest.raises(socket.timeout):
        reader.readline()  # the way http.client reads a status line
    reader.close()


def test_extend_only_moves_the_deadline_later() -> None:
    """extend() gives a grace; it never shortens the deadline, and outside one does nothing."""
    extend(time.monotonic() + 100)
    assert deadline.remaining() is None
    # Deadlines far apart, so the margins (900 s) only absorb the time between the lines.
    with bounded(time.monotonic() + 1000):
        extend(time.monotonic() + 1)
        assert 100 < (deadline.remaining() or 0) <= 1000
        extend(time.monotonic() + 2000)
        assert 1100 < (deadline.remaining() or 0) <= 2000
    assert deadline.remaining() is None


def test_bound_pools_swaps_stock_pools_and_leaves_custom_ones() -> None:
    """A stock pool manager gets the deadline pools; one with pools of its own is left as is."""
    stock = bound_pools(PoolManager())
    assert stock.connection_from_url("http://127.0.0.1:9/").ConnectionCls is (
        deadline.DeadlineHTTPConnection
    )
    assert stock.connection_from_url("https://127.0.0.1:9/").ConnectionCls is (
        deadline.DeadlineHTTPSConnection
    )
    custom = PoolManager()
    marker = type("Custom", (), {})
    custom.pool_classes_by_scheme = {"http": marker, "https": marker}
    assert bound_pools(custom).pool_classes_by_scheme == {"http": marker, "https": marker}
