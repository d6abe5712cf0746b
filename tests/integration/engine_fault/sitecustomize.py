"""Test-only fault: with this directory on PYTHONPATH, Python runs this module at start, and the
engine's token-bucket rule raises for one tenant (FVTEST_RAISE_FOR_TENANT). Nothing in the
shipped code knows about it; tests/integration/test_enforcement_integrity.py starts an edge
with it to see what nginx answers when a decision raises."""

import os

_TENANT = os.environ.get("FVTEST_RAISE_FOR_TENANT")

if _TENANT:
    from pyengine.decision import rules

    _real_apply = rules.TokenBucketRule.apply

    def _apply(self, view, key, now_s):
        if view.header("x-tenant") == _TENANT:
            raise ZeroDivisionError("fault injected by tests/integration/engine_fault")
        return _real_apply(self, view, key, now_s)

    rules.TokenBucketRule.apply = _apply
