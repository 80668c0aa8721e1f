// SPDX-License-Identifier: MIT
/*
 * Unit tests for fs/prefetch_order.c: the read ahead follows the reader's
 * order through a listing, and never skips a file the reader still opens.
 *
 * The model: a directory of n entries, dir_k = its index, ino_k = its place
 * in a random inode order.  A read ahead takes entries at the order's
 * position (prefetch.c's next_entry); a reader opens every entry once, in
 * directory order (tar, find below 10,000 entries) or in inode order (cp -r,
 * find above); the two go in turns of random length.  The read ahead ends
 * when its position passes the last entry (prefetch.c drops the listing
 * then, and follows no more opens).
 */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "fs/prefetch_order.h"

#define MAX_N 600

struct model {
	size_t n;
	size_t by_ino[MAX_N]; /* inode order: the dir_k of each place */
	size_t ino_k[MAX_N];  /* each entry's place in inode order */
	bool taken[MAX_N];    /* read ahead (its DEK unwrapped ahead) */
	bool opened[MAX_N];
	struct read_order order;
	bool ended;
	unsigned late_misses; /* opened after the read ahead ended, never taken */
	unsigned misses;      /* opened before the read ahead took it */
};

static uint64_t rng_state;

static unsigned rnd(unsigned below)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (unsigned)((rng_state >> 33) % below);
}

static void model_init(struct model *m, size_t n, bool presume_inode_order)
{
	memset(m, 0, sizeof(*m));
	m->n = n;
	for (size_t i = 0; i < n; i++)
		m->by_ino[i] = i;
	for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
		size_t j = rnd((unsigned)i + 1), t = m->by_ino[i];

		m->by_ino[i] = m->by_ino[j];
		m->by_ino[j] = t;
	}
	for (size_t i = 0; i < n; i++)
		m->ino_k[m->by_ino[i]] = i;
	read_order_init(&m->order, presume_inode_order);
}

/* read_ahead - take up to @want entries at the order's position (a file opened already is cached: skipped). */
static void read_ahead(struct model *m, unsigned want)
{
	while (want-- > 0 && !m->ended) {
		size_t k = m->order.pos++, e;

		if (k >= m->n) {
			m->ended = true;
			return;
		}
		e = m->order.inode_order ? m->by_ino[k] : k;
		if (!m->opened[e])
			m->taken[e] = true;
	}
}

static void open_entry(struct model *m, size_t e)
{
	if (!m->taken[e]) {
		m->misses++;
		m->late_misses += m->ended;
	}
	m->opened[e] = true;
	if (!m->ended)
		read_order_opened(&m->order, e, m->ino_k[e]);
}

/* The reader's @i-th file: directory order or inode order. */
static size_t reader_file(const struct model *m, size_t i, bool inode_order)
{
	return inode_order ? m->by_ino[i] : i;
}

/* run - the reader and the read ahead in turns of random length until the reader is done. */
static void run(struct model *m, bool reader_inode_order)
{
	size_t next = 0;

	while (next < m->n) {
		if (rnd(2)) {
			read_ahead(m, 1 + rnd(80));
		} else {
			for (unsigned k = 1 + rnd(12); k > 0 && next < m->n; k--)
				open_entry(m, reader_file(m, next++, reader_inode_order));
		}
	}
}

/*
 * Whatever the presumed order, the reader's order and the interleaving: once
 * the read ahead has ended, the reader opens nothing it did not take.
 */
static void test_an_ended_read_ahead_took_every_file_still_opened(void)
{
	static struct model m;
	unsigned runs = 0;

	rng_state = 2535336812u;
	for (int round = 0; round < 4000; round++) {
		bool presume_inode = rnd(2), reader_inode = rnd(2);

		model_init(&m, 2 + rnd(MAX_N - 2), presume_inode);
		run(&m, reader_inode);
		if (m.late_misses) {
			fprintf(stderr, "round %d: n %zu, presumed %s, reader %s: %u files never taken\n",
				round, m.n, presume_inode ? "inode" : "dir", reader_inode ? "inode" : "dir",
				m.late_misses);
			CHECK_EQ_INT(m.late_misses, 0);
			return;
		}
		runs += m.ended;
	}
	CHECK(runs > 1000); /* the property was put to the test: many read aheads ended first */
}

/*
 * cp -r in a small directory (CI, seen once): the read ahead, presumed in
 * directory order, has taken a third of it; cp opens its lowest inode, far
 * on in directory order.  That open shows no order, so the read ahead goes on
 * from where it was, and reaching the end it has taken every file.
 */
static void test_a_first_open_far_ahead_skips_nothing(void)
{
	static struct model m;
	size_t first;

	rng_state = 7;
	do
		model_init(&m, 400, false);
	while (m.by_ino[0] < 250); /* cp's first file, far ahead in directory order */
	read_ahead(&m, 128);
	first = m.by_ino[0];
	open_entry(&m, first);
	CHECK_EQ_INT(m.order.pos, 128);
	read_ahead(&m, 400);
	CHECK(m.ended);
	for (size_t i = 1; i < m.n; i++)
		open_entry(&m, m.by_ino[i]);
	CHECK_EQ_INT(m.late_misses, 0);
	CHECK_EQ_INT(m.misses, 1); /* the first file only: opened before the read ahead took it */
}

/*
 * Once an open has voted for the order, the read ahead jumps to just past
 * the reader's file: a reader ahead of it (it opened those files itself)
 * costs no second look at them.
 */
static void test_a_voted_order_jumps_to_the_reader(void)
{
	static struct model m;
	size_t a = 0, b;

	rng_state = 11;
	model_init(&m, 100, false);
	/* Two files in a row forward in directory order and back in inode order: a vote for directory order. */
	for (b = 1; b < m.n && m.ino_k[b] > m.ino_k[a]; b++)
		;
	REQUIRE(b < m.n);
	open_entry(&m, a);
	CHECK(!m.order.voted && m.order.pos == 0);
	open_entry(&m, b);
	CHECK(m.order.voted && !m.order.inode_order);
	CHECK_EQ_INT(m.order.pos, b + 1);
	open_entry(&m, 90);
	CHECK_EQ_INT(m.order.pos, 91);
	open_entry(&m, 50); /* behind the read ahead: it stays where it is */
	CHECK_EQ_INT(m.order.pos, 91);
}

/* Opens going in inode order turn a directory-order read ahead round, from just past the reader. */
static void test_votes_turn_the_order(void)
{
	static struct model m;
	size_t i;

	rng_state = 13;
	model_init(&m, 200, false);
	read_ahead(&m, 20);
	for (i = 0; i < m.n && !m.order.inode_order; i++)
		open_entry(&m, m.by_ino[i]);
	REQUIRE(m.order.inode_order);
	CHECK(i >= 2); /* one open shows no order */
	CHECK_EQ_INT(m.order.pos, i); /* just past the reader's last file, in inode order */
	/* Opens the other way turn it back; the votes saturate at READ_ORDER_VOTES. */
	for (int v = 0; v < 10; v++)
		read_order_opened(&m.order, (size_t)v * 2 + 1, 150 - (size_t)v);
	CHECK(!m.order.inode_order);
	CHECK_EQ_INT(m.order.votes, -READ_ORDER_VOTES);
}

int main(void)
{
	RUN(test_an_ended_read_ahead_took_every_file_still_opened);
	RUN(test_a_first_open_far_ahead_skips_nothing);
	RUN(test_a_voted_order_jumps_to_the_reader);
	RUN(test_votes_turn_the_order);
	return check_summary();
}
