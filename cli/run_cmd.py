"""`fairvisor run` (supervises the engine and nginx), `fairvisor engine` and `fairvisor nginx-conf`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click

from pyengine.env_vars import ENV_VARS, PROVIDERS, UPSTREAM_HEADER_PREFIX, backend_url_var, provider_header_prefix

from .processes import engine_answers, spawn, stop  # noqa: F401 - engine_answers: also used by tests

ENGINE_READY_TIMEOUT_S = 20.0  # first start: policy load and socket bind
NGINX_QUIT_TIMEOUT_S = 10.0  # graceful stop (QUIT lets in-flight requests finish), then TERM

# Every FAIRVISOR_* variable has an equal flag (contract §5): flag name -> variable, from the
# settings' own table (pyengine.config.ENV_VARS); --config is the one flag not named after its field.
_FLAG_VARS = {("config" if field == "config_file" else field): var for field, var in ENV_VARS.items()}
_FLAG_VARS.update({f"backend_url_{p}": backend_url_var(p) for p in PROVIDERS})
# Set by `fairvisor run` for each engine it starts, never by hand: accepted, left out of --help.
_INTERNAL = frozenset({"engine_index"})
_UPSTREAM_PREFIX = UPSTREAM_HEADER_PREFIX
# --openai-upstream-header NAME=VALUE and likewise: flag parameter -> variable prefix.
_PROVIDER_HEADER_FLAGS = {f"{p}_upstream_headers": provider_header_prefix(p) for p in PROVIDERS}
# Flags only nginx's config reads: `fairvisor engine` accepts them but its --help hides them.
_NGINX_ONLY = frozenset({"listen", "backend_url", "backend_tls_verify", "fail_mode", "engine_timeout_ms",
                         "upstream_timeout_ms", "worker_processes", "strip_request_headers",
                         "upstream_headers", "backend_url_openai", "backend_url_anthropic",
                         "backend_url_gemini", *_PROVIDER_HEADER_FLAGS, "admin_listen"})


def settings_options(f, hide: frozenset = frozenset()):
    """The flags shared by run, engine and nginx-conf; each overrides its FAIRVISOR_* variable."""
    flags = [
        ("--mode", "decision_service | reverse_proxy"),
        ("--config", "policy bundle file (default: the bundled per-IP policy)"),
        ("--listen", "host:port nginx listens on (default 0.0.0.0:8080)"),
        ("--backend-url", "upstream for reverse_proxy mode"),
        ("--backend-url-openai", "reverse_proxy: upstream for OpenAI-format requests (default --backend-url)"),
        ("--backend-url-anthropic", "reverse_proxy: upstream for Anthropic-format requests (default --backend-url)"),
        ("--backend-url-gemini", "reverse_proxy: upstream for Gemini-format requests (default --backend-url)"),
        ("--backend-tls-verify", "on | off: verify an https upstream's certificate (default on)"),
        ("--fail-mode", "open | closed, when the engine does not answer"),
        ("--engine-timeout-ms", "connect/send/receive timeout of the shim, in ms"),
        ("--upstream-timeout-ms", "reverse_proxy: upstream connect timeout and longest wait between bytes, in ms"),
        ("--engine-socket", "Unix socket of the engine"),
        ("--state-dir", "durable counters and runtime files"),
        ("--worker-processes", "nginx workers: auto or a count"),
        ("--trusted-proxies", "comma-separated CIDRs"),
        ("--request-headers", "original | forwarded: X-Original-* or X-Forwarded-* describe a decision request"),
        ("--llm-format", "auto (default: per request) | openai | anthropic | gemini | none"),
        ("--log-level", "debug | info | warning | error"),
        ("--strip-request-headers", "comma-separated client headers removed before the upstream"),
        ("--decision-log", "decision log file, or off (default <state-dir>/decisions.jsonl)"),
        ("--log-keys", "hashed | raw tenant keys in the decision log"),
        ("--decision-log-max-mb", "rotate the decision log past this size, in MiB"),
        ("--bundle-key", "HMAC-SHA256 key; unsigned or badly signed bundles are refused (prefer the variable)"),
        ("--max-state-keys", "limiter state entries held before the oldest are evicted (default 5000000)"),
        ("--retry-jitter", "on | off: spread Retry-After per client by up to +50% (default on)"),
        ("--hide-reason", "true | false: leave X-Fairvisor-Reason out of client responses (default false)"),
        ("--debug-session-secret", "enables POST /v1/debug/session with this secret (prefer the variable)"),
        ("--engine-socket-group", "group given the engine socket: nginx workers' group (default: the engine's)"),
        ("--engine-socket-mode", "octal mode of the engine socket (default 0660)"),
        ("--nginx-user", "user nginx workers run as: checked against the socket; under run as root, the workers' "
                         "user (default www-data, else nobody)"),
        ("--admin-listen", "host:port of the admin listener (/metrics, full /readyz), or off (default 127.0.0.1:9090)"),
        ("--admin-token", "Bearer token every admin request must carry; required off loopback (prefer the variable)"),
        ("--state-url", "fleet mode: redis://, rediss:// or unix:// URL of the Redis/Valkey state shared by "
                        "every engine (docs/fleet.md; prefer the variable when it holds a password)"),
        ("--engines", "engine processes per edge (default 1); more than 1 needs --state-url"),
        ("--sync-interval-ms", "fleet mode: how often local counters are exchanged with the store, in ms "
                               "(default 50, 1..60000)"),
        ("--engine-index", "which of the edge's engines this is (set by run)"),
    ]
    f = click.option("--env-file", type=click.Path(dir_okay=False), default=None,
                     help="KEY=VALUE lines of FAIRVISOR_* variables; the environment and flags win")(f)
    f = click.option("--upstream-header", "upstream_headers", multiple=True, metavar="NAME=VALUE",
                     hidden="upstream_headers" in hide,
                     help=f"header injected towards the upstream; repeatable [{_UPSTREAM_PREFIX}<Name>]")(f)
    for param, prefix in reversed(list(_PROVIDER_HEADER_FLAGS.items())):
        provider = param.split("_", 1)[0]
        f = click.option(f"--{provider}-upstream-header", param, multiple=True, metavar="NAME=VALUE",
                         hidden=param in hide,
                         help=f"header injected into {provider} requests only; repeatable [{prefix}<Name>]")(f)
    for flag, help_text in reversed(flags):
        name = flag[2:].replace("-", "_")
        f = click.option(flag, default=None, hidden=name in hide or name in _INTERNAL,
                         help=f"{help_text} [{_FLAG_VARS[name]}]")(f)
    return f


def flags_env(flags: dict, base: dict | None = None) -> dict:
    """The environment with every given flag written into its FAIRVISOR_* variable."""
    env = dict(os.environ if base is None else base)
    for name, var in _FLAG_VARS.items():
        if flags.get(name) is not None:
            env[var] = str(flags[name])
    for param, prefix in (("upstream_headers", _UPSTREAM_PREFIX), *_PROVIDER_HEADER_FLAGS.items()):
        for item in flags.get(param) or ():
            name, sep, value = item.partition("=")
            if not sep or not name:
                hint = "--" + param[:-1].replace("_", "-")
                raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=hint)
            env[prefix + name.replace("-", "_")] = value
    return env


def resolve(flags: dict):
    """(settings, env): the env also carries the resolved socket and state dir, for the engine."""
    from pyengine.config import ConfigError, from_env

    from .env_file import environment

    env = flags_env(flags, environment(flags.get("env_file")))
    try:
        settings = from_env(env)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    env["FAIRVISOR_STATE_DIR"] = settings.state_dir
    env["FAIRVISOR_ENGINE_SOCKET"] = settings.engine_socket
    return settings, env


class Supervisor:
    """Starts the engines (cli/engines.py), then nginx; restarts a dead engine; stops nginx, then the engines."""

    def __init__(self, settings, env: dict, runtime_dir: str, conf_path: str):
        from .engines import Engines

        self.settings = settings
        self.runtime_dir = runtime_dir
        self.conf_path = conf_path
        self.engines = Engines(settings, env, runtime_dir, self.log)
        self.env = env
        self.nginx: subprocess.Popen | None = None
        self.stopping = False

    def log(self, msg: str) -> None:
        click.echo(f"fairvisor: {msg}", err=True)

    def _on_stop_signal(self, signum, frame) -> None:
        self.stopping = True

    def _on_hup(self, signum, frame) -> None:
        self.engines.signal_all(signal.SIGHUP)  # policy reload

    def start_nginx(self) -> None:
        self.nginx = spawn(["nginx", "-p", self.runtime_dir, "-c", self.conf_path,
                            "-e", os.path.join(self.runtime_dir, "error.log")], self.env)

    def run(self) -> int:
        from .engines import POLL_S, EngineBusy

        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self.engines.start()
            problem = self.engines.wait_ready(ENGINE_READY_TIMEOUT_S, lambda: self.stopping)
            if self.stopping:
                return 0
            if problem:
                self.log(problem)
                return 1
            from pyengine.resources import LUA_SHIM_DIR

            from .worker_user import root_workers_problem

            problem = root_workers_problem(self.settings, str(LUA_SHIM_DIR))
            if problem:  # every request would fail open: refuse instead
                self.log(f"refusing to start: {problem}")
                return 1
            self.start_nginx()
            while not self.stopping:
                if self.nginx.poll() is not None:
                    from .listen_check import last_emerg
                    error_log = os.path.join(self.runtime_dir, "error.log")
                    self.log(f"nginx exited with status {self.nginx.returncode}: "
                             f"{last_emerg(error_log) or 'no fatal error logged'}; see {error_log}")
                    return self.nginx.returncode or 1
                try:
                    self.engines.check(lambda: self.stopping)
                except EngineBusy as exc:
                    self.log(str(exc))
                    return 1
                time.sleep(POLL_S)
            return 0
        finally:
            # nginx first: while it drains, the engines still answer its in-flight requests.
            if self.nginx is not None:
                stop(self.nginx, signal.SIGQUIT, NGINX_QUIT_TIMEOUT_S)
                self.log(f"nginx stopped (status {self.nginx.returncode})")
            self.engines.stop()


def admin_url(admin_listen: str) -> str:
    """Where a client on this machine reaches the admin listener (the --admin-url that fits)."""
    return _client_url(admin_listen) if admin_listen != "off" else "(admin listener off)"


def _client_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    return f"http://{host}:{port}"


def _print_walkthrough(settings) -> None:
    url = _client_url(settings.listen)
    ask = (f"curl -s -o /dev/null -w '%{{http_code}}\\n' -X POST {url}/v1/decision "
           "-H 'X-Original-Method: GET' -H 'X-Original-URI: /api/items' -H 'X-Forwarded-For: 203.0.113.7'")
    click.echo(f"""
Fairvisor decision service on {url}, with the bundled default policy:
token_bucket, 5 requests/s with a burst of 10, per client IP.

  allowed (200):   {ask}
  rejected (429):  for i in $(seq 12); do {ask}; done
                   (the first 10 print 200, then 429 with Retry-After and RateLimit headers)
  health:          curl -s {url}/readyz
  metrics:         curl -s {admin_url(settings.admin_listen)}/metrics   (admin listener, FAIRVISOR_ADMIN_LISTEN)
""", err=True)


@click.command("run")
@settings_options
def run(**flags) -> None:
    """Run the engine and nginx in the foreground, supervising both."""
    from .instance_guard import claim_state_dir
    from .listen_check import ListenInUse, check_listeners
    from .nginx_conf import RenderError, write
    from .preflight import check_policy
    from .worker_user import WorkerUserError, run_env

    settings, env = resolve(flags)
    try:
        run_env(settings, env)  # run as root: the workers' account and the socket's group
    except WorkerUserError as exc:
        raise click.UsageError(str(exc)) from None
    check_policy(settings)  # a missing or invalid --config: exit 1 with the reasons, start nothing
    lock = claim_state_dir(settings.state_dir)  # noqa: F841 - held until the process exits
    runtime_dir = os.path.join(settings.state_dir, "nginx")
    try:
        conf = write(settings, runtime_dir)
        check_listeners(settings)  # a port already taken (a second instance): say so, start nothing
    except RenderError as exc:
        raise click.UsageError(str(exc)) from None
    except ListenInUse as exc:
        click.echo(f"fairvisor run: {exc}", err=True)
        sys.exit(1)
    sup = Supervisor(settings, env, runtime_dir, str(conf))
    sockets = [e.socket for e in sup.engines.engines]
    sup.log(f"nginx config {conf}; engine socket{'s' if len(sockets) > 1 else ''} {', '.join(sockets)}")
    if settings.config_file is None and settings.mode == "decision_service":
        _print_walkthrough(settings)
    sys.exit(sup.run())


def engine_options(f):
    return settings_options(f, hide=_NGINX_ONLY)


@click.command("engine")
@engine_options
def engine(**flags) -> None:
    """Run the engine alone in the foreground (for a user-managed nginx)."""
    from pyengine.socket_access import system_nginx_user

    from .worker_user import engine_notice

    settings, env = resolve(flags)
    system_user = system_nginx_user()
    if not settings.nginx_user and system_user:
        env["FAIRVISOR_NGINX_USER"] = system_user  # the engine checks it can reach the socket
    click.echo(engine_notice(settings, system_user), err=True)
    os.execve(sys.executable, [sys.executable, "-m", "pyengine"], env)


@click.command("nginx-conf")
@settings_options
@click.option("--runtime-dir", default=None, help="where pid, logs and temp files go [<state-dir>/nginx]")
def nginx_conf(runtime_dir, **flags) -> None:
    """Print the nginx config that `fairvisor run` would use."""
    from .nginx_conf import RenderError, render

    settings, _ = resolve(flags)
    try:
        click.echo(render(settings, runtime_dir or os.path.join(settings.state_dir, "nginx")), nl=False)
    except RenderError as exc:
        raise click.UsageError(str(exc)) from None


COMMANDS = (run, engine, nginx_conf)
