"""Who is asking: stated in headers until login with roles lands (a later issue), and recorded in the audit."""
from __future__ import annotations

from fastapi import Header

from exchange.api.app import ApiError
from exchange.audit import Actor

PURPOSES = ("treatment", "order_check", "quality", "operations", "audit", "patient_request")


def actor(x_hrx_actor: str = Header("unauthenticated", description="user id of the person or system asking"),
          x_hrx_institution: str | None = Header(None, description="institution the user acts for"),
          x_hrx_purpose: str = Header("treatment", description=f"one of {', '.join(PURPOSES)}")) -> Actor:
    if x_hrx_purpose not in PURPOSES:
        raise ApiError("X-HRX-Purpose", f"purpose {x_hrx_purpose!r} is not one of {', '.join(PURPOSES)}")
    return Actor(user=x_hrx_actor[:64], institution=x_hrx_institution, purpose=x_hrx_purpose)
