"""A null engine for benchmarks: answers every Decide with a fixed allow, to measure nginx + shim alone."""

import asyncio
import os
import sys

import uvloop

from pyengine.protocol.framing import FrameBuffer, decode_request, encode_frame
from pyengine.protocol.messages import Decide, HelloReply, Reply, Verdict

# What the real engine asks for with five_rules.json, and a typical allow: same frame sizes.
HEADERS = ["x-original-method", "x-original-uri", "x-original-host", "x-forwarded-method", "x-forwarded-uri",
           "x-forwarded-host", "x-forwarded-for", "x-token-estimate", "authorization", "x-api-key"]
HELLO = encode_frame(HelloReply(protocol_version=1, generation=1, headers=HEADERS, needs_body=False,
                                max_body_bytes=0))
ALLOW = encode_frame(Verdict(status=0, headers=[
    "RateLimit-Policy", '"per-org-tpm";q=60000;w=60', "RateLimit", '"per-org-tpm";r=57658;t=3',
    "RateLimit-Limit", "60000", "RateLimit-Remaining", "57658", "RateLimit-Reset", "3",
    "X-Fairvisor-Reservation", "65f0912d-fb"]))
OK = encode_frame(Reply(status=200, content_type="application/json", body='{"status":"ok"}'))


class NullProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.frames = FrameBuffer()

    def data_received(self, data):
        # Like the real engine: every frame decoded, the replies to one read in one write.
        replies = []
        for body in self.frames.feed(data):
            msg = decode_request(body)
            replies.append(ALLOW if type(msg) is Decide else HELLO if msg.__struct_config__.tag == 1 else OK)
        if replies:
            self.transport.write(b"".join(replies))


async def serve(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
    server = await asyncio.get_running_loop().create_unix_server(NullProtocol, path=path, backlog=1024)
    os.chmod(path, 0o666)  # nginx's workers run as another user (www-data) when the bench runs as root
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1]))
