"""A real HTTP server on 127.0.0.1 answering admin requests with a function: the CLI's peer in unit tests."""

import http.server
import threading
from contextlib import contextmanager


@contextmanager
def admin_server(answer):
    """answer(method, path_and_query, headers, body) -> (status, content_type, body bytes | str)
    or the same plus a flat [name, value, ...] list of response headers; yields the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            status, ctype, out, *extra = answer(self.command, self.path, self.headers, body)
            out = out.encode() if isinstance(out, str) else out
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            pairs = extra[0] if extra else []
            for i in range(0, len(pairs), 2):
                self.send_header(pairs[i], pairs[i + 1])
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def routes(table: dict, token: str | None = None):
    """An `answer` for admin_server: path (query dropped) -> fn() returning a Reply-like object;
    401 without `Authorization: Bearer <token>` when a token is set."""

    def answer(method, path, headers, body):
        if token is not None and headers.get("Authorization") != f"Bearer {token}":
            return 401, "application/problem+json", '{"status":401}'
        fn = table.get(path.partition("?")[0])
        if fn is None:
            return 404, "application/problem+json", '{"status":404}'
        reply = fn()
        return reply.status, reply.content_type, reply.body

    return answer


def engine_routes(engine, token: str | None = None):
    """An `answer` dispatching to the engine's admin routes (pyengine.admin_api), as the admin listener does."""
    def answer(method, path, headers, body):
        if token is not None and headers.get("Authorization") != f"Bearer {token}":
            return 401, "application/problem+json", '{"status":401}'
        return engine.admin_routes.handle(method, path, body, "test")

    return answer
