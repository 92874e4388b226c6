"""A real local Kafka + Redis stack for development and tests, without Docker.

``python -m facestream.devstack.stack up`` installs what is missing on first use and starts:

* Apache Kafka, one node in KRaft mode (broker and controller in one JVM), listening on
  127.0.0.1 only. The jars come from Maven Central through ``mvn`` into ``<stack>/kafka/lib``;
  the storage is formatted once under ``<stack>/kafka/data``.
* Redis on 127.0.0.1, daemonized with its own pid file and no persistence. A Redis that
  already answers PING on the port is used as it is; a missing ``redis-server`` is installed
  with apt-get when running as root.
* The pipeline's topics (see :data:`TOPICS`), created idempotently.

``down`` stops only the processes this stack started (it knows them by pid file), so a Kafka or
Redis that someone else runs on the same ports is used but never stopped.

The stack folder is ``.stack`` at the repository root (gitignored), or ``$FACESTREAM_STACK_DIR``.
Ports: ``$FACESTREAM_KAFKA_PORT`` (9092), ``$FACESTREAM_KAFKA_CONTROLLER_PORT`` (9093),
``$FACESTREAM_REDIS_PORT`` (6379). Partitions of the keyed topics:
``$FACESTREAM_TOPIC_PARTITIONS`` (4). Kafka heap: ``$FACESTREAM_KAFKA_HEAP`` (512m).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facestream.runtime.topics import Topics

# Named explicitly: under `python -m` __name__ would be "__main__".
logger = logging.getLogger("facestream.devstack.stack")

# --- versions -------------------------------------------------------------------------------

#: Kafka release run by the stack. 4.x is KRaft-only and needs Java 17+ (what the machines have).
KAFKA_VERSION = "4.1.2"
#: Scala build of the broker jar; 2.13 is the only one published for Kafka 4.x.
SCALA_BINARY_VERSION = "2.13"
#: log4j2 release that kafka-server 4.1.2 itself depends on (log4j-api/core 2.25.3). The slf4j
#: binding must match it, and must be the slf4j *1.x* binding (log4j-slf4j-impl): Kafka 4.1 still
#: resolves slf4j-api 1.7.36, for which log4j-slf4j2-impl would be silently ignored.
LOG4J_VERSION = "2.25.3"
#: Pinned so that ``mvn`` does not fall back to its ancient built-in default plugin version.
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
#: Maven coordinates (group, artifact, version) resolved with their runtime dependencies.
MAVEN_ARTIFACTS: tuple[tuple[str, str, str], ...] = (
    ("org.apache.kafka", f"kafka_{SCALA_BINARY_VERSION}", KAFKA_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
)
MIN_JAVA_MAJOR = 17

# --- topics ---------------------------------------------------------------------------------

FRAMES_TOPIC = Topics().frames
ENCODINGS_TOPIC = Topics().encodings
MATCHES_TOPIC = Topics().matches
MEMBERS_TOPIC = Topics().members
IDENTITIES_TOPIC = Topics().identities
DEFAULT_PARTITIONS = 4

_COMPACT: Mapping[str, str] = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the pipeline: name, partition count and topic-level configs."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


def topic_specs(partitions: int = DEFAULT_PARTITIONS, prefix: str = "") -> tuple[TopicSpec, ...]:
    """The pipeline's topics with ``partitions`` partitions for the store-keyed ones, named
    with ``prefix`` (see :class:`facestream.runtime.topics.Topics`).

    ``identities.v1`` always gets the same count as ``encodings.v1``: a matcher writes a store's
    FaceIds to the partition that the store maps to in ``encodings.v1``, so the two must agree.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    t = Topics(prefix)
    return (
        TopicSpec(t.frames, partitions),
        TopicSpec(t.encodings, partitions),
        TopicSpec(t.matches, partitions),
        # Members are replicated whole to every matcher, so one partition keeps reads simple.
        TopicSpec(t.members, 1, _COMPACT),
        TopicSpec(t.identities, partitions, _COMPACT),
        # Dead letters are rare and read by people: one partition keeps them in one ordered list.
        TopicSpec(t.dlq(t.frames), 1),
        TopicSpec(t.dlq(t.encodings), 1),
        TopicSpec(t.dlq(t.matches), 1),
    )


#: The topics with the default partition count; reuse this (or :func:`topic_specs`) elsewhere.
TOPICS: tuple[TopicSpec, ...] = topic_specs(DEFAULT_PARTITIONS)

# --- configuration --------------------------------------------------------------------------

HOST = "127.0.0.1"
_KAFKA_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
_INSTALL_MARKER = ".facestream-installed"
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


def _cfg(config: StackConfig | None) -> StackConfig:
    return StackConfig.from_env() if config is None else config


def kafka_bootstrap(config: StackConfig | None = None) -> str:
    """``host:port`` of the stack's Kafka broker, for ``bootstrap_servers``."""
    return _cfg(config).bootstrap_servers


def redis_url(config: StackConfig | None = None) -> str:
    """``redis://`` URL of the stack's Redis."""
    return _cfg(config).redis_url


# --- small helpers --------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    """Write atomically so that a crash never leaves a half-written config behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"({path} not readable)"
    return "\n".join(content[-lines:])


def _tail_last_run(path: Path, lines: int = 30) -> str:
    """Like :func:`_tail`, but only what the latest start wrote after its ``---`` banner."""
    try:
        content = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"({path} not readable)"
    last = content.rsplit("\n--- ", 1)[-1].splitlines()[1:]
    return "\n".join(last[-lines:]) or "(nothing)"


def port_open(port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _run_logged(cmd: Sequence[str], log_path: Path, timeout: float, what: str) -> None:
    """Run an install step with its output in ``log_path``; raise with the tail if it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            rc = subprocess.run(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            raise StackError(f"{what} took over {timeout:.0f}s; see {log_path}") from None
        except FileNotFoundError:
            raise StackError(f"{what}: {cmd[0]} not found") from None
    if rc != 0:
        raise StackError(f"{what} failed (exit {rc}); last lines of {log_path}:\n{_tail(log_path)}")


# --- processes ------------------------------------------------------------------------------

# Popen objects of the processes started here, kept so that Python does not warn about a
# still-running child when the object would otherwise be collected, and so poll() can reap it.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and its command line contains ``marker``.

    The marker guards against pid reuse: a stale pid file must never make us signal a stranger.
    Zombies count as dead (``kill(pid, 0)`` alone would say they live).
    """
    proc = _SPAWNED.get(pid)
    if proc is not None and proc.poll() is not None:
        _SPAWNED.pop(pid, None)
        return False
    proc_dir = Path("/proc") / str(pid)
    if not proc_dir.is_dir():
        return False
    try:
        stat = (proc_dir / "stat").read_text(encoding="ascii", errors="replace")
        cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[:1]
    if state and state[0] in ("Z", "X"):
        return False
    return marker in cmdline


def _kafka_marker(cfg: StackConfig) -> str:
    # The server.properties path is on the java command line and is unique per stack folder.
    return str(cfg.server_properties)


_REDIS_MARKER = "redis-server"


def _managed_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process still runs; a stale pid file is removed."""
    pid = _read_pid(pid_file)
    if pid is None:
        return None
    if _pid_alive(pid, marker):
        return pid
    with contextlib.suppress(OSError):
        pid_file.unlink()
    return None


def _terminate(pid: int, marker: str, name: str, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL: a bounded, clean stop."""
    if not _pid_alive(pid, marker):
        return
    logger.info("stopping %s (pid %d)", name, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid, marker):
            return
        time.sleep(0.2)
    logger.warning("%s (pid %d) did not stop in %.0fs; sending SIGKILL", name, pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and _pid_alive(pid, marker):
        time.sleep(0.1)


@contextlib.contextmanager
def _locked(cfg: StackConfig, timeout: float = 900.0) -> Iterator[None]:
    """Serialize up/down across processes: two concurrent ``up`` would start two brokers."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    with (cfg.root / "stack.lock").open("a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"another facestream.devstack.stack command holds {cfg.root / 'stack.lock'}"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --- Redis ----------------------------------------------------------------------------------


def _redis_ping(cfg: StackConfig, timeout: float = 1.0) -> bool:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # A closed port is the common "not running" case: answer it without redis-py's retries,
    # which add seconds of backoff to every refused connection.
    if not port_open(cfg.redis_port, timeout=min(timeout, 0.5)):
        return False
    client = redis.Redis(
        host=HOST,
        port=cfg.redis_port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    # PATH of a non-login shell may miss these.
    for candidate in (
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
        "/usr/local/bin/redis-server",
    ):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_redis_server(config: StackConfig | None = None) -> str:
    """Path of ``redis-server``, installing Debian's package with apt-get if missing (root only)."""
    cfg = _cfg(config)
    found = _find_redis_server()
    if found:
        return found
    if os.geteuid() != 0:
        raise StackError(
            "redis-server is not installed and this is not root: install it "
            "(sudo apt-get install -y redis-server) or run a Redis on "
            f"{HOST}:{cfg.redis_port} yourself"
        )
    if shutil.which("apt-get") is None:
        raise StackError(
            f"redis-server is missing and apt-get is not available; run a Redis on "
            f"{HOST}:{cfg.redis_port} yourself"
        )
    log_path = cfg.root / "install-redis.log"
    logger.info("installing redis-server with apt-get (log: %s)", log_path)
    _run_logged(["apt-get", "update"], log_path, 900, "apt-get update")
    _run_logged(
        ["apt-get", "install", "-y", "--no-install-recommends", "redis-server"],
        log_path,
        900,
        "apt-get install redis-server",
    )
    found = _find_redis_server()
    if not found:
        raise StackError(f"apt-get installed redis-server but it is not on PATH; see {log_path}")
    return found


def _redis_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_redis_conf(cfg: StackConfig) -> None:
    _write_text(
        cfg.redis_conf,
        "\n".join(
            [
                "# Written by facestream.devstack.stack on every start; edits are overwritten.",
                f"bind {HOST}",
                f"port {cfg.redis_port}",
                "protected-mode yes",
                "daemonize yes",
                "supervised no",
                f"pidfile {_redis_quote(str(cfg.redis_pid_file))}",
                f"logfile {_redis_quote(str(cfg.redis_log))}",
                f"dir {_redis_quote(str(cfg.redis_dir))}",
                # A dev/test cache: nothing to keep across restarts, and no fork for RDB saves.
                'save ""',
                "appendonly no",
                "",
            ]
        ),
    )


def _start_redis(cfg: StackConfig) -> int | None:
    """Make sure a Redis answers; return the pid if this stack started (or owns) it."""
    pid = _managed_pid(cfg.redis_pid_file, _REDIS_MARKER)
    if pid is not None:
        logger.info("redis already running (pid %d)", pid)
        return pid
    if _redis_ping(cfg):
        logger.info("using the Redis already answering on %s:%d", HOST, cfg.redis_port)
        return None
    if port_open(cfg.redis_port):
        raise StackError(
            f"port {cfg.redis_port} is taken by something that does not answer Redis PING; "
            "free it or set FACESTREAM_REDIS_PORT"
        )
    binary = ensure_redis_server(cfg)
    # apt's post-install may have started a system Redis on the default port (on machines
    # whose policy allows service starts): if so, use that one rather than fight over the port.
    if _redis_ping(cfg):
        logger.info("using the Redis that the install started on %s:%d", HOST, cfg.redis_port)
        return None
    cfg.redis_dir.mkdir(parents=True, exist_ok=True)
    _write_redis_conf(cfg)
    with contextlib.suppress(OSError):
        cfg.redis_pid_file.unlink()
    logger.info("starting redis-server on %s:%d", HOST, cfg.redis_port)
    _run_logged([binary, str(cfg.redis_conf)], cfg.redis_dir / "start.log", 30, "redis-server")
    # daemonize=yes: the parent exits at once and the daemon writes its pid file shortly after.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        pid = _managed_pid(cfg.redis_pid_file, _REDIS_MARKER)
        if pid is not None:
            return pid
        time.sleep(0.1)
    raise StackError(
        f"redis-server did not start; last lines of {cfg.redis_log}:\n{_tail(cfg.redis_log)}"
    )


# --- Kafka: install -------------------------------------------------------------------------


def _install_fingerprint() -> str:
    return " ".join(":".join(a) for a in MAVEN_ARTIFACTS) + f" {MAVEN_DEPENDENCY_PLUGIN}"


def _pom() -> str:
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in MAVEN_ARTIFACTS
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by facestream.devstack.stack: the jars of a single-node Kafka, nothing is built. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.facestream</groupId>
  <artifactId>facestream-kafka-stack</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def kafka_installed(config: StackConfig | None = None) -> bool:
    """True if the pinned Kafka jars are already in the stack's ``kafka/lib``."""
    marker = _cfg(config).lib_dir / _INSTALL_MARKER
    try:
        return marker.read_text(encoding="utf-8").strip() == _install_fingerprint()
    except OSError:
        return False


def install_kafka(config: StackConfig | None = None) -> Path:
    """Resolve the Kafka jars from Maven Central into ``kafka/lib`` (once); return that folder.

    Jars land in a scratch folder that is renamed into place only when complete, so an
    interrupted download is redone instead of half-used. A version bump reinstalls.
    """
    cfg = _cfg(config)
    if kafka_installed(cfg):
        return cfg.lib_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven")
    cfg.kafka_dir.mkdir(parents=True, exist_ok=True)
    pom = cfg.kafka_dir / "pom.xml"
    _write_text(pom, _pom())
    partial = cfg.kafka_dir / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    log_path = cfg.kafka_dir / "install.log"
    logger.info("fetching Kafka %s jars with Maven (log: %s)", KAFKA_VERSION, log_path)
    _run_logged(
        [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ],
        log_path,
        1200,
        "mvn dependency:copy-dependencies",
    )
    broker_jar = partial / f"kafka_{SCALA_BINARY_VERSION}-{KAFKA_VERSION}.jar"
    if not broker_jar.is_file():
        raise StackError(f"Maven finished but {broker_jar.name} is missing; see {log_path}")
    (partial / _INSTALL_MARKER).write_text(_install_fingerprint() + "\n", encoding="utf-8")
    shutil.rmtree(cfg.lib_dir, ignore_errors=True)
    partial.rename(cfg.lib_dir)
    logger.info("Kafka %s installed in %s", KAFKA_VERSION, cfg.lib_dir)
    return cfg.lib_dir


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise StackError(
            f"Java {MIN_JAVA_MAJOR}+ is needed for Kafka: apt-get install openjdk-17-jre-headless"
        )
    return found


def _check_java(java: str) -> None:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"cannot run {java} -version: {exc}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        logger.warning("could not read the Java version from %r; trying anyway", out.stderr)
        return
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise StackError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR}+, but {java} is Java {major}; "
            "set JAVA_HOME to a newer JDK"
        )


# --- Kafka: configure, format, start --------------------------------------------------------


def _server_properties(cfg: StackConfig) -> str:
    return "\n".join(
        [
            "# Written by facestream.devstack.stack on every start; edits are overwritten.",
            "process.roles=broker,controller",
            "node.id=1",
            # A static voter set (rather than a dynamic quorum formatted with --standalone) keeps
            # the controller address in this file only, so changing the port needs no reformat.
            f"controller.quorum.voters=1@{HOST}:{cfg.controller_port}",
            f"listeners=PLAINTEXT://{HOST}:{cfg.kafka_port},CONTROLLER://{HOST}:{cfg.controller_port}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{cfg.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={cfg.kafka_data_dir}",
            # One broker: every internal topic must accept a replication factor of 1.
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # Tests start consumers often; the default 3 s delay before the first rebalance
            # would be added to each of them.
            "group.initial.rebalance.delay.ms=0",
            "num.partitions=1",
            # Topics are created by `up` with their partition counts and compaction; a topic
            # auto-created by a typo'd prefix would have neither (identities.v1 must match).
            "auto.create.topics.enable=false",
            # After a kill -9 the restarted broker cannot register until the old registration's
            # session expires (9 s by default); in one JVM with its own controller, 4 s is ample.
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=4000",
            # Fewer threads than the defaults (3 network, 8 io): this runs on 2-core machines.
            "num.network.threads=2",
            "num.io.threads=4",
            # Frames are whole camera images: a 1080p JPEG can pass the 1 MB default.
            "message.max.bytes=10485760",
            "replica.fetch.max.bytes=10485760",
            "",
        ]
    )


def _log4j_properties(cfg: StackConfig) -> str:
    # Kafka 4.x logs through log4j2 and ships no config inside its jars; without one log4j2
    # prints a "no configuration found" warning and logs only errors to the console.
    log = cfg.kafka_logs_dir / "server.log"
    return "\n".join(
        [
            "# Written by facestream.devstack.stack on every start; edits are overwritten.",
            "status = warn",
            "name = facestream-kafka",
            # Kafka logs its own shutdown from a JVM shutdown hook; log4j's hook would close the
            # appenders first and those last lines would fall back to stderr.
            "shutdownHook = disable",
            "appender.file.type = RollingFile",
            "appender.file.name = FILE",
            f"appender.file.fileName = {log}",
            f"appender.file.filePattern = {log}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 10MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 5",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = FILE",
            "",
        ]
    )


def _new_cluster_id() -> str:
    # Same shape as Kafka's Uuid.randomUuid(): 16 random bytes, URL-safe base64, no padding.
    # Like Kafka, avoid a leading '-': the storage tool's argument parser would read an option.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cid.startswith("-"):
            return cid


def _jvm_flags(cfg: StackConfig, heap: str) -> list[str]:
    return [
        # No -Xms: the JVM then starts small and caps the initial heap at -Xmx by itself.
        f"-Xmx{heap}",
        # Kafka's own launcher defaults: G1 with short pauses.
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        # A broker out of memory should die (and show up as down), not limp on.
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={cfg.log4j_config}",
        f"-Dkafka.logs.dir={cfg.kafka_logs_dir}",
    ]


def _classpath(cfg: StackConfig) -> str:
    # The JVM expands "dir/*" to every jar in dir itself: no shell needed.
    return str(cfg.lib_dir / "*")


def _format_storage(cfg: StackConfig, java: str) -> None:
    """Format the KRaft metadata log once; a formatted folder keeps its cluster id forever."""
    if (cfg.kafka_data_dir / "meta.properties").is_file():
        return
    cluster_id = _new_cluster_id()
    logger.info("formatting Kafka storage in %s (cluster id %s)", cfg.kafka_data_dir, cluster_id)
    cfg.kafka_data_dir.mkdir(parents=True, exist_ok=True)
    _run_logged(
        [
            java,
            *_jvm_flags(cfg, "256m"),
            "-cp",
            _classpath(cfg),
            _STORAGE_TOOL_CLASS,
            "format",
            "-t",
            cluster_id,
            "-c",
            str(cfg.server_properties),
            "--ignore-formatted",
        ],
        cfg.kafka_logs_dir / "format.log",
        120,
        "kafka storage format",
    )


def _start_kafka(cfg: StackConfig) -> int | None:
    """Make sure a Kafka answers; return the pid if this stack started (or owns) it."""
    marker = _kafka_marker(cfg)
    pid = _managed_pid(cfg.kafka_pid_file, marker)
    if pid is not None:
        logger.info("kafka already running (pid %d)", pid)
        return pid
    if port_open(cfg.kafka_port):
        if _kafka_topic_partitions(cfg, timeout=5.0) is not None:
            logger.info("using the Kafka already answering on %s", cfg.bootstrap_servers)
            return None
        raise StackError(
            f"port {cfg.kafka_port} is taken by something that is not a Kafka broker; "
            "free it or set FACESTREAM_KAFKA_PORT"
        )
    if port_open(cfg.controller_port):
        raise StackError(
            f"Kafka controller port {cfg.controller_port} is taken; free it or set "
            "FACESTREAM_KAFKA_CONTROLLER_PORT"
        )
    install_kafka(cfg)
    java = _java()
    _check_java(java)
    cfg.kafka_logs_dir.mkdir(parents=True, exist_ok=True)
    _write_text(cfg.server_properties, _server_properties(cfg))
    _write_text(cfg.log4j_config, _log4j_properties(cfg))
    _format_storage(cfg, java)
    cmd = [
        java,
        *_jvm_flags(cfg, cfg.kafka_heap),
        "-cp",
        _classpath(cfg),
        _KAFKA_MAIN_CLASS,
        str(cfg.server_properties),
    ]
    logger.info("starting Kafka %s on %s", KAFKA_VERSION, cfg.bootstrap_servers)
    with cfg.kafka_stdout.open("ab") as out:
        out.write(
            f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode()
        )
        out.flush()
        # A new session: Ctrl-C in the terminal that ran `up` must not take the broker down.
        proc = subprocess.Popen(
            cmd,
            cwd=cfg.kafka_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _SPAWNED[proc.pid] = proc
    _write_text(cfg.kafka_pid_file, f"{proc.pid}\n")
    return proc.pid


# --- Kafka: client side ---------------------------------------------------------------------


def _admin(cfg: StackConfig, timeout: float) -> Any:
    """A KafkaAdminClient whose connect and requests give up after about ``timeout`` seconds."""
    from kafka.admin import KafkaAdminClient

    ms = max(int(timeout * 1000), 500)
    opts: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap_servers,
        "client_id": "facestream-stack",
        "request_timeout_ms": max(ms, 1000),
    }
    # The constructor connects eagerly and by default waits up to 30 s for a broker; cap it.
    # The option has another name in kafka-python 2.x, and unknown options are errors there.
    defaults = getattr(KafkaAdminClient, "DEFAULT_CONFIG", {})
    for key in ("bootstrap_timeout_ms", "api_version_auto_timeout_ms"):
        if key in defaults:
            opts[key] = ms
    return KafkaAdminClient(**opts)


def _describe(admin: Any) -> dict[str, int]:
    """Topic name -> partition count for the user topics (internal ``__*`` ones left out)."""
    result: dict[str, int] = {}
    for topic in admin.describe_topics():
        # kafka-python 3.x names the key "name"; 2.x names it "topic".
        name = str(topic.get("name") or topic.get("topic") or "")
        if name and not name.startswith("__"):
            result[name] = len(topic.get("partitions") or [])
    return result


def _kafka_topic_partitions(cfg: StackConfig, timeout: float = 5.0) -> dict[str, int] | None:
    """Topics of the running broker, or None if no broker answers metadata requests."""
    if not port_open(cfg.kafka_port):
        return None
    try:
        admin = _admin(cfg, timeout)
    except Exception as exc:  # kafka-python raises several unrelated types when unreachable
        logger.debug("kafka not reachable yet: %r", exc)
        return None
    try:
        return _describe(admin)
    except Exception as exc:
        logger.debug("kafka metadata request failed: %r", exc)
        return None
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def ensure_topics(
    partitions: int | None = None,
    *,
    prefix: str = "",
    timeout: float = 30.0,
    config: StackConfig | None = None,
) -> list[str]:
    """Create the missing topics of :func:`topic_specs`; return the names created.

    Existing topics are left alone (adding partitions would remap keys to partitions), with a
    warning if their partition count differs from the one asked for. ``identities.v1`` and
    ``encodings.v1`` with different counts is an error: the matchers rely on them matching.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    cfg = _cfg(config)
    specs = topic_specs(cfg.partitions if partitions is None else partitions, prefix)
    admin = _admin(cfg, timeout)
    created: list[str] = []
    try:
        existing = _describe(admin)
        for spec in specs:
            have = existing.get(spec.name)
            if have is not None:
                if have != spec.partitions:
                    logger.warning(
                        "topic %s exists with %d partitions (asked for %d); left as it is",
                        spec.name,
                        have,
                        spec.partitions,
                    )
                continue
            topic = NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=1,
                topic_configs=dict(spec.config),
            )
            try:
                admin.create_topics([topic], timeout_ms=int(timeout * 1000))
            except TopicAlreadyExistsError:
                # Someone else created it between our describe and create: that is fine.
                continue
            created.append(spec.name)
        final = _describe(admin)
    finally:
        admin.close()
    if created:
        logger.info("created topics: %s", ", ".join(created))
    names = Topics(prefix)
    enc, ids = final.get(names.encodings), final.get(names.identities)
    if enc is not None and ids is not None and enc != ids:
        raise StackError(
            f"{names.identities} has {ids} partitions but {names.encodings} has {enc}; they must "
            "match. For a local stack: `down`, delete the kafka/data folder, `up` again"
        )
    return created


# --- public lifecycle -----------------------------------------------------------------------


def _wait(cfg: StackConfig, timeout: float, kafka_pid: int | None) -> tuple[bool, bool]:
    """Poll both services until ready or ``timeout``; stop early if our broker process died."""
    deadline = time.monotonic() + timeout
    kafka_ok = redis_ok = False
    while True:
        remaining = deadline - time.monotonic()
        step = min(5.0, max(remaining, 0.5))
        if not redis_ok:
            redis_ok = _redis_ping(cfg, timeout=min(step, 1.0))
        if not kafka_ok:
            kafka_ok = _kafka_topic_partitions(cfg, timeout=step) is not None
        if kafka_ok and redis_ok:
            return True, True
        if kafka_pid is not None and not kafka_ok and not _pid_alive(kafka_pid, _kafka_marker(cfg)):
            raise StackError(
                f"Kafka exited during start-up; its output:\n"
                f"{_tail_last_run(cfg.kafka_stdout)}\nlast lines of "
                f"{cfg.kafka_logs_dir / 'server.log'}:\n{_tail(cfg.kafka_logs_dir / 'server.log')}"
            )
        if time.monotonic() >= deadline:
            return kafka_ok, redis_ok
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))


def wait_ready(timeout: float = 60.0, *, config: StackConfig | None = None) -> bool:
    """True once Kafka answers a metadata request and Redis answers PING; False after timeout."""
    kafka_ok, redis_ok = _wait(_cfg(config), timeout, None)
    return kafka_ok and redis_ok


def up(
    create_topics: bool = True,
    timeout: float = 120.0,
    *,
    partitions: int | None = None,
    config: StackConfig | None = None,
) -> dict[str, Any]:
    """Install what is missing, start Kafka and Redis, create the topics; return :func:`status`.

    Harmless when the stack already runs. ``timeout`` bounds the wait for readiness (installs
    have their own, longer limits). Raises :class:`StackError` with the reason on failure.
    """
    cfg = _cfg(config)
    with _locked(cfg):
        started = time.monotonic()
        # Fetch Kafka's jars before anything is started, so a failing download leaves nothing
        # running behind it; not needed when a broker already answers on the port.
        if _managed_pid(cfg.kafka_pid_file, _kafka_marker(cfg)) is None and not port_open(
            cfg.kafka_port
        ):
            install_kafka(cfg)
        _start_redis(cfg)
        kafka_pid = _start_kafka(cfg)
        kafka_ok, redis_ok = _wait(cfg, timeout, kafka_pid)
        if not redis_ok:
            raise StackError(
                f"Redis did not answer PING within {timeout:.0f}s; see {cfg.redis_log}"
            )
        if not kafka_ok:
            raise StackError(
                f"Kafka was not ready within {timeout:.0f}s; last lines of "
                f"{cfg.kafka_logs_dir / 'server.log'}:\n{_tail(cfg.kafka_logs_dir / 'server.log')}"
            )
        logger.info("stack up and ready %.1fs after `up` began", time.monotonic() - started)
        if create_topics:
            ensure_topics(partitions, timeout=max(timeout, 10.0), config=cfg)
    return status(config=cfg)


def down(timeout: float = 30.0, *, config: StackConfig | None = None) -> list[str]:
    """Stop the Kafka and Redis that this stack started; return the names of those stopped.

    Each gets SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL. Services that answer on
    the ports but were not started by this stack are left running.
    """
    cfg = _cfg(config)
    stopped: list[str] = []
    with _locked(cfg):
        # Kafka first: it is the slower one, and nothing it does on shutdown needs Redis.
        for name, pid_file, marker in (
            ("kafka", cfg.kafka_pid_file, _kafka_marker(cfg)),
            ("redis", cfg.redis_pid_file, _REDIS_MARKER),
        ):
            pid = _managed_pid(pid_file, marker)
            if pid is None:
                logger.info("%s: not started by this stack, nothing to stop", name)
                continue
            _terminate(pid, marker, name, timeout)
            if _pid_alive(pid, marker):
                raise StackError(f"{name} (pid {pid}) is still running after SIGKILL")
            with contextlib.suppress(OSError):
                pid_file.unlink()
            _SPAWNED.pop(pid, None)
            stopped.append(name)
    return stopped


def status(*, config: StackConfig | None = None) -> dict[str, Any]:
    """What runs and answers now, as a JSON-serializable dict (cheap; starts nothing).

    Keys: ``ready`` (both answer), ``stack_dir``, ``kafka``, ``redis`` (each with ``ready``,
    ``managed`` = started by this stack, ``pid``, ``listening``, endpoints and log paths) and
    ``topics`` (name -> partitions of the pipeline topics present) and ``missing_topics``.
    """
    cfg = _cfg(config)
    kafka_pid = _managed_pid(cfg.kafka_pid_file, _kafka_marker(cfg))
    redis_pid = _managed_pid(cfg.redis_pid_file, _REDIS_MARKER)
    existing = _kafka_topic_partitions(cfg, timeout=3.0)
    redis_ok = _redis_ping(cfg)
    wanted = [spec.name for spec in topic_specs(cfg.partitions)]
    present = existing or {}
    return {
        "ready": existing is not None and redis_ok,
        "stack_dir": str(cfg.root),
        "kafka": {
            "version": KAFKA_VERSION,
            "installed": kafka_installed(cfg),
            "bootstrap_servers": cfg.bootstrap_servers,
            "controller_port": cfg.controller_port,
            "listening": port_open(cfg.kafka_port),
            "ready": existing is not None,
            "managed": kafka_pid is not None,
            "pid": kafka_pid,
            "log": str(cfg.kafka_logs_dir / "server.log"),
        },
        "redis": {
            "url": cfg.redis_url,
            "binary": _find_redis_server(),
            "listening": port_open(cfg.redis_port),
            "ready": redis_ok,
            "managed": redis_pid is not None,
            "pid": redis_pid,
            "log": str(cfg.redis_log),
        },
        "topics": {name: present[name] for name in wanted if name in present},
        "missing_topics": [name for name in wanted if name not in present] if existing else [],
    }


# --- command line ---------------------------------------------------------------------------


def _describe_service(name: str, info: Mapping[str, Any], endpoint: str) -> str:
    state = "ready" if info["ready"] else ("listening" if info["listening"] else "down")
    owner = f"pid {info['pid']}, started by this stack" if info["managed"] else "not ours"
    if not info["listening"] and not info["managed"]:
        owner = "not running"
    return f"{name:<12} {state:<9} {endpoint:<28} {owner}"


def format_status(st: Mapping[str, Any]) -> str:
    """The human-readable form of :func:`status` that ``main`` prints."""
    kafka, redis_info = st["kafka"], st["redis"]
    lines = [
        f"stack dir    {st['stack_dir']}",
        _describe_service(f"kafka {kafka['version']}", kafka, kafka["bootstrap_servers"]),
        _describe_service("redis", redis_info, redis_info["url"]),
    ]
    if kafka["ready"]:
        topics = " ".join(f"{name}({n})" for name, n in st["topics"].items()) or "none"
        lines.append(f"topics       {topics}")
        if st["missing_topics"]:
            lines.append(f"missing      {' '.join(st['missing_topics'])}")
    if not kafka["installed"] and not kafka["ready"]:
        lines.append("note         Kafka jars not installed yet: `up` fetches them")
    lines.append(f"logs         {kafka['log']}  {redis_info['log']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m facestream.devstack.stack up|down|status``; exit 0 on success, 1 otherwise.

    ``status`` exits 0 only when both Kafka and Redis answer, so scripts can test it.
    """
    parser = argparse.ArgumentParser(
        prog="python -m facestream.devstack.stack",
        description="Start/stop a local Kafka (KRaft) + Redis for facestream, without Docker.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="install if needed, start, create topics")
    p_up.add_argument("--no-topics", action="store_true", help="do not create the topics")
    p_up.add_argument("--timeout", type=float, default=120.0, help="readiness wait, seconds")
    p_up.add_argument("--partitions", type=int, default=None, help="partitions of keyed topics")
    p_down = sub.add_parser("down", help="stop what this stack started")
    p_down.add_argument("--timeout", type=float, default=30.0, help="grace before SIGKILL")
    p_status = sub.add_parser("status", help="show what runs")
    p_status.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # kafka-python logs every refused connection while the broker boots; that is expected.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)

    try:
        if args.command == "up":
            st = up(not args.no_topics, args.timeout, partitions=args.partitions)
            print(format_status(st))
            return 0
        if args.command == "down":
            stopped = down(args.timeout)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing"))
            return 0
        st = status()
        print(json.dumps(st, indent=2) if args.json else format_status(st))
        return 0 if st["ready"] else 1
    except StackError as exc:
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
