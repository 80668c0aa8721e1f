"""PyKMIP's KMIP server (Debian python3-pykmip, `pykmip-server`) with a private PKI, for the tests.

KmipPeer makes a CA, a server certificate (SAN 127.0.0.1 and localhost) and a client certificate (CN
envelopefs, extended key usage clientAuth, which PyKMIP demands) with the `openssl` command, starts
`pykmip-server` on a free port with a private SQLite database, and waits until it completes a TLS
handshake. `client()` is PyKMIP's own client (ProxyKmipClient) under the same client certificate, so
the keys it creates are owned by the identity envelopefs presents.

Operation policies: besides PyKMIP's "default" (the owner may do anything), the server loads
KEEP_POLICY, under which the owner may use, revoke and read a symmetric key but nobody may Destroy it
(a key the server will not destroy: create_key(name, policy=KEEP_POLICY)).

Run directly (tests/unit/kms/test_kmip.c does), it prints the port and the PKI directory, then
obeys one command per line on stdin, answering one line each, until stdin closes:
    create NAME [BITS]   an active AES key named NAME  -> its unique identifier
    revoke UID           revoke (deactivate) the key    -> ok
    stop | start         kill the server / start it again on the same port and data -> ok
    python3 tests/kmsd/kmip_server.py DIR
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

CLIENT_CN = "envelopefs"
KEEP_POLICY = "envelopefs_keep"
_OWNER_OPS = ("LOCATE", "CHECK", "GET", "GET_ATTRIBUTES", "GET_ATTRIBUTE_LIST", "ADD_ATTRIBUTE",
              "MODIFY_ATTRIBUTE", "DELETE_ATTRIBUTE", "SET_ATTRIBUTE", "ACTIVATE", "REVOKE")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d, client_cn=CLIENT_CN):
    """CA, server and client certificates (EC P-256) in @d; returns the paths."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=envelopefs test KMIP CA", cwd=d)
    for name, cn, ext in (
            ("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                    "extendedKeyUsage=serverAuth\n"),
            ("client", client_cn, "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                 "-out", f"{name}.pem", cwd=d)
        os.chmod(d / f"{name}.key", 0o600)
    return {"ca": d / "ca.pem", "server_cert": d / "server.pem", "server_key": d / "server.key",
            "client_cert": d / "client.pem", "client_key": d / "client.key"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KmipPeer:
    """A running pykmip-server; stop() ends it, start() brings it back on the same port and data."""

    def __init__(self, root):
        self.root = Path(root)
        self.pki = make_pki(self.root / "pki")
        self.port = free_port()
        (self.root / "policies").mkdir(exist_ok=True)
        rules = dict({op: "ALLOW_OWNER" for op in _OWNER_OPS}, DESTROY="DISALLOW_ALL")
        (self.root / "policies" / "keep.json").write_text(
            json.dumps({KEEP_POLICY: {"preset": {"SYMMETRIC_KEY": rules}}}))
        self.db = self.root / "pykmip.db"
        self.log = self.root / "server.log"
        self.conf = self.root / "server.conf"
        self.conf.write_text(
            "[server]\n"
            "hostname=127.0.0.1\n"
            f"port={self.port}\n"
            f"certificate_path={self.pki['server_cert']}\n"
            f"key_path={self.pki['server_key']}\n"
            f"ca_path={self.pki['ca']}\n"
            "auth_suite=TLS1.2\n"
            f"policy_path={self.root / 'policies'}\n"
            "enable_tls_client_auth=True\n"
            "logging_level=INFO\n"
            f"database_path={self.db}\n")
        self.proc = None
        self.start()

    def start(self):
        # Its own process group: the server forks helpers (a policy monitor), which stop() ends too.
        self.proc = subprocess.Popen(["pykmip-server", "-f", str(self.conf), "-l", str(self.log)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(self.pki["ca"]))
        ctx.load_cert_chain(str(self.pki["client_cert"]), str(self.pki["client_key"]))
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pykmip-server exited {self.proc.returncode}: "
                                   + self.log.read_text(errors="replace")[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    with ctx.wrap_socket(s, server_hostname="127.0.0.1"):
                        return
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("pykmip-server did not come up within 30 s: "
                                       + self.log.read_text(errors="replace")[-2000:])
                time.sleep(0.1)

    def stop(self):
        """Kill the server and the processes it forked (SIGTERM makes it wait ~10 s for its
        threads; SQLite has every commit)."""
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None

    def settings(self, key_name):
        """The [kms] settings of a volume on this server."""
        return {"host": "127.0.0.1", "port": str(self.port), "ca_file": str(self.pki["ca"]),
                "cert_file": str(self.pki["client_cert"]),
                "key_file": str(self.pki["client_key"]), "key_name": key_name}

    def client(self):
        """PyKMIP's ProxyKmipClient under the client certificate, KMIP 1.4 (use it in a `with`)."""
        from kmip.core import enums
        from kmip.pie.client import ProxyKmipClient
        c = ProxyKmipClient(hostname="127.0.0.1", port=self.port,
                            cert=str(self.pki["client_cert"]), key=str(self.pki["client_key"]),
                            ca=str(self.pki["ca"]), ssl_version="PROTOCOL_TLSv1_2",
                            config_file="/dev/null", kmip_version=enums.KMIPVersion.KMIP_1_4)
        return c

    def create_key(self, name, length=256, policy=None):
        """An active AES key named @name, usable for Encrypt and Decrypt, under the operation
        policy @policy (PyKMIP's default if None); its unique identifier."""
        from kmip.core import enums
        from kmip.pie.exceptions import KmipOperationFailure
        with self.client() as c:
            uid = c.create(enums.CryptographicAlgorithm.AES, length, name=name,
                           operation_policy_name=policy,
                           cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                     enums.CryptographicUsageMask.DECRYPT])
            # The server loads policy files a second after it starts: until then a key under
            # one of them is nobody's to activate.
            deadline = time.monotonic() + 15
            while True:
                try:
                    c.activate(uid)
                    return uid
                except KmipOperationFailure:
                    if policy is None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def exists(self, uid):
        """Whether the server still holds the object @uid (PyKMIP's Destroy removes it)."""
        from kmip.pie.exceptions import KmipOperationFailure
        with self.client() as c:
            try:
                c.get_attributes(uid, ["State"])
                return True
            except KmipOperationFailure:
                return False

    def state(self, uid):
        """The object's State attribute, as an enums.State."""
        with self.client() as c:
            _, attrs = c.get_attributes(uid, ["State"])
            return attrs[0].attribute_value.value

    def register_key(self, name, value):
        """Register the AES-256 key @value (bytes) named @name, activate it; its identifier."""
        from kmip.core import enums
        from kmip.pie import objects
        key = objects.SymmetricKey(enums.CryptographicAlgorithm.AES, len(value) * 8, value,
                                   masks=[enums.CryptographicUsageMask.ENCRYPT,
                                          enums.CryptographicUsageMask.DECRYPT], name=name)
        with self.client() as c:
            uid = c.register(key)
            c.activate(uid)
            return uid

    def destroy(self, uid):
        from kmip.core import enums
        with self.client() as c:
            c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
            c.destroy(uid)

    def decrypt_gcm(self, uid, ciphertext, iv, aad, tag):
        """The server's own Decrypt with AES-GCM, built with PyKMIP's message classes (its
        ProxyKmipClient.decrypt() has no AAD or tag arguments).  Returns (ok, data or message)."""
        from kmip.core import attributes, enums
        from kmip.core.messages import messages, payloads
        from kmip.core.messages.contents import Operation
        params = attributes.CryptographicParameters(
            block_cipher_mode=enums.BlockCipherMode.GCM,
            cryptographic_algorithm=enums.CryptographicAlgorithm.AES, tag_length=16)
        payload = payloads.DecryptRequestPayload(
            unique_identifier=uid, cryptographic_parameters=params, data=ciphertext,
            iv_counter_nonce=iv, auth_additional_data=aad, auth_tag=tag)
        item = messages.RequestBatchItem(operation=Operation(enums.Operation.DECRYPT),
                                         request_payload=payload)
        with self.client() as c:
            response = c.proxy._send_and_receive_message(
                c.proxy._build_request_message(None, [item]))
        item = response.batch_items[0]
        if item.result_status.value == enums.ResultStatus.SUCCESS:
            return True, item.response_payload.data
        return False, item.result_message.value if item.result_message else ""


def _serve(root):
    peer = KmipPeer(root)
    print(peer.port, peer.root / "pki", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "create":
            print(peer.create_key(cmd[1], int(cmd[2]) if len(cmd) > 2 else 256), flush=True)
        elif cmd[0] == "revoke":
            from kmip.core import enums
            with peer.client() as c:
                c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, cmd[1])
            print("ok", flush=True)
        elif cmd[0] == "stop":
            peer.stop()
            print("ok", flush=True)
        elif cmd[0] == "start":
            peer.start()
            print("ok", flush=True)
    peer.stop()


if __name__ == "__main__":
    _serve(sys.argv[1])
