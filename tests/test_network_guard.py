"""The suite runs with networking off: this proves the guard is on, in-process and in children."""

import socket
import subprocess
import sys

import pytest

from companion_netguard import NetworkBlockedError


def test_outside_connections_are_blocked_in_process():
    with pytest.raises(NetworkBlockedError):
        socket.create_connection(("192.0.2.1", 443), timeout=1)


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=1)
    accepted, _ = server.accept()
    client.sendall(b"ping")
    assert accepted.recv(4) == b"ping"  # the connection is real, not merely not refused
    for s in (accepted, client, server):
        s.close()


def test_outside_connections_are_blocked_in_child_processes(subprocess_env):
    code = "import socket; socket.create_connection(('192.0.2.1', 443), timeout=1)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env)
    assert result.returncode != 0 and "network access blocked" in result.stderr
