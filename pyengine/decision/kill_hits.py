"""Durable hit counters of kill switches: how many requests each switch refused."""

import hashlib

from ..state import keys

ID_HEX_CHARS = 12  # the switch id shown in metrics: a digest, never the tenant value itself
UNDATED_TTL_S = 30 * 86_400  # a switch without expires_at keeps its count 30 days past its last hit


def switch_id(scope_key: str, scope_value: str, route: str | None) -> str:
    """Stable across reloads and restarts while the switch's scope stays the same."""
    raw = keys.values_key("", (scope_key, scope_value, route or ""))  # length-prefixed: unambiguous
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:ID_HEX_CHARS]


def hits_key(scope_key: str, scope_value: str, route: str | None) -> str:
    return keys.kill_hits(switch_id(scope_key, scope_value, route))


def record_hit(store, ks, now_s: float) -> None:
    """Count one refused request. State: ``(expiry_s, hits)``; the reject path only."""
    value = store.get(ks.hits_key)
    hits = value[1] if value is not None and value[0] > now_s else 0
    expiry_s = ks.expires_at_s if ks.expires_at_s is not None else now_s + UNDATED_TTL_S
    store.put(ks.hits_key, (max(expiry_s, now_s + 1.0), hits + 1))


def hit_counts(store, switches, now_s: float) -> dict[str, int]:
    """{switch id: hits} for the switches in force."""
    out = {}
    for ks in switches:
        value = store.get(ks.hits_key)
        out[keys.kill_switch_id(ks.hits_key)] = value[1] if value is not None and value[0] > now_s else 0
    return out
