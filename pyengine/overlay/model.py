"""What an operator sends to add a runtime kill switch or limit override, how it is checked, and the stored record.

Requests are JSON objects (docs/admin-api.md). Every problem is reported as (JSON path, what
is wrong) in our own words: shapes through pyengine.policy.shape_errors, meaning here. Times
are UTC epoch seconds inside the engine and RFC 3339 in and out of the API.
"""

import calendar
import math
import os
import time
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from ..decision.numbers import POLICY_MAX
from ..policy.checks import check_route
from ..policy.limit_keys import KEY_HELP, canonical_key, check_key_value, is_limit_key
from ..policy.shape_errors import locate

MAX_TTL_S = 366 * 86_400  # a runtime change lasts at most a year; the bundle is the place for more
MAX_TEXT_CHARS = 1024  # reason, scope value
MULTIPLIER_MIN = 0.001
MULTIPLIER_MAX = 1000.0
ID_HEX_CHARS = 12

# Fields an override may set absolutely, per algorithm (the rule's own names, contract §1).
LIMIT_FIELDS = {
    "token_bucket": ("tokens_per_second", "burst"),
    "token_bucket_llm": ("tokens_per_minute", "burst_tokens", "tokens_per_day"),
    "cost_based": ("budget",),
}
ALL_LIMIT_FIELDS = tuple(dict.fromkeys(f for fields in LIMIT_FIELDS.values() for f in fields))

Text = Annotated[str, Meta(max_length=MAX_TEXT_CHARS)]
KeyName = Annotated[str, Meta(max_length=256)]
Ttl = Annotated[int, Meta(ge=1, le=MAX_TTL_S)]


class SwitchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/admin/kill-switches."""

    scope_key: KeyName  # any limit key, as in a bundle's kill_switches
    scope_value: Text
    route: str | None = None  # a path prefix
    reason: Text | None = None  # operators only: logs, status page; never the client
    ttl_s: Ttl | None = None  # seconds from now; or expires_at; neither = until removed
    expires_at: datetime | None = None


class OverrideRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/admin/overrides: one key value gets other limits until expiry."""

    scope_key: KeyName
    scope_value: Text
    policy: str | None = None  # narrow to one policy (and rule); None = every rule keyed on scope_key
    rule: str | None = None
    multiplier: float | None = None  # every limit of the rule scaled by this
    limits: dict[str, float] | None = None  # or absolute values by field name (LIMIT_FIELDS)
    reason: Text | None = None
    ttl_s: Ttl | None = None  # one of ttl_s or expires_at is required: an override always ends
    expires_at: datetime | None = None


class SwitchRecord(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    scope_key: str
    scope_value: str
    route: str | None
    reason: str | None
    expires_at_s: float | None  # UTC epoch seconds; None = until removed
    created_at_s: float
    created_by: str  # the admin token's fingerprint (pyengine.admin_api.actor_of), never the token


class OverrideRecord(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    scope_key: str
    scope_value: str
    policy: str | None
    rule: str | None
    multiplier: float | None
    limits: dict[str, float] | None
    reason: str | None
    expires_at_s: float
    created_at_s: float
    created_by: str


class InvalidRequest(ValueError):
    """The request body does not describe a valid change; `problems` are (JSON path, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))
        self.problems = problems


SWITCH_ID_PREFIX, OVERRIDE_ID_PREFIX = "ks_", "ov_"


def new_id(prefix: str) -> str:
    return prefix + os.urandom(ID_HEX_CHARS // 2).hex()


def is_id(value: str, prefix: str) -> bool:
    """Whether value has the shape new_id(prefix) gives."""
    digits = value[len(prefix):]
    return (value.startswith(prefix) and len(digits) == ID_HEX_CHARS
            and all(c in "0123456789abcdef" for c in digits))


def rfc3339(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def _decode(body: bytes | None, typ):
    if not body:
        raise InvalidRequest([("$", "a JSON object is required")])
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InvalidRequest([("$", "not valid JSON")]) from None
    if not isinstance(value, dict):
        raise InvalidRequest([("$", "must be a JSON object")])
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([locate(exc, value, typ, "$")]) from None


def _expiry(req, now_s: float, problems: list, required: bool) -> float | None:
    if req.ttl_s is not None and req.expires_at is not None:
        problems.append(("$.expires_at", "give ttl_s or expires_at, not both"))
        return None
    if req.ttl_s is not None:
        return now_s + req.ttl_s
    if req.expires_at is not None:
        if req.expires_at.tzinfo is None:
            problems.append(("$.expires_at", "must carry a time zone (e.g. 2030-01-01T00:00:00Z)"))
            return None
        at_s = calendar.timegm(req.expires_at.utctimetuple()) + req.expires_at.microsecond / 1e6
        if at_s <= now_s:
            problems.append(("$.expires_at", f"must be in the future (now is {rfc3339(now_s)})"))
        elif at_s > now_s + MAX_TTL_S:
            problems.append(("$.expires_at", f"must be at most {MAX_TTL_S // 86_400} days from now"))
        return at_s
    if required:
        problems.append(("$.ttl_s", "required (or expires_at): an override always ends"))
    return None


def _scope(req, problems: list) -> str:
    key = canonical_key(req.scope_key)
    if not is_limit_key(key):
        problems.append(("$.scope_key", f"invalid limit key {req.scope_key!r} ({KEY_HELP})"))
    if req.scope_value == "":
        problems.append(("$.scope_value", "must not be empty"))
    else:
        errors: list = []
        check_key_value(key, req.scope_value, "$.scope_value", errors)
        problems.extend(errors)
    return key


def switch_from_json(body: bytes | None, now_s: float, actor: str) -> SwitchRecord:
    req = _decode(body, SwitchRequest)
    problems: list = []
    key = _scope(req, problems)
    if req.route is not None:
        errors: list = []
        check_route(req.route, "$.route", errors)
        problems.extend(errors)
    expires_at_s = _expiry(req, now_s, problems, required=False)
    if problems:
        raise InvalidRequest(problems)
    return SwitchRecord(new_id(SWITCH_ID_PREFIX), key, req.scope_value, req.route, req.reason, expires_at_s, now_s, actor)


def override_from_json(body: bytes | None, now_s: float, actor: str) -> OverrideRecord:
    req = _decode(body, OverrideRequest)
    problems: list = []
    key = _scope(req, problems)
    if req.rule is not None and req.policy is None:
        problems.append(("$.policy", "required when rule is given (rule names are per policy)"))
    if (req.multiplier is None) == (req.limits is None):
        problems.append(("$", "give exactly one of multiplier or limits"))
    if req.multiplier is not None and not (MULTIPLIER_MIN <= req.multiplier <= MULTIPLIER_MAX):
        problems.append(("$.multiplier", f"must be between {MULTIPLIER_MIN:g} and {MULTIPLIER_MAX:g} "
                                         f"(got {req.multiplier:g})"))
    if req.limits is not None:
        if not req.limits:
            problems.append(("$.limits", "must name at least one limit"))
        for name, value in req.limits.items():
            path = f"$.limits.{name}"
            if name not in ALL_LIMIT_FIELDS:
                problems.append((path, f"unknown limit; expected one of {', '.join(ALL_LIMIT_FIELDS)}"))
            elif not (math.isfinite(value) and 0 < value <= POLICY_MAX):
                problems.append((path, f"must be > 0 and at most {POLICY_MAX:g} (got {value:g})"))
    expires_at_s = _expiry(req, now_s, problems, required=True)
    if problems:
        raise InvalidRequest(problems)
    return OverrideRecord(new_id(OVERRIDE_ID_PREFIX), key, req.scope_value, req.policy, req.rule, req.multiplier,
                          dict(req.limits) if req.limits is not None else None, req.reason, expires_at_s,
                          now_s, actor)


def switch_json(rec: SwitchRecord) -> dict:
    return {"id": rec.id, "scope_key": rec.scope_key, "scope_value": rec.scope_value, "route": rec.route,
            "reason": rec.reason, "expires_at": rfc3339(rec.expires_at_s), "created_at": rfc3339(rec.created_at_s),
            "created_by": rec.created_by}


def override_json(rec: OverrideRecord) -> dict:
    return {"id": rec.id, "scope_key": rec.scope_key, "scope_value": rec.scope_value, "policy": rec.policy,
            "rule": rec.rule, "multiplier": rec.multiplier, "limits": rec.limits, "reason": rec.reason,
            "expires_at": rfc3339(rec.expires_at_s), "created_at": rfc3339(rec.created_at_s),
            "created_by": rec.created_by}
