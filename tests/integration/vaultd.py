# SPDX-License-Identifier: MIT
"""Start and steer the Transit-compatible test server (tests/kmsd/vault_transit.py) from tests.

VaultServer(tmp_path, latency_ms=0, tls=False) writes a random token to a file, starts the server on a free
port (--port 0 --port-file, so no race), and keeps its keys in a state file so stop()/start() brings the same
keys back on the same port.  The control endpoints (--test-control) inject faults and replace the token.
"""
import json
import os
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "kmsd" / "vault_transit.py"


def make_cert(directory):
    """A self-signed certificate for 127.0.0.1 and localhost (tests trust it as the CA file)."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "vault.crt", directory / "vault.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class VaultServer:
    def __init__(self, directory, latency_ms=0, tls=False, gcm_failure_status=400):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = "s." + secrets.token_hex(12)
        self.token_file = self.dir / "token"
        self.token_file.write_text(self.token + "\n")
        os.chmod(self.token_file, 0o600)
        self.state_file = self.dir / "state.json"
        self.port_file = self.dir / "port"
        self.latency_ms = latency_ms
        self.gcm_failure_status = gcm_failure_status
        self.cert = self.key = None
        if tls:
            self.cert, self.key = make_cert(self.dir)
        self.port = 0
        self.proc = None
        self.start()

    @property
    def scheme(self):
        return "https" if self.cert else "http"

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self):
        if self.port_file.exists():
            self.port_file.unlink()
        cmd = ["/usr/bin/python3", str(SERVER), "--port", str(self.port), "--port-file", str(self.port_file),
               "--token-file", str(self.token_file), "--state-file", str(self.state_file),
               "--latency-ms", str(self.latency_ms), "--test-control",
               "--gcm-failure-status", str(self.gcm_failure_status)]
        if self.cert:
            cmd += ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]
        with open(self.dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stderr=log)
        deadline = time.monotonic() + 20
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("vault_transit.py did not start: " +
                                   (self.dir / "server.log").read_text())
            time.sleep(0.02)
        self.port = int(self.port_file.read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def _request(self, method, path, body=None, token=None, namespace=None):
        import ssl
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("X-Vault-Token", token or self.token)
        if namespace:
            req.add_header("X-Vault-Namespace", namespace)
        ctx = ssl.create_default_context(cafile=str(self.cert)) if self.cert else None
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def api(self, method, path, body=None, namespace=None):
        """A Transit call; returns the parsed JSON answer (raises urllib's HTTPError on >= 400)."""
        return self._request(method, "/v1/transit/" + path, body, namespace=namespace)

    def create_key(self, name, derived=True, namespace=None):
        return self.api("POST", f"keys/{name}", {"derived": derived}, namespace)

    def rotate(self, name, namespace=None):
        return self.api("POST", f"keys/{name}/rotate", {}, namespace)["data"]["latest_version"]

    def configure(self, name, namespace=None, **config):
        return self.api("POST", f"keys/{name}/config", config, namespace)

    def key_material(self, name, namespace=None):
        return self._request("GET", f"/_test/key/{name}", namespace=namespace)

    def stats(self):
        return self._request("GET", "/_test/stats")

    def fault(self, status, count=0, seconds=0, share=1.0):
        self._request("POST", "/_test/fault", {"status": status, "count": count, "seconds": seconds,
                                               "share": share})

    def set_latency(self, ms):
        """Every request from now on waits @ms milliseconds before it is answered (--latency-ms)."""
        self._request("POST", "/_test/latency", {"ms": ms})

    def set_token(self, token):
        self._request("POST", "/_test/token", {"token": token})
