"""Runtime kill switches indexed by scope key and value: a request costs one lookup per distinct scope key.

A bundle's kill switches are few and checked one by one (pyengine.decision.pipeline); runtime ones may
be thousands (one per abusive tenant during an incident), so they are found by value instead.
Extractors depend only on the settings (trusted proxies), not on the bundle, so the index
survives reloads; the headers its scope keys read are added to the shim's list by the engine.
"""

from ..decision.keys import TrustedProxies, headers_needed, make_extractor
from ..policy.compiler import KillSwitch
from ..decision.rules import key_value
from ..state import keys


class SwitchIndex:
    """{scope key: (extractor, {value: [KillSwitch]})}; mutated by the admin API between requests."""

    __slots__ = ("by_key", "_proxies", "by_id")

    def __init__(self, trusted_proxies, memo=None):
        self._proxies = TrustedProxies(trusted_proxies, memo)  # memo: the engine's (pyengine.decision.memo)
        self.by_key: dict[str, tuple] = {}
        self.by_id: dict[str, KillSwitch] = {}

    def add(self, rec) -> None:
        entry = self.by_key.get(rec.scope_key)
        if entry is None:
            entry = self.by_key[rec.scope_key] = (make_extractor(rec.scope_key, self._proxies), {})
        ks = KillSwitch(rec.scope_key, entry[0], rec.scope_value, rec.route, rec.reason, rec.expires_at_s)
        ks.hits_key = keys.kill_hits(rec.id)  # the runtime id names its hit counter
        entry[1].setdefault(rec.scope_value, []).append(ks)
        self.by_id[rec.id] = ks

    def remove(self, rec) -> None:
        ks = self.by_id.pop(rec.id, None)
        entry = self.by_key.get(rec.scope_key)
        if ks is None or entry is None:
            return
        listed = entry[1].get(rec.scope_value, [])
        if ks in listed:
            listed.remove(ks)
        if not listed:
            entry[1].pop(rec.scope_value, None)
        if not entry[1]:
            del self.by_key[rec.scope_key]

    def match(self, view, now_s: float) -> KillSwitch | None:
        """The first runtime switch that refuses this request, or None."""
        for lk, (fn, values) in self.by_key.items():
            listed = values.get(key_value(view, lk, fn))
            if listed:
                for ks in listed:
                    if ks.hits(view, now_s):
                        return ks
        return None

    def headers(self) -> set[str]:
        """The request headers the scope keys read (the shim must send them)."""
        return {h for lk in self.by_key for h in headers_needed(lk)}

    def __len__(self) -> int:
        return len(self.by_id)
