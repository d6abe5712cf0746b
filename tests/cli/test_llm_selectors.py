"""The shipped LLM policies (init templates, demo, examples) limit every provider's paths, Gemini v1beta included."""

import json
import pathlib

import pytest

from pyengine.cli.templates import TEMPLATES
from tests.engine.helpers import decide, hdr, make_engine

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = ["examples/demo/llm-policy.json", "examples/quickstart/policy.json", "examples/recipes/runaway-agent-guard.json",
         "examples/recipes/team-budgets.json"]
GEMINI = {"contents": [{"parts": [{"text": "hello"}]}], "generationConfig": {"maxOutputTokens": 20}}
CHAT = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]}
CALLS = [
    ("/v1beta/models/gemini-2.0-flash:generateContent", GEMINI),
    ("/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", GEMINI),
    ("/v1/models/gemini-2.0-flash:generateContent", GEMINI),
    ("/openai/v1/chat/completions", CHAT),
    ("/v1/messages", {**CHAT, "model": "claude-3-5-haiku"}),
]


def bundles():
    for name in ("llm", "agent-guard"):
        yield f"init --template {name}", TEMPLATES[name]
    for path in FILES:
        yield path, json.loads((ROOT / path).read_text())


def _headers() -> dict:
    from tests.engine.helpers import unsigned_jwt
    # Every key the shipped policies use: the org claim, team claim, tenant and agent headers.
    return {"Authorization": "Bearer " + unsigned_jwt({"org_id": "o1", "team": "t1", "sub": "u1"}),
            "X-Tenant": "t1", "X-Agent-Id": "a1", "X-Forwarded-For": "203.0.113.5"}


@pytest.mark.parametrize("uri,body", CALLS, ids=[c[0] for c in CALLS])
@pytest.mark.parametrize("source,bundle", list(bundles()), ids=[b[0] for b in bundles()])
def test_every_provider_path_reserves_on_the_shipped_policies(source, bundle, uri, body):
    engine = make_engine(bundle, mode="reverse_proxy", backend_url="http://127.0.0.1:9")
    v = decide(engine, headers=_headers(), method="POST", uri=uri, body=json.dumps(body).encode())
    assert v.status == 0, (source, uri, v.body)
    assert v.reservation_id, f"{source}: {uri} was not limited"  # an LLM rule reserved for it
    assert hdr(v, "RateLimit-Policy")
