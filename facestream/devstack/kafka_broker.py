"""The stack's Kafka: one node in KRaft mode (broker and controller in one JVM) on 127.0.0.1.

Its config is rewritten on every start, its storage formatted once under ``<stack>/kafka/data``;
it runs detached from the terminal and is known by its pid file. The client side here (an admin
client, the topics the broker has) answers "is a broker there", for start-up and ``status``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from facestream.devstack.config import HOST, StackConfig, StackError, write_atomic
from facestream.devstack.install import KAFKA_VERSION, check_java, install_kafka, java
from facestream.devstack.process import managed_pid, port_open, run_logged, spawn_detached
from facestream.runtime import kafka_clients

log = logging.getLogger(__name__)

_KAFKA_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
_GENERATED = "# Written by facestream.devstack on every start; edits are overwritten."


def marker(cfg: StackConfig) -> str:
    """What identifies our broker's command line (see :func:`~.process.pid_alive`)."""
    # The server.properties path is on the java command line and is unique per stack folder.
    return str(cfg.server_properties)


# --- configure, format, start -----------------------------------------------------------------


@dataclass(frozen=True)
class BrokerOverrides:
    """What a test changes in a broker of its own (the stack's never has any): server
    properties that replace the generated ones with the same key or add to them (listeners,
    TLS, SASL), and extra arguments to the storage format (``--add-scram``, SCRAM users that
    must exist before the broker starts)."""

    properties: Mapping[str, str] = field(default_factory=dict)
    format_args: Sequence[str] = ()


def _server_properties(cfg: StackConfig, overrides: Mapping[str, str] | None = None) -> str:
    text = _base_properties(cfg)
    if not overrides:
        return text
    kept = [ln for ln in text.splitlines() if ln.partition("=")[0].strip() not in overrides]
    added = [f"{key}={value}" for key, value in overrides.items()]
    return "\n".join([*kept, "# Overrides given to start():", *added, ""])


def _base_properties(cfg: StackConfig) -> str:
    return "\n".join(
        [
            _GENERATED,
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
    server_log = cfg.kafka_server_log
    return "\n".join(
        [
            _GENERATED,
            "status = warn",
            "name = facestream-kafka",
            # Kafka logs its own shutdown from a JVM shutdown hook; log4j's hook would close the
            # appenders first and those last lines would fall back to stderr.
            "shutdownHook = disable",
            "appender.file.type = RollingFile",
            "appender.file.name = FILE",
            f"appender.file.fileName = {server_log}",
            f"appender.file.filePattern = {server_log}.%i",
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


def _format_storage(cfg: StackConfig, java_bin: str, extra_args: Sequence[str] = ()) -> None:
    """Format the KRaft metadata log once; a formatted folder keeps its cluster id forever."""
    if (cfg.kafka_data_dir / "meta.properties").is_file():
        return
    cluster_id = _new_cluster_id()
    log.info("formatting Kafka storage in %s (cluster id %s)", cfg.kafka_data_dir, cluster_id)
    cfg.kafka_data_dir.mkdir(parents=True, exist_ok=True)
    run_logged(
        [
            java_bin,
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
            *extra_args,
        ],
        cfg.kafka_logs_dir / "format.log",
        120,
        "kafka storage format",
    )


def start(cfg: StackConfig, overrides: BrokerOverrides | None = None) -> int | None:
    """Make sure a Kafka answers; return the pid if this stack started (or owns) it.

    A broker that someone else runs on the port is used as it is (None); anything else on the
    broker or controller port is an error, never a second broker fighting for it. ``overrides``
    (tests only) change its listeners and security; such a broker may not answer the plaintext
    readiness check here, so its caller waits for it with clients of its own.
    """
    extra = overrides or BrokerOverrides()
    pid = managed_pid(cfg.kafka_pid_file, marker(cfg))
    if pid is not None:
        log.info("kafka already running (pid %d)", pid)
        return pid
    if port_open(cfg.kafka_port):
        if topic_partitions(cfg, timeout=5.0) is not None:
            log.info("using the Kafka already answering on %s", cfg.bootstrap_servers)
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
    java_bin = java()
    check_java(java_bin)
    cfg.kafka_logs_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(cfg.server_properties, _server_properties(cfg, extra.properties))
    write_atomic(cfg.log4j_config, _log4j_properties(cfg))
    _format_storage(cfg, java_bin, extra.format_args)
    cmd = [
        java_bin,
        *_jvm_flags(cfg, cfg.kafka_heap),
        "-cp",
        _classpath(cfg),
        _KAFKA_MAIN_CLASS,
        str(cfg.server_properties),
    ]
    log.info("starting Kafka %s on %s", KAFKA_VERSION, cfg.bootstrap_servers)
    with cfg.kafka_stdout.open("ab") as out:
        out.write(
            f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode()
        )
        out.flush()
        pid = spawn_detached(cmd, cfg.kafka_dir, out)
    write_atomic(cfg.kafka_pid_file, f"{pid}\n")
    return pid


# --- client side ------------------------------------------------------------------------------


def admin_client(cfg: StackConfig, timeout: float) -> Any:
    """A KafkaAdminClient whose connect and requests give up after about ``timeout`` seconds;
    PLAINTEXT, the only listener the stack's broker has unless a test adds others."""
    from kafka.admin import KafkaAdminClient

    ms = max(int(timeout * 1000), 500)
    opts: dict[str, Any] = {
        "client_id": "facestream-stack",
        "request_timeout_ms": max(ms, 1000),
    }
    # The constructor connects eagerly and by default waits up to 30 s for a broker; cap it.
    # The option has another name in kafka-python 2.x, and unknown options are errors there.
    defaults = getattr(KafkaAdminClient, "DEFAULT_CONFIG", {})
    for key in ("bootstrap_timeout_ms", "api_version_auto_timeout_ms"):
        if key in defaults:
            opts[key] = ms
    return kafka_clients.admin(kafka_clients.stack_kafka(cfg.bootstrap_servers), **opts)


def describe(admin: Any) -> dict[str, int]:
    """Topic name -> partition count for the user topics (internal ``__*`` ones left out)."""
    result: dict[str, int] = {}
    for topic in admin.describe_topics():
        # kafka-python 3.x names the key "name"; 2.x names it "topic".
        name = str(topic.get("name") or topic.get("topic") or "")
        if name and not name.startswith("__"):
            result[name] = len(topic.get("partitions") or [])
    return result


def topic_partitions(cfg: StackConfig, timeout: float = 5.0) -> dict[str, int] | None:
    """Topics of the running broker, or None if no broker answers metadata requests."""
    if not port_open(cfg.kafka_port):
        return None
    try:
        admin = admin_client(cfg, timeout)
    except Exception as exc:  # kafka-python raises several unrelated types when unreachable
        log.debug("kafka not reachable yet: %r", exc)
        return None
    try:
        return describe(admin)
    except Exception as exc:
        log.debug("kafka metadata request failed: %r", exc)
        return None
    finally:
        with contextlib.suppress(Exception):
            admin.close()
