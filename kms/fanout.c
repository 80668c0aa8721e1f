// SPDX-License-Identifier: MIT
/* Batches as parallel single calls (kms/fanout.h). */

#include "kms/fanout.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct fanout {
	struct kms *kms;
	struct kms_unwrap_item *unwrap; /* one of these two is set */
	struct kms_wrap_item *wrap;
	size_t n;
	atomic_size_t next; /* the next item nobody took yet */
};

/* worker - take items until none is left: each item is done by exactly one thread. */
static void *worker(void *arg)
{
	struct fanout *f = arg;
	const struct kms_ops *ops = f->kms->ops;
	size_t i;

	while ((i = atomic_fetch_add(&f->next, 1)) < f->n) {
		if (f->unwrap) {
			struct kms_unwrap_item *it = &f->unwrap[i];

			it->rc = ops->unwrap(f->kms, it->ctx, it->blob, it->blob_len, it->dek);
		} else {
			struct kms_wrap_item *it = &f->wrap[i];

			it->rc = ops->wrap(f->kms, it->ctx, it->dek, it->blob, it->blob_cap,
					   &it->blob_len, &it->version);
		}
	}
	return NULL;
}

static void run(struct fanout *f, unsigned width)
{
	pthread_t threads[FANOUT_MAX - 1];
	size_t want = width < f->n ? width : f->n, started = 0;

	if (want > FANOUT_MAX)
		want = FANOUT_MAX;
	atomic_init(&f->next, 0);
	while (started + 1 < want && pthread_create(&threads[started], NULL, worker, f) == 0)
		started++;
	worker(f);
	while (started > 0)
		pthread_join(threads[--started], NULL);
}

void fanout_unwrap(struct kms *kms, struct kms_unwrap_item *items, size_t n, unsigned width)
{
	struct fanout f = { .kms = kms, .unwrap = items, .n = n };

	if (n)
		run(&f, width);
}

void fanout_wrap(struct kms *kms, struct kms_wrap_item *items, size_t n, unsigned width)
{
	struct fanout f = { .kms = kms, .wrap = items, .n = n };

	if (n)
		run(&f, width);
}

void fanout_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n)
{
	fanout_unwrap(kms, items, n, FANOUT_THREADS);
}

void fanout_wrap_many(struct kms *kms, struct kms_wrap_item *items, size_t n)
{
	fanout_wrap(kms, items, n, FANOUT_THREADS);
}
