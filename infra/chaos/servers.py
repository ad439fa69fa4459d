"""The servers a chaos run kills, stops and pauses: all of them its own.

One Postgres cluster per database (so one service's database fails while the others run),
a redis-server and a RabbitMQ node, each on ports and in folders no other server uses.
Nothing here ever signals or controls a process it did not start: Postgres through
`pg_ctl` on its own data folders, Redis and RabbitMQ by the pids of the processes started
here, and `rabbitmqctl` only with `-n` naming this node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from infra.deps import rabbitmq_ok, redis_ok
from infra.pgcluster import ClusterError, ensure_cluster, pg_ctl, stop_cluster
from infra.util import port_open, tail, wait_until
from paxkit.config import REPO_ROOT, Settings

log = logging.getLogger(__name__)

PG_FIRST_PORT = 19540
REDIS_PORT = 16390
AMQP_PORT = 5682
DIST_PORT = 25682
NODE = "paxmart_chaos@localhost"
REDIS_DEADLINE_S = 15.0
RABBIT_DEADLINE_S = 120.0
STOP_DEADLINE_S = 30.0
RABBIT_USER = "rabbitmq"
RABBIT_LIB_BIN = Path("/usr/lib/rabbitmq/bin")


class ServerError(RuntimeError):
    """One of the chaos run's own servers could not be started or controlled."""


def work_dir(state_dir: Path) -> Path:
    """Where a chaos run keeps its servers' folders: as root, under /var/tmp (the
    `postgres` and `rabbitmq` users may not enter the checkout), else in the state dir."""
    if os.geteuid() == 0:
        digest = hashlib.sha1(str(REPO_ROOT).encode()).hexdigest()[:10]
        return Path("/var/tmp") / f"paxmart-chaos-{digest}"
    return state_dir / "chaos"


def _require_free(what: str, port: int) -> None:
    if port_open("127.0.0.1", port):
        raise ServerError(f"port {port} for the chaos {what} is in use; is another chaos running?")


def _end(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group of a server started here, and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_DEADLINE_S)


class PgClusters:
    """One cluster per database, on consecutive ports from `first_port`."""

    def __init__(
        self, base: Settings, names: Sequence[str], parent: Path, first_port: int = PG_FIRST_PORT
    ) -> None:
        self.base = base
        self.parent = parent
        self.ports = {name: first_port + i for i, name in enumerate(names)}

    def settings(self, name: str) -> Settings:
        return dataclasses.replace(self.base, pg_port=self.ports[name])

    def url(self, name: str, cluster: str | None = None) -> str:
        """DSN of database `name`, in its own cluster or in `cluster`'s."""
        s = self.settings(cluster or name)
        return f"postgresql://{s.pg_user}@127.0.0.1:{s.pg_port}/{s.db_prefix}{name}"

    def start_all(self) -> None:
        self.parent.mkdir(parents=True, exist_ok=True)
        self.parent.chmod(0o755)
        for name in self.ports:
            self.start(name)

    def start(self, name: str) -> None:
        ensure_cluster(self.settings(name), name, parent=self.parent)

    def restart_immediate(self, name: str) -> None:
        """A crash and restart: no shutdown checkpoint, crash recovery at start."""
        self._ctl(name, "-m", "immediate", "-w", "-t", "60", "restart")

    def stop(self, name: str) -> None:
        """An operator's stop: sessions are ended, the database goes away until start()."""
        self._ctl(name, "-m", "fast", "-w", "-t", "60", "stop")

    def stop_all(self) -> None:
        for name in self.ports:
            with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                stop_cluster(self.settings(name), name, parent=self.parent)

    def _ctl(self, name: str, *args: str) -> None:
        result = pg_ctl(self.settings(name), *args, name=name, parent=self.parent)
        if result.returncode != 0:
            raise ServerError(f"pg_ctl {' '.join(args)} of {name}: {result.stderr.strip()}")


class OwnRedis:
    """A redis-server that keeps nothing on disk: a restart comes back empty."""

    def __init__(self, folder: Path, port: int = REDIS_PORT) -> None:
        self.folder = folder
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            raise ServerError("the chaos redis-server is not running")
        return self.proc.pid

    def start(self) -> Self:
        _require_free("redis-server", self.port)
        self.folder.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError("redis-server is not installed")
        cmd = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(self.folder)]
        cmd += ["--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(self.answers, REDIS_DEADLINE_S, 0.1):
            raise ServerError(f"redis-server did not answer; {tail(self.folder / 'redis.log')}")
        return self

    def answers(self) -> bool:
        return redis_ok(self.url)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None:
            _end(self.proc, signal.SIGKILL)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            _end(self.proc, signal.SIGTERM)
            self.kill()


@dataclass(frozen=True)
class RabbitPorts:
    amqp: int = AMQP_PORT
    dist: int = DIST_PORT
    node: str = NODE


def _rabbit_tool(name: str) -> str:
    """As root the Debian wrapper (it runs the tool as `rabbitmq`); otherwise the tool itself."""
    if os.geteuid() != 0 and (RABBIT_LIB_BIN / name).is_file():
        return str(RABBIT_LIB_BIN / name)
    binary = shutil.which(name)
    if binary is None:
        raise ServerError(f"{name} is not installed")
    return binary


def _chown_tree(path: Path) -> None:
    """As root the node runs as `rabbitmq`: its folders must be that user's."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(RABBIT_USER)
    for folder, _, files in os.walk(path):
        os.chown(folder, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(Path(folder) / name, user.pw_uid, user.pw_gid)


class OwnRabbit:
    """A RabbitMQ node of its own (name, ports, mnesia, logs, pid file, no plugins)."""

    def __init__(self, folder: Path, ports: RabbitPorts | None = None) -> None:
        self.folder = folder
        self.ports = ports or RabbitPorts()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.ports.amqp}/%2F"

    @property
    def log_file(self) -> Path:
        return self.folder / "server.out"

    def env(self) -> dict[str, str]:
        f = self.folder
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.ports.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.ports.amqp),
            "RABBITMQ_DIST_PORT": str(self.ports.dist),
            "RABBITMQ_MNESIA_BASE": str(f / "mnesia"),
            "RABBITMQ_LOG_BASE": str(f / "log"),
            "RABBITMQ_PID_FILE": str(f / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(f / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(f / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(f / "advanced.config"),
        }

    def start(self) -> OwnRabbit:
        _require_free("RabbitMQ", self.ports.amqp)
        _require_free("RabbitMQ distribution", self.ports.dist)
        for sub in ("mnesia", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "node.pid").unlink(missing_ok=True)
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq.conf").write_text("disk_free_limit.absolute = 50MB\n")
        _chown_tree(self.folder)
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                [_rabbit_tool("rabbitmq-server")],
                env=self.env(),
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_until(self._up, RABBIT_DEADLINE_S, 0.5):
            raise ServerError(f"the chaos RabbitMQ node did not start; {tail(self.log_file)}")
        return self

    def _up(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise ServerError(f"rabbitmq-server exited; {tail(self.log_file)}")
        return rabbitmq_ok(self.url)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """rabbitmqctl on this node only."""
        cmd = [_rabbit_tool("rabbitmqctl"), "-n", self.ports.node, *args]
        return subprocess.run(
            cmd, env=self.env(), capture_output=True, text=True, check=False, timeout=timeout
        )

    def beam_pid(self) -> int | None:
        try:
            return int((self.folder / "node.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """A clean node stop; SIGKILL of what remains after the deadline."""
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ctl("stop", timeout=STOP_DEADLINE_S)
        _end(self.proc, signal.SIGTERM)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the node's VM (by its pid file) and the processes started here."""
        pid = self.beam_pid()
        if self.proc is not None and self.proc.poll() is None and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            _end(self.proc, signal.SIGKILL)
            self.proc = None
        wait_until(lambda: not port_open("127.0.0.1", self.ports.amqp), STOP_DEADLINE_S, 0.2)
