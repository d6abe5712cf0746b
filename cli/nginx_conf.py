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


def _user_line(settings) -> str:
    # Run as root, nginx's workers would be root too: they run as an unprivileged account
    # instead (www-data, else nobody, or FAIRVISOR_NGINX_USER), whose group the engine gives
    # its socket (cli/worker_user.py).
    from .worker_user import WorkerUserError, root_workers

    try:
        workers = root_workers(settings)
    except WorkerUserError as exc:
        raise RenderError(str(exc)) from None
    return f"user {workers[0]} {workers[1]};" if workers else ""


class _Upstream:
    """One backend URL, checked: scheme, upstream block name, host:port, Host header, path."""

    def __init__(self, name: str, var: str, raw: str | None):
        url = urlsplit(raw or "")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise RenderError(f"{var}: expected http(s)://host[:port][/path], got {raw!r}")
        if url.query or url.fragment:
            raise RenderError(f"{var}: must not carry a query or a fragment")
        port = url.port or (443 if url.scheme == "https" else 80)
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        self.name, self.scheme, self.hostname = name, url.scheme, url.hostname
        self.hostport = f"{host}:{port}"
        self.host_header = host if port == (443 if url.scheme == "https" else 80) else f"{host}:{port}"
        self.path = url.path.rstrip("/")
        if any(c in self.path for c in "$\"{}; \t") or any(c in url.hostname for c in "$\"{}; "):
            raise RenderError(f"{var}: must not contain quotes, braces, spaces, ';' or '$'")

    def block(self) -> str:
        return f"    upstream {self.name} {{\n        server {self.hostport};\n        keepalive 64;\n    }}"


def _upstreams(settings) -> tuple[_Upstream, dict[str, _Upstream]]:
    """The default backend and the per-provider ones (FAIRVISOR_BACKEND_URL_<PROVIDER>)."""
    from pyengine.config import backend_url_var

    default = _Upstream("fairvisor_backend", "FAIRVISOR_BACKEND_URL", settings.backend_url)
    own = {p: _Upstream(f"fairvisor_backend_{p}", backend_url_var(p), url) for p, url in settings.backend_urls}
    return default, own


def _route_map(settings) -> str:
    """$fairvisor_route: the provider of each request, from the table the engine applies
    (pyengine/llm/formats.py), so routing and metering agree; "" = plain HTTP."""
    from pyengine.llm.formats import AUTO, nginx_route_patterns

    lines = ["    # The provider of the request (pyengine/llm/formats.py: the engine meters it in this format)."]
    lines.append("    map $request_uri $fairvisor_route {")
    if settings.llm_format == AUTO:
        lines += [f'        "~{pattern}" {provider};' for pattern, provider in nginx_route_patterns()]
        lines.append('        default "";')
    else:
        lines.append(f'        default "{settings.llm_format or ""}";')
    lines.append("    }")
    return "\n".join(lines)


def _var_map(name: str, by_route: dict[str, str], default: str) -> str:
    """A map from $fairvisor_route to `$name`, values already in nginx syntax."""
    lines = [f"    map $fairvisor_route ${name} {{"]
    lines += [f"        {route} {value};" for route, value in by_route.items()]
    lines.append(f"        default {default};")
    lines.append("    }")
    return "\n".join(lines)


def _ssl_lines(settings, ssl_name: str) -> str:
    ssl = (f"            proxy_ssl_server_name on;\n"
           f"            proxy_ssl_name {ssl_name};\n")
    if settings.backend_tls_verify:
        ssl += (f"            proxy_ssl_verify on;\n"
                f"            proxy_ssl_trusted_certificate {CA_BUNDLE};\n"
                f"            proxy_ssl_verify_depth 4;\n")
    else:  # FAIRVISOR_BACKEND_TLS_VERIFY=off: an explicit opt-out, e.g. a self-signed lab upstream
        ssl += "            proxy_ssl_verify off;\n"
    return ssl


def _backend(settings) -> dict:
    default, own = _upstreams(settings)
    maps = [_route_map(settings)]
    if own:  # one edge before several providers: every upstream part chosen by the route
        maps.append(_var_map("fairvisor_backend_name", {p: u.name for p, u in own.items()}, default.name))
        maps.append(_var_map("fairvisor_backend_scheme", {p: u.scheme for p, u in own.items()}, default.scheme))
        maps.append(_var_map("fairvisor_backend_path", {p: f'"{u.path}"' for p, u in own.items()}, f'"{default.path}"'))
        maps.append(_var_map("fairvisor_backend_host", {p: f'"{u.host_header}"' for p, u in own.items()},
                             f'"{default.host_header}"'))
        maps.append(_var_map("fairvisor_ssl_name", {p: u.hostname for p, u in own.items()}, default.hostname))
        proxy_pass = ("$fairvisor_backend_scheme://$fairvisor_backend_name$fairvisor_backend_path"
                      "$fairvisor_upstream_uri")
        host_header = "$fairvisor_backend_host"
        https = any(u.scheme == "https" for u in (default, *own.values()))
        ssl = _ssl_lines(settings, "$fairvisor_ssl_name") if https else ""
    else:
        proxy_pass = f"{default.scheme}://{default.name}{default.path}$fairvisor_upstream_uri"
        host_header = f'"{default.host_header}"'
        ssl = _ssl_lines(settings, default.hostname) if default.scheme == "https" else ""
    # The engine parses LLM response bodies for usage: ask the upstream for them uncompressed
    # (under auto, LLM routes only: plain HTTP keeps the client's Accept-Encoding).
    if settings.llm_format == "auto":
        maps.append(_var_map("fairvisor_accept_encoding", {'""': "$http_accept_encoding"}, '""'))
        encoding = "            proxy_set_header Accept-Encoding $fairvisor_accept_encoding;"
    elif settings.llm_format:
        encoding = '            proxy_set_header Accept-Encoding "";'
    else:
        encoding = "            # (as sent)"
    # Only LLM formats get response recipes (stream counting, cutoff, Settle). Without one these
    # phases would do nothing but still cost a Lua call per body chunk and per request.
    response_phases = _LLM_RESPONSE_PHASES if settings.llm_format else _NO_RESPONSE_PHASES
    injected, header_maps = _injected(settings)
    maps += header_maps
    return {
        "upstreams": "\n".join(u.block() for u in (default, *own.values())),
        "route_maps": "\n".join(maps),
        "proxy_pass": proxy_pass,
        "host_header": host_header,
        "proxy_ssl": ssl,
        "accept_encoding": encoding,
        "response_phases": response_phases,
        "upstream_timeout_ms": int(settings.upstream_timeout_ms),
        "inject_headers": injected,
    }


def _injected(settings) -> tuple[str, list[str]]:
    """The proxy_set_header lines of injected headers, and the maps they need: a provider's own
    header (FAIRVISOR_<PROVIDER>_UPSTREAM_HEADER_*) goes to that provider's requests only, and
    wins over a global one of the same name there. An empty value sends no such header."""
    if not settings.provider_headers:
        return _header_lines(settings.upstream_headers), []
    names: dict[str, str] = {}  # lower-case -> the spelling first given
    defaults: dict[str, str] = {}
    per: dict[str, dict[str, str]] = {}
    for name, value in settings.upstream_headers:
        names.setdefault(header_name(name).lower(), name)
        defaults[name.lower()] = value
    for provider, name, value in settings.provider_headers:
        names.setdefault(header_name(name).lower(), name)
        per.setdefault(name.lower(), {})[provider] = value
    lines, maps = [], []
    for i, (low, name) in enumerate(sorted(names.items())):
        var = f"fairvisor_inject_{i}"
        maps.append(_var_map(var, {p: nginx_string(v) for p, v in per.get(low, {}).items()},
                             nginx_string(defaults.get(low, ""))))
        lines.append(f"            proxy_set_header {name} ${var};")
    return "\n".join(lines), maps


_LLM_RESPONSE_PHASES = """\
            # SSE counting and cutoff, and the head/tail kept for settlement.
            body_filter_by_lua_block { require("fairvisor.shim").body_filter() }
            # Settle goes out from a timer here (no cosockets in body_filter or log).
            log_by_lua_block { require("fairvisor.shim").log() }"""
_NO_RESPONSE_PHASES = "            # No LLM format: no stream counting or settlement (body_filter, log)."


def _header_lines(pairs) -> str:
    lines = [f"            proxy_set_header {header_name(name)} {nginx_string(value)};" for name, value in pairs]
    return "\n".join(lines) if lines else "            # (none)"


def _engine_sockets(settings) -> str:
    """The shim's `socket`: one path (one engine, the config as it always was), or the list of
    FAIRVISOR_ENGINES paths from which each worker takes ngx.worker.id() % N (fairvisor.engines)."""
    from pyengine.engine_paths import engine_sockets

    paths = [lua_string(p) for p in engine_sockets(settings)]
    return paths[0] if len(paths) == 1 else "{ " + ", ".join(paths) + " }"


def render(settings, runtime_dir: str | os.PathLike) -> str:
    """The whole nginx.conf text; every runtime file (pid, logs, temp dirs) lives in runtime_dir."""
    runtime_dir = os.path.abspath(runtime_dir)
    values = {
        "mode": settings.mode,
        "user": _user_line(settings),
        "worker_processes": _worker_processes(str(settings.worker_processes)),
        "runtime_dir": runtime_dir,
        "error_log_level": _ERROR_LOG_LEVELS.get(settings.log_level.lower(), "notice"),
        "lua_shim_dir": str(LUA_SHIM_DIR),
        "engine_socket": _engine_sockets(settings),
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
