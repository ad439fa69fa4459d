"""Static checks of docker-compose.yml and infra/Dockerfile against paxkit.config.

Docker is not needed: the files are parsed and compared with the component list, the
database list and the environment variables that paxkit/config.py actually reads.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from infra.launcher import HOST, SERVER_CONFIG, Stack, stack_components, web_command, worker_command
from paxkit import config
from paxkit.config import REPO_ROOT, stack_config
from paxkit.paxos import DEFAULT_ACCEPTORS

pytestmark = pytest.mark.unit

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "infra" / "Dockerfile"
CONFIG_SOURCE = REPO_ROOT / "paxkit" / "config.py"
SERVER_SOURCE = SERVER_CONFIG
COMPONENTS = stack_components()
# Mode paxos's acceptors are databases of the coordinator's (it alone calls them).
ACCEPTORS = config.acceptor_names(DEFAULT_ACCEPTORS)
DATABASES = (*stack_config().names, *ACCEPTORS)

# Naming convention of this repo's compose file: the Postgres container of database X.
PG_SERVICE = "pg-{}"
MIGRATE = "migrate"
PUBLISHED = {"gateway"}
# The optional observability profile (test_observability_profile.py checks it).
OBSERVABILITY = {"prometheus", "grafana"}
CONDITIONS = {"service_healthy", "service_completed_successfully"}
ENV_NAME = re.compile(r"PAXMART_[A-Z0-9_]+")
CREDENTIALS = ("PAXMART_ADMIN_TOKEN", "PAXMART_SERVICE_TOKEN", "PAXMART_AUTH_SIGNING_KEY")
# `${NAME:?message}`: taken from the environment, and compose refuses to start without it.
REQUIRED_FROM_ENV = re.compile(r"^\$\{(PAXMART_[A-Z0-9_]+):\?[^}]+\}$")


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def argv(value: Any) -> list[str]:
    """A command / healthcheck test as a list of words (list or shell string form)."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, Any]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short form: no condition at all
        return {name: None for name in deps}
    return deps


def bind_port(service: dict[str, Any]) -> int:
    words = argv(service.get("command"))
    for i, word in enumerate(words):
        if word in ("--bind", "-b") and i + 1 < len(words):
            return int(words[i + 1].rsplit(":", 1)[1])
        if word.startswith("--bind="):
            return int(word.rsplit(":", 1)[1])
    raise AssertionError(f"no --bind in command {words}")


def is_postgres(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).split(":")[0].split("/")[-1] == "postgres"


def python_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services running our code: built here, or running gunicorn / python (migrate and
    every component's web and worker containers)."""
    return {
        name: svc
        for name, svc in services.items()
        if "build" in svc or argv(svc.get("command"))[:1] in (["gunicorn"], ["python"])
    }


def allowed_env_names() -> set[str]:
    """PAXMART_* names paxkit/config.py and the server configuration read, grepped out of
    their source."""
    source = CONFIG_SOURCE.read_text() + SERVER_SOURCE.read_text()
    names = set(re.findall(r"[\"'](PAXMART_[A-Z0-9_]+)[\"']", source))
    suffixes = set(re.findall(r"f[\"']PAXMART_\{name\.upper\(\)\}(_[A-Z0-9_]+)[\"']", source))
    # If config.py grows another per-name pattern, decide here which names it covers.
    assert suffixes == {"_PORT", "_URL", "_DB_URL"}, suffixes
    names |= {f"PAXMART_{c.name.upper()}_PORT" for c in COMPONENTS}
    names |= {f"PAXMART_{c.name.upper()}_URL" for c in COMPONENTS}
    names |= {f"PAXMART_{d.upper()}_DB_URL" for d in DATABASES}
    return names


def dockerfile_instructions() -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


# ---------------------------------------------------------------- components and image


def launcher_words(words: list[str]) -> list[str]:
    """A launcher command as compose writes it: no interpreter path, paths from the repo."""
    if words[1:3] == ["-m", "gunicorn"]:
        words = ["gunicorn", *words[3:]]
    elif words[1:2] == ["-m"]:
        words = ["python", *words[1:]]
    return [
        str(Path(w).relative_to(REPO_ROOT)) if w.startswith(str(REPO_ROOT)) else w for w in words
    ]


def test_compose_and_launcher_run_the_same_processes(services, tmp_path):
    """Every component's web and worker process: the same command in both, with the one
    server configuration; only the bind address differs."""
    stack = Stack({}, tmp_path)
    for comp in COMPONENTS:
        assert comp.name in services, f"component {comp.name} missing from docker-compose.yml"
        web = argv(services[comp.name].get("command"))
        ours = launcher_words(stack._command(stack._proc(comp.name)))
        bind = f"0.0.0.0:{comp.default_port}"
        assert web == launcher_words(web_command("python", bind, comp.wsgi)), comp.name
        assert [w.replace(f"{HOST}:{stack.port(comp.name)}", bind) for w in ours] == web
        worker = f"{comp.name}-worker"
        assert worker in services, f"no worker container for {comp.name}"
        assert argv(services[worker].get("command")) == launcher_words(
            worker_command("python", comp.name)
        )
        assert launcher_words(stack._command(stack._proc(worker))) == argv(
            services[worker].get("command")
        )
        assert bind_port(services[comp.name]) == comp.default_port, comp.name
        assert comp.name in depends_on(services[worker]), f"{worker} must wait for its web"


def test_the_image_runs_the_gateway_web_process_as_compose_does(services):
    cmd = [args for k, args in dockerfile_instructions() if k == "CMD"][-1]
    assert json.loads(cmd) == argv(services["gateway"].get("command"))


def test_every_python_service_uses_the_same_image(services):
    apps = python_services(services)
    expected = {c.name for c in COMPONENTS} | {MIGRATE}
    assert expected <= set(apps), f"not built from our image: {expected - set(apps)}"

    def image_of(svc: dict[str, Any]) -> tuple[Any, Any, Any]:
        build = svc.get("build")
        if isinstance(build, str):
            build = {"context": build}
        build = build or {}
        return build.get("context"), build.get("dockerfile", "Dockerfile"), svc.get("image")

    images = {name: image_of(svc) for name, svc in apps.items()}
    assert len(set(images.values())) == 1, f"Python services differ in image: {images}"
    context, dockerfile, _ = next(iter(images.values()))
    if context is not None:
        assert (REPO_ROOT / context / dockerfile).resolve() == DOCKERFILE.resolve()


def test_migrate_is_a_one_shot_of_paxkit_migrate(services):
    migrate = services[MIGRATE]
    assert argv(migrate.get("command"))[:3] == ["python", "-m", "paxkit.migrate"]
    assert str(migrate.get("restart", "no")) == "no"
    pg = {PG_SERVICE.format(d) for d in DATABASES}
    assert pg <= set(depends_on(migrate)), "migrate must wait for every Postgres"


def owner_of(container: str) -> str | None:
    """The component whose web or worker process a container runs (None: migrate)."""
    name = container.removesuffix("-worker")
    return name if name in stack_config().names else None


def holds_credentials(owner: str | None, database: str) -> bool:
    """A component's containers hold its own database's credentials (the coordinator's
    also the acceptors'); the migrator's (no owner) hold them all."""
    if owner is None or owner == database:
        return True
    return owner == "coordinator" and database in ACCEPTORS


def test_python_services_get_every_component_url_and_only_their_own_database(services):
    """Each service owns its data: a component's containers hold its database's credentials
    alone; only the one-shot migrator holds them all."""
    for name, svc in python_services(services).items():
        env = env_of(svc)
        owner = owner_of(name)
        for database in DATABASES:
            key = f"PAXMART_{database.upper()}_DB_URL"
            if holds_credentials(owner, database):
                assert key in env, (name, database)
            else:
                assert key not in env, f"{name} must not know the {database} database"
        for comp in COMPONENTS:
            url = urlsplit(env.get(f"PAXMART_{comp.name.upper()}_URL", ""))
            assert (url.hostname, url.port) == (comp.name, bind_port(services[comp.name])), (
                f"{name}: PAXMART_{comp.name.upper()}_URL must point at the {comp.name} service"
            )
        for key in ("PAXMART_REDIS_URL", "PAXMART_AMQP_URL", *CREDENTIALS):
            assert env.get(key), f"{name}: {key} not set"
        assert urlsplit(env["PAXMART_REDIS_URL"]).hostname in services
        assert urlsplit(env["PAXMART_AMQP_URL"]).hostname in services


def test_credentials_come_from_the_environment_with_no_default(services):
    """One admin token and one service credential for every process, never a default."""
    for name, svc in python_services(services).items():
        env = env_of(svc)
        for key in CREDENTIALS:
            match = REQUIRED_FROM_ENV.match(env.get(key, ""))
            assert match and match.group(1) == key, f"{name}: {key} must be ${{{key}:?...}}"


def test_app_healthchecks_probe_their_own_healthz(services):
    for comp in COMPONENTS:
        test = " ".join(argv(services[comp.name].get("healthcheck", {}).get("test")))
        assert f"127.0.0.1:{comp.default_port}/healthz" in test, (comp.name, test)


# ---------------------------------------------------------------- Postgres


def test_one_postgres_per_database(services):
    postgres = {name for name, svc in services.items() if is_postgres(svc)}
    assert postgres == {PG_SERVICE.format(d) for d in DATABASES}
    volumes = set()
    for database in DATABASES:
        svc = services[PG_SERVICE.format(database)]
        words = " ".join(argv(svc.get("command")))
        match = re.search(r"max_prepared_transactions=(\d+)", words)
        assert match and int(match.group(1)) > 0, f"{database}: no max_prepared_transactions"
        test = argv(svc.get("healthcheck", {}).get("test"))
        assert test and "pg_isready" in " ".join(test), f"{database}: no pg_isready healthcheck"
        data = [v for v in svc.get("volumes", []) if str(v).endswith(":/var/lib/postgresql/data")]
        assert len(data) == 1, f"{database}: needs one named data volume"
        volumes.add(str(data[0]).split(":")[0])
    assert len(volumes) == len(DATABASES), "each Postgres needs its own volume"


def test_db_urls_point_at_the_matching_postgres(services):
    for name, svc in python_services(services).items():
        env = env_of(svc)
        for database in DATABASES:
            if f"PAXMART_{database.upper()}_DB_URL" not in env:
                continue
            url = urlsplit(env[f"PAXMART_{database.upper()}_DB_URL"])
            host = PG_SERVICE.format(database)
            assert url.hostname == host, f"{name}: {database} DB URL points at {url.hostname}"
            pg_env = env_of(services[host])
            assert url.port in (None, 5432)
            assert url.path.lstrip("/") == pg_env.get("POSTGRES_DB"), (name, database)
            assert url.username == pg_env.get("POSTGRES_USER", "postgres"), (name, database)
            assert url.password == pg_env.get("POSTGRES_PASSWORD"), (name, database)


# ---------------------------------------------------------------- wiring


def test_only_the_gateway_publishes_ports(services):
    """Besides the gateway, only the observability profile's UIs, on loopback alone."""
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published - OBSERVABILITY == PUBLISHED
    for name in published & OBSERVABILITY:
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"]), name
    gateway = stack_config().entry("gateway")
    for port in services["gateway"]["ports"]:
        assert str(port).rsplit(":", 1)[-1].split("/")[0] == str(gateway.default_port)


def test_depends_on_uses_conditions_on_existing_services(services):
    for name, svc in services.items():
        for target, spec in depends_on(svc).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = (spec or {}).get("condition")
            assert condition in CONDITIONS, f"{name} -> {target}: condition {condition!r}"
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {target} to be healthy, but it has no healthcheck"
                )
            else:
                assert str(services[target].get("restart", "no")) == "no", target


def test_call_graph_ordering(services):
    """gateway -> everything; coordinator -> participants; order -> coordinator & co."""
    apps = {c.name for c in COMPONENTS}
    wanted = {
        "gateway": apps - {"gateway"},
        "coordinator": set(stack_config().participants),
        "order": {"coordinator", "inventory", "coupon"},
    }
    for name, targets in wanted.items():
        assert targets <= set(depends_on(services[name])), (name, targets)
    for name in apps:
        assert MIGRATE in depends_on(services[name]), f"{name} must wait for migrate"


def test_depends_on_has_no_cycle(services):
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "active", f"dependency cycle: {' -> '.join([*path, name])}"
        state[name] = "active"
        for target in depends_on(services[name]):
            visit(target, [*path, name])
        state[name] = "done"

    for name in services:
        visit(name, [])


def test_redis_and_rabbitmq_have_healthchecks(services):
    for name, probe in (("redis", "redis-cli ping"), ("rabbitmq", "rabbitmq-diagnostics")):
        assert name in services
        assert probe in " ".join(argv(services[name].get("healthcheck", {}).get("test")))


# ---------------------------------------------------------------- environment names


def test_env_names_grep_matches_what_config_reads(monkeypatch):
    """The grep below is complete: load_settings() asks for nothing it misses."""
    asked: set[str] = set()

    class Recorder(dict):
        def get(self, key, default=None):
            asked.add(key)
            return default

        def __getitem__(self, key):
            asked.add(key)
            raise KeyError(key)

    monkeypatch.setattr(config, "os", SimpleNamespace(environ=Recorder()))
    config.load_settings()
    for comp in COMPONENTS:
        config.component_port(comp.name)
    assert "PAXMART_STACK_FILE" in asked
    assert asked
    assert asked <= allowed_env_names(), asked - allowed_env_names()


def test_compose_uses_only_env_names_config_reads():
    used = set(ENV_NAME.findall(COMPOSE_FILE.read_text()))
    unknown = used - allowed_env_names()
    assert not unknown, f"docker-compose.yml sets names paxkit/config.py never reads: {unknown}"


def test_dockerfile_uses_only_env_names_config_reads():
    unknown = set(ENV_NAME.findall(DOCKERFILE.read_text())) - allowed_env_names()
    assert not unknown, f"infra/Dockerfile sets names paxkit/config.py never reads: {unknown}"


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_copies_every_top_level_package():
    sources: set[str] = set()
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources |= {w.rstrip("/") for w in words[:-1]}
    packages = {
        p.name
        for p in REPO_ROOT.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name != "tests"
    }
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    find = pyproject.get("tool", {}).get("setuptools", {}).get("packages", {})
    include = find.get("find", {}).get("include", []) if isinstance(find, dict) else find
    packages |= {pattern.rstrip("*") for pattern in include}
    assert packages, "found no top-level package"
    missing = packages - sources
    assert not missing, f"infra/Dockerfile does not COPY {missing}"
    assert "pyproject.toml" in sources


def test_dockerfile_shape():
    instructions = list(dockerfile_instructions())
    keywords = [k for k, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for k, args in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert any(k == "RUN" and "pip install ." in args for k, args in instructions)
    assert "HEALTHCHECK" in keywords
    cmd = [args for k, args in instructions if k == "CMD"]
    assert cmd and "gunicorn" in cmd[-1]
