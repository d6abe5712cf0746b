"""FAIRVISOR_ADMIN_LISTEN / FAIRVISOR_ADMIN_TOKEN (contract §5, §8): parsing, the loopback rule,
the rendered admin server {}, and the bind check that `fairvisor run` makes before it starts."""

import socket

import pytest
from click.testing import CliRunner

from pyengine.cli.listen_check import ListenInUse, check_bind, last_emerg
from pyengine.cli.main import main
from pyengine.cli.nginx_conf import render
from pyengine.config import ConfigError, from_env, is_loopback, split_host_port


def settings(**env):
    return from_env({"FAIRVISOR_STATE_DIR": "/tmp/fv-state", "FAIRVISOR_LISTEN": "127.0.0.1:18080", **env})


def test_defaults_are_loopback_9090_without_a_token():
    s = settings()
    assert (s.admin_listen, s.admin_token) == ("127.0.0.1:9090", None)


@pytest.mark.parametrize("listen", ["127.0.0.1:9091", "127.5.6.7:9091", "[::1]:9091", "localhost:9091", "OFF", "off"])
def test_loopback_or_off_needs_no_token(listen):
    assert settings(FAIRVISOR_ADMIN_LISTEN=listen).admin_listen in (listen, "off")


@pytest.mark.parametrize("listen", ["0.0.0.0:9090", "9090", "[::]:9090", "10.1.2.3:9090", "admin.internal:9090"])
def test_off_loopback_without_a_token_is_refused(listen):
    with pytest.raises(ConfigError, match="reachable from other machines.*FAIRVISOR_ADMIN_TOKEN"):
        settings(FAIRVISOR_ADMIN_LISTEN=listen)
    assert settings(FAIRVISOR_ADMIN_LISTEN=listen, FAIRVISOR_ADMIN_TOKEN="t0k").admin_token == "t0k"


@pytest.mark.parametrize(("env", "message"), [
    ({"FAIRVISOR_ADMIN_LISTEN": "nine"}, "expected host:port or off"),
    ({"FAIRVISOR_ADMIN_LISTEN": "*:9090"}, "expected host:port or off"),
    ({"FAIRVISOR_ADMIN_LISTEN": "127.0.0.1:70000"}, "expected host:port or off"),
    ({"FAIRVISOR_ADMIN_LISTEN": "127.0.0.1:18080"}, "port of FAIRVISOR_LISTEN"),
    ({"FAIRVISOR_LISTEN": "0.0.0.0:9090"}, "port of FAIRVISOR_LISTEN"),
    ({"FAIRVISOR_ADMIN_TOKEN": "two words"}, "printable ASCII without spaces"),
    ({"FAIRVISOR_ADMIN_TOKEN": "tab\there"}, "printable ASCII without spaces"),
])
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        settings(**env)


def test_host_port_helpers():
    assert split_host_port("[::1]:9090") == ("::1", 9090)
    assert split_host_port("9090") == ("", 9090)
    assert split_host_port("h:0") is None
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("LOCALHOST")
    assert not (is_loopback("") or is_loopback("0.0.0.0") or is_loopback("::") or is_loopback("example.com"))


@pytest.mark.parametrize("mode", ["decision_service", "reverse_proxy"])
def test_both_modes_render_the_admin_server(mode):
    conf = render(settings(FAIRVISOR_MODE=mode, FAIRVISOR_BACKEND_URL="http://127.0.0.1:9",
                           FAIRVISOR_ADMIN_LISTEN="127.0.0.1:9191"), "/tmp/fv-run")
    public, _, admin = conf.partition("# ---- admin listener")
    assert "listen 127.0.0.1:9191;" in admin and "listen 127.0.0.1:9191;" not in public
    assert "fairvisor-admin.conf;" in admin
    assert 'admin("health")' in public  # the bare /readyz
    # /metrics from the engine on the public listener: decision service only (contract §2).
    assert ('admin("metrics")' in public) is (mode == "decision_service")


def test_admin_off_renders_no_admin_server():
    conf = render(settings(FAIRVISOR_ADMIN_LISTEN="off"), "/tmp/fv-run")
    assert "listen 127.0.0.1:18080;" in conf and "fairvisor-admin.conf" not in conf
    assert conf.count("listen ") == 1


def test_run_refuses_off_loopback_without_a_token(tmp_path):
    result = CliRunner().invoke(main, ["nginx-conf", "--admin-listen", "0.0.0.0:9090"],
                                env={"FAIRVISOR_ADMIN_TOKEN": None})
    assert result.exit_code == 2 and "FAIRVISOR_ADMIN_TOKEN" in result.stderr


def test_a_taken_port_is_said_with_the_way_out():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(ListenInUse, match=rf"FAIRVISOR_ADMIN_LISTEN 127.0.0.1:{port}: cannot listen: "
                                              r".+; .*FAIRVISOR_ADMIN_LISTEN=127.0.0.1:9091"):
            check_bind(f"127.0.0.1:{port}", "FAIRVISOR_ADMIN_LISTEN")
    check_bind(f"127.0.0.1:{port}", "FAIRVISOR_ADMIN_LISTEN")  # free again: no error


def test_last_emerg_reads_the_bind_failure(tmp_path):
    log = tmp_path / "error.log"
    log.write_text("2026/01/01 00:00:00 [notice] 1#1: using the \"epoll\" event method\n"
                   "2026/01/01 00:00:00 [emerg] 12#12: bind() to 127.0.0.1:9090 failed (98: Address already in use)\n")
    assert last_emerg(str(log)) == "bind() to 127.0.0.1:9090 failed (98: Address already in use)"
    assert last_emerg(str(tmp_path / "none.log")) is None
