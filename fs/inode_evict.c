/* SPDX-License-Identifier: MIT */
/* The inode table's bound: see inode_evict.h. */
#include "inode_evict.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

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

/* The fallback's requests of one round, FUSE_NOTIFY_INVAL_ENTRY messages
 * laid end to end: room for EVICT_BATCH names of 100 bytes; a round that
 * fills it sends what it has, the rest wait for the next one. */
#define INVAL_ROOM (EVICT_BATCH * (sizeof(struct inval_head) + 100))

/* The longest name the kernel sends or takes (its FUSE_NAME_MAX). */
#define FUSE_NAME_MAX_LEN 1024

/* The environment variable that forces the fallback (the test switch, inode_evict.h). */
#define MODE_ENV "ENVELOPEFS_INODE_EVICT"

enum evict_mode { EVICT_PRUNE, EVICT_INVAL_ENTRY };

/* The entry the kernel knows an inode by (struct inode's kname). */
struct inode_kname {
	uint64_t parent; /* the directory's node id, as the kernel names it */
	uint32_t len;	 /* of name, without its NUL (the kernel takes at most 1024) */
	char name[];	 /* NUL-terminated, as the kernel wants it */
};

/* An invalidation as the kernel reads it: the header, then len + 1 name bytes. */
struct inval_head {
	struct fuse_out_header out; /* unique 0: a notification, error: its code */
	struct fuse_notify_inval_entry_out arg;
};

/* The inode an invalidation is for: its backing inode and the name sent
 * (only compared, never read: inode_kname_take_if()). */
struct inval_victim {
	dev_t dev;
	ino_t ino;
	const struct inode_kname *kname;
};

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
	enum evict_mode mode; /* set at start, never changed */
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
	/* The fallback's round: INVAL_ROOM bytes of messages, used bytes,
	 * and the inode each is for, in the same order. */
	unsigned char *inval;
	size_t inval_used;
	struct inval_victim *victims; /* EVICT_BATCH */
	size_t nvictims;
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

/*
 * take_named - the fallback's choice (inode_victim_fn): an inode the kernel
 * can let go of without harm when its entry is invalidated, whose message
 * then goes into the round.  Under the table lock.
 */
static bool take_named(void *arg, struct inode *in)
{
	struct inode_evictor *e = arg;
	struct inval_head head;
	unsigned opens;

	/* Only regular files and symlinks have a name (inode_evict_note_name()):
	 * never a directory, whose dentry must stay hashed if it is a working
	 * directory (getcwd()).  One that does not fit this round's room waits
	 * for the next. */
	if (!in->kname ||
	    sizeof(head) + in->kname->len + 1 > INVAL_ROOM - e->inval_used)
		return false;
	/* An open file's dentry must stay hashed too (/proc names it).  Busy
	 * key lock: in use at this moment; never waited for under the table
	 * lock. */
	if (pthread_mutex_trylock(&in->key_lock) != 0)
		return false;
	opens = in->opens;
	pthread_mutex_unlock(&in->key_lock);
	if (opens)
		return false;
	head = (struct inval_head){
		.out = {.len = (uint32_t)(sizeof(head) + in->kname->len + 1),
			.error = FUSE_NOTIFY_INVAL_ENTRY},
		.arg = {.parent = in->kname->parent, .namelen = in->kname->len},
	};
	memcpy(e->inval + e->inval_used, &head, sizeof(head));
	memcpy(e->inval + e->inval_used + sizeof(head), in->kname->name, in->kname->len + 1);
	e->inval_used += head.out.len;
	e->victims[e->nvictims++] = (struct inval_victim){in->dev, in->ino, in->kname};
	return true;
}

/*
 * send_invals - write the round's invalidations, one message each.  0 or
 * -errno.  An entry the kernel does not have (ENOENT; ENOTDIR: the parent
 * id is now another inode's) is no failure, but the name is stale: the
 * inode is known by another (a hard link's), or the kernel let go of it
 * and its forget is on its way.  The name is dropped, so that the next
 * rounds do not ask again in vain (each costs the kernel the parent's
 * lock); a lookup notes the next one.
 */
static int send_invals(struct inode_evictor *e)
{
	struct inval_head head;
	ssize_t wrote;
	size_t i = 0;

	for (size_t at = 0; at < e->inval_used; at += head.out.len, i++) {
		memcpy(&head, e->inval + at, sizeof(head));
		wrote = write(e->dev_fd, e->inval + at, head.out.len);
		if (wrote < 0 && errno != ENOENT && errno != ENOTDIR)
			return -errno;
		if (wrote < 0)
			free(inode_kname_take_if(e->t, e->victims[i].dev, e->victims[i].ino,
						 e->victims[i].kname));
		/* /dev/fuse takes a message whole or not at all. */
		else if (wrote != (ssize_t)head.out.len)
			return -EIO;
	}
	return 0;
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
		n = live - e->low < EVICT_BATCH ? (size_t)(live - e->low) : EVICT_BATCH;
		if (e->mode == EVICT_PRUNE) {
			n = inode_victims(e->t, ids, n);
			ret = n ? send_prune(e, ids, n) : 0;
		} else {
			e->inval_used = 0;
			e->nvictims = 0;
			n = inode_victims_each(e->t, n, take_named, e);
			ret = send_invals(e);
		}
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
	bool forced;
	int ret;

	*out = NULL;
	if (max == 0)
		return 0;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	*e = (struct inode_evictor){.t = t, .dev_fd = dev_fd, .max = max, .low = max - max / 16};
	forced = getenv(MODE_ENV) && strcmp(getenv(MODE_ENV), "inval_entry") == 0;
	/* An empty request tells whether the kernel knows the code at all;
	 * here, so that the status tells from the first moment. */
	ret = forced ? -EINVAL : send_prune(e, NULL, 0);
	if (ret < 0 && ret != -EINVAL) {
		log_msg(LOG_NOTICE, "max_inodes = %llu not applied: the kernel cannot be asked to "
				    "let go of inodes (%s); the daemon keeps one per inode the "
				    "kernel caches",
			(unsigned long long)max, strerror(-ret));
		free(e);
		return 0;
	}
	if (ret < 0) {
		e->mode = EVICT_INVAL_ENTRY;
		e->inval = malloc(INVAL_ROOM);
		e->victims = calloc(EVICT_BATCH, sizeof(*e->victims));
		if (!e->inval || !e->victims) {
			free(e->inval);
			free(e->victims);
			free(e);
			return -ENOMEM;
		}
		log_msg(LOG_NOTICE, "max_inodes = %llu applied by invalidating entries%s: "
				    "directories, open files and special files are kept beyond it",
			(unsigned long long)max,
			forced ? " (" MODE_ENV ")" : ": the kernel cannot prune (Linux 6.18)");
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
		free(e->inval);
		free(e->victims);
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
	free(e->inval);
	free(e->victims);
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

const char *inode_evict_mode(struct inode_evictor *e)
{
	if (!inode_evict_applied(e))
		return "none";
	return e->mode == EVICT_PRUNE ? "prune" : "inval_entry";
}

/* kname_new - @name in the directory @dir as the kernel names it, or NULL. */
static struct inode_kname *kname_new(struct inode_evictor *e, struct inode *dir, const char *name)
{
	size_t len = strlen(name);
	struct inode_kname *k;

	/* The kernel names no entry "." or "..", and none longer. */
	if (len > FUSE_NAME_MAX_LEN || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return NULL;
	/* The name right after len, not after the struct's padding: 4 bytes less. */
	k = malloc(offsetof(struct inode_kname, name) + len + 1);
	if (!k)
		return NULL;
	k->parent = dir == inode_table_root(e->t) ? FUSE_ROOT_ID : (uint64_t)(uintptr_t)dir;
	k->len = (uint32_t)len;
	memcpy(k->name, name, len + 1);
	return k;
}

void inode_evict_note_name(struct inode_evictor *e, struct inode *dir, struct inode *in,
			   const char *name)
{
	/* Only what the fallback may pick gets a name (inode_evict.h); a name
	 * that cannot be kept (no memory) drops the old one, now stale: the
	 * inode is not picked until a lookup names it again. */
	if (!e || e->mode != EVICT_INVAL_ENTRY || in == inode_table_root(e->t) ||
	    !(S_ISREG(in->type) || S_ISLNK(in->type)))
		return;
	free(inode_kname_swap(e->t, in, kname_new(e, dir, name)));
}

void inode_evict_note_moved(struct inode_evictor *e, struct inode *dir, const char *bname,
			    const char *name)
{
	struct stat st;

	if (!e || e->mode != EVICT_INVAL_ENTRY ||
	    fstatat(inode_fd(dir), bname, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !(S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)))
		return;
	/* As in inode_evict_note_name(): no new name drops the old one. */
	free(inode_kname_swap_at(e->t, &st, kname_new(e, dir, name)));
}

void inode_evict_note_unlinked(struct inode_evictor *e, const struct stat *st)
{
	if (e && e->mode == EVICT_INVAL_ENTRY)
		free(inode_kname_swap_at(e->t, st, NULL));
}
