"""Shared pytest fixtures: real PostgreSQL / Redis resources of our own, settings, processes.

Generic on purpose (other areas keep their fixtures in their own test files):

- ``pg_url`` (session): a fresh PostgreSQL database ``ld3_test_<random>`` on the shared
  server (127.0.0.1:5432, trust auth, user postgres); dropped at the end.
- ``redis_url`` / ``redis_prefix`` (session): a Redis database number (``LD3_TEST_REDIS_DB``,
  default 11) on the shared server and a unique key prefix; only keys with that prefix are
  deleted at the end (never FLUSHDB: the server is shared).
- ``make_settings``: builds :class:`registry.settings.Settings` objects (embedded by default,
  or on ``pg_url`` / ``redis_url``) in a temporary home.
- ``service_env``: environment for service subprocesses (``ld3 serve``, ``ld3 worker``) with
  short worker timeouts.
- ``start_process`` / ``free_port`` / ``wait_http``: start subprocesses in their own process
  group (killed at teardown), find a free port, wait for an HTTP endpoint.
- ``private_redis`` / ``private_postgres``: factories for servers of our own on other ports,
  for tests that stop a server (the shared ones are never stopped).

Servers are required: on a machine without them the fixtures skip, except under ``CI=true``
where they fail (``.ci/run`` starts them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import pg_admin, pg_dsn, temporary_pg_database, unavailable

REPO = Path(__file__).resolve().parent.parent
REDIS_HOST = os.environ.get("LD3_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("LD3_TEST_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("LD3_TEST_REDIS_DB", "11"))

# Service variables of the developer's shell must not leak into the tests.
for _name in ("LD3_DATABASE_URL", "LD3_BROKER_URL", "LD3_API_TOKEN", "LD3_ARTIFACTS_DIR",
              "LD3_HOME", "LD3_KEY_PREFIX"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database of this test session (dropped afterwards)."""
    with temporary_pg_database() as url:
        yield url


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test only (for tests that need an empty schema)."""
    with temporary_pg_database() as url:
        yield url


# ----------------------------------------------------------------------------------- Redis
@pytest.fixture(scope="session")
def redis_prefix() -> str:
    """Unique Redis key prefix of this test session (``ld3test-<hex>``)."""
    return f"ld3test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def redis_url(redis_prefix: str) -> Iterator[str]:
    """URL of the shared Redis server's test database; our prefixed keys are removed after."""
    import redis

    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Redis not reachable on {REDIS_HOST}:{REDIS_PORT}: {exc}")
    try:
        yield url
    finally:
        try:
            for key in client.scan_iter(match=f"{redis_prefix}*", count=500):
                client.delete(key)
        except Exception:  # noqa: BLE001
            pass
        client.close()


# -------------------------------------------------------------------------------- settings
@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Any]:
    """``make_settings(**overrides) -> Settings``: embedded (SQLite in tmp_path) by default."""
    from registry.settings import Settings

    def make(**overrides: Any) -> Any:
        values: dict[str, Any] = {"home": tmp_path / "ld3home", "broker_url": None,
                                  "api_token": None}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def service_env(tmp_path: Path, redis_prefix: str) -> Callable[..., dict[str, str]]:
    """``service_env(database_url, broker_url=None, **extra) -> env`` for service processes.

    Short timeouts (visibility 3 s, lease 3 s, progress every 0.2 s), one thread, a unique
    key prefix and artifacts folder per call.
    """

    def make(database_url: str, broker_url: str | None = None, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LD3_")}
        env.update(
            LD3_DATABASE_URL=database_url,
            LD3_ARTIFACTS_DIR=str(tmp_path / f"artifacts-{uuid.uuid4().hex[:6]}"),
            LD3_HOME=str(tmp_path / "home"),
            LD3_KEY_PREFIX=f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
            LD3_CELERY_QUEUE="ld3",
            LD3_VISIBILITY_TIMEOUT="3",
            LD3_RESTORE_INTERVAL="1",
            LD3_LEASE_SECONDS="3",
            LD3_PROGRESS_INTERVAL="0.2",
            LD3_BROKER_TIMEOUT_S="1",
            LD3_READY_TIMEOUT_S="1",
            LD3_DB_CONNECT_TIMEOUT_S="2",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        if broker_url:
            env["LD3_BROKER_URL"] = broker_url
        env.update({k: str(v) for k, v in extra.items()})
        return env

    return make


# ------------------------------------------------------------------------------- processes
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """The :func:`free_port` function."""
    return free_port


class Proc:
    """A subprocess in its own process group, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """Process id (also the process group id)."""
        return self.popen.pid

    def log(self) -> str:
        """Everything the process printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        """Block until ``text`` appears in the output; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.args} exited ({self.popen.returncode}):\n{self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not printed by {self.args} in {timeout}s:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (the process and its children)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the group, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(10)
        else:
            self.kill(signal.SIGKILL)  # leftover children of a dead leader
        self._log.close()
        return self.popen.returncode


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``start_process(args, env, name) -> Proc``; every process is stopped at teardown."""
    procs: list[Proc] = []

    def start(args: list[str], env: dict[str, str], name: str = "proc", cwd: Path = REPO) -> Proc:
        proc = Proc(args, env, tmp_path / f"{name}-{len(procs)}.log", cwd)
        procs.append(proc)
        return proc

    yield start
    for proc in reversed(procs):
        proc.stop()


def wait_http(url: str, timeout: float = 60.0, ok: Callable[[Any], bool] | None = None) -> Any:
    """GET ``url`` until it answers (and ``ok(response)`` holds); returns the response."""
    import httpx

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2.0)
            if ok is None or ok(last):
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready in {timeout}s (last: {last!r})")


@pytest.fixture(name="wait_http")
def wait_http_fixture() -> Callable[..., Any]:
    """The :func:`wait_http` function."""
    return wait_http


# ------------------------------------------------------------------------ private servers
class PrivateRedis:
    """A redis-server of our own on ``port`` (no persistence), startable and stoppable."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait for PING."""
        exe = shutil.which("redis-server")
        if exe is None:
            unavailable("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise AssertionError(f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started :class:`PrivateRedis` on a free port; stopped at teardown."""
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


class PrivatePostgres:
    """A PostgreSQL cluster of our own (``initdb`` in a temp dir) on ``port``.

    Run as the ``postgres`` system user when the tests run as root (``initdb`` refuses root).
    Trust authentication; the database ``postgres`` exists; :meth:`create_database` adds more.
    """

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.datadir = workdir / "pgdata"
        self.bindir = self._bindir()
        self.user = "postgres"

    @staticmethod
    def _bindir() -> Path:
        import glob

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if found:
            return Path(found[-1]).parent
        exe = shutil.which("initdb")
        if exe is None:
            unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
        return Path(exe).parent

    def _run(self, args: list[str], timeout: float = 60) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def init(self) -> None:
        """``initdb`` the cluster (owned by the postgres user when running as root)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, user="postgres")
        self._run(["initdb", "-D", str(self.datadir), "-A", "trust", "-U", self.user,
                   "--no-sync"])

    def start(self) -> None:
        """``pg_ctl start`` on 127.0.0.1:<port> (socket in the work dir) and wait."""
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir} "
                "-c fsync=off -c full_page_writes=off")
        self._run(["pg_ctl", "-D", str(self.datadir), "-o", opts, "-l",
                   str(self.workdir / "pg.log"), "-w", "-t", "60", "start"], timeout=90)

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (no error if it is not running)."""
        try:
            self._run(["pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop"])
        except subprocess.CalledProcessError:
            pass

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its SQLAlchemy URL."""
        pg_admin(f'CREATE DATABASE "{name}"', host="127.0.0.1", port=self.port)
        return pg_dsn(name, host="127.0.0.1", port=self.port)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """An initialized and started :class:`PrivatePostgres` on a free port; removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="ld3-pg-"))
    server = PrivatePostgres(free_port(), workdir)
    try:
        server.init()
        server.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        unavailable(f"could not start a private PostgreSQL: {exc.stderr!r}")
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ the compose services
COMPOSE_FILE = REPO / "docker-compose.yml"


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as a dict."""
    import yaml

    return yaml.safe_load(COMPOSE_FILE.read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose variable interpolation: ``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?err}``."""
    import re

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == ":?":
            if not current:
                raise ValueError(f"compose variable {name} is required: {arg}")
            return current
        return current or ""

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", sub, value)


def compose_service(
    name: str, env: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """(command, environment) of compose service ``name``, interpolated with ``env``."""
    service = load_compose()["services"][name]
    env = dict(env or {})
    command = [interpolate(str(c), env) for c in service["command"]]
    raw = service.get("environment") or {}
    environment = {k: interpolate(str(v), env) for k, v in raw.items()}
    return command, environment


def local_command(command: list[str]) -> list[str]:
    """A compose command runnable here: ``ld3 ...`` runs as ``python -m ld3_cli ...``."""
    if command and command[0] == "ld3":
        return [sys.executable, "-m", "ld3_cli", *command[1:]]
    return command


class ServiceStack:
    """The compose services (migrate, api, worker) as local processes on our own resources.

    Each service runs the command of docker-compose.yml with the compose environment, where
    the container-only values are replaced: database -> a PostgreSQL database of its own on
    127.0.0.1, broker -> the test Redis database with a unique key prefix, artifacts -> a temp
    folder, the API on 127.0.0.1:<free port>, short worker timeouts.
    """

    def __init__(self, workdir: Path, database_url: str, broker_url: str, key_prefix: str):
        self.workdir = workdir
        self.token = uuid.uuid4().hex
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[Proc] = []
        self.worker: Proc | None = None
        self.api: Proc | None = None
        self.database_url = database_url
        self.overrides = {
            "LD3_API_TOKEN": self.token,
            "LD3_DATABASE_URL": database_url,
            "LD3_BROKER_URL": broker_url,
            "LD3_ARTIFACTS_DIR": str(workdir / "artifacts"),
            "LD3_HOME": str(workdir / "home"),
            "LD3_HOST": "127.0.0.1",
            "LD3_PORT": str(self.port),
            "LD3_KEY_PREFIX": key_prefix,
            "LD3_VISIBILITY_TIMEOUT": "3",
            "LD3_RESTORE_INTERVAL": "1",
            "LD3_LEASE_SECONDS": "3",
            "LD3_PROGRESS_INTERVAL": "0.2",
            "LD3_BROKER_TIMEOUT_S": "2",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def artifacts(self) -> Path:
        """The artifacts folder shared by the API and the workers."""
        return Path(self.overrides["LD3_ARTIFACTS_DIR"])

    def env_for(self, service: str) -> tuple[list[str], dict[str, str]]:
        """(local command, environment) of a compose service."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("LD3_")}
        command, environment = compose_service(service, {"LD3_API_TOKEN": self.token})
        return local_command(command), {**base, **environment, **self.overrides}

    def migrate(self) -> subprocess.CompletedProcess[str]:
        """Run the migrate service's command to completion (must exit 0)."""
        command, env = self.env_for("migrate")
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def _start(self, service: str) -> Proc:
        command, env = self.env_for(service)
        proc = Proc(command, env, self.workdir / f"{service}-{len(self.procs)}.log", REPO)
        self.procs.append(proc)
        return proc

    def start_api(self) -> Proc:
        """Start the api service and wait until /healthz answers."""
        self.api = self._start("api")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.api.popen.poll() is not None:
                raise AssertionError(f"api exited:\n{self.api.log()}")
            try:
                wait_http(f"{self.url}/healthz", timeout=1.0)
                return self.api
            except AssertionError:
                continue
        raise AssertionError(f"api did not come up:\n{self.api.log()}")

    def start_worker(self) -> Proc:
        """Start a worker service process and wait until Celery says it is ready."""
        self.worker = self._start("worker")
        self.worker.wait_for_output("ready.", timeout=120)
        return self.worker

    def client(self) -> Any:
        """An httpx client on the API with the bearer token."""
        import httpx

        return httpx.Client(base_url=self.url, timeout=30.0,
                            headers={"Authorization": f"Bearer {self.token}"})

    def wait_job(self, job_id: str, states: tuple[str, ...] = ("succeeded", "failed",
                 "cancelled"), timeout: float = 180.0, seen: list[dict[str, Any]] | None = None,
                 until: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """Poll GET /jobs/{id} until its state is in ``states`` (or ``until(job)``)."""
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        with self.client() as http:
            while time.monotonic() < deadline:
                job = http.get(f"/jobs/{job_id}").json()
                if seen is not None:
                    seen.append(job)
                if job.get("state") in states if until is None else until(job):
                    return job
                time.sleep(0.1)
        logs = "\n".join(f"--- {p.args}\n{p.log()[-4000:]}" for p in self.procs)
        raise AssertionError(f"job {job_id} still {job} after {timeout}s\n{logs}")

    def stop(self) -> None:
        """Stop every process of the stack."""
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="session")
def service_stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, redis_prefix: str
) -> Iterator[ServiceStack]:
    """migrate + api + one worker, started from the compose commands (session-wide)."""
    with temporary_pg_database("ld3_stack") as url:
        stack = ServiceStack(tmp_path_factory.mktemp("stack"), url, redis_url,
                             f"{redis_prefix}-stack")
        try:
            stack.migrate()
            stack.start_api()
            stack.start_worker()
            yield stack
        finally:
            stack.stop()
