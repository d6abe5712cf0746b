"""The engine side of the LLM reverse proxy: streaming recipes on allow, settlement after the response."""

import logging

import msgspec

from ..protocol.messages import Reply, Settle
from ..reservations import completion_allowance, refund_all, reserved_tokens, settle
from .estimator import Estimator
from .providers import ADAPTERS

log = logging.getLogger("fairvisor.llm")

SETTLE_BYTES = 64 * 1024  # head + tail of each response kept by the shim for usage parsing
_json = msgspec.json.Encoder()


class LLMProxy:
    """Per engine: the configured provider format, the learned ratios, the open reservations."""

    def __init__(self, llm_format: str, reservations, metrics, decision_log=None):
        self.adapter = ADAPTERS[llm_format]
        self.reservations = reservations
        self.metrics = metrics
        self.decision_log = decision_log
        self.estimator = Estimator()

    def attach(self, verdict, reservation_id: str, view) -> None:
        """Fill the response-side recipe of an allowed, reserving request (Verdict fields 6-12)."""
        req = view.llm
        r = self.reservations.get(reservation_id)
        if r is None or req is None:
            return
        a = self.adapter
        verdict.allowance_tokens = completion_allowance(r, req)
        verdict.count_regex = a.count_regex
        verdict.chars_per_token_milli = int(self.estimator.output.get(req.model) * 1000)
        verdict.cutoff = a.cutoff(req.model or "")
        verdict.settle_bytes = SETTLE_BYTES
        if a.name == "openai" and req.stream and view.body:
            body = a.with_usage(view.body)
            if body is not None:  # the client did not ask for usage: ask for it, and hide it
                verdict.new_body = body
                verdict.drop_regex = a.injected_usage_regex

    def settle(self, msg: Settle, now_s: float) -> Reply:
        r = self.reservations.take(msg.reservation_id)
        if r is None:  # held by an engine that died (or expired): its charge stays as reserved
            self.metrics.llm_settlements.inc(("lost",))
            return Reply(status=404, content_type="application/json", body='{"error":"unknown reservation"}')
        m = self.metrics
        if not 200 <= msg.status < 400 and not (msg.client_aborted and msg.counted_tokens):
            refund_all(r, now_s)  # no usable answer: nothing was consumed
            m.reservation_unused.inc((), reserved_tokens(r))
            m.llm_settlements.inc(("refunded",))
            return _ok({"settled": "refunded"})
        usage = self.adapter.usage(msg.tail)
        completion = usage.completion_tokens
        # Only what reached the client is charged. The tail holds nothing past a cut (the
        # shim stops filtering there), so a running total (Gemini) is exactly what was sent;
        # a once-at-the-end count (OpenAI, Anthropic) never arrives for a cut stream.
        exact = completion is not None and (not msg.cut or self.adapter.running_totals)
        if not exact:
            completion = msg.counted_tokens
        prompt = usage.prompt_tokens if usage.prompt_tokens is not None else r.prompt_estimate_tokens
        settle(r, prompt, completion, r.model, now_s)
        m.reservation_unused.inc((), max(0, reserved_tokens(r) - prompt - completion))
        m.tokens_settled.inc(("prompt",), prompt)
        m.tokens_settled.inc(("completion",), completion)
        if usage.prompt_tokens:
            m.estimate_error.observe(r.prompt_estimate_tokens / usage.prompt_tokens)
            self.estimator.prompt.observe(r.model, r.prompt_chars, usage.prompt_tokens)
        if exact:
            self.estimator.output.observe(r.model, msg.counted_chars, completion)
        m.llm_settlements.inc(("cut" if msg.cut else "exact" if exact else "counted",))
        if msg.cut and self.decision_log is not None:
            self.decision_log.cutoff(now_s, msg.reservation_id, msg.counted_tokens)
        return _ok({"settled": "cut" if msg.cut else "ok", "prompt_tokens": prompt, "completion_tokens": completion})


def _ok(body: dict) -> Reply:
    return Reply(status=200, content_type="application/json", body=_json.encode(body).decode())
