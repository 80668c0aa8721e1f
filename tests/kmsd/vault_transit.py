#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A Vault/OpenBao Transit-compatible test server (stdlib http.server + python3-cryptography).

It speaks the subset of the Transit secrets engine envelopefs and its tests use, on the wire exactly as Vault
does (JSON bodies wrapped in the usual request_id/lease_id/data envelope, {"errors": [...]} on failure):

  POST|PUT /v1/transit/keys/NAME              create (type aes256-gcm96, derived)
  GET      /v1/transit/keys/NAME              read: latest_version, min_decryption_version, keys, ...
  DELETE   /v1/transit/keys/NAME              delete (needs deletion_allowed)
  LIST     /v1/transit/keys (or GET ?list=true)
  POST     /v1/transit/keys/NAME/rotate       new version
  POST     /v1/transit/keys/NAME/config       min_decryption_version, min_encryption_version, deletion_allowed
  POST     /v1/transit/datakey/plaintext|wrapped/NAME   bits 256 (128 and 512 too)
  POST     /v1/transit/encrypt|decrypt|rewrap/NAME       single item or batch_input
  GET      /v1/sys/health

Crypto is real: every key version is 32 random bytes; ciphertext is "vault:vN:" + base64(12-byte nonce ||
AES-256-GCM ciphertext || 16-byte tag).  A key created with derived=true needs a base64 `context` on every
call and encrypts under HKDF-SHA256(ikm=version key, salt=none, info=context, 32 bytes), as Vault's
hkdf_sha256 KDF does.  Keys live per namespace (X-Vault-Namespace).

Test knobs (never in a real Vault):
  --latency-ms N     sleep N ms before answering every request
  --gcm-failure-status N  the HTTP status of a failed GCM tag (default 400; Vault releases answer
                     500 "cipher: message authentication failed", and 500 to a batch whose only failed
                     items are such, every item's result listed)
  --token-file F     the one valid token (X-Vault-Token or Authorization: Bearer); others get 403
  --state-file F     keys persist across restarts (written atomically after each change)
  --port 0 --port-file F   listen on a free port and write its number to F once listening
  --tls-cert/--tls-key     serve HTTPS
  --test-control     enables POST /_test/fault {"status": 503|429|..., "count": N, "seconds": S, "share": F}
                     (answer that status to the next N requests, or for S seconds to every request or,
                     with a share 0 < F < 1, to that share of them at random; status 0 clears; 429 comes
                     with the body of Vault's rate-limit quota),
                     POST /_test/token {"token": "..."} (replace the valid token, e.g. to revoke it),
                     POST /_test/latency {"ms": N} (replace --latency-ms),
                     GET /_test/key/NAME (the key versions' raw material, base64, for independent checks)
                     and GET /_test/stats (requests per operation; OP_items counts the items of
                     encrypt/decrypt/rewrap requests, batches included; "faults" counts injected faults).
"""

import argparse
import base64
import binascii
import json
import os
import pathlib
import random
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
DERIVED_NO_CONTEXT = ("missing 'context' for key derivation; the key was created using a derived key, which "
                      "means additional, per-request information must be included in order to perform "
                      "operations with the key")


class TransitError(Exception):
    """A Vault error answer: HTTP status and the text that goes into "errors"."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def user_error(message):
    return TransitError(400, message)


# The status of "cipher: message authentication failed" (--gcm-failure-status).
GCM_FAILURE_STATUS = 400


def b64decode_strict(value, what):
    if not isinstance(value, str):
        raise user_error(f"failed to base64-decode {what}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise user_error(f"failed to base64-decode {what}") from None


class Key:
    """One named Transit key: its versions and policy."""

    def __init__(self, name, derived=False, key_type="aes256-gcm96"):
        self.name = name
        self.type = key_type
        self.derived = derived
        self.versions = {}     # version -> 32 bytes
        self.created = {}      # version -> unix time
        self.latest = 0
        self.min_decryption_version = 1
        self.min_encryption_version = 0
        self.deletion_allowed = False
        self.rotate()

    def rotate(self):
        self.latest += 1
        self.versions[self.latest] = os.urandom(32)
        self.created[self.latest] = int(time.time())

    def to_state(self):
        return {"type": self.type, "derived": self.derived, "latest": self.latest,
                "min_decryption_version": self.min_decryption_version,
                "min_encryption_version": self.min_encryption_version,
                "deletion_allowed": self.deletion_allowed,
                "versions": {str(v): base64.b64encode(k).decode() for v, k in self.versions.items()},
                "created": {str(v): t for v, t in self.created.items()}}

    @classmethod
    def from_state(cls, name, st):
        key = cls.__new__(cls)
        key.name = name
        key.type = st["type"]
        key.derived = st["derived"]
        key.latest = st["latest"]
        key.min_decryption_version = st["min_decryption_version"]
        key.min_encryption_version = st["min_encryption_version"]
        key.deletion_allowed = st["deletion_allowed"]
        key.versions = {int(v): base64.b64decode(k) for v, k in st["versions"].items()}
        key.created = {int(v): t for v, t in st["created"].items()}
        return key

    def describe(self):
        data = {"name": self.name, "type": self.type, "derived": self.derived,
                "deletion_allowed": self.deletion_allowed, "exportable": False,
                "allow_plaintext_backup": False, "convergent_encryption": False, "imported_key": False,
                "auto_rotate_period": 0,
                "keys": {str(v): self.created[v] for v in sorted(self.versions)
                         if v >= self.min_decryption_version},
                "latest_version": self.latest,
                "min_available_version": 0,
                "min_decryption_version": self.min_decryption_version,
                "min_encryption_version": self.min_encryption_version,
                "supports_encryption": True, "supports_decryption": True,
                "supports_derivation": True, "supports_signing": False}
        if self.derived:
            data["kdf"] = "hkdf_sha256"
        return data

    def _material(self, version, context):
        """The AES key for @version, derived per context if this key is derived."""
        base = self.versions[version]
        if not self.derived:
            return base
        if not context:
            raise user_error(DERIVED_NO_CONTEXT)
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context).derive(base)

    def _context(self, item):
        value = item.get("context")
        if value in (None, ""):
            if self.derived:
                raise user_error(DERIVED_NO_CONTEXT)
            return b""
        return b64decode_strict(value, "context")

    def encrypt(self, plaintext, context, version=None):
        if version in (None, 0, "0", ""):
            version = self.latest
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise user_error("invalid key version") from None
        if version > self.latest or version < 1:
            raise user_error("invalid key version")
        if version < self.min_encryption_version:
            raise user_error("cannot encrypt with a version lower than the minimum encryption version")
        if version < self.min_decryption_version:
            raise user_error("cannot encrypt with a version lower than the minimum decryption version")
        nonce = os.urandom(12)
        sealed = AESGCM(self._material(version, context)).encrypt(nonce, plaintext, None)
        return f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode(), version

    def decrypt(self, ciphertext, context):
        if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:v"):
            raise user_error("invalid ciphertext: no prefix")
        head, sep, body = ciphertext[len("vault:v"):].partition(":")
        if not sep or not head.isdigit():
            raise user_error("invalid ciphertext: wrong number of fields")
        version = int(head)
        if version < self.min_decryption_version:
            raise user_error(TOO_OLD)
        if version > self.latest:
            raise user_error("invalid ciphertext: version is too new")
        raw = b64decode_strict(body, "ciphertext")
        if len(raw) < 12 + 16:
            raise user_error("invalid ciphertext: too short")
        try:
            plaintext = AESGCM(self._material(version, context)).decrypt(raw[:12], raw[12:], None)
        except Exception:  # cryptography's InvalidTag
            raise TransitError(GCM_FAILURE_STATUS, "cipher: message authentication failed") from None
        return plaintext, version


class Transit:
    """All keys, per namespace, and the server's knobs."""

    def __init__(self, token, state_file):
        self.lock = threading.Lock()
        self.token = token
        self.state_file = pathlib.Path(state_file) if state_file else None
        self.keys = {}         # (namespace, name) -> Key
        self.fault_status = 0
        self.fault_count = 0   # answer fault_status this many more times (0: use fault_until)
        self.fault_until = 0.0
        self.fault_share = 1.0  # of the requests within fault_until that get fault_status
        self.stats = {}
        if self.state_file and self.state_file.exists():
            st = json.loads(self.state_file.read_text())
            for entry in st["keys"]:
                self.keys[(entry["namespace"], entry["name"])] = Key.from_state(entry["name"], entry["key"])

    def save(self):
        """Persist keys (caller holds the lock)."""
        if not self.state_file:
            return
        st = {"keys": [{"namespace": ns, "name": name, "key": key.to_state()}
                       for (ns, name), key in self.keys.items()]}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(st))
        os.replace(tmp, self.state_file)

    def take_fault(self):
        """The status to answer instead of serving, or 0."""
        with self.lock:
            if not self.fault_status:
                return 0
            if self.fault_count > 0:
                self.fault_count -= 1
                self.stats["faults"] = self.stats.get("faults", 0) + 1
                status = self.fault_status
                if self.fault_count == 0:
                    self.fault_status = 0
                return status
            if time.monotonic() < self.fault_until:
                if self.fault_share < 1.0 and random.random() >= self.fault_share:
                    return 0
                self.stats["faults"] = self.stats.get("faults", 0) + 1
                return self.fault_status
            self.fault_status = 0
            return 0


def batch_or_single(body):
    """The list of items to process and whether the caller sent batch_input."""
    batch = body.get("batch_input")
    if batch is None:
        return [body], False
    if not isinstance(batch, list) or not batch:
        raise user_error("missing batch input to process")
    if not all(isinstance(item, dict) for item in batch):
        raise user_error("failed to parse batch input")
    return batch, True


class Handler(BaseHTTPRequestHandler):
    server_version = "vault-transit-test"
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle holds the body back until the
        # client's delayed ACK (40 ms), which would dwarf any --latency-ms.
        if isinstance(self.connection, socket.socket):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("vault_transit: " + (fmt % args) + "\n")

    # -- plumbing -----------------------------------------------------------------------------------------

    def send_json(self, status, payload):
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def send_empty(self, status=204):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_error_body(self, status, message):
        self.send_json(status, {"errors": [message] if message else []})

    def send_data(self, data, status=200, warnings=None):
        self.send_json(status, {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False,
                                "lease_duration": 0, "data": data, "wrap_info": None,
                                "warnings": warnings, "auth": None, "mount_type": "transit"})

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise user_error("failed to parse JSON input") from None
        if not isinstance(body, dict):
            raise user_error("failed to parse JSON input")
        return body

    def token_ok(self):
        token = self.headers.get("X-Vault-Token")
        auth = self.headers.get("Authorization", "")
        if token is None and auth.startswith("Bearer "):
            token = auth[len("Bearer "):]
        return token is not None and token == self.server.transit.token

    def handle_any(self, method):
        transit = self.server.transit
        if self.server.latency:
            time.sleep(self.server.latency)
        path, _, query = self.path.partition("?")
        try:
            if path.startswith("/_test/"):
                if not self.server.test_control:
                    raise TransitError(404, "unsupported path")
                self.read_body_and_control(method, path)
                return
            status = transit.take_fault()
            if status:
                self.read_body()
                # Vault's texts: a rate-limit quota names the path without its /v1/ prefix.
                messages = {429: 'request path "%s": rate limit quota exceeded' % path[len("/v1/"):],
                            503: "Vault is sealed"}
                self.send_error_body(status, messages.get(status, "injected fault"))
                return
            if path == "/v1/sys/health":
                self.send_json(200, {"initialized": True, "sealed": False, "standby": False,
                                     "version": "1.15.0-envelopefs-test"})
                return
            if not self.token_ok():
                self.read_body()
                raise TransitError(403, "permission denied")
            namespace = (self.headers.get("X-Vault-Namespace") or "").strip("/")
            if method == "GET" and "list=true" in query.split("&"):
                method = "LIST"
            body = self.read_body() if method in ("POST", "PUT") else {}
            if method == "PUT":
                method = "POST"
            parts = path.strip("/").split("/")
            if len(parts) < 3 or parts[0] != "v1" or parts[1] != "transit":
                raise TransitError(404, "no handler for route '%s'" % path.lstrip("/v1/"))
            self.route(namespace, method, parts[2:], body)
        except TransitError as e:
            self.send_error_body(e.status, e.message)

    def read_body_and_control(self, method, path):
        transit = self.server.transit
        if method == "GET" and path.startswith("/_test/key/"):
            ns = (self.headers.get("X-Vault-Namespace") or "").strip("/")
            with transit.lock:
                key = transit.keys.get((ns, path[len("/_test/key/"):]))
                if not key:
                    raise TransitError(404, "no such key")
                self.send_json(200, {"derived": key.derived, "versions": {
                    str(v): base64.b64encode(k).decode() for v, k in key.versions.items()}})
            return
        if method == "GET" and path == "/_test/stats":
            with transit.lock:
                self.send_json(200, dict(transit.stats))
            return
        body = self.read_body()
        with transit.lock:
            if path == "/_test/fault" and method == "POST":
                transit.fault_status = int(body.get("status", 0))
                transit.fault_count = int(body.get("count", 0))
                transit.fault_until = time.monotonic() + float(body.get("seconds", 0))
                transit.fault_share = float(body.get("share", 1.0))
            elif path == "/_test/token" and method == "POST":
                transit.token = body["token"]
            elif path == "/_test/latency" and method == "POST":
                self.server.latency = float(body["ms"]) / 1000.0
            else:
                raise TransitError(404, "unsupported path")
        self.send_empty()

    # -- Transit ------------------------------------------------------------------------------------------

    def route(self, namespace, method, parts, body):
        transit = self.server.transit
        op = parts[0]
        with transit.lock:
            transit.stats[op] = transit.stats.get(op, 0) + 1
        if op == "keys":
            self.route_keys(namespace, method, parts[1:], body)
            return
        known = (op == "datakey" and len(parts) == 3) or \
            (op in ("encrypt", "decrypt", "rewrap") and len(parts) == 2)
        if not known:
            raise TransitError(404, "unsupported path")
        if method != "POST":
            raise TransitError(405, "unsupported operation")
        if op == "datakey":
            self.datakey(namespace, parts[1], parts[2], body)
        else:
            self.crypt(namespace, op, parts[1], body)

    def route_keys(self, namespace, method, rest, body):
        transit = self.server.transit
        if not rest:
            if method != "LIST":
                raise TransitError(405, "unsupported operation")
            with transit.lock:
                names = sorted(name for (ns, name) in transit.keys if ns == namespace)
            if not names:
                raise TransitError(404, "")
            self.send_data({"keys": names})
            return
        name = rest[0]
        with transit.lock:
            key = transit.keys.get((namespace, name))
            if len(rest) == 1 and method == "POST":
                warnings = None
                if key:
                    warnings = [f"key {name} already existed"]
                else:
                    key_type = body.get("type", "aes256-gcm96")
                    if key_type != "aes256-gcm96":
                        raise user_error(f"unknown key type {key_type}")
                    key = Key(name, derived=bool(body.get("derived", False)), key_type=key_type)
                    transit.keys[(namespace, name)] = key
                    transit.save()
                self.send_data(key.describe(), warnings=warnings)
                return
            if len(rest) == 1 and method == "GET":
                if not key:
                    raise TransitError(404, "")
                self.send_data(key.describe())
                return
            if len(rest) == 1 and method == "DELETE":
                if not key:
                    self.send_empty()
                    return
                if not key.deletion_allowed:
                    raise user_error("deletion is not allowed for this key")
                del transit.keys[(namespace, name)]
                transit.save()
                self.send_empty()
                return
            if len(rest) != 2 or rest[1] not in ("rotate", "config"):
                raise TransitError(404, "unsupported path")
            if method != "POST":
                raise TransitError(405, "unsupported operation")
            if not key:
                raise user_error("encryption key not found")
            if rest[1] == "rotate":
                key.rotate()
            else:
                self.configure(key, body)
            transit.save()
            self.send_data(key.describe())

    @staticmethod
    def configure(key, body):
        min_dec = body.get("min_decryption_version", key.min_decryption_version)
        min_enc = body.get("min_encryption_version", key.min_encryption_version)
        try:
            min_dec, min_enc = int(min_dec), int(min_enc)
        except (TypeError, ValueError):
            raise user_error("invalid version") from None
        if min_dec == 0:
            min_dec = 1
        if min_dec < 0 or min_enc < 0:
            raise user_error("min versions cannot be negative")
        if min_dec > key.latest:
            raise user_error("cannot set min decryption version to a value greater than the latest version")
        if min_enc > key.latest:
            raise user_error("cannot set min encryption version to a value greater than the latest version")
        if min_enc and min_enc < min_dec:
            raise user_error("min decryption version should not be less then min available version")
        key.min_decryption_version = min_dec
        key.min_encryption_version = min_enc
        if "deletion_allowed" in body:
            key.deletion_allowed = bool(body["deletion_allowed"])

    def lookup(self, namespace, name):
        with self.server.transit.lock:
            key = self.server.transit.keys.get((namespace, name))
        if not key:
            raise user_error("encryption key not found")
        return key

    def datakey(self, namespace, kind, name, body):
        if kind not in ("plaintext", "wrapped"):
            raise user_error('invalid type "%s"' % kind)
        bits = body.get("bits", 256)
        if bits not in (128, 256, 512):
            raise user_error("invalid bits value")
        key = self.lookup(namespace, name)
        secret = os.urandom(bits // 8)
        with self.server.transit.lock:
            ciphertext, version = key.encrypt(secret, key._context(body))
        data = {"ciphertext": ciphertext, "key_version": version}
        if kind == "plaintext":
            data["plaintext"] = base64.b64encode(secret).decode()
        self.send_data(data)

    def crypt(self, namespace, op, name, body):
        transit = self.server.transit
        items, batch = batch_or_single(body)
        with transit.lock:
            transit.stats[op + "_items"] = transit.stats.get(op + "_items", 0) + len(items)
        with transit.lock:
            key = transit.keys.get((namespace, name))
            if not key and op == "encrypt":
                # Vault upserts a key on encrypt (with the create capability).
                key = Key(name, derived=bool(body.get("derived", False)))
                transit.keys[(namespace, name)] = key
                transit.save()
        if not key:
            raise user_error("encryption key not found")
        results = []
        user_error_seen = internal_error_seen = False
        for item in items:
            try:
                with transit.lock:
                    results.append(self.crypt_one(key, op, item, body if batch else None))
            except TransitError as e:
                if not batch:
                    raise
                # As Vault's path_decrypt.go/path_encrypt.go: every failed item carries its error text,
                # user errors and internal ones (a failed GCM tag) alike.
                results.append({"error": e.message})
                if e.status >= 500:
                    internal_error_seen = True
                else:
                    user_error_seen = True
        if not batch:
            self.send_data(results[0])
            return
        # Vault's batchRequestResponse: 400 if any item failed on user input, else 500 if any failed
        # internally; partial_failure_response_code replaces either when some item succeeded.
        status = 200
        if user_error_seen or internal_error_seen:
            status = 400 if user_error_seen else 500
            if any("error" not in r for r in results) and "partial_failure_response_code" in body:
                status = int(body["partial_failure_response_code"])
        self.send_data({"batch_results": results}, status=status)

    @staticmethod
    def crypt_one(key, op, item, outer):
        context = key._context(item)
        version = item.get("key_version", outer.get("key_version") if outer else None)
        if op == "encrypt":
            if "plaintext" not in item:
                raise user_error("missing plaintext to encrypt")
            plaintext = b64decode_strict(item["plaintext"], "plaintext")
            ciphertext, v = key.encrypt(plaintext, context, version)
            return {"ciphertext": ciphertext, "key_version": v}
        if "ciphertext" not in item or not item["ciphertext"]:
            raise user_error("missing ciphertext to decrypt" if op == "decrypt"
                             else "missing ciphertext to rewrap")
        plaintext, _ = key.decrypt(item["ciphertext"], context)
        if op == "decrypt":
            return {"plaintext": base64.b64encode(plaintext).decode()}
        ciphertext, v = key.encrypt(plaintext, context, version)
        return {"ciphertext": ciphertext, "key_version": v}

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_LIST(self):
        self.handle_any("LIST")

    def do_PATCH(self):
        self.read_body()
        self.send_error_body(405, "unsupported operation")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8200)
    ap.add_argument("--port-file")
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--state-file")
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--gcm-failure-status", type=int, default=400)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--test-control", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    global GCM_FAILURE_STATUS
    GCM_FAILURE_STATUS = args.gcm_failure_status

    token = pathlib.Path(args.token_file).read_text().strip()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.transit = Transit(token, args.state_file)
    server.latency = args.latency_ms / 1000.0
    server.test_control = args.test_control
    server.verbose = args.verbose
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{server.server_address[1]}\n")
        os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
