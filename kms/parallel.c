// SPDX-License-Identifier: MIT
/* Parallel single calls as one batch: see kms/parallel.h. */
#include "kms/parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* The most helper threads one batch starts. */
#define PARALLEL_MAX 64

struct run {
	struct kms *kms;
	struct kms_unwrap_item *items;
	size_t n;
	atomic_size_t next; /* the next item nobody took yet */
};

static void *take_items(void *arg)
{
	struct run *r = arg;
	size_t i;

	while ((i = atomic_fetch_add(&r->next, 1)) < r->n) {
		struct kms_unwrap_item *it = &r->items[i];

		it->rc = r->kms->ops->unwrap(r->kms, it->ctx, it->blob, it->blob_len, it->dek);
	}
	return NULL;
}

void kms_unwrap_parallel(struct kms *kms, struct kms_unwrap_item *items, size_t n,
			 unsigned width)
{
	struct run r = { .kms = kms, .items = items, .n = n };
	pthread_t helpers[PARALLEL_MAX];
	size_t want = width > n ? n : width, started = 0;

	if (want > PARALLEL_MAX + 1)
		want = PARALLEL_MAX + 1;
	atomic_init(&r.next, 0);
	while (started + 1 < want && pthread_create(&helpers[started], NULL, take_items, &r) == 0)
		started++;
	take_items(&r);
	while (started > 0)
		pthread_join(helpers[--started], NULL);
}
