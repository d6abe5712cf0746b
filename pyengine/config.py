"""Runtime settings from FAIRVISOR_* environment variables (contract §5), loaded once at start."""

import os
import tempfile

import msgspec

MODES = ("decision_service", "reverse_proxy")
LLM_FORMATS = ("openai", "anthropic", "gemini")
FAIL_MODES = ("open", "closed")
LOG_KEY_MODES = ("hashed", "raw")
REQUEST_HEADER_MODES = ("original", "forwarded")  # pyengine.request.REQUEST_HEADER_FAMILIES


class ConfigError(ValueError):
    """A FAIRVISOR_* variable has a value we cannot use; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    config_file: str | None = None  # FAIRVISOR_CONFIG_FILE; None = the bundled default policy
    mode: str = "decision_service"  # FAIRVISOR_MODE
    backend_url: str | None = None  # FAIRVISOR_BACKEND_URL (reverse_proxy only)
    llm_format: str | None = None  # FAIRVISOR_LLM_FORMAT
    strip_request_headers: tuple[str, ...] = ()  # FAIRVISOR_STRIP_REQUEST_HEADERS, lower-case
    upstream_headers: tuple[tuple[str, str], ...] = ()  # FAIRVISOR_UPSTREAM_HEADER_<Name>
    listen: str = "0.0.0.0:8080"  # FAIRVISOR_LISTEN, host:port
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
    log_keys: str = "hashed"  # FAIRVISOR_LOG_KEYS: "hashed" (keyed hash, pyengine.key_hash) or "raw" tenant keys
    decision_log_max_mb: int = 64  # FAIRVISOR_DECISION_LOG_MAX_MB: rotate past this size (MiB)
    backend_tls_verify: bool = True  # FAIRVISOR_BACKEND_TLS_VERIFY: "off" skips upstream certificate checks
    max_state_keys: int = 5_000_000  # FAIRVISOR_MAX_STATE_KEYS: limiter state entries before eviction
    # fairvisor/edge compatibility (docs/migrating.md):
    retry_jitter: bool = True  # FAIRVISOR_RETRY_JITTER: "off" = Retry-After exactly the base (pyengine.jitter)
    debug_session_secret: str | None = None  # FAIRVISOR_DEBUG_SESSION_SECRET: unset = no debug sessions
    hide_reason: bool = False  # FAIRVISOR_HIDE_REASON: "true" = no X-Fairvisor-Reason outside debug sessions


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


def from_env(env: dict[str, str] | None = None, **overrides) -> Settings:
    """Build Settings from an environment mapping; `overrides` (CLI flags) win when not None."""
    env = os.environ if env is None else env
    raw: dict = {}
    simple = {
        "config_file": "FAIRVISOR_CONFIG_FILE",
        "mode": "FAIRVISOR_MODE",
        "backend_url": "FAIRVISOR_BACKEND_URL",
        "llm_format": "FAIRVISOR_LLM_FORMAT",
        "listen": "FAIRVISOR_LISTEN",
        "fail_mode": "FAIRVISOR_FAIL_MODE",
        "engine_socket": "FAIRVISOR_ENGINE_SOCKET",
        "state_dir": "FAIRVISOR_STATE_DIR",
        "log_level": "FAIRVISOR_LOG_LEVEL",
        "worker_processes": "FAIRVISOR_WORKER_PROCESSES",
        "bundle_key": "FAIRVISOR_BUNDLE_KEY",
        "decision_log": "FAIRVISOR_DECISION_LOG",
        "log_keys": "FAIRVISOR_LOG_KEYS",
        "debug_session_secret": "FAIRVISOR_DEBUG_SESSION_SECRET",
        "retry_jitter": "FAIRVISOR_RETRY_JITTER",
        "hide_reason": "FAIRVISOR_HIDE_REASON",
        "request_headers": "FAIRVISOR_REQUEST_HEADERS",
    }
    for field, var in simple.items():
        if env.get(var):
            raw[field] = env[var]
    if env.get("FAIRVISOR_STRIP_REQUEST_HEADERS"):
        raw["strip_request_headers"] = tuple(h.lower() for h in _csv(env["FAIRVISOR_STRIP_REQUEST_HEADERS"]))
    if env.get("FAIRVISOR_TRUSTED_PROXIES"):
        raw["trusted_proxies"] = _csv(env["FAIRVISOR_TRUSTED_PROXIES"])
    if env.get("FAIRVISOR_ENGINE_TIMEOUT_MS"):
        raw["engine_timeout_ms"] = env["FAIRVISOR_ENGINE_TIMEOUT_MS"]
    if env.get("FAIRVISOR_UPSTREAM_TIMEOUT_MS"):
        raw["upstream_timeout_ms"] = env["FAIRVISOR_UPSTREAM_TIMEOUT_MS"]
    if env.get("FAIRVISOR_DECISION_LOG_MAX_MB"):
        raw["decision_log_max_mb"] = env["FAIRVISOR_DECISION_LOG_MAX_MB"]
    if env.get("FAIRVISOR_MAX_STATE_KEYS"):
        raw["max_state_keys"] = env["FAIRVISOR_MAX_STATE_KEYS"]
    if env.get("FAIRVISOR_BACKEND_TLS_VERIFY"):
        raw["backend_tls_verify"] = env["FAIRVISOR_BACKEND_TLS_VERIFY"]
    prefix = "FAIRVISOR_UPSTREAM_HEADER_"
    injected = sorted((k[len(prefix):].replace("_", "-"), v) for k, v in env.items() if k.startswith(prefix))
    if injected:
        raw["upstream_headers"] = tuple(injected)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return _finish(raw)


def _finish(raw: dict) -> Settings:
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
    if raw.get("mode") == "reverse_proxy" and not raw.get("backend_url"):
        raise ConfigError("FAIRVISOR_BACKEND_URL: required when FAIRVISOR_MODE=reverse_proxy")
    state_dir = raw.get("state_dir") or os.path.join(tempfile.gettempdir(), "fairvisor")
    raw["state_dir"] = state_dir
    if not raw.get("engine_socket"):
        raw["engine_socket"] = os.path.join(state_dir, "engine.sock")
    if not raw.get("decision_log"):
        raw["decision_log"] = os.path.join(state_dir, "decisions.jsonl")
    return msgspec.convert(raw, Settings)
