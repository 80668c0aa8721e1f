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
#include <stdbool.h>
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
	uint64_t wrap;
	uint64_t failures;
};

/*
 * Counters of the calls a remote provider made to its service (from its
 * kms/http.h client), readable at any time.  @remote is false, and every
 * number 0, for a provider without a service (local).
 */
struct kms_remote_stats {
	bool remote;
	uint64_t calls;		/* HTTP calls made (each may have retried) */
	uint64_t retries;	/* extra attempts after retryable faults */
	uint64_t failures;	/* calls that failed (error or HTTP status >= 400) */
	uint64_t throttled;	/* answers asking us to slow down (retried, not an outage) */
	uint64_t latency_us;	/* total wall time of all calls */
	uint64_t breaker_opens;	/* times the service was marked unreachable */
	const char *breaker;	/* "closed", "open", "half-open" (static string) */
};

/*
 * kms_reachability_fn - the provider's service became unreachable (@up
 * false) or reachable again (@up true).  Called once per edge, from the
 * thread whose call noticed it, under the provider's breaker lock: log and
 * return; never call back into the kms.
 */
typedef void (*kms_reachability_fn)(void *arg, const char *provider, bool up);

/*
 * One item of a kms_unwrap_many() batch.  The caller fills the inputs; the
 * call sets @rc to what kms_unwrap() would have returned for this item and,
 * when it is 0, fills @dek (KMS_DEK_LEN bytes of secmem).
 */
struct kms_unwrap_item {
	const struct kms_context *ctx;
	const uint8_t *blob;
	size_t blob_len;
	uint8_t *dek;
	int rc;
};

/*
 * One item of a kms_wrap_many() batch: @dek is wrapped under the current
 * version into @blob (@blob_cap bytes, at least kms->max_blob_len); the
 * call sets @rc and, when it is 0, @blob_len and @version.
 */
struct kms_wrap_item {
	const struct kms_context *ctx;
	const uint8_t *dek;
	uint8_t *blob;
	size_t blob_cap;
	size_t blob_len;
	uint32_t version;
	int rc;
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
	/*
	 * Wrap the caller's @dek under the current version (moving a volume to
	 * another KMS, or DEKs made locally).  NULL: the provider cannot, and
	 * kms_wrap() answers -EOPNOTSUPP.
	 */
	int (*wrap)(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek,
		    uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version);
	/*
	 * Optional batch forms, for providers whose service takes many items in
	 * one round trip.  They set every item's rc.  NULL: kms.c calls the
	 * single-item op for each item in turn.
	 */
	void (*unwrap_many)(struct kms *kms, struct kms_unwrap_item *items, size_t n);
	void (*wrap_many)(struct kms *kms, struct kms_wrap_item *items, size_t n);
	/* Move @blob onto the current version; the DEK stays the same. */
	int (*rewrap)(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
		      uint32_t *version);
	int (*blob_version)(struct kms *kms, const uint8_t *blob, size_t blob_len,
			    uint32_t *version);
	int (*current_version)(struct kms *kms, uint32_t *version);
	void (*close)(struct kms *kms);
	/* Optional (NULL for providers without a service): fill @out. */
	void (*remote_stats)(struct kms *kms, struct kms_remote_stats *out);
	/* Optional: see kms_destroy().  NULL: kms_destroy() answers -EOPNOTSUPP. */
	int (*destroy)(struct kms *kms, char *err, size_t err_len);
};

struct kms {
	const struct kms_ops *ops;
	void *priv;			/* provider state */
	char key_ref[KMS_MAX_REF + 1];	/* master-key reference stored in records */
	size_t max_blob_len;		/* largest blob this provider produces */
	struct kms_counters counters;
	kms_reachability_fn reachability; /* see kms_set_reachability_hook */
	void *reachability_arg;
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

/*
 * kms_wrap - wrap the caller's @dek (KMS_DEK_LEN bytes) under the current
 * version, bound to @ctx.  Errors as above, plus -EOPNOTSUPP when the
 * provider cannot wrap a key it did not make.
 */
int kms_wrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek, uint8_t *blob,
	     size_t blob_cap, size_t *blob_len, uint32_t *version);

/*
 * kms_unwrap_many / kms_wrap_many - the single-item operations over @n
 * items, in as few round trips as the provider allows.  Each item's rc is
 * set; the return is 0 when every item succeeded, else the first failing
 * item's rc.  Counters count items, as if each were a single call.
 */
int kms_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n);
int kms_wrap_many(struct kms *kms, struct kms_wrap_item *items, size_t n);
int kms_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len, uint32_t *version);
int kms_current_version(struct kms *kms, uint32_t *version);

/*
 * kms_destroy - destroy the master key, every version of it, for good (a
 * key scope's `scope shred`: whatever it wrapped can never be unwrapped
 * again), or where the service only schedules a deletion, schedule it at
 * the shortest window and disable the key meanwhile.  The caller uses @kms
 * for nothing but kms_close() afterwards.  0, -EOPNOTSUPP (the provider
 * cannot), -EPERM (the service refuses as the key is configured; @err says
 * what to do), or another error above, with a message in @err.  -EPERM may
 * come after a part was done: an Azure vault with purge protection leaves
 * the key disabled and deleted (nothing unwraps; purged at the end of the
 * vault's retention), a KMIP key its policy keeps is left revoked.  On 0,
 * @err may say when a scheduled destruction completes (Cloud KMS).
 */
int kms_destroy(struct kms *kms, char *err, size_t err_len);

/* kms_remote_stats - the provider's service-call counters (all zero if it has none). */
void kms_remote_stats(struct kms *kms, struct kms_remote_stats *out);

/*
 * kms_set_reachability_hook - call @fn on every unreachable/reachable edge
 * of the provider's service (remote providers only).  Set it once, before
 * the kms is used from several threads.
 */
void kms_set_reachability_hook(struct kms *kms, kms_reachability_fn fn, void *arg);

/* kms_report_reachability - for providers: pass an edge to the hook, if any. */
void kms_report_reachability(struct kms *kms, bool up);

/* kms_strerror - short text for a kms error code ("bad ciphertext", ...). */
const char *kms_strerror(int err);

#endif
