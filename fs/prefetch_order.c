// SPDX-License-Identifier: MIT
/* Follow the reader's order through a listing read ahead: see prefetch_order.h. */
#include "prefetch_order.h"

void read_order_init(struct read_order *o, bool inode_order)
{
	*o = (struct read_order){ .inode_order = inode_order, .votes = inode_order ? 1 : 0 };
}

bool read_order_opened(struct read_order *o, size_t dir_k, size_t ino_k)
{
	const bool was = o->inode_order;
	size_t k;

	if (o->seen_open && (dir_k > o->last_dir_k) != (ino_k > o->last_ino_k)) {
		o->votes += ino_k > o->last_ino_k ? 1 : -1;
		if (o->votes > READ_ORDER_VOTES)
			o->votes = READ_ORDER_VOTES;
		if (o->votes < -READ_ORDER_VOTES)
			o->votes = -READ_ORDER_VOTES;
		o->inode_order = o->votes > 0;
		o->voted = true;
	}
	o->seen_open = true;
	o->last_dir_k = dir_k;
	o->last_ino_k = ino_k;
	k = o->inode_order ? ino_k : dir_k;
	/* Past the reader's file: it went by those before it in its order.  In
	 * an order nobody voted for yet that is a guess, and a wrong one would
	 * skip files the reader still opens (the invariant in the header). */
	if (was != o->inode_order || (o->voted && o->pos <= k))
		o->pos = k + 1;
	return was != o->inode_order;
}
