"""What an admin change answered by engine 0 must carry to the edge's other engines (FAIRVISOR_ENGINES > 1).

The shim sends an admin write to engine 0 first (lua-shim/fairvisor/fanout.lua). When the change
is one every engine must hold, engine 0's answer carries the header PEERS_HEADER: the query to
add to the same request for engines 1.. ("" = none), so that they hold it under the same name:
a new kill switch or override keeps engine 0's id, a self-test run its id and secret (the run's
requests reach every engine through nginx's workers). No header: the request is engine 0's
alone (a replay, a decision-log query, a refusal). The shim removes the header from the answer.
"""

from urllib.parse import urlencode

import msgspec

PEERS_HEADER = "Fairvisor-Peers"  # lua-shim/fairvisor/fanout.lua reads it by this name
_RECORDS = {"/v1/admin/kill-switches": "kill_switch", "/v1/admin/overrides": "override"}
SELFTEST, SELFTEST_END = "/v1/admin/selftest", "/v1/admin/selftest/end"


def peer_query(method: str, path: str, status: int, body: str) -> str | None:
    """The query engines 1.. get for this answered request, or None when they get nothing."""
    if status >= 400:
        return None
    if method == "DELETE" and path.rpartition("/")[0] in _RECORDS:
        return ""
    if method != "POST":
        return None
    if path == SELFTEST_END:
        return ""
    if path not in _RECORDS and path != SELFTEST:
        return None
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if path == SELFTEST:
        return urlencode({"run": doc["run"], "secret": doc["secret"]})
    return urlencode({"id": doc[_RECORDS[path]]["id"]})
