"""The vocabulary of limit keys: which key strings a policy may name, their canonical form, their closed value sets.

Shared by the bundle's checks (pyengine.policy.checks) and the admin API's runtime kill
switches and overrides (pyengine.overlay.model), so that a runtime switch can never hold what
a bundle may not.
"""

import json
import re

from pyengine.decision.keys import KEY_VALUES

Errors = list[tuple[str, str]]

EXACT_KEYS = frozenset({"ip:address", "ip:country", "ip:asn", "ip:type", "ip:tor", "ua:bot", "ua:bot_category",
                        "llm:model"})
KEY_HELP = ("expected jwt:<claim>, header:<name>, query:<name>, ip:address, ip:country, ip:asn, "
            "ip:type, ip:tor, ua:bot, ua:bot_category or llm:model")
# `\Z`, not `$`: `$` also matches before a final "\n", which would let `"name\n"` through
# into a RateLimit header. RFC 9110 token: header field names.
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
# Claims and query names: anything printable without whitespace.
_NAME_RE = re.compile(r"^[^\s\x00-\x1f\x7f]+\Z")


def quoted(text: str) -> str:
    """A value as it appears in an error message: JSON-quoted, non-ASCII kept."""
    return json.dumps(text, ensure_ascii=False)


def canonical_key(key: str) -> str:
    """Header names are case-insensitive: `header:X-Api-Key` is stored as `header:x-api-key`."""
    if key[:7].lower() == "header:":
        return "header:" + key[7:].lower()
    return key


def is_limit_key(key: str) -> bool:
    if key in EXACT_KEYS:
        return True
    kind, sep, name = key.partition(":")
    if not sep:
        return False
    if kind == "header":
        return bool(_TOKEN_RE.match(name))
    return kind in ("jwt", "query") and bool(_NAME_RE.match(name))


def is_cost_ref(value: str) -> bool:
    """`fixed`, `header:<name>` or `query:<name>`: where a request's cost comes from."""
    return value == "fixed" or (value.split(":", 1)[0] in ("header", "query")
                                and is_limit_key(value))


def check_key_value(key: str, value: str, path: str, errors: Errors) -> None:
    """A key with a closed value set (ua:bot, ip:tor, ip:type, ua:bot_category) can only match those."""
    allowed = KEY_VALUES.get(key)
    if allowed is not None and value not in allowed:
        choices_q = [quoted(v) for v in allowed]
        choices = " or ".join(choices_q) if len(choices_q) == 2 else f"one of {', '.join(choices_q)}"
        errors.append((path, f"must be {choices} ({key} has no other value)"
                       if len(choices_q) > 2 else f"must be {choices}"))
