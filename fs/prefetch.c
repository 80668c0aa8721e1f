// SPDX-License-Identifier: MIT
/* Unwrap the DEKs of listed files ahead, in batches: see prefetch.h. */
#include "prefetch.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/secmem.h"
#include "envfs.h"
#include "filekey.h"

/* Files per kms_unwrap_many call: one Transit batch request. */
#define PREFETCH_BATCH 64
/* Workers: while one waits for the KMS, another reads the next records. */
#define PREFETCH_WORKERS 2

/* One file of a batch: its record (read under its held key lock) and KMS context. */
struct pending {
	struct inode *in;
	struct key_record rec;
	struct kms_context ctx;
};

/* A worker and its buffers, allocated once. */
struct worker {
	struct prefetch *p;
	pthread_t thread;
	struct inode *inodes[PREFETCH_BATCH];
	struct pending *pend;		/* PREFETCH_BATCH */
	struct kms_unwrap_item items[PREFETCH_BATCH];
	uint8_t *deks;			/* PREFETCH_BATCH DEKs, secmem */
};

struct prefetch {
	struct envfs *fs;

	pthread_mutex_t lock; /* guards everything below */
	pthread_cond_t wake;  /* the queue has work, or stop */
	struct inode **ring;  /* queued inodes, each holding one reference */
	unsigned capacity, head, count;
	bool stop;
	struct prefetch_stats stats;

	unsigned n_workers; /* started */
	struct worker workers[PREFETCH_WORKERS];
};

/*
 * run_batch - prefetch @n queued inodes through @kms (the current provider
 * of the set the worker holds): prepare each (key lock taken when worth it),
 * unwrap the prepared ones in one KMS call, cache the good DEKs, and
 * release the key locks and the queue's references.  Records still under a
 * previous provider (mid-migration) are skipped: their opens unwrap them.
 */
static void run_batch(struct worker *w, struct kms *kms, unsigned n)
{
	struct prefetch *p = w->p;
	struct envfs *fs = p->fs;
	struct inode **inodes = w->inodes;
	struct pending *pend = w->pend;
	struct kms_unwrap_item *items = w->items;
	uint8_t *deks = w->deks;
	unsigned i, k = 0, unwrapped = 0, failed = 0;

	for (i = 0; i < n; i++) {
		struct pending *pe = &pend[k];

		if (filekey_prefetch_prepare(fs, kms, inodes[i], &pe->rec) < 0)
			continue;
		pe->in = inodes[i];
		memcpy(pe->ctx.volume_uuid, fs->cfg.uuid, sizeof(pe->ctx.volume_uuid));
		memcpy(pe->ctx.file_id, pe->rec.file_id, sizeof(pe->ctx.file_id));
		items[k] = (struct kms_unwrap_item){
			.ctx = &pe->ctx, .blob = pe->rec.wrapped, .blob_len = pe->rec.wrapped_len,
			.dek = deks + (size_t)k * KMS_DEK_LEN,
		};
		k++;
	}
	if (k > 0)
		kms_unwrap_many(kms, items, k);
	for (i = 0; i < k; i++) {
		if (filekey_prefetch_finish(fs, pend[i].in, &pend[i].rec, items[i].dek,
					    items[i].rc) == 0)
			unwrapped++;
		else
			failed++;
	}
	secmem_wipe(deks, (size_t)k * KMS_DEK_LEN);
	for (i = 0; i < n; i++)
		inode_forget(fs->inodes, inodes[i], 1);
	pthread_mutex_lock(&p->lock);
	p->stats.batches += k > 0;
	p->stats.unwrapped += unwrapped;
	p->stats.failed += failed;
	p->stats.skipped += n - k;
	pthread_mutex_unlock(&p->lock);
}

/*
 * A worker holds the volume's KMS set (kmsset.h) for one batch only, never
 * while idle, so a provider reload waits at most one KMS call for it.
 */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct prefetch *p = w->p;
	const struct kms_set *set;
	unsigned n, batch;

	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		if (p->count == 0) {
			pthread_cond_wait(&p->wake, &p->lock);
			continue;
		}
		pthread_mutex_unlock(&p->lock);
		set = kms_keeper_get(p->fs->keys);
		/* PREFETCH_BATCH files when the KMS unwraps many in one round trip,
		 * else 1: a worker holds one file's key lock across one KMS call,
		 * never a row of them across a row of calls. */
		batch = set->keys.current->ops->unwrap_many ? PREFETCH_BATCH : 1;
		pthread_mutex_lock(&p->lock);
		for (n = 0; n < batch && p->count > 0; n++) {
			w->inodes[n] = p->ring[p->head];
			p->head = (p->head + 1) % p->capacity;
			p->count--;
		}
		pthread_mutex_unlock(&p->lock);
		if (n > 0)
			run_batch(w, set->keys.current, n);
		kms_keeper_put(p->fs->keys, set);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int prefetch_create(struct envfs *fs, unsigned capacity, struct prefetch **out)
{
	struct prefetch *p = calloc(1, sizeof(*p));
	unsigned i;
	int ret = -ENOMEM;

	if (!p)
		return -ENOMEM;
	p->fs = fs;
	p->capacity = capacity;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	p->ring = capacity ? calloc(capacity, sizeof(*p->ring)) : NULL;
	for (i = 0; i < PREFETCH_WORKERS && p->ring; i++) {
		struct worker *w = &p->workers[i];

		w->p = p;
		w->pend = calloc(PREFETCH_BATCH, sizeof(*w->pend));
		w->deks = secmem_alloc((size_t)PREFETCH_BATCH * KMS_DEK_LEN);
		if (!w->pend || !w->deks)
			break;
	}
	if (i == PREFETCH_WORKERS) {
		for (ret = 0; p->n_workers < PREFETCH_WORKERS && ret == 0; p->n_workers++) {
			ret = -pthread_create(&p->workers[p->n_workers].thread, NULL, worker_main,
					      &p->workers[p->n_workers]);
			if (ret < 0)
				break;
		}
	}
	if (ret < 0) {
		prefetch_destroy(p);
		return ret;
	}
	*out = p;
	return 0;
}

void prefetch_destroy(struct prefetch *p)
{
	unsigned i;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->n_workers; i++)
		pthread_join(p->workers[i].thread, NULL);
	for (i = 0; i < PREFETCH_WORKERS; i++) {
		free(p->workers[i].pend);
		secmem_free(p->workers[i].deks, (size_t)PREFETCH_BATCH * KMS_DEK_LEN);
	}
	for (; p->count > 0; p->count--, p->head = (p->head + 1) % p->capacity)
		inode_forget(p->fs->inodes, p->ring[p->head], 1);
	free(p->ring);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void prefetch_file(struct prefetch *p, struct inode *in)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->count == p->capacity) {
		p->stats.overflow++;
		pthread_mutex_unlock(&p->lock);
		return;
	}
	/* The queue's own reference keeps the inode alive until a worker is
	 * done.  The caller holds a reference too. */
	inode_ref(p->fs->inodes, in);
	p->ring[(p->head + p->count) % p->capacity] = in;
	p->count++;
	p->stats.queued++;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
}

void prefetch_get_stats(struct prefetch *p, struct prefetch_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	*out = p->stats;
	pthread_mutex_unlock(&p->lock);
}
