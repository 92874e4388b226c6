"""Kafka and Redis over TLS with passwords, against a broker and a Redis of this test's own.

The broker is the stack's (:mod:`facestream.devstack.kafka_broker`, the same jars) started in a
temporary folder on free ports with three listeners: SASL_SSL (SCRAM-SHA-512 and PLAIN), SSL
requiring a client certificate (mTLS), and its controller. Certificates come from ``openssl``
(a CA, a broker certificate for 127.0.0.1 and localhost, a client certificate); SCRAM users are
created by the storage format (``--add-scram``), before the broker first starts. Every client
is made by :mod:`facestream.runtime.kafka_clients` from settings, as the workers make theirs.

Redis is Debian's ``redis-server`` with ``requirepass``, on a plain and on a TLS port.
Everything listens on 127.0.0.1 only and is stopped when the module's tests are done.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from facestream.devstack import kafka_broker
from facestream.devstack.config import StackConfig
from facestream.devstack.install import install_kafka, kafka_installed
from facestream.devstack.process import pid_alive, tail, terminate
from facestream.runtime import kafka_clients
from facestream.runtime.entry import reaching
from facestream.runtime.environment import check_environment
from facestream.runtime.kafka_clients import KafkaSettings
from facestream.runtime.redis_clients import RedisSettings, redis_client
from facestream.runtime.runner import Handler, KafkaRecord, Output, Runner, make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.services.matcher.changelog import ChangelogReader
from facestream.services.sink.reader import StoreReader
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.store import redis_client as sink_redis_client

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SHARED_PORTS = {9092, 9093, 6379}
"""The shared stack's: never used here."""
USER, PASSWORD = "facestream", "scram-Pa55word-for-tests"
PLAIN_USER, PLAIN_PASSWORD = "plain-user", "plain-Pa55word-for-tests"
ADMIN_PASSWORD = "broker-admin-Pa55word"
REDIS_PASSWORD = "redis-Pa55word-for-tests"
WAIT = 60.0
"""Seconds the broker gets to start (two JVMs on 2 busy cores)."""


def free_port() -> int:
    """A port nothing listens on now, never one of the shared stack's."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in SHARED_PORTS:
            return port


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate (all PEM),
    and the server's PKCS#12 keystore for the broker."""

    folder: Path
    keystore_password: str = "keystore-pass"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    @property
    def keystore(self) -> Path:
        return self.folder / "server.p12"


def make_pki(folder: Path) -> Pki:
    """Certificates for the test, made with ``openssl`` in ``folder`` (valid two days)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    pki = Pki(folder)
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.pem", cwd=folder,
    )  # fmt: skip
    extensions = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in extensions.items():
        (folder / f"{name}.ext").write_text(ext)
        openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder,
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
            cwd=folder,
        )  # fmt: skip
    openssl(
        "pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key", "-certfile", "ca.pem",
        "-name", "server", "-out", "server.p12", "-passout", f"pass:{pki.keystore_password}",
        cwd=folder,
    )  # fmt: skip
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --- the broker ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    sasl_ssl: str
    """host:port of the SASL_SSL listener."""
    mtls: str
    """host:port of the SSL listener that requires a client certificate."""
    pki: Pki
    password_file: Path
    cfg: StackConfig

    def settings(self, **fields: Any) -> PipelineSettings:
        """Settings of a client of the SASL_SSL listener (SCRAM-SHA-512 as ``USER``), with
        ``fields`` changed; built from arguments only, as a worker builds them from variables."""
        values: dict[str, Any] = {
            "kafka_bootstrap": self.sasl_ssl,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_ssl_cafile": self.pki.ca,
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": USER,
            "kafka_sasl_password_file": self.password_file,
            "metrics_port": 0,
        }
        values.update(fields)
        return PipelineSettings(**values)


def broker_overrides(
    pki: Pki, sasl_port: int, mtls_port: int, controller: int
) -> kafka_broker.BrokerOverrides:
    """SASL_SSL (SCRAM-SHA-512 and PLAIN; the broker talks to itself over it as ``admin``) and
    SSL with client certificates required, on 127.0.0.1; SCRAM users made by the format."""
    jaas_scram = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{ADMIN_PASSWORD}";'
    )
    jaas_plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="admin" password="{ADMIN_PASSWORD}" '
        f'user_admin="{ADMIN_PASSWORD}" user_{PLAIN_USER}="{PLAIN_PASSWORD}";'
    )
    store = str(pki.keystore)
    properties = {
        "listeners": f"SASL_SSL://{HOST}:{sasl_port},SSL://{HOST}:{mtls_port},"
        f"CONTROLLER://{HOST}:{controller}",
        "advertised.listeners": f"SASL_SSL://{HOST}:{sasl_port},SSL://{HOST}:{mtls_port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas_scram,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas_plain,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": store,
        "ssl.keystore.password": pki.keystore_password,
        "ssl.key.password": pki.keystore_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.ca),
        "listener.name.ssl.ssl.client.auth": "required",
    }
    scram = [
        f"SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]",
        f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
    ]
    return kafka_broker.BrokerOverrides(
        properties=properties, format_args=[arg for s in scram for arg in ("--add-scram", s)]
    )


def wait_for_broker(cfg: StackConfig, pid: int, settings: KafkaSettings) -> None:
    """Until an authenticated admin client lists topics; fail with the broker's log if it
    dies or is not up in ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        if not pid_alive(pid, kafka_broker.marker(cfg)):
            pytest.fail(f"the test broker exited:\n{tail(cfg.kafka_server_log)}")
        try:
            admin = kafka_clients.admin(
                settings, request_timeout_ms=3000, bootstrap_timeout_ms=3000
            )
        except KafkaError:
            admin = None
        if admin is not None:
            try:
                admin.list_topics()
                return
            except KafkaError:
                pass
            finally:
                admin.close()
        if time.monotonic() > deadline:
            pytest.fail(
                f"the test broker was not ready in {WAIT:.0f} s:\n{tail(cfg.kafka_server_log)}"
            )
        time.sleep(0.5)


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    shared = StackConfig.from_env()
    if not kafka_installed(shared):
        pytest.skip("the stack's Kafka jars are not installed (`facestream stack up`)")
    root = tmp_path_factory.mktemp("broker")
    sasl_port, mtls_port, controller = free_port(), free_port(), free_port()
    assert len({sasl_port, mtls_port, controller}) == 3
    cfg = StackConfig(
        root=root, kafka_port=sasl_port, controller_port=controller, kafka_heap="256m"
    )
    # The jars of the shared stack, not a second download.
    cfg.kafka_dir.mkdir(parents=True)
    cfg.lib_dir.symlink_to(install_kafka(shared))
    password_file = root / "sasl-password"
    password_file.write_text(PASSWORD + "\n")  # as a mounted Secret often has it
    found = Broker(f"{HOST}:{sasl_port}", f"{HOST}:{mtls_port}", pki, password_file, cfg)
    pid = kafka_broker.start(cfg, broker_overrides(pki, sasl_port, mtls_port, controller))
    assert pid is not None
    try:
        wait_for_broker(cfg, pid, found.settings())
        yield found
    finally:
        terminate(pid, kafka_broker.marker(cfg), "test broker", 20.0)


def create_topic(settings: KafkaSettings, name: str) -> None:
    """``name`` with one partition, by an admin client of ``settings``."""
    admin = kafka_clients.admin(settings, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(name, 1, 1)], timeout_ms=10_000)
    finally:
        admin.close()


def read(settings: KafkaSettings, topic: str, count: int, timeout: float = 20.0) -> list[bytes]:
    """The first ``count`` values of ``topic`` (fewer if ``timeout`` passes), group-less."""
    consumer = kafka_clients.consumer(
        settings, topic, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
    finally:
        consumer.close()
    return values


class Upper(Handler):
    """Copies each value, upper-cased, to ``out``."""

    stage = "upper"

    def __init__(self, out: str) -> None:
        self.out = out

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        return [Output(self.out, (record.value or b"").upper(), record.key)]


# --- Kafka --------------------------------------------------------------------------------------


def test_a_worker_round_trip_over_sasl_ssl_with_scram(broker: Broker) -> None:
    """The runner's consumer and producer, the durable producer, an admin client and the
    matcher's changelog reader, all over TLS with SCRAM-SHA-512 (password from a file)."""
    settings = broker.settings()
    create_topic(settings, "in.v1")
    create_topic(settings, "out.v1")
    producer = make_producer(settings)
    try:
        for value in (b"a", b"b", b"c"):
            producer.send("in.v1", value=value, key=b"s1").get(timeout=20)
    finally:
        producer.close(timeout=10)
    runner = Runner(Upper("out.v1"), kafka=settings, topic="in.v1", group="secure-test")
    runner.run(max_idle_seconds=2.0)
    seen: list[bytes] = []
    reader = ChangelogReader(
        settings, "out.v1", lambda r: seen.append(r.value or b""), client_id="secure-test"
    )
    try:
        parts = reader.partitions(timeout=10)
        reader.assign(parts)
        reader.rewind(parts)
        reader.catch_up(parts, timeout=20)
    finally:
        reader.close()
    assert seen == [b"A", b"B", b"C"]


def test_plain_mechanism_and_mtls(broker: Broker) -> None:
    plain = broker.settings(
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username=PLAIN_USER,
        kafka_sasl_password_file=None,
        kafka_sasl_password=PLAIN_PASSWORD,
    )
    create_topic(plain, "plain.v1")
    producer = make_producer(plain)
    try:
        producer.send("plain.v1", value=b"over PLAIN").get(timeout=20)
    finally:
        producer.close(timeout=10)
    mtls = PipelineSettings(
        kafka_bootstrap=broker.mtls,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=broker.pki.ca,
        kafka_ssl_certfile=broker.pki.cert("client"),
        kafka_ssl_keyfile=broker.pki.key("client"),
    )
    assert read(mtls, "plain.v1", 1) == [b"over PLAIN"]


def refused(settings: KafkaSettings, limit: float = 20.0) -> str:
    """The error an admin client of ``settings`` gets; fails if it connects or takes longer
    than ``limit`` seconds."""
    started = time.monotonic()
    with pytest.raises(KafkaError) as raised:
        admin = kafka_clients.admin(settings, request_timeout_ms=4000, bootstrap_timeout_ms=4000)
        try:
            admin.list_topics()
        finally:
            admin.close()
    assert time.monotonic() - started < limit
    return f"{type(raised.value).__name__}: {raised.value}"


def test_a_wrong_password_fails_clearly_and_quickly(broker: Broker) -> None:
    wrong = broker.settings(kafka_sasl_password_file=None, kafka_sasl_password="wrong-pass")
    error = refused(wrong)
    # kafka-python 3 sees the broker drop the connection after the SCRAM exchange (it does not
    # surface the broker's error response); the broker logs why.
    log = broker.cfg.kafka_server_log.read_text(errors="replace")
    assert "Failed authentication" in log and "invalid credentials" in log
    assert "wrong-pass" not in error and PASSWORD not in error
    # What a worker prints when it stops (exit code 1): where, how, as whom, and what to check.
    with pytest.raises(click.ClickException) as stopped, reaching(wrong):
        kafka_clients.consumer(wrong, group_id="secure-test", bootstrap_timeout_ms=3000)
    message = stopped.value.format_message()
    assert message.startswith(
        f"cannot reach Kafka at {broker.sasl_ssl} over SASL_SSL (SCRAM-SHA-512 as {USER}): "
    )
    assert "check FACESTREAM_KAFKA_SSL_CAFILE and the credentials" in message
    assert "wrong-pass" not in message


def test_clients_without_tls_or_a_trusted_certificate_are_refused(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    # Plaintext to the SASL_SSL listener: the broker expects a TLS handshake.
    refused(PipelineSettings(kafka_bootstrap=broker.sasl_ssl))
    # TLS, but trusting only the system's CAs: the broker's certificate is not verified (the
    # reason is in kafka-python's log; the error raised is its bootstrap timeout).
    with caplog.at_level(logging.WARNING, logger="kafka"):
        refused(broker.settings(kafka_ssl_cafile=None))
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    # The mTLS listener without a client certificate.
    refused(
        PipelineSettings(
            kafka_bootstrap=broker.mtls,
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=broker.pki.ca,
        )
    )


def test_the_password_is_never_logged(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    settings = broker.settings(kafka_sasl_password_file=None, kafka_sasl_password=PASSWORD)
    with caplog.at_level(logging.DEBUG, logger="kafka"):
        admin = kafka_clients.admin(settings, request_timeout_ms=10_000)
        admin.list_topics()
        admin.close()
    assert "sasl_plain_password" in caplog.text  # kafka-python did log its configuration...
    assert PASSWORD not in caplog.text  # ...with the password masked
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())


# --- Redis --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivateRedis:
    url: str
    tls_url: str | None


@pytest.fixture(scope="module")
def private_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (`facestream stack up` installs it)")
    folder = tmp_path_factory.mktemp("redis")
    port, tls_port = free_port(), free_port()
    command = [
        binary, "--bind", HOST, "--port", str(port), "--requirepass", REDIS_PASSWORD,
        "--save", "", "--appendonly", "no", "--dir", str(folder), "--daemonize", "no",
        "--tls-port", str(tls_port), "--tls-cert-file", str(pki.cert("server")),
        "--tls-key-file", str(pki.key("server")), "--tls-ca-cert-file", str(pki.ca),
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    log = (folder / "redis.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not _listening(port) or not _listening(tls_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start: {(folder / 'redis.log').read_text()}")
            time.sleep(0.1)
        yield PrivateRedis(f"redis://{HOST}:{port}/0", f"rediss://{HOST}:{tls_port}/0")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def test_redis_password_from_a_file_reaches_every_client(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(REDIS_PASSWORD + "\n")
    pipeline = PipelineSettings(redis_url=private_redis.url, redis_password_file=secret)
    assert redis_client(pipeline).ping()
    # The sink's client and the API's reader (through the sink's reader) take the same path.
    assert sink_redis_client(pipeline).ping()
    assert StoreReader(pipeline, SinkSettings()).stores() == []
    # ...as does a password in the URL, when the URL comes from a Secret as a whole.
    in_url = private_redis.url.replace("redis://", f"redis://:{REDIS_PASSWORD}@")
    assert redis_client(RedisSettings(redis_url=in_url)).ping()


def test_a_wrong_or_missing_redis_password_fails_clearly(private_redis: PrivateRedis) -> None:
    for password in ("wrong", None):
        settings = RedisSettings(redis_url=private_redis.url, redis_password=password)
        started = time.monotonic()
        with pytest.raises(redis.AuthenticationError) as raised:
            redis_client(settings, socket_timeout=5).ping()
        assert time.monotonic() - started < 10
        assert "wrong" not in str(raised.value)


def test_redis_over_tls(private_redis: PrivateRedis, pki: Pki) -> None:
    assert private_redis.tls_url is not None
    secure = RedisSettings(
        redis_url=private_redis.tls_url, redis_password=REDIS_PASSWORD, redis_ssl_cafile=pki.ca
    )
    assert redis_client(secure, socket_timeout=5).ping()
    # Without the CA, the server's certificate is not trusted.
    untrusted = RedisSettings(redis_url=private_redis.tls_url, redis_password=REDIS_PASSWORD)
    with pytest.raises(redis.ConnectionError, match=r"(?i)certificate"):
        redis_client(untrusted, socket_timeout=5).ping()


# --- settings -----------------------------------------------------------------------------------


def test_plaintext_stays_the_default() -> None:
    options = kafka_clients.kafka_options(PipelineSettings(kafka_bootstrap="127.0.0.1:9092"))
    assert options == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
        "reconnect_backoff_max_ms": kafka_clients.RECONNECT_BACKOFF_MAX_MS,
    }


def test_every_process_knows_the_new_variables() -> None:
    # Through PipelineSettings: an unknown FACESTREAM_* variable would stop a worker.
    check_environment(
        {
            "FACESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FACESTREAM_KAFKA_SSL_CAFILE": "/etc/facestream/kafka/ca.crt",
            "FACESTREAM_KAFKA_SSL_CHECK_HOSTNAME": "true",
            "FACESTREAM_KAFKA_SSL_CERTFILE": "/c",
            "FACESTREAM_KAFKA_SSL_KEYFILE": "/k",
            "FACESTREAM_KAFKA_SSL_KEY_PASSWORD_FILE": "/p",
            "FACESTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FACESTREAM_KAFKA_SASL_USERNAME": "facestream",
            "FACESTREAM_KAFKA_SASL_PASSWORD_FILE": "/etc/facestream/kafka/password",
            "FACESTREAM_REDIS_USERNAME": "facestream",
            "FACESTREAM_REDIS_PASSWORD_FILE": "/p",
            "FACESTREAM_REDIS_SSL_CAFILE": "/ca",
        }
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs FACESTREAM_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
            "needs FACESTREAM_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_username": "u"}, "PROTOCOL is PLAINTEXT: use SASL_SSL"),
        ({"kafka_ssl_cafile": __file__}, "PLAINTEXT: use SSL or SASL_SSL"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": __file__},
            "KEYFILE needs FACESTREAM_KAFKA_SSL_CERTFILE",
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
                "kafka_sasl_password_file": __file__,
            },
            "not both",
        ),
        ({"redis_url": "http://redis:6379"}, "must start with redis://"),
        ({"redis_ssl_cafile": __file__}, "is not rediss://"),
        (
            {"redis_url": "redis://:secret@redis:6379/0", "redis_password": "other"},
            "use one place",
        ),
    ],
)
def test_inconsistent_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PipelineSettings(**fields)


CONSTRUCTION = re.compile(
    r"\b(KafkaConsumer|KafkaProducer|KafkaAdminClient|Redis|RedisCluster)(\.from_url)?\("
)


def test_no_client_is_made_around_the_factories() -> None:
    """Every Kafka and Redis client of the package and the benchmarks is made by
    kafka_clients or redis_clients: one made elsewhere would ignore TLS and passwords."""
    allowed = {
        ROOT / "facestream" / "runtime" / "kafka_clients.py",
        ROOT / "facestream" / "runtime" / "redis_clients.py",
    }
    found = []
    for folder in ("facestream", "services", "schemas", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.resolve() in allowed or "/." in str(path):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if CONSTRUCTION.search(line) and not line.lstrip().startswith(("#", "class ")):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
