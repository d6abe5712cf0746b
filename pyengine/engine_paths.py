"""Where engine i of an edge with FAIRVISOR_ENGINES=N keeps its socket, state and decision log.

Engine 0 uses exactly the configured paths, so N=1 is the single-engine layout unchanged.
Engine i > 0 derives each path from the configured one; this module is the only place that
knows the names (the supervisor, the nginx config generator and `fairvisor logs` read them here):

- socket:        <engine_socket> with "-<i>" before its extension (engine.sock -> engine-1.sock)
- decision log:  likewise (decisions.jsonl -> decisions-1.jsonl), next to engine 0's
- state dir:     <state_dir>/engine-<i>/ (instance lock, durable snapshots, admin overlay, last-good
                 policy); the key-hash secret is the edge's one, copied in, so every engine's
                 decision log shows a tenant key as the same hash.
"""

from __future__ import annotations

import os
import re

from .decision.key_hash import SECRET_FILE, load_secret

ENGINE_DIR_PREFIX = "engine-"
INDEX_VAR = "FAIRVISOR_ENGINE_INDEX"  # set by `fairvisor run` only (pyengine/config.py reads it)


def per_engine(path: str, index: int) -> str:
    """path for engine 0; for engine i > 0, "-<i>" inserted before the file name's extension."""
    if index == 0:
        return path
    head, name = os.path.split(path)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # no extension (or a dot file): append
        return os.path.join(head, f"{name}-{index}")
    return os.path.join(head, f"{stem}-{index}.{ext}")


def engine_sockets(settings) -> list[str]:
    """The absolute socket path of every engine of the edge, engine 0 first."""
    base = os.path.abspath(settings.engine_socket)
    return [per_engine(base, i) for i in range(settings.engines)]


def engine_state_dir(state_dir: str, index: int) -> str:
    return state_dir if index == 0 else os.path.join(state_dir, f"{ENGINE_DIR_PREFIX}{index}")


def sibling_logs(path: str) -> list[str]:
    """The decision logs of engines 1.. next to engine 0's `path` (those that exist), by index."""
    head, name = os.path.split(path)
    found = []
    try:
        names = os.listdir(head or ".")
    except OSError:
        return []
    stem, dot, ext = name.rpartition(".")
    pattern = (re.escape(stem) + r"-(\d+)\." + re.escape(ext)) if dot and stem else re.escape(name) + r"-(\d+)"
    for other in names:
        m = re.fullmatch(pattern, other)
        if m and int(m.group(1)) > 0:
            found.append((int(m.group(1)), os.path.join(head, other)))
    return [p for _, p in sorted(found)]


def engine_env(env: dict, settings, index: int) -> dict:
    """The environment of engine `index`: engine 0's is `env` itself (plus its index)."""
    out = dict(env)
    out[INDEX_VAR] = str(index)
    if index == 0:
        return out
    state_dir = engine_state_dir(settings.state_dir, index)
    _share_key_secret(settings.state_dir, state_dir)
    out["FAIRVISOR_STATE_DIR"] = state_dir
    out["FAIRVISOR_ENGINE_SOCKET"] = per_engine(os.path.abspath(settings.engine_socket), index)
    if settings.decision_log != "off":
        out["FAIRVISOR_DECISION_LOG"] = per_engine(settings.decision_log, index)
    return out


def _share_key_secret(edge_dir: str, engine_dir: str) -> None:
    """engine_dir gets the edge's key-hash secret (created when absent), 0600, never replaced."""
    secret = load_secret(edge_dir)
    os.makedirs(engine_dir, mode=0o700, exist_ok=True)
    path = os.path.join(engine_dir, SECRET_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
