"""FAIRVISOR_STATE_URL: checking it, masking its secrets, and connecting to Redis, Valkey or a Cluster."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

SCHEMES = ("redis", "rediss", "unix")
MASK = "***"
# Query options redis-py passes to its connections as strings; the typed ones are its own table.
_STRING_OPTIONS = ("username", "password", "client_name", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path",
                   "ssl_certfile", "ssl_keyfile", "ssl_password")
_SECRET_OPTIONS = ("password", "ssl_password")
# One immediate retry reconnects after a dropped connection; longer waits belong to the sync loop,
# which keeps its batch and tries again every interval (redis-py's default backs off for seconds).
RETRIES = 1


class RemoteError(ConnectionError):
    """The state store cannot be reached or used; the message carries the masked URL only."""


def mask(url: str) -> str:
    """The URL with its password (and any secret query option) replaced by ***; never raises."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = netloc.rpartition("@")[2]
            netloc = f"{user}:{MASK}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if k in _SECRET_OPTIONS else v) for k, v in pairs], safe="*/")
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") + (
            f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:
        return f"<unparsable {url.partition(':')[0][:10]!r} URL>"


def url_error(url: str) -> str | None:
    """Why redis-py could not use `url` (the message shows it masked), or None when it is usable."""
    shown = mask(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{shown}: {exc}"
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not url.lower().startswith(scheme + "://"):
        return f"{shown}: the scheme must be redis://, rediss:// or unix://"
    if parts.fragment:
        return f"{shown}: a URL of the state store has no #fragment"
    error = _query_error(parts.query)
    if error:
        return f"{shown}: {error}"
    if scheme == "unix":
        if parts.hostname or port is not None:
            return f"{shown}: unix:// takes a path (unix:///run/redis/redis.sock), not a host"
        if not parts.path.startswith("/") or parts.path == "/":
            return f"{shown}: unix:// needs the absolute path of the socket (unix:///run/redis/redis.sock)"
        return None
    if not parts.hostname:
        return f"{shown}: no host (redis://host:6379/0)"
    if port == 0:
        return f"{shown}: the port must be 1..65535"
    db = parts.path.strip("/")
    if db and not (db.isdigit() and db.isascii()):
        return f"{shown}: the path is the database number (/0), got /{db}"
    return None


def _query_error(query: str) -> str | None:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        return "the query is not name=value pairs"
    for name, value in pairs:
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parser is None and name not in _STRING_OPTIONS:
            known = sorted([*URL_QUERY_ARGUMENT_PARSERS, *_STRING_OPTIONS])
            return f"unknown option {name!r} (known: {', '.join(known)})"
        if parser is not None:
            try:
                parser(value)
            except (TypeError, ValueError):
                return f"option {name!r}: bad value {value if name not in _SECRET_OPTIONS else MASK!r}"
    return None


class Remote:
    """A connected state store: `client` is redis.asyncio's Redis or RedisCluster (bytes in, bytes out)."""

    def __init__(self, client: Redis | RedisCluster, url: str, is_cluster: bool):
        self.client = client
        self.is_cluster = is_cluster
        self._shown = mask(url)

    @property
    def backend(self) -> str:
        """ "redis" or "redis-cluster", as admin /readyz names it."""
        return "redis-cluster" if self.is_cluster else "redis"

    def describe(self) -> str:
        """The masked URL and the backend, for logs and status: never the password."""
        return f"{self._shown} ({self.backend})"

    async def close(self) -> None:
        await self.client.aclose()


async def connect(url: str, timeout_s: float = 1.0) -> Remote:
    """Connects and pings; a server with cluster_enabled:1 in INFO cluster gets a RedisCluster client."""
    error = url_error(url)
    if error is not None:
        raise ValueError(error)
    # The URL's own socket_timeout / socket_connect_timeout options win over timeout_s (redis-py's order).
    options = dict(socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=False)
    client = Redis.from_url(url, retry=Retry(NoBackoff(), RETRIES), **options)
    try:
        info = await client.info("cluster")
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise RemoteError(f"state store {mask(url)}: {_reason(exc)}") from None
    if not info.get("cluster_enabled"):
        return Remote(client, url, is_cluster=False)
    await client.aclose()
    if url.lower().startswith("unix://"):
        raise RemoteError(f"state store {mask(url)}: a Redis Cluster is reached over redis:// or rediss://, "
                          "not a Unix socket")
    try:
        cluster = RedisCluster.from_url(url, retry=Retry(NoBackoff(), RETRIES), **options)
    except (RedisError, RedisClusterException) as exc:  # a /db other than 0, which a cluster does not have
        raise RemoteError(f"state store {mask(url)} (redis-cluster): {_reason(exc)}") from None
    try:
        await cluster.initialize()
    except (RedisError, RedisClusterException, OSError) as exc:
        await cluster.aclose()
        raise RemoteError(f"state store {mask(url)} (redis-cluster): {_reason(exc)}") from None
    return Remote(cluster, url, is_cluster=True)


def _reason(exc: BaseException) -> str:
    # redis-py's messages name host and port, never the password; the type says what kind of failure.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
