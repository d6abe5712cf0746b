"""Which provider format a request speaks: the path prefix, then the request's shape (contract §3).

The one owner of this knowledge. The engine applies it to every inline request (`request_format`);
nginx routes on the same table (`nginx_route_patterns`, rendered by cli/nginx_conf.py), so a
request goes to a provider's backend, with that provider's key, only when the engine meters it
in that provider's format:
- the prefix test is the same on both sides (the raw request URI, as nginx strips it);
- nginx matches the shapes on the raw URI and accepts no `%`, empty or dot segment in them, so
  its raw match implies the engine's match on the normalized path. The engine's set is larger
  (`/v1/%6dessages` is Anthropic to it): such a request goes to the default backend, metered.
"""

import re

AUTO = "auto"
PROVIDERS = ("openai", "anthropic", "gemini")
# FAIRVISOR_LLM_FORMAT values; "none" is a plain HTTP proxy (Settings keeps it as None).
SETTINGS = (AUTO, *PROVIDERS, "none")

# (path pattern, provider): matched whole against the normalized path, without the query.
# Only literal text and `[^/?%]` classes, so the raw-URI form below stays exact (see header).
SHAPES = (
    (r"/v1/(?:chat/completions|completions|responses)", "openai"),
    (r"/v1/messages", "anthropic"),
    (r"/v1(?:beta)?/models/[^/?%]+:(?:stream)?[gG]enerateContent", "gemini"),
)
_SHAPES = tuple((re.compile(p), provider) for p, provider in SHAPES)
_PREFIXES = tuple((b"/" + p.encode(), p) for p in PROVIDERS)


def prefix_provider(raw_uri: bytes) -> str | None:
    """The provider of a leading `/openai`, `/anthropic` or `/gemini` segment of the raw URI."""
    for prefix, provider in _PREFIXES:
        if raw_uri.startswith(prefix) and (len(raw_uri) == len(prefix) or raw_uri[len(prefix)] in b"/?"):
            return provider
    return None


def shape_provider(path: str) -> str | None:
    """The provider whose API this normalized path (prefix stripped, no query) belongs to."""
    if not path.startswith("/v1"):
        return None
    for pattern, provider in _SHAPES:
        if pattern.fullmatch(path):
            return provider
    return None


def request_format(setting: str | None, raw_uri: bytes, path: str) -> str | None:
    """The format of one inline request: `setting` is Settings.llm_format (None = plain proxy);
    None = plain HTTP (no LLM recipe, problem+json rejections)."""
    if setting != AUTO:
        return setting
    return prefix_provider(raw_uri) or shape_provider(path)


def adapter_name(llm_format: str | None, path: str) -> str | None:
    """The adapter (llm/providers.py ADAPTERS) of a request in `llm_format`: OpenAI's Responses
    API has events and usage fields of its own; None = plain HTTP."""
    if llm_format == "openai" and path.endswith("/v1/responses"):
        return "openai_responses"
    return llm_format


def nginx_route_patterns() -> list[tuple[str, str]]:
    """(PCRE on nginx's $request_uri, provider), in order: the first match routes the request."""
    out = [(f"^/{p}(?:[/?]|$)", p) for p in PROVIDERS]
    out += [(f"^{pattern}(?:\\?|$)", provider) for pattern, provider in SHAPES]
    return out
