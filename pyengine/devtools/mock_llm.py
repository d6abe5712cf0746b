"""A mock LLM upstream speaking OpenAI, Anthropic and Gemini JSON and SSE, for tests and demos.

    python -m pyengine.devtools.mock_llm --listen 127.0.0.1:9000 --output-tokens 50

Per request, headers override the defaults: `x-mock-output-tokens` (tokens to generate, capped
by the request's own max tokens), `x-mock-token-delay-ms` (pause between stream events),
`x-mock-output-kind` (text, tool, reasoning or refusal: see llm_formats), `x-mock-logprobs: 1`
(per-token structure in a non-stream answer, see llm_formats), `x-mock-status`
(answer with this HTTP status and a provider-shaped error) and `x-mock-headers-delay-ms`
(wait this long before answering at all, as a provider thinking about a long prompt);
`x-mock-cached-tokens` (report that many prompt tokens as read from the prompt cache).
Routes: OpenAI chat completions and the Responses API (`/v1/responses`), Anthropic messages,
Gemini generateContent. The last requests seen (method, path, headers) are served at
`GET /_mock/requests`, so tests can check what reached the upstream.
"""

import argparse
import asyncio
import collections
import gzip
import json
import re

from ..llm.request import parse_llm_request
from . import llm_formats as fmt

MAX_BODY_BYTES = 32 * 1024 * 1024
_GEMINI_PATH = re.compile(r"^/v1(?:beta)?/models/([^/:]+):(generateContent|streamGenerateContent)$")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}


class MockLLM:
    def __init__(self, output_tokens: int = 20, token_delay_ms: int = 0):
        self.output_tokens = output_tokens
        self.token_delay_ms = token_delay_ms
        self.requests: collections.deque = collections.deque(maxlen=200)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _one(self, reader, writer) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await _read_body(reader, headers)
        path, _, query = target.partition("?")
        self.requests.append({"method": method, "path": path, "query": query, "headers": headers})
        await self._route(writer, method, path, query, headers, body)
        return headers.get("connection", "").lower() != "close"

    async def _route(self, writer, method, path, query, headers, body) -> None:
        if method == "GET" and path == "/_mock/requests":
            return await _send_json(writer, 200, list(self.requests))
        g = _GEMINI_PATH.match(path)
        kind = ("openai" if path.endswith("/chat/completions") else
                "responses" if path.endswith("/v1/responses") else
                "anthropic" if path.endswith("/v1/messages") else "gemini" if g else None)
        if method != "POST" or kind is None:
            return await _send_json(writer, 404, {"error": {"message": f"no route {method} {path}"}})
        wait_ms = int(headers.get("x-mock-headers-delay-ms", "0"))
        if wait_ms:
            await asyncio.sleep(wait_ms / 1000)
        status = int(headers.get("x-mock-status", "200"))
        if status != 200:
            return await _send_json(writer, status, _error(kind, status))
        if headers.get("content-encoding", "").lower() == "gzip":  # as a provider that accepts it would
            body = gzip.decompress(body)
        req = parse_llm_request(body, path, None)
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return await _send_json(writer, 400, _error(kind, 400))
        n = int(headers.get("x-mock-output-tokens", self.output_tokens))
        capped = req.max_output_tokens is not None and req.max_output_tokens < n
        if capped:
            n = req.max_output_tokens
        delay_s = int(headers.get("x-mock-token-delay-ms", self.token_delay_ms)) / 1000
        model = req.model or "mock-model"
        prompt = req.prompt_tokens
        out = headers.get("x-mock-output-kind", "text")
        out = out if out in fmt.KINDS else "text"
        lp = headers.get("x-mock-logprobs") == "1"
        # x-mock-cached-tokens: the usage reports this much of the prompt as read from the cache.
        cached = min(prompt, int(headers.get("x-mock-cached-tokens", "0")))

        def j(doc):
            return fmt.with_cached(kind, doc, cached)

        def ev(events):
            return ((name, j(doc)) for name, doc in events)
        if kind == "openai":
            if not doc.get("stream"):
                return await _send_json(writer, 200, j(fmt.openai_response(model, prompt, n, capped, out, lp)))
            usage = bool((doc.get("stream_options") or {}).get("include_usage"))
            events = ((None, e) for e in fmt.openai_stream(model, prompt, n, usage, capped, out))
            return await _send_sse(writer, ev(events), delay_s, done=True)
        if kind == "responses":
            if not doc.get("stream"):
                return await _send_json(writer, 200, j(fmt.responses_response(model, prompt, n, capped, out, lp)))
            return await _send_sse(writer, ev(fmt.responses_stream(model, prompt, n, capped, out)), delay_s)
        if kind == "anthropic":
            if not doc.get("stream"):
                return await _send_json(writer, 200, j(fmt.anthropic_response(model, prompt, n, capped, out, lp)))
            return await _send_sse(writer, ev(fmt.anthropic_stream(model, prompt, n, capped, out)), delay_s)
        model = g.group(1)
        if g.group(2) == "generateContent":
            return await _send_json(writer, 200, j(fmt.gemini_response(model, prompt, n, capped, out, lp)))
        if "alt=sse" in query:
            events = ((None, e) for e in fmt.gemini_stream(model, prompt, n, capped, out))
            return await _send_sse(writer, ev(events), delay_s)
        # Without alt=sse Gemini streams one JSON array; sent whole here.
        return await _send_json(writer, 200, [j(e) for e in fmt.gemini_stream(model, prompt, n, capped, out)])


def _error(kind: str, status: int) -> dict:
    msg = f"mock upstream error {status}"
    if kind == "anthropic":
        return {"type": "error", "error": {"type": "api_error", "message": msg}}
    if kind == "gemini":
        return {"error": {"code": status, "message": msg, "status": "INTERNAL"}}
    return {"error": {"message": msg, "type": "server_error", "code": None}}


async def _read_body(reader, headers) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readline()
    n = int(headers.get("content-length", "0") or 0)
    if n > MAX_BODY_BYTES:
        raise ValueError("body too large")
    return await reader.readexactly(n) if n else b""


async def _send_json(writer, status: int, obj) -> None:
    body = json.dumps(obj).encode()
    writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()


async def _send_sse(writer, events, delay_s: float, done: bool = False) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    for i, (name, data) in enumerate(events):
        if i and delay_s:
            await asyncio.sleep(delay_s)
        chunk = (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
        _chunk(writer, chunk.encode())
        await writer.drain()
    if done:
        _chunk(writer, b"data: [DONE]\n\n")
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def _chunk(writer, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


async def serve(host: str, port: int, mock: MockLLM) -> None:
    server = await asyncio.start_server(mock.handle, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description="Mock OpenAI/Anthropic/Gemini upstream for Fairvisor tests and demos")
    ap.add_argument("--listen", default="127.0.0.1:9000")
    ap.add_argument("--output-tokens", type=int, default=20)
    ap.add_argument("--token-delay-ms", type=int, default=0)
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    try:
        asyncio.run(serve(host or "127.0.0.1", int(port), MockLLM(args.output_tokens, args.token_delay_ms)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
