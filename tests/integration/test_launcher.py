"""The launcher's Stack starts, supervises and stops gunicorn process groups for real."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from infra.launcher import Component, Stack, StackError, group_members
from infra.util import wait_until
from paxkit.config import REPO_ROOT

pytestmark = pytest.mark.integration

FIXTURE_ENV = {"PYTHONPATH": str(REPO_ROOT / "tests" / "integration")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports_from(count: int, tries: int = 50) -> int:
    """A port such that it and the `count - 1` after it are free on loopback."""
    for _ in range(tries):
        first = _free_port()
        if all(_bindable(first + i) for i in range(1, count)):
            return first
    raise AssertionError(f"no {count} consecutive free ports in {tries} tries")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _health(stack: Stack, name: str) -> dict[str, object]:
    response = requests.get(f"{stack.url(name)}/healthz", timeout=2)
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[Stack]:
    component = Component("fixture", "fixture_app:create_app()", _free_port())
    stack = Stack(FIXTURE_ENV, tmp_path / "logs", [component], workers=2, threads=2)
    stack.start()
    yield stack
    stack.stop()


def test_start_serves_healthz(stack: Stack) -> None:
    body = _health(stack, "fixture")
    assert body["status"] == "ok"
    assert body["ppid"] == stack.pid("fixture")
    assert stack.log_file("fixture").exists()


def test_supervisor_restarts_a_killed_component(stack: Stack) -> None:
    old_pid = stack.pid("fixture")

    stack.kill("fixture")

    assert wait_until(lambda: stack.pid("fixture") not in (None, old_pid), 15)
    stack.wait_ready("fixture", 15)
    assert _health(stack, "fixture")["ppid"] == stack.pid("fixture")


def test_kill_without_restart_stays_down_until_restart(stack: Stack) -> None:
    stack.kill("fixture", restart=False)
    ticks = stack.supervisor_ticks
    assert wait_until(lambda: stack.supervisor_ticks >= ticks + 10, 10)
    assert not stack.is_running("fixture")

    stack.restart("fixture", timeout=15)

    assert stack.is_running("fixture")
    assert _health(stack, "fixture")["status"] == "ok"


def test_stop_leaves_no_process_of_the_group(stack: Stack) -> None:
    pgid = stack.pid("fixture")
    assert pgid is not None
    # The gunicorn master and its two workers (spawned a moment apart).
    assert wait_until(lambda: len(group_members(pgid)) == 3, 10)

    stack.stop()

    assert group_members(pgid) == []
    assert not stack.is_running("fixture")


def test_a_component_gets_its_own_env_on_top_of_the_stacks(tmp_path: Path) -> None:
    components = [Component(n, "fixture_app:create_app()", _free_port()) for n in ("one", "two")]
    env = {**FIXTURE_ENV, "PAXMART_FIXTURE_MARK": "stack"}
    own = {"one": {"PAXMART_FIXTURE_MARK": "own"}}
    with Stack(env, tmp_path / "logs", components, workers=1, threads=2, component_env=own) as s:
        marks = {
            name: requests.get(f"{s.url(name)}/env/PAXMART_FIXTURE_MARK", timeout=2).json()
            for name in ("one", "two")
        }
    assert marks == {"one": {"value": "own"}, "two": {"value": "stack"}}


def test_start_reports_an_app_that_does_not_import(tmp_path: Path) -> None:
    broken = Component("broken", "no_such_module_here:create_app()", _free_port())
    stack = Stack(FIXTURE_ENV, tmp_path / "logs", [broken], workers=1, threads=1)

    with pytest.raises(StackError, match=r"ModuleNotFoundError.*no_such_module_here"):
        stack.start()

    assert not stack.is_running("broken")


def test_a_scaled_component_is_served_by_each_instance_behind_haproxy(tmp_path: Path) -> None:
    public = _free_ports_from(3)  # the public port and the instances', public + step * i
    component = Component("fixture", "fixture_app:create_app()", public)
    env = {**FIXTURE_ENV, "PAXMART_SCALE_PORT_STEP": "1"}
    with Stack(env, tmp_path / "logs", [component], workers=1, threads=2, scale=2) as s:
        assert s.instances("fixture") == ["fixture-1", "fixture-2"]
        assert [s.port(n) for n in ("fixture", "fixture-1", "fixture-2")] == [
            public,
            public + 1,
            public + 2,
        ]
        assert s.balancer_config.read_text().count("check") >= 2
        served = {_health(s, "fixture")["ppid"] for _ in range(8)}
        assert served == {s.pid("fixture-1"), s.pid("fixture-2")}

        s.kill("fixture-1", restart=False)

        # The balancer's health check takes the dead instance out; the public port serves on.
        assert all(_health(s, "fixture")["ppid"] == s.pid("fixture-2") for _ in range(8))


def test_scale_one_runs_no_balancer(stack: Stack) -> None:
    assert stack.names == ["fixture"]
    assert stack.instances("fixture") == ["fixture"]
    assert stack.port("fixture") == stack.port(stack.instances("fixture")[0])
