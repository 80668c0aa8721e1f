/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_PREFETCH_ORDER_H
#define ENVELOPEFS_FS_PREFETCH_ORDER_H

/*
 * The order a directory is read ahead in from its listing (prefetch.h,
 * prefetch_listing.h), following the reader's opens: the directory's own
 * order or inode-number order, and the position the read ahead takes next.
 *
 * Two opens in a row that go forward in one order and back in the other are
 * a vote for the first; the order goes with the votes.  An open tells
 * nothing when both orders agree on it, and the first open tells nothing at
 * all.
 *
 * Invariant: the read ahead moves past entries it has not taken (a jump to
 * just past the reader's file) only in an order an open has voted for, or
 * when a vote changes the order.  In an order only presumed (the listing's
 * start, or both orders agreeing so far) it goes on entry by entry, so a
 * pass that reaches the listing's end has taken every file that a reader
 * going in one of the two orders still opens.
 *
 * Not locked: the caller (prefetch.c) holds its lock around every call.
 */

#include <stdbool.h>
#include <stddef.h>

/* Opens going one order and not the other that it takes to change it (and the most kept). */
#define READ_ORDER_VOTES 4

struct read_order {
	bool inode_order; /* read ahead in inode-number order, else directory order */
	bool voted;	  /* an open told the two orders apart: jumps are safe */
	int votes;	  /* > 0: inode order */
	bool seen_open;
	size_t last_dir_k, last_ino_k; /* the last opened file's positions */
	size_t pos;	  /* the next position to read ahead, in the order */
};

/* read_order_init - read ahead from the start, presuming inode order or directory order. */
void read_order_init(struct read_order *o, bool inode_order);

/*
 * read_order_opened - the reader opened the entry at @dir_k in directory
 * order and @ino_k in inode order: count its vote, move @o->pos on.  True
 * when the order changed (what was read ahead in the other is of no use).
 */
bool read_order_opened(struct read_order *o, size_t dir_k, size_t ino_k);

#endif
