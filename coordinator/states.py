"""The global transaction's state machine, free of I/O.

    preparing --commit--> committing --done--> committed
        |
        +----abort---> aborting ---done--> aborted

    msg mode:  preparing --submit--> submitted --done--> committed
                   |                     |
                   +----abort----> aborting (compensate) --done--> aborted

    (msg also moves preparing -> aborted when the check-back finds nothing committed, and
    preparing -> committed/aborting when the reports overtake the initiator's submit.)

`preparing` is the forward phase of every mode: 2PC's prepares, TCC's Tries, a saga's
actions. `committing`/`aborting` are decided and being carried out (2PC commit/rollback,
TCC confirm/cancel, saga compensation).

A decision is taken once: whoever moves a transaction out of `preparing` first (the
driver, or recovery after the lease ran out) decides, and everyone else follows the log.
"""

from __future__ import annotations

PREPARING = "preparing"
COMMITTING = "committing"
COMMITTED = "committed"
ABORTING = "aborting"
ABORTED = "aborted"
SUBMITTED = "submitted"

STATUSES = (PREPARING, SUBMITTED, COMMITTING, COMMITTED, ABORTING, ABORTED)
UNFINISHED = (PREPARING, SUBMITTED, COMMITTING, ABORTING)
FINAL = (COMMITTED, ABORTED)

_NEXT = {
    (PREPARING, "commit"): COMMITTING,
    (PREPARING, "abort"): ABORTING,
    (COMMITTING, "done"): COMMITTED,
    (ABORTING, "done"): ABORTED,
    (PREPARING, "submit"): SUBMITTED,
    (SUBMITTED, "done"): COMMITTED,
    (SUBMITTED, "abort"): ABORTING,
}

# Which reason wins when several branches vote no: the most specific business reason.
REASON_PRIORITY = (
    "unknown_sku",
    "out_of_stock",
    "coupon_unavailable",
    "insufficient_balance",
    "timeout",
    "aborted",
)


class IllegalTransition(Exception):
    pass


def next_status(current: str, event: str) -> str:
    try:
        return _NEXT[(current, event)]
    except KeyError:
        raise IllegalTransition(f"{event!r} is not allowed in {current!r}") from None


def decision_of(status: str) -> str:
    """Which way a decided transaction goes: `commit` or `abort`."""
    if status in (COMMITTING, COMMITTED):
        return "commit"
    if status in (ABORTING, ABORTED):
        return "abort"
    raise IllegalTransition(f"{status!r} is not decided yet")


def overall_reason(reasons: list[str]) -> str | None:
    """The reason the transaction reports, from the branches' no-votes (None: all yes)."""
    if not reasons:
        return None
    known = [r for r in REASON_PRIORITY if r in reasons]
    return known[0] if known else reasons[0]
