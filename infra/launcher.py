"""Run every paxmart component as supervised processes; used by `make up` and tests.

Each component runs as a web process (gunicorn with deploy/gunicorn.conf.py, serving HTTP
only) named after the component, and a worker process (`python -m paxkit.worker`) named
`<component>-worker` that runs its background work. Each process runs in its own process
group, so stopping or killing one reaches all of its children. A supervision thread
restarts a process that died while it was supposed to run, with exponential backoff.

`kill(name)` simulates a crash and lets the supervisor restart the process;
`kill(name, restart=False)` keeps it down until `restart(name)` brings it back.
`add_worker(component)` starts one more worker instance of a component beside its first.

With `scale` N > 1 (`make up SCALE=N`, or `scale` in deploy/stack.toml) every component runs
N web processes `<name>-1..N`, each on a port of its own, and N workers `<name>-worker-1..N`;
one supervised HAProxy process (`haproxy`, infra/balancer.py) listens on the components'
public ports in front of the instances. Scale 1 is one web and one worker per component on
the public port itself, with no balancer.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType

import psycopg2
import requests

from infra.balancer import (
    BALANCER,
    DEFAULT_PORT_STEP,
    Backend,
    BalancerError,
    Instance,
    check_command,
    find_haproxy,
    haproxy_command,
    haproxy_config,
    instance_port,
)
from infra.deps import ensure_rabbitmq, ensure_redis
from infra.pgcluster import ClusterError, check_server, ensure_cluster
from infra.util import is_loopback, port_open, setup_logging, tail, wait_until
from paxkit.config import REPO_ROOT, Settings, load_settings, stack_config
from paxkit.migrate import migrate_all

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
HEALTH_PATH = "/healthz"
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
KILL_GRACE_S = 5.0
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
TICK_S = 0.2
SERVER_CONFIG = REPO_ROOT / "deploy" / "gunicorn.conf.py"
WORKER_SUFFIX = "-worker"
# gunicorn workers and threads per web process (PAXMART_WEB_WORKERS / _THREADS).
WEB_WORKERS = 1
WEB_THREADS = 32
START_MARK = "=== "
# One admin token and one service credential for the whole stack, handed to every process.
CREDENTIALS = ("PAXMART_ADMIN_TOKEN", "PAXMART_SERVICE_TOKEN", "PAXMART_AUTH_SIGNING_KEY")
CREDENTIALS_FILE = "credentials.env"
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*$", re.MULTILINE)


class StackError(RuntimeError):
    """A component could not be started or did not become healthy."""


@dataclass(frozen=True)
class Component:
    """What the launcher runs for one component: its web app and, if it has one, its worker."""

    name: str
    wsgi: str
    default_port: int
    worker: bool = False


def stack_components() -> tuple[Component, ...]:
    """Every component of deploy/stack.toml, each with its web and its worker process."""
    return tuple(
        Component(entry.name, web_app(entry.name), entry.default_port, worker=True)
        for entry in stack_config().components
    )


def web_app(name: str) -> str:
    """The WSGI app gunicorn loads for a stack component."""
    return f"paxkit.web:serve('{name}')"


def web_command(python: str, bind: str, wsgi: str) -> list[str]:
    """A web process: gunicorn with the one server configuration."""
    return [python, "-m", "gunicorn", "-c", str(SERVER_CONFIG), "--bind", bind, wsgi]


def worker_command(python: str, name: str) -> list[str]:
    return [python, "-m", "paxkit.worker", name]


@dataclass
class _Proc:
    """One process of a component (its web or its worker), or the balancer, and its
    supervision state."""

    name: str
    component: Component
    port: int | None
    log_file: Path
    kind: str = "web"  # web, worker or balancer
    popen: subprocess.Popen[bytes] | None = None
    wanted: bool = False
    crashes: int = 0
    started_at: float = 0.0
    restart_at: float | None = None

    @property
    def is_worker(self) -> bool:
        return self.kind == "worker"

    @property
    def is_balancer(self) -> bool:
        return self.kind == "balancer"

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "is running"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _since_start(log_file: Path) -> str:
    """The log lines written since the process's latest start."""
    text = tail(log_file, lines=400)
    return text[text.rfind(START_MARK) :] if START_MARK in text else text


def _readiness(proc: _Proc) -> str:
    if proc.is_balancer:
        return "listening on every public port"
    return "running its work" if proc.is_worker else f"answering {HEALTH_PATH}"


def _worker_running(proc: _Proc) -> bool:
    """A worker is ready once it logged that its background work started."""
    return f"worker of {proc.component.name} runs" in _since_start(proc.log_file)


def _first_error(log_file: Path) -> str:
    """The first exception line logged since the component's latest start, if any."""
    match = ERROR_LINE.search(_since_start(log_file))
    return f"first error: {match.group(0).strip()}\n" if match else ""


def _component_port(component: Component, env: Mapping[str, str]) -> int:
    """PAXMART_<NAME>_PORT from the stack's env, else the process env, else the default."""
    key = f"PAXMART_{component.name.upper()}_PORT"
    return int(env.get(key) or os.environ.get(key) or component.default_port)


def stack_scale(env: Mapping[str, str] = os.environ) -> int:
    """Instances per component: PAXMART_SCALE, else `scale` in deploy/stack.toml (1)."""
    scale = int(env.get("PAXMART_SCALE") or stack_config().scale)
    if scale < 1:
        raise StackError(f"scale must be at least 1, not {scale}")
    return scale


def _port_step(env: Mapping[str, str]) -> int:
    """PAXMART_SCALE_PORT_STEP: instance i of a component on port P listens on P + step * i."""
    return int(env.get("PAXMART_SCALE_PORT_STEP") or DEFAULT_PORT_STEP)


class Stack:
    """A set of supervised gunicorn processes, one per component."""

    def __init__(
        self,
        settings_env: Mapping[str, str],
        log_dir: Path,
        components: Sequence[Component] | None = None,
        workers: int = WEB_WORKERS,
        threads: int = WEB_THREADS,
        *,
        supervise: bool = True,
        python: str = sys.executable,
        ready_timeout: float = READY_TIMEOUT_S,
        component_env: Mapping[str, Mapping[str, str]] | None = None,
        scale: int = 1,
        config_dir: Path | None = None,
    ) -> None:
        if scale < 1:
            raise StackError(f"scale must be at least 1, not {scale}")
        self._env = dict(settings_env)
        self._scale = scale
        # Where a scaled stack writes its haproxy.cfg (the state dir; by default the log
        # dir's parent).
        self._config_dir = Path(config_dir) if config_dir else Path(log_dir).parent
        # Per component, what its processes (web and worker) get on top of settings_env.
        self._component_env = {name: dict(env) for name, env in (component_env or {}).items()}
        self._log_dir = Path(log_dir)
        self._workers = workers
        self._threads = threads
        self._supervise = supervise
        self._python = python
        self._ready_timeout = ready_timeout
        self._procs: dict[str, _Proc] = {}
        # Each component's public port: its web process's at scale 1, else the balancer's.
        self._public: dict[str, int] = {}
        for c in stack_components() if components is None else components:
            self._public[c.name] = _component_port(c, self._env)
            self._add_component(c)
        if scale > 1:
            self._procs[BALANCER] = _Proc(
                BALANCER,
                Component(BALANCER, "", 0),
                None,
                self._log_dir / f"{BALANCER}.log",
                kind="balancer",
            )
        self._lock = threading.RLock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticks = 0
        self._started = False

    def _add_component(self, c: Component) -> None:
        """The component's processes: at scale 1 `<name>` and `<name>-worker`, else
        `<name>-1..N` on their own ports and `<name>-worker-1..N`."""
        public = self._public[c.name]
        if self._scale == 1:
            webs = [(c.name, public)]
            workers = [c.name + WORKER_SUFFIX]
        else:
            step = _port_step(self._env)
            numbers = range(1, self._scale + 1)
            webs = [(f"{c.name}-{i}", instance_port(public, i, step)) for i in numbers]
            workers = [f"{c.name}{WORKER_SUFFIX}-{i}" for i in numbers]
        for name, port in webs:
            self._procs[name] = _Proc(name, c, port, self._log_dir / f"{name}.log")
        if c.worker:
            for name in workers:
                log_file = self._log_dir / f"{name}.log"
                self._procs[name] = _Proc(name, c, None, log_file, kind="worker")

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def names(self) -> list[str]:
        """Every process: a component's web process has its name, its worker `<name>-worker`."""
        return list(self._procs)

    @property
    def components(self) -> list[str]:
        """The components, each reached at `url(name)` (its public port)."""
        return list(self._public)

    @property
    def scale(self) -> int:
        return self._scale

    def instances(self, component: str) -> list[str]:
        """The component's web processes (one at scale 1: the component's own name)."""
        return [
            p.name
            for p in self._procs.values()
            if p.kind == "web" and p.component.name == component
        ]

    def workers_of(self, component: str) -> list[str]:
        """The component's worker processes."""
        return [
            p.name for p in self._procs.values() if p.is_worker and p.component.name == component
        ]

    @property
    def balancer_config(self) -> Path:
        """The haproxy.cfg a scaled stack runs its balancer on."""
        return self._config_dir / "haproxy.cfg"

    @property
    def supervisor_ticks(self) -> int:
        """Completed supervision passes; lets tests wait for the supervisor to have looked."""
        return self._ticks

    def port(self, name: str) -> int:
        """A component's public port, or one web instance's own."""
        if name in self._public:
            return self._public[name]
        port = self._proc(name).port
        if port is None:
            raise StackError(f"{name} serves no HTTP")
        return port

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.port(name)}"

    def log_file(self, name: str) -> Path:
        return self._proc(name).log_file

    def pid(self, name: str) -> int | None:
        """PID of the process (a web process's gunicorn master) while it runs."""
        with self._lock:
            proc = self._proc(name)
            return proc.popen.pid if proc.popen is not None and proc.alive else None

    def process_group(self, name: str) -> list[int]:
        """Live processes (master and workers) of the component's latest process group."""
        proc = self._proc(name)
        return group_members(proc.popen.pid) if proc.popen is not None else []

    def is_running(self, name: str) -> bool:
        with self._lock:
            return self._proc(name).alive

    def start(self) -> None:
        """Start every component and wait until each answers /healthz; then supervise."""
        if self._started:
            raise StackError("stack already started")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._require_free_ports()
        if self._scale > 1:
            self._write_balancer_config()
        self._started = True
        atexit.register(self.stop)
        self._fresh_metrics_dirs()
        try:
            deadline = time.monotonic() + self._ready_timeout
            # The balancer last, once every instance answers: HAProxy counts a server as up
            # until its first check fails, so it never sees one that is still starting.
            for balancers in (False, True):
                procs = [p for p in self._procs.values() if p.is_balancer == balancers]
                with self._lock:
                    for proc in procs:
                        self._spawn(proc)
                for proc in procs:
                    self.wait_ready(proc.name, max(0.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        if self._supervise:
            self._thread = threading.Thread(
                target=self._supervise_loop, name="paxmart-supervisor", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop supervision, SIGTERM every process group, SIGKILL what outlives the grace."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_GRACE_S)
            self._thread = None
        atexit.unregister(self.stop)
        with self._lock:
            for proc in self._procs.values():
                proc.wanted = False
        self._terminate(list(self._procs.values()))

    def kill(self, name: str, restart: bool = True) -> None:
        """SIGKILL the component's whole process group, like a crash.

        With restart=True the supervisor (when supervise=True) brings it back after its
        backoff; with restart=False it stays down until `restart(name)`.
        """
        with self._lock:
            proc = self._proc(name)
            proc.wanted = proc.wanted and restart
            proc.restart_at = None
            if proc.popen is None:
                return
            pgid = proc.popen.pid
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=KILL_GRACE_S)
        # Dead once the whole group is: a gunicorn worker outliving its master for a moment
        # would still take connections on its listening socket, and drop them.
        wait_until(lambda: not group_members(pgid), KILL_GRACE_S, 0.01)

    def add_worker(self, component: str, timeout: float | None = None) -> str:
        """Start one more worker process of `component` beside its others (another instance
        of its background work, e.g. a second coordinator taking over what the first began),
        supervised like them; waits until it runs and returns its name, `<component>-worker-<n>`
        (kill and restart take it like any other)."""
        with self._lock:
            web = self._proc(self.instances(component)[0])
            siblings = [
                p for p in self._procs.values() if p.is_worker and p.component == web.component
            ]
            name = f"{component}{WORKER_SUFFIX}-{len(siblings) + 1}"
            log_file = self._log_dir / f"{name}.log"
            proc = _Proc(name, web.component, None, log_file, kind="worker")
            self._procs[name] = proc
            self._spawn(proc)
        self.wait_ready(name, timeout)
        return name

    def restart(self, name: str, timeout: float | None = None) -> None:
        """Stop the component gracefully (if running), start it again and wait until healthy."""
        with self._lock:
            proc = self._proc(name)
            proc.wanted = False
        self._terminate([proc])
        with self._lock:
            proc.crashes = 0
            self._spawn(proc)
        self.wait_ready(name, timeout)

    def wait_ready(self, name: str, timeout: float | None = None) -> None:
        """Poll until the process is ready (a web process answers /healthz, a worker logged
        that its work runs); StackError on timeout or exit."""
        proc = self._proc(name)
        limit = self._ready_timeout if timeout is None else timeout
        if not wait_until(lambda: self._ready(proc), limit, 0.1):
            raise StackError(
                f"paxmart-{name} was not {_readiness(proc)} within {limit:.0f}s; "
                f"{_first_error(proc.log_file)}"
                f"last lines of {proc.log_file}:\n{tail(proc.log_file)}"
            )

    def _proc(self, name: str) -> _Proc:
        try:
            return self._procs[name]
        except KeyError:
            raise StackError(f"unknown component {name!r}; known: {self.names}") from None

    def _ports(self) -> dict[str, int]:
        """Every port the stack listens on, by who listens."""
        ports = {p.name: p.port for p in self._procs.values() if p.port is not None}
        if self._scale > 1:
            ports.update({f"{BALANCER} for {name}": port for name, port in self._public.items()})
        return ports

    def _require_free_ports(self) -> None:
        busy = [f"{name} ({port})" for name, port in self._ports().items() if port_open(HOST, port)]
        if busy:
            raise StackError(
                f"ports already in use for: {', '.join(busy)}; is another paxmart running? "
                "Stop it or set PAXMART_<NAME>_PORT"
            )

    def _backends(self) -> list[Backend]:
        return [
            Backend(
                name,
                self._public[name],
                tuple(Instance(i, self.port(i)) for i in self.instances(name)),
                HEALTH_PATH,
            )
            for name in self._public
        ]

    def _write_balancer_config(self) -> None:
        """haproxy.cfg for the stack's instances, checked by haproxy before it is used."""
        try:
            binary = find_haproxy()
        except BalancerError as exc:
            raise StackError(str(exc)) from None
        self._config_dir.mkdir(parents=True, exist_ok=True)
        self.balancer_config.write_text(haproxy_config(self._backends(), HOST))
        checked = subprocess.run(
            check_command(binary, self.balancer_config),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if checked.returncode != 0:
            raise StackError(f"haproxy refused {self.balancer_config}: {checked.stderr.strip()}")

    def _command(self, proc: _Proc) -> list[str]:
        if proc.is_balancer:
            return haproxy_command(find_haproxy(), self.balancer_config)
        if proc.is_worker:
            return worker_command(self._python, proc.component.name)
        return web_command(self._python, f"{HOST}:{proc.port}", proc.component.wsgi)

    def _process_env(self, proc: _Proc) -> dict[str, str]:
        return {
            "PAXMART_WEB_WORKERS": str(self._workers),
            "PAXMART_WEB_THREADS": str(self._threads),
            # A component's web and worker processes add up their metrics in one folder.
            "PROMETHEUS_MULTIPROC_DIR": str(self._metrics_dir(proc.component.name)),
        }

    def _spawn(self, proc: _Proc) -> None:
        """Start the component's gunicorn in a new session; caller holds the lock."""
        if proc.popen is not None:
            _signal_group(proc.popen.pid, signal.SIGKILL)
        own = self._component_env.get(proc.component.name, {})
        env = {**os.environ, **self._env, **own, "PYTHONUNBUFFERED": "1", **self._process_env(proc)}
        stamp = datetime.now().isoformat(timespec="seconds")
        with proc.log_file.open("ab") as out:
            where = f"on port {proc.port}" if proc.port is not None else f"as a {proc.kind}"
            out.write(f"\n{START_MARK}{stamp} starting paxmart-{proc.name} {where}\n".encode())
            out.flush()
            proc.popen = subprocess.Popen(
                self._command(proc),
                env=env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc.wanted = True
        proc.started_at = time.monotonic()
        proc.restart_at = None

    def _metrics_dir(self, name: str) -> Path:
        return self._log_dir / "metrics" / name

    def _fresh_metrics_dirs(self) -> None:
        """Emptied when the stack starts, so it doesn't count an earlier run's samples; a
        process restarted later keeps the samples of the one it replaces (counters). Every
        instance of a component writes into the component's one folder, so any of them
        answers /metrics with the sum."""
        for name in self.components:
            folder = self._metrics_dir(name)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)

    def _ready(self, proc: _Proc) -> bool:
        with self._lock:
            dead = proc.popen is None or not proc.alive
            coming_back = proc.wanted and self._thread is not None
            if dead and not coming_back:
                code = proc.popen.returncode if proc.popen is not None else None
                raise StackError(
                    f"paxmart-{proc.name} {_exit_reason(code)} before it was {_readiness(proc)} "
                    f"(does `{' '.join(self._command(proc)[1:])}` start?); "
                    f"{_first_error(proc.log_file)}"
                    f"last lines of {proc.log_file}:\n{tail(proc.log_file)}"
                )
        if dead:
            return False
        if proc.is_balancer:
            return all(port_open(HOST, port) for port in self._public.values())
        if proc.is_worker:
            return _worker_running(proc)
        try:
            response = requests.get(f"http://{HOST}:{proc.port}{HEALTH_PATH}", timeout=1)
        except requests.RequestException:
            return False
        return response.status_code == 200

    def _terminate(self, procs: list[_Proc]) -> None:
        """SIGTERM the groups, SIGKILL them after the grace, and wait until they are empty."""
        live = [p for p in procs if p.alive]
        for proc in reversed(live):
            assert proc.popen is not None
            _signal_group(proc.popen.pid, signal.SIGTERM)
        wait_until(lambda: not any(p.alive for p in live), STOP_GRACE_S)
        groups = [p.popen.pid for p in procs if p.popen is not None]
        for pgid in groups:
            if group_members(pgid):
                _signal_group(pgid, signal.SIGKILL)
        for proc in procs:
            if proc.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=KILL_GRACE_S)
        if not wait_until(lambda: not any(group_members(g) for g in groups), KILL_GRACE_S):
            log.error("processes survived SIGKILL: %s", [group_members(g) for g in groups])

    def _supervise_loop(self) -> None:
        while not self._halt.wait(TICK_S):
            try:
                self._supervise_once()
            except Exception:
                log.exception("supervision pass failed")
            self._ticks += 1

    def _supervise_once(self) -> None:
        now = time.monotonic()
        with self._lock:
            for proc in self._procs.values():
                if not proc.wanted or proc.alive:
                    continue
                if proc.restart_at is None:
                    self._schedule_restart(proc, now)
                elif now >= proc.restart_at:
                    self._spawn(proc)
                    log.warning("restarted paxmart-%s (pid %s)", proc.name, self.pid(proc.name))

    def _schedule_restart(self, proc: _Proc, now: float) -> None:
        if now - proc.started_at >= STABLE_AFTER_S:
            proc.crashes = 0
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**proc.crashes)
        proc.crashes += 1
        proc.restart_at = now + delay
        code = proc.popen.returncode if proc.popen is not None else None
        log.warning(
            "paxmart-%s %s unexpectedly; restart #%d in %.1fs (log %s)",
            proc.name,
            _exit_reason(code),
            proc.crashes,
            delay,
            proc.log_file,
        )


class _Shutdown(Exception):
    """Raised by the signal handler to unwind into the stack's cleanup."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Shutdown(signal.Signals(signum).name)


def _ensure_postgres(settings: Settings) -> None:
    if is_loopback(settings.pg_host):
        ensure_cluster(settings)
    else:
        check_server(settings.pg_host, settings.pg_port, settings.pg_user)


def credentials_file(state_dir: Path) -> Path:
    return state_dir / CREDENTIALS_FILE


def _read_credentials(path: Path) -> dict[str, str]:
    """`export NAME=value` lines (the file can be sourced by a shell)."""
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.removeprefix("export ").partition("=")
        if sep and name.strip() in CREDENTIALS and value.strip():
            found[name.strip()] = value.strip()
    return found


def _write_credentials(path: Path, values: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"export {name}={value}\n" for name, value in sorted(values.items()))


def stack_credentials(state_dir: Path, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The stack's admin token and service credential: the environment's when set, else
    the ones stored under the state dir (a restart keeps them), else new ones, stored there."""
    path = credentials_file(state_dir)
    stored = _read_credentials(path)
    chosen = {
        name: environ.get(name) or stored.get(name) or secrets.token_urlsafe(32)
        for name in CREDENTIALS
    }
    kept = {**stored, **{n: v for n, v in chosen.items() if not environ.get(n)}}
    if kept != stored:
        _write_credentials(path, kept)
    return chosen


def _banner(stack: Stack, admin_token: str, state_dir: Path) -> str:
    lines = ["", "paxmart is up", f"  gateway (public entry)  {stack.url('gateway')}"]
    lines += [f"  {name:<22}  {stack.url(name)}" for name in stack.components if name != "gateway"]
    if stack.scale > 1:
        lines += [
            f"  instances               {stack.scale} of each (web and worker), "
            f"behind haproxy ({stack.balancer_config})"
        ]
    lines += [
        f"  logs                    {state_dir / 'logs'}",
        f"  admin token             {admin_token}",
        f"  credentials             {credentials_file(state_dir)} (source it for make load)",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def up(scale: int | None = None) -> int:
    """Start servers, migrate, run the stack in the foreground until SIGINT/SIGTERM."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    settings = load_settings()
    log_dir = settings.state_dir / "logs"
    credentials = stack_credentials(settings.state_dir)
    stack = Stack(
        credentials,
        log_dir,
        scale=scale or stack_scale(),
        config_dir=settings.state_dir,
    )
    try:
        _ensure_postgres(settings)
        ensure_redis(settings)
        ensure_rabbitmq(settings)
        applied = migrate_all(settings)
        log.info("databases migrated (%d new migrations)", sum(map(len, applied.values())))
        stack.start()
        print(_banner(stack, credentials["PAXMART_ADMIN_TOKEN"], settings.state_dir), flush=True)
        while True:
            signal.pause()
    except _Shutdown as exc:
        log.info("%s received, stopping", exc)
    finally:
        stack.stop()
    log.info("stopped")
    return 0


def reset() -> int:
    """Drop and rebuild every database (schema and seed)."""
    settings = load_settings()
    _ensure_postgres(settings)
    for database, versions in migrate_all(settings, reset=True).items():
        log.info("%-12s %s", database, ", ".join(versions) if versions else "up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the paxmart stack locally.")
    parser.add_argument("command", choices=("up", "reset"))
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        help="instances of every component (default: PAXMART_SCALE, else stack.toml's scale)",
    )
    args = parser.parse_args(argv)
    setup_logging()
    try:
        return up(args.scale) if args.command == "up" else reset()
    except (ClusterError, StackError, psycopg2.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
