// SPDX-License-Identifier: MIT
/* Unit tests for fs/prefetch_listing.c: a big directory's entries in directory and inode order. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "fs/prefetch_listing.h"

/* Both orders give every entry once, each with its own name and type; listing_find maps back. */
static void test_both_orders(void)
{
	struct listing l = { 0 };
	const uint64_t inos[] = { 907, 12, 5000000000ull, 13, 400, 1 };
	const uint64_t sorted[] = { 1, 12, 13, 400, 907, 5000000000ull };
	const struct listing_entry *e;
	size_t dir_k, ino_k;
	char want[32];
	unsigned i;

	for (i = 0; i < 6; i++) {
		snprintf(want, sizeof(want), "name-%llu", (unsigned long long)inos[i]);
		REQUIRE(listing_add(&l, inos[i], inos[i] == 13 ? DT_DIR : DT_REG, want) == 0);
	}
	REQUIRE(listing_index(&l) == 0);
	for (i = 0; i < 6; i++) {
		e = listing_at(&l, i, true);
		CHECK(e->ino == sorted[i]);
		snprintf(want, sizeof(want), "name-%llu", (unsigned long long)sorted[i]);
		CHECK(strcmp(listing_name(&l, e), want) == 0);
		CHECK_EQ_INT(e->type, sorted[i] == 13 ? DT_DIR : DT_REG);
		CHECK(listing_at(&l, i, false)->ino == inos[i]);
		REQUIRE(listing_find(&l, sorted[i], &dir_k, &ino_k));
		CHECK_EQ_INT(ino_k, i);
		CHECK(inos[dir_k] == sorted[i]);
	}
	CHECK(!listing_find(&l, 14, &dir_k, &ino_k));
	CHECK(!listing_find(&l, 0, &dir_k, &ino_k));
	CHECK(!listing_find(&l, 6000000000ull, &dir_k, &ino_k));
	listing_free(&l);
	CHECK(l.n == 0 && l.v == NULL && l.names == NULL && l.by_ino == NULL);
}

/* Past LISTING_MAX entries a listing refuses more (the directory stays in its own order). */
static void test_bounded(void)
{
	struct listing l = { 0 };
	size_t i, dir_k, ino_k;

	for (i = 0; i < LISTING_MAX; i++)
		REQUIRE(listing_add(&l, (i * 7919) % LISTING_MAX, DT_REG, "a-name-of-some-length") == 0);
	CHECK_EQ_INT(listing_add(&l, 1, DT_REG, "x"), -E2BIG);
	REQUIRE(listing_index(&l) == 0);
	for (i = 1; i < LISTING_MAX; i++)
		if (listing_at(&l, i, true)->ino < listing_at(&l, i - 1, true)->ino)
			break;
	CHECK(i == LISTING_MAX);
	REQUIRE(listing_find(&l, 7919, &dir_k, &ino_k));
	CHECK(dir_k == 1 && ino_k == 7919);
	listing_free(&l);
}

int main(void)
{
	RUN(test_both_orders);
	RUN(test_bounded);
	return check_summary();
}
