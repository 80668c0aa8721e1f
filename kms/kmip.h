/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_KMIP_H
#define ENVELOPEFS_KMS_KMIP_H

/*
 * The `kmip` provider (kms/kmip.c): master keys are AES-256 symmetric keys
 * held by a KMIP server; a DEK is wrapped by the server's Encrypt (AES-GCM,
 * our random 96-bit IV, the context in the authenticated additional data)
 * and unwrapped by its Decrypt.  The provider is reached through
 * kms/kms.h; this header exposes the pure pieces a unit test checks against
 * docs/FORMAT.md ("KMIP key wrapping").
 *
 * Blob, KMIP_BLOB_LEN bytes:
 *   version (4, big-endian) || IV (12) || GCM ciphertext of the DEK (32) || tag (16)
 * AAD = KMIP_WRAP_LABEL || version (4) || volume UUID (16) || file ID (16).
 *
 * Versions: version N of the master key with base name L is the symmetric
 * key whose Name is "L.N" (N decimal, 1 .. 2^32-1, no leading zero).
 */

#include <stddef.h>
#include <stdint.h>

#include "kms/kms.h"

#define KMIP_WRAP_LABEL "envelopefs kmip wrap v1"
#define KMIP_WRAP_LABEL_LEN (sizeof(KMIP_WRAP_LABEL) - 1)
#define KMIP_AAD_LEN (KMIP_WRAP_LABEL_LEN + 4 + 16 + 16)
#define KMIP_IV_LEN 12
#define KMIP_TAG_LEN 16
#define KMIP_BLOB_IV 4
#define KMIP_BLOB_CIPHER (KMIP_BLOB_IV + KMIP_IV_LEN)
#define KMIP_BLOB_TAG (KMIP_BLOB_CIPHER + KMS_DEK_LEN)
#define KMIP_BLOB_LEN (KMIP_BLOB_TAG + KMIP_TAG_LEN)

/* kmip_wrap_aad - the AAD of a wrap under @version for @ctx. */
void kmip_wrap_aad(uint8_t aad[KMIP_AAD_LEN], uint32_t version, const struct kms_context *ctx);

/* kmip_blob_version - the version a blob names: 0, or -EBADMSG (wrong length, version 0). */
int kmip_blob_version(const uint8_t *blob, size_t len, uint32_t *version);

/* kmip_name_version - N if @name is "<@base>.N" with N canonical decimal in 1 .. 2^32-1, else 0. */
uint32_t kmip_name_version(const char *base, const char *name);

#endif
