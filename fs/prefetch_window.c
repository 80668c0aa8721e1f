// SPDX-License-Identifier: MIT
/* The prefetch window: see prefetch_window.h. */
#include "prefetch_window.h"

#include <errno.h>
#include <stdlib.h>

static unsigned bucket_of(const struct window *w, dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 32)) * 0x9E3779B97F4A7C15ull;

	return (unsigned)(h >> 32) & (w->n_buckets - 1);
}

int window_init(struct window *w, unsigned capacity)
{
	unsigned i;

	*w = (struct window){ .capacity = capacity, .n_buckets = 1 };
	while (w->n_buckets < capacity)
		w->n_buckets <<= 1;
	w->pool = calloc(capacity, sizeof(*w->pool));
	w->buckets = calloc(w->n_buckets, sizeof(*w->buckets));
	if (!w->pool || !w->buckets) {
		window_fini(w);
		return -ENOMEM;
	}
	for (i = capacity; i-- > 0;) {
		w->pool[i].next = w->free_list;
		w->free_list = &w->pool[i];
	}
	w->ready.prev = w->ready.next = &w->ready;
	return 0;
}

void window_fini(struct window *w)
{
	free(w->pool);
	free(w->buckets);
	w->pool = NULL;
	w->buckets = NULL;
}

unsigned window_room(const struct window *w)
{
	return w->capacity - w->used - w->reserved;
}

struct window_entry *window_find(const struct window *w, dev_t dev, ino_t ino)
{
	struct window_entry *e = w->buckets[bucket_of(w, dev, ino)];

	while (e && (e->dev != dev || e->ino != ino))
		e = e->hash_next;
	return e;
}

struct window_entry *window_claim(struct window *w, dev_t dev, ino_t ino)
{
	struct window_entry *e;
	unsigned b;

	if (window_find(w, dev, ino))
		return NULL;
	/* Reserved room guarantees a free entry. */
	e = w->free_list;
	w->free_list = e->next;
	w->reserved--;
	w->used++;
	b = bucket_of(w, dev, ino);
	*e = (struct window_entry){ .dev = dev, .ino = ino, .state = WINDOW_IN_FLIGHT,
				    .hash_next = w->buckets[b] };
	w->buckets[b] = e;
	return e;
}

void window_ready(struct window *w, struct window_entry *e, int64_t now_ms)
{
	e->state = WINDOW_READY;
	e->ready_ms = now_ms;
	e->prev = w->ready.prev;
	e->next = &w->ready;
	w->ready.prev->next = e;
	w->ready.prev = e;
}

void window_free(struct window *w, struct window_entry *e)
{
	struct window_entry **pp = &w->buckets[bucket_of(w, e->dev, e->ino)];

	while (*pp != e)
		pp = &(*pp)->hash_next;
	*pp = e->hash_next;
	if (e->state == WINDOW_READY) {
		e->prev->next = e->next;
		e->next->prev = e->prev;
	}
	e->state = WINDOW_FREE;
	e->next = w->free_list;
	w->free_list = e;
	w->used--;
}

struct window_entry *window_oldest_ready(const struct window *w)
{
	return w->ready.next != &w->ready ? w->ready.next : NULL;
}
