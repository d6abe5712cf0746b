"""The decision log: JSON lines for rejects, warnings, throttles, shadow would-rejects, reloads and cutoffs.

The decision path only appends a small record to a bounded in-memory buffer; encoding, key
hashing and file I/O happen in `flush()`, which the server calls every 20 ms (and the engine's
upkeep once a second and at shutdown). A full buffer drops new records and counts them in
`fairvisor_decision_log_dropped_total` rather than ever making a request wait.
"""

import logging
import os
import time

import msgspec

from .decision.memo import table
from .decision.key_hash import KeyHasher, install
from .decision.numbers import client_tokens
from .decision.rules import MICROS, CostRule, LLMRule
from .state import keys

log = logging.getLogger("fairvisor.decision_log")

MAX_BUFFERED = 20_000  # records held between flushes (every 20 ms): room for 1M rejects/s
BACKUPS = 3  # rotated files kept: decisions.jsonl.1 (newest) .. .3
TOP_KEYS_CAPACITY = 64  # counters of the rejected-keys summary (Misra-Gries)
RAW_KEY_JOIN = "|"  # compound key values are shown joined by this


class LogRecord(msgspec.Struct, omit_defaults=True, gc=False):
    """One line of the log. Fields left at their default are omitted from the JSON."""

    ts: str  # RFC 3339 UTC with milliseconds, filled at flush
    event: str  # reject | warn | throttle | would_reject | reload | cutoff
    request_id: str = ""
    policy: str = ""
    rule: str = ""
    reason: str = ""
    key: str = ""  # the request's limit-key value(s): keyed hash or raw (FAIRVISOR_LOG_KEYS, pyengine.decision.key_hash)
    status: int = 0  # HTTP status answered (rejects)
    retry_after_s: int = 0
    delay_ms: int = 0  # throttles
    tokens: int = 0  # LLM tokens the request asked for: prompt estimate + completion reserved
    cost_micros: int = 0  # budget units x 1e6 the request would cost (micro-USD for llm_usd)
    detail: str = ""  # operator-only text, e.g. a kill switch's reason (never sent to the client)
    version: int = 0  # reloads: bundle_version put in force
    hash: str = ""  # reloads: policy hash
    errors: list[str] = []  # refused reloads
    reservation_id: str = ""  # cutoffs
    # Audit records of the admin API (event "admin"; reason says what changed, key the scope value):
    item_id: str = ""  # the kill switch's or override's id
    scope_key: str = ""
    expires_at: str = ""  # RFC 3339; "" = until removed
    actor: str = ""  # which admin token made the change: its fingerprint, never the token; "engine" on expiry


_second = [-1, ""]  # the last whole second formatted by rfc3339_ms, and its text


def rfc3339_ms(epoch_s: float) -> str:
    whole = int(epoch_s)
    if whole != _second[0]:  # records come in time order: one strftime per second, not per record
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int((epoch_s - whole) * 1000):03d}Z"


def shown_values(state_key: str | None) -> str:
    """A rule key's values as people read them (joined by RAW_KEY_JOIN); "" without a key, and
    keys.ABSENT for the shared counter of requests that had none (on_missing_key "shared")."""
    if not state_key:
        return ""
    values = keys.rule_values(state_key)
    return RAW_KEY_JOIN.join(values) if values else keys.ABSENT


class TopKeys:
    """Approximate top rejected keys in bounded memory (Misra-Gries): exact while fewer than
    `capacity` distinct keys were seen; otherwise counts are lower bounds. Amortised O(1)."""

    def __init__(self, capacity: int = TOP_KEYS_CAPACITY):
        self.capacity = capacity
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, item: tuple[str, str]) -> None:
        counts = self.counts
        n = counts.get(item)
        if n is not None:
            counts[item] = n + 1
        elif len(counts) < self.capacity:
            counts[item] = 1
        else:  # decrement every counter; each pass removes at least `capacity` units of weight
            for k in list(counts):
                if counts[k] == 1:
                    del counts[k]
                else:
                    counts[k] -= 1

    def top(self, n: int) -> list[tuple[tuple[str, str], int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _rule_index(bundle) -> dict:
    index = {}
    for p in bundle.policies:
        for r in p.rules + ((p.fallback,) if p.fallback is not None else ()):
            index[(p.id, r.name)] = r
    return index


def _amounts(rule, view) -> tuple[int, int]:
    """(tokens, cost_micros) the request asks of `rule`; 0 where the rule does not count them."""
    req = view.llm
    tokens = 0
    if req is not None:
        completion = rule.completion_tokens(req) if isinstance(rule, LLMRule) else client_tokens(req.max_output_tokens)
        tokens = req.prompt_tokens + completion
    cost = 0
    if isinstance(rule, CostRule):
        if rule.llm_usd:
            price = rule.price(req.model) if req is not None else None
            if price is not None:
                cost = rule.usd_micros(price, req.prompt_tokens,
                                       client_tokens(req.max_output_tokens) or rule.default_completion)
        else:
            cost = int(round(rule.cost(view) * MICROS))
    return tokens, cost


class DecisionLog:
    """Buffered writer with size-based rotation. `path=None`: keep records in memory only
    (`memory=True`, used by `fairvisor test`) or discard them (FAIRVISOR_DECISION_LOG=off)."""

    def __init__(self, path: str | None, key_mode: str = "hashed", max_bytes: int = 64 << 20,
                 metrics=None, memory: bool = False, hasher: KeyHasher | None = None, shown=None):
        self.path = path
        self.hashed = key_mode != "raw"
        self.hasher = hasher if hasher is not None else KeyHasher(None, self.hashed)
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.enabled = path is not None or memory
        self.memory = memory
        self.pending: list[tuple[float, LogRecord]] = []
        self.top_keys = TopKeys()
        self._rules: dict = {}
        self._rules_of = None  # the bundle _rules was built for
        self._failing = False
        self._encoder = msgspec.json.Encoder()
        self.listener = None  # fn(records) given every drained batch (the status page's rejections)
        # state key -> shown_values(key): a flood of rejections repeats a few keys (the engine's
        # "shown_values" memo table, shared with the status page)
        self._shown = table("shown_values") if shown is None else shown

    @classmethod
    def from_settings(cls, settings, metrics, memo=None) -> "DecisionLog":
        path = None if settings.decision_log == "off" else settings.decision_log
        hasher = KeyHasher(settings.state_dir, settings.log_keys != "raw", None if memo is None else memo.key_hash)
        install(hasher)  # engine log lines show keys like the decision log does
        return cls(path, settings.log_keys, settings.decision_log_max_mb << 20, metrics, hasher=hasher,
                   shown=None if memo is None else memo.shown_values)

    # -- recording (decision path: no I/O, no hashing) -----------------------------------

    def _add(self, now_s: float, rec: LogRecord) -> None:
        if len(self.pending) >= MAX_BUFFERED:
            if self.metrics is not None:
                self.metrics.decision_log_dropped.inc()
            return
        self.pending.append((now_s, rec))

    def _rule(self, bundle, policy_id, rule_name):
        if self._rules_of is not bundle:
            self._rules, self._rules_of = _rule_index(bundle), bundle
        return self._rules.get((policy_id, rule_name))

    def decision(self, event: str, d, bundle, view, now_s: float) -> None:
        """A reject, warn or throttle Decision of the enforcing path."""
        rule = self._rule(bundle, d.policy_id, d.rule) if d.rule else None
        key = ""
        if rule is not None:
            state_key = rule.state_key(view)  # values cached per request: no second extraction
            if state_key:
                key = self._shown.get(state_key)
                if key is None:
                    key = self._shown.remember(state_key, shown_values(state_key))
        if event == "reject" and key:
            self.top_keys.add((d.policy_id, key))
        if not self.enabled:
            return
        if len(self.pending) >= MAX_BUFFERED:
            if self.metrics is not None:
                self.metrics.decision_log_dropped.inc()
            return
        tokens, cost = _amounts(rule, view) if rule is not None else (0, 0)
        self.pending.append((now_s, LogRecord(
            ts="", event=event, request_id=view.request_id, policy=d.policy_id or "", rule=d.rule or "",
            reason=(d.reason if event == "reject" else d.warning) or "", key=key, status=d.status,
            retry_after_s=d.retry_after_s, delay_ms=d.delay_ms, tokens=tokens, cost_micros=cost,
            detail=d.detail or "")))

    def would_reject(self, bundle, policy_id: str, rule_name: str, reason: str, state_key: str, view,
                     now_s: float) -> None:
        if not self.enabled:
            return
        rule = self._rule(bundle, policy_id, rule_name)
        key, tokens, cost = "", 0, 0
        if rule is not None:
            key = shown_values(state_key)
            tokens, cost = _amounts(rule, view)
        self._add(now_s, LogRecord(ts="", event="would_reject", request_id=view.request_id, policy=policy_id,
                                   rule=rule_name, reason=reason, key=key, tokens=tokens, cost_micros=cost))

    def reload(self, now_s: float, result: str, version: int = 0, policy_hash: str = "",
               errors: list[str] | None = None) -> None:
        if self.enabled:
            self._add(now_s, LogRecord(ts="", event="reload", reason=result, version=version, hash=policy_hash,
                                       errors=list(errors or ())))

    def cutoff(self, now_s: float, reservation_id: str, counted_tokens: int) -> None:
        if self.enabled:
            self._add(now_s, LogRecord(ts="", event="cutoff", reason="stream_cut", reservation_id=reservation_id,
                                       tokens=counted_tokens))

    def admin(self, now_s: float, change: str, rec, actor: str) -> None:
        """An audit record of the admin API: `change` (kill_switch_added, override_removed, ...)
        to the runtime kill switch or override `rec` (pyengine.overlay.model), by `actor`.
        Also an INFO log line, so the change is on record with the decision log off."""
        log.info("admin: %s id=%s scope=%s=%s by %s", change, rec.id, rec.scope_key, self.shown_key(rec.scope_value),
                 actor)
        if self.enabled:
            expires = rfc3339_ms(rec.expires_at_s) if rec.expires_at_s is not None else ""
            self._add(now_s, LogRecord(ts="", event="admin", reason=change, key=rec.scope_value,
                                       policy=getattr(rec, "policy", None) or "", rule=getattr(rec, "rule", None) or "",
                                       detail=rec.reason or "", item_id=rec.id, scope_key=rec.scope_key,
                                       expires_at=expires, actor=actor))

    # -- output (upkeep and shutdown) -----------------------------------------------------

    def shown_key(self, raw: str) -> str:
        return self.hasher.show(raw)

    def drain(self) -> list[LogRecord]:
        """Take every pending record, finished (timestamp set, key hashed when configured)."""
        pending, self.pending = self.pending, []
        out = []
        for now_s, rec in pending:
            rec.ts = rfc3339_ms(now_s)
            if rec.key and self.hashed:
                rec.key = self.hasher.digest(rec.key)
            out.append(rec)
        if self.listener is not None:
            self.listener(out)
        return out

    def flush(self) -> int:
        """Append pending records to the file (rotating first when it would grow past
        max_bytes); returns the records written. Memory-only logs keep their records."""
        if not self.pending or self.path is None:
            return 0
        records = self.drain()
        data = self._encoder.encode_lines(records)
        try:
            self._rotate_if_needed(len(data))
            with open(self.path, "ab") as f:
                f.write(data)
        except OSError as exc:
            if self.metrics is not None:
                self.metrics.decision_log_dropped.inc((), len(records))
            if not self._failing:  # one line per outage, not one per second
                log.error("decision log %s: cannot write: %s", self.path, exc.strerror or exc)
            self._failing = True
            return 0
        self._failing = False
        if self.metrics is not None:
            self.metrics.decision_log_records.inc((), len(records))
        return len(records)

    def _rotate_if_needed(self, incoming_bytes: int) -> None:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            return
        if size == 0 or size + incoming_bytes <= self.max_bytes:
            return
        for i in range(BACKUPS - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")

    def top_rejected(self, n: int = 10) -> list[dict]:
        return [{"policy": policy, "key": self.shown_key(key), "rejections": count}
                for (policy, key), count in self.top_keys.top(n)]
