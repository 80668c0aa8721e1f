// SPDX-License-Identifier: MIT
/* Unit tests for fs/prefetch_listing.c: a big directory's entries in inode-number order. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "fs/prefetch_listing.h"

/* Entries come back by inode number, each with its own name and type, once each. */
static void test_sorted_by_inode(void)
{
	struct listing l = { 0 };
	const uint64_t inos[] = { 907, 12, 5000000000ull, 13, 400, 1 };
	const uint64_t sorted[] = { 1, 12, 13, 400, 907, 5000000000ull };
	const struct listing_entry *e;
	const char *name;
	char want[32];
	unsigned i;

	for (i = 0; i < sizeof(inos) / sizeof(inos[0]); i++) {
		snprintf(want, sizeof(want), "name-%llu", (unsigned long long)inos[i]);
		REQUIRE(listing_add(&l, inos[i], inos[i] == 13 ? DT_DIR : DT_REG, want) == 0);
	}
	listing_sort(&l);
	for (i = 0; (e = listing_next(&l, &name)); i++) {
		REQUIRE(i < sizeof(sorted) / sizeof(sorted[0]));
		CHECK(e->ino == sorted[i]);
		snprintf(want, sizeof(want), "name-%llu", (unsigned long long)sorted[i]);
		CHECK(strcmp(name, want) == 0);
		CHECK_EQ_INT(e->type, sorted[i] == 13 ? DT_DIR : DT_REG);
	}
	CHECK_EQ_INT(i, 6);
	CHECK(listing_next(&l, &name) == NULL);
	listing_free(&l);
	CHECK(l.n == 0 && l.v == NULL && l.names == NULL);
}

/* Past LISTING_MAX entries a listing refuses more (the directory stays in its own order). */
static void test_bounded(void)
{
	struct listing l = { 0 };
	const struct listing_entry *e;
	const char *name;
	uint64_t last = 0;
	size_t i, n = 0;

	for (i = 0; i < LISTING_MAX; i++)
		REQUIRE(listing_add(&l, (i * 7919) % LISTING_MAX, DT_REG, "a-name-of-some-length") == 0);
	CHECK_EQ_INT(listing_add(&l, 1, DT_REG, "x"), -E2BIG);
	listing_sort(&l);
	while ((e = listing_next(&l, &name))) {
		CHECK(n == 0 || e->ino >= last);
		last = e->ino;
		n++;
	}
	CHECK(n == LISTING_MAX);
	listing_free(&l);
}

int main(void)
{
	RUN(test_sorted_by_inode);
	RUN(test_bounded);
	return check_summary();
}
