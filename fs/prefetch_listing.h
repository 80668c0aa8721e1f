/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_PREFETCH_LISTING_H
#define ENVELOPEFS_FS_PREFETCH_LISTING_H

/*
 * A directory's entries, for the prefetch workers (prefetch.h) and a listing
 * that must not follow the backing's offsets (readdir.c), in both
 * orders its readers go in: the directory's own (tar) and inode-number order
 * (GNU find's fts sorts a directory of more than 10,000 entries so, and
 * cp -r sorts every directory), with the position of any inode number in
 * each, so that the read ahead can follow where and in which order the
 * reader opens files.
 *
 * A listing holds each entry's inode number, type and name (in one arena),
 * at most LISTING_MAX entries.  Once indexed it does not change: a reader
 * needs no lock, only the guarantee that it is not freed meanwhile.
 */

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most entries a listing takes (16 bytes each, 4 more indexed, plus the name). */
#define LISTING_MAX (1u << 18)

struct listing_entry {
	uint64_t ino;
	uint32_t name; /* offset in the arena */
	unsigned char type; /* d_type */
};

struct listing {
	struct listing_entry *v; /* directory order */
	size_t n, cap;
	uint32_t *by_ino; /* indexes into v, by inode number (listing_index) */
	char *names;
	size_t names_len, names_cap;
};

/* listing_add - append an entry.  0, -E2BIG past LISTING_MAX, or -ENOMEM. */
int listing_add(struct listing *l, uint64_t ino, unsigned char type, const char *name);

/*
 * listing_read - add every entry @dp has from its position on ("." and ".."
 * included).  0, or the first error: listing_add's, or readdir's -errno.
 */
int listing_read(struct listing *l, DIR *dp);

/* listing_index - sort the entries by inode number, once all are added.  0 or -ENOMEM. */
int listing_index(struct listing *l);

/* listing_at - the entry at position @k (< n) in inode order, or in directory order. */
const struct listing_entry *listing_at(const struct listing *l, size_t k, bool inode_order);

/* listing_name - the name of @e. */
const char *listing_name(const struct listing *l, const struct listing_entry *e);

/*
 * listing_find - the positions of the entry of inode @ino in directory order
 * (*@dir_k) and in inode order (*@ino_k); false when it has none.
 */
bool listing_find(const struct listing *l, uint64_t ino, size_t *dir_k, size_t *ino_k);

/* listing_free - free the entries, index and names (the struct itself is the caller's). */
void listing_free(struct listing *l);

#endif
