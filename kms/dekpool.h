/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_DEKPOOL_H
#define ENVELOPEFS_KMS_DEKPOOL_H

/*
 * A pool of fresh data keys, so that creating a file never waits for a
 * remote KMS.
 *
 * Every entry is a complete new-file key: a random file ID, a DEK in secmem
 * and the DEK's blob wrapped under the context (volume UUID, that file ID).
 * A few refill threads keep the pool full in the background.  When the KMS
 * wraps in batches (kms_ops.wrap_many: Vault), a refill draws file IDs and
 * DEKs from our CSPRNG (crypto/random.h) and has the KMS wrap up to 16 of
 * them in one call; should the KMS refuse to wrap (-EACCES, -EOPNOTSUPP: a
 * policy allowing datakey but not encrypt), the pool falls back for good to
 * one kms_generate() per key, as for every other KMS.  dek_pool_take()
 * hands out an entry and, when the pool is empty (or has capacity 0: the
 * local keyring needs no pool), makes the key on the spot, exactly as if
 * there were no pool.
 *
 * Invariants:
 *  - An entry is handed out at most once, and wiped when taken or dropped.
 *  - No entry wrapped under an older master-key version than the newest one
 *    the pool has seen is handed out.  The pool learns of a new version from
 *    its own generate calls, from dek_pool_note_version() (the daemon calls
 *    it whenever it reads the KMS's current version) and from its own check
 *    every DEK_POOL_VERSION_CHECK seconds while idle; so a file created in
 *    the seconds after a master-key rotation may still get the previous
 *    version, which the next `envelopefsctl rotate` moves on.
 *  - While the KMS fails, the refill threads back off together (1 s doubling
 *    to 30 s) instead of adding load to a service that is down.
 */

#include <stddef.h>
#include <stdint.h>

#include "kms/kms.h"

#define DEK_POOL_VERSION_CHECK 10

struct dek_pool;

/* One new-file key: the caller owns @dek (KMS_DEK_LEN bytes of secmem). */
struct fresh_key {
	uint8_t file_id[16];
	uint32_t version;
	size_t blob_len;
	uint8_t blob[KMS_MAX_BLOB];
};

struct dek_pool_stats {
	uint64_t capacity;
	uint64_t entries;  /* keys ready now */
	uint64_t hits;	   /* takes served from the pool */
	uint64_t misses;   /* takes that had to call the KMS */
	uint64_t refills;  /* keys the refill threads made */
	uint64_t dropped;  /* keys discarded as stale */
};

/*
 * dek_pool_create - a pool of @capacity keys for the volume @volume_uuid,
 * drawing on @kms (which must outlive the pool).  Capacity 0 makes no thread.
 * Returns 0 or -ENOMEM / -errno from pthread_create.
 */
int dek_pool_create(struct kms *kms, const uint8_t volume_uuid[16], unsigned capacity,
		    struct dek_pool **out);

/* dek_pool_destroy - stop the refill threads and wipe every entry. */
void dek_pool_destroy(struct dek_pool *pool);

/*
 * dek_pool_take - a fresh key: file ID, version and blob in *@key, the DEK
 * in @dek.  Returns 0, or the kms_generate() error when the pool was empty
 * and the KMS failed.
 */
int dek_pool_take(struct dek_pool *pool, struct fresh_key *key, uint8_t *dek);

/* dek_pool_note_version - the KMS's current version is @version: drop older entries. */
void dek_pool_note_version(struct dek_pool *pool, uint32_t version);

void dek_pool_get_stats(struct dek_pool *pool, struct dek_pool_stats *stats);

#endif
