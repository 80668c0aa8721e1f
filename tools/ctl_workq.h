/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TOOLS_CTL_WORKQ_H
#define ENVELOPEFS_TOOLS_CTL_WORKQ_H

/*
 * A bounded work queue and its pool of workers, for the commands that walk
 * a whole volume (fsck, rotate): the walk hands each object over as it
 * finds it, and waits while CTL_WORKQ_DEPTH objects wait for a worker.  So
 * the objects alive at once are at most CTL_WORKQ_DEPTH plus one per
 * worker, whatever the size of the tree.
 *
 * One thread (the walk) pushes; it alone runs the tick callback, so what
 * the tick reads of the walk needs no lock.
 *
 * Invariant: every pushed item is given to run() exactly once, which owns
 * it from then on (frees it).
 */

#define CTL_WORKQ_DEPTH 1024

struct ctl_workq;

struct ctl_workq_ops {
	void (*run)(void *arg, void *item); /* in a worker: process @item, then free it */
	void (*worker_exit)(void *arg);	    /* in each worker as it ends (NULL: nothing) */
	void (*tick)(void *arg);	    /* in the pushing thread, every @tick_every seconds
					     * while it pushes or waits (NULL: never) */
	double tick_every;
	void *arg;
};

/*
 * ctl_workq_start - a queue served by @jobs workers (@ops is copied).  When
 * no thread can be had, ctl_workq_push() runs each item itself.  0 or -ENOMEM.
 */
int ctl_workq_start(unsigned jobs, const struct ctl_workq_ops *ops, struct ctl_workq **out);

/* ctl_workq_push - hand @item to a worker, first waiting while the queue is full. */
void ctl_workq_push(struct ctl_workq *q, void *item);

/*
 * ctl_workq_finish - no more items: wait until every item pushed has been
 * run (ticking meanwhile), then end the workers and free @q.
 */
void ctl_workq_finish(struct ctl_workq *q);

#endif
