// SPDX-License-Identifier: MIT
/* Unit tests for fs/prefetch_window.c: the prefetch window's pool, hash and expiry. */
#include <stdint.h>

#include "check.h"
#include "fs/prefetch_window.h"

/* claim - reserve one unit and claim (dev 1, @ino) with it. */
static struct window_entry *claim(struct window *w, ino_t ino)
{
	w->reserved++;
	return window_claim(w, 1, ino);
}

/* window_expire - free the ready entries made ready before @before_ms, oldest first; how many. */
static unsigned window_expire(struct window *w, int64_t before_ms)
{
	struct window_entry *e;
	unsigned n = 0;

	while ((e = window_oldest_ready(w)) && e->ready_ms < before_ms) {
		window_free(w, e);
		n++;
	}
	return n;
}

/* Room is shared by entries and reservations; a file is in the window once. */
static void test_room_and_claims(void)
{
	struct window w;
	struct window_entry *a, *b;

	REQUIRE(window_init(&w, 3) == 0);
	CHECK_EQ_INT(window_room(&w), 3);
	a = claim(&w, 10);
	REQUIRE(a && a->state == WINDOW_IN_FLIGHT);
	CHECK_EQ_INT(window_room(&w), 2);
	w.reserved++;
	CHECK(window_claim(&w, 1, 10) == NULL); /* in flight already: the reservation stays */
	CHECK_EQ_INT(w.reserved, 1);
	b = window_claim(&w, 2, 10); /* another device: another file */
	REQUIRE(b && b != a);
	CHECK_EQ_INT(window_room(&w), 1);
	CHECK(window_find(&w, 1, 10) == a && window_find(&w, 2, 10) == b);
	CHECK(window_find(&w, 1, 11) == NULL);
	window_free(&w, a);
	CHECK(window_find(&w, 1, 10) == NULL && window_find(&w, 2, 10) == b);
	CHECK_EQ_INT(window_room(&w), 2);
	window_fini(&w);
}

/* Ready entries expire oldest first; in-flight ones never. */
static void test_expiry(void)
{
	struct window w;
	struct window_entry *e[4];

	REQUIRE(window_init(&w, 4) == 0);
	for (int i = 0; i < 4; i++)
		REQUIRE((e[i] = claim(&w, (ino_t)(100 + i))));
	window_ready(&w, e[2], 1000);
	window_ready(&w, e[0], 2000);
	window_ready(&w, e[3], 3000);
	CHECK_EQ_INT(window_expire(&w, 500), 0);
	CHECK_EQ_INT(window_expire(&w, 2500), 2);
	CHECK(window_find(&w, 1, 102) == NULL && window_find(&w, 1, 100) == NULL);
	CHECK(window_find(&w, 1, 103) == e[3] && window_find(&w, 1, 101) == e[1]);
	window_free(&w, e[3]); /* opened: off the ready list too */
	CHECK_EQ_INT(window_expire(&w, 1 << 30), 0);
	CHECK(e[1]->state == WINDOW_IN_FLIGHT);
	CHECK_EQ_INT(window_room(&w), 3);
	window_fini(&w);
}

/* The pool is reused: many claims and frees through a small window. */
static void test_reuse(void)
{
	struct window w;

	REQUIRE(window_init(&w, 5) == 0);
	for (ino_t i = 0; i < 1000; i++) {
		struct window_entry *e = claim(&w, i);

		REQUIRE(e);
		if (i % 2)
			window_ready(&w, e, (int64_t)i);
		if (i >= 4)
			window_free(&w, window_find(&w, 1, i - 4));
	}
	CHECK_EQ_INT(w.used, 4);
	CHECK_EQ_INT(window_expire(&w, 1 << 30), 2);
	CHECK_EQ_INT(window_room(&w), 3);
	window_fini(&w);
}

int main(void)
{
	RUN(test_room_and_claims);
	RUN(test_expiry);
	RUN(test_reuse);
	return check_summary();
}
