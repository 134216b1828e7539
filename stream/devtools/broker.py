"""A single-node Apache Kafka broker (KRaft) run with the machine's Java, for demo, tests and
benchmarks.

No Docker engine is needed: the official `org.apache.kafka:kafka_2.13` jars are resolved once
from Maven Central with `mvn` into a cache directory (see `deploy/kafka/`), the storage is
formatted once per data dir, and the broker runs detached so `stream kafka up` can return while
it keeps serving. `stop()` ends the whole process group, so no orphan JVM is left behind.
With `security=BrokerSecurity(...)` (broker_security.py) it also opens SSL, SASL_PLAINTEXT
and SASL_SSL listeners, for the TLS and SASL tests; `bootstrap_for(protocol)` names them.

Over 300 lines on purpose: resolving the jars, formatting, starting, probing and stopping one
broker are one lifecycle whose steps share its paths, locks and process handling.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from stream.devtools.broker_security import BrokerSecurity
from stream.errors import FraudStreamError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
CACHE_ENV = "FRAUDSTREAM_CACHE_DIR"
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
_MARKER = ".resolved"
_PID_FILE = "kafka.pid"
_PORTS_FILE = "ports.json"
_OUT_FILE = "broker.out"
_SERVER_LOG = "server.log"
_USERS_FILE = "sasl-users.json"


class BrokerError(FraudStreamError):
    """The local broker could not be resolved, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerStatus:
    """What `stream kafka status` prints: our process (if any) and whether the port answers."""

    pid: int | None
    answering: bool
    bootstrap: str
    data_dir: Path

    @property
    def running(self) -> bool:
        return self.pid is not None

    def summary(self) -> str:
        proc = f"pid {self.pid}" if self.pid is not None else "not running"
        state = "answering" if self.answering else "not answering"
        return f"kafka {self.bootstrap}: {proc}, {state} (data dir {self.data_dir})"


def default_cache_dir() -> Path:
    """`$FRAUDSTREAM_CACHE_DIR`, else `~/.cache/fraud-stream`: jars and broker data live here."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fraud-stream"


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"`{name}` not found on PATH: {hint}")
    return path


def _require_java() -> str:
    return _require_tool("java", "the local broker needs Java 17+ (e.g. apt-get install "
                                 "openjdk-17-jre-headless), or set KAFKA_BOOTSTRAP_SERVERS")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise concurrent resolutions (parallel test sessions share one cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_kafka_libs(cache_dir: Path | None = None) -> Path:
    """Return the directory of Kafka jars, resolving them with Maven the first time.

    A marker holding the pom's hash is written only after a complete resolution, so an
    interrupted download is redone and a changed pom is picked up.
    """
    pom = DEPLOY_DIR / "pom.xml"
    if not pom.is_file():
        raise BrokerError(f"{pom} not found: the local broker needs the repository checkout")
    _require_java()
    # Absolute, like the data directory: the classpath is used from inside that directory.
    root = (cache_dir or default_cache_dir()).expanduser().absolute() / f"kafka-{KAFKA_VERSION}"
    libs = root / "libs"
    marker = root / _MARKER
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    with _file_lock(root / ".lock"):
        if marker.is_file() and marker.read_text().strip() == digest and any(libs.glob("*.jar")):
            return libs
        mvn = _require_tool("mvn", "Maven resolves the Kafka jars once (apt-get install maven)")
        shutil.rmtree(libs, ignore_errors=True)
        marker.unlink(missing_ok=True)
        log.info("resolving Kafka %s jars into %s (once)", KAFKA_VERSION, libs)
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise BrokerError(f"mvn could not resolve Kafka {KAFKA_VERSION} "
                              f"(exit {proc.returncode}):\n{tail}")
        marker.write_text(digest + "\n")
    return libs


def _tcp_open(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _split(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port or 9092)


def is_answering(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when a Kafka broker at `bootstrap` answers a metadata request within `timeout_s`.

    A plain TCP probe comes first, so a closed port costs no client threads or log noise.
    """
    from kafka.admin import KafkaAdminClient  # a heavy import, only when needed

    host, port = _split(bootstrap)
    if not _tcp_open(host, port, min(timeout_s, 2.0)):
        return False
    ms = max(int(timeout_s * 1000), 500)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="fraud-stream-probe",
                                 bootstrap_timeout_ms=ms, request_timeout_ms=ms)
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False
    try:
        admin.list_topics()
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        admin.close()


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port `p` such that `p` and `p + 1` (the controller) are both free right now."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            try:
                second.bind((host, port + 1))
            except (OSError, OverflowError):
                continue
            return port
    raise BrokerError("no free pair of ports found")


def _free_port_besides(taken: set[int]) -> int:
    """A free port on 127.0.0.1 that is none of `taken`."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise BrokerError("no free port found")


def _pid_alive(pid: int) -> bool:
    """Alive and not a zombie; reaps the pid if it is our own exited child."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_kafka_pid(pid: int) -> bool:
    """Guard against pid reuse: only signal a process that is really a Kafka JVM."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # not Linux: trust the pid file
        return _pid_alive(pid)
    with contextlib.suppress(OSError):
        return b"kafka.Kafka" in cmdline.read_bytes() and _pid_alive(pid)
    return False


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _tail(path: Path, since: int = 0, lines: int = 30) -> str:
    """The last lines written to `path` after byte offset `since` (this start attempt only)."""
    try:
        with path.open("rb") as fh:
            fh.seek(since)
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalBroker:
    """One Kafka node in combined broker+controller mode on 127.0.0.1.

    >>> b = LocalBroker(port=19092, data_dir=Path("/tmp/x"))
    >>> b.bootstrap, b.controller_port
    ('127.0.0.1:19092', 19093)
    """

    def __init__(self, port: int = 9092, data_dir: Path | None = None,
                 cache_dir: Path | None = None, heap: str = "768m",
                 controller_port: int | None = None, security: BrokerSecurity | None = None,
                 secure_ports: Mapping[str, int] | None = None) -> None:
        """`security`: SSL and SASL listeners beside the PLAINTEXT one (BrokerSecurity), on
        `secure_ports` (protocol -> port) or on free ports picked now."""
        self.port = port
        self.controller_port = controller_port if controller_port is not None else port + 1
        self.cache_dir = cache_dir
        # Absolute: the JVM runs with the data directory as its working directory, so a
        # relative path handed to it would be resolved a second time, from inside itself.
        chosen = Path(data_dir).expanduser() if data_dir else default_cache_dir() / f"broker-{port}"
        self.data_dir = chosen.absolute()
        self.heap = heap
        self.security = security
        self.secure_ports = dict(secure_ports or {})
        taken = {port, self.controller_port, *self.secure_ports.values()}
        for protocol in security.protocols() if security is not None else ():
            if protocol not in self.secure_ports:
                self.secure_ports[protocol] = _free_port_besides(taken)
                taken.add(self.secure_ports[protocol])
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offsets = (0, 0)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def bootstrap_for(self, protocol: str) -> str:
        """The address of the listener for `protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT,
        SASL_SSL), as the `security_protocol` setting names it."""
        if protocol == "PLAINTEXT":
            return self.bootstrap
        if protocol not in self.secure_ports:
            raise BrokerError(f"this broker has no {protocol} listener (see BrokerSecurity)")
        return f"127.0.0.1:{self.secure_ports[protocol]}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / _PID_FILE

    @property
    def log_file(self) -> Path:
        """The broker's own log (log4j); `broker.out` beside it holds JVM stdout/stderr."""
        return self.data_dir / _SERVER_LOG

    def pid(self) -> int | None:
        """The pid of our running broker, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _is_kafka_pid(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def status(self, timeout_s: float = 3.0) -> BrokerStatus:
        return BrokerStatus(self.pid(), is_answering(self.bootstrap, timeout_s),
                            self.bootstrap, self.data_dir)

    def start(self, timeout_s: float = 90) -> str:
        """Start (or find already running) and return the bootstrap address once it answers."""
        if self.pid() is not None:
            if is_answering(self.bootstrap, 5.0):
                log.info("local broker already running at %s", self.bootstrap)
                return self.bootstrap
            return self._wait_ready(time.monotonic() + timeout_s)
        if is_answering(self.bootstrap, 3.0):
            raise BrokerError(f"a Kafka broker not started from {self.data_dir} is already "
                              f"answering on {self.bootstrap}: use it (--bootstrap-servers) "
                              "or pick another --port")
        for p in (self.port, self.controller_port):
            if _tcp_open("127.0.0.1", p, 0.5):
                raise BrokerError(f"port {p} on 127.0.0.1 is in use by another process")
        java = _require_java()
        libs = ensure_kafka_libs(self.cache_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_properties()
        classpath = str(libs / "*")
        self._format_once(java, classpath, props)
        cmd = [java, f"-Xmx{self.heap}",
               "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
               f"-Dkafka.logs.dir={self.data_dir}",
               "-cp", classpath, "kafka.Kafka", str(props)]
        t0 = time.monotonic()
        self._log_offsets = (_size(self.data_dir / _OUT_FILE), _size(self.log_file))
        with (self.data_dir / _OUT_FILE).open("ab") as out:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, cwd=self.data_dir,
                                          start_new_session=True)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        bootstrap = self._wait_ready(t0 + timeout_s)
        log.info("local broker %s ready in %.1fs", bootstrap, time.monotonic() - t0)
        return bootstrap

    def _wait_ready(self, deadline: float) -> str:
        while time.monotonic() < deadline:
            pid = self._current_pid()
            if pid is None:
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(f"Kafka exited during start-up; last log lines:\n"
                                  f"{self._log_tail()}")
            if is_answering(self.bootstrap, 2.0):
                return self.bootstrap
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"Kafka did not answer on {self.bootstrap} in time; last log lines:\n"
                          f"{self._log_tail()}")

    def _current_pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        return self.pid()

    def _log_tail(self) -> str:
        out_at, log_at = self._log_offsets
        parts = [_tail(self.data_dir / _OUT_FILE, out_at, 15), _tail(self.log_file, log_at, 25)]
        return "\n".join(p for p in parts if p) or "(no log output)"

    def _write_properties(self) -> Path:
        """Fill the template; refuse a data dir formatted for other ports (its voter set)."""
        ports = {"port": self.port, "controller_port": self.controller_port}
        ports_file = self.data_dir / _PORTS_FILE
        if self._formatted() and ports_file.is_file():
            old = json.loads(ports_file.read_text())
            if old != ports:
                raise BrokerError(f"{self.data_dir} was formatted for ports {old}; reuse them or "
                                  "choose another --data-dir")
        secure = BrokerSecurity() if self.security is None else self.security
        template = Template((DEPLOY_DIR / "server.properties").read_text())
        text = template.substitute(port=self.port, controller_port=self.controller_port,
                                   log_dir=self.log_dir,
                                   **secure.properties(self.secure_ports, self._keystore()))
        path = self.data_dir / "server.properties"
        path.write_text(text)
        ports_file.write_text(json.dumps(ports) + "\n")
        return path

    def _keystore(self) -> Path | None:
        """The broker's PEM keystore (private key, then the chain), or None without TLS."""
        security = self.security
        if security is None or security.certfile is None or security.keyfile is None:
            return None
        path = self.data_dir / "broker-keystore.pem"
        try:
            key, chain = security.keyfile.read_text(), security.certfile.read_text()
        except OSError as exc:
            raise BrokerError(f"cannot read the broker's certificate or key: {exc}") from None
        if "ENCRYPTED" in key:
            raise BrokerError(f"{security.keyfile}: the local broker needs an unencrypted key")
        path.write_text(key.rstrip() + "\n" + chain.rstrip() + "\n")
        path.chmod(0o600)
        return path

    def _formatted(self) -> bool:
        return (self.log_dir / "meta.properties").is_file()

    def _check_users(self) -> None:
        """SCRAM users are written at format time: a formatted data dir must have been
        formatted for the users asked for now."""
        wanted = (self.security or BrokerSecurity()).users_digest()
        users_file = self.data_dir / _USERS_FILE
        if self._formatted():
            had = users_file.read_text().strip() if users_file.is_file() else \
                BrokerSecurity().users_digest()
            if had != wanted:
                raise BrokerError(f"{self.data_dir} was formatted for other SASL users; "
                                  "choose another --data-dir")
            return
        users_file.write_text(wanted + "\n")

    def _format_once(self, java: str, classpath: str, props: Path) -> None:
        self._check_users()
        if self._formatted():
            return
        scram = self.security.scram_arguments() if self.security is not None else []
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
               f"-Dkafka.logs.dir={self.data_dir}", "-cp", classpath,
               "kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={cluster_id}",
               "-c", str(props), *scram]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(f"formatting {self.log_dir} failed (exit {proc.returncode}):\n"
                              f"{(proc.stdout + proc.stderr).strip()[-2000:]}")

    def stop(self, timeout_s: float = 30) -> bool:
        """SIGTERM the broker's process group, SIGKILL after `timeout_s`; True if one ran."""
        pid = self._proc.pid if self._proc is not None and self._proc.poll() is None else None
        pid = pid or self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            self._proc = None
            return False
        self._signal_group(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout_s):
            log.warning("Kafka (pid %d) ignored SIGTERM for %.0fs; killing it", pid, timeout_s)
            self._signal_group(pid, signal.SIGKILL)
            self._wait_exit(pid, 10)
        self.pid_file.unlink(missing_ok=True)
        self._proc = None
        return True

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)  # started with start_new_session: pgid == pid
        except ProcessLookupError:
            return
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return False


@contextlib.contextmanager
def given_or_local(bootstrap: str | None, prefix: str = "fraud-stream-") -> Iterator[str]:
    """`bootstrap` as it is, or a local broker on a free port in a new temporary directory,
    stopped on exit: what a measurement script runs against (its `--bootstrap` option).

    >>> with given_or_local("127.0.0.1:9092") as bootstrap:
    ...     bootstrap
    '127.0.0.1:9092'
    """
    if bootstrap is not None:
        yield bootstrap
        return
    broker = LocalBroker(port=find_free_port(), data_dir=Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        yield broker.start()
    finally:
        broker.stop()
