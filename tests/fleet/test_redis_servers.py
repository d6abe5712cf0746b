"""The test servers themselves: a missing binary fails loudly, restarts keep the port, a cluster heals."""

import asyncio

import pytest

from pyengine.fleet.url import connect
from tests.support.redis_servers import binary, command


def test_a_missing_binary_fails_the_test_with_the_install_hint():
    with pytest.raises(pytest.fail.Exception, match="redis-server-absent not found: `make bootstrap` installs"):
        binary("redis-server-absent")


@pytest.mark.redis
def test_restart_keeps_the_port_and_stop_frees_it(redis_server):
    port, pid = redis_server.port, redis_server.pid
    redis_server.restart()
    assert redis_server.port == port and redis_server.pid != pid and redis_server.ping()
    redis_server.stop()
    assert redis_server.pid is None
    with pytest.raises(OSError):
        command(redis_server.address, "PING")
    redis_server.start()
    assert redis_server.ping()


@pytest.mark.redis
def test_a_paused_server_times_out_and_answers_again_when_resumed(redis_server):
    redis_server.pause()
    with pytest.raises(OSError):  # socket.timeout is an OSError
        command(redis_server.address, "PING", timeout_s=0.2)
    redis_server.resume()
    assert redis_server.ping()


@pytest.mark.redis
def test_the_unix_server_listens_on_a_short_path_only(redis_unix_server):
    assert redis_unix_server.socket_path.startswith("/tmp/fvr") and len(redis_unix_server.socket_path) < 40
    assert redis_unix_server.url == f"unix://{redis_unix_server.socket_path}"
    assert redis_unix_server.ping()


@pytest.mark.redis
def test_a_cluster_node_restarted_on_its_port_rejoins(redis_cluster):
    node = redis_cluster.nodes[1]
    node.kill()
    node.restart()
    redis_cluster.wait_ok()

    async def roundtrip():
        remote = await connect(redis_cluster.url)
        try:
            for i in range(20):
                await remote.client.set(f"k{{{i}}}".encode(), b"v")
            return sum([await remote.client.exists(f"k{{{i}}}".encode()) for i in range(20)])
        finally:
            await remote.close()

    assert asyncio.run(roundtrip()) == 20
    assert all(redis_cluster.state(n) == "ok" for n in redis_cluster.nodes)
