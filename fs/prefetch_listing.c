// SPDX-License-Identifier: MIT
/* A big directory's entries in inode-number order: see prefetch_listing.h. */
#include "prefetch_listing.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* grow - room for @want more bytes past @len in *@buf of capacity *@cap (doubling). */
static int grow(void **buf, size_t *cap, size_t len, size_t want, size_t elem)
{
	size_t c = *cap ? *cap : 64;
	void *nb;

	while (c < len + want)
		c *= 2;
	if (c == *cap)
		return 0;
	nb = realloc(*buf, c * elem);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	*cap = c;
	return 0;
}

int listing_add(struct listing *l, uint64_t ino, unsigned char type, const char *name)
{
	size_t len = strlen(name) + 1;

	if (l->n >= LISTING_MAX)
		return -E2BIG;
	if (grow((void **)&l->v, &l->cap, l->n, 1, sizeof(*l->v)) < 0 ||
	    grow((void **)&l->names, &l->names_cap, l->names_len, len, 1) < 0)
		return -ENOMEM;
	memcpy(l->names + l->names_len, name, len);
	/* The arena stays under LISTING_MAX names of at most NAME_MAX + 1 bytes: fits 32 bits. */
	l->v[l->n++] = (struct listing_entry){ .ino = ino, .name = (uint32_t)l->names_len,
					       .type = type };
	l->names_len += len;
	return 0;
}

int listing_read(struct listing *l, DIR *dp)
{
	struct dirent *de;
	int ret = 0;

	errno = 0;
	while (ret == 0 && (de = readdir(dp)))
		ret = listing_add(l, de->d_ino, de->d_type, de->d_name);
	return ret < 0 ? ret : -errno;
}

/* The entries qsort orders by_ino against (qsort takes no context). */
static __thread const struct listing_entry *sorting;

static int by_ino(const void *a, const void *b)
{
	uint64_t x = sorting[*(const uint32_t *)a].ino, y = sorting[*(const uint32_t *)b].ino;

	return (x > y) - (x < y);
}

int listing_index(struct listing *l)
{
	size_t i;

	l->by_ino = malloc((l->n ? l->n : 1) * sizeof(*l->by_ino));
	if (!l->by_ino)
		return -ENOMEM;
	for (i = 0; i < l->n; i++)
		l->by_ino[i] = (uint32_t)i; /* n <= LISTING_MAX */
	sorting = l->v;
	qsort(l->by_ino, l->n, sizeof(*l->by_ino), by_ino);
	sorting = NULL;
	return 0;
}

const struct listing_entry *listing_at(const struct listing *l, size_t k, bool inode_order)
{
	return &l->v[inode_order ? l->by_ino[k] : k];
}

const char *listing_name(const struct listing *l, const struct listing_entry *e)
{
	return l->names + e->name;
}

bool listing_find(const struct listing *l, uint64_t ino, size_t *dir_k, size_t *ino_k)
{
	size_t lo = 0, hi = l->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (l->v[l->by_ino[mid]].ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == l->n || l->v[l->by_ino[lo]].ino != ino)
		return false;
	*ino_k = lo;
	*dir_k = l->by_ino[lo];
	return true;
}

void listing_free(struct listing *l)
{
	free(l->v);
	free(l->by_ino);
	free(l->names);
	*l = (struct listing){ 0 };
}
