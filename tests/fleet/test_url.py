"""FAIRVISOR_STATE_URL: which URLs redis-py can use, masking, and connect() against real servers."""

import asyncio

import pytest

from pyengine.fleet.url import RemoteError, connect, mask, url_error
from tests.support.redis_servers import RedisServer, free_port

GOOD = [
    "redis://127.0.0.1:6379",
    "redis://127.0.0.1:6379/0",
    "redis://localhost/15",
    "redis://user:secret@cache.internal:6380/2",
    "redis://:secret@[::1]:6379/0",
    "rediss://:secret@redis.example:6380/0?ssl_cert_reqs=none",
    "rediss://redis.example?ssl_ca_certs=/etc/ssl/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
    "redis://h:1/0?socket_timeout=0.5&socket_connect_timeout=0.25&max_connections=8",
    "unix:///run/redis/redis.sock",
    "unix://:secret@/run/redis/redis.sock?db=3",
    "REDIS://host:6379/0",
]

BAD = [
    ("http://127.0.0.1:6379", "the scheme must be"),
    ("redis:host", "the scheme must be"),
    ("127.0.0.1:6379", "the scheme must be"),
    ("redis://:secret@/0", "no host"),
    ("redis://:secret@host:99999/0", "Port out of range"),
    ("redis://:secret@host:0/0", "the port must be 1..65535"),
    ("redis://:secret@host:port/0", "Port could not be cast"),
    ("redis://:secret@host:6379/zero", "the path is the database number"),
    ("redis://:secret@host:6379/0?flavour=mint", "unknown option 'flavour'"),
    ("redis://:secret@host:6379/0?socket_timeout=soon", "option 'socket_timeout': bad value 'soon'"),
    ("redis://:secret@host:6379/0?socket_timeout", "the query is not name=value pairs"),
    ("unix://:secret@host/redis.sock", "unix:// takes a path"),
    ("unix://", "needs the absolute path"),
    ("redis://:secret@host:6379/0#frag", "no #fragment"),
]


@pytest.mark.parametrize("url", GOOD)
def test_usable_urls_have_no_error(url):
    assert url_error(url) is None


@pytest.mark.parametrize("url,message", BAD)
def test_unusable_urls_say_why_without_the_password(url, message):
    error = url_error(url)
    assert error is not None and message in error
    assert "secret" not in error


@pytest.mark.parametrize("url,shown", [
    ("redis://user:secret@h:1/2", "redis://user:***@h:1/2"),
    ("redis://:secret@h:1/2", "redis://:***@h:1/2"),
    ("rediss://h:1/0?password=secret&ssl_password=secret2&db=1", "rediss://h:1/0?password=***&ssl_password=***&db=1"),
    ("unix://:secret@/tmp/r.sock", "unix://:***@/tmp/r.sock"),
    ("unix:///tmp/r.sock?db=1", "unix:///tmp/r.sock?db=1"),
    ("redis://h:1/0", "redis://h:1/0"),
])
def test_mask_hides_passwords_and_keeps_the_rest(url, shown):
    assert mask(url) == shown



async def _ping(url: str, **kw):
    remote = await connect(url, **kw)
    try:
        assert await remote.client.ping() is True
        await remote.client.set(b"fv:test", b"\x00\xff")
        return remote.is_cluster, remote.describe(), await remote.client.get(b"fv:test")
    finally:
        await remote.close()


@pytest.mark.redis
def test_connect_over_tcp(redis_server):
    is_cluster, described, value = asyncio.run(_ping(redis_server.url))
    assert (is_cluster, value) == (False, b"\x00\xff")  # bytes in, bytes out: decode_responses off
    assert described == f"{redis_server.url} (redis)"


@pytest.mark.redis
def test_connect_over_a_unix_socket(redis_unix_server):
    is_cluster, described, value = asyncio.run(_ping(redis_unix_server.url))
    assert (is_cluster, value) == (False, b"\x00\xff")
    assert described.startswith("unix:///tmp/") and described.endswith(" (redis)")


@pytest.mark.redis
def test_connect_with_a_password_describes_it_masked(tmp_path):
    server = RedisServer(tmp_path / "r", password="s3cret-pw").start()
    try:
        is_cluster, described, _ = asyncio.run(_ping(server.url))
        assert "s3cret-pw" not in described and ":***@" in described
        wrong = server.url.replace("s3cret-pw", "wrong-pw")
        with pytest.raises(RemoteError) as info:
            asyncio.run(_ping(wrong))
        assert "wrong-pw" not in str(info.value) and ":***@" in str(info.value)
    finally:
        server.close()


@pytest.mark.redis
def test_connect_to_a_cluster_detects_it(redis_cluster):
    async def spread():
        remote = await connect(redis_cluster.url)
        try:
            # Keys in every slot range land on their own master: the client follows the slots.
            for i in range(30):
                await remote.client.set(f"fv:{{{i}}}k".encode(), str(i).encode())
            values = [await remote.client.get(f"fv:{{{i}}}k".encode()) for i in range(30)]
            return remote.is_cluster, remote.describe(), values
        finally:
            await remote.close()

    is_cluster, described, values = asyncio.run(spread())
    assert is_cluster is True and described.endswith(" (redis-cluster)")
    assert values == [str(i).encode() for i in range(30)]
    sizes = [int(node.call("DBSIZE")) for node in redis_cluster.nodes]
    assert sum(sizes) == 30 and all(size > 0 for size in sizes)


@pytest.mark.redis
def test_a_cluster_has_no_database_but_0(redis_cluster):
    with pytest.raises(RemoteError, match="cluster mode"):
        asyncio.run(_ping(redis_cluster.url.rsplit("/", 1)[0] + "/3"))


def test_nothing_listening_is_a_remote_error_within_the_timeout():
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RemoteError) as info:
        asyncio.run(_ping(url, timeout_s=0.5))
    assert "secret" not in str(info.value) and f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in str(info.value)


def test_connect_refuses_a_bad_url_without_the_password():
    with pytest.raises(ValueError) as info:
        asyncio.run(connect("http://:secret@host/0"))
    assert "secret" not in str(info.value)


@pytest.mark.redis
def test_a_restarted_server_is_reached_again_on_the_same_port(redis_server):
    async def around_restart():
        remote = await connect(redis_server.url)
        try:
            await remote.client.set(b"k", b"1")
            port = redis_server.port
            redis_server.restart()
            assert redis_server.port == port
            # Persistence is off: the restarted server is empty, and the client reconnects by itself.
            return await remote.client.get(b"k")
        finally:
            await remote.close()

    assert asyncio.run(around_restart()) is None


@pytest.mark.redis
def test_rediss_passes_the_urls_tls_options_through(tmp_path):
    server = RedisServer(tmp_path / "tls", tls=True, password="tls-pw").start()
    try:
        is_cluster, described, value = asyncio.run(_ping(server.url))
        assert (is_cluster, value) == (False, b"\x00\xff") and described.startswith("rediss://:***@")
        # Without the URL's ssl_ca_certs the self-signed certificate is refused; with
        # ssl_cert_reqs=none the URL says not to check it.
        untrusted = server.url.split("?")[0]
        with pytest.raises(RemoteError) as info:
            asyncio.run(_ping(untrusted))
        assert "tls-pw" not in str(info.value)
        assert asyncio.run(_ping(untrusted + "?ssl_cert_reqs=none"))[2] == b"\x00\xff"
    finally:
        server.close()
