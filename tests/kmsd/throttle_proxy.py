#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""An HTTP proxy in front of an AWS KMS peer (moto) that throttles and delays requests, for the tests.

Each request it accepts is either answered here, as AWS KMS answers a caller over its request quota:

  HTTP/1.1 400 Bad Request
  Content-Type: application/x-amz-json-1.1
  x-amzn-RequestId: <uuid>
  {"__type":"ThrottlingException","message":"You have exceeded the rate at which you may call KMS. ..."}

or forwarded unchanged (method, path, every header including Host, body), so the SigV4 signature the client
made for this proxy's host:port still checks at moto.  Which requests are throttled:

  burst N      the next N requests
  share F      then, each request with probability F (0 <= F <= 1)

and latency MS delays every request (throttled or not) by MS milliseconds before it is answered.

Used in-process by tests/kmsd/aws_moto.py (AwsPeer.throttle); its counters (throttled, forwarded) let a test
check that throttling really happened.
"""

import http.client
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

THROTTLE_BODY = (b'{"__type":"ThrottlingException","message":"You have exceeded the rate at which you may '
                 b'call KMS. Reduce the frequency of your calls."}')
# Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, not the request.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class ThrottleProxy:
    def __init__(self, target_port):
        self.target_port = target_port
        self.lock = threading.Lock()
        self.burst = 0
        self.share = 0.0
        self.latency = 0.0
        self.throttled = 0
        self.forwarded = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive with the client, as AWS does

            def log_message(self, *args):
                pass

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                throttle, latency = proxy.decide()
                if latency:
                    time.sleep(latency)
                if throttle:
                    self.reply(400, [("Content-Type", "application/x-amz-json-1.1"),
                                     ("x-amzn-RequestId", str(uuid.uuid4()))], THROTTLE_BODY)
                    return
                status, headers, answer = proxy.forward(self.command, self.path, self.headers, body)
                self.reply(status, headers, answer)

            def reply(self, status, headers, body):
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = handle_any

        ThreadingHTTPServer.daemon_threads = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, burst=None, share=None, latency_ms=None):
        with self.lock:
            if burst is not None:
                self.burst = int(burst)
            if share is not None:
                self.share = float(share)
            if latency_ms is not None:
                self.latency = float(latency_ms) / 1000.0

    def decide(self):
        """(throttle this request?, seconds to wait first), counted."""
        with self.lock:
            throttle = self.burst > 0 or (self.share > 0 and random.random() < self.share)
            if self.burst > 0:
                self.burst -= 1
            if throttle:
                self.throttled += 1
            else:
                self.forwarded += 1
            return throttle, self.latency

    def forward(self, method, path, headers, body):
        """The request to the target as it came; its answer as (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.target_port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def counters(self):
        with self.lock:
            return {"throttled": self.throttled, "forwarded": self.forwarded}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
