/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_GCP_H
#define ENVELOPEFS_KMS_GCP_H

/*
 * The `gcp` provider (kms/gcp.c): DEKs encrypted by a Google Cloud KMS
 * symmetric key (purpose ENCRYPT_DECRYPT) with encrypt/decrypt, the context
 * as additionalAuthenticatedData, every payload's CRC32C checked both ways.
 * Reached through kms/kms.h; this header exposes the pure pieces a unit test
 * checks against docs/FORMAT.md.
 *
 * AAD: volume UUID (16) || file ID (16), sent base64 with its CRC32C.
 *
 * Blob, 5 + n bytes:
 *   0  1  format byte GCP_BLOB_FORMAT
 *   1  4  the cryptoKeyVersion that encrypted (big-endian, >= 1), as named
 *         in encrypt's answer (".../cryptoKeyVersions/N")
 *   5  n  Cloud KMS's ciphertext, opaque, 1..GCP_MAX_CIPHERTEXT bytes
 */

#include <stddef.h>
#include <stdint.h>

#include "kms/kms.h"

#define GCP_BLOB_FORMAT 0xC1
#define GCP_BLOB_HEADER 5
/* A 32-byte plaintext gives a ciphertext of about 110 bytes; room for format changes. */
#define GCP_MAX_CIPHERTEXT 512
#define GCP_MAX_BLOB (GCP_BLOB_HEADER + GCP_MAX_CIPHERTEXT)
#define GCP_AAD_LEN 32
/* The encrypt request for a 32-byte DEK, with its CRC32Cs, fits easily. */
#define GCP_MAX_REQUEST 1024

/* gcp_blob_frame - our blob from @version and the ciphertext.  0, -EINVAL or -ENOSPC. */
int gcp_blob_frame(uint32_t version, const uint8_t *ct, size_t ct_len, uint8_t *out, size_t cap,
		   size_t *out_len);

/* gcp_blob_parse - the version and ciphertext (a pointer into @blob) of @blob.  0 or -EBADMSG. */
int gcp_blob_parse(const uint8_t *blob, size_t len, uint32_t *version, const uint8_t **ct,
		   size_t *ct_len);

/*
 * gcp_encrypt_request - the JSON body of :encrypt for @dek under @ctx, as
 * sent: plaintext, plaintextCrc32c, additionalAuthenticatedData,
 * additionalAuthenticatedDataCrc32c (int64 fields as decimal strings, as
 * the API's JSON mapping writes them).  @out should be secmem (it holds the
 * DEK in base64).  0, or -ENOSPC.
 */
int gcp_encrypt_request(const struct kms_context *ctx, const uint8_t *dek, char *out, size_t cap,
			size_t *len);

/*
 * gcp_map_error - the kms.h errno for a Cloud KMS error answer: HTTP @status,
 * error.status @code (may be "") and error.message @message (may be ""), for
 * a decrypt call when @decrypt.  401/403 -EACCES; 404 -ENOENT;
 * FAILED_PRECONDITION -EACCES for a disabled version, -ENOENT for a destroyed
 * one; INVALID_ARGUMENT to decrypt -EBADMSG, else -EINVAL; 429/5xx -EAGAIN.
 */
int gcp_map_error(long status, const char *code, const char *message, int decrypt);

#endif
