"""Schema-driven fuzzing of the contract (schemathesis) against a real stack.

Every public operation goes through the gateway with the admin token (a user's token on
the user-scoped routes: the user of the path or body when it is one); every internal
operation goes to each component that serves it, with the service credential. Each
answer must be no 5xx, a status the spec declares for the operation, of a declared
content type, and valid against its schema. Inputs are both valid and invalid ones
(schemathesis's positive and negative modes); the number of requests per operation is
bounded (`MAX_EXAMPLES`), and the count of generated requests is printed and kept in
`.state/fuzz-requests.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import hypothesis
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infra.users import USER_SCOPED
from tests.fuzz.conftest import ADMIN, SERVICE, FuzzStack
from tests.helpers import as_user
from tests.unit.test_openapi_routes import INTERNAL, load_spec

MAX_EXAMPLES = 40
REQUEST_TIMEOUT_S = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Examples and generated cases; the coverage phase is unbounded in size and left out.
CONFIG = schemathesis.Config.from_dict(
    {
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "generation": {"max-examples": MAX_EXAMPLES},
    }
)
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
CONTROL_PATHS = ("/admin/switches", "/admin/level", "/admin/ratelimits")


def component_spec(spec: dict[str, Any], component: str) -> dict[str, Any]:
    """The part of the internal spec that one component serves."""
    paths = {}
    for path, item in spec["paths"].items():
        kept = {
            key: value
            for key, value in item.items()
            if not isinstance(value, dict) or component in value.get("x-paxmart-served-by", [])
        }
        if any(isinstance(value, dict) and "responses" in value for value in kept.values()):
            paths[path] = kept
    return {**spec, "paths": paths}


def send(fuzz: FuzzStack, suite: str, case: Any, base_url: str, headers: dict[str, str]) -> Any:
    fuzz.generated[f"{suite} {case.method} {case.path}"] += 1
    return case.call(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S)


def changed_control_plane(case: Any, response: Any) -> bool:
    """A fuzzed admin change that took: a switch, the level or a rate-limit rule."""
    return (
        case.path.startswith(CONTROL_PATHS)
        and case.method in ("PUT", "DELETE")
        and response.status_code < 300
    )


PUBLIC = schemathesis.openapi.from_dict(load_spec("public"), config=CONFIG)


def credential(case: Any) -> dict[str, str]:
    """The admin token, or on a user-scoped route the token of the user it names."""
    if not case.path.startswith(USER_SCOPED):
        return ADMIN
    named = (case.path_parameters or {}).get("user_id")
    if named is None and isinstance(case.body, dict):
        named = case.body.get("user_id")
    user = named if isinstance(named, int) and not isinstance(named, bool) else 7
    return as_user(user) if 1 <= user <= 2**31 - 1 else as_user(7)


@PUBLIC.parametrize()
@FUZZ_SETTINGS
def test_public_operation(case, fuzz):
    headers = credential(case)
    response = send(fuzz, "public", case, fuzz.url("gateway"), headers)
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    finally:
        if changed_control_plane(case, response):
            fuzz.restore_control_plane()


def internal_test(component: str) -> Callable[..., None]:
    """The fuzz test of one component's part of the internal protocol."""
    schema = schemathesis.openapi.from_dict(
        component_spec(load_spec("internal"), component), config=CONFIG
    )

    @schema.parametrize()
    @FUZZ_SETTINGS
    def test(case: Any, fuzz: FuzzStack) -> None:
        response = send(fuzz, component, case, fuzz.url(component), SERVICE)
        case.validate_response(response, checks=CHECKS, headers=SERVICE)

    return test


test_internal_coordinator = internal_test("coordinator")
test_internal_order = internal_test("order")
test_internal_inventory = internal_test("inventory")
test_internal_coupon = internal_test("coupon")
test_internal_redpacket = internal_test("redpacket")


def test_every_component_is_fuzzed():
    fuzzed = {
        name[len("test_internal_") :] for name in globals() if name.startswith("test_internal_")
    }
    assert fuzzed == set(INTERNAL)


def test_zz_every_operation_got_requests(fuzz, capsys):
    """Last: how many requests the run generated (printed, and kept for CI's record)."""
    report = fuzz.report()
    with capsys.disabled():
        print(f"\nfuzzing generated {report.total} requests: {json.dumps(report.by_suite)}")
    expected = {
        f"public {method.upper()} {path}"
        for path, item in load_spec("public")["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete")
    }
    assert expected <= set(report.by_operation), sorted(expected - set(report.by_operation))
    assert set(report.by_suite) == {"public", *INTERNAL}
