# SPDX-License-Identifier: MIT
"""The Transit test server is wire-compatible with Vault: Debian's hvac client drives it, and its ciphertext is
real AES-256-GCM (checked here independently with python cryptography and the key material)."""
import base64
import json
import os
import urllib.error
import urllib.request

import pytest

hvac = pytest.importorskip("hvac")
import requests  # noqa: E402  (hvac's transport)
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402
from cryptography.exceptions import InvalidTag  # noqa: E402

from vaultd import VaultServer  # noqa: E402


def b64(raw):
    return base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = VaultServer(tmp_path_factory.mktemp("vault"))
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return hvac.Client(url=server.url, token=server.token)


def open_blob(material, ciphertext, context=None):
    """Decrypt a vault:vN: string with python cryptography alone."""
    prefix, version, body = ciphertext.split(":")
    assert prefix == "vault" and version.startswith("v")
    key = base64.b64decode(material["versions"][version[1:]])
    if context is not None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context).derive(key)
    raw = base64.b64decode(body)
    return AESGCM(key).decrypt(raw[:12], raw[12:], None)


def test_key_lifecycle(client):
    t = client.secrets.transit
    t.create_key(name="life")
    info = t.read_key(name="life")
    assert info["data"]["latest_version"] == 1
    assert info["data"]["min_decryption_version"] == 1
    assert info["data"]["type"] == "aes256-gcm96"
    assert set(info["data"]["keys"]) == {"1"}
    assert "request_id" in info and "lease_id" in info
    t.rotate_key(name="life")
    t.rotate_key(name="life")
    info = t.read_key(name="life")["data"]
    assert info["latest_version"] == 3 and set(info["keys"]) == {"1", "2", "3"}
    t.update_key_configuration(name="life", min_decryption_version=2, min_encryption_version=3)
    info = t.read_key(name="life")["data"]
    assert info["min_decryption_version"] == 2 and info["min_encryption_version"] == 3
    assert set(info["keys"]) == {"2", "3"}
    assert "life" in t.list_keys()["data"]["keys"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        t.read_key(name="no-such-key")


def test_encrypt_decrypt_rewrap_and_versions(client, server):
    t = client.secrets.transit
    t.create_key(name="plain")
    enc = t.encrypt_data(name="plain", plaintext=b64(b"hello transit"))["data"]
    assert enc["ciphertext"].startswith("vault:v1:") and enc["key_version"] == 1
    assert base64.b64decode(t.decrypt_data(name="plain", ciphertext=enc["ciphertext"])["data"]["plaintext"]) \
        == b"hello transit"
    # Independent check: the blob is AES-256-GCM under the version-1 key, nonce first, tag last.
    material = server.key_material("plain")
    assert open_blob(material, enc["ciphertext"]) == b"hello transit"
    assert len(base64.b64decode(enc["ciphertext"].split(":")[2])) == 12 + len(b"hello transit") + 16

    t.rotate_key(name="plain")
    rewrapped = t.rewrap_data(name="plain", ciphertext=enc["ciphertext"])["data"]["ciphertext"]
    assert rewrapped.startswith("vault:v2:")
    assert open_blob(server.key_material("plain"), rewrapped) == b"hello transit"
    pinned = t.rewrap_data(name="plain", ciphertext=rewrapped, key_version=1)["data"]["ciphertext"]
    assert pinned.startswith("vault:v1:")

    t.update_key_configuration(name="plain", min_decryption_version=2)
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        t.decrypt_data(name="plain", ciphertext=enc["ciphertext"])
    assert "disallowed by policy (too old)" in str(e.value)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        t.rewrap_data(name="plain", ciphertext=enc["ciphertext"])
    # A tampered blob fails authentication.
    raw = bytearray(base64.b64decode(rewrapped.split(":")[2]))
    raw[-1] ^= 1
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        t.decrypt_data(name="plain", ciphertext="vault:v2:" + b64(bytes(raw)))
    assert "message authentication failed" in str(e.value)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        t.decrypt_data(name="plain", ciphertext="not-a-vault-blob")


def test_datakey_plaintext_and_wrapped(client, server):
    t = client.secrets.transit
    t.create_key(name="dk", derived=True)
    ctx = b64(b"V" * 16 + b"F" * 16)
    dk = t.generate_data_key(name="dk", key_type="plaintext", bits=256, context=ctx)["data"]
    plain = base64.b64decode(dk["plaintext"])
    assert len(plain) == 32 and dk["ciphertext"].startswith("vault:v1:")
    assert open_blob(server.key_material("dk"), dk["ciphertext"], base64.b64decode(ctx)) == plain
    back = t.decrypt_data(name="dk", ciphertext=dk["ciphertext"], context=ctx)["data"]["plaintext"]
    assert base64.b64decode(back) == plain
    wrapped = t.generate_data_key(name="dk", key_type="wrapped", bits=256, context=ctx)["data"]
    assert "plaintext" not in wrapped and wrapped["ciphertext"].startswith("vault:v1:")


def test_derived_key_needs_and_binds_context(client, server):
    t = client.secrets.transit
    t.create_key(name="derived", derived=True)
    assert t.read_key(name="derived")["data"]["derived"] is True
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        t.encrypt_data(name="derived", plaintext=b64(b"x"))
    assert "missing 'context'" in str(e.value)
    ctx_a, ctx_b = b64(b"volume-a:file-1"), b64(b"volume-b:file-1")
    ct = t.encrypt_data(name="derived", plaintext=b64(b"secret"), context=ctx_a)["data"]["ciphertext"]
    material = server.key_material("derived")
    assert open_blob(material, ct, b"volume-a:file-1") == b"secret"
    with pytest.raises(InvalidTag):
        open_blob(material, ct)  # the underived key does not open it: derivation is real
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        t.decrypt_data(name="derived", ciphertext=ct, context=ctx_b)
    assert "message authentication failed" in str(e.value)
    t.rotate_key(name="derived")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        t.rewrap_data(name="derived", ciphertext=ct, context=ctx_b)
    ct2 = t.rewrap_data(name="derived", ciphertext=ct, context=ctx_a)["data"]["ciphertext"]
    assert ct2.startswith("vault:v2:")
    assert open_blob(server.key_material("derived"), ct2, b"volume-a:file-1") == b"secret"


def test_batches_with_per_item_errors(client):
    t = client.secrets.transit
    t.create_key(name="batch", derived=True)
    items = [{"plaintext": b64(bytes([i]) * 8), "context": b64(b"ctx%d" % i)} for i in range(5)]
    enc = t.encrypt_data(name="batch", plaintext=None, batch_input=items)["data"]["batch_results"]
    assert len(enc) == 5 and all(r["ciphertext"].startswith("vault:v1:") for r in enc)
    dec_in = [{"ciphertext": r["ciphertext"], "context": b64(b"ctx%d" % i)} for i, r in enumerate(enc)]
    dec = t.decrypt_data(name="batch", ciphertext=None, batch_input=dec_in)["data"]["batch_results"]
    assert [base64.b64decode(r["plaintext"]) for r in dec] == [bytes([i]) * 8 for i in range(5)]
    t.rotate_key(name="batch")
    rw = t.rewrap_data(name="batch", ciphertext=None, batch_input=dec_in)["data"]["batch_results"]
    assert all(r["ciphertext"].startswith("vault:v2:") for r in rw)
    # One bad item: Vault answers 400 with every result; hvac raises InvalidRequest, so look at the raw body.
    bad = dec_in[:2] + [{"ciphertext": enc[2]["ciphertext"], "context": b64(b"wrong")}]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        t.decrypt_data(name="batch", ciphertext=None, batch_input=bad)


def test_partial_batch_failure_body(server):
    server.create_key("partial")
    ctx = b64(b"c")
    good = server.api("POST", "encrypt/partial", {"plaintext": b64(b"a"), "context": ctx})["data"]["ciphertext"]
    body = {"batch_input": [{"ciphertext": good, "context": ctx},
                            {"ciphertext": good, "context": b64(b"other")}]}
    with pytest.raises(urllib.error.HTTPError) as e:
        server.api("POST", "rewrap/partial", body)
    assert e.value.code == 400
    results = json.loads(e.value.read())["data"]["batch_results"]
    assert results[0]["ciphertext"].startswith("vault:v1:")
    assert "message authentication failed" in results[1]["error"]
    body["partial_failure_response_code"] = 207  # a 2xx: urlopen returns instead of raising
    results = server.api("POST", "rewrap/partial", body)["data"]["batch_results"]
    assert "error" in results[1] and "error" not in results[0]


def test_batch_with_a_failed_tag_answers_500_with_every_result(tmp_path):
    """As Vault's path_decrypt.go: an item whose GCM tag fails is an internal error, the batch is
    answered 500 (400 when some item also failed on user input) and still lists every result."""
    srv = VaultServer(tmp_path / "vault", gcm_failure_status=500)
    try:
        t = hvac.Client(url=srv.url, token=srv.token).secrets.transit
        t.create_key(name="gcm", derived=True)
        items = [{"plaintext": b64(bytes([i]) * 32), "context": b64(b"f%d" % i)} for i in range(3)]
        enc = t.encrypt_data(name="gcm", plaintext=None, batch_input=items)["data"]["batch_results"]
        dec_in = [{"ciphertext": r["ciphertext"], "context": b64(b"f%d" % i)} for i, r in enumerate(enc)]
        dec_in[1]["context"] = b64(b"another file")
        with pytest.raises(hvac.exceptions.InternalServerError):
            t.decrypt_data(name="gcm", ciphertext=None, batch_input=dec_in)
        with pytest.raises(urllib.error.HTTPError) as e:
            srv.api("POST", "decrypt/gcm", {"batch_input": dec_in})
        assert e.value.code == 500
        results = json.loads(e.value.read())["data"]["batch_results"]
        assert base64.b64decode(results[0]["plaintext"]) == bytes([0]) * 32
        assert results[1] == {"error": "cipher: message authentication failed"}
        assert base64.b64decode(results[2]["plaintext"]) == bytes([2]) * 32
        dec_in.append({"ciphertext": "vault:v1:", "context": b64(b"f")})
        with pytest.raises(hvac.exceptions.InvalidRequest):  # a user error too: 400
            t.decrypt_data(name="gcm", ciphertext=None, batch_input=dec_in)
    finally:
        srv.stop()


def test_auth_namespace_and_errors(server):
    bad = hvac.Client(url=server.url, token="s.wrong")
    with pytest.raises(hvac.exceptions.Forbidden) as e:
        bad.secrets.transit.read_key(name="life")
    assert "permission denied" in str(e.value)
    ns = hvac.Client(url=server.url, token=server.token, namespace="team-a")
    ns.secrets.transit.create_key(name="nskey")
    assert ns.secrets.transit.read_key(name="nskey")["data"]["latest_version"] == 1
    plain = hvac.Client(url=server.url, token=server.token)
    with pytest.raises(hvac.exceptions.InvalidPath):
        plain.secrets.transit.read_key(name="nskey")  # keys are per namespace
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        plain.secrets.transit.decrypt_data(name="nokey", ciphertext="vault:v1:AAAA")
    assert "encryption key not found" in str(e.value)
    with pytest.raises(urllib.error.HTTPError) as e:
        server._request("GET", "/v1/transit/decrypt/x")
    assert e.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as e:
        server._request("GET", "/v1/transit/nothing/here")
    assert e.value.code == 404


def test_bearer_token_and_faults(server):
    req = urllib.request.Request(server.url + "/v1/transit/keys/life", method="GET")
    req.add_header("Authorization", "Bearer " + server.token)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["data"]["name"] == "life"
    c = hvac.Client(url=server.url, token=server.token)
    server.fault(503, count=2)
    for _ in range(2):
        with pytest.raises(hvac.exceptions.VaultDown):
            c.secrets.transit.read_key(name="life")
    c.secrets.transit.read_key(name="life")
    server.fault(429, count=1)
    with pytest.raises(hvac.exceptions.RateLimitExceeded):
        c.secrets.transit.read_key(name="life")


def test_tls_and_restart_keep_keys(tmp_path):
    srv = VaultServer(tmp_path / "tls", tls=True)
    try:
        c = hvac.Client(url=srv.url, token=srv.token, verify=str(srv.cert))
        c.secrets.transit.create_key(name="persist", derived=True)
        ctx = b64(os.urandom(32))
        ct = c.secrets.transit.encrypt_data(name="persist", plaintext=b64(b"kept"),
                                            context=ctx)["data"]["ciphertext"]
        port = srv.port
        srv.stop()
        srv.start()
        assert srv.port == port
        out = c.secrets.transit.decrypt_data(name="persist", ciphertext=ct, context=ctx)["data"]["plaintext"]
        assert base64.b64decode(out) == b"kept"
        with pytest.raises(requests.exceptions.SSLError):
            hvac.Client(url=srv.url, token=srv.token).secrets.transit.read_key(name="persist")
    finally:
        srv.stop()
