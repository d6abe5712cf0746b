"""Test-only faults: with this directory on PYTHONPATH, Python runs this module at start. The
engine's token-bucket rule raises for one tenant (FVTEST_RAISE_FOR_TENANT), or the engine holds
replies until a later frame (FVTEST_HOLD_UNTIL, below). Nothing in the shipped code knows about
them; tests/integration/test_enforcement_integrity.py starts an edge with the first to see what
nginx answers when a decision raises, tests/integration/test_pipe.py with the second."""

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

# FVTEST_HOLD_UNTIL="HOLD,RELEASE": the engine holds its replies on a connection from the read
# that carries the bytes HOLD until a later read on it carries RELEASE, then writes them, in
# order, before that read's own. A shim that waits for one batch's replies before it sends the
# next never delivers RELEASE (tests/integration/test_pipe.py).
_HOLD_UNTIL = os.environ.get("FVTEST_HOLD_UNTIL")
_HOLD_MARK = os.environ.get("FVTEST_HOLD_MARK")  # a file created once a read carried HOLD

if _HOLD_UNTIL:
    from pyengine.protocol import connection

    _hold, _release = (part.encode() for part in _HOLD_UNTIL.split(","))
    _real_received = connection.ConnectionProtocol.data_received

    class _Held:
        """Stands in for the transport while replies are held: collects what would be written."""

        def __init__(self, transport):
            self.transport, self.parts = transport, []

        def write(self, data):
            self.parts.append(bytes(data))

        def __getattr__(self, name):
            return getattr(self.transport, name)

    def _received(self, data):
        held = self.transport if isinstance(self.transport, _Held) else None
        if held is not None and _release in data:
            self.transport = held.transport
            self.transport.write(b"".join(held.parts))
            held = None
        elif held is None and _hold in data:
            self.transport = held = _Held(self.transport)
            if _HOLD_MARK:  # tells the test the held frame was read, before its reply is held
                open(_HOLD_MARK, "w").close()
        _real_received(self, data)

    connection.ConnectionProtocol.data_received = _received
