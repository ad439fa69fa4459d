"""How many tokens a gateway process takes from a bucket at once."""

from __future__ import annotations

import pytest

from gateway.ratelimit import Rule, lease_size


@pytest.mark.parametrize(
    ("rate_per_s", "burst", "lease"),
    [
        (1000, 1000, 50),  # 50 ms of rate, which is also 5 % of the burst
        (1_000_000, 1_000_000, 50_000),
        (1_000_000, 100, 5),  # never more than 5 % of the burst
        (100, 1_000_000, 5),  # never more than 50 ms of rate
        (5, 3, 1),  # a slow rule: a token per request, exactly the plain bucket
        (0.001, 10, 1),
    ],
)
def test_a_lease_is_50_ms_of_rate_and_at_most_5_percent_of_the_burst(rate_per_s, burst, lease):
    assert lease_size(Rule("r", "/api/orders", rate_per_s, burst, "client")) == lease
