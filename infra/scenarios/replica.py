"""One replica of the order worker's reconciler job, as a process of its own, for one run:
`python -m infra.scenarios.replica OWNER TTL_S [--no-fencing]`. The lock-pause scenarios
start two of these and SIGSTOP one of them while it holds the lease."""

from __future__ import annotations

import argparse
import logging
import sys

from paxkit.app import make_faults
from paxkit.config import load_settings
from paxkit.db import Database, make_engine
from paxkit.http import component_client
from paxkit.lease import Leases
from services.order.reconcile import PendingOrderReconciler
from services.order.repository import OrderRepository

RESEND_S = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("owner")
    parser.add_argument("ttl_s", type=float)
    parser.add_argument("--no-fencing", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"{args.owner} %(levelname)s %(message)s")
    settings = load_settings()
    db = Database(make_engine(settings.db_urls["order"], pool_size=2))
    try:
        reconciler = PendingOrderReconciler(
            OrderRepository(db),
            component_client(settings, "coordinator", settings.http_timeout_s),
            horizon_s=0.0,
            resend_s=RESEND_S,
            leases=Leases(db, args.owner),
            lease_ttl_s=args.ttl_s,
            faults=make_faults("order", settings),
            fencing=not args.no_fencing,
        )
        reconciler.run_once()
    finally:
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
