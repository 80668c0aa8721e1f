// SPDX-License-Identifier: MIT
/* A big directory's entries in inode-number order: see prefetch_listing.h. */
#include "prefetch_listing.h"

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

static int by_ino(const void *a, const void *b)
{
	const struct listing_entry *x = a, *y = b;

	return (x->ino > y->ino) - (x->ino < y->ino);
}

void listing_sort(struct listing *l)
{
	if (l->n > 1)
		qsort(l->v, l->n, sizeof(*l->v), by_ino);
	l->next = 0;
}

const struct listing_entry *listing_next(struct listing *l, const char **name)
{
	const struct listing_entry *e;

	if (l->next >= l->n)
		return NULL;
	e = &l->v[l->next++];
	*name = l->names + e->name;
	return e;
}

void listing_free(struct listing *l)
{
	free(l->v);
	free(l->names);
	*l = (struct listing){ 0 };
}
