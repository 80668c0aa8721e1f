// SPDX-License-Identifier: MIT
/*
 * The bounded work queue of the volume walks (ctl_workq.h): a ring of
 * CTL_WORKQ_DEPTH pointers under one mutex.  A lock per object is nothing
 * beside the work on it (a KMS call, a file read).
 */

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "tools/ctl_workq.h"

struct ctl_workq {
	struct ctl_workq_ops ops;
	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full, worker_gone;
	void *ring[CTL_WORKQ_DEPTH];
	size_t head, count; /* the oldest item; how many wait: count <= CTL_WORKQ_DEPTH */
	bool closed;	    /* no more pushes: a worker finding the ring empty ends */
	unsigned live;	    /* workers not yet ended */
	unsigned started;
	double last_tick;
	pthread_t *threads;
};

static double monotonic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The condition variables wait on CLOCK_MONOTONIC: a clock step neither hangs nor rushes a tick. */
static struct timespec deadline(double seconds)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)seconds;
	ts.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* maybe_tick - the tick, if one is due; called with the lock held, which it drops around the call. */
static void maybe_tick(struct ctl_workq *q)
{
	double t;

	if (!q->ops.tick)
		return;
	t = monotonic_now();
	if (t - q->last_tick < q->ops.tick_every)
		return;
	q->last_tick = t;
	pthread_mutex_unlock(&q->lock);
	q->ops.tick(q->ops.arg);
	pthread_mutex_lock(&q->lock);
}

/* wait_on - wait on @cond, at most until the next tick is due. */
static void wait_on(struct ctl_workq *q, pthread_cond_t *cond)
{
	struct timespec until;

	if (!q->ops.tick) {
		pthread_cond_wait(cond, &q->lock);
		return;
	}
	until = deadline(q->ops.tick_every);
	pthread_cond_timedwait(cond, &q->lock, &until);
	maybe_tick(q);
}

static void *worker(void *arg)
{
	struct ctl_workq *q = arg;
	void *item;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (q->count == 0 && !q->closed)
			pthread_cond_wait(&q->not_empty, &q->lock);
		if (q->count == 0)
			break; /* closed and drained */
		item = q->ring[q->head];
		q->head = (q->head + 1) % CTL_WORKQ_DEPTH;
		q->count--;
		pthread_cond_signal(&q->not_full);
		pthread_mutex_unlock(&q->lock);
		q->ops.run(q->ops.arg, item);
		pthread_mutex_lock(&q->lock);
	}
	q->live--;
	pthread_cond_signal(&q->worker_gone);
	pthread_mutex_unlock(&q->lock);
	if (q->ops.worker_exit)
		q->ops.worker_exit(q->ops.arg);
	return NULL;
}

static int init_cond(pthread_cond_t *c)
{
	pthread_condattr_t attr;
	int rc = pthread_condattr_init(&attr);

	if (rc == 0)
		rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(c, &attr);
	pthread_condattr_destroy(&attr);
	return -rc;
}

int ctl_workq_start(unsigned jobs, const struct ctl_workq_ops *ops, struct ctl_workq **out)
{
	struct ctl_workq *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	q->ops = *ops;
	q->last_tick = monotonic_now();
	pthread_mutex_init(&q->lock, NULL);
	if (init_cond(&q->not_empty) < 0 || init_cond(&q->not_full) < 0 ||
	    init_cond(&q->worker_gone) < 0) {
		free(q);
		return -ENOMEM;
	}
	q->threads = calloc(jobs, sizeof(*q->threads));
	for (unsigned j = 0; q->threads && j < jobs; j++) {
		q->live++; /* before the thread runs: it counts itself out */
		if (pthread_create(&q->threads[q->started], NULL, worker, q) == 0)
			q->started++;
		else
			q->live--;
	}
	*out = q;
	return 0;
}

void ctl_workq_push(struct ctl_workq *q, void *item)
{
	if (q->started == 0) { /* no workers to be had: do it here */
		q->ops.run(q->ops.arg, item);
		pthread_mutex_lock(&q->lock);
		maybe_tick(q);
		pthread_mutex_unlock(&q->lock);
		return;
	}
	pthread_mutex_lock(&q->lock);
	while (q->count == CTL_WORKQ_DEPTH)
		wait_on(q, &q->not_full);
	q->ring[(q->head + q->count) % CTL_WORKQ_DEPTH] = item;
	q->count++;
	pthread_cond_signal(&q->not_empty);
	maybe_tick(q);
	pthread_mutex_unlock(&q->lock);
}

void ctl_workq_finish(struct ctl_workq *q)
{
	pthread_mutex_lock(&q->lock);
	q->closed = true;
	pthread_cond_broadcast(&q->not_empty);
	while (q->live > 0)
		wait_on(q, &q->worker_gone);
	pthread_mutex_unlock(&q->lock);
	for (unsigned j = 0; j < q->started; j++)
		pthread_join(q->threads[j], NULL);
	pthread_cond_destroy(&q->not_empty);
	pthread_cond_destroy(&q->not_full);
	pthread_cond_destroy(&q->worker_gone);
	pthread_mutex_destroy(&q->lock);
	free(q->threads);
	free(q);
}
