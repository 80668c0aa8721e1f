/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_KMS_H
#define ENVELOPEFS_KMS_KMS_H

/*
 * The key-management service interface.  Every master-key home (the local
 * keyring today; AWS KMS, Vault Transit and PKCS#11 later) implements
 * struct kms_ops; callers only see struct kms and the functions below.
 *
 * Contract for every provider:
 *  - A DEK is KMS_DEK_LEN bytes.  Buffers that receive a DEK must be secmem.
 *  - Every wrap, unwrap and re-wrap binds the struct kms_context (volume UUID
 *    and file ID) as encryption context / AAD: a blob only unwraps under the
 *    exact context it was made with.
 *  - Wrapped blobs are opaque bytes of at most kms_max_blob_len() bytes, and
 *    carry (or let the provider recover) the master-key version they were
 *    wrapped under.
 *  - All operations are thread-safe.
 *  - Errors are negative errnos with fixed meanings:
 *      -ENOENT   the master key or the blob's key version does not exist
 *      -EACCES   the KMS denied the operation (credentials, policy)
 *      -EBADMSG  the blob is not valid ciphertext under this context
 *      -EAGAIN   the KMS is unavailable or throttling; retrying may succeed
 *      -EINVAL   caller error (bad length, bad settings)
 *      -EIO      anything else
 *  - Nothing here logs a key, a token or a plaintext; messages written to an
 *    @err buffer name files and settings, never secrets.
 */

#include <iniparser.h>
#include <stddef.h>
#include <stdint.h>

#define KMS_DEK_LEN 32
#define KMS_MAX_BLOB 6144
#define KMS_MAX_REF 255

struct kms_context {
	uint8_t volume_uuid[16];
	uint8_t file_id[16];
};

/* Run-time counters, readable at any time (relaxed atomics). */
struct kms_counters {
	uint64_t generate;
	uint64_t unwrap;
	uint64_t rewrap;
	uint64_t failures;
};

struct kms;

struct kms_ops {
	const char *name; /* "local", "aws", "vault", "pkcs11" */
	/* Parse settings from @ini section "kms", connect/load.  0 or -errno + @err. */
	int (*open)(struct kms *kms, const dictionary *ini, char *err, size_t err_len);
	/* Fresh random DEK and its blob under the current version. */
	int (*generate)(struct kms *kms, const struct kms_context *ctx, uint8_t *dek, uint8_t *blob,
			size_t blob_cap, size_t *blob_len, uint32_t *version);
	int (*unwrap)(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *dek);
	/* Move @blob onto the current version; the DEK stays the same. */
	int (*rewrap)(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
		      uint32_t *version);
	int (*blob_version)(struct kms *kms, const uint8_t *blob, size_t blob_len,
			    uint32_t *version);
	int (*current_version)(struct kms *kms, uint32_t *version);
	void (*close)(struct kms *kms);
};

struct kms {
	const struct kms_ops *ops;
	void *priv;			/* provider state */
	char key_ref[KMS_MAX_REF + 1];	/* master-key reference stored in records */
	size_t max_blob_len;		/* largest blob this provider produces */
	struct kms_counters counters;
};

/*
 * kms_open - create the provider named by ini "kms:provider" and open it.
 * Returns 0 and *@out, or -errno with a human message in @err naming the file
 * or setting at fault and what to do.
 */
int kms_open(const dictionary *ini, struct kms **out, char *err, size_t err_len);
void kms_close(struct kms *kms);

int kms_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek, uint8_t *blob,
		 size_t blob_cap, size_t *blob_len, uint32_t *version);
int kms_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
	       size_t blob_len, uint8_t *dek);
int kms_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
	       size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len, uint32_t *version);
int kms_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len, uint32_t *version);
int kms_current_version(struct kms *kms, uint32_t *version);

/* kms_strerror - short text for a kms error code ("bad ciphertext", ...). */
const char *kms_strerror(int err);

#endif
