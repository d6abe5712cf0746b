"""The engine side of the LLM reverse proxy: streaming recipes on allow, settlement after the response."""

import logging

import msgspec

from ..llm.estimator import Estimator
from ..llm.providers import BY_NAME, PLAIN
from ..llm.sse import is_event_stream
from ..protocol.messages import Reply, Settle
from .reservations import completion_allowance, refund_all, settle

log = logging.getLogger("fairvisor.llm")

SETTLE_BYTES = 64 * 1024  # head + tail of each response kept by the shim for usage parsing
_json = msgspec.json.Encoder()


class LLMProxy:
    """Per engine: the learned ratios and the open reservations; each request in its own format."""

    def __init__(self, reservations, metrics, decision_log=None):
        self.reservations = reservations
        self.metrics = metrics
        self.decision_log = decision_log
        self.estimator = Estimator()

    def attach(self, verdict, reservation_id: str, view) -> None:
        """Fill the response-side recipe of an allowed, reserving request (Verdict fields 6-13),
        in the request's format (its reservation's adapter). A plain-HTTP request is only
        settled (refund on an error)."""
        req = view.llm
        r = self.reservations.get(reservation_id)
        if r is None:
            return
        verdict.settle_bytes = SETTLE_BYTES  # Settle also ends in-flight leases (concurrency)
        a = BY_NAME.get(r.llm_format)
        if a is None or req is None:
            return
        verdict.allowance_tokens = completion_allowance(r, req)
        verdict.count_regex = a.count_regex
        verdict.chars_per_token_milli = int(self.estimator.output.get(req.model) * 1000)
        verdict.cutoff = a.cutoff(req.model or "")
        verdict.capture_regex = a.capture_regex
        if a.name == "openai" and req.stream and req.readable and view.body:
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
        if msg.status == 0 and msg.client_aborted and msg.upstream_bytes_sent != 0:
            # The client left before the response headers, but the upstream got the request
            # (-1: an older shim did not say; assume it did) and may have run it: the prompt at least.
            return self._charge(r, msg, "aborted", r.prompt_estimate_tokens, msg.counted_tokens, True, now_s)
        if msg.status == 0 or (not 200 <= msg.status < 400 and not (msg.client_aborted and msg.counted_tokens)):
            refund_all(r, now_s)  # not reached, or it failed (connect error, 4xx/5xx): nothing consumed
            m.reservation_unused.inc((), r.tokens)
            m.llm_settlements.inc(("refunded",))
            return _ok({"settled": "refunded"})
        adapter = BY_NAME.get(r.llm_format, PLAIN)
        usage = adapter.usage(msg.tail)
        completion = usage.completion_tokens
        prompt = usage.prompt_tokens if usage.prompt_tokens is not None else r.prompt_estimate_tokens
        # Only what reached the client is charged. The tail holds nothing past a cut (the
        # shim stops filtering there), so a running total (Gemini) is exactly what was sent;
        # a once-at-the-end count (OpenAI, Anthropic) never arrives for a cut stream.
        if usage.prompt_tokens:
            # The provider's prompt count is the truth however the answer ended (Anthropic's
            # message_start and Gemini's running totals reach a cut stream too): learn from it.
            m.estimate_error.observe(r.prompt_estimate_tokens / usage.prompt_tokens)
            self.estimator.prompt.observe(r.model, r.prompt_chars, usage.prompt_tokens)
        if completion is not None and (not msg.cut or adapter.running_totals):
            result = "cut" if msg.cut else "exact"
            reply = self._charge(r, msg, result, prompt, completion, True, now_s, usage)
            self.estimator.output.observe(r.model, msg.counted_chars, completion)
            return reply
        if msg.cut or (msg.client_aborted and (msg.counted_tokens or is_event_stream(msg.tail))):
            # A stream ended early, by the cutoff, by the client or by an upstream that broke off
            # mid-stream (nginx: request not completed): the shim counted every event it passed,
            # so what it counted is what was sent. A JSON body cut short has no such count.
            # (No output truth arrives for OpenAI or Anthropic: their final count comes after.)
            return self._charge(r, msg, "cut" if msg.cut else "counted", prompt, msg.counted_tokens, True, now_s,
                                usage)
        # A 2xx answer whose usage cannot be read (contract §3): the whole reservation stands,
        # never zero; anything counted beyond it is charged too.
        return self._charge(r, msg, "unmetered", prompt, msg.counted_tokens, False, now_s, usage)

    def _charge(self, r, msg: Settle, result: str, prompt: int, completion: int, refund: bool, now_s: float,
                usage=None) -> Reply:
        """Settle at (prompt, completion) tokens; `refund` False keeps at least the reservation.
        `usage`: the provider's counts, whose cached and cache-written prompt tokens are priced
        at their own prices (only when its prompt count is the one charged)."""
        cached = written = 0
        if usage is not None and usage.prompt_tokens == prompt:
            cached, written = usage.cached_input_tokens, usage.cache_write_tokens
        settle(r, prompt, completion, r.model, now_s, refund, cached, written)
        m = self.metrics
        if refund:  # unrefunded (unmetered) settlements give nothing back
            m.reservation_unused.inc((), max(0, r.tokens - prompt - completion))
        m.tokens_settled.inc(("prompt",), prompt)
        m.tokens_settled.inc(("completion",), completion)
        m.llm_settlements.inc((result,))
        if msg.cut and self.decision_log is not None:
            self.decision_log.cutoff(now_s, msg.reservation_id, msg.counted_tokens)
        return _ok({"settled": result, "prompt_tokens": prompt, "completion_tokens": completion})


def _ok(body: dict) -> Reply:
    return Reply(status=200, content_type="application/json", body=_json.encode(body).decode())
