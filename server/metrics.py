"""Prometheus metrics, one registry per app (no module-level globals)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # the *_created timestamp series only double the scrape for us


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.replies = Counter(
            "companion_replies", "Replies sent.", ["npc_id", "strategy"], registry=self.registry
        )
        self.tokens = Counter(
            "companion_reply_tokens", "Tokens generated for replies.", registry=self.registry
        )
        self.ttft = Histogram(
            "companion_time_to_first_token_seconds",
            "From a `say` arriving to its first token leaving.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.reply_seconds = Histogram(
            "companion_reply_seconds",
            "From a `say` arriving to its `reply` leaving.",
            buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.memory_writes = Counter(
            "companion_memory_writes", "Memory events written, by action.", ["action"], registry=self.registry
        )
        self.errors = Counter(
            "companion_errors", "Error messages sent, by code.", ["code"], registry=self.registry
        )
        self.engine = Info(
            "companion_engine", "Which engine and model serve replies.", registry=self.registry
        )
        self.engine_up = Gauge(
            "companion_engine_up", "1 when the engine answered its last health check.", registry=self.registry
        )
        self.connections = Counter(
            "companion_connections", "WebSocket connections accepted.", registry=self.registry
        )

    def set_engine(self, info: dict) -> None:
        self.engine.info({k: str(info.get(k, "")) for k in ("engine", "source", "architecture")})

    def on_written(self, player_id: str, npc_id: str, writes) -> None:
        for write in writes:
            self.memory_writes.labels(write.action).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
