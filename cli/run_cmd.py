"""`fairvisor run` (supervises the engine and nginx), `fairvisor engine` and `fairvisor nginx-conf`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import click

POLL_S = 0.1  # supervisor loop period: a dead engine is restarted within about this long
ENGINE_READY_TIMEOUT_S = 20.0  # first start: policy load and socket bind
NGINX_QUIT_TIMEOUT_S = 10.0  # graceful stop (QUIT lets in-flight requests finish), then TERM
STOP_TIMEOUT_S = 5.0  # after TERM, before KILL
CRASH_WINDOW_S = 1.0  # an engine that dies younger than this is crash-looping: back off
MAX_BACKOFF_S = 5.0

# Every FAIRVISOR_* variable has an equal flag (contract §5): flag name -> variable.
_FLAG_VARS = {
    "mode": "FAIRVISOR_MODE",
    "config": "FAIRVISOR_CONFIG_FILE",
    "listen": "FAIRVISOR_LISTEN",
    "backend_url": "FAIRVISOR_BACKEND_URL",
    "backend_url_openai": "FAIRVISOR_BACKEND_URL_OPENAI",
    "backend_url_anthropic": "FAIRVISOR_BACKEND_URL_ANTHROPIC",
    "backend_url_gemini": "FAIRVISOR_BACKEND_URL_GEMINI",
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
# Set by `fairvisor run` for each engine it starts, never by hand: accepted, left out of --help.
_INTERNAL = frozenset({"engine_index"})
_UPSTREAM_PREFIX = "FAIRVISOR_UPSTREAM_HEADER_"
# --openai-upstream-header NAME=VALUE and likewise: flag parameter -> variable prefix.
_PROVIDER_HEADER_FLAGS = {f"{p}_upstream_headers": f"FAIRVISOR_{p.upper()}_UPSTREAM_HEADER_"
                          for p in ("openai", "anthropic", "gemini")}
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


def engine_answers(path: str, timeout_s: float = 0.5) -> bool:
    """True when the engine's socket answers a Hello with a HelloReply."""
    from pyengine.errors import ProtocolError
    from pyengine.protocol.client import call
    from pyengine.protocol.messages import PROTOCOL_VERSION, Hello, HelloReply

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            return isinstance(call(sock, Hello(protocol_version=PROTOCOL_VERSION)), HelloReply)
    except (OSError, ProtocolError):
        return False


def _die_with_parent() -> None:
    # Children get SIGTERM if the supervisor itself is killed (Linux prctl PR_SET_PDEATHSIG).
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _spawn(argv: list[str], env: dict) -> subprocess.Popen:
    # Own process group: a terminal's Ctrl-C reaches only the supervisor, which stops the
    # children in order (nginx first, then the engine).
    return subprocess.Popen(argv, env=env, process_group=0, preexec_fn=_die_with_parent)


def _stop(proc: subprocess.Popen | None, first_signal: int, timeout_s: float) -> None:
    """Signal, wait up to timeout_s, then TERM, then KILL: never leaves the process behind."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait_s in ((first_signal, timeout_s), (signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, None)):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class Supervisor:
    """Starts the engine, then nginx; restarts a dead engine; stops nginx then the engine."""

    def __init__(self, settings, env: dict, runtime_dir: str, conf_path: str):
        self.settings = settings
        self.env = env
        self.runtime_dir = runtime_dir
        self.conf_path = conf_path
        self.engine: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.engine_started_at = 0.0
        self.restarts = 0
        self.stopping = False
        self.exit_code = 0
        from .instance_guard import SocketWatch

        self.socket_watch = SocketWatch(settings.engine_socket)

    def log(self, msg: str) -> None:
        click.echo(f"fairvisor: {msg}", err=True)

    def _on_stop_signal(self, signum, frame) -> None:
        self.stopping = True

    def _on_hup(self, signum, frame) -> None:
        if self.engine is not None and self.engine.poll() is None:
            self.engine.send_signal(signal.SIGHUP)  # policy reload

    def start_engine(self) -> None:
        self.socket_watch.engine_gone()
        self.engine = _spawn([sys.executable, "-m", "pyengine"], self.env)
        self.engine_started_at = time.monotonic()
        with open(os.path.join(self.runtime_dir, "engine.pid"), "w") as f:
            f.write(f"{self.engine.pid}\n")

    def wait_engine_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            if self.engine.poll() is not None:
                return False
            if engine_answers(self.settings.engine_socket):
                self.socket_watch.engine_ready()
                return True
            time.sleep(POLL_S / 2)
        return False

    def start_nginx(self) -> None:
        self.nginx = _spawn(["nginx", "-p", self.runtime_dir, "-c", self.conf_path,
                             "-e", os.path.join(self.runtime_dir, "error.log")], self.env)

    def _check_engine_socket(self) -> None:
        """The engine's socket removed or replaced: its nginx no longer reaches it. Restart it."""
        if not self.socket_watch.watching:
            if self.engine.poll() is None and engine_answers(self.settings.engine_socket, timeout_s=0.05):
                self.socket_watch.engine_ready()  # a restarted engine is up
            return
        problem = self.socket_watch.problem()
        if problem:
            self.log(f"ERROR: the engine socket {self.settings.engine_socket} was {problem} while the engine "
                     f"(pid {self.engine.pid}) ran; nginx cannot reach it there. Restarting the engine")
            _stop(self.engine, signal.SIGTERM, STOP_TIMEOUT_S)

    def _restart_engine(self) -> None:
        code = self.engine.returncode
        from pyengine.instance_lock import EXIT_BUSY

        if code == EXIT_BUSY:
            self.log(f"the engine refused to start: another live process owns {self.settings.engine_socket} "
                     "or the state dir (its reason is above); stopping rather than serve on someone else's engine")
            self.stopping = True
            self.exit_code = 1
            return
        young = time.monotonic() - self.engine_started_at < CRASH_WINDOW_S
        self.restarts = self.restarts + 1 if young else 0
        self.log(f"engine exited with status {code}; restarting (nginx applies fail mode "
                 f"'{self.settings.fail_mode}' meanwhile)")
        if self.restarts:
            # Crash loop: back off, but keep watching for a stop signal.
            until = time.monotonic() + min(MAX_BACKOFF_S, POLL_S * 2 ** self.restarts)
            while time.monotonic() < until and not self.stopping:
                time.sleep(POLL_S)
            if self.stopping:
                return
        self.start_engine()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self.start_engine()
            if not self.wait_engine_ready(ENGINE_READY_TIMEOUT_S):
                if self.stopping:
                    return 0
                if self.engine.poll() is not None:
                    self.log(f"the engine exited with status {self.engine.returncode} before answering on "
                             f"{self.settings.engine_socket} (its reason is above)")
                else:
                    self.log(f"the engine did not answer on {self.settings.engine_socket} "
                             f"within {ENGINE_READY_TIMEOUT_S:.0f} s")
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
                if self.engine is None or self.engine.poll() is not None:
                    self._restart_engine()
                else:
                    self._check_engine_socket()
                time.sleep(POLL_S)
            return self.exit_code
        finally:
            # nginx first: while it drains, the engine still answers its in-flight requests.
            for name, proc, sig, timeout_s in (("nginx", self.nginx, signal.SIGQUIT, NGINX_QUIT_TIMEOUT_S),
                                               ("engine", self.engine, signal.SIGTERM, STOP_TIMEOUT_S)):
                if proc is not None:
                    _stop(proc, sig, timeout_s)
                    self.log(f"{name} stopped (status {proc.returncode})")


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
    sup.log(f"nginx config {conf}; engine socket {settings.engine_socket}")
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
