/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_PREFETCH_WINDOW_H
#define ENVELOPEFS_FS_PREFETCH_WINDOW_H

/*
 * The prefetch window (prefetch.h): the files whose DEKs a batch is
 * unwrapping (in flight) or has cached and nobody has opened yet (ready),
 * keyed by backing (dev, ino), in a fixed pool of entries.
 *
 * Invariants:
 *  - used + reserved <= capacity: a worker reserves room before it reads
 *    a directory, so every file it takes finds a free entry.
 *  - An entry is in the hash while it is not free; a ready entry is also
 *    on the ready list, oldest first, for expiry.
 *  - An in-flight or done entry with waiters is freed by its last waiter,
 *    never by the batch or by expiry.
 * Not locked: the caller (prefetch.c) holds its lock around every call.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum window_state {
	WINDOW_FREE,
	WINDOW_IN_FLIGHT, /* a batch is unwrapping its DEK */
	WINDOW_READY,	  /* cached by a batch, not opened yet */
	WINDOW_DONE,	  /* the batch ended; waiters still to read rc */
};

struct window_entry {
	dev_t dev;
	ino_t ino;
	enum window_state state;
	bool opened;	 /* opened while in flight: not ready afterwards */
	unsigned waiters; /* opens waiting for its batch */
	int rc;		 /* the batch's result, once not in flight */
	unsigned dir_slot, dir_gen; /* the directory it was read from (prefetch.c) */
	int64_t ready_ms; /* when it became ready */
	struct window_entry *hash_next;
	struct window_entry *prev, *next; /* ready list, or free list (next only) */
};

struct window {
	unsigned capacity, used, reserved;
	struct window_entry *pool;
	struct window_entry **buckets;
	unsigned n_buckets; /* a power of two */
	struct window_entry *free_list;
	struct window_entry ready; /* list head: ready.next is the oldest */
};

/* window_init - @capacity entries.  0 or -ENOMEM. */
int window_init(struct window *w, unsigned capacity);
void window_fini(struct window *w);

/* window_room - entries neither used nor reserved. */
unsigned window_room(const struct window *w);

/* window_find - the entry of (@dev, @ino), or NULL. */
struct window_entry *window_find(const struct window *w, dev_t dev, ino_t ino);

/*
 * window_claim - an in-flight entry for (@dev, @ino) out of one reserved
 * unit, or NULL (reservation kept) when the file is in the window already.
 */
struct window_entry *window_claim(struct window *w, dev_t dev, ino_t ino);

/* window_ready - the batch cached @e's DEK at @now_ms and nobody opened it. */
void window_ready(struct window *w, struct window_entry *e, int64_t now_ms);

/* window_free - @e leaves the window. */
void window_free(struct window *w, struct window_entry *e);

/* window_oldest_ready - the ready entry made ready first, or NULL. */
struct window_entry *window_oldest_ready(const struct window *w);


#endif
