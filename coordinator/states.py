r"""The global transaction's state machine, free of I/O: the one table every status write
of the coordinator is computed from (the log writes each one guarded, `WHERE status = :from`).

    2pc, tcc, saga:
    preparing --commit--> committing --done--> committed
        |
        +----abort---> aborting ---done--> aborted

    3pc (CanCommit in `preparing`, PreCommit in `precommitting`):
    preparing --precommit--> precommitting --commit--> committing --done--> committed
        |                         |
        +----abort---> aborting <-+-abort
                          |
                          +--done--> aborted

    msg (begun from the initiator's event, already committed at the initiator):
    submitted --applied--> committed
        |
        +----abort----> aborting --done--> aborted

`preparing` is the forward phase of the synchronous modes: 2PC's prepares, TCC's Tries, a
saga's actions, 3PC's CanCommits; `precommitting` is 3PC's second phase, every vote yes and
the PreCommits under way (not decided yet: a missing ack still aborts).
`committing`/`aborting` are decided and being carried out (2PC commit/rollback, TCC
confirm/cancel, 3PC DoCommit/Abort, saga and msg compensation). A msg transaction is
`applied` when every branch reported its action done.

A decision is taken once: whoever moves a transaction out of `preparing` (or `submitted`,
or `precommitting`) first (the driver, the reports, or recovery after the lease ran out)
decides, and everyone else follows the log.
"""

from __future__ import annotations

PREPARING = "preparing"
COMMITTING = "committing"
COMMITTED = "committed"
ABORTING = "aborting"
ABORTED = "aborted"
SUBMITTED = "submitted"
PRECOMMITTING = "precommitting"

STATUSES = (PREPARING, PRECOMMITTING, SUBMITTED, COMMITTING, COMMITTED, ABORTING, ABORTED)
UNFINISHED = (PREPARING, PRECOMMITTING, SUBMITTED, COMMITTING, ABORTING)
FINAL = (COMMITTED, ABORTED)

_NEXT = {
    (PREPARING, "commit"): COMMITTING,
    (PREPARING, "abort"): ABORTING,
    (COMMITTING, "done"): COMMITTED,
    (ABORTING, "done"): ABORTED,
    (SUBMITTED, "applied"): COMMITTED,
    (SUBMITTED, "abort"): ABORTING,
    (PREPARING, "precommit"): PRECOMMITTING,
    (PRECOMMITTING, "commit"): COMMITTING,
    (PRECOMMITTING, "abort"): ABORTING,
}

# Presumed abort: of all moves only a commit decision must reach the disk before anyone
# acts on it; losing any other write in a crash is safe (it is taken again). 3PC's move to
# `precommitting` too: a precommitted branch commits on its own, so a coordinator that
# lost that move would abort the others.
DURABLE = frozenset({COMMITTING, PRECOMMITTING})

# A transaction the log never heard of is recorded as this when someone asks for it.
PRESUMED = ABORTED

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


def is_durable(status: str) -> bool:
    """Whether a move into `status` must wait for its fsync."""
    return status in DURABLE


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
