#!/usr/bin/python3
"""An HTTP/1.1 server for bulk transfers through the mesh (Python's http.server).

  bulk_http.py PORT     on 127.0.0.1:PORT: PUT/POST counts the body's bytes and answers
                        the count; GET /bytes/N answers N zero bytes (Content-Length N)
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_PUT(self):
        left = int(self.headers.get("Content-Length", "0"))
        count = 0
        while left > 0:
            data = self.rfile.read(min(CHUNK, left))
            if not data:
                break
            count += len(data)
            left -= len(data)
        body = str(count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT

    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/bytes/") else 0
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        zeros = bytes(CHUNK)
        while n > 0:
            self.wfile.write(zeros[: min(CHUNK, n)])
            n -= min(CHUNK, n)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
