"""The names of the FAIRVISOR_* variables (contract §5): one table, read by the settings and by `fairvisor run`'s flags.

Imports nothing, so the CLI builds its flags from it without loading the engine
(tests/cli/test_validate.py). Headers and per-provider variables are families of names,
built by the functions below.
"""

PROVIDERS = ("openai", "anthropic", "gemini")  # per-provider backends and injected headers
UPSTREAM_HEADER_PREFIX = "FAIRVISOR_UPSTREAM_HEADER_"


def backend_url_var(provider: str) -> str:
    """FAIRVISOR_BACKEND_URL_OPENAI, _ANTHROPIC, _GEMINI."""
    return f"FAIRVISOR_BACKEND_URL_{provider.upper()}"


def provider_header_prefix(provider: str) -> str:
    """FAIRVISOR_OPENAI_UPSTREAM_HEADER_<Name>, and likewise for ANTHROPIC and GEMINI."""
    return f"FAIRVISOR_{provider.upper()}_UPSTREAM_HEADER_"


# Settings field -> the FAIRVISOR_* variable it is read from (pyengine.config.from_env).
ENV_VARS = {
    "config_file": "FAIRVISOR_CONFIG_FILE",
    "mode": "FAIRVISOR_MODE",
    "listen": "FAIRVISOR_LISTEN",
    "backend_url": "FAIRVISOR_BACKEND_URL",
    "backend_tls_verify": "FAIRVISOR_BACKEND_TLS_VERIFY",
    "fail_mode": "FAIRVISOR_FAIL_MODE",
    "engine_timeout_ms": "FAIRVISOR_ENGINE_TIMEOUT_MS",
    "upstream_timeout_ms": "FAIRVISOR_UPSTREAM_TIMEOUT_MS",
    "engine_socket": "FAIRVISOR_ENGINE_SOCKET",
    "state_dir": "FAIRVISOR_STATE_DIR",
    "worker_processes": "FAIRVISOR_WORKER_PROCESSES",
    "trusted_proxies": "FAIRVISOR_TRUSTED_PROXIES",
    "request_headers": "FAIRVISOR_REQUEST_HEADERS",
    "llm_format": "FAIRVISOR_LLM_FORMAT",
    "log_level": "FAIRVISOR_LOG_LEVEL",
    "strip_request_headers": "FAIRVISOR_STRIP_REQUEST_HEADERS",
    "decision_log": "FAIRVISOR_DECISION_LOG",
    "log_keys": "FAIRVISOR_LOG_KEYS",
    "decision_log_max_mb": "FAIRVISOR_DECISION_LOG_MAX_MB",
    "bundle_key": "FAIRVISOR_BUNDLE_KEY",
    "max_state_keys": "FAIRVISOR_MAX_STATE_KEYS",
    "retry_jitter": "FAIRVISOR_RETRY_JITTER",
    "hide_reason": "FAIRVISOR_HIDE_REASON",
    "debug_session_secret": "FAIRVISOR_DEBUG_SESSION_SECRET",
    "engine_socket_group": "FAIRVISOR_ENGINE_SOCKET_GROUP",
    "engine_socket_mode": "FAIRVISOR_ENGINE_SOCKET_MODE",
    "nginx_user": "FAIRVISOR_NGINX_USER",
    "admin_listen": "FAIRVISOR_ADMIN_LISTEN",
    "admin_token": "FAIRVISOR_ADMIN_TOKEN",
    "state_url": "FAIRVISOR_STATE_URL",
    "engines": "FAIRVISOR_ENGINES",
    "sync_interval_ms": "FAIRVISOR_SYNC_INTERVAL_MS",
    "engine_index": "FAIRVISOR_ENGINE_INDEX",
}
