"""Prometheus's multiprocess folder, kept apart from the web stack so that a server's master
process can prepare it without importing Flask and the database layer (that import made
each gunicorn master about 23 MiB larger)."""

from __future__ import annotations

import os


def prepare_multiprocess_dir() -> None:
    """Processes that share PROMETHEUS_MULTIPROC_DIR write their samples there; it must exist."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
