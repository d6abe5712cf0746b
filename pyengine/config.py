"""Runtime settings from FAIRVISOR_* environment variables (contract §5), loaded once at start."""

import ipaddress
import os
import re
import tempfile

import msgspec

from .env_vars import (ENV_VARS, PROVIDERS, UPSTREAM_HEADER_PREFIX, backend_url_var,  # noqa: F401 - re-exported
                       provider_header_prefix)

MODES = ("decision_service", "reverse_proxy")
LLM_FORMATS = ("auto", "openai", "anthropic", "gemini", "none")  # pyengine/llm/formats.py SETTINGS
FAIL_MODES = ("open", "closed")
LOG_KEY_MODES = ("hashed", "raw")
REQUEST_HEADER_MODES = ("original", "forwarded")  # pyengine.decision.request.REQUEST_HEADER_FAMILIES
ADMIN_OFF = "off"  # FAIRVISOR_ADMIN_LISTEN value that disables the admin listener
_HOST_PORT = re.compile(r"(?:(\[[0-9A-Fa-f:.]+\]|[\w.-]+):)?(\d{1,5})")


class ConfigError(ValueError):
    """A FAIRVISOR_* variable has a value we cannot use; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    config_file: str | None = None  # FAIRVISOR_CONFIG_FILE; None = the bundled default policy
    mode: str = "decision_service"  # FAIRVISOR_MODE
    backend_url: str | None = None  # FAIRVISOR_BACKEND_URL (reverse_proxy only)
    # FAIRVISOR_LLM_FORMAT: "auto" (the reverse-proxy default: per request), a provider, or None
    # ("none": plain HTTP; unset in decision-service mode, where only the drop-in include uses it).
    llm_format: str | None = None
    # FAIRVISOR_BACKEND_URL_<PROVIDER>: (provider, url) pairs that override backend_url for it.
    backend_urls: tuple[tuple[str, str], ...] = ()
    # FAIRVISOR_<PROVIDER>_UPSTREAM_HEADER_<Name>: (provider, name, value), after the global ones.
    provider_headers: tuple[tuple[str, str, str], ...] = ()
    strip_request_headers: tuple[str, ...] = ()  # FAIRVISOR_STRIP_REQUEST_HEADERS, lower-case
    upstream_headers: tuple[tuple[str, str], ...] = ()  # FAIRVISOR_UPSTREAM_HEADER_<Name>
    listen: str = "0.0.0.0:8080"  # FAIRVISOR_LISTEN, host:port
    # FAIRVISOR_ADMIN_LISTEN: host:port of the admin listener (metrics, full readiness); "off" = none
    admin_listen: str = "127.0.0.1:9090"
    admin_token: str | None = None  # FAIRVISOR_ADMIN_TOKEN: set = every admin endpoint needs this Bearer token
    trusted_proxies: tuple[str, ...] = ("127.0.0.0/8", "::1")  # FAIRVISOR_TRUSTED_PROXIES, CIDRs
    # FAIRVISOR_REQUEST_HEADERS: the one header family describing a decision-service request,
    # "original" (X-Original-*, nginx auth_request) or "forwarded" (X-Forwarded-*, Traefik).
    request_headers: str = "original"
    fail_mode: str = "open"  # FAIRVISOR_FAIL_MODE
    engine_timeout_ms: int = 100  # FAIRVISOR_ENGINE_TIMEOUT_MS
    upstream_timeout_ms: int = 60_000  # FAIRVISOR_UPSTREAM_TIMEOUT_MS: nginx connect / between-bytes timeout
    engine_socket: str = ""  # FAIRVISOR_ENGINE_SOCKET; default: <state_dir>/engine.sock
    state_dir: str = ""  # FAIRVISOR_STATE_DIR; default: <tmp>/fairvisor
    log_level: str = "info"  # FAIRVISOR_LOG_LEVEL
    worker_processes: str = "auto"  # FAIRVISOR_WORKER_PROCESSES ("auto" or a count)
    bundle_key: str | None = None  # FAIRVISOR_BUNDLE_KEY: HMAC-SHA256 key; set = unsigned bundles refused
    decision_log: str = ""  # FAIRVISOR_DECISION_LOG; default: <state_dir>/decisions.jsonl; "off" = none
    log_keys: str = "hashed"  # FAIRVISOR_LOG_KEYS: "hashed" (keyed hash, pyengine.decision.key_hash) or "raw" tenant keys
    decision_log_max_mb: int = 64  # FAIRVISOR_DECISION_LOG_MAX_MB: rotate past this size (MiB)
    backend_tls_verify: bool = True  # FAIRVISOR_BACKEND_TLS_VERIFY: "off" skips upstream certificate checks
    max_state_keys: int = 5_000_000  # FAIRVISOR_MAX_STATE_KEYS: limiter state entries before eviction
    # fairvisor/edge compatibility (docs/migrating.md):
    retry_jitter: bool = True  # FAIRVISOR_RETRY_JITTER: "off" = Retry-After exactly the base (pyengine.jitter)
    debug_session_secret: str | None = None  # FAIRVISOR_DEBUG_SESSION_SECRET: unset = no debug sessions
    hide_reason: bool = False  # FAIRVISOR_HIDE_REASON: "true" = no X-Fairvisor-Reason outside debug sessions
    # Who may open the engine socket (pyengine/socket_access.py; docs/operations.md#engine-socket-access):
    engine_socket_group: str | None = None  # FAIRVISOR_ENGINE_SOCKET_GROUP: group (name or gid) given the socket
    engine_socket_mode: int = 0o660  # FAIRVISOR_ENGINE_SOCKET_MODE: octal, within 0666, owner rw always
    nginx_user: str | None = None  # FAIRVISOR_NGINX_USER: the user nginx workers run as (checked; never root)
    # Fleet mode (contract §9, docs/fleet.md): state shared through Redis or Valkey.
    state_url: str | None = None  # FAIRVISOR_STATE_URL: redis://, rediss:// or unix://; None = embedded state
    engines: int = 1  # FAIRVISOR_ENGINES: engine processes per edge; > 1 needs state_url
    sync_interval_ms: int = 50  # FAIRVISOR_SYNC_INTERVAL_MS: local deltas pushed to the store this often
    engine_index: int = 0  # FAIRVISOR_ENGINE_INDEX: which of the edge's engines this is (set by `fairvisor run`)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _positive_int(name: str, value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: must be an integer, got {value!r}") from None
    if n < 1:
        raise ConfigError(f"{name}: must be >= 1")
    return n


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _headers(env, prefix: str) -> list[tuple[str, str]]:
    """(Name, value) of every `<prefix><Name>` variable, `_` in the name becoming `-`."""
    return sorted((k[len(prefix):].replace("_", "-"), v) for k, v in env.items() if k.startswith(prefix))


_CSV_FIELDS = frozenset({"strip_request_headers", "trusted_proxies"})  # comma-separated lists


def from_env(env: dict[str, str] | None = None, **overrides) -> Settings:
    """Build Settings from an environment mapping; `overrides` (CLI flags) win when not None."""
    env = os.environ if env is None else env
    raw: dict = {}
    for field, var in ENV_VARS.items():
        if field not in _CSV_FIELDS and env.get(var):
            raw[field] = env[var]
    if env.get(ENV_VARS["strip_request_headers"]):
        raw["strip_request_headers"] = tuple(h.lower() for h in _csv(env[ENV_VARS["strip_request_headers"]]))
    if env.get(ENV_VARS["trusted_proxies"]):
        raw["trusted_proxies"] = _csv(env[ENV_VARS["trusted_proxies"]])
    injected = _headers(env, UPSTREAM_HEADER_PREFIX)
    if injected:
        raw["upstream_headers"] = tuple(injected)
    backends = tuple((p, env[backend_url_var(p)]) for p in PROVIDERS if env.get(backend_url_var(p)))
    if backends:
        raw["backend_urls"] = backends
    per_provider = tuple((p, name, value) for p in PROVIDERS for name, value in _headers(env, provider_header_prefix(p)))
    if per_provider:
        raw["provider_headers"] = per_provider
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return _finish(raw)


def _socket_mode(value) -> int:
    if isinstance(value, int):
        mode = value
    else:
        try:
            mode = int(str(value), 8)
        except ValueError:
            raise ConfigError(f"FAIRVISOR_ENGINE_SOCKET_MODE: expected an octal mode such as 0660, got {value!r}") from None
    # No execute bits, nothing past rw-rw-rw-, and the engine's own user keeps rw.
    if mode & ~0o666 or mode & 0o600 != 0o600:
        raise ConfigError(f"FAIRVISOR_ENGINE_SOCKET_MODE: must be within 0666 with owner rw (0600, 0660, 0666), "
                          f"got {value!r}")
    return mode


def _finish(raw: dict) -> Settings:
    if "engine_socket_mode" in raw:
        raw["engine_socket_mode"] = _socket_mode(raw["engine_socket_mode"])
    for field, var in (("engine_timeout_ms", "FAIRVISOR_ENGINE_TIMEOUT_MS"),
                       ("upstream_timeout_ms", "FAIRVISOR_UPSTREAM_TIMEOUT_MS"),
                       ("decision_log_max_mb", "FAIRVISOR_DECISION_LOG_MAX_MB"),
                       ("max_state_keys", "FAIRVISOR_MAX_STATE_KEYS")):
        if field in raw:
            raw[field] = _positive_int(var, raw[field])
    _choice("FAIRVISOR_LOG_KEYS", raw.get("log_keys", "hashed"), LOG_KEY_MODES)
    for field, var, on, off in (("retry_jitter", "FAIRVISOR_RETRY_JITTER", "on", "off"),
                                ("hide_reason", "FAIRVISOR_HIDE_REASON", "true", "false")):
        if isinstance(raw.get(field), str):
            raw[field] = _choice(var, raw[field].lower(), (on, off)) == on
    if isinstance(raw.get("backend_tls_verify"), str):
        raw["backend_tls_verify"] = _choice("FAIRVISOR_BACKEND_TLS_VERIFY", raw["backend_tls_verify"].lower(),
                                            ("on", "off")) == "on"
    _choice("FAIRVISOR_MODE", raw.get("mode", "decision_service"), MODES)
    _choice("FAIRVISOR_FAIL_MODE", raw.get("fail_mode", "open"), FAIL_MODES)
    _choice("FAIRVISOR_REQUEST_HEADERS", raw.get("request_headers", "original"), REQUEST_HEADER_MODES)
    if raw.get("llm_format") is not None:
        _choice("FAIRVISOR_LLM_FORMAT", raw["llm_format"], LLM_FORMATS)
    elif raw.get("mode") == "reverse_proxy":
        raw["llm_format"] = "auto"  # contract §3: the format per request
    if raw.get("llm_format") == "none":
        raw["llm_format"] = None
    if raw.get("mode") == "reverse_proxy" and not raw.get("backend_url"):
        raise ConfigError("FAIRVISOR_BACKEND_URL: required when FAIRVISOR_MODE=reverse_proxy")
    _check_admin(raw)
    _check_fleet(raw)
    state_dir = raw.get("state_dir") or os.path.join(tempfile.gettempdir(), "fairvisor")
    raw["state_dir"] = state_dir
    if not raw.get("engine_socket"):
        raw["engine_socket"] = os.path.join(state_dir, "engine.sock")
    if not raw.get("decision_log"):
        raw["decision_log"] = os.path.join(state_dir, "decisions.jsonl")
    return msgspec.convert(raw, Settings)


SYNC_INTERVAL_MAX_MS = 60_000


def _check_fleet(raw: dict) -> None:
    """FAIRVISOR_STATE_URL is a store URL; more than one engine needs it; the sync interval is bounded."""
    url = raw.get("state_url")
    if url:
        from pyengine.fleet.url import url_error  # only fleet mode pays for importing the client

        error = url_error(url)
        if error is not None:
            raise ConfigError(f"FAIRVISOR_STATE_URL: {error}")
    else:
        raw.pop("state_url", None)
    raw["engines"] = _positive_int("FAIRVISOR_ENGINES", raw.get("engines", 1))
    if raw["engines"] > 1 and not url:
        raise ConfigError(f"FAIRVISOR_ENGINES: {raw['engines']} engines share their counters only through "
                          "FAIRVISOR_STATE_URL; set it (docs/fleet.md) or run one engine")
    interval_ms = _positive_int("FAIRVISOR_SYNC_INTERVAL_MS", raw.get("sync_interval_ms", 50))
    if interval_ms > SYNC_INTERVAL_MAX_MS:
        raise ConfigError(f"FAIRVISOR_SYNC_INTERVAL_MS: must be at most {SYNC_INTERVAL_MAX_MS}, got {interval_ms}")
    raw["sync_interval_ms"] = interval_ms
    try:
        index = int(raw.get("engine_index", 0))
    except (TypeError, ValueError):
        raise ConfigError(f"FAIRVISOR_ENGINE_INDEX: must be an integer, got {raw['engine_index']!r}") from None
    if not 0 <= index < raw["engines"]:
        raise ConfigError(f"FAIRVISOR_ENGINE_INDEX: must be 0..{raw['engines'] - 1} (FAIRVISOR_ENGINES), got {index}")
    raw["engine_index"] = index


def split_host_port(value: str) -> tuple[str, int] | None:
    """("host", port) of "host:port", "[v6]:port" or a bare "port" (host ""); None when malformed."""
    m = _HOST_PORT.fullmatch(value)
    if not m or not 0 < int(m.group(2)) < 65536:
        return None
    return (m.group(1) or "").strip("[]"), int(m.group(2))


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` ("" and 0.0.0.0 mean every address: not loopback)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name may resolve anywhere


def _check_admin(raw: dict) -> None:
    """FAIRVISOR_ADMIN_LISTEN is host:port or off; off loopback it needs FAIRVISOR_ADMIN_TOKEN."""
    listen = raw.get("admin_listen", "127.0.0.1:9090")
    if listen.lower() == ADMIN_OFF:
        raw["admin_listen"] = ADMIN_OFF
        return
    token = raw.get("admin_token")
    if token is not None and not re.fullmatch(r"[\x21-\x7e]+", token):
        raise ConfigError("FAIRVISOR_ADMIN_TOKEN: must be printable ASCII without spaces")
    parts = split_host_port(listen)
    if parts is None:
        raise ConfigError(f"FAIRVISOR_ADMIN_LISTEN: expected host:port or off, got {listen!r}")
    if not is_loopback(parts[0]) and not raw.get("admin_token"):
        raise ConfigError(f"FAIRVISOR_ADMIN_LISTEN: {listen} is reachable from other machines; set "
                          "FAIRVISOR_ADMIN_TOKEN (every admin request then needs Authorization: Bearer <token>), "
                          "or listen on 127.0.0.1")
    public = split_host_port(raw.get("listen", "0.0.0.0:8080"))
    if public is not None and public[1] == parts[1] and (public[0] in ("", "0.0.0.0", "*", "::")
                                                          or parts[0] in ("", "0.0.0.0", "::")
                                                          or public[0] == parts[0]):
        raise ConfigError(f"FAIRVISOR_ADMIN_LISTEN: {listen} is the port of FAIRVISOR_LISTEN; give the admin "
                          "listener a port of its own")
