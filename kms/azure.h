/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_AZURE_H
#define ENVELOPEFS_KMS_AZURE_H

/*
 * The `azure` provider (kms/azure.c): DEKs wrapped by an Azure Key Vault or
 * Managed HSM key with wrapKey/unwrapKey (RSA-OAEP-256 on RSA keys, A256KW
 * on oct-HSM keys).  Reached through kms/kms.h; this header exposes the pure
 * pieces a unit test checks against docs/FORMAT.md.
 *
 * Context binding.  wrapKey takes no additional data, so the value we wrap
 * carries the binding itself: the inner value is
 *     DEK (32) || HMAC-SHA256(key = DEK, AZURE_CONTEXT_LABEL || volume UUID || file ID)[0..16)
 * (48 bytes).  unwrap recomputes the tag for the context it is asked about
 * and refuses (-EBADMSG) a blob made for another volume or file.  Only the
 * holder of the DEK can make a tag, and the DEK is only ever in the clear
 * here and inside Key Vault.
 *
 * Blob, 6 + n + m bytes:
 *   0    1  format byte AZURE_BLOB_FORMAT
 *   1    4  master-key version number (big-endian, >= 1): the key version's
 *           place, from 1, in the key's versions ordered by creation time
 *   5    1  n, the length of the Key Vault version ID (1..AZURE_MAX_VERSION_ID)
 *   6    n  the version ID (ASCII letters and digits), as in the key's kid
 *   6+n  m  the wrapKey result over the inner value (1..AZURE_MAX_WRAPPED)
 */

#include <stddef.h>
#include <stdint.h>

#include "kms/kms.h"

#define AZURE_BLOB_FORMAT 0xB1
#define AZURE_CONTEXT_LABEL "envelopefs azure context v1"
#define AZURE_TAG_LEN 16
#define AZURE_INNER_LEN (KMS_DEK_LEN + AZURE_TAG_LEN)
#define AZURE_MAX_VERSION_ID 64
/* An RSA-4096 wrap is 512 bytes; A256KW of the inner value is 56. */
#define AZURE_MAX_WRAPPED 512
#define AZURE_MAX_BLOB (6 + AZURE_MAX_VERSION_ID + AZURE_MAX_WRAPPED)

/* azure_inner_make - the inner value for @dek under @ctx into @inner.  0 or -EIO. */
int azure_inner_make(const struct kms_context *ctx, const uint8_t *dek,
		     uint8_t inner[AZURE_INNER_LEN]);

/*
 * azure_inner_open - the DEK (secmem) of an unwrapped inner value, if its tag
 * matches @ctx.  0, or -EBADMSG (wrong length, or made for another context).
 */
int azure_inner_open(const struct kms_context *ctx, const uint8_t *inner, size_t len,
		     uint8_t *dek);

/* azure_blob_frame - our blob from its parts.  0, -EINVAL or -ENOSPC. */
int azure_blob_frame(uint32_t version, const char *version_id, const uint8_t *wrapped,
		     size_t wrapped_len, uint8_t *out, size_t cap, size_t *out_len);

/*
 * azure_blob_parse - the parts of @blob: its version number, the version ID
 * (copied, NUL-terminated, into @version_id) and the wrapped value (a
 * pointer into @blob).  0 or -EBADMSG.
 */
int azure_blob_parse(const uint8_t *blob, size_t len, uint32_t *version,
		     char version_id[AZURE_MAX_VERSION_ID + 1], const uint8_t **wrapped,
		     size_t *wrapped_len);

/*
 * azure_map_error - the kms.h errno for a Key Vault error answer: HTTP
 * @status and the error.code @code (may be ""), for an unwrapKey call when
 * @unwrap.  401/403 -EACCES (a disabled key or a missing "Key Vault Crypto
 * User" role); 404 -ENOENT; a 400 to unwrapKey -EBADMSG (Key Vault's answer
 * to ciphertext it cannot decrypt), other 400s -EINVAL; 429/5xx -EAGAIN.
 */
int azure_map_error(long status, const char *code, int unwrap);

#endif
