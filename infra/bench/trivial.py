"""The baseline web app of the benchmarks: Flask with nothing of paxmart's in it.

Served under the same gunicorn settings as every component, it gives the raw limit that
paxmart's own endpoints are compared with: `GET /product` for the gateway's cached product
read, and `POST /ok` (read a JSON body, answer {"ok": true}) for the order benchmark's
cheapest possible POST, posted the same bodies by the same load generator.
"""

from __future__ import annotations

from flask import Flask, request

PRODUCT = {"sku": "SKU-0001", "name": "Product 1", "price_cents": 100, "stock": 1000}


def create_app() -> Flask:
    app = Flask("trivial")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/product")
    def product() -> dict[str, object]:
        return PRODUCT

    @app.post("/ok")
    def ok() -> dict[str, bool]:
        request.get_json(force=True)
        return {"ok": True}

    return app
