# SPDX-License-Identifier: MIT
"""The local Azure and Google Cloud peers proven by the vendors' official Node clients (issue 21, part 4).

tests/node/azure_client.mjs drives tests/kmsd/azure_keyvault.py through @azure/identity and
@azure/keyvault-keys; tests/node/gcp_client.mjs drives tests/kmsd/gcp_kms.py through @google-cloud/kms in
its REST mode (fallback: true) and google-auth-library.  The versions are pinned in tests/node/package.json
and package-lock.json; tools/setup.sh installs them (npm ci into tests/node/node_modules).  Each script
prints what the SDK got; the tests compare it with what the peer holds (its "keys" and "counters"
controls) and check the errors the SDKs surface: not found, forbidden, bad ciphertext, throttled.
"""
import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from azured import AzurePeer
from gcpd import RING, GcpPeer

NODE = Path(__file__).resolve().parents[1] / "node"


def node(script, request, env):
    """Run tests/node/@script with @request on stdin; its JSON answer.  Without Node or the clients the test
    fails (it does not skip): `tools/setup.sh test` installs both."""
    modules = NODE / "node_modules"
    assert shutil.which("node"), "no node: `tools/setup.sh test` installs Debian's nodejs"
    assert modules.is_dir(), f"{modules} is missing: `tools/setup.sh test` installs the Node clients (npm ci)"
    r = subprocess.run(["node", str(NODE / script)], input=json.dumps(request), capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def b64(data):
    return base64.b64encode(data).decode()


def ok(result):
    assert "ok" in result, result
    return result["ok"]


def error(result):
    assert "error" in result, result
    return result["error"]


# ---- Azure Key Vault: @azure/keyvault-keys + @azure/identity ----

@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    peer = AzurePeer(tmp_path_factory.mktemp("azure-node"))
    yield peer
    peer.stop()


def azure_sdk(peer, steps, credential="secret", secret=None):
    """Run @steps through azure_client.mjs signed in with @credential; the results, one per step."""
    client_id = {"secret": peer.secret_client, "certificate": peer.cert_client, "federated": peer.fed_client,
                 "managed": None}[credential]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env["NODE_EXTRA_CA_CERTS"] = str(peer.ca)  # the peer's self-signed certificate
    if credential == "secret":
        env["AZURE_CLIENT_SECRET"] = secret or peer.secret
    if credential == "managed":
        env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = peer.direct  # where @azure/identity finds IMDS
    request = {"vault_url": peer.direct, "tenant_id": peer.tenant, "client_id": client_id,
               "authority_host": peer.direct, "credential": credential, "certificate_file": str(peer.cert_file),
               "federated_token_file": str(peer.fed_file), "steps": steps}
    results = node("azure_client.mjs", request, env)["results"]
    assert len(results) == len(steps)
    return results


def test_azure_sdk_keys_versions_and_rotation(azure):
    """createKey, rotateKey and createKey again on one name make three versions, listed in order and
    fetched as the latest; an oct-HSM key's versions span pages (nextLink followed by the SDK)."""
    r = azure_sdk(azure, [{"op": "create", "name": "node-rsa", "kty": "RSA"}, {"op": "rotate", "name": "node-rsa"},
                          {"op": "create", "name": "node-rsa", "kty": "RSA"}, {"op": "versions", "name": "node-rsa"},
                          {"op": "get", "name": "node-rsa"}, {"op": "create", "name": "node-hsm", "kty": "oct-HSM"}]
                  + [{"op": "rotate", "name": "node-hsm"}] * 26 + [{"op": "versions", "name": "node-hsm"}])
    made = [ok(x) for x in r[:3]]
    held = azure.control("keys")
    assert [v["version"] for v in held["node-rsa"]] == [m["version"] for m in made]
    assert {v["kty"] for v in held["node-rsa"]} == {"RSA"} and {m["kty"] for m in made} == {"RSA"}
    for m in made:
        assert m["kid"] == f"{azure.direct}/keys/node-rsa/{m['version']}" and m["n"] and m["e"] == b64(b"\x01\x00\x01")
    assert [v["version"] for v in ok(r[3])] == [m["version"] for m in made]
    assert ok(r[4])["version"] == made[-1]["version"]
    assert ok(r[5])["kty"] == "oct-HSM" and ok(r[5])["n"] is None
    listed = ok(r[-1])
    assert len(listed) == 27 == len(held["node-hsm"])  # more than the peer's page of 25
    assert [v["version"] for v in listed] == [v["version"] for v in held["node-hsm"]]


def versions_held(peer, name):
    return [v["version"] for v in peer.control("keys")[name]]


def test_azure_sdk_wraps_and_unwraps(azure):
    """RSA-OAEP-256 through CryptographyClient on the latest version (no version in the key id) and on a
    named one; a blob sealed by node's crypto with the public key the SDK fetched; A256KW on oct-HSM."""
    secret = b64(os.urandom(32))
    azure.create_key("node-wrap")
    azure.rotate("node-wrap")
    azure.create_key("node-kw", kty="oct-HSM")
    first, second = versions_held(azure, "node-wrap")
    v1 = f"node-wrap/{first}"
    r = azure_sdk(azure, [
        {"op": "wrap", "key": "node-wrap", "alg": "RSA-OAEP-256", "value": secret},
        {"op": "wrap", "key": v1, "alg": "RSA-OAEP-256", "value": secret},
        {"op": "seal", "name": "node-wrap", "version": first, "value": secret},
        {"op": "wrap", "key": "node-kw", "alg": "A256KW", "value": secret},
        {"op": "unwrap", "key": "node-wrap", "alg": "RSA-OAEP-256", "take": {"value": 0}},
        {"op": "unwrap", "key": v1, "alg": "RSA-OAEP-256", "take": {"value": 1}},
        {"op": "unwrap", "key": v1, "alg": "RSA-OAEP-256", "take": {"value": 2}},
        {"op": "unwrap", "key": "node-kw", "alg": "A256KW", "take": {"value": 3}},
        # The second version does not open what the first wrapped: Key Vault's bad ciphertext.
        {"op": "unwrap", "key": "node-wrap", "alg": "RSA-OAEP-256", "take": {"value": 1}}])
    latest, named, sealed, kw = (ok(x) for x in r[:4])
    assert latest["kid"] == f"{azure.direct}/keys/node-wrap/{second}" and named["kid"].endswith(v1)
    assert latest["alg"] == "RSA-OAEP-256" and len(base64.b64decode(latest["value"])) == 256
    assert len(base64.b64decode(kw["value"])) == 40  # RFC 3394: the key and one 8-byte block
    for got in r[4:8]:
        assert ok(got)["value"] == secret
    assert ok(r[4])["kid"] == latest["kid"] and ok(r[5])["kid"] == named["kid"]
    assert (error(r[8])["status"], error(r[8])["code"]) == (400, "BadParameter")


def test_azure_sdk_errors(azure):
    """Not found, bad ciphertext, a disabled version, the missing role (Forbidden), a wrong secret."""
    azure.create_key("node-err")
    r = azure_sdk(azure, [
        {"op": "get", "name": "node-missing"},
        {"op": "unwrap", "key": "node-missing", "alg": "RSA-OAEP-256", "value": b64(bytes(256))},
        {"op": "unwrap", "key": "node-err", "alg": "RSA-OAEP-256", "value": b64(os.urandom(256))},
        {"op": "wrap", "key": "node-err", "alg": "A256KW", "value": b64(bytes(32))},
        {"op": "enable", "name": "node-err", "version": versions_held(azure, "node-err")[0], "enabled": False},
        {"op": "unwrap", "key": "node-err", "alg": "RSA-OAEP-256", "value": b64(bytes(256))}])
    for missing in r[:2]:
        assert (error(missing)["status"], error(missing)["code"]) == (404, "KeyNotFound")
    assert (error(r[2])["status"], error(r[2])["code"]) == (400, "BadParameter")
    assert "not supported" in error(r[3])["message"]
    assert ok(r[4])["enabled"] is False and azure.control("keys")["node-err"][0]["enabled"] is False
    assert (error(r[5])["status"], error(r[5])["code"]) == (403, "Forbidden") and "disabled" in error(r[5])["message"]
    azure.control("config", role_assigned=False)
    try:
        denied = error(azure_sdk(azure, [{"op": "get", "name": "node-err"}])[0])
    finally:
        azure.control("config", role_assigned=True)
    assert (denied["status"], denied["code"]) == (403, "Forbidden")
    refused = error(azure_sdk(azure, [{"op": "get", "name": "node-err"}], secret="not-the-secret")[0])
    assert refused["name"] == "AuthenticationRequiredError" and "AADSTS7000215" in refused["message"]


def test_azure_sdk_retries_429_after_retry_after(azure):
    """One 429 with Retry-After: 1 is waited out and retried by the SDK's pipeline; a lasting 429 comes
    back as Key Vault's Throttled once the SDK's retries (3) are spent."""
    azure.create_key("node-429")
    wrap = {"op": "wrap", "key": "node-429", "alg": "RSA-OAEP-256", "value": b64(os.urandom(32))}
    before = azure.control("fault", status=429, count=1, retry_after=1)["faults_sent"]
    got = azure_sdk(azure, [wrap])[0]
    after = azure.control("counters")["faults_sent"]
    assert ok(got)["kid"].startswith(f"{azure.direct}/keys/node-429/") and after == before + 1
    assert got["ms"] >= 1000, got  # it waited as Retry-After said
    azure.control("fault", status=429, count=100, retry_after=0)
    try:
        got = azure_sdk(azure, [wrap])[0]
        spent = azure.control("counters")["faults_sent"] - after
    finally:
        azure.control("fault", status=429, count=0)
    assert (error(got)["status"], error(got)["code"]) == (429, "Throttled") and spent == 4


@pytest.mark.parametrize("credential", ["certificate", "federated", "managed"])
def test_azure_sdk_signs_in(azure, credential):
    """ClientCertificateCredential (MSAL's PS256 assertion with x5t#S256), ClientAssertionCredential with
    the federated token, ManagedIdentityCredential on the IMDS endpoint: each gets a token Key Vault takes."""
    name = f"node-{credential}"
    before = azure.control("counters")["token_requests"]
    r = azure_sdk(azure, [{"op": "create", "name": name, "kty": "oct-HSM"},
                          {"op": "wrap", "key": name, "alg": "A256KW", "value": b64(bytes(range(32)))}], credential)
    assert ok(r[0])["kty"] == "oct-HSM" and len(base64.b64decode(ok(r[1])["value"])) == 40
    assert azure.control("counters")["token_requests"] == before + 1  # one token, cached for both calls


# ---- Google Cloud KMS: @google-cloud/kms (REST) + google-auth-library ----

@pytest.fixture(scope="module")
def gcp(tmp_path_factory):
    peer = GcpPeer(tmp_path_factory.mktemp("gcp-node"))
    peer.gcloud_config = tmp_path_factory.mktemp("gcloud-config")  # empty: no gcloud sign-in of the host's
    yield peer
    peer.stop()


def gcp_sdk(peer, steps, credential="self_signed", key_file=None):
    """Run @steps through gcp_client.mjs signed in with @credential; (results, token exchanges)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_"))}
    env["CLOUDSDK_CONFIG"] = str(peer.gcloud_config)
    if credential == "metadata":
        env["GCE_METADATA_HOST"] = f"127.0.0.1:{peer.port}"
    request = {"endpoint": peer.direct, "credential": credential, "key_file": str(key_file or peer.sa_file),
               "steps": steps}
    out = node("gcp_client.mjs", request, env)
    assert len(out["results"]) == len(steps)
    return out["results"], out["token_exchanges"]


def test_gcp_sdk_keys_versions_and_primary(gcp):
    """A key ring, a key, a second version made primary, the first disabled: what the SDK reads back is
    what the peer holds (enums as numbers on the wire, as the REST client asks)."""
    ring = RING.rsplit("/", 1)[0] + "/node-ring"
    key = f"{ring}/cryptoKeys/node-key"
    r, _ = gcp_sdk(gcp, [
        {"op": "create_key_ring", "parent": ring.rsplit("/keyRings/", 1)[0], "id": "node-ring"},
        {"op": "create_key", "parent": ring, "id": "node-key"}, {"op": "add_version", "key": key},
        {"op": "set_primary", "key": key, "version": 2}, {"op": "set_state", "key": key, "version": 1,
                                                          "state": "DISABLED"},
        {"op": "versions", "key": key}, {"op": "get_key", "key": key},
        {"op": "create_key", "parent": ring, "id": "node-key"}])
    assert ok(r[0])["name"] == ring
    made = ok(r[1])
    assert made["purpose"] == "ENCRYPT_DECRYPT" and made["primary"]["name"] == f"{key}/cryptoKeyVersions/1"
    assert ok(r[2]) == {"name": f"{key}/cryptoKeyVersions/2", "state": "ENABLED", "protectionLevel": "SOFTWARE",
                        "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"}
    assert ok(r[3])["primary"]["name"] == f"{key}/cryptoKeyVersions/2" and ok(r[4])["state"] == "DISABLED"
    assert gcp.control("keys")[key] == {"primary": 2, "versions": {"1": "DISABLED", "2": "ENABLED"}}
    assert [(v["name"].rsplit("/", 1)[1], v["state"]) for v in ok(r[5])] == [("1", "DISABLED"), ("2", "ENABLED")]
    assert ok(r[6])["primary"]["name"] == f"{key}/cryptoKeyVersions/2"
    assert error(r[7])["status"] == "ALREADY_EXISTS" and error(r[7])["http"] == 409


@pytest.mark.parametrize("credential", ["self_signed", "exchange", "metadata"])
def test_gcp_sdk_encrypts_and_decrypts(gcp, credential):
    """encrypt/decrypt with additionalAuthenticatedData and every CRC32C field, under the primary version,
    across a rotation; signed in three ways, each seen by the peer as it should be."""
    key = gcp.create_key(f"node-{credential.replace('_', '-')}")
    plaintext, aad = b64(os.urandom(32)), b64(b"volume 1f2e, file 42")
    before = gcp.control("counters")
    r, exchanges = gcp_sdk(gcp, [
        {"op": "encrypt", "key": key, "plaintext": plaintext, "aad": aad},
        {"op": "add_version", "key": key}, {"op": "set_primary", "key": key, "version": 2},
        {"op": "decrypt", "key": key, "aad": aad, "take": {"ciphertext": 0}},
        {"op": "decrypt", "key": key, "aad": b64(b"another"), "take": {"ciphertext": 0}},
        {"op": "encrypt", "key": key, "plaintext": plaintext, "aad": aad}], credential)
    enc = ok(r[0])
    assert enc["name"] == f"{key}/cryptoKeyVersions/1" and enc["protectionLevel"] == "SOFTWARE"
    assert enc["ciphertext_crc_ok"] and enc["verified_plaintext_crc"] and enc["verified_aad_crc"]
    assert base64.b64decode(enc["ciphertext"])[:5] == b"\x0a\x00\x00\x00\x01"  # the peer's format: version 1
    assert gcp.control("keys")[key]["primary"] == 2
    dec = ok(r[3])
    assert dec["plaintext"] == plaintext and dec["plaintext_crc_ok"]
    assert dec["usedPrimary"] is False  # version 2 is primary now
    assert (error(r[4])["http"], error(r[4])["status"]) == (400, "INVALID_ARGUMENT")
    assert "Decryption failed" in error(r[4])["message"]
    assert ok(r[5])["name"] == f"{key}/cryptoKeyVersions/2"
    after = gcp.control("counters")
    signed = after["self_signed_tokens"] - before["self_signed_tokens"]
    issued = after["token_requests"] - before["token_requests"]
    # self_signed: a JWT on every call, no token endpoint; exchange: one JWT exchanged at token_uri;
    # metadata: one token from the metadata server.
    assert (signed, issued, exchanges) == {"self_signed": (6, 0, 0), "exchange": (0, 1, 1),
                                           "metadata": (0, 1, 0)}[credential]


def test_gcp_sdk_crc32c_both_ways(gcp):
    """The client checks the answers' checksums (a corrupted one is seen) and the peer checks the
    request's (a wrong one is refused)."""
    key = gcp.create_key("node-crc")
    plaintext, aad = b64(b"a data key, 32 bytes long......"), b64(b"context")
    enc = {"op": "encrypt", "key": key, "plaintext": plaintext, "aad": aad}
    dec = {"op": "decrypt", "key": key, "aad": aad, "take": {"ciphertext": 1}}
    gcp.control("corrupt", op="encrypt", count=1)
    before = gcp.control("corrupt", op="decrypt", count=1)["corrupted"]
    r, _ = gcp_sdk(gcp, [enc, enc, dict(enc, plaintext_crc="1"), dec, dec, dict(dec, ciphertext_crc="7")])
    assert ok(r[0])["ciphertext_crc_ok"] is False and ok(r[1])["ciphertext_crc_ok"] is True
    assert error(r[2])["status"] == "INVALID_ARGUMENT" and "plaintextCrc32c" in error(r[2])["message"]
    assert ok(r[3])["plaintext_crc_ok"] is False and ok(r[4])["plaintext_crc_ok"] is True
    assert ok(r[4])["plaintext"] == plaintext
    assert error(r[5])["status"] == "INVALID_ARGUMENT" and "ciphertextCrc32c" in error(r[5])["message"]
    assert gcp.control("counters")["corrupted"] == before + 2


def test_gcp_sdk_errors(gcp, tmp_path):
    """Throttling, not found, a disabled version, the missing role, a key the peer does not know
    (self-signed: UNAUTHENTICATED; exchanged: invalid_grant)."""
    key = gcp.create_key("node-errors")
    enc = {"op": "encrypt", "key": key, "plaintext": b64(b"x"), "aad": ""}
    # Cloud KMS's client does not retry RESOURCE_EXHAUSTED: the 429 reaches the caller.
    gcp.control("fault", status=429, count=1, retry_after=1)
    r, _ = gcp_sdk(gcp, [enc, {"op": "get_key", "key": f"{RING}/cryptoKeys/node-missing"},
                         {"op": "set_state", "key": key, "version": 1, "state": "DISABLED"}, enc,
                         {"op": "add_version", "key": key}, {"op": "set_primary", "key": key, "version": 2}, enc])
    assert (error(r[0])["http"], error(r[0])["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert (error(r[1])["http"], error(r[1])["status"]) == (404, "NOT_FOUND")
    assert (error(r[3])["http"], error(r[3])["status"]) == (400, "FAILED_PRECONDITION")
    assert ok(r[6])["name"] == f"{key}/cryptoKeyVersions/2"
    gcp.control("config", role_assigned=False)
    try:
        denied = error(gcp_sdk(gcp, [enc])[0][0])
    finally:
        gcp.control("config", role_assigned=True)
    assert (denied["http"], denied["status"]) == (403, "PERMISSION_DENIED")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    stranger = json.loads(gcp.sa_file.read_text())
    stranger["private_key"] = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    other = tmp_path / "stranger.json"
    other.write_text(json.dumps(stranger))
    got = error(gcp_sdk(gcp, [enc], key_file=other)[0][0])
    assert (got["http"], got["status"]) == (401, "UNAUTHENTICATED")
    got = error(gcp_sdk(gcp, [enc], "exchange", key_file=other)[0][0])
    assert "invalid_grant" in got["message"]
