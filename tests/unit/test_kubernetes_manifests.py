"""Offline checks of deploy/kubernetes against the code and docker-compose.yml.

Every overlay is rendered with `kubectl kustomize` (kubectl v1.32 is in the base image;
without it the tests skip, and under CI=true they fail) and each object validated, strictly,
against the Kubernetes JSON schemas that kubernetes-validate bundles (no network). Then:
the containers run the compose file's images, commands and ports; every component has
probes on endpoints its app really serves, resources, credentials from Secrets; only the
gateway is reachable from outside; migrations run before the services; and every
environment variable the code reads is set for each component that reads it, the set of
variables being read out of the source itself (a new variable fails here until the
manifests set it, or OPTIONAL says why its default is safe in a cluster).
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from paxkit import config
from paxkit.auth import OPEN_ENDPOINTS
from paxkit.bootstrap import bootstrap
from paxkit.config import REPO_ROOT, stack_config
from paxkit.paxos import DEFAULT_ACCEPTORS
from paxkit.web import create_app

pytestmark = pytest.mark.unit

Docs = tuple[dict[str, Any], ...]  # the objects one kustomization renders

KUBECTL = Path("/usr/bin/kubectl")
KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "ha")
TARGETS = {"base": KUBERNETES / "base", **{o: KUBERNETES / "overlays" / o for o in OVERLAYS}}
# The API version the manifests are written for (the base image's kubectl).
KUBERNETES_VERSION = "1.32.0"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

COMPONENTS = stack_config().names
ACCEPTORS = config.acceptor_names(DEFAULT_ACCEPTORS)
DATABASES = (*COMPONENTS, *ACCEPTORS)
PUBLIC = "gateway"
DATASTORES = {"postgres": "pg-", "redis": "redis", "rabbitmq": "rabbitmq"}
CREDENTIALS_SECRET = "paxmart-credentials"
DATABASES_SECRET = "paxmart-databases"
BROKERS_SECRET = "paxmart-brokers"
CREDENTIALS = ("PAXMART_ADMIN_TOKEN", "PAXMART_SERVICE_TOKEN")
SECRET_NAMES = re.compile(r"(_TOKEN|_KEY|PASSWORD|_DB_URL|_AMQP_URL|_REDIS_URL)$")

# The code reads these, and their defaults are right in a cluster, so the manifests may
# leave them unset. A variable the code reads that is neither set nor listed here fails
# test_every_variable_the_code_reads_is_set_where_it_is_read: set it in
# deploy/kubernetes (base/config.yaml for every process, or the component's own file),
# or add it here with the reason its default is safe.
OPTIONAL: dict[str, str] = {
    "PAXMART_STACK_FILE": "the image's deploy/stack.toml",
    "PAXMART_STATE_DIR": "the image sets /var/lib/paxmart (an emptyDir in every pod)",
    "PAXMART_PG_HOST": "only builds default DSNs; every DSN is set from paxmart-databases",
    "PAXMART_PG_PORT": "only builds default DSNs",
    "PAXMART_PG_USER": "only builds default DSNs",
    "PAXMART_DB_PREFIX": "only builds default DSNs and the default namespace `paxmart`",
    "PAXMART_MQ_NAMESPACE": "`paxmart`: one deployment per broker (set it to share one)",
    "PAXMART_PAXOS_ACCEPTORS": "3, the three acceptor DSNs the coordinator is given",
    "PAXMART_MESSAGE_CONSUMERS": "derived from deploy/stack.toml",
    "PAXMART_RETENTION_S": "a week, the documented horizon",
    "PAXMART_RETENTION_INTERVAL_S": "a tuning knob",
    "PAXMART_HTTP_TIMEOUT_S": "a tuning knob",
    "PAXMART_BRANCH_TIMEOUT_S": "a tuning knob",
    "PAXMART_LOCK_TIMEOUT_MS": "a tuning knob",
    "PAXMART_RECOVERY_INTERVAL_S": "a tuning knob",
    "PAXMART_RECOVERY_HORIZON_S": "a tuning knob",
    "PAXMART_TXN_TIMEOUT_S": "a tuning knob",
    "PAXMART_MSG_RESEND_S": "a tuning knob",
    "PAXMART_PRICE_TTL_S": "a tuning knob",
    "PAXMART_ACCEPTOR_TIMEOUT_S": "a tuning knob",
    "PAXMART_MAX_BODY_BYTES": "the contract's 1 MiB",
    "PAXMART_RATELIMIT_FAILURE_MODE": "open, the documented behaviour",
    "PAXMART_GATEWAY_REDIS_TIMEOUT_S": "a tuning knob",
    "PAXMART_CACHE_OWN_READS_S": "a tuning knob",
    "PAXMART_NOTIFY_SCHEDULE_S": "a tuning knob",
    "PAXMART_NOTIFY_ALLOWED_HOSTS": "loopback only: a notify_url elsewhere is refused",
    "PAXMART_NAIVE_MODE": "off: the unsafe benchmark baseline stays refused",
    "PAXMART_3PC_MODE": "off: the mode unsafe under partition stays refused",
    "PAXMART_3PC_UNCERTAIN_TIMEOUT_S": "used only with PAXMART_3PC_MODE",
    "PAXMART_3PC_PRECOMMIT_TIMEOUT_S": "used only with PAXMART_3PC_MODE",
    "PAXMART_WEB_WORKERS": "one gunicorn worker per pod: scale with replicas",
    "PAXMART_WEB_THREADS": "32 threads, the measured setting",
    "PAXMART_AMQP_DELIVERY_LIMIT": "its default; the ha overlay sets it for quorum queues",
}
# Per-name families of paxkit/config.py (f"PAXMART_{name.upper()}_<suffix>").
FAMILIES = {"_PORT", "_URL", "_DB_URL"}
OPTIONAL_FAMILIES = {"_PORT": "the bind address is in the command; the URLs are set"}


# ---------------------------------------------------------------- rendering


def kubectl() -> str:
    """The kubectl that renders kustomizations; missing: skip, or fail under CI=true."""
    found = str(KUBECTL) if KUBECTL.exists() else shutil.which("kubectl")
    if found:
        return found
    message = f"{KUBECTL} is missing (kubectl v1.32, in the base image): cannot render {KUBERNETES}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@cache
def _render(target: str) -> Docs:
    done = subprocess.run(
        [kubectl(), "kustomize", str(TARGETS[target])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {TARGETS[target]}:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(target: str) -> Docs:
    kubectl()
    return _render(target)


def of_kind(docs: Docs, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@dataclass(frozen=True)
class Container:
    """One container of a paxmart Deployment, with what it sees in its environment."""

    deployment: str
    component: str
    process: str  # web | worker
    spec: dict[str, Any]
    init: tuple[dict[str, Any], ...]  # its initContainers
    env: dict[str, dict[str, Any]]  # name -> the env entry ({"value"} or {"valueFrom"})


def config_maps(docs: Docs) -> dict[str, dict[str, str]]:
    return {name: cm.get("data", {}) for name, cm in of_kind(docs, "ConfigMap").items()}


def environment(spec: dict[str, Any], maps: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Every name a container's environment has: envFrom config maps, then env."""
    env: dict[str, Any] = {}
    for source in spec.get("envFrom", []):
        assert "configMapRef" in source, f"{spec['name']}: envFrom only from config maps"
        for key, value in maps[source["configMapRef"]["name"]].items():
            env[key] = {"value": value}
    for entry in spec.get("env", []):
        env[entry["name"]] = entry
    return env


def containers(docs: Docs) -> Iterator[Container]:
    maps = config_maps(docs)
    for name, deployment in of_kind(docs, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pod = deployment["spec"]["template"]["spec"]
        assert len(pod["containers"]) == 1, f"{name}: one container per pod"
        spec = pod["containers"][0]
        process = labels["paxmart.io/process"]
        assert spec["name"] == process, name
        init = tuple(pod.get("initContainers", []))
        yield Container(
            name,
            labels["app.kubernetes.io/component"],
            process,
            spec,
            init,
            environment(spec, maps),
        )


def secret_ref(entry: dict[str, Any]) -> tuple[str, str] | None:
    ref = entry.get("valueFrom", {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


def from_secret(entry: dict[str, Any], secret: str, key: str, docs: Docs) -> bool:
    """True when the entry takes `key` of the Secret `secret` (generated: with its hash)."""
    ref = secret_ref(entry)
    return ref is not None and ref[1] == key and generated_name(ref[0], docs) == secret


def generated_name(name: str, docs: Docs) -> str:
    """A Secret's name without the hash a secretGenerator adds (the overlay's own Secrets)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name) if name in of_kind(docs, "Secret") else name


def owned_databases(component: str | None) -> set[str]:
    """A component's containers hold its own database (the coordinator's also the Paxos
    acceptors'); the migrator (no component) holds them all."""
    if component is None:
        return set(DATABASES)
    return {component, *ACCEPTORS} if component == "coordinator" else {component}


def db_key(database: str) -> str:
    return f"PAXMART_{database.upper()}_DB_URL"


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


def words(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value or []]


# ---------------------------------------------------------------- schema


def test_the_validator_runs_offline_and_rejects_what_the_schema_does_not_allow():
    """kubernetes-validate's bundled schemas are there for our version, and strict mode
    catches a misspelt field (a check that would pass anything is no check)."""
    good = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}]},
    }
    kubernetes_validate.validate(good, KUBERNETES_VERSION, strict=True)
    bad = {**good, "spec": {"ports": [{"prot": 80}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_object_renders_and_validates_against_the_kubernetes_schemas(target):
    docs = render(target)
    assert docs, f"{target} renders nothing"
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']} {where}: {err.message}")
    assert not errors, "\n".join(errors)


# ---------------------------------------------------------------- the same as compose


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_runs_the_compose_image_command_and_port(overlay):
    services = compose_services()
    docs = render(overlay)
    deployments = of_kind(docs, "Deployment")
    ports = {c.name: c.default_port for c in stack_config().components}
    for component in COMPONENTS:
        for name, process in ((component, "web"), (f"{component}-worker", "worker")):
            assert name in deployments, f"{overlay}: no Deployment {name}"
            (spec,) = deployments[name]["spec"]["template"]["spec"]["containers"]
            assert spec["image"] == services[name]["image"], name
            assert spec["command"] == words(services[name]["command"]), name
            assert "args" not in spec, name
            if process == "web":
                assert spec["ports"] == [{"name": "http", "containerPort": ports[component]}]
                assert f"0.0.0.0:{ports[component]}" in spec["command"]
    (job,) = of_kind(docs, "Job").values()
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["image"] == services["migrate"]["image"]
    assert migrate["command"] == words(services["migrate"]["command"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_reaches_its_web_pods_on_the_compose_port(overlay):
    docs = render(overlay)
    services = of_kind(docs, "Service")
    config_map = config_maps(docs)["paxmart-env"]
    for comp in stack_config().components:
        service = services[comp.name]
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", comp.name
        assert service["spec"]["ports"] == [
            {"name": "http", "port": comp.default_port, "targetPort": "http"}
        ]
        assert service["spec"]["selector"] == {
            "app.kubernetes.io/component": comp.name,
            "paxmart.io/process": "web",
        }
        url = urlsplit(config_map[f"PAXMART_{comp.name.upper()}_URL"])
        assert (url.hostname, url.port) == (comp.name, comp.default_port), comp.name


def test_dev_runs_the_compose_datastores_in_the_cluster():
    services = compose_services()
    docs = render("dev")
    sets = of_kind(docs, "StatefulSet")
    assert set(sets) == set(DATASTORES)
    for name, compose_name in DATASTORES.items():
        (spec,) = sets[name]["spec"]["template"]["spec"]["containers"]
        ours = next(s for n, s in services.items() if n.startswith(compose_name))
        assert spec["image"] == ours["image"], name
        if "command" in ours:
            assert spec["command"] == words(ours["command"]), name
        assert spec["readinessProbe"] and spec["livenessProbe"], name
        assert sets[name]["spec"]["volumeClaimTemplates"], f"{name} keeps its data"
    secrets = {generated_name(n, docs): s for n, s in of_kind(docs, "Secret").items()}
    assert set(secrets) >= {DATABASES_SECRET, BROKERS_SECRET}
    assert CREDENTIALS_SECRET not in secrets, (
        "the credentials have no default: kubectl creates them"
    )
    for key, value in secrets[DATABASES_SECRET].get("data", {}).items():
        assert key in {db_key(d) for d in DATABASES}, key
        assert urlsplit(decode(value)).hostname == "postgres", key
    assert set(secrets[DATABASES_SECRET]["data"]) == {db_key(d) for d in DATABASES}
    brokers = {k: urlsplit(decode(v)) for k, v in secrets[BROKERS_SECRET]["data"].items()}
    assert brokers["PAXMART_REDIS_URL"].hostname == "redis"
    assert brokers["PAXMART_AMQP_URL"].hostname == "rabbitmq"


def decode(value: str) -> str:
    return base64.b64decode(value).decode()


# ---------------------------------------------------------------- probes, resources, secrets


@cache
def served_paths(component: str) -> dict[str, str]:
    """GET path -> endpoint of what the component's web app serves (built offline)."""
    app = create_app(bootstrap(component))
    adapter = app.url_map.bind("probe")
    paths = {}
    for rule in app.url_map.iter_rules():
        if "GET" in (rule.methods or set()) and not rule.arguments:
            paths[rule.rule] = adapter.match(rule.rule, "GET")[0]
    return paths


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_probes_ask_endpoints_the_app_serves_without_a_credential(overlay):
    for c in containers(render(overlay)):
        if c.process != "web":
            continue
        served = served_paths(c.component)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.spec.get(kind)
            assert probe, f"{c.deployment}: no {kind}"
            get = probe["httpGet"]
            assert get["port"] == "http", c.deployment
            assert get["path"] in served, f"{c.deployment} {kind}: {get['path']} is not served"
            assert served[get["path"]] in OPEN_ENDPOINTS | {"readyz"}, (c.deployment, kind)
        assert c.spec["livenessProbe"]["httpGet"]["path"] == "/healthz", c.deployment
    gateway = next(c for c in containers(render(overlay)) if c.deployment == PUBLIC)
    assert gateway.spec["startupProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_probes_run_the_worker_heartbeat_check(overlay):
    for c in containers(render(overlay)):
        if c.process != "worker":
            continue
        for kind in ("readinessProbe", "livenessProbe"):
            command = c.spec[kind]["exec"]["command"]
            assert command == ["python", "-m", "paxkit.heartbeat", c.component], (
                c.deployment,
                kind,
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(overlay):
    for doc in render(overlay):
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for spec in [*pod.get("initContainers", []), *pod["containers"]]:
            resources = spec.get("resources", {})
            for bound in ("requests", "limits"):
                assert set(resources.get(bound, {})) >= {"cpu", "memory"}, (
                    f"{doc['metadata']['name']}/{spec['name']}: no {bound}"
                )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_and_dsns_come_from_secrets_and_each_pod_gets_only_its_own(overlay):
    docs = render(overlay)
    for c in containers(docs):
        for key in CREDENTIALS:
            assert from_secret(c.env.get(key, {}), CREDENTIALS_SECRET, key, docs), (
                f"{c.deployment}: {key} must come from the Secret {CREDENTIALS_SECRET}"
            )
        for key in ("PAXMART_REDIS_URL", "PAXMART_AMQP_URL"):
            assert from_secret(c.env.get(key, {}), BROKERS_SECRET, key, docs), (c.deployment, key)
        inits = [(i["name"], {e["name"]: e for e in i.get("env", [])}) for i in c.init]
        for container, env in [(c.process, c.env), *inits]:
            keys = {k for k in env if k.endswith("_DB_URL")}
            assert keys == {db_key(d) for d in owned_databases(c.component)}, (
                f"{c.deployment}/{container}: databases {sorted(keys)}"
            )
            for key in keys:
                assert from_secret(env[key], DATABASES_SECRET, key, docs), (c.deployment, key)
        for name, entry in c.env.items():
            if SECRET_NAMES.search(name):
                assert secret_ref(entry), f"{c.deployment}: {name} is a secret, not a value"
    signing = "PAXMART_AUTH_SIGNING_KEY"
    for c in containers(docs):
        if c.component == PUBLIC:
            assert from_secret(c.env.get(signing, {}), CREDENTIALS_SECRET, signing, docs)
        else:
            assert signing not in c.env, f"{c.deployment} must not hold the JWT signing key"


# ---------------------------------------------------------------- exposure, start order, scale


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside(overlay):
    docs = render(overlay)
    for name, service in of_kind(docs, "Service").items():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            pod = doc["spec"]["template"]["spec"]
            assert not pod.get("hostNetwork"), doc["metadata"]["name"]
            for spec in pod["containers"]:
                assert all("hostPort" not in p for p in spec.get("ports", [])), spec["name"]
    backends = [
        path["backend"]["service"]
        for ingress in of_kind(docs, "Ingress").values()
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends and all(b == {"name": PUBLIC, "port": {"name": "http"}} for b in backends)
    # The NetworkPolicy exempts exactly the gateway's web pods (labelled public).
    public = {
        name
        for name, d in of_kind(docs, "Deployment").items()
        if "paxmart.io/public" in d["spec"]["template"]["metadata"]["labels"]
    }
    assert public == {PUBLIC}
    for doc in docs:  # the policy admits pods by this label: every pod of ours carries it
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert labels.get("app.kubernetes.io/part-of") == "paxmart", doc["metadata"]["name"]
    (policy,) = of_kind(docs, "NetworkPolicy").values()
    assert {"key": "paxmart.io/public", "operator": "DoesNotExist"} in policy["spec"][
        "podSelector"
    ]["matchExpressions"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migrate_job_runs_first_and_every_pod_waits_for_its_schema(overlay):
    docs = render(overlay)
    (job,) = of_kind(docs, "Job").values()
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    (migrate,) = pod["containers"]
    assert migrate["command"] == ["python", "-m", "paxkit.migrate"]
    (source,) = migrate["envFrom"]
    assert generated_name(source["secretRef"]["name"], docs) == DATABASES_SECRET
    assert "env" not in migrate, "the migrator needs the DSNs and nothing else"
    for c in containers(docs):
        (wait,) = c.init
        assert wait["image"] == c.spec["image"]
        command = wait["command"]
        assert command[:4] == ["python", "-m", "paxkit.migrate", "--wait"], c.deployment
        waited = set(command[4 : command.index("--timeout")])
        assert waited == owned_databases(c.component), c.deployment


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_web_process_has_an_autoscaler_and_no_worker_does(overlay):
    docs = render(overlay)
    targets = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in of_kind(docs, "HorizontalPodAutoscaler").values()
    }
    assert set(targets) == set(COMPONENTS)
    for name, hpa in targets.items():
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"], name
        assert hpa["spec"]["metrics"], name


def test_dev_runs_one_replica_of_everything():
    docs = render("dev")
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            assert doc["spec"]["replicas"] == 1, doc["metadata"]["name"]


def test_ha_spreads_replicas_guards_them_and_keeps_no_store_inside():
    docs = render("ha")
    deployments = of_kind(docs, "Deployment")
    budgets = of_kind(docs, "PodDisruptionBudget")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        assert spec["replicas"] >= 2, name
        if name in hpas:
            assert spec["replicas"] == hpas[name]["spec"]["minReplicas"] >= 2, name
        assert spec["template"]["spec"]["affinity"]["podAntiAffinity"], name
        budget = budgets[name]["spec"]
        assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"], name
        assert budget.get("maxUnavailable", 0) < spec["replicas"], name
    assert set(budgets) == set(deployments)
    assert not of_kind(docs, "StatefulSet"), "ha uses external databases and brokers"
    assert not of_kind(docs, "Secret"), "ha's secrets are the operator's (external stores)"
    env = config_maps(docs)["paxmart-env"]
    assert env["PAXMART_AMQP_QUEUE_TYPE"] == "quorum"
    assert int(env["PAXMART_AMQP_DELIVERY_LIMIT"]) > 0


# ---------------------------------------------------------------- environment variables

READ = re.compile(
    r"(?:_env\w*\(|environ\.get\(|getenv\(|environ\[)\s*[\"'](PAXMART_[A-Z0-9_]+)[\"']"
)
FAMILY = re.compile(r"f[\"']PAXMART_\{name\.upper\(\)\}(_[A-Z0-9_]+)[\"']")
FIELD = re.compile(r"(\w+)=_env\w*\(\s*[\"'](PAXMART_[A-Z0-9_]+)[\"']")
CODE_DIRS = ("paxkit", "gateway", "coordinator", "services")
SERVER_CONFIG = REPO_ROOT / "deploy" / "gunicorn.conf.py"
CONFIG_SOURCE = REPO_ROOT / "paxkit" / "config.py"


def code_files() -> list[Path]:
    return sorted(p for d in CODE_DIRS for p in (REPO_ROOT / d).rglob("*.py"))


def readers_of(path: Path) -> set[str]:
    """The components whose processes run this file's code."""
    parts = path.relative_to(REPO_ROOT).parts
    if parts[0] in ("gateway", "coordinator"):
        return {parts[0]}
    if parts[0] == "services":
        return {parts[1]}
    return set(COMPONENTS)  # paxkit, the one server configuration


def field_users(field: str) -> set[str]:
    """The components whose code uses a Settings field (config.py's own use aside)."""
    use = re.compile(rf"\.{field}\b")
    users: set[str] = set()
    for path in code_files():
        if path != CONFIG_SOURCE and use.search(path.read_text()):
            users |= readers_of(path)
    return users or set(COMPONENTS)


def variables_read() -> dict[str, set[tuple[str, str]]]:
    """Every PAXMART_* variable the deployed code reads -> (component, process) pairs that
    read it. A Settings field's variable counts for the components that use the field."""
    fields = {name: f for f, name in FIELD.findall(CONFIG_SOURCE.read_text())}
    reads: dict[str, set[tuple[str, str]]] = {}
    for path in [*code_files(), SERVER_CONFIG]:
        processes = ("web",) if path == SERVER_CONFIG else ("web", "worker")
        for name in READ.findall(path.read_text()):
            users = field_users(fields[name]) if name in fields else readers_of(path)
            reads.setdefault(name, set()).update((c, p) for c in users for p in processes)
    everyone = {(c, p) for c in COMPONENTS for p in ("web", "worker")}
    for suffix in FAMILY.findall(CONFIG_SOURCE.read_text()):
        names = DATABASES if suffix == "_DB_URL" else COMPONENTS
        for name in names:
            key = f"PAXMART_{name.upper()}{suffix}"
            holders = {
                (c, p) for c, p in everyone if suffix != "_DB_URL" or name in owned_databases(c)
            }
            reads.setdefault(key, set()).update(holders)
    return reads


def optional(name: str) -> bool:
    return name in OPTIONAL or any(
        name == f"PAXMART_{c.upper()}{s}" for s in OPTIONAL_FAMILIES for c in COMPONENTS
    )


def test_the_scan_finds_every_variable_the_settings_ask_for(monkeypatch):
    """The source scan below is complete: load_settings() asks for nothing it misses, and
    config.py has no per-name family this file does not know."""
    asked: set[str] = set()

    class Recorder(dict):
        def get(self, key, default=None):
            asked.add(key)
            return default

    monkeypatch.setattr(config, "os", type("os", (), {"environ": Recorder()}))
    config.load_settings()
    assert set(FAMILY.findall(CONFIG_SOURCE.read_text())) == FAMILIES
    assert asked and asked <= set(variables_read()), asked - set(variables_read())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_the_code_reads_is_set_where_it_is_read(overlay):
    reads = variables_read()
    by_process = {(c.component, c.process): c for c in containers(render(overlay))}
    missing = []
    for name, readers in sorted(reads.items()):
        if optional(name):
            continue
        for reader in sorted(readers):
            if name not in by_process[reader].env:
                missing.append(f"{by_process[reader].deployment}: {name}")
    assert not missing, (
        "set these in deploy/kubernetes, or list the variable in OPTIONAL with the reason "
        "its default is safe in a cluster:\n" + "\n".join(missing)
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_manifests_set_only_variables_the_code_reads(overlay):
    known = set(variables_read())
    for c in containers(render(overlay)):
        unknown = {n for n in c.env if n.startswith("PAXMART_")} - known
        assert not unknown, f"{c.deployment} sets names no code reads: {sorted(unknown)}"


def test_every_optional_variable_is_still_read():
    """An allow-list entry whose variable the code no longer reads is stale."""
    reads = variables_read()
    stale = {n for n in OPTIONAL if n not in reads}
    assert not stale, f"OPTIONAL names variables no code reads: {sorted(stale)}"
