// SPDX-License-Identifier: MIT
/* The pool of fresh data keys: see dekpool.h. */
#include "kms/dekpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/random.h"
#include "crypto/secmem.h"

#define BACKOFF_MIN 1
#define BACKOFF_MAX 30
/* Refill threads: a remote KMS call is mostly waiting, so a few in flight
 * keep up with a burst of creates (an untar) that one could not. */
#define REFILL_THREADS 4
/* Keys one refill thread makes in one KMS call, when the KMS wraps in batches. */
#define REFILL_BATCH 16

struct pool_entry {
	struct fresh_key key;
	uint8_t *dek; /* secmem */
};

struct dek_pool {
	struct kms *kms;
	uint8_t volume_uuid[16];
	unsigned capacity;

	pthread_mutex_t lock;
	pthread_cond_t wake; /* the refill thread sleeps here */
	struct pool_entry *entries; /* a stack: [0, count) are ready */
	unsigned count;
	uint32_t newest;     /* newest master-key version seen */
	unsigned in_flight;  /* keys being made by refill threads */
	time_t retry_at;     /* after a KMS failure: no refill before this */
	unsigned backoff;    /* the next failure's wait, seconds */
	time_t last_check;   /* the last version check of a full pool */
	/* Refills make DEKs here and wrap them in batches (the KMS has wrap_many);
	 * cleared for good if the KMS refuses to wrap (a Vault token allowed
	 * datakey but not encrypt), refills then ask the KMS for each key. */
	bool wrap_batches;
	bool stop;
	unsigned n_threads;
	pthread_t threads[REFILL_THREADS];
	struct dek_pool_stats stats;
};

/* make_key - a new file ID and its DEK and blob straight from the KMS. */
static int make_key(struct dek_pool *pool, struct fresh_key *key, uint8_t *dek)
{
	struct kms_context ctx;
	int ret;

	ret = crypto_random(key->file_id, sizeof(key->file_id));
	if (ret < 0)
		return ret;
	memcpy(ctx.volume_uuid, pool->volume_uuid, sizeof(ctx.volume_uuid));
	memcpy(ctx.file_id, key->file_id, sizeof(ctx.file_id));
	return kms_generate(pool->kms, &ctx, dek, key->blob, sizeof(key->blob), &key->blob_len,
			    &key->version);
}

static void wipe_entry(struct pool_entry *e)
{
	secmem_free(e->dek, KMS_DEK_LEN);
	e->dek = NULL;
	secmem_wipe(&e->key, sizeof(e->key));
}

/*
 * make_batch - up to @n new keys in @out: file IDs and DEKs from our CSPRNG,
 * wrapped by the KMS in one batch.  Returns how many keys were made (the
 * first @return entries of @out, the others wiped), or the first error when
 * none was.
 */
static int make_batch(struct dek_pool *pool, struct pool_entry *out, size_t n)
{
	struct kms_context ctx[REFILL_BATCH];
	struct kms_wrap_item items[REFILL_BATCH];
	size_t i, j, made = 0;
	int ret;

	for (i = 0; i < n; i++) {
		out[i].dek = secmem_alloc(KMS_DEK_LEN);
		ret = out[i].dek ? crypto_random(out[i].dek, KMS_DEK_LEN) : -ENOMEM;
		if (ret == 0)
			ret = crypto_random(out[i].key.file_id, sizeof(out[i].key.file_id));
		if (ret < 0) {
			for (j = 0; j <= i; j++)
				wipe_entry(&out[j]);
			return ret;
		}
		memcpy(ctx[i].volume_uuid, pool->volume_uuid, sizeof(ctx[i].volume_uuid));
		memcpy(ctx[i].file_id, out[i].key.file_id, sizeof(ctx[i].file_id));
		items[i] = (struct kms_wrap_item){
			.ctx = &ctx[i], .dek = out[i].dek, .blob = out[i].key.blob,
			.blob_cap = sizeof(out[i].key.blob),
		};
	}
	ret = kms_wrap_many(pool->kms, items, n);
	for (i = 0; i < n; i++) {
		if (items[i].rc < 0) {
			wipe_entry(&out[i]);
			continue;
		}
		out[i].key.blob_len = items[i].blob_len;
		out[i].key.version = items[i].version;
		/* The made keys move to the front. */
		if (made != i) {
			out[made] = out[i];
			memset(&out[i], 0, sizeof(out[i]));
		}
		made++;
	}
	return made > 0 ? (int)made : ret;
}

/* drop_older - discard entries below @version.  Lock held. */
static void drop_older(struct dek_pool *pool, uint32_t version)
{
	unsigned i, kept = 0;

	if (version <= pool->newest)
		return;
	pool->newest = version;
	for (i = 0; i < pool->count; i++) {
		if (pool->entries[i].key.version >= version) {
			pool->entries[kept++] = pool->entries[i];
			continue;
		}
		wipe_entry(&pool->entries[i]);
		pool->stats.dropped++;
	}
	pool->count = kept;
	if (kept < pool->capacity)
		pthread_cond_broadcast(&pool->wake);
}

/*
 * wants_refill - whether the pool, counting the keys being made, is short
 * enough for a refill: by one key, or when the KMS wraps in batches by a
 * whole batch (or the whole pool, if smaller), so that a burst of creates
 * costs one KMS call per REFILL_BATCH keys and not one per key taken.
 * Lock held.
 */
static bool wants_refill(const struct dek_pool *pool)
{
	unsigned step = pool->wrap_batches ? REFILL_BATCH : 1;

	if (step > pool->capacity)
		step = pool->capacity;
	return pool->count + pool->in_flight + step <= pool->capacity;
}

/*
 * wait_a_while - sleep up to @seconds, lock held.  @until_short: return early
 * when the pool, with the keys in flight, is short enough for a refill;
 * otherwise only stop ends the wait early, so a failing KMS sees at most one
 * refill attempt per back-off period however many files are being created.
 */
static void wait_a_while(struct dek_pool *pool, time_t seconds, bool until_short)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += seconds;
	while (!pool->stop && !(until_short && wants_refill(pool)))
		if (pthread_cond_timedwait(&pool->wake, &pool->lock, &deadline) == ETIMEDOUT)
			break;
}

/*
 * refill - a background thread: make keys while the pool (counting the keys
 * being made) is short, with the lock dropped around each KMS call, so takes
 * never wait for the KMS: up to REFILL_BATCH keys in one call when the KMS
 * wraps in batches, else one.  The threads share one back-off, so a failing KMS
 * sees one attempt per period, and one version check every
 * DEK_POOL_VERSION_CHECK seconds while the pool is full.
 */
static void *refill(void *arg)
{
	struct dek_pool *pool = arg;
	struct pool_entry fresh[REFILL_BATCH];
	uint32_t current;
	unsigned n, i;
	time_t now;
	bool batch;
	int ret;

	pthread_mutex_lock(&pool->lock);
	while (!pool->stop) {
		now = time(NULL);
		if (now < pool->retry_at) {
			wait_a_while(pool, pool->retry_at - now, false);
			continue;
		}
		if (!wants_refill(pool)) {
			wait_a_while(pool, DEK_POOL_VERSION_CHECK, true);
			now = time(NULL);
			if (pool->stop || wants_refill(pool) ||
			    now - pool->last_check < DEK_POOL_VERSION_CHECK)
				continue;
			pool->last_check = now;
			pthread_mutex_unlock(&pool->lock);
			ret = kms_current_version(pool->kms, &current);
			pthread_mutex_lock(&pool->lock);
			if (ret == 0)
				drop_older(pool, current);
			continue;
		}
		batch = pool->wrap_batches;
		n = pool->capacity - pool->count - pool->in_flight;
		n = !batch ? 1 : n < REFILL_BATCH ? n : REFILL_BATCH;
		pool->in_flight += n;
		pthread_mutex_unlock(&pool->lock);
		memset(fresh, 0, n * sizeof(*fresh));
		if (batch) {
			ret = make_batch(pool, fresh, n);
		} else {
			fresh[0].dek = secmem_alloc(KMS_DEK_LEN);
			ret = fresh[0].dek ? make_key(pool, &fresh[0].key, fresh[0].dek) : -ENOMEM;
			if (ret < 0)
				wipe_entry(&fresh[0]);
			else
				ret = 1;
		}
		pthread_mutex_lock(&pool->lock);
		pool->in_flight -= n;
		if (batch && (ret == -EACCES || ret == -EOPNOTSUPP)) {
			pool->wrap_batches = false;
			continue;
		}
		if (ret < 0) {
			pool->retry_at = time(NULL) + pool->backoff;
			pool->backoff = pool->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : pool->backoff * 2;
			continue;
		}
		pool->backoff = BACKOFF_MIN;
		for (i = 0; i < (unsigned)ret; i++) {
			drop_older(pool, fresh[i].key.version);
			if (pool->count < pool->capacity && fresh[i].key.version >= pool->newest) {
				pool->entries[pool->count++] = fresh[i];
				pool->stats.refills++;
			} else {
				wipe_entry(&fresh[i]);
			}
		}
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

int dek_pool_create(struct kms *kms, const uint8_t volume_uuid[16], unsigned capacity,
		    struct dek_pool **out)
{
	struct dek_pool *pool = calloc(1, sizeof(*pool));
	int ret;

	if (!pool)
		return -ENOMEM;
	pool->kms = kms;
	memcpy(pool->volume_uuid, volume_uuid, sizeof(pool->volume_uuid));
	pool->capacity = capacity;
	pool->backoff = BACKOFF_MIN;
	pool->last_check = time(NULL);
	pool->wrap_batches = kms->ops->wrap_many != NULL;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->wake, NULL);
	if (capacity > 0) {
		pool->entries = calloc(capacity, sizeof(*pool->entries));
		if (!pool->entries) {
			dek_pool_destroy(pool);
			return -ENOMEM;
		}
		for (unsigned i = 0; i < REFILL_THREADS; i++) {
			ret = pthread_create(&pool->threads[i], NULL, refill, pool);
			if (ret != 0) {
				dek_pool_destroy(pool);
				return -ret;
			}
			pool->n_threads++;
		}
	}
	*out = pool;
	return 0;
}

void dek_pool_destroy(struct dek_pool *pool)
{
	unsigned i;

	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stop = true;
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	for (i = 0; i < pool->n_threads; i++)
		pthread_join(pool->threads[i], NULL);
	for (i = 0; i < pool->count; i++)
		wipe_entry(&pool->entries[i]);
	free(pool->entries);
	pthread_cond_destroy(&pool->wake);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}

int dek_pool_take(struct dek_pool *pool, struct fresh_key *key, uint8_t *dek)
{
	struct pool_entry e;
	int ret;

	pthread_mutex_lock(&pool->lock);
	if (pool->count > 0) {
		e = pool->entries[--pool->count];
		pool->stats.hits++;
		pthread_cond_broadcast(&pool->wake);
		pthread_mutex_unlock(&pool->lock);
		*key = e.key;
		memcpy(dek, e.dek, KMS_DEK_LEN);
		wipe_entry(&e);
		return 0;
	}
	pool->stats.misses++;
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);

	ret = make_key(pool, key, dek);
	if (ret == 0) {
		pthread_mutex_lock(&pool->lock);
		drop_older(pool, key->version);
		pthread_mutex_unlock(&pool->lock);
	}
	return ret;
}

void dek_pool_note_version(struct dek_pool *pool, uint32_t version)
{
	pthread_mutex_lock(&pool->lock);
	drop_older(pool, version);
	pthread_mutex_unlock(&pool->lock);
}

void dek_pool_get_stats(struct dek_pool *pool, struct dek_pool_stats *stats)
{
	pthread_mutex_lock(&pool->lock);
	*stats = pool->stats;
	stats->entries = pool->count;
	stats->capacity = pool->capacity;
	pthread_mutex_unlock(&pool->lock);
}
