// SPDX-License-Identifier: MIT
/*
 * envelopefsctl fsck: hard links (ctl_fsck.h).  Every name of a file is
 * walked (its name and binding are the directory's), but its content is
 * checked once, under the first of its plaintext paths in strcmp order, as
 * a report must name one path and the same one on every run.
 *
 * Only files with st_nlink > 1 enter the table, so what it costs is per
 * hard-linked file, not per file: a slot (32 bytes, the table at most half
 * full) for good, and the first path's item until the last name is walked.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ctl_fsck.h"

/* slot_hash - spread inode numbers handed out in sequence (murmur3's 64-bit finalizer). */
static size_t slot_hash(dev_t dev, ino_t ino)
{
	uint64_t x = (uint64_t)ino ^ ((uint64_t)dev << 32);

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return (size_t)x;
}

/* find - the slot of (@dev, @ino), or the free one where it goes; @l->cap > 0. */
static struct fsck_link_slot *find(const struct fsck_links *l, dev_t dev, ino_t ino)
{
	size_t i = slot_hash(dev, ino) & (l->cap - 1);

	while (l->slot[i].ino && (l->slot[i].ino != ino || l->slot[i].dev != dev))
		i = (i + 1) & (l->cap - 1);
	return &l->slot[i];
}

/* grow - double the table (1,024 slots first), moving every slot.  0 or -ENOMEM. */
static int grow(struct fsck_links *l)
{
	size_t cap = l->cap ? 2 * l->cap : 1024;
	struct fsck_links bigger = { .slot = calloc(cap, sizeof(*bigger.slot)), .cap = cap,
				     .used = l->used };

	if (!bigger.slot)
		return -ENOMEM;
	for (size_t i = 0; i < l->cap; i++)
		if (l->slot[i].ino)
			*find(&bigger, l->slot[i].dev, l->slot[i].ino) = l->slot[i];
	free(l->slot);
	*l = bigger;
	return 0;
}

void fsck_links_walked(struct fsck *f, struct fsck_item *it)
{
	struct fsck_links *l = &f->links;
	struct fsck_link_slot *s;
	nlink_t nlink = it->nlink; /* @it may be freed below */

	if (it->ino == 0 || ((l->used + 1) * 2 > l->cap && grow(l) < 0)) {
		/* No room to remember it (or no inode number to key it): checked under
		 * this name, perhaps once per name, which costs time, not truth. */
		fsck_check(f, it);
		return;
	}
	s = find(l, it->dev, it->ino);
	if (!s->ino) {
		*s = (struct fsck_link_slot){ .dev = it->dev, .ino = it->ino };
		l->used++;
	}
	s->seen++;
	if (s->seen > 1 && !s->first) {
		free(it); /* another name of a file handed over already */
		return;
	}
	if (s->first && strcmp(s->first->path, it->path) <= 0) {
		free(it);
	} else {
		free(s->first);
		s->first = it;
	}
	if (s->seen >= nlink) { /* every name walked: the first path is known */
		fsck_check(f, s->first);
		s->first = NULL;
	}
}

void fsck_links_flush(struct fsck *f)
{
	for (size_t i = 0; i < f->links.cap; i++) {
		if (f->links.slot[i].first) {
			fsck_check(f, f->links.slot[i].first);
			f->links.slot[i].first = NULL;
		}
	}
}

void fsck_links_free(struct fsck_links *l)
{
	for (size_t i = 0; i < l->cap; i++)
		free(l->slot[i].first);
	free(l->slot);
	l->slot = NULL;
	l->cap = l->used = 0;
}
