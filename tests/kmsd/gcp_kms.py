#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A local Google Cloud peer for the tests: Cloud KMS's REST API (v1) for symmetric keys, Google's OAuth 2.0
token endpoint for service accounts, and the GCE metadata server, on one port.

Cloud KMS (https://cloud.google.com/kms/docs/reference/rest), resource names as the API has them:
  POST  /v1/projects/P/locations/L/keyRings?keyRingId=R
  POST  /v1/KEYRING/cryptoKeys?cryptoKeyId=K      {"purpose": "ENCRYPT_DECRYPT"}: version 1, primary
  GET   /v1/KEY                                   {name, purpose, primary: {name, state, ...}, ...}
  POST  /v1/KEY/cryptoKeyVersions                 {}: a new ENABLED version (not primary)
  GET   /v1/KEY/cryptoKeyVersions                 {cryptoKeyVersions: [...], totalSize}
  POST  /v1/KEY:updatePrimaryVersion              {"cryptoKeyVersionId": "N"}
  PATCH /v1/KEY/cryptoKeyVersions/N?updateMask=state  {"state": "DISABLED" | "ENABLED"}
  POST  /v1/KEY/cryptoKeyVersions/N:destroy      an ENABLED or DISABLED version becomes DESTROY_SCHEDULED, its
                                                destroyTime the key's destroyScheduledDuration (24 h) away;
                                                another state is 400 FAILED_PRECONDITION
  POST  /v1/KEY:encrypt   {plaintext, plaintextCrc32c?, additionalAuthenticatedData?, ...Crc32c?}
        -> {name: KEY/cryptoKeyVersions/N, ciphertext, ciphertextCrc32c, verifiedPlaintextCrc32c,
            verifiedAdditionalAuthenticatedDataCrc32c, protectionLevel}
  POST  /v1/KEY:decrypt   {ciphertext, ciphertextCrc32c?, additionalAuthenticatedData?, ...Crc32c?}
        -> {plaintext, plaintextCrc32c, usedPrimary, protectionLevel}
int64 fields travel as decimal strings (proto3 JSON).  Enums are read as names or numbers (proto3 JSON takes
both) and answered as names, or as numbers when the request says "$alt=json;enum-encoding=int" (the Node
client in REST mode does, https://google.aip.dev/127#enum-encoding).  A request checksum that does not match is 400
INVALID_ARGUMENT; a ciphertext that does not open under that AAD is 400 INVALID_ARGUMENT "Decryption failed";
a disabled version is 400 FAILED_PRECONDITION; errors are {"error": {"code", "message", "status"}}.
Our ciphertext is 0x0a || version (4, big-endian) || nonce (12) || AES-256-GCM(plaintext, AAD) || tag.

OAuth (https://developers.google.com/identity/protocols/oauth2/service-account#httprest):
  POST /token   grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT: RS256 by a registered
                service account's key (kid, signature, iss, aud = this URL or Google's, scope, iat/exp at
                most an hour)
Metadata server (https://cloud.google.com/compute/docs/metadata/querying-metadata), "Metadata-Flavor: Google":
  GET /computeMetadata/v1/instance/service-accounts/ACCOUNT/?recursive=true, .../ACCOUNT/token
                (ACCOUNT: "default" or the service account's email)
  GET /computeMetadata/v1/instance   a listing (text), which Google's clients fetch to tell they run on GCE
  GET /computeMetadata/v1/project/project-id   the project (text)

Every Cloud KMS call needs "Authorization: Bearer T" of a live token, or a self-signed JWT of the service
account (https://developers.google.com/identity/protocols/oauth2/service-account#jwt-auth); a service account
without the role (control "config" {"role_assigned": false}) gets 403 PERMISSION_DENIED.  Test control (POST
/_test/NAME): "config" {token_lifetime, role_assigned, latency_ms}, "fault" {status, count, retry_after},
"corrupt" {op, count}: the next COUNT answers to OP (encrypt or decrypt) carry a wrong CRC32C, "counters",
"keys" -> what the peer holds: {KEY: {"primary": N, "versions": {N: state}}}.

Run: gcp_kms.py --port-file FILE --service-account-public PEM --service-account-email EMAIL --key-id KID
"""

import argparse
import base64
import json
import os
import secrets
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCOPE = "https://www.googleapis.com/auth/cloudkms"
# Google's documented audience of a token request, whatever URL the request goes to; gtoken (Node) always
# signs it, google-auth (Python) and envelopefs sign the key file's token_uri.  Both are taken.
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
KMS_AUDIENCE = "https://cloudkms.googleapis.com/"


# The enums of google/cloud/kms/v1/resources.proto this peer meets, name -> number.
ENUMS = {
    "purpose": {"CRYPTO_KEY_PURPOSE_UNSPECIFIED": 0, "ENCRYPT_DECRYPT": 1},
    "state": {"CRYPTO_KEY_VERSION_STATE_UNSPECIFIED": 0, "ENABLED": 1, "DISABLED": 2, "DESTROYED": 3,
              "DESTROY_SCHEDULED": 4},
    "protectionLevel": {"PROTECTION_LEVEL_UNSPECIFIED": 0, "SOFTWARE": 1},
    "algorithm": {"CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED": 0, "GOOGLE_SYMMETRIC_ENCRYPTION": 1},
}


def enum_name(field, value):
    """A request's enum value by its name, whether it came as the name or the number."""
    for name, number in ENUMS[field].items():
        if value in (name, number):
            return name
    raise Failure(400, f"Invalid value at '{field}': {value}")


def enums_as_numbers(obj):
    if isinstance(obj, dict):
        return {k: ENUMS[k][v] if k in ENUMS and isinstance(v, str) else enums_as_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [enums_as_numbers(v) for v in obj]
    return obj


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def stamp(ahead=0):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + ahead))


DESTROY_SCHEDULED_SECONDS = 86400  # a key's default destroyScheduledDuration


class Failure(Exception):
    STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
              409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}

    def __init__(self, code, message, status=None, headers=None):
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}
        self.status = status or self.STATUS.get(code, "UNKNOWN")


class Key:
    def __init__(self, name):
        self.name, self.created, self.versions, self.primary = name, stamp(), {}, None
        self.add_version()
        self.primary = 1

    def add_version(self):
        n = len(self.versions) + 1
        self.versions[n] = {"key": AESGCM.generate_key(256), "state": "ENABLED", "created": stamp()}
        return n

    def version_json(self, n):
        v = self.versions[n]
        answer = {"name": f"{self.name}/cryptoKeyVersions/{n}", "state": v["state"], "createTime": v["created"],
                  "protectionLevel": "SOFTWARE", "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
                  "generateTime": v["created"]}
        if "destroy_time" in v:
            answer["destroyTime"] = v["destroy_time"]
        return answer

    def destroy(self, n):
        """Schedule version @n's destruction, as Cloud KMS does (the material goes at destroyTime)."""
        v = self.versions.get(n)
        if v is None:
            raise Failure(404, f"{self.name}/cryptoKeyVersions/{n} not found.")
        if v["state"] not in ("ENABLED", "DISABLED"):
            raise Failure(400, f"{self.name}/cryptoKeyVersions/{n} is not enabled or disabled, current state "
                          f"is: {v['state']}.", "FAILED_PRECONDITION")
        v["state"], v["destroy_time"] = "DESTROY_SCHEDULED", stamp(DESTROY_SCHEDULED_SECONDS)
        return self.version_json(n)

    def json(self):
        return {"name": self.name, "primary": self.version_json(self.primary), "purpose": "ENCRYPT_DECRYPT",
                "createTime": self.created,
                "versionTemplate": {"protectionLevel": "SOFTWARE", "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"},
                "destroyScheduledDuration": f"{DESTROY_SCHEDULED_SECONDS}s"}


class Gcp:
    def __init__(self, public_pem, email, key_id):
        self.sa_public = serialization.load_pem_public_key(public_pem)
        self.sa_email, self.sa_key_id = email, key_id
        self.lock = threading.Lock()
        self.rings, self.keys, self.tokens = set(), {}, {}
        self.token_lifetime, self.role_assigned, self.latency = 3600, True, 0.0
        self.fault, self.corrupt = None, {"encrypt": 0, "decrypt": 0}
        self.counters = {"token_requests": 0, "kms_requests": 0, "faults_sent": 0, "corrupted": 0,
                         "tokens_refused": 0, "self_signed_tokens": 0}

    def issue(self):
        token = "ya29." + secrets.token_urlsafe(120)
        with self.lock:
            self.tokens[token] = time.time() + self.token_lifetime
            self.counters["token_requests"] += 1
        return {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}

    def grant(self, form, url):
        def one(name):
            values = form.get(name, [])
            return values[0] if len(values) == 1 else ""
        if one("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            raise Failure(400, "Invalid grant_type", "unsupported_grant_type")
        claims = self.signed_claims(one("assertion"))
        if claims is None:
            raise Failure(400, "Invalid JWT Signature.", "invalid_grant")
        if claims.get("aud") not in (url, GOOGLE_TOKEN_URL) or SCOPE not in str(claims.get("scope", "")).split():
            raise Failure(400, "Invalid JWT: issuer, audience or scope", "invalid_grant")
        if not self.fresh(claims):
            raise Failure(400, "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                          "timeframe.", "invalid_grant")
        return self.issue()

    def signed_claims(self, jwt):
        """The claims of an RS256 JWT the service account signed (its kid, iss), else None."""
        try:
            h64, c64, s64 = jwt.split(".")
            head, claims = json.loads(unb64url(h64)), json.loads(unb64url(c64))
            self.sa_public.verify(unb64url(s64), f"{h64}.{c64}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature, json.JSONDecodeError):
            return None
        if head.get("alg") != "RS256" or head.get("kid") not in (None, self.sa_key_id):
            return None
        return claims if claims.get("iss") == self.sa_email else None

    @staticmethod
    def fresh(claims):
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        return iat - 300 <= time.time() < exp and exp - iat <= 3600

    def self_signed(self, token):
        """A self-signed JWT used as the bearer token (https://developers.google.com/identity/protocols/oauth2/
        service-account#jwt-auth): Cloud KMS's audience or a scope that covers it, sub = iss, an hour at most.
        The Node client sends these by default, with no token exchange."""
        claims = self.signed_claims(token) if token.count(".") == 2 else None
        if claims is None or claims.get("sub") != self.sa_email or not self.fresh(claims):
            return False
        scopes = str(claims.get("scope", "")).split()
        return claims.get("aud") == KMS_AUDIENCE or SCOPE in scopes or CLOUD_PLATFORM in scopes

    def check_token(self, header):
        time.sleep(self.latency)
        token = header[len("Bearer "):] if header and header.startswith("Bearer ") else ""
        with self.lock:
            issued = time.time() < self.tokens.get(token, 0)
        signed = not issued and self.self_signed(token)
        alive = issued or signed
        with self.lock:
            self.counters["kms_requests"] += 1
            self.counters["self_signed_tokens"] += signed
            self.counters["tokens_refused"] += not alive
        if not alive:
            raise Failure(401, "Request had invalid authentication credentials. Expected OAuth 2 access token.")
        if not self.role_assigned:
            raise Failure(403, "Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource "
                          "(or it may not exist).")
        with self.lock:
            if self.fault and self.fault[1] > 0:
                status, count, retry_after = self.fault
                self.fault = (status, count - 1, retry_after)
                self.counters["faults_sent"] += 1
                raise Failure(status, "Quota exceeded." if status == 429 else "The service is unavailable.",
                              headers={"Retry-After": str(retry_after)} if retry_after is not None else {})

    def key(self, name):
        if name not in self.keys:
            raise Failure(404, f"{name} not found.")
        return self.keys[name]

    def take_corrupt(self, op):
        with self.lock:
            if self.corrupt[op] > 0:
                self.corrupt[op] -= 1
                self.counters["corrupted"] += 1
                return True
        return False

    def encrypt(self, key, body):
        plain = base64.b64decode(body["plaintext"])
        aad = base64.b64decode(body.get("additionalAuthenticatedData", ""))
        for field, data in (("plaintextCrc32c", plain), ("additionalAuthenticatedDataCrc32c", aad)):
            if field in body and int(body[field]) != crc32c(data):
                raise Failure(400, f"The checksum in field {field} did not match the data in field "
                              f"{field[:-len('Crc32c')]}.")
        with self.lock:
            n = key.primary
            v = key.versions[n]
            if v["state"] != "ENABLED":
                raise Failure(400, f"{key.name}/cryptoKeyVersions/{n} is not enabled, current state is: "
                              f"{v['state']}.", "FAILED_PRECONDITION")
        nonce = os.urandom(12)
        ct = b"\x0a" + struct.pack(">I", n) + nonce + AESGCM(v["key"]).encrypt(nonce, plain, aad)
        crc = crc32c(ct) ^ (1 if self.take_corrupt("encrypt") else 0)
        return {"name": f"{key.name}/cryptoKeyVersions/{n}", "ciphertext": base64.b64encode(ct).decode(),
                "ciphertextCrc32c": str(crc), "verifiedPlaintextCrc32c": "plaintextCrc32c" in body,
                "verifiedAdditionalAuthenticatedDataCrc32c": "additionalAuthenticatedDataCrc32c" in body,
                "protectionLevel": "SOFTWARE"}

    def decrypt(self, key, body):
        ct = base64.b64decode(body["ciphertext"])
        aad = base64.b64decode(body.get("additionalAuthenticatedData", ""))
        for field, data in (("ciphertextCrc32c", ct), ("additionalAuthenticatedDataCrc32c", aad)):
            if field in body and int(body[field]) != crc32c(data):
                raise Failure(400, f"The checksum in field {field} did not match the data in field "
                              f"{field[:-len('Crc32c')]}.")
        if len(ct) < 5 + 12 + 16 or ct[0] != 0x0A:
            raise Failure(400, "Decryption failed: the ciphertext is invalid.")
        n = struct.unpack(">I", ct[1:5])[0]
        with self.lock:
            v = key.versions.get(n)
            if v is None:
                raise Failure(400, "Decryption failed: the ciphertext is invalid.")
            if v["state"] != "ENABLED":
                raise Failure(400, f"{key.name}/cryptoKeyVersions/{n} is not enabled, current state is: "
                              f"{v['state']}.", "FAILED_PRECONDITION")
            primary = n == key.primary
        try:
            plain = AESGCM(v["key"]).decrypt(ct[5:17], ct[17:], aad)
        except InvalidTag:
            raise Failure(400, "Decryption failed: the ciphertext is invalid.") from None
        crc = crc32c(plain) ^ (1 if self.take_corrupt("decrypt") else 0)
        return {"plaintext": base64.b64encode(plain).decode(), "plaintextCrc32c": str(crc),
                "usedPrimary": primary, "protectionLevel": "SOFTWARE"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        if self.server.verbose:
            super().log_message(*args)

    def send(self, status, obj, headers=None):
        """@obj as JSON, or a str as the metadata server's text."""
        data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
        self.send_response(status)
        # The metadata server says exactly "application/json" (google-auth compares it whole).
        metadata = self.path.startswith("/computeMetadata/")
        ctype = "application/json" if metadata else "application/json; charset=UTF-8"
        self.send_header("Content-Type", "application/text" if isinstance(obj, str) else ctype)
        self.send_header("Content-Length", str(len(data)))
        if metadata:
            self.send_header("Metadata-Flavor", "Google")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def dispatch(self, method):
        g = self.server.gcp
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        base = f"http://{self.headers.get('Host')}"
        try:
            if url.path.startswith("/_test/"):
                return self.send(200, self.control(url.path[len("/_test/"):], json.loads(raw or b"{}")))
            if url.path == "/token":
                form = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True)
                return self.send(200, g.grant(form, base + "/token"))
            if url.path.startswith("/computeMetadata/v1/"):
                return self.send(200, self.metadata(url.path))
            if not url.path.startswith("/v1/"):
                raise Failure(404, "no such path")
            g.check_token(self.headers.get("Authorization"))
            body = json.loads(raw) if raw else {}
            answer = self.kms(method, url.path[len("/v1/"):], body, query)
            if "enum-encoding=int" in query.get("$alt", [""])[0].split(";"):
                answer = enums_as_numbers(answer)
            return self.send(200, answer)
        except Failure as f:
            if url.path == "/token":
                return self.send(f.code, {"error": f.status, "error_description": f.message})
            return self.send(f.code, {"error": {"code": f.code, "message": f.message, "status": f.status}},
                             f.headers)
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            return self.send(400, {"error": {"code": 400, "message": f"Invalid JSON payload: {e}",
                                             "status": "INVALID_ARGUMENT"}})

    def control(self, name, body):
        g = self.server.gcp
        with g.lock:
            if name == "config":
                g.token_lifetime = body.get("token_lifetime", g.token_lifetime)
                g.role_assigned = body.get("role_assigned", g.role_assigned)
                g.latency = body.get("latency_ms", g.latency * 1000) / 1000
            elif name == "fault":
                g.fault = (body["status"], body["count"], body.get("retry_after"))
            elif name == "corrupt":
                g.corrupt[body["op"]] = body["count"]
            elif name == "keys":
                return {name: {"primary": key.primary, "versions": {n: v["state"] for n, v in key.versions.items()}}
                        for name, key in g.keys.items()}
            return dict(g.counters)

    def metadata(self, path):
        g = self.server.gcp
        if self.headers.get("Metadata-Flavor") != "Google":
            raise Failure(403, "Missing Metadata-Flavor:Google header.")
        if path.rstrip("/") == "/computeMetadata/v1/instance":
            return "attributes/\nhostname\nid\nservice-accounts/\nzone\n"
        if path == "/computeMetadata/v1/project/project-id":
            # The project a service account belongs to names its email: NAME@PROJECT.iam.gserviceaccount.com.
            return g.sa_email.split("@")[1].split(".")[0]
        # The account is named by its alias or its email, as on Compute Engine.
        for account in ("default", g.sa_email):
            prefix = f"/computeMetadata/v1/instance/service-accounts/{account}/"
            if path == prefix:
                return {"aliases": ["default"], "email": g.sa_email, "scopes": [SCOPE]}
            if path == prefix + "token":
                return g.issue()
        raise Failure(404, "not found")

    def kms(self, method, path, body, query):
        g = self.server.gcp
        parts = path.split("/")
        with g.lock:
            if method == "POST" and path.endswith("/keyRings") and len(parts) == 5:
                ring = f"{path}/{query['keyRingId'][0]}"
                g.rings.add(ring)
                return {"name": ring, "createTime": stamp()}
            if method == "POST" and path.endswith("/cryptoKeys") and path[: -len("/cryptoKeys")] in g.rings:
                name = f"{path}/{query['cryptoKeyId'][0]}"
                if enum_name("purpose", body.get("purpose", 0)) != "ENCRYPT_DECRYPT":
                    raise Failure(400, "only ENCRYPT_DECRYPT keys here")
                if name in g.keys:
                    raise Failure(409, f"CryptoKey {name} already exists.")
                g.keys[name] = Key(name)
                return g.keys[name].json()
        if ":" in parts[-1]:
            name, verb = path.rsplit(":", 1)
            if method == "POST" and verb in ("encrypt", "decrypt"):
                key = g.key(name)
                return g.encrypt(key, body) if verb == "encrypt" else g.decrypt(key, body)
            with g.lock:
                if method == "POST" and verb == "updatePrimaryVersion":
                    key = g.key(name)
                    n = int(body["cryptoKeyVersionId"])
                    if key.versions.get(n, {}).get("state") != "ENABLED":
                        raise Failure(400, "The version is not enabled.", "FAILED_PRECONDITION")
                    key.primary = n
                    return key.json()
                if method == "POST" and verb == "destroy" and parts[-2] == "cryptoKeyVersions":
                    key, n = g.key("/".join(parts[:-2])), int(parts[-1].split(":")[0])
                    return key.destroy(n)
        with g.lock:
            if method == "GET" and path in g.keys:
                return g.keys[path].json()
            if parts[-1] == "cryptoKeyVersions":
                key = g.key("/".join(parts[:-1]))
                if method == "POST":
                    return key.version_json(key.add_version())
                return {"cryptoKeyVersions": [key.version_json(n) for n in sorted(key.versions)],
                        "totalSize": len(key.versions)}
            if parts[-2:-1] == ["cryptoKeyVersions"]:
                key, n = g.key("/".join(parts[:-2])), int(parts[-1])
                if n not in key.versions:
                    raise Failure(404, f"{path} not found.")
                if method == "PATCH" and query.get("updateMask") == ["state"]:
                    key.versions[n]["state"] = enum_name("state", body["state"])
                return key.version_json(n)
        raise Failure(404, f"{path} not found.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--service-account-public", required=True)
    ap.add_argument("--service-account-email", required=True)
    ap.add_argument("--key-id", required=True)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.service_account_public, "rb") as f:
        server.gcp = Gcp(f.read(), args.service_account_email, args.key_id)
    server.verbose = args.verbose
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
