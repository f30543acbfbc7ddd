"""FHIR instants to and from HTTP dates (RFC 9110 IMF-fixdate), for Last-Modified."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime


def http_date(instant: str) -> str:
    """A FHIR instant as an HTTP date (second precision, GMT)."""
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_http_date(value: str) -> datetime | None:
    """An HTTP date as an aware datetime, or None if it is not one."""
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
