"""A socket guard for the test suite: connections leave this machine only over loopback."""

from __future__ import annotations

import ipaddress
import socket


class NetworkBlockedError(OSError):
    """A test process tried to reach an address outside this machine."""


_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _allowed(address: object) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: resolving it would itself be a lookup outside
        return False


def _check(address: object) -> None:
    if not _allowed(address):
        raise NetworkBlockedError(f"network access blocked in tests: tried to connect to {address!r}")


def _connect(self: socket.socket, address: object) -> None:
    _check(address)
    return _original_connect(self, address)


def _connect_ex(self: socket.socket, address: object) -> int:
    _check(address)
    return _original_connect_ex(self, address)


def install() -> None:
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
