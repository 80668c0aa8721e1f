// SPDX-License-Identifier: MIT
/* tools/ctl_workq.h: every item run once, the walk never more than the queue's depth ahead. */

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "tools/ctl_workq.h"

#define JOBS 4

struct counts {
	atomic_uint *runs;		/* per item: how many times it ran */
	atomic_size_t ran;		/* items run to the end */
	long work_ns;			/* each item's pretend work */
	pthread_t pusher;
	atomic_size_t ticks, ticks_elsewhere; /* ticks, and those not in the pushing thread */
	atomic_size_t exits;
};

struct item {
	size_t index;
};

static void run(void *arg, void *p)
{
	struct counts *c = arg;
	struct item *it = p;

	if (c->work_ns) {
		struct timespec ts = { 0, c->work_ns };
		nanosleep(&ts, NULL);
	}
	atomic_fetch_add(&c->runs[it->index], 1);
	free(it);
	atomic_fetch_add(&c->ran, 1);
}

static void tick(void *arg)
{
	struct counts *c = arg;

	atomic_fetch_add(&c->ticks, 1);
	if (!pthread_equal(pthread_self(), c->pusher))
		atomic_fetch_add(&c->ticks_elsewhere, 1);
}

static void worker_exit(void *arg)
{
	atomic_fetch_add(&((struct counts *)arg)->exits, 1);
}

/*
 * push_all - @n items through a queue of JOBS workers; the most items alive
 * (pushed, not yet run) right after any push.
 */
static size_t push_all(struct counts *c, size_t n, double tick_every)
{
	struct ctl_workq_ops ops = { .run = run, .worker_exit = worker_exit, .tick = tick,
				     .tick_every = tick_every, .arg = c };
	struct ctl_workq *q = NULL;
	size_t most = 0;

	c->runs = calloc(n, sizeof(*c->runs));
	c->pusher = pthread_self();
	if (!c->runs || ctl_workq_start(JOBS, &ops, &q) != 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		struct item *it = malloc(sizeof(*it));
		size_t alive;

		it->index = i;
		ctl_workq_push(q, it);
		alive = i + 1 - atomic_load(&c->ran);
		if (alive > most)
			most = alive;
	}
	ctl_workq_finish(q);
	return most;
}

static void test_every_item_once(void)
{
	static struct counts c;
	size_t n = 200000, twice = 0, never = 0;

	push_all(&c, n, 3600);
	REQUIRE(c.runs);
	for (size_t i = 0; i < n; i++) {
		twice += c.runs[i] > 1;
		never += c.runs[i] == 0;
	}
	CHECK_EQ_INT(never, 0);
	CHECK_EQ_INT(twice, 0);
	CHECK_EQ_INT(atomic_load(&c.ran), n);
	CHECK_EQ_INT(atomic_load(&c.exits), JOBS);
	free(c.runs);
}

/* Slow workers: the pusher waits, never more than the depth (plus one item per worker) ahead. */
static void test_bounded(void)
{
	static struct counts c = { .work_ns = 20000 };
	size_t n = 4 * CTL_WORKQ_DEPTH, most = push_all(&c, n, 0.01);

	REQUIRE(c.runs);
	CHECK(most <= CTL_WORKQ_DEPTH + JOBS);
	CHECK(most >= CTL_WORKQ_DEPTH); /* it did get ahead: the bound was reached */
	CHECK_EQ_INT(atomic_load(&c.ran), n);
	/* The walk waited for the workers, ticking in its own thread only. */
	CHECK(atomic_load(&c.ticks) > 0);
	CHECK_EQ_INT(atomic_load(&c.ticks_elsewhere), 0);
	free(c.runs);
}

int main(void)
{
	RUN(test_every_item_once);
	RUN(test_bounded);
	return check_summary();
}
