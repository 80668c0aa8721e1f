// SPDX-License-Identifier: MIT
/* Batches as parallel single calls (kms/fanout.h). */

#include "kms/fanout.h"

#include <pthread.h>
#include <stdbool.h>

struct fanout {
	struct kms *kms;
	struct kms_unwrap_item *unwrap; /* one of these two is set */
	struct kms_wrap_item *wrap;
	size_t n;
	size_t next; /* the next item to take (atomic) */
};

/* worker - take items until none is left: each item is done by exactly one thread. */
static void *worker(void *arg)
{
	struct fanout *f = arg;
	const struct kms_ops *ops = f->kms->ops;
	size_t i;

	while ((i = __atomic_fetch_add(&f->next, 1, __ATOMIC_RELAXED)) < f->n) {
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

static void run(struct fanout *f)
{
	pthread_t threads[FANOUT_THREADS - 1];
	bool started[FANOUT_THREADS - 1] = { false };
	size_t i, extra = f->n < FANOUT_THREADS ? f->n - 1 : FANOUT_THREADS - 1;

	for (i = 0; i < extra; i++)
		started[i] = pthread_create(&threads[i], NULL, worker, f) == 0;
	worker(f);
	for (i = 0; i < extra; i++)
		if (started[i])
			pthread_join(threads[i], NULL);
}

void fanout_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n)
{
	struct fanout f = { .kms = kms, .unwrap = items, .n = n };

	if (n)
		run(&f);
}

void fanout_wrap_many(struct kms *kms, struct kms_wrap_item *items, size_t n)
{
	struct fanout f = { .kms = kms, .wrap = items, .n = n };

	if (n)
		run(&f);
}
