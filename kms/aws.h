/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_AWS_H
#define ENVELOPEFS_KMS_AWS_H

/*
 * The `aws` provider (kms/aws.c): DEKs made, unwrapped and re-wrapped by AWS
 * KMS (GenerateDataKey, Decrypt, ReEncrypt), SigV4-signed by libcurl.  The
 * provider itself is reached through kms/kms.h; this header exposes only
 * the pure pieces a unit test checks against docs/FORMAT.md.
 *
 * Blob, 5 + n bytes:
 *   0  1  format byte AWS_BLOB_FORMAT
 *   1  4  master-key version (big-endian): 1 + the number of rotations
 *         ListKeyRotations reported for the key, read before the KMS call
 *         that made the ciphertext (so never more than the truth)
 *   5  n  the AWS CiphertextBlob, 1..AWS_MAX_CIPHERTEXT bytes, opaque
 *
 * EncryptionContext, bound by KMS to every ciphertext:
 *   {"envelopefs:file": hex(file ID), "envelopefs:volume": hex(volume UUID)}
 */

#include <stddef.h>
#include <stdint.h>

#include "kms/kms.h"

#define AWS_BLOB_FORMAT 0xA1
#define AWS_BLOB_HEADER 5
/* AWS ciphertext for a 32-byte data key is under 200 bytes; this leaves room for format changes. */
#define AWS_MAX_CIPHERTEXT 1024
#define AWS_MAX_BLOB (AWS_BLOB_HEADER + AWS_MAX_CIPHERTEXT)
/* hex(32 bytes) of context, the JSON around it, and the names. */
#define AWS_CONTEXT_JSON_MAX 160

/* aws_blob_frame - our blob from @version and the AWS ciphertext.  0 or -EINVAL/-ENOSPC. */
int aws_blob_frame(uint32_t version, const uint8_t *ct, size_t ct_len, uint8_t *out, size_t cap,
		   size_t *out_len);

/* aws_blob_parse - the version and the AWS ciphertext inside @blob (pointer into it).  0 or -EBADMSG. */
int aws_blob_parse(const uint8_t *blob, size_t len, uint32_t *version, const uint8_t **ct,
		   size_t *ct_len);

/* aws_context_json - the EncryptionContext object for @ctx, NUL-terminated, as sent. */
int aws_context_json(const struct kms_context *ctx, char *out, size_t cap);

#endif
