"""Validation of the events pushed to the ingestion API: pure Python, no database.

Every field is checked for its type, length and content before anything touches the
database; a failed check names the field. API messages are in English: clients match
on ``field`` and log ``message``.
"""

import math
import re
from datetime import datetime, timezone

from odoo.tools import email_normalize

# Control characters (NUL included) and lone UTF-16 surrogates, which PostgreSQL and
# UTF-8 cannot store. Multi-line fields keep tabs and line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_CHANNEL_CODE = re.compile(r"[a-z0-9_]{1,32}")
_EPOCH = datetime(1970, 1, 1)

MAX_ID = 2**31 - 1
MAX_DURATION_SECONDS = 7 * 24 * 3600
DIRECTIONS = ("inbound", "outbound")
IDENTIFIERS = ("partner_id", "email", "phone", "customer_ref")
WEB_CHANNEL = "web"
WEB_ONLY_FIELDS = ("visitor_id", "url", "page", "product")
NOT_ON_WEB_FIELDS = ("subject", "summary", "duration_seconds", "outcome")
UTM_FIELDS = ("utm_campaign", "utm_source", "utm_medium")
# field: (max length, multi-line) for the optional free-text fields
TEXT_FIELDS = {
    "customer_name": (255, False),
    "subject": (255, False),
    "summary": (10_000, True),
    "utm_campaign": (128, False),
    "utm_source": (128, False),
    "utm_medium": (128, False),
    "visitor_id": (128, False),
    "url": (2048, False),
    "page": (255, False),
    "product": (255, False),
}
EVENT_FIELDS = frozenset(
    {
        "external_id",
        "source",
        "channel",
        "direction",
        "occurred_at",
        "duration_seconds",
        "outcome",
        "company_id",
        *IDENTIFIERS,
        *TEXT_FIELDS,
    }
)


class EventError(Exception):
    """An event fails validation: ``field`` names the culprit."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


class ForbiddenCompany(Exception):
    """An event names a company the key's user may not write in: the request is refused."""

    def __init__(self, index, company_id):
        super().__init__(
            f"event {index}: company_id {company_id} is not one of the companies of this "
            "API key's user"
        )
        self.index = index
        self.company_id = company_id


def safe_text(value, limit=64):
    """``value`` as text that is safe to echo in a JSON answer (no lone surrogates)."""
    text = value if isinstance(value, str) else repr(value)
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _text(event, name, max_length, required=False, multiline=False):
    value = event.get(name)
    if value is None:
        if required:
            raise EventError(name, f"{name} is required")
        return None
    if not isinstance(value, str):
        raise EventError(name, f"{name} must be a string")
    if len(value) > max_length:
        raise EventError(name, f"{name} must be at most {max_length} characters long")
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
        raise EventError(name, f"{name} must not contain control characters such as NUL")
    if not value.strip():
        if required:
            raise EventError(name, f"{name} must not be empty")
        return None
    return value


def _positive_id(event, name):
    value = event.get(name)
    if value is None:
        return None
    if type(value) is not int or not 0 < value <= MAX_ID:
        raise EventError(name, f"{name} must be a positive integer id")
    return value


def _occurred_at(event, latest, name="occurred_at"):
    value = _text(event, name, 64, required=True)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise EventError(
            name,
            f"{name} must be an ISO 8601 date and time, e.g. 2025-05-01T14:30:00+02:00",
        ) from None
    if moment.utcoffset() is None:
        raise EventError(name, f"{name} needs a UTC offset, e.g. +02:00 or Z")
    try:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:
        raise EventError(name, f"{name} is out of range") from None
    if moment < _EPOCH:
        raise EventError(name, f"{name} must be after 1970-01-01")
    if moment > latest:
        raise EventError(name, f"{name} is in the future")
    return moment


def _duration(event):
    value = event.get("duration_seconds")
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise EventError("duration_seconds", "duration_seconds must be a number")
    if not 0 <= value <= MAX_DURATION_SECONDS:
        raise EventError(
            "duration_seconds",
            f"duration_seconds must be between 0 and {MAX_DURATION_SECONDS} (a week)",
        )
    return value / 3600.0


def _identifier(event):
    given = [name for name in IDENTIFIERS if event.get(name) is not None]
    if not given:
        raise EventError(
            "customer",
            "the customer is required: give one of partner_id, email, phone, customer_ref",
        )
    if len(given) > 1:
        raise EventError(
            given[1],
            f"give only one of partner_id, email, phone, customer_ref (got {', '.join(given)})",
        )
    kind = given[0]
    if kind == "partner_id":
        return kind, _positive_id(event, kind)
    if kind == "email":
        email = _text(event, kind, 254, required=True)
        normalized = email_normalize(email)
        if not normalized:
            raise EventError(kind, "email is not a valid email address")
        return kind, normalized
    if kind == "phone":
        return kind, _text(event, kind, 64, required=True)
    return kind, _text(event, kind, 255, required=True)


def validate_event(event, outcomes, allowed_company_ids, latest):
    """Check one event and return its clean values (dict) or raise :class:`EventError`.

    ``outcomes`` are the allowed outcome values, ``latest`` the latest allowed
    ``occurred_at`` (naive UTC). Raises :class:`ForbiddenCompany` (without index) when
    ``company_id`` is an id outside ``allowed_company_ids``.
    """
    if not isinstance(event, dict):
        raise EventError(None, "an event must be a JSON object")
    for name in event:
        if name not in EVENT_FIELDS:
            raise EventError(safe_text(name), f"unknown field {safe_text(name)!r}")
    company_id = _positive_id(event, "company_id")
    if company_id is not None and company_id not in allowed_company_ids:
        raise ForbiddenCompany(None, company_id)
    clean = {
        "company_id": company_id,
        "external_ref": _text(event, "external_id", 255, required=True),
        "source": _text(event, "source", 64, required=True),
        "channel": _channel(event),
        "direction": _text(event, "direction", 16, required=True),
    }
    if clean["direction"] not in DIRECTIONS:
        raise EventError("direction", "direction must be 'inbound' or 'outbound'")
    clean["date"] = _occurred_at(event, latest)
    clean["identifier"] = _identifier(event)
    for name, (max_length, multiline) in TEXT_FIELDS.items():
        clean[name] = _text(event, name, max_length, multiline=multiline)
    clean["duration"] = _duration(event)
    outcome = _text(event, "outcome", 32)
    if outcome is not None and outcome not in outcomes:
        raise EventError("outcome", f"outcome must be one of {', '.join(sorted(outcomes))}")
    clean["outcome"] = outcome
    _check_channel_fields(event, clean["channel"])
    return clean


def _channel(event):
    channel = _text(event, "channel", 32, required=True)
    if not _CHANNEL_CODE.fullmatch(channel):
        raise EventError("channel", "channel must be a channel code such as 'phone' or 'web'")
    return channel


def _check_channel_fields(event, channel):
    """Web events carry page views; the other channels carry calls, messages..."""
    if channel == WEB_CHANNEL:
        for name in NOT_ON_WEB_FIELDS:
            if event.get(name) is not None:
                raise EventError(
                    name,
                    f"{name} is not allowed on the web channel: a web visit's subject, "
                    "summary and duration are made from its events",
                )
    else:
        for name in WEB_ONLY_FIELDS:
            if event.get(name) is not None:
                raise EventError(name, f"{name} is only allowed on the web channel")


CONSENT_STATES = ("opt_in", "opt_out", "unknown", "pause")
LEGAL_BASES = ("consent", "contract", "legitimate_interest", "legal_obligation")
CONSENT_FIELDS = frozenset(
    {
        "external_id",
        "source",
        "channel",
        "purpose",
        "state",
        "occurred_at",
        "pause_until",
        "consent_text_version",
        "legal_basis",
        "ip_address",
        "note",
        "company_id",
        *IDENTIFIERS,
    }
)


def validate_consent_event(event, allowed_company_ids, latest):
    """Check one consent event (``/ecrm/api/v1/consents``) and return its clean values.

    Raises :class:`EventError` naming the field, or :class:`ForbiddenCompany`.
    """
    if not isinstance(event, dict):
        raise EventError(None, "an event must be a JSON object")
    for name in event:
        if name not in CONSENT_FIELDS:
            raise EventError(safe_text(name), f"unknown field {safe_text(name)!r}")
    company_id = _positive_id(event, "company_id")
    if company_id is not None and company_id not in allowed_company_ids:
        raise ForbiddenCompany(None, company_id)
    clean = {
        "company_id": company_id,
        "external_ref": _text(event, "external_id", 255, required=True),
        "source": _text(event, "source", 64, required=True),
        "channel": _channel(event),
        "purpose": _text(event, "purpose", 32) or "marketing",
        "state": _text(event, "state", 16, required=True),
        "date": _occurred_at(event, latest),
        "identifier": _identifier(event),
        "consent_text_version": _text(event, "consent_text_version", 64),
        "legal_basis": _text(event, "legal_basis", 32) or "consent",
        "ip_address": _text(event, "ip_address", 64),
        "note": _text(event, "note", 2000, multiline=True),
    }
    if clean["state"] not in CONSENT_STATES:
        raise EventError("state", f"state must be one of {', '.join(CONSENT_STATES)}")
    if clean["legal_basis"] not in LEGAL_BASES:
        raise EventError("legal_basis", f"legal_basis must be one of {', '.join(LEGAL_BASES)}")
    clean["pause_until"] = None
    if clean["state"] == "pause":
        if event.get("pause_until") is None:
            raise EventError("pause_until", "pause_until is required to pause")
        clean["pause_until"] = _occurred_at(event, datetime.max, "pause_until")
    elif event.get("pause_until") is not None:
        raise EventError("pause_until", "pause_until is only allowed with state 'pause'")
    return clean
