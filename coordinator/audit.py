"""The cross-service consistency audit of DESIGN.md's invariants.

No component reads another's database: each service answers for its own data over HTTP
(paxkit/audit.py) and this audit combines the answers. It pages through the initiators'
orders, sends each page to every participant with the part that participant should hold,
and collects what each says about its own invariants and leftovers, so its memory stays
bounded by one page however many orders there are. It pages the same way through the log's
3pc transactions, asking every participant how its branch of each ended: one that
committed while another aborted is a split (`threepc_split`), the inconsistency 3PC allows.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from prometheus_client import Gauge

from coordinator.log import TxnLog
from paxkit.audit import leftovers
from paxkit.errors import ApiError
from paxkit.http import ServiceClient
from paxkit.threepc import ABORTED, COMMITTED
from paxkit.threepc import MODE as THREEPC

Violation = dict[str, Any]
PAGE = 500
# The last verdict, whichever coordinator process gave it (the dashboard's overview shows it).
AUDIT_OK = Gauge(
    "paxmart_audit_ok", "1 when the last audit found nothing wrong", multiprocess_mode="mostrecent"
)
AUDIT_VIOLATIONS = Gauge(
    "paxmart_audit_violations", "Violations the last audit found", multiprocess_mode="mostrecent"
)
AUDIT_FINISHED = Gauge(
    "paxmart_audit_finished_timestamp_seconds",
    "When the last audit finished (Unix time)",
    multiprocess_mode="mostrecent",
)
AUDIT_CALL_TIMEOUT_S = 30.0


class AuditUnavailable(ApiError):
    """A service did not answer its part of the audit: no verdict can be given."""

    status = 503
    code = "audit_incomplete"


class Auditor:
    def __init__(
        self,
        txn_log: TxnLog,
        participants: dict[str, ServiceClient],
        initiators: dict[str, ServiceClient],
        horizon_s: float,
    ) -> None:
        self.log = txn_log
        self.participants = participants
        self.initiators = initiators
        self.horizon_s = horizon_s

    def run(self) -> dict[str, Any]:
        violations: list[Violation] = []
        checked: dict[str, int] = {}
        for name, client in self.participants.items():
            answer = _ask(name, client.get("/audit/ledger", timeout_s=AUDIT_CALL_TIMEOUT_S))
            violations += answer["violations"]
            checked.update(answer["checked"])
        checked["orders"] = sum(
            self._orders(name, client, violations) for name, client in self.initiators.items()
        )
        checked["prepared_xacts"], checked["unsent_events"] = self._leftovers(violations)
        checked["transactions"] = self._transactions(violations)
        checked["threepc_transactions"] = self._splits(violations)
        _export(violations)
        return {"ok": not violations, "violations": violations, "checked": checked}

    def _orders(self, initiator: str, client: ServiceClient, violations: list[Violation]) -> int:
        """Page through one initiator's orders; each page goes to every participant."""
        after, count = "", 0
        while True:
            reply = client.get(
                "/audit/orders",
                params={"after": after, "limit": PAGE, "horizon_s": self.horizon_s},
                timeout_s=AUDIT_CALL_TIMEOUT_S,
            )
            page = _ask(initiator, reply)
            orders: list[dict[str, Any]] = page["items"]
            count += len(orders)
            violations += [
                {"check": "order_stuck_pending", "order_id": o["order_id"]}
                for o in orders
                if o["status"] == "pending" and o["stale"]
            ]
            last = page["next"] is None
            upto = None if last else orders[-1]["order_id"]
            for name, participant in self.participants.items():
                body = {
                    "after": after,
                    "upto": upto,
                    "orders": [
                        {
                            "order_id": o["order_id"],
                            "status": o["status"],
                            "part": o["parts"].get(name),
                        }
                        for o in orders
                    ],
                }
                answer = participant.post(
                    "/audit/orders", json=body, timeout_s=AUDIT_CALL_TIMEOUT_S, idempotent=True
                )
                violations += _ask(name, answer)["violations"]
            if last:
                return count
            after = str(page["next"])

    def _leftovers(self, violations: list[Violation]) -> tuple[int, int]:
        """Prepared transactions and unsent events left anywhere past the horizon."""
        answers = {"coordinator": leftovers(self.log.db, self.horizon_s)}
        for name, client in {**self.initiators, **self.participants}.items():
            reply = client.get(
                "/audit/leftovers",
                params={"horizon_s": self.horizon_s},
                timeout_s=AUDIT_CALL_TIMEOUT_S,
            )
            answers[name] = _ask(name, reply)
        prepared = unsent = 0
        for name, answer in answers.items():
            prepared += answer["prepared_total"]
            unsent += answer["unsent_events"]
            violations += [
                {"check": "prepared_left_behind", "database": name, **item}
                for item in answer["prepared"]
            ]
            if answer["unsent_past_horizon"]:
                violations.append(
                    {
                        "check": "outbox_not_relayed",
                        "database": name,
                        "events": answer["unsent_past_horizon"],
                    }
                )
        return prepared, unsent

    def _transactions(self, violations: list[Violation]) -> int:
        for row in self.log.stuck(self.horizon_s):
            violations.append({"check": "transaction_stuck", **row})
        return self.log.count()

    def _splits(self, violations: list[Violation]) -> int:
        """Page through the log's 3pc transactions; each page goes to every participant."""
        after, count = "", 0
        while True:
            page = self.log.of_mode(THREEPC, after, PAGE)
            count += len(page)
            states = self._branch_states([t["gtid"] for t in page]) if page else {}
            found = (split_of(t["gtid"], t["status"], states[t["gtid"]]) for t in page)
            violations += [v for v in found if v is not None]
            if len(page) < PAGE:
                return count
            after = page[-1]["gtid"]

    def _branch_states(self, gtids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """gtid -> participant -> how that participant's 3pc branch of it stands."""
        states: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for name, participant in self.participants.items():
            reply = participant.post(
                f"/audit/{THREEPC}",
                json={"gtids": gtids},
                timeout_s=AUDIT_CALL_TIMEOUT_S,
                idempotent=True,
            )
            for gtid, state in _ask(name, reply)["branches"].items():
                states[gtid][name] = state
        return states


def split_of(gtid: str, status: str, branches: dict[str, dict[str, Any]]) -> Violation | None:
    """A 3pc transaction some of whose branches committed while others aborted (`branches`:
    each one's state and whether it decided by its own timeout), or None."""
    committed = sorted(n for n, b in branches.items() if b["state"] == COMMITTED)
    aborted = sorted(n for n, b in branches.items() if b["state"] == ABORTED)
    if not committed or not aborted:
        return None
    return {
        "check": "threepc_split",
        "gtid": gtid,
        "status": status,
        "committed": committed,
        "aborted": aborted,
        "by_timeout": sorted(n for n, b in branches.items() if b["by_timeout"]),
    }


def _ask(name: str, reply: Any) -> dict[str, Any]:
    if not reply.ok or not isinstance(reply.body, dict):
        raise AuditUnavailable(
            f"{name} did not answer its part of the audit ({reply.status}).", service=name
        )
    body: dict[str, Any] = reply.body
    return body


def _export(violations: list[Violation]) -> None:
    AUDIT_OK.set(0 if violations else 1)
    AUDIT_VIOLATIONS.set(len(violations))
    AUDIT_FINISHED.set(time.time())
