#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A local Azure peer for the tests: the Key Vault keys REST API (api-version 7.4) and the Microsoft
identity platform's token endpoints, over HTTPS, on one port.

Key Vault (https://learn.microsoft.com/rest/api/keyvault/keys):
  POST  /keys/NAME/create                 {"kty": "RSA"|"RSA-HSM"|"oct-HSM", "key_size": N}: a new key, or
                                          a new version of an existing one (that is how a key rotates)
  POST  /keys/NAME/rotate                 a new version of the same type and size (api-version 7.3+)
  GET   /keys/NAME[/VERSION]              the key bundle (kid, kty, n, e; attributes)
  GET   /keys/NAME/versions               {"value": [{kid, attributes}], "nextLink": ...}, 25 to a page
                                          (or ?maxresults=N)
  PATCH /keys/NAME/VERSION                {"attributes": {"enabled": false}}: disable or enable a version
  POST  /keys/NAME[/VERSION]/wrapkey      {"alg": "RSA-OAEP-256"|"A256KW", "value": base64url} -> {kid, value}
  POST  /keys/NAME[/VERSION]/unwrapkey    same; a value that does not decrypt is 400 BadParameter.  Without a
                                          version: the latest, named in the answer's kid
  DELETE /keys/NAME                       Delete Key: the key, every version, becomes a deleted key (soft
                                          delete) -> DeletedKeyBundle {recoveryId, deletedDate,
                                          scheduledPurgeDate, key, attributes}; /keys/NAME is 404 KeyNotFound
  GET   /deletedkeys/NAME                 Get Deleted Key: the DeletedKeyBundle
  DELETE /deletedkeys/NAME                Purge Deleted Key: gone for good, 204 No Content; on a vault with
                                          purge protection 403 Forbidden ("Operation \"purge\" is not allowed
                                          because purge protection is enabled for this vault. ...")
Every Key Vault call needs ?api-version= and "Authorization: Bearer T"; without the header the answer is
the 401 challenge Azure SDKs expect (WWW-Authenticate: Bearer authorization="AUTHORITY/TENANT",
resource="https://vault.azure.net").  Errors are {"error": {"code", "message"}} with Key Vault's codes
(Unauthorized, Forbidden, KeyNotFound, BadParameter, Throttled).

Identity (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow):
  POST /TENANT/oauth2/v2.0/token          client_credentials with client_secret, or a client_assertion:
                                          an RS256 or PS256 JWT by a registered certificate (x5t or
                                          x5t#S256, signature, aud, iss, sub, exp checked) or a registered
                                          federated token
  GET  /TENANT/v2.0/.well-known/openid-configuration, /common/discovery/instance   (for MSAL)
  GET  /metadata/identity/oauth2/token    the managed identity endpoint (IMDS): needs "Metadata: true",
                                          answers expires_in as a string, as IMDS does
Errors are OAuth's {"error": "invalid_client", "error_description": "AADSTS7000215: ..."}.

Test control (POST /_test/NAME, JSON): "config" {token_lifetime, role_assigned, latency_ms, purge_protection,
retention_days}, "fault" {status, count, retry_after}: the next COUNT Key Vault calls answer STATUS (429 with
Retry-After, 503), "counters" -> {token_requests, kv_requests, faults_sent, tokens_refused (expired or unknown
tokens sent to Key Vault)}, "keys" -> what the peer holds: {NAME: [{version, kty, enabled}]}, oldest first,
"deleted" -> the deleted keys: {NAME: {scheduledPurgeDate, versions: [{version, enabled}]}}, "purge_due" ->
purge every deleted key now, as Key Vault does at its scheduledPurgeDate -> {purged: [NAME]}.

Run: azure_keyvault.py --config FILE --port-file FILE --tls-cert PEM --tls-key PEM.  The config names the
tenant and its clients: {"tenant": T, "clients": {ID: {"secret": S, "certificate": PEM, "federated":
TOKEN}}, "managed_identity": true}.
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

VAULT_RESOURCE = "https://vault.azure.net"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Failure(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Version:
    def __init__(self, kty, size, created):
        self.id = secrets.token_hex(16)
        self.kty, self.size, self.created, self.updated, self.enabled = kty, size, created, created, True
        if kty.startswith("RSA"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=size or 2048)
            self.secret = None
        else:
            self.private, self.secret = None, os.urandom((size or 256) // 8)

    def wrap(self, alg, value):
        if alg == "RSA-OAEP-256" and self.private:
            return self.private.public_key().encrypt(value, oaep())
        if alg == "A256KW" and self.secret:
            return aes_key_wrap(self.secret, value)
        raise Failure(400, "BadParameter", f"Algorithm {alg} is not supported for key type {self.kty}")

    def unwrap(self, alg, value):
        try:
            if alg == "RSA-OAEP-256" and self.private:
                return self.private.decrypt(value, oaep())
            if alg == "A256KW" and self.secret:
                return aes_key_unwrap(self.secret, value)
        except (ValueError, InvalidUnwrap):
            raise Failure(400, "BadParameter", "The parameter is incorrect.") from None
        raise Failure(400, "BadParameter", f"Algorithm {alg} is not supported for key type {self.kty}")


def oaep():
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class Azure:
    def __init__(self, config):
        self.tenant = config["tenant"]
        self.clients = config.get("clients", {})
        self.managed_identity = config.get("managed_identity", False)
        self.lock = threading.Lock()
        self.keys = {}          # name -> [Version], in creation order
        self.deleted = {}       # name -> ([Version], deletedDate, scheduledPurgeDate): soft-deleted keys
        self.purge_protection = False
        self.retention_days = 90  # the vault's soft-delete retention (7 .. 90)
        self.tokens = {}        # token -> (expiry, resource)
        self.clock = int(time.time())
        self.token_lifetime = 3600
        self.role_assigned = True
        self.latency = 0.0      # seconds added to every Key Vault call
        self.fault = None       # (status, count, retry_after)
        self.counters = {"token_requests": 0, "kv_requests": 0, "faults_sent": 0, "tokens_refused": 0}
        self.jtis = set()

    # ---- identity ----
    def issue(self, resource):
        token = "eyJ0eXAi." + secrets.token_urlsafe(600)  # AAD tokens are long
        with self.lock:
            self.tokens[token] = (time.time() + self.token_lifetime, resource)
            self.counters["token_requests"] += 1
        return {"token_type": "Bearer", "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime, "access_token": token}

    def token(self, tenant, form, url):
        def one(name):
            values = form.get(name, [])
            return values[0] if len(values) == 1 else None
        if tenant != self.tenant:
            raise Failure(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if one("grant_type") != "client_credentials":
            raise Failure(400, "unsupported_grant_type", "AADSTS70003: grant_type not supported")
        client_id, scope = one("client_id"), one("scope") or ""
        client = self.clients.get(client_id)
        if client is None:
            raise Failure(400, "unauthorized_client",
                          f"AADSTS700016: Application with identifier '{client_id}' was not found.")
        if not scope.endswith("/.default"):
            raise Failure(400, "invalid_scope", "AADSTS1002012: scope must end in /.default")
        if one("client_secret") is not None:
            if not client.get("secret") or not secrets.compare_digest(one("client_secret"), client["secret"]):
                raise Failure(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        elif one("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            self.check_assertion(client_id, client, one("client_assertion") or "", url)
        else:
            raise Failure(401, "invalid_client", "AADSTS7000216: client_assertion or client_secret is required.")
        return self.issue(scope[: -len("/.default")])

    def check_assertion(self, client_id, client, assertion, url):
        if client.get("federated") and secrets.compare_digest(assertion, client["federated"]):
            return
        if not client.get("certificate"):
            raise Failure(401, "invalid_client", "AADSTS700211: No matching federated identity record found.")
        try:
            head_b64, claims_b64, sig_b64 = assertion.split(".")
            head, claims = json.loads(unb64url(head_b64)), json.loads(unb64url(claims_b64))
            sig = unb64url(sig_b64)
        except (ValueError, json.JSONDecodeError):
            raise Failure(401, "invalid_client", "AADSTS50027: JWT token is invalid or malformed.") from None
        cert = x509.load_pem_x509_certificate(client["certificate"].encode())
        der_sha1 = b64url(cert.fingerprint(hashes.SHA1()))
        der_sha256 = b64url(cert.fingerprint(hashes.SHA256()))
        # RS256 with x5t (SHA-1) is the older form; MSAL signs PS256 with x5t#S256 (RFC 7518: PSS's salt
        # is as long as the hash).  Entra ID takes both.
        schemes = {"RS256": padding.PKCS1v15(),
                   "PS256": padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)}
        if head.get("alg") not in schemes or (head.get("x5t") != der_sha1 and head.get("x5t#S256") != der_sha256):
            raise Failure(401, "invalid_client", "AADSTS700027: The certificate with identifier used to sign "
                          "the client assertion is not registered on application.")
        try:
            cert.public_key().verify(sig, f"{head_b64}.{claims_b64}".encode(), schemes[head["alg"]], hashes.SHA256())
        except InvalidSignature:
            raise Failure(401, "invalid_client", "AADSTS700027: Client assertion failed signature validation.") from None
        now = time.time()
        if claims.get("aud") != url or claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise Failure(401, "invalid_client", "AADSTS700024: Client assertion audience or issuer is wrong.")
        if not (claims.get("nbf", 0) - 300 <= now < claims.get("exp", 0)):
            raise Failure(401, "invalid_client", "AADSTS700024: Client assertion is not within its valid time range.")
        with self.lock:
            if claims.get("jti") in self.jtis:
                raise Failure(401, "invalid_client", "AADSTS700024: Client assertion replayed.")
            self.jtis.add(claims.get("jti"))

    def check_token(self, header):
        if not header:
            raise Failure(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                          {"WWW-Authenticate": self.challenge()})
        token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        with self.lock:
            expiry, resource = self.tokens.get(token, (0, ""))
        if time.time() >= expiry or resource != VAULT_RESOURCE:
            with self.lock:
                self.counters["tokens_refused"] += 1
            raise Failure(401, "Unauthorized", "AKV10022: Invalid audience or the token is expired.",
                          {"WWW-Authenticate": self.challenge()})
        if not self.role_assigned:
            raise Failure(403, "Forbidden", "Caller is not authorized to perform action on resource. "
                          "Action: 'Microsoft.KeyVault/vaults/keys/wrap/action'")

    def challenge(self):
        return (f'Bearer authorization="{self.authority}/{self.tenant}", resource="{VAULT_RESOURCE}"')

    # ---- keys ----
    def versions(self, name):
        if name not in self.keys:
            raise Failure(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault.")
        return self.keys[name]

    def version(self, name, vid):
        for v in self.versions(name):
            if v.id == vid:
                return v
        raise Failure(404, "KeyNotFound", f"A key with (name/id) {name}/{vid} was not found in this key vault.")

    def bundle(self, base, name, v):
        key = {"kid": f"{base}/keys/{name}/{v.id}", "kty": v.kty,
               "key_ops": ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]}
        if v.private:
            numbers = v.private.public_key().public_numbers()
            key["n"] = b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
            key["e"] = b64url(numbers.e.to_bytes(3, "big"))
        return {"key": key, "attributes": self.attributes(v), "tags": {}}

    def attributes(self, v):
        # Key Vault's recovery levels: purge protection takes "Purgeable" away.
        return {"enabled": v.enabled, "created": v.created, "updated": v.updated,
                "recoveryLevel": "Recoverable" if self.purge_protection else "Recoverable+Purgeable",
                "recoverableDays": self.retention_days}

    def deleted_bundle(self, base, name):
        versions, deleted, purge = self.deleted[name]
        bundle = self.bundle(base, name, versions[-1])
        bundle.update(recoveryId=f"{base}/deletedkeys/{name}", deletedDate=deleted, scheduledPurgeDate=purge)
        return bundle

    def delete(self, base, name):
        """Delete Key: every version of @name moves to the deleted keys, until purged."""
        versions = self.versions(name)
        if name in self.deleted:
            raise Failure(409, "Conflict", f"Key {name} is currently being deleted.")
        now = int(time.time())
        del self.keys[name]
        self.deleted[name] = (versions, now, now + self.retention_days * 86400)
        return self.deleted_bundle(base, name)

    def purge(self, name):
        if name not in self.deleted:
            raise Failure(404, "KeyNotFound", f"Deleted Key not found: {name}")
        if self.purge_protection:
            raise Failure(403, "Forbidden", 'Operation "purge" is not allowed because purge protection is '
                          "enabled for this vault. Key Vault service will automatically purge it after the "
                          "retention period has passed.")
        del self.deleted[name]

    def create(self, name, body):
        kty = body.get("kty")
        if kty not in ("RSA", "RSA-HSM", "oct-HSM"):
            raise Failure(400, "BadParameter", "The kty is not supported.")
        with self.lock:
            # Strictly increasing creation times, so rotations in one second still order.
            self.clock = max(self.clock + 1, int(time.time()))
            v = Version(kty, body.get("key_size"), self.clock)
            self.keys.setdefault(name, []).append(v)
        return v

    def check_fault(self):
        time.sleep(self.latency)
        with self.lock:
            self.counters["kv_requests"] += 1
            if not self.fault or self.fault[1] <= 0:
                return
            status, count, retry_after = self.fault
            self.fault = (status, count - 1, retry_after)
            self.counters["faults_sent"] += 1
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        code = "Throttled" if status == 429 else "ServiceUnavailable"
        raise Failure(status, code, "Requests are throttled." if status == 429 else "Service unavailable.",
                      headers)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        if self.server.verbose:
            super().log_message(*args)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", secrets.token_hex(8))
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

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        az = self.server.azure
        raw = self.body()
        url = urllib.parse.urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = urllib.parse.parse_qs(url.query)
        base = f"https://{self.headers.get('Host')}"
        identity = len(parts) >= 2 and parts[0] not in ("keys", "deletedkeys", "metadata", "_test")
        try:
            if parts[:1] == ["_test"]:
                return self.send(200, self.control(parts[1], json.loads(raw or b"{}")))
            if parts == ["metadata", "identity", "oauth2", "token"]:
                return self.send(200, self.imds(query))
            if identity:
                return self.send(200, self.identity(method, parts, raw, base))
            if parts[:1] not in (["keys"], ["deletedkeys"]):
                raise Failure(404, "NotFound", "no such path")
            if "api-version" not in query:
                raise Failure(400, "BadParameter", "The 'api-version' query parameter is missing.")
            az.check_token(self.headers.get("Authorization"))
            az.check_fault()
            body = json.loads(raw) if raw else {}
            if parts[0] == "deletedkeys":
                answer = self.deletedkeys(method, parts[1:], base)
                if answer is None:  # a purge answers 204 No Content
                    self.send_response(204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return self.send(200, answer)
            return self.send(200, self.keyvault(method, parts[1:], body, query, base))
        except Failure as f:
            if identity or parts[:1] == ["metadata"]:
                return self.send(f.status, {"error": f.code, "error_description": f.message,
                                            "error_codes": [int(f.message[6:f.message.index(":")])]
                                            if f.message.startswith("AADSTS") else []}, f.headers)
            return self.send(f.status, {"error": {"code": f.code, "message": f.message}}, f.headers)
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            return self.send(400, {"error": {"code": "BadParameter", "message": f"Bad request: {e}"}})

    def control(self, name, body):
        az = self.server.azure
        with az.lock:
            if name == "config":
                az.token_lifetime = body.get("token_lifetime", az.token_lifetime)
                az.role_assigned = body.get("role_assigned", az.role_assigned)
                az.latency = body.get("latency_ms", az.latency * 1000) / 1000
                az.purge_protection = body.get("purge_protection", az.purge_protection)
                az.retention_days = body.get("retention_days", az.retention_days)
            elif name == "fault":
                az.fault = (body["status"], body["count"], body.get("retry_after"))
            elif name == "keys":
                return {key: [{"version": v.id, "kty": v.kty, "enabled": v.enabled} for v in versions]
                        for key, versions in az.keys.items()}
            elif name == "deleted":
                return {key: {"scheduledPurgeDate": purge,
                              "versions": [{"version": v.id, "enabled": v.enabled} for v in versions]}
                        for key, (versions, _, purge) in az.deleted.items()}
            elif name == "purge_due":
                purged = sorted(az.deleted)
                az.deleted.clear()
                return {"purged": purged}
            return dict(az.counters)

    def imds(self, query):
        az = self.server.azure
        if self.headers.get("Metadata") != "true":
            raise Failure(400, "invalid_request", "Required metadata header not specified")
        if not az.managed_identity:
            raise Failure(400, "invalid_request", "Identity not found")
        resource = query.get("resource", [""])[0]
        answer = az.issue(resource.rstrip("/"))
        # IMDS sends numbers as strings.
        answer["expires_in"] = str(answer["expires_in"])
        answer["expires_on"] = str(int(time.time()) + az.token_lifetime)
        answer["resource"] = resource
        return answer

    def identity(self, method, parts, raw, base):
        az = self.server.azure
        tenant = parts[0]
        if method == "GET" and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return {"token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/{tenant}/v2.0", "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                    "response_types_supported": ["code", "token"]}
        if method == "GET" and parts[1:] == ["discovery", "instance"]:
            return {"tenant_discovery_endpoint": f"{base}/{az.tenant}/v2.0/.well-known/openid-configuration",
                    "api-version": "1.1", "metadata": []}
        if method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
            form = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True)
            return az.token(tenant, form, f"{base}/{tenant}/oauth2/v2.0/token")
        raise Failure(404, "invalid_request", "AADSTS900561: The endpoint only accepts POST requests.")

    def keyvault(self, method, parts, body, query, base):
        az = self.server.azure
        name = parts[0] if parts else ""
        if method == "POST" and parts[1:] == ["create"]:
            v = az.create(name, body)
            return az.bundle(base, name, v)
        if method == "POST" and parts[1:] == ["rotate"]:
            with az.lock:
                latest = az.versions(name)[-1]
            v = az.create(name, {"kty": latest.kty, "key_size": latest.size})
            return az.bundle(base, name, v)
        if method == "GET" and parts[1:] == ["versions"]:
            return self.page(base, name, query)
        if method == "GET" and len(parts) in (1, 2):
            with az.lock:
                versions = az.versions(name)
                v = versions[-1] if len(parts) == 1 else az.version(name, parts[1])
                return az.bundle(base, name, v)
        if method == "PATCH" and len(parts) == 2:
            with az.lock:
                v = az.version(name, parts[1])
                if "enabled" in body.get("attributes", {}):
                    v.enabled = bool(body["attributes"]["enabled"])
                    v.updated = int(time.time())
                return az.bundle(base, name, v)
        if method == "DELETE" and len(parts) == 1:
            with az.lock:
                return az.delete(base, name)
        if method == "POST" and len(parts) in (2, 3) and parts[-1] in ("wrapkey", "unwrapkey"):
            # Without a version the operation uses the latest one, and the answer's kid names it.
            with az.lock:
                v = az.version(name, parts[1]) if len(parts) == 3 else az.versions(name)[-1]
            if not v.enabled:
                raise Failure(403, "Forbidden", f"Operation {parts[-1][:-3]}Key is not allowed on a disabled key.")
            value = unb64url(body["value"])
            out = v.wrap(body["alg"], value) if parts[-1] == "wrapkey" else v.unwrap(body["alg"], value)
            return {"kid": f"{base}/keys/{name}/{v.id}", "value": b64url(out)}
        raise Failure(405, "BadParameter", "Method not allowed")

    def deletedkeys(self, method, parts, base):
        az = self.server.azure
        with az.lock:
            if len(parts) == 1 and method == "GET":
                if parts[0] not in az.deleted:
                    raise Failure(404, "KeyNotFound", f"Deleted Key not found: {parts[0]}")
                return az.deleted_bundle(base, parts[0])
            if len(parts) == 1 and method == "DELETE":
                az.purge(parts[0])
                return None
        raise Failure(405, "BadParameter", "Method not allowed")

    def page(self, base, name, query):
        az = self.server.azure
        size = int(query.get("maxresults", ["25"])[0])
        start = int(query.get("$skiptoken", ["0"])[0])
        with az.lock:
            versions = az.versions(name)
            chunk = versions[start:start + size]
            items = [{"kid": f"{base}/keys/{name}/{v.id}", "attributes": az.attributes(v), "tags": {}}
                     for v in chunk]
            more = start + size < len(versions)
        link = (f"{base}/keys/{name}/versions?api-version=7.4&maxresults={size}&$skiptoken={start + size}"
                if more else None)
        return {"value": items, "nextLink": link}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--tls-cert", required=True)
    ap.add_argument("--tls-key", required=True)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    with open(args.config) as f:
        config = json.load(f)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.azure = Azure(config)
    server.azure.authority = f"https://{args.host}:{server.server_address[1]}"
    server.verbose = args.verbose
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
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
