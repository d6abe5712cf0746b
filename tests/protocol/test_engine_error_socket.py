"""Over a real Unix socket: a Decide that raises gets a 503 engine_error Verdict, and the connection lives on."""

import asyncio

from pyengine.clock import FakeClock
from pyengine.decision.rules import TokenBucketRule
from pyengine.protocol.framing import encode_frame
from pyengine.protocol.messages import PROTOCOL_VERSION, Health, Hello, Metrics, Reply, Verdict
from pyengine.server import EngineServer

from ..engine.helpers import make_engine, one_rule_bundle
from .test_server import RULE, _Client, _decide_msg, _open_clients


def test_a_raising_decide_is_a_503_verdict_and_the_connection_keeps_serving(tmp_path, monkeypatch):
    engine = make_engine(one_rule_bundle(RULE), clock=FakeClock())
    real = TokenBucketRule.apply

    def apply(self, view, key, now_s):
        if view.client_ip == "10.6.6.6":
            raise OverflowError("a bug on this request only")
        return real(self, view, key, now_s)
    monkeypatch.setattr(TokenBucketRule, "apply", apply)
    path = str(tmp_path / "engine.sock")

    def scenario():
        c = _Client(path)
        hello = c.call(Hello(protocol_version=PROTOCOL_VERSION))
        bad = c.call(_decide_msg(hello, "10.6.6.6"))
        assert isinstance(bad, Verdict) and bad.status == 503
        assert bad.headers[bad.headers.index("X-Fairvisor-Reason") + 1] == "engine_error"
        assert '"reason":"engine_error"' in bad.body
        # Same connection, next frames: decided as usual; pipelined with a failing one too.
        assert c.call(_decide_msg(hello, "10.1.1.1")).status == 0
        c.send_raw(b"".join(encode_frame(_decide_msg(hello, ip)) for ip in ("10.6.6.6", "10.1.1.1")))
        assert [c.recv().status, c.recv().status] == [503, 0]
        metrics = c.call(Metrics())
        assert 'fairvisor_engine_errors_total{where="decide"} 2' in metrics.body
        assert isinstance(c.call(Health()), Reply)
        return True

    async def main():
        server = EngineServer(engine, path, max_frame_bytes=4096)
        await server.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, scenario)
        finally:
            await server.shutdown()

    try:
        assert asyncio.run(main())
    finally:
        while _open_clients:
            _open_clients.pop().sock.close()
