/* SPDX-License-Identifier: MIT */
/* The inode table: see inode.h for the invariants. */
#include "inode.h"
#include "mtime.h"
#include "xattr_absent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* The hash starts small and doubles whenever it holds more inodes than
 * buckets: a lookup walks about one entry, with 10,000 known inodes as with
 * a million (a fixed 65,536 buckets made chains of 8 at 500,000, and the
 * walk 8% of the daemon's CPU in a rotation of a 1M-file tree). */
#define INODE_BUCKETS_MIN 1024 /* power of two */

/* The most entries one inode_victims() looks at, under the table lock that
 * every lookup takes: about a millisecond. */
#define VICTIM_SCAN_MAX 16384

struct inode_table {
	pthread_mutex_t lock;
	struct fdcache *fds;
	struct inode root;
	struct inode **buckets;
	size_t nbuckets; /* power of two, at least INODE_BUCKETS_MIN */
	/* Inodes out of the hash whose backing number another took (inode.h),
	 * linked by hash_next until the kernel forgets them. */
	struct inode *disowned;
	uint64_t count;
	uint64_t peak;	/* the most count was */
	uint64_t freed; /* inodes the kernel's forgets freed */
	/* The bound (inode_bound_set()); over_bound is signalled whenever a
	 * new inode takes count past max, or bound_stopped is set. */
	uint64_t max;
	pthread_cond_t over_bound;
	bool bound_stopped;
	size_t hand; /* the clock hand: the bucket inode_victims() goes on from */
};

static size_t bucket_of(size_t nbuckets, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev;

	return (size_t)(h >> 32) & (nbuckets - 1);
}

static void inode_init(struct inode *in, const struct stat *st)
{
	in->dev = st->st_dev;
	in->ino = st->st_ino;
	in->type = st->st_mode & S_IFMT;
	in->keylock_fd = -1;
	atomic_init(&in->recent, true);
	pthread_rwlock_init(&in->content_lock, NULL);
	pthread_mutex_init(&in->key_lock, NULL);
	pthread_mutex_init(&in->mtime_lock, NULL);
}

int inode_table_create(int root_fd, unsigned max_fds, struct inode_table **out)
{
	struct inode_table *t = calloc(1, sizeof(*t));
	struct stat st;
	int ret;

	if (!t)
		return -ENOMEM;
	t->nbuckets = INODE_BUCKETS_MIN;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (!t->buckets) {
		free(t);
		return -ENOMEM;
	}
	if (fstat(root_fd, &st) < 0) {
		ret = -errno;
		free(t->buckets);
		free(t);
		return ret;
	}
	ret = fdcache_create(root_fd, max_fds ? max_fds : fdcache_default_max(), &t->fds);
	if (ret < 0) {
		free(t->buckets);
		free(t);
		return ret;
	}
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->over_bound, NULL);
	inode_init(&t->root, &st);
	/* No handle: the root's fd stays open, used without pins (rotation,
	 * re-keys and the volume key reach the backing root through it). */
	fdcache_slot_init(t->fds, &t->root.slot, root_fd, NULL);
	t->root.nlookup = 1;
	t->root.hashed = true;
	*out = t;
	return 0;
}

struct inode *inode_table_root(struct inode_table *t)
{
	return &t->root;
}

static void inode_free(struct inode_table *t, struct inode *in)
{
	/* The last chance to give the backing file the mtime the kernel sent;
	 * failing, it keeps the time of its last write (mtime.h).  Nothing
	 * else can reach the inode now: no lock needed to look. */
	if (in->mtime_pending && fdcache_pin(t->fds, &in->slot) == 0) {
		mtime_flush(in);
		fdcache_unpin(t->fds, &in->slot);
	}
	fdcache_slot_fini(t->fds, &in->slot);
	free(in->link_target);
	free(in->holes);
	free(in->kname);
	pthread_rwlock_destroy(&in->content_lock);
	pthread_mutex_destroy(&in->key_lock);
	pthread_mutex_destroy(&in->mtime_lock);
	free(in);
}

void inode_table_destroy(struct inode_table *t)
{
	if (!t)
		return;
	for (size_t b = 0; b < t->nbuckets; b++) {
		struct inode *in = t->buckets[b];
		while (in) {
			struct inode *next = in->hash_next;
			inode_free(t, in);
			in = next;
		}
	}
	while (t->disowned) {
		struct inode *next = t->disowned->hash_next;
		inode_free(t, t->disowned);
		t->disowned = next;
	}
	fdcache_slot_fini(t->fds, &t->root.slot);
	free(t->root.link_target);
	fdcache_destroy(t->fds);
	pthread_cond_destroy(&t->over_bound);
	pthread_mutex_destroy(&t->lock);
	free(t->buckets);
	free(t);
}

static struct inode *find_locked(struct inode_table *t, dev_t dev, ino_t ino)
{
	struct inode *in;

	if (dev == t->root.dev && ino == t->root.ino)
		return &t->root;
	for (in = t->buckets[bucket_of(t->nbuckets, dev, ino)]; in; in = in->hash_next)
		if (in->dev == dev && in->ino == ino)
			break;
	return in;
}

static void unhash_locked(struct inode_table *t, struct inode *in)
{
	struct inode **p = &t->buckets[bucket_of(t->nbuckets, in->dev, in->ino)];

	if (!in->hashed)
		return;
	while (*p != in)
		p = &(*p)->hash_next;
	*p = in->hash_next;
	in->hashed = false;
}

/* disown_locked - out of the hash for good: @in's number belongs to another. */
static void disown_locked(struct inode_table *t, struct inode *in)
{
	if (!in->hashed)
		return;
	unhash_locked(t, in);
	in->hash_next = t->disowned;
	t->disowned = in;
}

static void forget_disowned_locked(struct inode_table *t, struct inode *in)
{
	struct inode **p = &t->disowned;

	while (*p && *p != in)
		p = &(*p)->hash_next;
	if (*p)
		*p = in->hash_next;
}

/*
 * grow_locked - twice the buckets, every hashed inode moved over.  Under the
 * table lock, as every other use of the hash: once per doubling, so a
 * table of N inodes has paid for at most 2N moves.  Without memory for
 * the new array the old one stays: lookups are slower, never wrong.
 */
static void grow_locked(struct inode_table *t)
{
	size_t n = t->nbuckets * 2;
	struct inode **fresh = calloc(n, sizeof(*fresh));

	if (!fresh)
		return;
	for (size_t b = 0; b < t->nbuckets; b++) {
		struct inode *in = t->buckets[b];
		while (in) {
			struct inode *next = in->hash_next;
			size_t to = bucket_of(n, in->dev, in->ino);

			in->hash_next = fresh[to];
			fresh[to] = in;
			in = next;
		}
	}
	free(t->buckets);
	t->buckets = fresh;
	t->nbuckets = n;
}

static void hash_locked(struct inode_table *t, struct inode *in)
{
	size_t b;

	/* t->count also counts disowned inodes: a little early, never late. */
	if (t->count >= t->nbuckets)
		grow_locked(t);
	b = bucket_of(t->nbuckets, in->dev, in->ino);
	in->hash_next = t->buckets[b];
	t->buckets[b] = in;
	in->hashed = true;
}

/*
 * disown - @in, found by its number and referenced by the caller, is not
 * the backing inode of @fh: an earlier one whose number was reused.  Out of
 * the hash it goes, and the caller's reference with it.
 */
static void disown(struct inode_table *t, struct inode *in)
{
	pthread_mutex_lock(&t->lock);
	disown_locked(t, in);
	pthread_mutex_unlock(&t->lock);
	inode_forget(t, in, 1);
}

struct inode *inode_lookup_known(struct inode_table *t, const struct stat *st, int dirfd,
				 const char *name)
{
	struct file_handle *fh;
	struct inode *in;

	pthread_mutex_lock(&t->lock);
	in = find_locked(t, st->st_dev, st->st_ino);
	if (in) {
		in->nlookup++;
		atomic_store_explicit(&in->recent, true, memory_order_relaxed);
	}
	pthread_mutex_unlock(&t->lock);
	if (!in || in == &t->root)
		return in;
	/* An open fd holds its backing inode, so the number is still its own;
	 * only a closed one asks the backing for the name's handle. */
	if (fdcache_holds(t->fds, &in->slot))
		return in;
	fh = fdcache_handle_of(t->fds, dirfd, name);
	if (!fh || fdcache_names(t->fds, &in->slot, fh)) {
		free(fh);
		return in;
	}
	free(fh);
	disown(t, in);
	return NULL;
}

void inode_ref(struct inode_table *t, struct inode *in)
{
	pthread_mutex_lock(&t->lock);
	in->nlookup++;
	atomic_store_explicit(&in->recent, true, memory_order_relaxed);
	pthread_mutex_unlock(&t->lock);
}

struct inode *inode_lookup_or_add(struct inode_table *t, int fd, const struct stat *st)
{
	struct file_handle *fh = fdcache_handle_of(t->fds, fd, "");
	struct inode *in, *fresh = NULL;

	pthread_mutex_lock(&t->lock);
	for (;;) {
		in = find_locked(t, st->st_dev, st->st_ino);
		if (in && (in == &t->root || fdcache_names(t->fds, &in->slot, fh))) {
			in->nlookup++;
			atomic_store_explicit(&in->recent, true, memory_order_relaxed);
			pthread_mutex_unlock(&t->lock);
			free(fresh);
			free(fh);
			close(fd);
			return in;
		}
		if (fresh)
			break;
		/* Allocate outside the lock, then look again. */
		pthread_mutex_unlock(&t->lock);
		fresh = calloc(1, sizeof(*fresh));
		if (!fresh) {
			free(fh);
			close(fd);
			return NULL;
		}
		inode_init(fresh, st);
		pthread_mutex_lock(&t->lock);
	}
	/* An entry by this number that is not this backing inode is an earlier
	 * one, gone, whose number was reused: lookups must no longer find it. */
	if (in)
		disown_locked(t, in);
	fdcache_slot_init(t->fds, &fresh->slot, fd, fh);
	fresh->nlookup = 1;
	hash_locked(t, fresh);
	t->count++;
	if (t->count > t->peak)
		t->peak = t->count;
	if (t->max && t->count > t->max)
		pthread_cond_signal(&t->over_bound);
	pthread_mutex_unlock(&t->lock);
	return fresh;
}

void inode_rebind(struct inode_table *t, const struct stat *was, int fd, const struct stat *st)
{
	bool same = was->st_dev == st->st_dev && was->st_ino == st->st_ino;
	struct file_handle *fh = fdcache_handle_of(t->fds, fd, "");
	struct inode *in;

	pthread_mutex_lock(&t->lock);
	in = find_locked(t, was->st_dev, was->st_ino);
	/* A fresh backing inode has no entry yet; the root is never replaced. */
	if (in && in != &t->root && (same || !find_locked(t, st->st_dev, st->st_ino))) {
		fdcache_rebind(t->fds, &in->slot, fd, fh);
		fd = -1;
		fh = NULL;
		if (!same) {
			xattr_absent_changed(in);
			unhash_locked(t, in);
			in->dev = st->st_dev;
			in->ino = st->st_ino;
			hash_locked(t, in);
		}
	}
	pthread_mutex_unlock(&t->lock);
	free(fh);
	if (fd >= 0)
		close(fd);
}

int inode_pin(struct inode_table *t, struct inode *in)
{
	atomic_store_explicit(&in->recent, true, memory_order_relaxed);
	return fdcache_pin(t->fds, &in->slot);
}

void inode_unpin(struct inode_table *t, struct inode *in)
{
	/* A forgotten inode is the descriptor cache's orphan until its last
	 * unpin: the cache's lock decides which of the two frees it. */
	if (fdcache_unpin(t->fds, &in->slot))
		inode_free(t, in);
}

void inode_forget(struct inode_table *t, struct inode *in, uint64_t n)
{
	pthread_mutex_lock(&t->lock);
	in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
	if (in->nlookup > 0 || in == &t->root) {
		pthread_mutex_unlock(&t->lock);
		return;
	}
	if (in->hashed)
		unhash_locked(t, in);
	else
		forget_disowned_locked(t, in);
	t->count--;
	t->freed++;
	pthread_mutex_unlock(&t->lock);
	/* A request may still use it (the kernel forgets it as soon as the
	 * reply is out): its last unpin frees it then. */
	if (fdcache_orphan(t->fds, &in->slot))
		inode_free(t, in);
}

/* counter_read - one of @t's counters (@field points into @t), read under its lock. */
static uint64_t counter_read(struct inode_table *t, const uint64_t *field)
{
	uint64_t n;

	pthread_mutex_lock(&t->lock);
	n = *field;
	pthread_mutex_unlock(&t->lock);
	return n;
}

uint64_t inode_count(struct inode_table *t)
{
	return counter_read(t, &t->count);
}

uint64_t inode_peak(struct inode_table *t)
{
	return counter_read(t, &t->peak);
}

uint64_t inode_freed(struct inode_table *t)
{
	return counter_read(t, &t->freed);
}

void inode_bound_set(struct inode_table *t, uint64_t max)
{
	pthread_mutex_lock(&t->lock);
	t->max = max;
	pthread_mutex_unlock(&t->lock);
}

uint64_t inode_bound_wait(struct inode_table *t)
{
	uint64_t n;

	pthread_mutex_lock(&t->lock);
	while (!t->bound_stopped && !(t->max && t->count > t->max))
		pthread_cond_wait(&t->over_bound, &t->lock);
	n = t->bound_stopped ? 0 : t->count;
	pthread_mutex_unlock(&t->lock);
	return n;
}

void inode_bound_stop(struct inode_table *t)
{
	pthread_mutex_lock(&t->lock);
	t->bound_stopped = true;
	pthread_cond_broadcast(&t->over_bound);
	pthread_mutex_unlock(&t->lock);
}

size_t inode_victims_each(struct inode_table *t, size_t cap, inode_victim_fn *take, void *arg)
{
	size_t n = 0, seen = 0;

	pthread_mutex_lock(&t->lock);
	/* One turn at most, so that each inode is handed out once: a turn that
	 * found all used took their second chances, and the next one finds them. */
	for (size_t step = 0; step < t->nbuckets && n < cap && seen < VICTIM_SCAN_MAX; step++) {
		/* The hash may have grown since: the hand is taken modulo its size. */
		t->hand &= t->nbuckets - 1;
		for (struct inode *in = t->buckets[t->hand]; in && n < cap; in = in->hash_next) {
			seen++;
			if (!atomic_exchange_explicit(&in->recent, false, memory_order_relaxed) &&
			    take(arg, in))
				n++;
		}
		t->hand++;
	}
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* The ids being filled by inode_victims(). */
struct victim_ids {
	uint64_t *ids;
	size_t n;
};

static bool take_id(void *arg, struct inode *in)
{
	struct victim_ids *v = arg;

	v->ids[v->n++] = (uint64_t)(uintptr_t)in;
	return true;
}

size_t inode_victims(struct inode_table *t, uint64_t *ids, size_t cap)
{
	struct victim_ids v = {.ids = ids};

	return inode_victims_each(t, cap, take_id, &v);
}

struct inode_kname *inode_kname_swap(struct inode_table *t, struct inode *in,
				     struct inode_kname *name)
{
	struct inode_kname *was;

	pthread_mutex_lock(&t->lock);
	was = in->kname;
	in->kname = name;
	pthread_mutex_unlock(&t->lock);
	return was;
}

struct inode_kname *inode_kname_swap_at(struct inode_table *t, const struct stat *st,
					struct inode_kname *name)
{
	struct inode *in;
	struct inode_kname *was = name;

	pthread_mutex_lock(&t->lock);
	in = find_locked(t, st->st_dev, st->st_ino);
	/* The root is never evicted: it keeps no name. */
	if (in && in != &t->root) {
		was = in->kname;
		in->kname = name;
	}
	pthread_mutex_unlock(&t->lock);
	return was;
}

struct inode_kname *inode_kname_take_if(struct inode_table *t, dev_t dev, ino_t ino,
					const struct inode_kname *name)
{
	struct inode *in;
	struct inode_kname *was = NULL;

	pthread_mutex_lock(&t->lock);
	in = find_locked(t, dev, ino);
	if (in && in != &t->root && in->kname == name) {
		was = in->kname;
		in->kname = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	return was;
}

unsigned inode_open_fds(struct inode_table *t)
{
	return fdcache_open_fds(t->fds);
}

bool inode_fds_bounded(struct inode_table *t)
{
	return fdcache_bounded(t->fds);
}
