"""An exception inside a decision rejects that request (503 engine_error), undoes its charges and is counted."""

import json
import logging

from pyengine.clock import FakeClock
from pyengine.engine_errors import EngineErrors
from pyengine.metrics import EngineMetrics
from pyengine.protocol.messages import SURFACE_INLINE, ErrorReply, Reply, Settle, Usage

from .helpers import decide, described, hdr, make_engine, rule_key

ROOMY = {"name": "roomy", "limit_keys": ["ip:address"], "algorithm": "token_bucket",
         "algorithm_config": {"rps": 1, "burst": 100}}
FAULTY = {"name": "faulty", "limit_keys": ["header:x-tenant"], "algorithm": "token_bucket",
          "algorithm_config": {"rps": 1, "burst": 100}}
BUNDLE = {"bundle_version": 1, "policies": [{"id": "p", "spec": {"selector": {"pathPrefix": "/"},
                                                                 "rules": [ROOMY, FAULTY]}}]}


def fault_on(monkeypatch, engine, rule_index: int, tenant: str, exc=ZeroDivisionError):
    """Make one compiled rule raise for one tenant: a genuine exception inside Pipeline.decide."""
    target = engine.bundle.policies[0].rules[rule_index]
    real = type(target).apply

    def apply(self, view, key, now_s):
        if self is target and view.header("x-tenant") == tenant:
            raise exc("boom")
        return real(self, view, key, now_s)
    monkeypatch.setattr(type(target), "apply", apply)  # rules have __slots__: patched on the class


def roomy_tokens(engine) -> int:
    bucket = engine.bundle.policies[0].rules[0].bucket
    return int(bucket.peek(rule_key("p", "roomy", "10.0.0.1"), engine.clock.now_s()))


def errors(engine, where="decide") -> float:
    return engine.metrics.engine_errors.values[(where,)]


def break_allow_render(monkeypatch):
    """Rendering an allow raises: a bug after the pipeline allowed and charged."""
    import pyengine.engine as engine_module

    def broken_render(d, surface, llm_format, memo=None):
        if d.status == 0:
            raise RuntimeError("render bug")
        return real_render(d, surface, llm_format, memo)
    real_render = engine_module.render
    monkeypatch.setattr(engine_module, "render", broken_render)


def test_a_rule_that_raises_rejects_with_engine_error_and_the_earlier_charge_is_undone(monkeypatch):
    engine = make_engine(BUNDLE)
    fault_on(monkeypatch, engine, 1, "evil")
    v = described(engine, xff="10.0.0.1", headers={"X-Tenant": "evil"})
    assert v.status == 503 and hdr(v, "X-Fairvisor-Reason") == "engine_error"
    body = json.loads(v.body)
    assert body["status"] == 503 and body["reason"] == "engine_error"
    assert hdr(v, "Content-Type") == "application/problem+json"
    assert roomy_tokens(engine) == 100  # the first rule charged, then was undone: all or nothing
    assert errors(engine) == 1
    assert engine.metrics.decisions.values[("reject", "engine_error", "")] == 1
    # The engine keeps deciding, for everyone else and for the next request.
    ok = described(engine, xff="10.0.0.1", headers={"X-Tenant": "good"})
    assert ok.status == 0 and roomy_tokens(engine) == 99


def test_inline_surface_gets_the_provider_error_shape(monkeypatch):
    engine = make_engine(BUNDLE, mode="reverse_proxy", backend_url="http://127.0.0.1:9", llm_format="openai")
    fault_on(monkeypatch, engine, 1, "evil", TypeError)
    v = decide(engine, headers={"X-Tenant": "evil"}, surface=SURFACE_INLINE)
    assert v.status == 503
    assert json.loads(v.body)["error"] == {"message": "The rate-limit engine failed on this request; "
                                                      "it was not let through", "type": "server_error",
                                           "code": "engine_error"}


def test_an_error_after_the_pipeline_allowed_undoes_the_allow(monkeypatch):
    engine = make_engine(BUNDLE)
    break_allow_render(monkeypatch)
    v = described(engine, xff="10.0.0.1", headers={"X-Tenant": "t"})
    assert v.status == 503 and hdr(v, "X-Fairvisor-Reason") == "engine_error"
    assert roomy_tokens(engine) == 100  # both rules charged on allow; both undone
    tenant = engine.bundle.policies[0].rules[1].bucket
    assert int(tenant.peek(rule_key("p", "faulty", "t"), engine.clock.now_s())) == 100


def test_an_undo_that_raises_after_an_allow_is_counted_and_the_other_charges_are_still_undone(monkeypatch):
    engine = make_engine(BUNDLE)
    break_allow_render(monkeypatch)
    faulty = engine.bundle.policies[0].rules[1]
    real_undo = type(faulty).undo

    def undo(self, key, amount, at_s, now_s):
        if self is faulty:
            raise ValueError("undo bug")
        return real_undo(self, key, amount, at_s, now_s)
    monkeypatch.setattr(type(faulty), "undo", undo)
    v = described(engine, xff="10.0.0.1", headers={"X-Tenant": "t"})
    assert v.status == 503 and hdr(v, "X-Fairvisor-Reason") == "engine_error"
    assert errors(engine) == 2  # the render bug, then the undo that failed
    assert roomy_tokens(engine) == 100  # undone although the charge after it could not be


def test_settle_and_usage_that_raise_are_counted_and_answered(monkeypatch):
    engine = make_engine(BUNDLE)
    import pyengine.engine_messages as engine_messages

    def broken(*args, **kw):
        raise KeyError("secret-tenant")
    monkeypatch.setattr(engine_messages, "handle_usage", broken)
    reply = engine.handle(Usage(body=b"{}"))
    assert isinstance(reply, Reply) and reply.status == 500 and json.loads(reply.body)["reason"] == "engine_error"
    monkeypatch.setattr(engine.decision_log, "cutoff", broken)
    reply = engine.handle(Settle(reservation_id="r", status=200, counted_tokens=1, cut=True))
    assert isinstance(reply, ErrorReply) and reply.code == "engine_error"
    assert errors(engine, "usage") == 1 and errors(engine, "settle") == 1
    assert described(engine, xff="10.0.0.1").status == 0  # still serving


def test_tracebacks_are_rate_limited_and_hide_the_message_when_keys_are_hashed(caplog):
    clock = FakeClock(100.0)
    metrics = EngineMetrics()
    errs = EngineErrors(metrics, hide_values=True, clock=clock.now_s)
    caplog.set_level(logging.ERROR, logger="fairvisor.engine")
    client_value = "".join(["victim", "-tenant-id"])  # not in the source lines a traceback quotes
    for _ in range(5):
        try:
            raise KeyError(client_value)
        except KeyError:
            errs.record("decide")
    clock.advance(1.0)
    try:
        raise KeyError(client_value)
    except KeyError:
        errs.record("decide")
    assert metrics.engine_errors.values[("decide",)] == 6
    assert metrics.engine_errors.values[("settle",)] == 0  # every label exists from the start
    records = [r.getMessage() for r in caplog.records]
    assert len(records) == 2  # one a second, the rest counted in the next line
    assert "4 more since the last one" in records[1]
    assert all("KeyError" in r and "test_engine_errors.py" in r for r in records)
    assert not any(client_value in r for r in records)


def test_raw_key_mode_logs_the_whole_exception(caplog):
    errs = EngineErrors(EngineMetrics(), hide_values=False)
    caplog.set_level(logging.ERROR, logger="fairvisor.engine")
    try:
        raise KeyError("visible")
    except KeyError:
        errs.record("decide")
    assert "visible" in caplog.text
