"""Real services the integration tests start: redis-server and the Companion server (uvicorn).

Redis comes from Debian's redis-server (`.ci/run` installs it). Without it the Redis tests
skip on a developer's machine, and fail under CI=true, where they must run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        message = f"{name} is not installed; apt-get install {package} (.ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " - under CI=true this test must run, not skip")
        pytest.skip(message)
    return path


class RedisProcess:
    """A redis-server on a free loopback port, persisting nowhere; stop() and start() keep the port."""

    def __init__(self, workdir: Path):
        self.binary = require_binary("redis-server", "redis-server")
        self.workdir, self.port = workdir, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class ServerProcess:
    """`python -m companion_cli serve` in a child process, like production, with the settings given as env."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.env = {**env, "COMPANION_PORT": str(self.port), "COMPANION_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def start(self, timeout: float = 120) -> ServerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "companion_cli", "serve", "--log-level", "warning"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _wait_for_http(self.http + "/health", self.proc, timeout, "server", self.log)
        return self

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _wait_for_http(url: str, proc: subprocess.Popen, timeout: float, name: str, log) -> None:
    """Until `url` answers 200; raises with `log()` if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{name} not healthy at {url} after {timeout} s:\n{log()}")


def _wait_for_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


class LlamaServerProcess:
    """llama.cpp's own server (llama-server) on a free loopback port, serving a GGUF with persona LoRAs.

    scripts/build-llama-server builds it into the cache (scripts/test runs it). Without it the
    tests skip on a developer's machine, and fail under CI=true.
    """

    def __init__(self, model: Path, loras: dict[str, Path], workdir: Path):
        self.binary = _llama_server_binary()
        self.model, self.workdir = model, workdir
        self.loras = []
        for name, source in loras.items():  # the engine maps a persona to the LoRA file named after it
            link = workdir / f"{name}.gguf"
            if not link.exists():
                link.symlink_to(source)
            self.loras.append(link)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60) -> LlamaServerProcess:
        args = [self.binary, "-m", str(self.model), "--host", "127.0.0.1", "--port", str(self.port)]
        for lora in self.loras:
            args += ["--lora", str(lora)]
        args += [
            "--lora-init-without-apply",
            "-np",
            "4",
            "-c",
            "4096",
            "-t",
            "2",
            "--offline",
            "--no-webui",
            "-no-kvu",
            "--cache-ram",
            "0",
            "--no-cache-prompt",
        ]
        log = open(self.workdir / "llama-server.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _wait_for_http(f"http://127.0.0.1:{self.port}/health", self.proc, timeout, "llama-server", self.log)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        path = self.workdir / "llama-server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _llama_server_binary() -> str:
    from companion.backbone.gguf_export import LLAMA_CPP_VERSION
    from companion.backbone.provision import default_cache_dir

    binary = default_cache_dir() / "llama.cpp" / LLAMA_CPP_VERSION / "build-server" / "bin" / "llama-server"
    if not binary.is_file():
        message = f"llama-server is not built ({binary}); run scripts/build-llama-server (scripts/test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " - under CI=true this test must run, not skip")
        pytest.skip(message)
    return str(binary)


class ChromaProcess:
    """A Chroma server (`chroma run`, from the chromadb wheel) on a free loopback port."""

    def __init__(self, workdir: Path):
        self.binary = shutil.which("chroma", path=str(Path(sys.executable).parent))
        assert self.binary, "the chroma command comes with the chromadb wheel"
        self.workdir, self.port = workdir, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ChromaProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "run",
                "--path",
                str(self.workdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        try:
            _wait_for_http(self.url + "/api/v2/heartbeat", self.proc, timeout, "chroma run", lambda: "")
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None
