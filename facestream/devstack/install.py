"""What the stack needs on the machine, installed on first use: Kafka's jars and redis-server.

Kafka comes from Maven Central through ``mvn`` into ``<stack>/kafka/lib`` (no tarball, no
Docker); a missing ``redis-server`` is installed with apt-get when running as root. Java is
not installed, only checked: a JDK is a machine-wide choice.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from facestream.devstack.config import HOST, StackConfig, StackError, resolve, write_atomic
from facestream.devstack.process import run_logged

log = logging.getLogger(__name__)

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

_INSTALL_MARKER = ".facestream-installed"


# --- Kafka ------------------------------------------------------------------------------------


def _install_fingerprint() -> str:
    return " ".join(":".join(a) for a in MAVEN_ARTIFACTS) + f" {MAVEN_DEPENDENCY_PLUGIN}"


def _pom() -> str:
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in MAVEN_ARTIFACTS
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by facestream.devstack: the jars of a single-node Kafka, nothing is built. -->
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
    marker = resolve(config).lib_dir / _INSTALL_MARKER
    try:
        return marker.read_text(encoding="utf-8").strip() == _install_fingerprint()
    except OSError:
        return False


def install_kafka(config: StackConfig | None = None) -> Path:
    """Resolve the Kafka jars from Maven Central into ``kafka/lib`` (once); return that folder.

    Jars land in a scratch folder that is renamed into place only when complete, so an
    interrupted download is redone instead of half-used. A version bump reinstalls.
    """
    cfg = resolve(config)
    if kafka_installed(cfg):
        return cfg.lib_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven")
    cfg.kafka_dir.mkdir(parents=True, exist_ok=True)
    pom = cfg.kafka_dir / "pom.xml"
    write_atomic(pom, _pom())
    partial = cfg.kafka_dir / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    log_path = cfg.kafka_dir / "install.log"
    log.info("fetching Kafka %s jars with Maven (log: %s)", KAFKA_VERSION, log_path)
    run_logged(
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
    log.info("Kafka %s installed in %s", KAFKA_VERSION, cfg.lib_dir)
    return cfg.lib_dir


def java() -> str:
    """Path of the ``java`` to run Kafka with: ``$JAVA_HOME``'s, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise StackError(
            f"Java {MIN_JAVA_MAJOR}+ is needed for Kafka: apt-get install openjdk-17-jre-headless"
        )
    return found


def check_java(java: str) -> None:
    """Raise :class:`StackError` if ``java`` is older than Kafka needs (unreadable: try anyway)."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"cannot run {java} -version: {exc}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        log.warning("could not read the Java version from %r; trying anyway", out.stderr)
        return
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise StackError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR}+, but {java} is Java {major}; "
            "set JAVA_HOME to a newer JDK"
        )


# --- Redis ------------------------------------------------------------------------------------


def find_redis_server() -> str | None:
    """Path of an installed ``redis-server``, or None."""
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


def ensure_debian_package(
    binary: str, package: str, config: StackConfig | None = None, candidates: tuple[str, ...] = ()
) -> str:
    """Path of ``binary``, installing Debian's ``package`` with apt-get if it is missing (root
    only). ``candidates`` are absolute paths to try when ``binary`` is not on PATH."""
    cfg = resolve(config)

    def find() -> str | None:
        found = shutil.which(binary)
        if found:
            return found
        return next((c for c in candidates if os.access(c, os.X_OK)), None)

    found = find()
    if found:
        return found
    if os.geteuid() != 0:
        raise StackError(
            f"{binary} is not installed and this is not root: sudo apt-get install -y {package}"
        )
    if shutil.which("apt-get") is None:
        raise StackError(f"{binary} is missing and apt-get is not available: install {package}")
    log_path = cfg.root / f"install-{package}.log"
    log.info("installing %s with apt-get (log: %s)", package, log_path)
    run_logged(["apt-get", "update"], log_path, 900, "apt-get update")
    run_logged(
        ["apt-get", "install", "-y", "--no-install-recommends", package],
        log_path,
        1800,
        f"apt-get install {package}",
    )
    found = find()
    if not found:
        raise StackError(f"apt-get installed {package} but {binary} is not on PATH; see {log_path}")
    return found


def ensure_redis_server(config: StackConfig | None = None) -> str:
    """Path of ``redis-server``, installing Debian's package with apt-get if missing (root only)."""
    cfg = resolve(config)
    found = find_redis_server()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(
            "redis-server is not installed and cannot be installed here: install it "
            "(sudo apt-get install -y redis-server) or run a Redis on "
            f"{HOST}:{cfg.redis_port} yourself"
        )
    return ensure_debian_package(
        "redis-server",
        "redis-server",
        cfg,
        ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"),
    )
