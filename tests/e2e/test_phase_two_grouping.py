"""Phase 2 of concurrent transactions leaves for each participant in shared requests
(coordinator/branches.py), and every order still ends with exactly its effects."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from paxkit.faults import arm

ORDERS = 10
# Distinct SKUs: a prepared branch holds its row's lock until its commit.
SKUS = [f"SKU-{n:04d}" for n in range(80, 80 + ORDERS)]
COMPLETION = {"2pc": "commit", "tcc": "confirm"}


def batches(stack, branch: str, op: str) -> tuple[float, float]:
    """(requests, transactions) of phase 2 the coordinator sent to `branch` so far."""
    text = requests.get(stack.url("coordinator") + "/metrics", timeout=10).text
    labels = f'branch="{branch}",op="{op}"'
    found = {}
    for name in ("count", "sum"):
        match = re.search(rf"^paxmart_branch_batch_size_{name}\{{{labels}\}} (\S+)$", text, re.M)
        found[name] = float(match.group(1)) if match else 0.0
    return found["count"], found["sum"]


@pytest.mark.parametrize("mode", ["2pc", "tcc"])
def test_concurrent_completions_share_requests_and_every_order_applies_once(
    api, stack, redis_client, user, mode
):
    op = COMPLETION[mode]
    stock = {sku: api.product(sku)["stock"] for sku in SKUS}
    sent_before, done_before = batches(stack, "inventory", op)
    # The first completion reaching inventory in each coordinator process stalls there;
    # meanwhile the other orders' completions gather behind it.
    arm(redis_client, "inventory", f"before_{op}", "stall", times=2, seconds=1.5)
    bodies = [{"user_id": user, "items": [{"sku": sku, "qty": 1}], "mode": mode} for sku in SKUS]
    with ThreadPoolExecutor(ORDERS) as pool:
        responses = list(pool.map(api.order, bodies))

    assert [r.status_code for r in responses] == [201] * ORDERS, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"confirmed"}
    assert {sku: api.product(sku)["stock"] for sku in SKUS} == {
        sku: left - 1 for sku, left in stock.items()
    }
    sent, done = batches(stack, "inventory", op)
    assert done - done_before == ORDERS
    assert sent - sent_before < ORDERS, "no completion shared a request"
