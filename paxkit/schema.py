"""The schema folders paxkit brings to a component's database, for its declaration."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
# The participant side of every protocol: XA branch log and the barrier.
PROTOCOL_SQL = HERE / "sql"
# Transactional outbox and inbox.
MESSAGING_SQL = HERE / "sql_messaging"
PARTICIPANT_MIGRATIONS = (PROTOCOL_SQL, MESSAGING_SQL)
# Leases with fencing tokens and the fences of the resources they guard (paxkit/lease.py),
# for a component that runs a singleton job.
LEASE_SQL = HERE / "sql_lease"
# One Paxos acceptor's database (paxkit/acceptors.py): its instances.
ACCEPTOR_SQL = HERE / "sql_acceptor"
