/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_PREFETCH_LISTING_H
#define ENVELOPEFS_FS_PREFETCH_LISTING_H

/*
 * A big directory's entries in inode-number order, for the prefetch
 * workers (prefetch.h): readers go through a directory of more than 10,000
 * entries by inode number (GNU find's fts sorts such a directory so, and
 * cp -r sorts every directory), so reading it ahead in the directory's own
 * order fills the window with DEKs nobody opens next.
 *
 * A listing holds each entry's inode number, type and name (in one arena),
 * at most LISTING_MAX entries.  Not locked: the one worker reading the
 * directory owns it.
 */

#include <stddef.h>
#include <stdint.h>

/* The most entries a listing takes (16 bytes each plus the name). */
#define LISTING_MAX (1u << 18)

struct listing_entry {
	uint64_t ino;
	uint32_t name; /* offset in the arena */
	unsigned char type; /* d_type */
};

struct listing {
	struct listing_entry *v;
	size_t n, cap, next; /* next: the entry listing_next gives */
	char *names;
	size_t names_len, names_cap;
};

/* listing_add - append an entry.  0, -E2BIG past LISTING_MAX, or -ENOMEM. */
int listing_add(struct listing *l, uint64_t ino, unsigned char type, const char *name);

/* listing_sort - order the entries by inode number, and start over. */
void listing_sort(struct listing *l);

/* listing_next - the next entry and its name in *@name, or NULL at the end. */
const struct listing_entry *listing_next(struct listing *l, const char **name);

/* listing_free - free the entries and names (the struct itself is the caller's). */
void listing_free(struct listing *l);

#endif
