"""The project's own Postgres cluster (max_prepared_transactions on), started from local binaries.

As root the cluster lives in /var/tmp (the `postgres` user may not be allowed into the
checkout) and every server binary runs as `postgres`; `<state_dir>/pg` links to it.
As a normal user it lives in `<state_dir>/pg`.

A named cluster (`name=`, on the port of the settings given) is a second one beside it,
in `pg-<name>`: tests put one service's database there to take it down alone. `parent=`
puts a cluster's folder in another directory (make chaos keeps its clusters apart), and
`pg_ctl()` runs pg_ctl on any of them (restart, stop, start).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from infra.util import is_loopback, port_open, setup_logging, tail
from paxkit.config import REPO_ROOT, Settings, load_settings

log = logging.getLogger(__name__)

PG_LIB = Path("/usr/lib/postgresql")
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
CONF_FILE = "paxmart.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_FILE}'"
MAX_SOCKET_PATH = 100
START_TIMEOUT_S = 60


class ClusterError(RuntimeError):
    """The project cluster cannot be set up, started or reached."""


@dataclass(frozen=True)
class ClusterInfo:
    """Where the project cluster lives and how to reach it."""

    bindir: Path
    cluster_dir: Path
    data_dir: Path
    log_file: Path
    socket_dir: Path | None
    host: str
    port: int
    started: bool
    max_prepared_transactions: int

    @property
    def dsn(self) -> str:
        """DSN of the maintenance database, for admin work."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"


@dataclass(frozen=True)
class _Layout:
    cluster_dir: Path
    data_dir: Path
    log_file: Path
    socket_dir: Path | None


def _has_server_binaries(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in SERVER_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bindir(preferred_version: str | None = None) -> Path:
    """The Postgres server binaries: the data dir's version, else pg_config, else the newest."""
    if preferred_version and _has_server_binaries(PG_LIB / preferred_version / "bin"):
        return PG_LIB / preferred_version / "bin"
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=10
        )
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and _has_server_binaries(bindir):
            return bindir
    candidates = [p for p in PG_LIB.glob("*/bin") if _has_server_binaries(p)]
    if not candidates:
        raise ClusterError(
            "no PostgreSQL server binaries found (looked at `pg_config --bindir` and "
            f"{PG_LIB}/*/bin for {', '.join(SERVER_BINARIES)}); install the PostgreSQL server"
        )
    return max(candidates, key=_version_key)


def _as_root() -> bool:
    return os.geteuid() == 0


def _postgres_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError(
            "running as root, but there is no 'postgres' system user to run the server as "
            "(Postgres refuses to run as root); create one or run as a normal user"
        ) from None


def _folder(name: str) -> str:
    return f"pg-{name}" if name else "pg"


def _cluster_dir(settings: Settings, name: str = "", parent: Path | None = None) -> Path:
    if parent is not None:
        return parent / _folder(name)
    if _as_root():
        digest = hashlib.sha1(str(REPO_ROOT).encode()).hexdigest()[:10]
        return Path("/var/tmp") / f"paxmart-{_folder(name)}-{digest}"
    return settings.state_dir / _folder(name)


def _layout(settings: Settings, name: str = "", parent: Path | None = None) -> _Layout:
    cluster_dir = _cluster_dir(settings, name, parent)
    socket_name = f".s.PGSQL.{settings.pg_port}"
    too_long = len(str(cluster_dir / socket_name)) > MAX_SOCKET_PATH
    return _Layout(
        cluster_dir=cluster_dir,
        data_dir=cluster_dir / "data",
        log_file=cluster_dir / "postgres.log",
        socket_dir=None if too_long else cluster_dir,
    )


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a server binary, as `postgres` when we are root."""
    if _as_root():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout
    )


def _chown_to_postgres(path: Path) -> None:
    if _as_root():
        user = _postgres_user()
        os.chown(path, user.pw_uid, user.pw_gid)


def _prepare_cluster_dir(layout: _Layout) -> None:
    if _as_root():
        _postgres_user()
    layout.cluster_dir.mkdir(parents=True, exist_ok=True)
    layout.cluster_dir.chmod(0o755)
    _chown_to_postgres(layout.cluster_dir)


def _link_state_dir(settings: Settings, cluster_dir: Path, name: str = "") -> None:
    """Make `<state_dir>/pg` point at the cluster when it lives elsewhere (root)."""
    link = settings.state_dir / _folder(name)
    if link == cluster_dir:
        return
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        if link.readlink() == cluster_dir:
            return
        link.unlink()
    elif link.exists():
        log.info("%s exists and is not a link; the cluster is in %s", link, cluster_dir)
        return
    link.symlink_to(cluster_dir, target_is_directory=True)


@contextlib.contextmanager
def _locked(layout: _Layout) -> Iterator[None]:
    """Serialize cluster setup between concurrent launchers and test runs."""
    lock_path = layout.cluster_dir.with_name(layout.cluster_dir.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _data_version(layout: _Layout) -> str | None:
    version_file = layout.data_dir / "PG_VERSION"
    return version_file.read_text().strip() if version_file.exists() else None


def _initdb(bindir: Path, layout: _Layout) -> None:
    base = [str(bindir / "initdb"), "-D", str(layout.data_dir), "--auth=trust", "-U", "postgres"]
    errors = []
    for locale in ("C.UTF-8", "C"):
        result = _run([*base, "-E", "UTF8", f"--locale={locale}"], layout.cluster_dir, 120)
        if result.returncode == 0:
            log.info("initialized a Postgres cluster in %s (locale %s)", layout.data_dir, locale)
            return
        errors.append(f"--locale={locale}: {result.stderr.strip()}")
    raise ClusterError("initdb failed:\n" + "\n".join(errors))


def _config_text(settings: Settings, layout: _Layout) -> str:
    socket_dir = str(layout.socket_dir) if layout.socket_dir else ""
    return (
        "# Written by infra/pgcluster.py at every start; set PAXMART_PG_PORT to change the port.\n"
        f"port = {settings.pg_port}\n"
        "listen_addresses = '127.0.0.1'\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "max_prepared_transactions = 300\n"
        "max_connections = 400\n"
        "shared_buffers = 256MB\n"
    )


def _write_config(settings: Settings, layout: _Layout) -> None:
    """Our settings live in an included file, so they survive any restart."""
    conf = layout.data_dir / CONF_FILE
    conf.write_text(_config_text(settings, layout))
    _chown_to_postgres(conf)
    main_conf = layout.data_dir / "postgresql.conf"
    if INCLUDE_LINE not in main_conf.read_text():
        with main_conf.open("a") as f:
            f.write(f"\n{INCLUDE_LINE}\n")


def _pg_ctl(
    bindir: Path, layout: _Layout, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    cmd = [str(bindir / "pg_ctl"), "-D", str(layout.data_dir), *args]
    return _run(cmd, layout.cluster_dir, timeout)


def _is_running(bindir: Path, layout: _Layout) -> bool:
    if not layout.data_dir.exists():
        return False
    return _pg_ctl(bindir, layout, "status", timeout=30).returncode == 0


def _running_port(layout: _Layout) -> int | None:
    """The port the running postmaster listens on (line 4 of postmaster.pid)."""
    try:
        lines = (layout.data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3])
    except (OSError, IndexError, ValueError):
        return None


def _require_free_port(port: int) -> None:
    if port_open("127.0.0.1", port):
        raise ClusterError(
            f"port {port} on 127.0.0.1 is already used by another server; "
            "set PAXMART_PG_PORT to a free port"
        )


def _start(bindir: Path, layout: _Layout, port: int) -> None:
    _require_free_port(port)
    wait = ("-w", "-t", str(START_TIMEOUT_S))
    result = _pg_ctl(bindir, layout, "-l", str(layout.log_file), *wait, "start")
    if result.returncode != 0:
        raise ClusterError(
            f"pg_ctl start failed ({result.stderr.strip() or result.stdout.strip()}); "
            f"last lines of {layout.log_file}:\n{tail(layout.log_file)}"
        )
    log.info("started Postgres on 127.0.0.1:%d (data %s)", port, layout.data_dir)


def _stop(bindir: Path, layout: _Layout) -> None:
    result = _pg_ctl(bindir, layout, "-m", "fast", "-w", "-t", "60", "stop")
    if result.returncode != 0:
        raise ClusterError(f"pg_ctl stop failed: {result.stderr.strip()}")


def check_server(host: str, port: int, user: str = "postgres") -> int:
    """Connect and return max_prepared_transactions; ClusterError when it is 0 or unreachable."""
    try:
        conn = psycopg2.connect(
            host=host, port=port, user=user, dbname="postgres", connect_timeout=5
        )
    except psycopg2.OperationalError as exc:
        raise ClusterError(f"cannot connect to Postgres at {host}:{port}: {exc}") from exc
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW max_prepared_transactions")
            row = cur.fetchone()
    finally:
        conn.close()
    value = int(row[0]) if row else 0
    if value <= 0:
        raise ClusterError(
            f"Postgres at {host}:{port} has max_prepared_transactions=0; 2PC needs it > 0"
        )
    return value


def _ensure_role(port: int, user: str) -> None:
    """Create PAXMART_PG_USER as a superuser when it is not the bootstrap user."""
    if user == "postgres":
        return
    conn = psycopg2.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE ROLE {} SUPERUSER LOGIN").format(sql.Identifier(user)))
    finally:
        conn.close()


def _require_local(settings: Settings) -> None:
    if not is_loopback(settings.pg_host):
        raise ClusterError(
            f"PAXMART_PG_HOST={settings.pg_host} is not a loopback address; "
            "the project cluster only runs locally"
        )


def ensure_cluster(settings: Settings, name: str = "", parent: Path | None = None) -> ClusterInfo:
    """Create, configure and start the project cluster (or the named one) unless it already
    runs (idempotent)."""
    _require_local(settings)
    layout = _layout(settings, name, parent)
    _prepare_cluster_dir(layout)
    if parent is None:
        _link_state_dir(settings, layout.cluster_dir, name)
    with _locked(layout):
        bindir = find_bindir(_data_version(layout))
        if _data_version(layout) is None:
            _initdb(bindir, layout)
        _write_config(settings, layout)
        running = _is_running(bindir, layout)
        if running and _running_port(layout) != settings.pg_port:
            _require_free_port(settings.pg_port)
            log.info("restarting Postgres to move it to port %d", settings.pg_port)
            _stop(bindir, layout)
            running = False
        if not running:
            _start(bindir, layout, settings.pg_port)
        _ensure_role(settings.pg_port, settings.pg_user)
        mpt = check_server("127.0.0.1", settings.pg_port, settings.pg_user)
    return ClusterInfo(
        bindir=bindir,
        cluster_dir=layout.cluster_dir,
        data_dir=layout.data_dir,
        log_file=layout.log_file,
        socket_dir=layout.socket_dir,
        host="127.0.0.1",
        port=settings.pg_port,
        started=not running,
        max_prepared_transactions=mpt,
    )


def stop_cluster(settings: Settings, name: str = "", parent: Path | None = None) -> bool:
    """Stop the project cluster (or the named one); True when it was running."""
    layout = _layout(settings, name, parent)
    if _data_version(layout) is None:
        return False
    with _locked(layout):
        bindir = find_bindir(_data_version(layout))
        if not _is_running(bindir, layout):
            return False
        _stop(bindir, layout)
    log.info("stopped Postgres (data %s)", layout.data_dir)
    return True


def pg_ctl(
    settings: Settings, *args: str, name: str = "", parent: Path | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run `pg_ctl -D <data> <args>` on a cluster (as `postgres` when root), e.g.
    `pg_ctl(s, "-m", "immediate", "-w", "restart")`; the cluster must exist."""
    layout = _layout(settings, name, parent)
    version = _data_version(layout)
    if version is None:
        raise ClusterError(f"no cluster in {layout.data_dir}")
    extra = ("-l", str(layout.log_file)) if {"start", "restart"} & set(args) else ()
    return _pg_ctl(find_bindir(version), layout, *extra, *args, timeout=timeout)


def cluster_status(settings: Settings) -> tuple[bool, str]:
    """(running, one human line) for the project cluster."""
    layout = _layout(settings)
    version = _data_version(layout)
    if version is None:
        return False, f"no cluster yet (would live in {layout.data_dir})"
    running = _is_running(find_bindir(version), layout)
    state = f"running on 127.0.0.1:{_running_port(layout)}" if running else "stopped"
    return running, f"Postgres {version} {state}; data {layout.data_dir}; log {layout.log_file}"


def _start_command(settings: Settings) -> int:
    if not is_loopback(settings.pg_host):
        mpt = check_server(settings.pg_host, settings.pg_port, settings.pg_user)
        print(
            f"external Postgres at {settings.pg_host}:{settings.pg_port} is fine "
            f"(max_prepared_transactions={mpt}); not managing a local cluster"
        )
        return 0
    info = ensure_cluster(settings)
    verb = "started" if info.started else "already running"
    print(
        f"Postgres {verb} on {info.host}:{info.port} "
        f"(max_prepared_transactions={info.max_prepared_transactions}); "
        f"data {info.data_dir}; log {info.log_file}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Manage the paxmart Postgres cluster.")
    parser.add_argument("command", choices=("start", "stop", "status"))
    args = parser.parse_args(argv)
    setup_logging()
    settings = load_settings()
    try:
        if args.command == "start":
            return _start_command(settings)
        if args.command == "stop":
            print("Postgres stopped" if stop_cluster(settings) else "Postgres was not running")
            return 0
        running, line = cluster_status(settings)
        print(line)
        return 0 if running else 3
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
