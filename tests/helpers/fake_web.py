"""A web host of the tests' stand-in internet: every GET is answered 200 with one fixed text (stdlib only).

A test fetches it to prove that a name of the test internet resolves and its host is reached. Not
`python -m http.server`: its server looks its own address up in DNS when it binds (`socket.getfqdn`), and a
server of the test internet must never send a query of its own.

    python fake_web.py --host 203.0.113.10 --port 80 --body 'reached'
"""

import argparse
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer without the reverse DNS lookup of HTTPServer.server_bind."""

    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


def serve(host: str, port: int, body: str) -> None:
    data = body.encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    QuietHTTPServer((host, port), Handler).serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--body", required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.body)


if __name__ == "__main__":
    main()
