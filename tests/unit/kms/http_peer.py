#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A fault-injecting HTTP/1.1 server for the kms/http.c unit test.

Usage: http_peer.py [--cert CERT --key KEY]
Listens on 127.0.0.1 on a free port, prints the port on stdout, and serves
until stdin closes (so it dies with the test).  Paths:

  /ok                      200 {"ok":true}
  /echo                    200 {"method":..., "len":N, "body":..., "auth":bool, "amzdate":bool,
                                "token":header X-Test-Token or ""}
  /fail/KEY/CODE/N         the first N requests for KEY answer CODE, then 200 {"ok":true};
                           CODE "400t" answers 400 {"__type":"ThrottlingException"}
  /always/CODE             always CODE
  /wait/KEY/CODE/N/WHEN    the first N requests for KEY answer CODE with Retry-After: WHEN ("dS": an HTTP
                           date S seconds from now), then 200 {"ok":true}
  /slow/MS                 sleeps MS milliseconds, then 200
  /big/N                   200 with an N-byte body
  /aws/TYPE/CODE           CODE {"__type":"com.amazonaws.kms#TYPE","message":"injected"}: an AWS error
  /hits/KEY                200 {"hits":N}: requests seen for KEY
  /stats                   200 {"connections":N,"requests":N}: TCP connections accepted so far
"""

import email.utils
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
hits = {}
counts = {"connections": 0, "requests": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with lock:
            counts["connections"] += 1

    def reply(self, code, obj=None, raw=None, headers=()):
        body = raw if raw is not None else json.dumps(obj if obj is not None else {}).encode()
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = self.path.strip("/").split("/")
        with lock:
            counts["requests"] += 1
        if parts[0] == "ok":
            return self.reply(200, {"ok": True})
        if parts[0] == "echo":
            return self.reply(200, {
                "method": self.command, "len": len(body), "body": body.decode("utf-8", "replace"),
                "auth": "Authorization" in self.headers, "amzdate": "X-Amz-Date" in self.headers,
                "token": self.headers.get("X-Test-Token", "")})
        if parts[0] == "fail" and len(parts) == 4:
            key, code, n = parts[1], parts[2], int(parts[3])
            with lock:
                seen = hits.get(key, 0)
                hits[key] = seen + 1
            if seen < n:
                if code == "400t":
                    return self.reply(400, {"__type": "ThrottlingException", "message": "slow down"})
                return self.reply(int(code), {"errors": ["injected"]})
            return self.reply(200, {"ok": True})
        if parts[0] == "wait" and len(parts) == 5:
            key, code, n, when = parts[1], int(parts[2]), int(parts[3]), parts[4]
            with lock:
                seen = hits.get(key, 0)
                hits[key] = seen + 1
            if seen < n:
                if when.startswith("d"):
                    when = email.utils.formatdate(time.time() + int(when[1:]), usegmt=True)
                return self.reply(code, {"errors": ["injected"]}, headers=[("Retry-After", when)])
            return self.reply(200, {"ok": True})
        if parts[0] == "always":
            with lock:
                hits["always"] = hits.get("always", 0) + 1
            return self.reply(int(parts[1]), {"errors": ["injected"]})
        if parts[0] == "slow":
            time.sleep(int(parts[1]) / 1000)
            return self.reply(200, {"ok": True})
        if parts[0] == "big":
            return self.reply(200, raw=b"x" * int(parts[1]))
        if parts[0] == "aws" and len(parts) == 3:
            return self.reply(int(parts[2]), {"__type": "com.amazonaws.kms#" + parts[1], "message": "injected"})
        if parts[0] == "hits":
            with lock:
                return self.reply(200, {"hits": hits.get(parts[1], 0)})
        if parts[0] == "stats":
            with lock:
                return self.reply(200, dict(counts))
        return self.reply(404, {"errors": ["no such path"]})

    do_GET = serve
    do_POST = serve
    do_PUT = serve


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that time out or drop a connection on purpose are part of the tests.
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    args = sys.argv[1:]
    server = Server(("127.0.0.1", 0), Handler)
    if "--cert" in args:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[args.index("--cert") + 1], args[args.index("--key") + 1])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdout.write("%d\n" % server.server_address[1])
    sys.stdout.flush()
    sys.stdin.read()  # EOF: the test is done (or died)
    server.shutdown()


if __name__ == "__main__":
    main()
