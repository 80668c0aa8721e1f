# SPDX-License-Identifier: MIT
"""Start and steer the local Google Cloud peer (tests/kmsd/gcp_kms.py) from tests.

GcpPeer(directory) makes a service account (an RSA key, its key file as `gcloud iam service-accounts keys
create` writes it, with token_uri pointing at the peer), starts the server on a free port, and puts a TCP
proxy in front of it that can refuse or hang (kms down).  Administration (key rings, keys, versions, the
primary) goes through the REST API with tokens from Google's own auth library (python3-google-auth,
service_account.Credentials): each token it gets proves the peer's token endpoint.

Debian packages no Cloud KMS client (python3-googleapi needs the discovery document from googleapis.com;
golang-google-cloud-dev's kms/apiv1 speaks gRPC only), so the Cloud KMS calls are proven against the API
reference's documented requests and answers (test_kms_gcp.py, test_peer_*) and by Google's Node client
from npm, @google-cloud/kms in REST mode (test_kms_cloud_clients.py).
"""
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kmsd"))
from aws_moto import Proxy  # noqa: E402

SERVER = Path(__file__).resolve().parents[1] / "kmsd" / "gcp_kms.py"
RING = "projects/envelopefs-test/locations/europe-west1/keyRings/volumes"


def service_account(directory, token_uri):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = secrets.token_hex(20)
    email = "envelopefs@envelopefs-test.iam.gserviceaccount.com"
    info = {"type": "service_account", "project_id": "envelopefs-test", "private_key_id": key_id,
            "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
            "client_email": email, "client_id": "1" + secrets.token_hex(10),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs"}
    public = directory / "sa-public.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return info, public, email, key_id


class GcpPeer:
    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proxy = None
        port_file = self.dir / "port"
        # The token_uri must name the proxy's port, which is known only once the server runs: the key
        # file is written after the start, from the same key.
        info, public, email, key_id = service_account(self.dir, "")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(SERVER), "--port-file", str(port_file), "--service-account-public",
             str(public), "--service-account-email", email, "--key-id", key_id])
        for _ in range(200):
            if port_file.exists():
                break
            assert self.proc.poll() is None, "gcp_kms.py exited"
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.direct = f"http://127.0.0.1:{self.port}"
        self.proxy = Proxy(self.port)
        self.url = f"http://127.0.0.1:{self.proxy.port}"
        self.sa_info = dict(info, token_uri=f"{self.url}/token")
        self.sa_file = self.dir / "service-account.json"
        self.sa_file.write_text(json.dumps(self.sa_info, indent=2))
        self.sa_file.chmod(0o600)
        self._credentials = None
        self.admin("POST", "projects/envelopefs-test/locations/europe-west1/keyRings?keyRingId=volumes", {})

    def credentials(self):
        """Google's own service-account credentials, refreshed against the peer's token endpoint."""
        if self._credentials is None:
            from google.oauth2 import service_account as sa
            self._credentials = sa.Credentials.from_service_account_info(
                self.sa_info, scopes=["https://www.googleapis.com/auth/cloudkms"])
        if not self._credentials.valid:
            import google.auth.transport.requests
            self._credentials.refresh(google.auth.transport.requests.Request())
        return self._credentials

    def admin(self, method, path, body=None):
        req = urllib.request.Request(f"{self.direct}/v1/{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.credentials().token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def create_key(self, name=None):
        name = name or "k-" + secrets.token_hex(4)
        return self.admin("POST", f"{RING}/cryptoKeys?cryptoKeyId={name}", {"purpose": "ENCRYPT_DECRYPT"})["name"]

    def rotate(self, key):
        """A new version made primary (Cloud KMS's rotation): returns its number."""
        version = self.admin("POST", f"{key}/cryptoKeyVersions", {})["name"].rsplit("/", 1)[1]
        self.admin("POST", f"{key}:updatePrimaryVersion", {"cryptoKeyVersionId": version})
        return int(version)

    def set_state(self, key, version, state):
        self.admin("PATCH", f"{key}/cryptoKeyVersions/{version}?updateMask=state", {"state": state})

    def control(self, name, **body):
        req = urllib.request.Request(f"{self.direct}/_test/{name}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def settings(self, key, credential="service_account"):
        s = {"key": key, "endpoint": self.url}
        if credential == "metadata":
            s["metadata_url"] = f"{self.url}/computeMetadata/v1/instance/service-accounts/default/token"
        return s

    def env(self, credential="service_account"):
        import os
        env = {k: v for k, v in os.environ.items()
               if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST")}
        if credential == "service_account":
            env["GOOGLE_APPLICATION_CREDENTIALS"] = str(self.sa_file)
        return env

    def stop(self):
        if self.proxy:
            self.proxy.set_mode("down")
        self.proc.terminate()
        self.proc.wait(timeout=10)
