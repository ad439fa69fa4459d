"""The bench's CPU split by layer: which layer a sample is charged to, and ms per order."""

from __future__ import annotations

import pytest

from infra.bench.layers import (
    BUSINESS,
    CLIENT,
    DATABASE,
    FRAMEWORK,
    JSON,
    OTHER,
    SERVER,
    TELEMETRY,
    attribute,
    layer_of,
    ms_per_order,
    parse_raw,
)

ROOT = "/work/paxmart"
SITE = "/work/paxmart/.venv/lib/python3.11/site-packages"
STD = "/root/.pyenv/versions/3.11.7/lib/python3.11"


@pytest.mark.parametrize(
    ("path", "layer"),
    [
        (f"{SITE}/gunicorn/workers/gthread.py", SERVER),
        (f"{ROOT}/paxkit/server.py", SERVER),
        (f"{ROOT}/paxkit/multiproc.py", SERVER),
        (f"{SITE}/flask/app.py", FRAMEWORK),
        (f"{SITE}/werkzeug/routing/map.py", FRAMEWORK),
        (f"{SITE}/jinja2/environment.py", FRAMEWORK),
        (f"{SITE}/click/core.py", FRAMEWORK),
        (f"{SITE}/itsdangerous/signer.py", FRAMEWORK),
        (f"{SITE}/sqlalchemy/orm/session.py", DATABASE),
        (f"{SITE}/psycopg2/extras.py", DATABASE),
        (f"{ROOT}/paxkit/db.py", DATABASE),
        (f"{SITE}/requests/sessions.py", CLIENT),
        (f"{SITE}/urllib3/connectionpool.py", CLIENT),
        (f"{STD}/http/client.py", CLIENT),
        (f"{ROOT}/paxkit/http.py", CLIENT),
        (f"{SITE}/pika/channel.py", CLIENT),
        (f"{SITE}/redis/client.py", CLIENT),
        (f"{STD}/json/encoder.py", JSON),
        (f"{STD}/json/__init__.py", JSON),
        (f"{SITE}/orjson/__init__.py", JSON),
        (f"{ROOT}/paxkit/requests_json.py", JSON),
        (f"{STD}/logging/__init__.py", TELEMETRY),
        (f"{ROOT}/paxkit/logs.py", TELEMETRY),
        (f"{ROOT}/paxkit/metrics.py", TELEMETRY),
        (f"{ROOT}/paxkit/tracing.py", TELEMETRY),
        (f"{SITE}/prometheus_client/values.py", TELEMETRY),
        (f"{ROOT}/paxkit/xa.py", BUSINESS),
        (f"{ROOT}/gateway/routes.py", BUSINESS),
        (f"{ROOT}/coordinator/drivers.py", BUSINESS),
        (f"{ROOT}/services/order/app.py", BUSINESS),
        (f"{SITE}/some_unknown_lib/x.py", OTHER),
        (f"{ROOT}/README.py", OTHER),
    ],
)
def test_each_known_file_has_its_layer(path: str, layer: str) -> None:
    assert layer_of(path, ROOT) == layer


@pytest.mark.parametrize(
    "path",
    [f"{STD}/socket.py", f"{STD}/selectors.py", f"{STD}/threading.py", f"{STD}/re/__init__.py"],
)
def test_generic_stdlib_frames_are_transparent(path: str) -> None:
    assert layer_of(path, ROOT) is None


def test_a_socket_send_inside_urllib3_counts_as_client() -> None:
    stack = [
        f"{SITE}/gunicorn/workers/gthread.py",
        f"{SITE}/flask/app.py",
        f"{ROOT}/coordinator/drivers.py",
        f"{ROOT}/paxkit/http.py",
        f"{SITE}/urllib3/connection.py",
        f"{STD}/http/client.py",
        f"{STD}/socket.py",
    ]
    assert attribute(stack, ROOT) == CLIENT


def test_self_time_goes_to_the_innermost_known_frame_not_the_outermost() -> None:
    stack = [f"{SITE}/gunicorn/arbiter.py", f"{SITE}/flask/app.py", f"{ROOT}/services/order/app.py"]
    assert attribute(stack, ROOT) == BUSINESS
    assert attribute([*stack, f"{STD}/json/encoder.py"], ROOT) == JSON
    assert attribute([*stack, f"{STD}/re/__init__.py"], ROOT) == BUSINESS


def test_the_server_loop_on_selectors_is_server_and_an_unknown_stack_is_other() -> None:
    assert attribute([f"{SITE}/gunicorn/workers/gthread.py", f"{STD}/selectors.py"], ROOT) == (
        SERVER
    )
    assert attribute([f"{STD}/threading.py", f"{STD}/selectors.py"], ROOT) == SERVER
    assert attribute([f"{STD}/threading.py", "<frozen importlib._bootstrap>"], ROOT) == OTHER
    assert attribute([], ROOT) == OTHER


def test_parse_raw_counts_samples_by_layer() -> None:
    raw = (
        f"run (<frozen runpy>:88);run ({SITE}/gunicorn/arbiter.py:20);"
        f"full_dispatch_request ({SITE}/flask/app.py:917) 7\n"
        f"execute ({ROOT}/paxkit/db.py:50);execute ({SITE}/sqlalchemy/engine/base.py:9) 3\n"
        f"dumps ({STD}/json/__init__.py:231) 2\n"
        f"<module> (<string>:1) 1\n"
        "\n"
    )
    assert parse_raw(raw, ROOT) == {FRAMEWORK: 7, DATABASE: 3, JSON: 2, OTHER: 1}


def test_parse_raw_takes_frames_without_line_numbers_too() -> None:
    assert parse_raw(f"handle ({ROOT}/paxkit/server.py) 4\n", ROOT) == {SERVER: 4}


def test_ms_per_order_scales_each_process_by_its_measured_cpu() -> None:
    samples = {"order": {BUSINESS: 30, DATABASE: 10}, "coupon": {SERVER: 5}}
    cpu_s = {"order": 2.0, "coupon": 0.5, "inventory": 0.4, "postgres": 3.0}
    table = ms_per_order(samples, cpu_s, 100, ["order", "coupon", "inventory"], min_samples=10)
    assert table.rows["order"][BUSINESS] == 15.0  # 2 s / 100 orders * 30/40
    assert table.rows["order"][DATABASE] == 5.0
    assert table.rows["order"]["total"] == 20.0
    assert table.rows["order"][CLIENT] == 0.0
    # Too few samples to split, or none: the CPU stays visible, unsplit, never guessed.
    assert "coupon" not in table.rows
    assert table.unsplit == {"coupon": 5.0, "inventory": 4.0}
    assert table.totals()["total"] == 20.0
    assert table.totals()[BUSINESS] == 15.0
