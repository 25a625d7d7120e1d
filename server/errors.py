"""Named exceptions of the `server` package; each message says what went wrong and what to do."""


class ServerError(Exception):
    """Base class of every error this package raises on purpose."""


class ProtocolError(ServerError):
    """A client frame broke protocol v1; `code` is the `error` message's code (PROTOCOL.md)."""

    def __init__(self, code: str, message: str, *, fatal: bool = False):
        super().__init__(message)
        self.code, self.message, self.fatal = code, message, fatal


class SettingsError(ServerError, ValueError):
    """A server setting is malformed (API keys, URLs, failpoints)."""


class BackendUnavailableError(ServerError):
    """Redis (or another service the server was configured with) cannot be reached."""
