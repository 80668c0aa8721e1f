/* SPDX-License-Identifier: MIT */
/* The inode table's bound: see inode_evict.h. */
#include "inode_evict.h"

#include <errno.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "log.h"

/* FUSE_NOTIFY_PRUNE of <linux/fuse.h> 7.45, which the build's headers may predate. */
#define NOTIFY_PRUNE 9
/* Node ids per request at most (the kernel takes them 512 at a time): a
 * round, when the thread gets the CPU, catches up with a fast tree walk. */
#define EVICT_BATCH 2048
/* After a request, the time the workers get to read the kernel's forgets. */
#define SETTLE_MS 2
/* A request that freed nothing (every inode asked for was in use, or the
 * forgets are late: a loaded machine) is followed by a wait, doubled each
 * time up to this: short, as a tree walk makes inodes meanwhile, and a
 * request for inodes in use costs the kernel a hash lookup each. */
#define IDLE_MAX_MS 100

/* A prune request as the kernel reads it: the header, then the count's ids. */
struct prune_head {
	struct fuse_out_header out; /* unique 0: a notification, error: its code */
	uint32_t count;
	uint32_t padding;
	uint64_t spare;
};

struct inode_evictor {
	struct inode_table *t;
	int dev_fd;
	uint64_t max;
	/* Each round asks for enough to go down to low (15/16 of max), so
	 * that a tree walk past the bound makes rounds of many ids, not one
	 * per lookup. */
	uint64_t low;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop; /* guarded by lock */
	atomic_bool applied;
	atomic_uint_fast64_t requested;
};

/* send_prune - ask the kernel to let go of @n inodes.  0 or -errno. */
static int send_prune(struct inode_evictor *e, const uint64_t *ids, size_t n)
{
	struct prune_head head = {
		.out = {.len = (uint32_t)(sizeof(head) + n * sizeof(*ids)), .error = NOTIFY_PRUNE},
		.count = (uint32_t)n,
	};
	struct iovec iov[2] = {{&head, sizeof(head)}, {(void *)ids, n * sizeof(*ids)}};
	ssize_t wrote = writev(e->dev_fd, iov, n ? 2 : 1);

	if (wrote < 0)
		return -errno;
	/* /dev/fuse takes a message whole or not at all. */
	return wrote == (ssize_t)head.out.len ? 0 : -EIO;
}

/* nap - wait @ms, or until stopped: false when stopped. */
static bool nap(struct inode_evictor *e, unsigned ms)
{
	struct timespec until;
	bool go_on;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&e->lock);
	while (!e->stop && pthread_cond_timedwait(&e->wake, &e->lock, &until) == 0)
		;
	go_on = !e->stop;
	pthread_mutex_unlock(&e->lock);
	return go_on;
}

static void *evict_thread(void *arg)
{
	struct inode_evictor *e = arg;
	uint64_t ids[EVICT_BATCH];
	unsigned idle_ms = 0;
	/* The forgets counted when the last progress was seen: forgets that
	 * come late (a loaded machine) are still progress at the next look. */
	uint64_t live, seen = inode_freed(e->t), now;
	size_t n;
	int ret;

	while ((live = inode_bound_wait(e->t)) != 0) {
		n = inode_victims(e->t, ids,
				  live - e->low < EVICT_BATCH ? (size_t)(live - e->low) : EVICT_BATCH);
		ret = n ? send_prune(e, ids, n) : 0;
		if (ret < 0) {
			/* ENODEV: unmounted, the loop is ending; nothing to say. */
			if (ret != -ENODEV)
				log_msg(LOG_WARNING, "cannot ask the kernel to let go of inodes (%s): "
						     "max_inodes no longer applied", strerror(-ret));
			atomic_store(&e->applied, false);
			break;
		}
		atomic_fetch_add(&e->requested, n);
		if (!nap(e, SETTLE_MS))
			break;
		/* Nothing freed since the last progress: what the hand found is
		 * in use (open, a working directory, directories with entries
		 * below): wait longer. */
		now = inode_freed(e->t);
		if (now != seen) {
			seen = now;
			idle_ms = 0;
			continue;
		}
		idle_ms = idle_ms == 0 ? SETTLE_MS : idle_ms * 2 > IDLE_MAX_MS ? IDLE_MAX_MS
										: idle_ms * 2;
		if (!nap(e, idle_ms))
			break;
	}
	return NULL;
}

int inode_evict_start(struct inode_table *t, int dev_fd, uint64_t max,
		      struct inode_evictor **out)
{
	struct inode_evictor *e;
	pthread_condattr_t attr;
	int ret;

	*out = NULL;
	if (max == 0)
		return 0;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	*e = (struct inode_evictor){.t = t, .dev_fd = dev_fd, .max = max, .low = max - max / 16};
	/* An empty request tells whether the kernel knows the code at all;
	 * here, so that the status tells from the first moment. */
	ret = send_prune(e, NULL, 0);
	if (ret < 0) {
		log_msg(LOG_NOTICE, "max_inodes = %llu not applied: the kernel cannot be asked to "
				    "let go of inodes (FUSE_NOTIFY_PRUNE, Linux 6.18: %s); the daemon "
				    "keeps one per inode the kernel caches",
			(unsigned long long)max, strerror(-ret));
		free(e);
		return 0;
	}
	atomic_init(&e->applied, true);
	pthread_mutex_init(&e->lock, NULL);
	/* nap() waits on the monotonic clock: a clock step neither stretches
	 * nor skips it. */
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&e->wake, &attr);
	pthread_condattr_destroy(&attr);
	inode_bound_set(t, max);
	ret = pthread_create(&e->thread, NULL, evict_thread, e);
	if (ret != 0) {
		inode_bound_set(t, 0);
		pthread_cond_destroy(&e->wake);
		pthread_mutex_destroy(&e->lock);
		free(e);
		return -ret;
	}
	/* Named, so that its CPU time can be told from the workers' (top -H, /proc). */
	pthread_setname_np(e->thread, "envfs-evict");
	*out = e;
	return 0;
}

void inode_evict_stop(struct inode_evictor *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	e->stop = true;
	pthread_cond_signal(&e->wake);
	pthread_mutex_unlock(&e->lock);
	inode_bound_stop(e->t);
	pthread_join(e->thread, NULL);
	pthread_cond_destroy(&e->wake);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

bool inode_evict_applied(struct inode_evictor *e)
{
	return e && atomic_load(&e->applied);
}

uint64_t inode_evict_requested(struct inode_evictor *e)
{
	return e ? atomic_load(&e->requested) : 0;
}
