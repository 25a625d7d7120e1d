"""What the routes share: `Services` (built by the app's lifespan, found on
`app.state.services`) and how a player id is scoped under its API key."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from companion.assembly import Companion
from server.feed import WriteFeed
from server.metrics import Metrics
from server.rate_limit import RateLimiter
from server.sessions import SessionStore
from server.settings import ServerSettings


@dataclass
class Services:
    """What the routes use; built by the lifespan, found on `app.state.services`."""

    settings: ServerSettings
    companion: Companion
    sessions: SessionStore
    limiter: RateLimiter
    feed: WriteFeed
    metrics: Metrics
    keys: dict[str, str]  # secret -> tenant
    demo_token: str | None
    redis: object | None = None
    closers: list = field(default_factory=list)

    def tenant_of_header(self, authorization: str | None) -> str | None:
        """The key name of an `Authorization: Bearer <key>` header; None for any other scheme."""
        scheme, _, token = (authorization or "").partition(" ")
        return self.tenant_of(token.strip()) if scheme.lower() == "bearer" else None

    def tenant_of(self, token: str | None) -> str | None:
        """The key name a token belongs to; compared in constant time."""
        if not token:
            return None
        found = None
        for secret, tenant in self.keys.items():
            if hmac.compare_digest(secret.encode(), token.encode()):
                found = tenant
        return found


def scoped(tenant: str, player_id: str) -> str:
    """The player id the pipeline and the store see: players live under their key."""
    return f"{tenant}/{player_id}"
