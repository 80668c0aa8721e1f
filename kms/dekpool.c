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
 * wait_a_while - sleep up to @seconds, lock held.  @until_short: return early
 * when the pool, with the keys in flight, falls below capacity (a take);
 * otherwise only stop ends the wait early, so a failing KMS sees at most one
 * refill attempt per back-off period however many files are being created.
 */
static void wait_a_while(struct dek_pool *pool, time_t seconds, bool until_short)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += seconds;
	while (!pool->stop && !(until_short && pool->count + pool->in_flight < pool->capacity))
		if (pthread_cond_timedwait(&pool->wake, &pool->lock, &deadline) == ETIMEDOUT)
			break;
}

/*
 * refill - a background thread: make keys while the pool (counting the keys
 * being made) is short, with the lock dropped around each KMS call, so takes
 * never wait for the KMS.  The threads share one back-off, so a failing KMS
 * sees one attempt per period, and one version check every
 * DEK_POOL_VERSION_CHECK seconds while the pool is full.
 */
static void *refill(void *arg)
{
	struct dek_pool *pool = arg;
	struct pool_entry fresh;
	uint32_t current;
	time_t now;
	int ret;

	pthread_mutex_lock(&pool->lock);
	while (!pool->stop) {
		now = time(NULL);
		if (now < pool->retry_at) {
			wait_a_while(pool, pool->retry_at - now, false);
			continue;
		}
		if (pool->count + pool->in_flight >= pool->capacity) {
			wait_a_while(pool, DEK_POOL_VERSION_CHECK, true);
			now = time(NULL);
			if (pool->stop || pool->count + pool->in_flight < pool->capacity ||
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
		pool->in_flight++;
		pthread_mutex_unlock(&pool->lock);
		fresh.dek = secmem_alloc(KMS_DEK_LEN);
		ret = fresh.dek ? make_key(pool, &fresh.key, fresh.dek) : -ENOMEM;
		pthread_mutex_lock(&pool->lock);
		pool->in_flight--;
		if (ret < 0) {
			secmem_free(fresh.dek, KMS_DEK_LEN);
			pool->retry_at = time(NULL) + pool->backoff;
			pool->backoff = pool->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : pool->backoff * 2;
			continue;
		}
		pool->backoff = BACKOFF_MIN;
		drop_older(pool, fresh.key.version);
		if (pool->count < pool->capacity && fresh.key.version >= pool->newest) {
			pool->entries[pool->count++] = fresh;
			pool->stats.refills++;
		} else {
			wipe_entry(&fresh);
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
