"""Renders the self-contained nginx config (nginx/*.conf.tmpl) for a Settings and a runtime dir."""

from __future__ import annotations

import os
import pathlib
import re
from urllib.parse import urlsplit

from pyengine.config import ADMIN_OFF
from pyengine.resources import ADMIN_CONF, LUA_SHIM_DIR, NGINX_DIR as TEMPLATE_DIR
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's ca-certificates: trusted upstream CAs
DEBIAN_LUA_PATH = "/usr/share/lua/5.1/?.lua;"  # resty.core from Debian's lua-resty-core

# FAIRVISOR_LOG_LEVEL -> nginx error_log level.
_ERROR_LOG_LEVELS = {"debug": "info", "info": "notice", "warning": "warn", "warn": "warn", "error": "error",
                     "critical": "crit"}
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an RFC 9110 token


class RenderError(ValueError):
    """The settings cannot be expressed as an nginx config; the message says which one."""


def _fill(name: str, values: dict) -> str:
    text = (TEMPLATE_DIR / name).read_text()
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def lua_string(s: str) -> str:
    """A Lua string literal: only printable ASCII stays as is, everything else is \\ddd."""
    return '"' + "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else
                         "".join(f"\\{b}" for b in c.encode()) for c in s) + '"'


def nginx_string(s: str) -> str:
    """A double-quoted nginx value with no variable interpolation ("$" via $fairvisor_dollar)."""
    if any(c in s for c in "\r\n\0"):
        raise RenderError(f"header value {s!r}: must not contain CR, LF or NUL")
    escaped = s.replace("\\", "\\\\").replace('"', '\\"').replace("$", "${fairvisor_dollar}")
    return f'"{escaped}"'


def header_name(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise RenderError(f"header name {name!r}: not a valid HTTP header name")
    return name


def _listen(listen: str, var: str = "FAIRVISOR_LISTEN") -> str:
    if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[\w.-]+)?:?\d{1,5}", listen):
        raise RenderError(f"{var}: expected host:port, got {listen!r}")
    return listen


def _admin_server(settings) -> str:
    """The admin listener's server {} (contract §8), or nothing with FAIRVISOR_ADMIN_LISTEN=off."""
    if settings.admin_listen == ADMIN_OFF:
        return "\n    # Admin listener: off (FAIRVISOR_ADMIN_LISTEN=off).\n"
    return _fill("admin_server.conf.tmpl", {"admin_listen": _listen(settings.admin_listen, "FAIRVISOR_ADMIN_LISTEN"),
                                            "admin_conf": str(ADMIN_CONF)})


def _worker_processes(value: str) -> str:
    if value != "auto" and not (value.isdigit() and int(value) > 0):
        raise RenderError(f"FAIRVISOR_WORKER_PROCESSES: expected auto or a positive count, got {value!r}")
    return value


def _user_line() -> str:
    # A root master would run workers as "nobody", who cannot open the engine's 0660 socket:
    # keep them as the user (and group) that runs the engine.
    if os.geteuid() != 0:
        return ""
    import grp
    import pwd
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"


def _backend(settings) -> dict:
    url = urlsplit(settings.backend_url or "")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise RenderError(f"FAIRVISOR_BACKEND_URL: expected http(s)://host[:port][/path], got {settings.backend_url!r}")
    if url.query or url.fragment:
        raise RenderError("FAIRVISOR_BACKEND_URL: must not carry a query or a fragment")
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    default_port = port == (443 if url.scheme == "https" else 80)
    ssl = ""
    if url.scheme == "https":
        ssl = (f"            proxy_ssl_server_name on;\n"
               f"            proxy_ssl_name {url.hostname};\n")
        if settings.backend_tls_verify:
            ssl += (f"            proxy_ssl_verify on;\n"
                    f"            proxy_ssl_trusted_certificate {CA_BUNDLE};\n"
                    f"            proxy_ssl_verify_depth 4;\n")
        else:  # FAIRVISOR_BACKEND_TLS_VERIFY=off: an explicit opt-out, e.g. a self-signed lab upstream
            ssl += "            proxy_ssl_verify off;\n"
    # The engine parses LLM response bodies for usage: ask the upstream for them uncompressed.
    encoding = '            proxy_set_header Accept-Encoding "";' if settings.llm_format else "            # (as sent)"
    # Only LLM formats get response recipes (stream counting, cutoff, Settle). Without one these
    # phases would do nothing but still cost a Lua call per body chunk and per request.
    response_phases = _LLM_RESPONSE_PHASES if settings.llm_format else _NO_RESPONSE_PHASES
    return {
        "backend_scheme": url.scheme,
        "backend_hostport": f"{host}:{port}",
        "backend_host_header": host if default_port else f"{host}:{port}",
        "backend_path": url.path.rstrip("/"),
        "upstream_timeout_ms": int(settings.upstream_timeout_ms),
        "proxy_ssl": ssl,
        "accept_encoding": encoding,
        "response_phases": response_phases,
    }


_LLM_RESPONSE_PHASES = """\
            # SSE counting and cutoff, and the head/tail kept for settlement.
            body_filter_by_lua_block { require("fairvisor.shim").body_filter() }
            # Settle goes out from a timer here (no cosockets in body_filter or log).
            log_by_lua_block { require("fairvisor.shim").log() }"""
_NO_RESPONSE_PHASES = "            # No LLM format: no stream counting or settlement (body_filter, log)."


def _header_lines(pairs) -> str:
    lines = [f"            proxy_set_header {header_name(name)} {nginx_string(value)};" for name, value in pairs]
    return "\n".join(lines) if lines else "            # (none)"


def render(settings, runtime_dir: str | os.PathLike) -> str:
    """The whole nginx.conf text; every runtime file (pid, logs, temp dirs) lives in runtime_dir."""
    runtime_dir = os.path.abspath(runtime_dir)
    values = {
        "mode": settings.mode,
        "user": _user_line(),
        "worker_processes": _worker_processes(str(settings.worker_processes)),
        "runtime_dir": runtime_dir,
        "error_log_level": _ERROR_LOG_LEVELS.get(settings.log_level.lower(), "notice"),
        "lua_shim_dir": str(LUA_SHIM_DIR),
        "engine_socket": lua_string(os.path.abspath(settings.engine_socket)),
        "engine_timeout_ms": int(settings.engine_timeout_ms),
        "fail_mode": lua_string(settings.fail_mode),
        "listen": _listen(settings.listen),
        "lua_extra_path": DEBIAN_LUA_PATH,
    }
    values["fairvisor_http"] = _fill("fairvisor.conf.tmpl", values).rstrip("\n")
    values["probe_locations"] = _fill("probe_locations.conf.tmpl", values).rstrip("\n")
    if settings.mode == "reverse_proxy":
        values.update(_backend(settings))
        values["strip_headers"] = _header_lines((name, "") for name in settings.strip_request_headers)
        values["inject_headers"] = _header_lines(settings.upstream_headers)
        server = _fill("reverse_proxy.conf.tmpl", values)
    else:
        server = _fill("decision_service.conf.tmpl", values)
    values["http"] = _fill("http.conf.tmpl", values).rstrip("\n")
    values["server"] = server.rstrip("\n") + "\n" + _admin_server(settings).rstrip("\n")
    return _fill("nginx.conf.tmpl", values)


def prepare_runtime_dir(runtime_dir: str | os.PathLike) -> pathlib.Path:
    """Creates runtime_dir and the temp dirs the config points at."""
    path = pathlib.Path(runtime_dir)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (path / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    return path


def write(settings, runtime_dir: str | os.PathLike) -> pathlib.Path:
    """Renders into runtime_dir/nginx.conf and returns its path."""
    path = prepare_runtime_dir(runtime_dir)
    conf = path / "nginx.conf"
    text = render(settings, path)
    # Owner-only: the file carries FAIRVISOR_UPSTREAM_HEADER_* values, typically upstream API keys.
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an older version keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return conf
