"""The HTTP API (FastAPI; the OpenAPI document at /openapi.json)."""
from exchange.api.app import Context, create_app

__all__ = ["Context", "create_app"]
