# SPDX-License-Identifier: MIT
"""Start and steer the local Azure peer (tests/kmsd/azure_keyvault.py) from tests.

AzurePeer(directory) makes a TLS certificate for 127.0.0.1, three app registrations (a client secret, a
client certificate, a federated token) and a managed identity, starts the server on a free port, and puts
a TCP proxy in front of it that can refuse or hang (kms down).  Keys are made, rotated and disabled with
Microsoft's own client (azure.keyvault.keys, Debian python3-azure), signed in with azure.identity's
ClientSecretCredential against the peer's token endpoint: every such call proves the peer speaks the API
the way Azure's SDK expects it.
"""
import datetime
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from vaultd import make_cert

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kmsd"))
from aws_moto import Proxy  # noqa: E402

SERVER = Path(__file__).resolve().parents[1] / "kmsd" / "azure_keyvault.py"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def client_certificate(directory):
    """An RSA client certificate and key in one PEM file (as AZURE_CLIENT_CERTIFICATE_PATH wants)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envelopefs-test-client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    path = directory / "client.pem"
    path.write_text(cert_pem + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()).decode())
    path.chmod(0o600)
    return path, cert_pem


class AzurePeer:
    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tenant = TENANT
        self.secret_client, self.secret = "0e3a1b2c-secret", secrets.token_urlsafe(30)
        self.cert_client = "5f1c2d3e-certificate"
        self.cert_file, cert_pem = client_certificate(self.dir)
        self.fed_client = "9a8b7c6d-federated"
        self.fed_file = self.dir / "federated-token"
        self.fed_file.write_text("eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(200) + "\n")
        self.fed_file.chmod(0o600)
        config = {"tenant": self.tenant, "managed_identity": True, "clients": {
            self.secret_client: {"secret": self.secret},
            self.cert_client: {"certificate": cert_pem},
            self.fed_client: {"federated": self.fed_file.read_text().strip()}}}
        (self.dir / "config.json").write_text(json.dumps(config))
        self.ca, self.tls_key = make_cert(self.dir)
        port_file = self.dir / "port"
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(SERVER), "--config", str(self.dir / "config.json"), "--port-file",
             str(port_file), "--tls-cert", str(self.ca), "--tls-key", str(self.tls_key)])
        for _ in range(200):
            if port_file.exists():
                break
            assert self.proc.poll() is None, "azure_keyvault.py exited"
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.direct = f"https://127.0.0.1:{self.port}"
        self.proxy = Proxy(self.port)
        self.url = f"https://127.0.0.1:{self.proxy.port}"  # the vault and the authority, through the proxy
        self._keys = None

    def keys(self):
        """A KeyClient of Microsoft's SDK, signed in with the secret client (direct, not via the proxy)."""
        if self._keys is None:
            from azure.identity import ClientSecretCredential
            from azure.keyvault.keys import KeyClient
            self.credential = ClientSecretCredential(self.tenant, self.secret_client, self.secret,
                                                authority=self.direct, connection_verify=str(self.ca),
                                                instance_discovery=False)
            self._keys = KeyClient(self.direct, self.credential, connection_verify=str(self.ca),
                                   verify_challenge_resource=False)
        return self._keys

    def create_key(self, name=None, kty="RSA"):
        name = name or "k-" + secrets.token_hex(4)
        if kty == "oct-HSM":
            self.keys().create_oct_key(name, size=256, hardware_protected=True)
        else:
            self.keys().create_rsa_key(name, size=2048)
        return name

    def rotate(self, name, kty="RSA"):
        """A new version of the key (Key Vault's rotation): returns the number of versions now."""
        self.create_key(name, kty)
        return len(list(self.keys().list_properties_of_key_versions(name)))

    def disable(self, name):
        for props in self.keys().list_properties_of_key_versions(name):
            self.keys().update_key_properties(name, props.version, enabled=False)

    def control(self, name, **body):
        import ssl
        ctx = ssl.create_default_context(cafile=str(self.ca))
        req = urllib.request.Request(f"{self.direct}/_test/{name}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return json.loads(r.read())

    def settings(self, key, credential="secret"):
        """The --kms-setting pairs of a volume on @key, signed in with one of the credentials."""
        s = {"vault_url": self.url, "key": key, "ca_file": str(self.ca)}
        if credential == "managed":
            s.update(managed_identity="true", identity_endpoint=f"{self.url}/metadata/identity/oauth2/token")
        else:
            s.update(tenant_id=self.tenant, authority_host=self.url,
                     client_id={"secret": self.secret_client, "certificate": self.cert_client,
                                "federated": self.fed_client}[credential])
            if credential == "certificate":
                s["client_certificate_file"] = str(self.cert_file)
            elif credential == "federated":
                s["federated_token_file"] = str(self.fed_file)
        return s

    def env(self, credential="secret"):
        """The environment for a volume: the client secret only for the secret credential."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
        if credential == "secret":
            env["AZURE_CLIENT_SECRET"] = self.secret
        return env

    def stop(self):
        self.proxy.set_mode("down")
        self.proc.terminate()
        self.proc.wait(timeout=10)
