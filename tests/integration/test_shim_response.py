"""The shim's response side against real nginx, a scripted engine and a scripted upstream.

The engine here answers every Decide with a fixed Verdict recipe and records each Settle, so
these tests pin what the shim itself does (SSE splitting across chunks, CRLF, drop, count,
cutoff, head/tail bytes, new_body, client abort) independently of the real engine's policy.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest

from pyengine.cli.nginx_conf import prepare_runtime_dir, render
from pyengine.config import from_env
from pyengine.protocol.framing import decode_request, encode_frame
from pyengine.protocol.messages import Decide, Hello, HelloReply, Reply, Settle, Verdict

from .conftest import free_port, reachable_dir, wait_until

pytestmark = pytest.mark.integration


class _ThreadedServer:
    """Serves each accepted connection on its own thread with `self._serve(conn)`."""

    sock: socket.socket

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()


class ScriptedEngine(_ThreadedServer):
    """Unix-socket engine: HelloReply, then `verdict` for every Decide; Settles are recorded."""

    def __init__(self, path: str, verdict: Verdict):
        self.path, self.verdict = path, verdict
        self.settles: list[Settle] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)  # a test engine: nginx's workers (another user when run as root) connect
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()


    def _serve(self, conn):
        with conn:
            f = conn.makefile("rb")
            while head := f.read(4):
                msg = decode_request(f.read(int.from_bytes(head, "big")))
                if isinstance(msg, Hello):
                    reply = HelloReply(protocol_version=1, generation=1, headers=[], needs_body=True,
                                       max_body_bytes=1 << 20)
                elif isinstance(msg, Decide):
                    reply = self.verdict
                else:
                    assert isinstance(msg, Settle)
                    self.settles.append(msg)
                    reply = Reply(status=200, content_type="application/json", body="{}")
                conn.sendall(encode_frame(reply))

    def close(self):
        self.sock.close()


class ScriptedUpstream(_ThreadedServer):
    """HTTP/1.1 upstream that answers with `chunks` (chunked encoding), `pause_s` apart."""

    def __init__(self, content_type: str, chunks: list[bytes], pause_s: float = 0.05):
        self.content_type, self.chunks, self.pause_s = content_type, chunks, pause_s
        self.bodies: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()


    def _serve(self, conn):
        with conn:
            f = conn.makefile("rb")
            headers = {}
            f.readline()
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            self.bodies.append(f.read(int(headers.get("content-length", 0))))
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + self.content_type.encode()
                             + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                for chunk in self.chunks:
                    conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    time.sleep(self.pause_s)
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass

    def close(self):
        self.sock.close()


@pytest.fixture
def shim_edge():
    """shim_edge(verdict, upstream) -> port of an nginx wired to a ScriptedEngine."""
    procs, closers = [], []
    tmp_path = reachable_dir("fv-shim-")  # as root the workers are www-data (cli/worker_user.py)

    def start(verdict: Verdict, upstream: ScriptedUpstream):
        engine = ScriptedEngine(str(tmp_path / "engine.sock"), verdict)
        closers.append(engine.close)
        closers.append(upstream.close)
        port = free_port()
        settings = from_env({"FAIRVISOR_MODE": "reverse_proxy", "FAIRVISOR_LLM_FORMAT": "openai",
                             "FAIRVISOR_BACKEND_URL": f"http://127.0.0.1:{upstream.port}",
                             "FAIRVISOR_LISTEN": f"127.0.0.1:{port}", "FAIRVISOR_WORKER_PROCESSES": "1",
                             "FAIRVISOR_STATE_DIR": str(tmp_path), "FAIRVISOR_ENGINE_SOCKET": engine.path,
                             # These tests are about the response side; a scripted engine thread
                             # on a loaded machine may take more than the default 100 ms, and a
                             # timeout would apply the fail mode (no recipe) instead.
                             "FAIRVISOR_ENGINE_TIMEOUT_MS": "3000"})
        runtime = prepare_runtime_dir(tmp_path / "nginx")
        (runtime / "nginx.conf").write_text(render(settings, runtime))
        procs.append(subprocess.Popen(["nginx", "-p", str(runtime), "-c", str(runtime / "nginx.conf"),
                                       "-e", str(runtime / "error.log")]))

        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_until(listening, 10.0, "nginx to listen")
        return port, engine

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)
    for close in closers:
        close()


def http_post(port: int, body: bytes = b"{}") -> tuple[bytes, bytes]:
    """(raw head, de-chunked body) of one POST on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return head, rest
    body_out = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head, body_out
        body_out, rest = body_out + rest[:size], rest[size + 2:]


def wait_settle(engine: ScriptedEngine) -> Settle:
    wait_until(lambda: engine.settles, 5.0, "a Settle from the shim")
    assert len(engine.settles) == 1
    return engine.settles[0]


CUTOFF = 'data: {"finish":"length"}\r\n\r\ndata: [DONE]\r\n\r\n'


def sse_recipe(**kw) -> Verdict:
    fields = dict(status=0, headers=["X-Recipe", "on"], reservation_id="r-1", allowance_tokens=10,
                  count_regex=r'"t":"([^"]*)"', chars_per_token_milli=2000, cutoff=CUTOFF,
                  drop_regex=r'"drop":true', settle_bytes=64)
    fields.update(kw)
    return Verdict(**fields)


def test_crlf_events_split_across_chunks_are_dropped_counted_and_cut(shim_edge):
    ev = [b'data: {"t":"abcd"}\r\n\r\n', b'data: {"drop":true,"t":"zzzzzzzzzzzzzzzzzzzz"}\r\n\r\n',
          b'data: {"t":"efghijklmnop"}\r\n\r\n', b'data: {"t":"qrstuvwx"}\r\n\r\n', b'data: {"t":"late"}\r\n\r\n']
    # Chunk boundaries fall inside events and inside the CRLF CRLF separator.
    stream = b"".join(ev)
    cuts = [5, len(ev[0]) - 2, len(ev[0]) + 30, len(ev[0] + ev[1]) + 3, len(ev[0] + ev[1] + ev[2]) + 1]
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    up = ScriptedUpstream("text/event-stream; charset=utf-8", chunks)
    port, engine = shim_edge(sse_recipe(), up)
    head, body = http_post(port)
    assert b"x-recipe: on" in head.lower()
    assert b"content-length" not in head.lower()
    # 4 + 12 chars = 16 chars = 8 tokens (2 chars/token) < 10; + 8 more = 24 chars = 12 tokens: cut.
    assert body == ev[0] + ev[2] + ev[3] + CUTOFF.encode()
    s = wait_settle(engine)
    assert (s.reservation_id, s.status, s.counted_tokens, s.cut, s.counted_chars) == ("r-1", 200, 12, True, 24)
    assert not s.client_aborted
    # The upstream's bytes, first 32 and last 32: with the dropped event, and with the rest of
    # the chunk that was cut ("late" came in the same chunk; later chunks never reach the filter).
    assert s.tail == stream[:32] + stream[-32:]


def test_unterminated_last_event_is_flushed_at_eof_and_small_bodies_settle_whole(shim_edge):
    chunks = [b'data: {"t":"ab"}\n', b'\ndata: {"drop":true}\n\ndata: {"t":"cd"}']
    up = ScriptedUpstream("text/event-stream", chunks)
    port, engine = shim_edge(sse_recipe(settle_bytes=4096), up)
    _, body = http_post(port)
    assert body == b'data: {"t":"ab"}\n\ndata: {"t":"cd"}'
    s = wait_settle(engine)
    assert (s.counted_chars, s.counted_tokens, s.cut) == (4, 2, False)
    assert s.tail == b"".join(chunks)


def test_json_response_passes_untouched_and_new_body_reaches_the_upstream(shim_edge):
    doc = b'{"usage":{"completion_tokens":3},"text":"' + b"x" * 100 + b'"}'
    up = ScriptedUpstream("application/json", [doc[:50], doc[50:]])
    port, engine = shim_edge(sse_recipe(new_body=b'{"replaced":true}', settle_bytes=40), up)
    head, body = http_post(port, b'{"original":1}')
    assert body == doc
    assert up.bodies == [b'{"replaced":true}']
    s = wait_settle(engine)
    assert (s.counted_tokens, s.cut, s.counted_chars, s.status) == (0, False, 0, 200)
    assert s.tail == doc[:20] + doc[-20:]


def test_no_settle_without_settle_bytes(shim_edge):
    up = ScriptedUpstream("text/event-stream", [b'data: {"t":"abcdefghijklmnopqrstuvwxyz"}\n\n'])
    port, engine = shim_edge(sse_recipe(settle_bytes=0), up)
    _, body = http_post(port)
    assert body == b'data: {"t":"abcdefghijklmnopqrstuvwxyz"}\n\n' + CUTOFF.encode()
    time.sleep(0.3)  # a Settle would have been sent right after the response
    assert engine.settles == []


def test_client_that_goes_away_mid_stream_is_reported_aborted(shim_edge):
    up = ScriptedUpstream("text/event-stream", [b'data: {"t":"ab"}\n\n'] * 40, pause_s=0.05)
    port, engine = shim_edge(sse_recipe(allowance_tokens=0), up)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    settle = wait_settle(engine)
    assert settle.client_aborted
    assert settle.status == 200
