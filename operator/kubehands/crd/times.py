"""RFC 3339 timestamps as they appear in Sandbox status."""

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """UTC with a `Z` suffix; microseconds are kept because start-latency benchmarks read them."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def parse_time(value: str | datetime | None) -> datetime | None:
    """Parse an RFC 3339 string (or pass a datetime through); None stays None. Naive means UTC."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
