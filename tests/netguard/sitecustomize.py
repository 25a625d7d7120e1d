"""Loaded by every Python process the tests start (PYTHONPATH): refuses network connections.

Only loopback and Unix sockets are allowed, so a test fails loudly if any code path
reaches for a model hub or anything else outside this machine.
"""

from companion_netguard import install

install()
