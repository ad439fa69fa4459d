"""Retention: protocol bookkeeping is pruned once nothing can need it, in bounded batches.

Every protocol leaves rows behind: sent outbox rows, inbox rows, barrier rows, XA branch
log rows (commit records and tombstones), 3PC branch rows, timelines, notification
attempts. Each table
declares the rule that tells when a row is done with; rows older than the horizon
(`PAXMART_RETENTION_S`, a week by default) that the rule releases are deleted, a batch
of rows per statement and a bounded number of batches per run, so a backlog is worked
off over several runs without a long transaction.

What each kind of row is still needed for, and so when it goes:

- outbox: an unsent row is the relay's work; a sent one is needed by nothing (consumers
  dedupe by message id, in their inbox). Sent rows go once sent longer than the horizon.
- inbox: a row dedupes a redelivered message. A message is redelivered only until it is
  acked (after the row committed), and retry-queue copies come back within the longest
  retry tier; the horizon is far longer than both (config.MIN_RETENTION_S). It also
  assumes a relay marks what it published within the horizon (the audit reports a relay
  that doesn't); the handlers behind the inbox are idempotent on their own as well.
- barrier, XA branch log, 3PC branches: a global transaction's rows answer its repeated and late
  protocol calls: a Cancel after its Try's row went would look like a null compensation
  and leave the Try's hold forever; a late Try or prepare after the row that blocks it
  went would take effect for an aborted transaction; the initiator's barrier row answers
  the msg check-back while the transaction is preparing. Calls come while the transaction
  is unfinished at the coordinator, and late ones shortly after. So these rows go only
  once the coordinator says their transaction has been final for longer than the horizon.
  A participant can't read the coordinator's log: it asks it over HTTP, and keeps every
  row when it gets no answer. A gtid the coordinator never logged is let go too: the
  coordinator keeps every transaction it logged, and every mode that writes such rows
  logs its begin durably before calling a branch, so such a gtid is a 2PC transaction
  whose relaxed begin was lost (recovery rolled its branches back: presumed abort), or
  one no coordinator ever ran; nothing will call for it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text

from paxkit.db import Database
from paxkit.errors import UpstreamUnavailable
from paxkit.http import ServiceClient

log = logging.getLogger(__name__)

BATCH = 500
MAX_BATCHES = 20
OLDER_THAN_HORIZON = "< now() - make_interval(secs => :horizon_s)"

PRUNED = Counter(
    "paxmart_retention_pruned_total", "Rows pruned by retention", ["component", "table"]
)


class Rule(Protocol):
    """How one table's rows are found done with and deleted."""

    @property
    def table(self) -> str: ...

    def prune(self, db: Database, horizon_s: float, batch: int, max_batches: int) -> int:
        """Delete up to `max_batches` batches of done rows; returns how many went."""
        ...


@dataclass(frozen=True)
class OldRows:
    """Rows this database alone can tell are done with: those matching `done`, an SQL
    condition on the table (aliased `t`) that may use :horizon_s and `params`."""

    table: str
    done: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def prune(self, db: Database, horizon_s: float, batch: int, max_batches: int) -> int:
        # ctid = ANY(ARRAY(...)) deletes by a TID scan; SKIP LOCKED lets two processes
        # prune side by side without waiting for each other.
        sql = text(
            f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY(SELECT t.ctid FROM {self.table} t "
            f"WHERE {self.done} LIMIT :batch FOR UPDATE SKIP LOCKED))"
        )
        deleted = 0
        for _ in range(max_batches):
            with db.autocommit() as conn:
                count = conn.execute(
                    sql, {**self.params, "horizon_s": horizon_s, "batch": batch}
                ).rowcount
            deleted += count
            if count < batch:
                break
        return deleted


@dataclass(frozen=True)
class TxnState:
    """What the coordinator knows of a global transaction: its status ("unknown" if it never
    logged it) and, once final, for how many seconds it has been."""

    status: str
    final_for_s: float | None = None


Outcomes = Callable[[list[str]], Mapping[str, TxnState]]
UNKNOWN = "unknown"


def finished_long_ago(state: TxnState | None, horizon_s: float) -> bool:
    """May a transaction's rows go? Only once final for longer than the horizon (or never
    logged, see above); never without an answer."""
    if state is None:
        return False
    if state.status == UNKNOWN:
        return True
    return state.final_for_s is not None and state.final_for_s > horizon_s


@dataclass(frozen=True)
class TransactionRows:
    """Rows (keyed by `gtid`) that a global transaction needs until the coordinator says it
    has been final for longer than the horizon; `outcomes` asks it."""

    table: str
    outcomes: Outcomes
    age_column: str = "created_at"

    def prune(self, db: Database, horizon_s: float, batch: int, max_batches: int) -> int:
        kept: set[str] = set()  # asked about this run and still needed: not asked again
        deleted = 0
        for _ in range(max_batches):
            rows = db.fetch_all(
                f"SELECT gtid FROM {self.table} WHERE {self.age_column} {OLDER_THAN_HORIZON} "
                "AND gtid <> ALL(:kept) LIMIT :batch",
                horizon_s=horizon_s,
                kept=list(kept),
                batch=batch,
            )
            gtids = list(dict.fromkeys(r["gtid"] for r in rows))
            if not gtids:
                break
            states = self.outcomes(gtids)
            done = [g for g in gtids if finished_long_ago(states.get(g), horizon_s)]
            kept.update(set(gtids) - set(done))
            deleted += self._delete(db, done, horizon_s)
            if len(rows) < batch:
                break
        return deleted

    def _delete(self, db: Database, gtids: list[str], horizon_s: float) -> int:
        if not gtids:
            return 0
        with db.autocommit() as conn:
            count: int = conn.execute(
                text(
                    f"DELETE FROM {self.table} WHERE gtid = ANY(:gtids) "
                    f"AND {self.age_column} {OLDER_THAN_HORIZON}"
                ),
                {"gtids": gtids, "horizon_s": horizon_s},
            ).rowcount
        return count


def coordinator_outcomes(coordinator: ServiceClient) -> Outcomes:
    """Ask the coordinator (`POST /transactions/statuses`) what it knows of some gtids."""

    def ask(gtids: list[str]) -> dict[str, TxnState]:
        reply = coordinator.post("/transactions/statuses", json={"gtids": gtids}, idempotent=True)
        if not reply.ok:
            raise UpstreamUnavailable(
                f"the coordinator did not say which transactions are finished ({reply.status})"
            )
        return {
            gtid: TxnState(str(state["status"]), state.get("final_for_s"))
            for gtid, state in reply.body["statuses"].items()
        }

    return ask


SENT_OUTBOX = OldRows(
    "outbox", f"t.created_at {OLDER_THAN_HORIZON} AND t.sent_at {OLDER_THAN_HORIZON}"
)
INBOX = OldRows("inbox", f"t.received_at {OLDER_THAN_HORIZON}")
MESSAGING_RULES: tuple[Rule, ...] = (SENT_OUTBOX, INBOX)


def participant_rules(outcomes: Outcomes) -> tuple[Rule, ...]:
    """Every table a participant's protocols write (paxkit/sql, paxkit/sql_messaging)."""
    return (
        TransactionRows("barrier", outcomes),
        TransactionRows("xa_branch_log", outcomes),
        TransactionRows("threepc_branches", outcomes),
        *MESSAGING_RULES,
    )


class Retention:
    """One database's retention: its rules, run in order, each one batch-bounded."""

    def __init__(
        self,
        component: str,
        db: Database,
        rules: Sequence[Rule],
        horizon_s: float,
        batch: int = BATCH,
        max_batches: int = MAX_BATCHES,
    ) -> None:
        self.component = component
        self.db = db
        self.rules = tuple(rules)
        self.horizon_s = horizon_s
        self.batch = batch
        self.max_batches = max_batches

    @property
    def tables(self) -> list[str]:
        return list(dict.fromkeys(rule.table for rule in self.rules))

    def run_once(self) -> dict[str, int]:
        """Prune every table once; returns rows deleted per table (a table whose rule failed,
        the coordinator being unreachable, say, is left out and retried next run)."""
        counts: dict[str, int] = {}
        for rule in self.rules:
            try:
                count = rule.prune(self.db, self.horizon_s, self.batch, self.max_batches)
            except Exception as err:  # one table's trouble must not stop the others
                log.warning("retention of %s.%s failed: %r", self.component, rule.table, err)
                continue
            counts[rule.table] = counts.get(rule.table, 0) + count
            if count:
                PRUNED.labels(self.component, rule.table).inc(count)
        if any(counts.values()):
            log.info("retention pruned %s", counts, extra={"pruned": counts})
        return counts

    def probe(self) -> Callable[[], Iterable[Metric]]:
        """Rows (the statistics' live-row estimate, no count(*) per scrape) and bytes of
        every table under retention: a gauge per table."""

        def probe() -> Iterable[Metric]:
            rows = self.db.fetch_all(
                "SELECT relname AS name, n_live_tup AS rows, "
                "pg_total_relation_size(relid) AS bytes FROM pg_stat_user_tables "
                "WHERE schemaname = current_schema() AND relname = ANY(:tables)",
                tables=self.tables,
            )
            sizes = GaugeMetricFamily(
                "paxmart_table_rows", "Live rows (estimate)", labels=["component", "table"]
            )
            volume = GaugeMetricFamily(
                "paxmart_table_bytes", "Size with indexes", labels=["component", "table"]
            )
            for row in rows:
                sizes.add_metric([self.component, row["name"]], float(row["rows"]))
                volume.add_metric([self.component, row["name"]], float(row["bytes"]))
            return [sizes, volume]

        return probe
