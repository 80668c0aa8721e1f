/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_VAULT_H
#define ENVELOPEFS_KMS_VAULT_H

/*
 * The `vault` provider (HashiCorp Vault and OpenBao, Transit secrets engine):
 * kms/vault.c.  Its pure parts are declared here so unit tests can check them
 * without a server.
 *
 * Blob: the Transit ciphertext string itself, ASCII without a NUL:
 *   "vault:v" <version, decimal, no leading zero> ":" base64(nonce || ciphertext || tag)
 * for a 32-byte DEK 90 to 98 bytes; at most VAULT_MAX_BLOB.
 */

#include <stddef.h>
#include <stdint.h>

#include "kms/kms.h"

/* Room for any Transit ciphertext of a 32-byte DEK (98 bytes), with slack for the header size. */
#define VAULT_MAX_BLOB 128
#define VAULT_REF_PREFIX "vault:"

extern const struct kms_ops kms_vault_ops;

/*
 * vault_blob_parse_version - the key version of a "vault:vN:..." blob.
 * Returns 0, or -EBADMSG when @blob is not of that form (version 1 .. 2^32-1,
 * a non-empty body of base64 characters).
 */
int vault_blob_parse_version(const uint8_t *blob, size_t len, uint32_t *version);

/* VAULT_CONTEXT_B64_LEN - characters of a context in base64 (32 bytes → 44), without the NUL. */
#define VAULT_CONTEXT_B64_LEN 44

/* vault_context_b64 - the Transit `context`: base64(volume UUID || file ID), NUL-terminated. */
void vault_context_b64(const struct kms_context *ctx, char out[VAULT_CONTEXT_B64_LEN + 1]);

/*
 * vault_map_error - the kms.h errno for a Transit answer with HTTP @status and
 * first error text @message (may be NULL): 403/401 -EACCES; 404 and unknown
 * keys or versions -ENOENT; a version below min_decryption_version -ENOENT
 * (like a retired keyring version: the version is gone for us); bad or
 * unauthenticated ciphertext -EBADMSG; 412/429/5xx -EAGAIN; other -EIO.
 */
int vault_map_error(long status, const char *message);

#endif
