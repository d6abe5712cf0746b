"""Prometheus text exposition from the engine, so every nginx worker reports the same numbers.

A hand-written writer rather than prometheus-client: the engine needs counters, gauges and two
histograms, updated on the hot path; a dict increment per event costs ~50 ns here, while
prometheus-client's labelled child lookup and locking cost several times that per call.
"""

import bisect
import math


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple, values: tuple) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)) + "}"


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Counter:
    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: tuple = (), alias: tuple | None = None):
        self.name, self.help, self.labelnames = name, help_text, labelnames
        self.values: dict[tuple, float] = {}
        # (name, index): one more label repeating label `index` under another name, for
        # dashboards written against another name (fairvisor/edge's policy_id); rendering only.
        self.alias = alias

    def inc(self, labels: tuple = (), n: float = 1) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + n

    def lines(self):
        names = self.labelnames
        if self.alias is not None:
            names, at = names + (self.alias[0],), self.alias[1]
        for labels, v in self.values.items():
            if self.alias is not None:
                labels = labels + (labels[at],)
            yield f"{self.name}{_labels(names, labels)} {_num(v)}"


class Gauge(Counter):
    kind = "gauge"

    def set(self, labels: tuple, value: float) -> None:
        self.values[labels] = value


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: tuple):
        self.name, self.help = name, help_text
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # last slot: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self):
        acc = 0
        for bound, n in zip(self.buckets, self.counts):
            acc += n
            yield f'{self.name}_bucket{{le="{_num(bound)}"}} {acc}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{self.name}_sum {_num(self.sum)}"
        yield f"{self.name}_count {self.count}"


class Registry:
    def __init__(self):
        self._metrics: list = []

    def add(self, metric):
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        out = []
        for m in self._metrics:
            out.append(f"# HELP {m.name} {m.help}")
            out.append(f"# TYPE {m.name} {m.kind}")
            out.extend(m.lines())
        return "\n".join(out) + "\n"


class EngineMetrics:
    """The contract §6 set. Labels carry policy ids and reason codes, never raw tenant keys."""

    def __init__(self):
        r = self.registry = Registry()
        self.decisions = r.add(Counter("fairvisor_decisions_total", "Decisions by action, reason and policy "
                                       "(policy_id repeats policy, fairvisor/edge's label).",
                                       ("action", "reason", "policy"), alias=("policy_id", 2)))
        self.duration = r.add(Histogram("fairvisor_decision_duration_seconds", "Engine time per decision.",
                                        (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2)))
        self.tokens_reserved = r.add(Counter("fairvisor_tokens_reserved_total", "LLM tokens reserved before requests."))
        self.tokens_settled = r.add(Counter("fairvisor_tokens_settled_total", "LLM tokens settled on actual usage.",
                                            ("type",)))
        self.estimate_error = r.add(Histogram("fairvisor_token_estimate_error_ratio",
                                              "Estimated prompt tokens / actual prompt tokens.",
                                              (0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)))
        self.would_reject = r.add(Counter("fairvisor_would_reject_total", "Shadow-mode rejections not enforced.",
                                          ("policy", "reason")))
        self.loop_detected = r.add(Counter("fairvisor_loop_detected_total", "Agent loops detected.", ("policy",)))
        self.circuit_state = r.add(Gauge("fairvisor_circuit_state", "Breaker state: 0 closed, 1 open, 2 half-open.",
                                         ("policy",)))
        self.kill_switch_active = r.add(Gauge("fairvisor_kill_switch_active", "Kill switches in force."))
        self.policy_info = r.add(Gauge("fairvisor_policy_info", "The policy bundle in force.", ("version", "hash")))
        self.reloads = r.add(Counter("fairvisor_policy_reload_total", "Policy loads by result.", ("result",)))
        self.engine_unavailable = r.add(Counter("fairvisor_engine_unavailable_total",
                                                "Requests nginx answered by fail mode (reported by the shim)."))
        self.engine_errors = r.add(Counter("fairvisor_engine_errors_total",
                                           "Exceptions inside the engine, by where (decide: the request was "
                                           "rejected with engine_error, never allowed).", ("where",)))
        self.rule_skipped = r.add(Counter("fairvisor_rule_skipped_total", "Rules skipped: a limit key was missing.",
                                          ("policy", "rule")))
        self.llm_settlements = r.add(Counter("fairvisor_llm_settlements_total",
                                             "LLM responses settled, by how the usage was known: exact, cut, counted, "
                                             "unmetered (2xx, usage unreadable: the whole reservation), aborted, "
                                             "refunded, lost (the reservation was unknown, e.g. after an engine restart).",
                                             ("result",)))
        self.reservations_expired = r.add(Counter("fairvisor_reservations_expired_total",
                                                  "LLM reservations never settled, dropped after their TTL "
                                                  "(they stay charged as reserved)."))
        self.reservations_evicted = r.add(Counter("fairvisor_reservations_evicted_total",
                                                  "LLM reservations expired before their TTL because the engine "
                                                  "held its maximum of open ones (they stay charged as reserved)."))
        self.reservations_open = r.add(Gauge("fairvisor_reservations_open", "LLM reservations not yet settled."))
        self.state_keys = r.add(Gauge("fairvisor_state_keys", "Limiter state entries held in memory."))
        self.memo_entries = r.add(Gauge("fairvisor_engine_memo_entries",
                                        "Entries in each of the engine's memo tables (pyengine.decision.memo).", ("table",)))
        self.memo_clears = r.add(Gauge("fairvisor_engine_memo_clears",
                                       "Times each memo table was full and cleared whole since start.", ("table",)))
        self.state_evictions = r.add(Counter("fairvisor_state_evictions_total",
                                             "Live limiter state entries evicted because the store held "
                                             "FAIRVISOR_MAX_STATE_KEYS (their keys start afresh)."))
        self.decision_log_records = r.add(Counter("fairvisor_decision_log_records_total",
                                                  "Decision log lines written."))
        self.decision_log_dropped = r.add(Counter("fairvisor_decision_log_dropped_total",
                                                  "Decision log records lost: buffer full or file unwritable."))
        self.circuit_breakers = r.add(Gauge("fairvisor_circuit_breakers",
                                            "Breaker keys per state (open, half_open); closed is the rest.",
                                            ("policy", "state")))
        self.kill_switch_hits = r.add(Gauge("fairvisor_kill_switch_hits_total",
                                            "Requests refused per kill switch (durable; switch = digest of its scope).",
                                            ("switch",)))
        self.state_snapshot_errors = r.add(Counter("fairvisor_state_snapshot_errors_total",
                                                   "Durable-state files that failed to write (errno) or were corrupt.",
                                                   ("error",)))
        self.state_restore_skipped = r.add(Counter("fairvisor_state_restore_skipped_total",
                                                   "Durable-state entries (bad_value) or files (stray_name) skipped "
                                                   "at restore; a corrupt file counts as a snapshot error.",
                                                   ("reason",)))
        self.strict_decisions = r.add(Counter("fairvisor_strict_decisions_total",
                                              "Requests with consistency=strict rules, by where they were decided: "
                                              "store (one atomic call) or local (store unreachable or slow).",
                                              ("path",)))
        # Shim connections and frames (set when scraped by the server): frames / reads is the
        # mean number of frames one read carried, i.e. how well the shim's pipe batches.
        self.shim_connections = r.add(Gauge("fairvisor_shim_connections", "Open connections from nginx workers."))
        self.frames = r.add(Counter("fairvisor_frames_total", "Request frames received from the shim."))
        self.frame_reads = r.add(Counter("fairvisor_frame_reads_total", "Socket reads that carried request frames."))
        self.shim_pending_bytes = r.add(Gauge("fairvisor_shim_pending_bytes",
                                              "Bytes of partial request frames buffered across shim connections."))
        self.shim_connections_closed = r.add(Counter("fairvisor_shim_connections_closed_total",
                                                     "Shim connections the engine closed: idle, partial_frame "
                                                     "(stalled mid-frame) or buffer_budget (too many bytes pending).",
                                                     ("reason",)))
        self.tokens_reserved.inc((), 0)  # unlabelled and known label sets start at 0, so rate() works at once
        self.tokens_settled.inc(("prompt",), 0)
        self.tokens_settled.inc(("completion",), 0)
        self.decision_log_records.inc((), 0)
        self.state_evictions.inc((), 0)
        self.decision_log_dropped.inc((), 0)
        self.engine_unavailable.inc((), 0)
        self.reservations_expired.inc((), 0)
        self.reservations_evicted.inc((), 0)
        self.kill_switch_active.set((), 0)

    def render(self) -> str:
        return self.registry.render()
