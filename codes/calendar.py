"""Beijing time: the one time zone of the code data (docs/rules.md, "Dates").

A calendar date in the code data (QC certificates, catalogue effective dates, mapping versions) is a date in
Asia/Shanghai, and an instant is compared with it as a Beijing date. China has kept UTC+08:00 without daylight
saving since 1991, so a fixed offset is exact for every date the exchange handles and needs no tz database.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

#: China Standard Time (UTC+08:00), named as the IANA zone it stands for.
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


def beijing_date(instant: datetime) -> date:
    """The Beijing calendar date of a zoned instant; a naive instant is refused as ambiguous."""
    if instant.tzinfo is None:
        raise ValueError("a naive datetime has no Beijing date: give it a time zone")
    return instant.astimezone(BEIJING).date()


def beijing_midnight(day: date) -> datetime:
    """The instant a Beijing calendar day starts."""
    return datetime.combine(day, time.min, BEIJING)


def beijing_minute(instant: datetime) -> str:
    """A zoned instant as Chinese readers write Beijing time: ``2026-12-02 14:30``."""
    local = instant.astimezone(BEIJING)
    return f"{local.year:04d}-{local.month:02d}-{local.day:02d} {local.hour:02d}:{local.minute:02d}"


def beijing_iso(instant: datetime) -> str:
    """A zoned instant in RFC 3339 at +08:00, for answers that have no requester's offset to follow."""
    return instant.astimezone(BEIJING).isoformat()


def beijing_now() -> datetime:
    """Now, as a Beijing wall-clock instant (never the machine's own zone)."""
    return datetime.now(BEIJING)
