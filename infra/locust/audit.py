"""The end of `make load`: wait until no order of the run is pending, then the audit.

Polls the gateway's `GET /admin/audit` (Bearer PAXMART_ADMIN_TOKEN) until it is clean or
the deadline passes: orders accepted with 202 may still be settling when locust stops.
Prints the audit; exits 1 when it is not clean.

    python -m infra.locust.audit --host http://127.0.0.1:8000 [--deadline 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import requests

POLL_S = 1.0


def fetch(host: str, token: str) -> dict[str, Any]:
    reply = requests.get(
        f"{host.rstrip('/')}/admin/audit",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    if reply.status_code == 401:
        raise SystemExit("the audit refused PAXMART_ADMIN_TOKEN (401): export the stack's token")
    reply.raise_for_status()
    body: dict[str, Any] = reply.json()
    return body


def audit_when_quiet(host: str, token: str, deadline_s: float) -> dict[str, Any]:
    """The first clean audit, else the last one seen when the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while True:
        body = fetch(host, token)
        if body.get("ok") or time.monotonic() >= deadline:
            return body
        time.sleep(POLL_S)  # pacing of the poll; the loop is bounded by the deadline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args(argv)
    token = os.environ.get("PAXMART_ADMIN_TOKEN")
    if not token:
        raise SystemExit("set PAXMART_ADMIN_TOKEN to the stack's admin token (make up prints it)")
    body = audit_when_quiet(args.host, token, args.deadline)
    print(json.dumps(body, indent=2))
    print("audit: clean" if body.get("ok") else "audit: VIOLATIONS", file=sys.stderr)
    return 0 if body.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
