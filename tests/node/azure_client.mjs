// SPDX-License-Identifier: MIT
// Drives the local Azure peer (tests/kmsd/azure_keyvault.py) through Microsoft's own Node SDKs,
// @azure/identity and @azure/keyvault-keys, so that every answer the peer gives is read by the code
// real users run.  Used by tests/integration/test_kms_cloud_clients.py.
//
// stdin: {"vault_url", "tenant_id", "client_id", "authority_host", "credential": "secret" |
//         "certificate" | "federated" | "managed", "certificate_file", "federated_token_file",
//         "steps": [{"op": ..., ...}]}
//   The client secret comes from AZURE_CLIENT_SECRET (never argv); the peer's CA from
//   NODE_EXTRA_CA_CERTS; the managed identity endpoint from AZURE_POD_IDENTITY_AUTHORITY_HOST.
// stdout: {"results": [one per step: {"ok": ANSWER, "ms"} or {"error": {name, status, code, message}, "ms"}]}
//   Byte strings travel as base64; steps run as steps.mjs says.
//
// Steps: create {name, kty: "RSA" | "oct-HSM"}, rotate {name}, get {name, version?}, versions {name},
// enable {name, version, enabled}, wrap {key, alg, value}, unwrap {key, alg, value} (key: "NAME" for the
// latest version or "NAME/VERSION"), and seal {name, version, value}: RSA-OAEP-256 by node's own crypto
// under the public key the SDK fetched (the SDK wraps with RSA-OAEP-256 only remotely), to prove the peer
// publishes n and e right.
import { readFileSync } from "node:fs";
import { constants, createPublicKey, publicEncrypt } from "node:crypto";
import {
  ClientAssertionCredential,
  ClientCertificateCredential,
  ClientSecretCredential,
  ManagedIdentityCredential,
} from "@azure/identity";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { runSteps } from "./steps.mjs";

const request = JSON.parse(readFileSync(0, "utf8"));

function credential(req) {
  // The peer is both the vault and the authority; instance discovery would ask login.microsoftonline.com.
  const options = { authorityHost: req.authority_host, disableInstanceDiscovery: true };
  switch (req.credential) {
    case "secret":
      return new ClientSecretCredential(req.tenant_id, req.client_id, process.env.AZURE_CLIENT_SECRET, options);
    case "certificate":
      return new ClientCertificateCredential(req.tenant_id, req.client_id,
        { certificatePath: req.certificate_file }, options);
    case "federated":
      return new ClientAssertionCredential(req.tenant_id, req.client_id,
        async () => readFileSync(req.federated_token_file, "utf8").trim(), options);
    case "managed":
      return new ManagedIdentityCredential();
    default:
      throw new Error(`unknown credential ${req.credential}`);
  }
}

const cred = credential(request);
// The challenge names resource https://vault.azure.net while the vault is 127.0.0.1: that check is off.
const clientOptions = { disableChallengeResourceVerification: true };
const keys = new KeyClient(request.vault_url, cred, clientOptions);
const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const unb64 = (text) => new Uint8Array(Buffer.from(text, "base64"));

const crypto = (key) => new CryptographyClient(`${request.vault_url}/keys/${key}`, cred, clientOptions);

function describe(key) {
  return {
    kid: key.id, name: key.name, version: key.properties.version, kty: key.keyType,
    enabled: key.properties.enabled, created: key.properties.createdOn?.getTime() ?? null,
    n: key.key.n ? b64(key.key.n) : null, e: key.key.e ? b64(key.key.e) : null,
  };
}

const ops = {
  async create({ name, kty }) {
    const key = kty === "oct-HSM"
      ? await keys.createOctKey(name, { hsm: true, keySize: 256 })
      : await keys.createRsaKey(name, { keySize: 2048 });
    return describe(key);
  },
  async rotate({ name }) {
    return describe(await keys.rotateKey(name));
  },
  async get({ name, version }) {
    return describe(await keys.getKey(name, version ? { version } : {}));
  },
  async versions({ name }) {
    const out = [];
    for await (const p of keys.listPropertiesOfKeyVersions(name)) {
      out.push({ kid: p.id, version: p.version, enabled: p.enabled, created: p.createdOn?.getTime() ?? null });
    }
    return out;
  },
  async enable({ name, version, enabled }) {
    return describe(await keys.updateKeyProperties(name, version, { enabled }));
  },
  async wrap({ key, alg, value }) {
    const r = await crypto(key).wrapKey(alg, unb64(value));
    return { kid: r.keyID, alg: r.algorithm, value: b64(r.result) };
  },
  async unwrap({ key, alg, value }) {
    const r = await crypto(key).unwrapKey(alg, unb64(value));
    return { kid: r.keyID, alg: r.algorithm, value: b64(r.result) };
  },
  async seal({ name, version, value }) {
    const key = await keys.getKey(name, { version });
    const jwk = { kty: "RSA", n: Buffer.from(key.key.n).toString("base64url"),
      e: Buffer.from(key.key.e).toString("base64url") };
    const sealed = publicEncrypt({ key: createPublicKey({ key: jwk, format: "jwk" }),
      padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, Buffer.from(value, "base64"));
    return { kid: key.id, value: b64(sealed) };
  },
};

function failure(e) {
  return {
    name: e.name, status: e.statusCode ?? null,
    code: e.code ?? e.errorResponse?.error ?? null, message: String(e.message).split("\n")[0],
  };
}

const results = await runSteps(request.steps, ops, failure);
process.stdout.write(JSON.stringify({ results }) + "\n");
