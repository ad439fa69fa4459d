"""The baseline of the gateway benchmark: a trivial Flask endpoint returning a product."""

from __future__ import annotations

from flask import Flask

PRODUCT = {"sku": "SKU-0001", "name": "Product 1", "price_cents": 100, "stock": 1000}


def create_app() -> Flask:
    app = Flask("trivial")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/product")
    def product() -> dict[str, object]:
        return PRODUCT

    return app
