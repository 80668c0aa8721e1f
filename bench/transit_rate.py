#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Requests per second the Transit test server (tests/kmsd/vault_transit.py) answers: `decrypt` calls on
kept-alive connections from one client process, then from 8.

  bench/transit_rate.py [LATENCY_MS]      (default 2)

Shows whether a benchmark against the test server is bound by the server itself (one Python process).
"""
import base64
import http.client
import json
import multiprocessing
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "integration"))
from vaultd import VaultServer  # noqa: E402

CONTEXT = base64.b64encode(b"c" * 32).decode()


def client(args):
    port, token, ciphertext, n = args
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"ciphertext": ciphertext, "context": CONTEXT})
    headers = {"X-Vault-Token": token, "Content-Type": "application/json"}
    for _ in range(n):
        conn.request("POST", "/v1/transit/decrypt/k", body, headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status


def main():
    latency = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    work = pathlib.Path(tempfile.mkdtemp(prefix="transit-rate-", dir="/var/tmp"))
    srv = VaultServer(work, latency_ms=latency)
    try:
        srv.create_key("k")
        plaintext = base64.b64encode(b"x" * 32).decode()
        ciphertext = srv.api("POST", "encrypt/k", {"plaintext": plaintext, "context": CONTEXT})["data"]["ciphertext"]
        for procs, n in ((1, 300), (8, 150)):
            with multiprocessing.Pool(procs) as pool:
                t0 = time.monotonic()
                pool.map(client, [(srv.port, srv.token, ciphertext, n)] * procs)
                elapsed = time.monotonic() - t0
            print(f"latency {latency} ms, {procs} client(s): {procs * n / elapsed:.0f} decrypts/s "
                  f"({elapsed * 1000 / n:.2f} ms per request per client)")
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
