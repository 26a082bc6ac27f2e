"""The HTTP API (FastAPI; OpenAPI at /docs)."""
from exchange.api.app import Context, create_app

__all__ = ["Context", "create_app"]
