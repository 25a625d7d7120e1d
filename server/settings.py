"""Runtime settings: one pydantic BaseSettings, read from COMPANION_* variables inside create_app()."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from companion.backbone.config import REPLY_MAX_NEW_TOKENS
from companion.paths import default_data_dir
from server.errors import SettingsError


class ServerSettings(BaseSettings):
    """Everything the server reads from its environment (prefix COMPANION_, e.g. COMPANION_PORT).

    Attributes:
        host, port: where uvicorn listens. The default serves loopback only.
        data_dir: the embedded memory store and user personas.
        engine: what generates replies: "auto" (llamacpp when llama-cpp-python is installed
            and the model is the default or a .gguf file, else hf), "llamacpp", "hf" or "openai".
        model: "default" (offline SmolLM2 MoE), a .gguf file (llamacpp) or a local checkpoint
            directory (hf).
        llamacpp_gguf_type: which GGUF of the default model llamacpp serves: q8_0 (fastest),
            f16 (greedy parity with hf) or f32.
        llamacpp_lanes: llama.cpp contexts, one per persona busy at the same time.
        llamacpp_slots_per_lane: sequences a lane holds: replies in flight plus cached
            conversations of that persona.
        openai_base_url, openai_model, openai_api_key: the OpenAI-compatible server
            (engine=openai), e.g. http://127.0.0.1:8080/v1 for llama.cpp's server.
        openai_persona_models: "persona=model,..." for servers that serve a persona as a
            model name (vLLM LoRA modules, Ollama); llama.cpp servers are asked instead.
        openai_timeout_s: seconds without bytes from that server before a reply fails.
        max_new_tokens, temperature: reply decoding.
        chroma_url: a Chroma server (http://host:port) instead of the embedded store.
        redis_url: Redis for buffers, sessions, the memory-writer queue and rate limits
            (also read from REDIS_URL); in-process when unset.
        api_keys: "name:secret" pairs, comma-separated. `name` scopes the key's players.
        demo: serve the web chat demo at / with its own key (tenant "demo").
        demo_token: the demo's key; a random one per start when unset.
        rate_limit_per_minute: `say` + `game_event` messages and REST calls per key per minute.
        hello_timeout_s: a socket that has not sent `hello` this long after connecting gets
            a `hello_timeout` error and is closed (4408); pings do not extend it.
        handshake_timeout_s: a connection whose first request (HTTP, or a WebSocket's
            upgrade) is not complete this long after it opened is closed.
        worker_name: this process's name in the Redis consumer group; keep it stable
            across restarts so a restarted server finishes its own unacknowledged writes.
        writer_claim_idle_s: a memory write another process read and left unacknowledged this
            long (it died) is claimed and written by this one.
        failpoints: testing only: "writer.after_consume=exit" kills the process at that point.
    """

    model_config = SettingsConfigDict(env_prefix="COMPANION_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    engine: Literal["auto", "llamacpp", "hf", "openai"] = "auto"
    model: str = "default"
    llamacpp_gguf_type: Literal["q8_0", "f16", "f32"] = "q8_0"
    llamacpp_lanes: int = Field(4, ge=1, le=64)
    llamacpp_slots_per_lane: int = Field(8, ge=1, le=256)
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_model: str | None = None
    openai_api_key: str | None = None
    openai_persona_models: str = ""
    openai_timeout_s: float = Field(60.0, gt=0)
    max_new_tokens: int = Field(REPLY_MAX_NEW_TOKENS, ge=1, le=2048)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    chroma_url: str | None = None
    redis_url: str | None = Field(None, validation_alias=AliasChoices("COMPANION_REDIS_URL", "REDIS_URL"))
    api_keys: str = ""
    demo: bool = True
    demo_token: str | None = None
    rate_limit_per_minute: int = Field(120, ge=1)
    history_on_resume: int = Field(10, ge=0, le=40)
    hello_timeout_s: float = Field(10.0, gt=0, le=3600)
    handshake_timeout_s: float = Field(10.0, gt=0, le=3600)
    worker_name: str = Field(default_factory=socket.gethostname)
    writer_claim_idle_s: float = Field(30.0, gt=0, le=3600)
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

    @field_validator("openai_persona_models")
    @classmethod
    def _persona_models_parse(cls, value: str) -> str:
        parse_persona_models(value)
        return value

    def persona_models(self) -> dict[str, str]:
        """persona id -> the OpenAI-compatible server's model name."""
        return parse_persona_models(self.openai_persona_models)

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


def parse_persona_models(value: str) -> dict[str, str]:
    """ "mira=mira-lora,orla=orla-lora" -> {"mira": "mira-lora", "orla": "orla-lora"}."""
    table: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        persona, sep, model = item.partition("=")
        if not sep or not persona.strip() or not model.strip():
            raise SettingsError(
                f"COMPANION_OPENAI_PERSONA_MODELS entry {item!r} is malformed; expected persona=model, "
                "e.g. COMPANION_OPENAI_PERSONA_MODELS=mira=mira-lora,orla=orla-lora."
            )
        table[persona.strip()] = model.strip()
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
