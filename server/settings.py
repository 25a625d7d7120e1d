"""Runtime settings: one pydantic BaseSettings, read from COMPANION_* variables inside create_app()."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from companion.paths import default_data_dir
from server.errors import SettingsError


class ServerSettings(BaseSettings):
    """Everything the server reads from its environment (prefix COMPANION_, e.g. COMPANION_PORT).

    Attributes:
        host, port: where uvicorn listens. The default serves loopback only.
        data_dir: the embedded memory store and user personas.
        model: the backbone: "default" (offline SmolLM2 MoE) or a local checkpoint directory.
        max_new_tokens, temperature: reply decoding.
        chroma_url: a Chroma server (http://host:port) instead of the embedded store.
        redis_url: Redis for buffers, sessions, the memory-writer queue and rate limits
            (also read from REDIS_URL); in-process when unset.
        api_keys: "name:secret" pairs, comma-separated. `name` scopes the key's players.
        demo: serve the web chat demo at / with its own key (tenant "demo").
        demo_token: the demo's key; a random one per start when unset.
        rate_limit_per_minute: `say` + `game_event` messages and REST calls per key per minute.
        worker_name: this process's name in the Redis consumer group; keep it stable
            across restarts so a restarted server finishes its own unacknowledged writes.
        failpoints: testing only: "writer.after_consume=exit" kills the process at that point.
    """

    model_config = SettingsConfigDict(env_prefix="COMPANION_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    model: str = "default"
    max_new_tokens: int = Field(80, ge=1, le=2048)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    chroma_url: str | None = None
    redis_url: str | None = Field(None, validation_alias=AliasChoices("COMPANION_REDIS_URL", "REDIS_URL"))
    api_keys: str = ""
    demo: bool = True
    demo_token: str | None = None
    rate_limit_per_minute: int = Field(120, ge=1)
    history_on_resume: int = Field(10, ge=0, le=40)
    worker_name: str = Field(default_factory=socket.gethostname)
    failpoints: str = ""

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @field_validator("failpoints")
    @classmethod
    def _failpoints_parse(cls, value: str) -> str:
        parse_failpoints(value)
        return value

    def key_table(self) -> dict[str, str]:
        """secret -> key name."""
        return parse_api_keys(self.api_keys)


def parse_api_keys(value: str) -> dict[str, str]:
    """ "studio-a:s3cret,studio-b:0ther" -> {"s3cret": "studio-a", "0ther": "studio-b"}."""
    table: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        name, sep, secret = item.partition(":")
        if not sep or not name or len(secret) < 8:
            raise SettingsError(
                f"COMPANION_API_KEYS entry {item.split(':')[0]!r}... is malformed; expected name:secret "
                "with a secret of at least 8 characters, e.g. COMPANION_API_KEYS=studio-a:$(openssl rand -hex 16)."
            )
        if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 31:
            raise SettingsError(
                f"API key name {name!r} must be 1-31 letters, digits, '-' or '_' (it prefixes player ids)."
            )
        if secret in table or name in table.values():
            raise SettingsError(f"API key name {name!r} or its secret appears twice in COMPANION_API_KEYS.")
        table[secret] = name
    return table


FAILPOINTS = ("writer.after_consume", "writer.after_write")


def parse_failpoints(value: str) -> dict[str, str]:
    points = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        name, _, action = item.partition("=")
        if name not in FAILPOINTS or action != "exit":
            raise SettingsError(
                f"COMPANION_FAILPOINTS entry {item!r} is unknown; expected NAME=exit with NAME one of "
                f"{', '.join(FAILPOINTS)}."
            )
        points[name] = action
    return points
