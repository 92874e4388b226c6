"""Where the local stack lives, which ports it uses, and the ``FACESTREAM_*`` variables that say so.

The stack folder is ``.stack`` at the repository root (gitignored), or ``$FACESTREAM_STACK_DIR``.
Ports: ``$FACESTREAM_KAFKA_PORT`` (9092), ``$FACESTREAM_KAFKA_CONTROLLER_PORT`` (9093),
``$FACESTREAM_REDIS_PORT`` (6379). Partitions of the keyed topics:
``$FACESTREAM_TOPIC_PARTITIONS`` (4). Kafka heap: ``$FACESTREAM_KAFKA_HEAP`` (512m).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from facestream.runtime.topics import DEFAULT_PARTITIONS

HOST = "127.0.0.1"
"""Every service of the stack listens on loopback only."""

_HEAP_RE = re.compile(r"^[0-9]+[kKmMgG]?$")


class StackError(RuntimeError):
    """The stack cannot be installed, started or stopped; the message says why and what to do."""


def _default_root() -> Path:
    # In a checkout the package sits next to pyproject.toml; installed elsewhere (site-packages)
    # there is no repository root, so fall back to the working directory.
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / ".stack"
    return Path.cwd() / ".stack"


def _env_int(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"${name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise StackError(f"${name} must be between {low} and {high}, got {value}")
    return value


@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and which ports it uses; build it with :meth:`from_env`."""

    root: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    partitions: int = DEFAULT_PARTITIONS
    kafka_heap: str = "512m"
    redis_appendonly: bool = False
    """Redis keeps its data in an append-only file across restarts, as a deployment's must
    (docs/deploy.md, "Redis"); the dev stack is a throwaway cache and keeps none by default.
    Tests that restart Redis set it."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """Read the ``FACESTREAM_*`` variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        root_raw = env.get("FACESTREAM_STACK_DIR", "").strip()
        root = Path(root_raw).expanduser().resolve() if root_raw else _default_root()
        heap = env.get("FACESTREAM_KAFKA_HEAP", "").strip() or "512m"
        if not _HEAP_RE.match(heap):
            raise StackError(f"$FACESTREAM_KAFKA_HEAP must look like 512m or 1g, got {heap!r}")
        cfg = cls(
            root=root,
            kafka_port=_env_int(env, "FACESTREAM_KAFKA_PORT", 9092, 1, 65535),
            controller_port=_env_int(env, "FACESTREAM_KAFKA_CONTROLLER_PORT", 9093, 1, 65535),
            redis_port=_env_int(env, "FACESTREAM_REDIS_PORT", 6379, 1, 65535),
            partitions=_env_int(env, "FACESTREAM_TOPIC_PARTITIONS", DEFAULT_PARTITIONS, 1, 1024),
            kafka_heap=heap,
        )
        if cfg.kafka_port == cfg.controller_port:
            raise StackError("the Kafka broker and controller ports must differ")
        return cfg

    # Kafka layout
    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def lib_dir(self) -> Path:
        return self.kafka_dir / "lib"

    @property
    def kafka_data_dir(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def kafka_logs_dir(self) -> Path:
        return self.kafka_dir / "logs"

    @property
    def kafka_server_log(self) -> Path:
        return self.kafka_logs_dir / "server.log"

    @property
    def server_properties(self) -> Path:
        return self.kafka_dir / "config" / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.kafka_dir / "config" / "log4j2.properties"

    @property
    def kafka_pid_file(self) -> Path:
        return self.kafka_dir / "kafka.pid"

    @property
    def kafka_stdout(self) -> Path:
        return self.kafka_logs_dir / "kafka.out"

    # Redis layout
    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def redis_conf(self) -> Path:
        return self.redis_dir / "redis.conf"

    @property
    def redis_pid_file(self) -> Path:
        return self.redis_dir / "redis.pid"

    @property
    def redis_log(self) -> Path:
        return self.redis_dir / "redis.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"


def resolve(config: StackConfig | None) -> StackConfig:
    """``config``, or the one the environment describes when None."""
    return StackConfig.from_env() if config is None else config


def kafka_bootstrap(config: StackConfig | None = None) -> str:
    """``host:port`` of the stack's Kafka broker, for ``bootstrap_servers``."""
    return resolve(config).bootstrap_servers


def redis_url(config: StackConfig | None = None) -> str:
    """``redis://`` URL of the stack's Redis."""
    return resolve(config).redis_url


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash never leaves a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
