// SPDX-License-Identifier: MIT
// Drives the local Google Cloud peer (tests/kmsd/gcp_kms.py) through Google's own Node clients:
// @google-cloud/kms in its REST mode (fallback: true, HTTP/1.1 + JSON, not gRPC) signed in by
// google-auth-library.  Used by tests/integration/test_kms_cloud_clients.py.
//
// stdin: {"endpoint": "http://127.0.0.1:PORT", "credential": "self_signed" | "exchange" | "metadata",
//         "key_file", "steps": [{"op": ..., ...}]}
//   self_signed  the service-account key file as the KMS client takes it by default: google-auth-library
//                signs a JWT with the cloudkms scope and sends it as the bearer token, no exchange.
//   exchange     the same key, but the JWT is exchanged for an access token at the key file's token_uri.
//                google-auth-library posts that exchange to https://oauth2.googleapis.com/token whatever
//                token_uri says (gtoken's GOOGLE_TOKEN_URL), so this script moves that one URL to
//                token_uri with a request interceptor on the client's own transport.
//   metadata     Application Default Credentials with no key: the metadata server, found through
//                GCE_METADATA_HOST (set by the caller), as on Compute Engine.
// stdout: {"results": [one per step: {"ok": ANSWER, "ms"} or
//                       {"error": {name, http, code, status, message}, "ms"}], "token_exchanges": N}
//   Byte strings travel as base64; steps run as steps.mjs says.
//
// Steps: create_key_ring {parent, id}, create_key {parent, id}, get_key {key}, add_version {key},
// set_primary {key, version}, versions {key}, set_state {key, version, state},
// encrypt {key, plaintext, aad, plaintext_crc?}, decrypt {key, ciphertext, aad, ciphertext_crc?}.
// encrypt and decrypt send the CRC32C of every field and check the answer's, as Google's guide to
// data integrity says (https://cloud.google.com/kms/docs/data-integrity-guidelines); a *_crc given
// in the step replaces the computed one (to see the peer refuse it).
import { readFileSync } from "node:fs";
import { KeyManagementServiceClient } from "@google-cloud/kms";
import { JWT } from "google-auth-library";
import { runSteps } from "./steps.mjs";

const request = JSON.parse(readFileSync(0, "utf8"));
const GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token";
const SCOPE = "https://www.googleapis.com/auth/cloudkms";

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as the API defines its checksums.
function crc32c(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

let tokenExchanges = 0;

function clientOptions(req) {
  const url = new URL(req.endpoint);
  const base = { fallback: true, protocol: url.protocol.slice(0, -1), apiEndpoint: url.hostname,
    port: Number(url.port) };
  switch (req.credential) {
    case "self_signed":
      return { ...base, keyFilename: req.key_file };
    case "exchange": {
      const key = JSON.parse(readFileSync(req.key_file, "utf8"));
      const jwt = new JWT({ email: key.client_email, key: key.private_key, keyId: key.private_key_id,
        scopes: [SCOPE] });
      jwt.transporter.interceptors.request.add({
        resolved: async (config) => {
          if (String(config.url) === GOOGLE_TOKEN_URL) {
            tokenExchanges++;
            config.url = new URL(key.token_uri);
          }
          return config;
        },
      });
      return { ...base, authClient: jwt };
    }
    case "metadata":
      return base;
    default:
      throw new Error(`unknown credential ${req.credential}`);
  }
}

const kms = new KeyManagementServiceClient(clientOptions(request));
if (request.credential === "exchange") {
  // The KMS client asks for self-signed JWTs on whatever auth client it has: turn that off to exchange.
  kms.auth.useJWTAccessWithScope = false;
}
const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const unb64 = (text) => Buffer.from(text ?? "", "base64");
const crcField = (value) => ({ value: String(value) });

function describeVersion(v) {
  return { name: v.name, state: v.state, protectionLevel: v.protectionLevel, algorithm: v.algorithm };
}

const ops = {
  async create_key_ring({ parent, id }) {
    const [ring] = await kms.createKeyRing({ parent, keyRingId: id, keyRing: {} });
    return { name: ring.name };
  },
  async create_key({ parent, id }) {
    const [key] = await kms.createCryptoKey({ parent, cryptoKeyId: id,
      cryptoKey: { purpose: "ENCRYPT_DECRYPT" } });
    return { name: key.name, purpose: key.purpose, primary: describeVersion(key.primary) };
  },
  async get_key({ key }) {
    const [k] = await kms.getCryptoKey({ name: key });
    return { name: k.name, purpose: k.purpose, primary: describeVersion(k.primary) };
  },
  async add_version({ key }) {
    const [v] = await kms.createCryptoKeyVersion({ parent: key, cryptoKeyVersion: {} });
    return describeVersion(v);
  },
  async set_primary({ key, version }) {
    const [k] = await kms.updateCryptoKeyPrimaryVersion({ name: key, cryptoKeyVersionId: String(version) });
    return { name: k.name, primary: describeVersion(k.primary) };
  },
  async versions({ key }) {
    const [list] = await kms.listCryptoKeyVersions({ parent: key });
    return list.map(describeVersion);
  },
  async set_state({ key, version, state }) {
    const [v] = await kms.updateCryptoKeyVersion({
      cryptoKeyVersion: { name: `${key}/cryptoKeyVersions/${version}`, state },
      updateMask: { paths: ["state"] } });
    return describeVersion(v);
  },
  async encrypt({ key, plaintext, aad, plaintext_crc }) {
    const data = unb64(plaintext), context = unb64(aad);
    const [r] = await kms.encrypt({ name: key, plaintext: data, additionalAuthenticatedData: context,
      plaintextCrc32c: crcField(plaintext_crc ?? crc32c(data)),
      additionalAuthenticatedDataCrc32c: crcField(crc32c(context)) });
    return { name: r.name, ciphertext: b64(r.ciphertext),
      ciphertext_crc_ok: Number(r.ciphertextCrc32c?.value) === crc32c(r.ciphertext),
      verified_plaintext_crc: r.verifiedPlaintextCrc32c,
      verified_aad_crc: r.verifiedAdditionalAuthenticatedDataCrc32c, protectionLevel: r.protectionLevel };
  },
  async decrypt({ key, ciphertext, aad, ciphertext_crc }) {
    const data = unb64(ciphertext), context = unb64(aad);
    const [r] = await kms.decrypt({ name: key, ciphertext: data, additionalAuthenticatedData: context,
      ciphertextCrc32c: crcField(ciphertext_crc ?? crc32c(data)),
      additionalAuthenticatedDataCrc32c: crcField(crc32c(context)) });
    return { plaintext: b64(r.plaintext),
      plaintext_crc_ok: Number(r.plaintextCrc32c?.value) === crc32c(r.plaintext),
      usedPrimary: r.usedPrimary, protectionLevel: r.protectionLevel };
  },
};

// In REST mode an HTTP error reaches the caller as gaxios's error: its status, and the API's error body
// ({"error": {code, message, status}}) as the message.
function failure(e) {
  let body = null;
  try {
    body = JSON.parse(e.message).error;
  } catch {
    body = null;
  }
  return { name: e.name, http: e.status ?? null, code: e.code ?? null, status: body?.status ?? null,
    message: body?.message ?? String(e.message).split("\n")[0] };
}

const results = await runSteps(request.steps, ops, failure);
await kms.close();
process.stdout.write(JSON.stringify({ results, token_exchanges: tokenExchanges }) + "\n");
