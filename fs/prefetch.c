// SPDX-License-Identifier: MIT
/* Unwrap the DEKs of a directory's files ahead, in batches: see prefetch.h. */
#include "prefetch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "envfs.h"
#include "prefetch_listing.h"
#include "prefetch_order.h"
#include "prefetch_window.h"

/* Files per kms_unwrap_many call at most: one Transit batch request. */
#define PREFETCH_BATCH 64
/* The first batch of a directory a reader asked for: small, so its first
 * file's DEK comes back soon.  A subdirectory found ahead starts at
 * PREFETCH_BATCH: nobody waits on it yet, and a Transit request costs about
 * as much as 16 more items in it (fewer requests, less KMS time per file). */
#define PREFETCH_FIRST_BATCH 8
/* Entries a worker looks at per batch, at most: a directory of files that
 * need nothing (cached, not regular) does not hold a worker for long. */
#define PREFETCH_SCAN_MAX 1024
/* Past this many entries a directory's read ahead starts in inode-number
 * order (prefetch_listing.h): gnulib fts's threshold for sorting by inode. */
#define PREFETCH_INODE_ORDER_MIN 10000
/* Entries all listings alive at once may hold (four of LISTING_MAX, some
 * 80 MiB): a directory past it is read ahead from its stream, in directory
 * order. */
#define PREFETCH_LISTED_MAX (4 * (size_t)LISTING_MAX)
/* Workers: while one waits for the KMS, another reads the next records. */
#define PREFETCH_WORKERS 2
/* While a batch is running, another worker starts one only once the window
 * has room for this many files (or all of it, if smaller): a reader opening
 * one file at a time frees one entry at a time, and a batch per entry freed
 * would cost a KMS request per file.  With no batch running, any room is
 * filled, so that the window fills up whole. */
#define PREFETCH_MIN_ROOM 16
/* An idle worker looks again this often: ready entries expire, room frees. */
#define PREFETCH_IDLE_WAKE_MS 1000

/* One file of a batch: its own fd, its window entry, record and KMS context. */
struct pending {
	int fd;
	struct window_entry *e;
	struct key_record rec;
	struct kms_context ctx;
};

/* A worker and its buffers, allocated once. */
struct worker {
	struct prefetch *p;
	pthread_t thread;
	struct pending *pend; /* PREFETCH_BATCH */
	struct kms_unwrap_item items[PREFETCH_BATCH];
	uint8_t *deks; /* PREFETCH_BATCH DEKs, secmem */
};

/* A directory being read ahead.  Guarded by the prefetch lock, except the
 * stream, which only the worker that set @collecting uses.  A used slot has
 * a stream until it is done. */
struct pf_dir {
	bool used;
	bool in_root;
	bool speculative; /* a subdirectory found by the workers, not asked for yet */
	bool collecting; /* a worker reads the stream: the slot stays */
	bool done;	 /* read to its end (stream closed) */
	dev_t dev;
	ino_t ino;
	uid_t uid;	 /* the requester whose listing or lookup started it: */
	gid_t gid;	 /* its subdirectories are read ahead if it may list them */
	unsigned gen;	 /* tells a reused slot from the one a window entry names */
	DIR *dp;	 /* the workers' own stream, NULL once done */
	bool order_known; /* the stream was read whole once, to choose the order */
	/* The directory's entries (immutable once here; freed by the worker
	 * that reads it to its end, or with the slot), read ahead in the order
	 * the reader's opens go in (prefetch_order.h). */
	struct listing *list;
	struct read_order order;
	unsigned batch;	 /* the next batch's size */
	/* DEKs unwrapped ahead that were opened, and that expired unopened: a
	 * reader going another order than the stream (find and cp -r go by
	 * inode number in a big directory) wastes the window, and the
	 * directory is given up once most of what it gave went unused. */
	unsigned used_ahead, wasted;
	int64_t added_ms, active_ms, done_ms;
};

/* A directory to read ahead: @name in the directory open as @parent_fd. */
struct dir_ref {
	int parent_fd;
	const char *name;
	dev_t dev;
	ino_t ino;
	bool in_root;
	bool speculative; /* found by a worker, not asked for */
	uid_t uid;
	gid_t gid;
};

struct prefetch {
	struct envfs *fs;

	pthread_mutex_t lock;	    /* guards everything below */
	pthread_cond_t wake;	    /* workers: a directory, room, or stop */
	pthread_cond_t batch_done;  /* opens waiting for a batch */
	struct window win;
	struct pf_dir dirs[PREFETCH_DIRS];
	unsigned gen;
	unsigned running; /* workers in a batch */
	size_t listed; /* entries of the slots' listings, at most PREFETCH_LISTED_MAX */
	bool stop;
	struct prefetch_stats stats;

	unsigned n_workers; /* started */
	struct worker workers[PREFETCH_WORKERS];
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct pf_dir *find_dir(struct prefetch *p, dev_t dev, ino_t ino)
{
	for (unsigned i = 0; i < PREFETCH_DIRS; i++)
		if (p->dirs[i].used && p->dirs[i].dev == dev && p->dirs[i].ino == ino)
			return &p->dirs[i];
	return NULL;
}

static bool dir_idle(const struct pf_dir *d, int64_t now)
{
	return now - d->active_ms >= PREFETCH_IDLE_MS;
}

/*
 * evict_rank - how readily @d's slot goes to another directory: 0 free, 1
 * read to its end, 2 speculative, 3 idle; -1 never (a worker reads it, or
 * someone reads it now).
 */
static int evict_rank(const struct pf_dir *d, int64_t now)
{
	if (!d->used)
		return 0;
	if (d->collecting)
		return -1;
	if (d->done)
		return 1;
	if (d->speculative)
		return 2;
	return dir_idle(d, now) ? 3 : -1;
}

/*
 * slot_to_take - the slot a new directory would take, of rank @max_rank at
 * most (evict_rank): the lowest rank first, the longest unused among
 * equals; NULL when none.
 */
static struct pf_dir *slot_to_take(struct prefetch *p, int64_t now, int max_rank)
{
	struct pf_dir *best = NULL;
	int best_rank = 0;

	for (unsigned i = 0; i < PREFETCH_DIRS; i++) {
		struct pf_dir *d = &p->dirs[i];
		int rank = evict_rank(d, now);

		if (rank < 0 || rank > max_rank)
			continue;
		if (!best || rank < best_rank ||
		    (rank == best_rank && d->active_ms < best->active_ms)) {
			best = d;
			best_rank = rank;
		}
	}
	return best;
}

/* pick_dir - the directory a worker reads next: the first triggered of those worth reading. */
static struct pf_dir *pick_dir(struct prefetch *p, int64_t now)
{
	struct pf_dir *best = NULL;

	for (unsigned i = 0; i < PREFETCH_DIRS; i++) {
		struct pf_dir *d = &p->dirs[i];

		if (d->used && !d->done && !d->collecting && !dir_idle(d, now) &&
		    !(d->wasted >= PREFETCH_BATCH && d->wasted > d->used_ahead) &&
		    (!best || d->added_ms < best->added_ms))
			best = d;
	}
	return best;
}

/* dir_of - the directory @e was read from, if its slot still holds it. */
static struct pf_dir *dir_of(struct prefetch *p, const struct window_entry *e)
{
	struct pf_dir *d = &p->dirs[e->dir_slot];

	return d->used && d->gen == e->dir_gen ? d : NULL;
}

/* Ready entries older than PREFETCH_READY_TTL_MS leave the window, counted as wasted. */
static void expire_ready(struct prefetch *p, int64_t now)
{
	struct window_entry *e;

	while ((e = window_oldest_ready(&p->win)) && e->ready_ms < now - PREFETCH_READY_TTL_MS) {
		struct pf_dir *d = dir_of(p, e);

		if (d)
			d->wasted++;
		window_free(&p->win, e);
	}
}

/*
 * open_regular - a readable fd on the regular file @name of directory
 * @dirfd, or -1.  Never opens anything else (a FIFO would block, a device
 * could act on the open).
 */
static int open_regular(int dirfd, const char *name, unsigned char d_type)
{
	const int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
	struct stat st;
	int fd;

	if (d_type == DT_UNKNOWN &&
	    (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)))
		return -1;
	/* O_NOATIME: the look ahead is not a read; only the owner (or root) may ask. */
	fd = openat(dirfd, name, flags | O_NOATIME);
	if (fd < 0 && errno == EPERM)
		fd = openat(dirfd, name, flags);
	if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/*
 * worth_unwrapping - read the record of @fd into @rec: 0 when it exists,
 * is not mid re-key, names @kms's master key (the provider the batch uses;
 * records still under a previous one, mid-migration, unwrap at open) and
 * no cached entry has its file ID; else negative.  @st: the file's.
 */
static int worth_unwrapping(struct envfs *fs, const struct kms *kms, int fd,
			    const struct stat *st, struct key_record *rec)
{
	int ret = layout_read_record(&fs->layout, fd, rec, NULL);

	if (ret < 0)
		return ret;
	if ((rec->flags & RECORD_FLAG_REKEYING) || strcmp(rec->key_ref, kms->key_ref) != 0)
		return -EIO;
	if (dekcache_holds(fs->cache, st->st_dev, st->st_ino, rec->file_id))
		return -EALREADY;
	return 0;
}

/* settle - the batch is done with @e (result @rc).  Lock held. */
static void settle(struct prefetch *p, struct window_entry *e, int rc, int64_t now)
{
	e->rc = rc;
	if (e->waiters > 0)
		e->state = WINDOW_DONE; /* the last waiter frees it */
	else if (rc == 0 && !e->opened)
		window_ready(&p->win, e, now);
	else
		window_free(&p->win, e);
}

/*
 * opened_already - whether the file @st (the worker's @fd) is open through
 * the mount (or its key lock busy: an open or a re-wrap is at it): its open
 * loads its own key.  Asked after the file is claimed in the window, so an
 * open either counted itself before (seen here) or finds the claim and
 * waits for the batch: never both unwrapping it.
 */
static bool opened_already(struct envfs *fs, const struct stat *st, int fd)
{
	struct inode *in = inode_lookup_known(fs->inodes, st, fd, "");
	bool open = true;

	if (!in)
		return false;
	if (pthread_mutex_trylock(&in->key_lock) == 0) {
		open = in->opens > 0 || in->dek;
		pthread_mutex_unlock(&in->key_lock);
	}
	inode_forget(fs->inodes, in, 1);
	return open;
}

static void follow_dir(struct prefetch *p, const struct dir_ref *r);

/*
 * choose_order - read @d's stream whole, once, into a listing: the workers
 * then read ahead from it, never from the stream again (on a remote backing
 * a second pass would double the directory reads).  A directory of more
 * than PREFETCH_INODE_ORDER_MIN entries starts in inode order (find's fts
 * and cp -r there), a smaller one in directory order; either then follows
 * the reader's opens (follow_reader).  A directory past LISTING_MAX, or
 * whose listing would take the listings past PREFETCH_LISTED_MAX, or out of
 * memory, is read from its stream again, in directory order.
 */
static void choose_order(struct prefetch *p, struct pf_dir *d)
{
	struct listing *l = calloc(1, sizeof(*l));
	int ret = l ? 0 : -ENOMEM;
	bool room;

	d->order_known = true;
	if (ret == 0)
		ret = listing_read(l, d->dp);
	if (ret == 0)
		ret = listing_index(l);
	if (ret == 0) {
		pthread_mutex_lock(&p->lock);
		room = p->listed + l->n <= PREFETCH_LISTED_MAX;
		if (room) {
			p->listed += l->n;
			d->list = l;
			read_order_init(&d->order, l->n > PREFETCH_INODE_ORDER_MIN);
		}
		pthread_mutex_unlock(&p->lock);
		if (room)
			return;
	}
	if (l)
		listing_free(l);
	free(l);
	rewinddir(d->dp);
}

/* An entry of a directory read ahead: its name and d_type. */
struct entry {
	const char *name;
	unsigned char type;
};

/* next_entry - @d's next entry, from its listing or its stream; false at the end. */
static bool next_entry(struct prefetch *p, struct pf_dir *d, struct entry *out)
{
	const struct listing_entry *le = NULL;
	struct dirent *de;

	if (d->list) {
		pthread_mutex_lock(&p->lock);
		if (d->order.pos < d->list->n)
			le = listing_at(d->list, d->order.pos++, d->order.inode_order);
		pthread_mutex_unlock(&p->lock);
		if (le)
			*out = (struct entry){ .name = listing_name(d->list, le), .type = le->type };
		return le != NULL;
	}
	de = readdir(d->dp);
	if (de)
		*out = (struct entry){ .name = de->d_name, .type = de->d_type };
	return de != NULL;
}

/* drop_listing - @d is read to its end: its listing goes (the worker reading @d calls). */
static void drop_listing(struct prefetch *p, struct pf_dir *d)
{
	struct listing *l;

	pthread_mutex_lock(&p->lock);
	l = d->list;
	d->list = NULL;
	p->listed -= l ? l->n : 0;
	pthread_mutex_unlock(&p->lock);
	if (l)
		listing_free(l);
	free(l);
}

/*
 * subdir - entry @name of @d is a directory (0: follow it, the requester
 * that started @d permitting), or not one (-ENOTDIR).
 */
static int subdir(struct prefetch *p, struct pf_dir *d, const char *name)
{
	struct stat st;

	if (fstatat(dirfd(d->dp), name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (prefetch_may_list(d->uid, d->gid, &st))
		follow_dir(p, &(struct dir_ref){ .parent_fd = dirfd(d->dp), .name = name,
						 .dev = st.st_dev, .ino = st.st_ino,
						 .speculative = true, .uid = d->uid, .gid = d->gid });
	return 0;
}

/*
 * collect - read up to @want files of @d's stream into the worker's batch,
 * each claimed in the window (the caller reserved @want entries), and
 * follow its subdirectories: a tree walk (cp -r, tar) finds the next
 * directory's DEKs unwrapped already.  Sets *@end when the stream is at its
 * end.  Returns the number taken.
 */
static unsigned collect(struct worker *w, struct pf_dir *d, const struct kms *kms, unsigned want,
			bool *end, unsigned *skipped)
{
	struct prefetch *p = w->p;
	struct envfs *fs = p->fs;
	unsigned k = 0, seen = 0;
	struct entry de;

	*end = false;
	if (!d->order_known)
		choose_order(p, d);
	while (k < want && seen++ < PREFETCH_SCAN_MAX) {
		struct pending *pe = &w->pend[k];
		struct stat st;

		if (!next_entry(p, d, &de)) {
			*end = true;
			drop_listing(p, d);
			break;
		}
		if ((de.type != DT_REG && de.type != DT_DIR && de.type != DT_UNKNOWN) ||
		    names_classify(fs->names, d->in_root, de.name) == NAMES_ENTRY_HIDDEN)
			continue;
		if ((de.type == DT_DIR || de.type == DT_UNKNOWN) &&
		    (subdir(p, d, de.name) == 0 || de.type == DT_DIR))
			continue;
		pe->fd = open_regular(dirfd(d->dp), de.name, de.type);
		if (pe->fd < 0 || fstat(pe->fd, &st) < 0 ||
		    worth_unwrapping(fs, kms, pe->fd, &st, &pe->rec) < 0) {
			if (pe->fd >= 0)
				close(pe->fd);
			(*skipped)++;
			continue;
		}
		pthread_mutex_lock(&p->lock);
		pe->e = window_claim(&p->win, st.st_dev, st.st_ino);
		if (pe->e) {
			pe->e->dir_slot = (unsigned)(d - p->dirs);
			pe->e->dir_gen = d->gen;
		}
		pthread_mutex_unlock(&p->lock);
		/* Checked again once claimed: an open, read and close of the file
		 * between the first look and the claim cached its DEK, and left no
		 * trace opened_already() sees. */
		if (pe->e && (opened_already(fs, &st, pe->fd) ||
			      dekcache_holds(fs->cache, st.st_dev, st.st_ino, pe->rec.file_id))) {
			pthread_mutex_lock(&p->lock);
			settle(p, pe->e, -EALREADY, 0);
			pthread_cond_broadcast(&p->batch_done); /* an open may wait on it already */
			p->win.reserved++; /* the unit the claim took, for the next file */
			pthread_mutex_unlock(&p->lock);
			pe->e = NULL;
		}
		if (!pe->e) { /* open, in flight in another batch (a hard link), or ready */
			close(pe->fd);
			(*skipped)++;
			continue;
		}
		memcpy(pe->ctx.volume_uuid, fs->cfg.uuid, sizeof(pe->ctx.volume_uuid));
		memcpy(pe->ctx.file_id, pe->rec.file_id, sizeof(pe->ctx.file_id));
		w->items[k] = (struct kms_unwrap_item){
			.ctx = &pe->ctx, .blob = pe->rec.wrapped, .blob_len = pe->rec.wrapped_len,
			.dek = w->deks + (size_t)k * KMS_DEK_LEN,
		};
		k++;
	}
	return k;
}

/*
 * cache_one - check the unwrapped DEK of @pe as a cold open does (the
 * record MAC) and cache it under the record's file ID.  0 or the error.
 */
static int cache_one(struct envfs *fs, const struct pending *pe, const uint8_t *dek, int rc)
{
	struct dek_entry *e;
	struct stat st;

	if (rc == 0 && record_check_mac(&pe->rec, dek, fs->cfg.uuid) != 0)
		rc = -EBADMSG;
	if (rc == 0)
		rc = dekcache_insert(fs->cache, pe->e->dev, pe->e->ino, pe->rec.file_id,
				     pe->rec.key_version, dek, &e);
	if (rc == 0) {
		dekcache_put(fs->cache, e);
		/* Unlink forgets the key after removing the name: looking at the link
		 * count after the insert, a file unlinked meanwhile is never left with
		 * its key cached (whichever of the two forgets it).  The fd held since
		 * the record was read keeps the inode number from being reused. */
		if (fstat(pe->fd, &st) == 0 && st.st_nlink == 0)
			dekcache_forget(fs->cache, pe->e->dev, pe->e->ino);
	}
	return rc;
}

/*
 * run_batch - read up to @want files of @d (reserved in the window, and
 * @d marked collecting by the caller), unwrap them through @kms in one
 * call, cache the good DEKs and settle their window entries.
 */
static void run_batch(struct worker *w, struct pf_dir *d, struct kms *kms, unsigned want)
{
	struct prefetch *p = w->p;
	unsigned i, k, skipped = 0, unwrapped = 0;
	int rc[PREFETCH_BATCH];
	DIR *closing = NULL;
	bool end;
	int64_t now;

	k = collect(w, d, kms, want, &end, &skipped);
	pthread_mutex_lock(&p->lock);
	p->win.reserved -= want - k;
	d->collecting = false;
	if (end) {
		d->done = true;
		d->done_ms = now_ms();
		closing = d->dp;
		d->dp = NULL;
	} else {
		pthread_cond_signal(&p->wake); /* another worker may read on meanwhile */
	}
	p->stats.queued += k;
	p->stats.skipped += skipped;
	pthread_mutex_unlock(&p->lock);
	if (closing)
		closedir(closing);

	if (k > 0)
		kms_unwrap_many(kms, w->items, k);
	for (i = 0; i < k; i++) {
		rc[i] = cache_one(p->fs, &w->pend[i], w->items[i].dek, w->items[i].rc);
		unwrapped += rc[i] == 0;
		close(w->pend[i].fd);
	}
	secmem_wipe(w->deks, (size_t)k * KMS_DEK_LEN);

	now = now_ms();
	pthread_mutex_lock(&p->lock);
	for (i = 0; i < k; i++)
		settle(p, w->pend[i].e, rc[i], now);
	p->stats.batches += k > 0;
	p->stats.unwrapped += unwrapped;
	p->stats.failed += k - unwrapped;
	pthread_cond_broadcast(&p->batch_done);
	pthread_mutex_unlock(&p->lock);
}

static void wait_ms(struct prefetch *p, int64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&p->wake, &p->lock, &ts);
}

/*
 * A worker holds the volume's KMS set (kmsset.h) for one batch only, never
 * while idle, so a provider reload waits at most one KMS call for it.
 */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct prefetch *p = w->p;
	const struct kms_set *set;
	const unsigned min_room = p->win.capacity < PREFETCH_MIN_ROOM ? p->win.capacity
								     : PREFETCH_MIN_ROOM;
	struct pf_dir *d;
	unsigned want, room;
	int64_t now;

	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		now = now_ms();
		expire_ready(p, now);
		room = window_room(&p->win);
		d = room && (room >= min_room || !p->running) ? pick_dir(p, now) : NULL;
		if (!d) {
			wait_ms(p, PREFETCH_IDLE_WAKE_MS);
			continue;
		}
		want = window_room(&p->win) < d->batch ? window_room(&p->win) : d->batch;
		d->batch = d->batch * 2 < PREFETCH_BATCH ? d->batch * 2 : PREFETCH_BATCH;
		p->win.reserved += want;
		d->collecting = true;
		p->running++;
		pthread_mutex_unlock(&p->lock);
		set = kms_keeper_get(p->fs->keys);
		run_batch(w, d, set->keys.current, want);
		kms_keeper_put(p->fs->keys, set);
		pthread_mutex_lock(&p->lock);
		p->running--;
		pthread_cond_signal(&p->wake); /* a worker held back by PREFETCH_MIN_ROOM */
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int prefetch_create(struct envfs *fs, unsigned ahead, struct prefetch **out)
{
	struct prefetch *p = calloc(1, sizeof(*p));
	unsigned i;
	int ret;

	if (!p)
		return -ENOMEM;
	p->fs = fs;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->batch_done, NULL);
	ret = window_init(&p->win, ahead);
	for (i = 0; i < PREFETCH_WORKERS && ret == 0; i++) {
		struct worker *w = &p->workers[i];

		w->p = p;
		w->pend = calloc(PREFETCH_BATCH, sizeof(*w->pend));
		w->deks = secmem_alloc((size_t)PREFETCH_BATCH * KMS_DEK_LEN);
		if (!w->pend || !w->deks)
			ret = -ENOMEM;
	}
	for (; ret == 0 && p->n_workers < PREFETCH_WORKERS; p->n_workers++) {
		ret = -pthread_create(&p->workers[p->n_workers].thread, NULL, worker_main,
				      &p->workers[p->n_workers]);
		if (ret < 0)
			break;
	}
	if (ret < 0) {
		prefetch_destroy(p);
		return ret;
	}
	*out = p;
	return 0;
}

void prefetch_destroy(struct prefetch *p)
{
	unsigned i;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->n_workers; i++)
		pthread_join(p->workers[i].thread, NULL);
	for (i = 0; i < PREFETCH_WORKERS; i++) {
		free(p->workers[i].pend);
		secmem_free(p->workers[i].deks, (size_t)PREFETCH_BATCH * KMS_DEK_LEN);
	}
	for (i = 0; i < PREFETCH_DIRS; i++) {
		if (p->dirs[i].dp)
			closedir(p->dirs[i].dp);
		if (p->dirs[i].list)
			listing_free(p->dirs[i].list);
		free(p->dirs[i].list);
	}
	window_fini(&p->win);
	pthread_cond_destroy(&p->batch_done);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* dir_followed - whether @d needs no new stream: known, and not read to its end long ago. */
static bool dir_followed(const struct pf_dir *d, int64_t now)
{
	return d && !(d->done && now - d->done_ms >= PREFETCH_DONE_TTL_MS);
}

bool prefetch_may_list(uid_t uid, gid_t gid, const struct stat *st)
{
	if (uid == 0)
		return true;
	if (uid == st->st_uid)
		return st->st_mode & S_IRUSR;
	if (gid == st->st_gid)
		return st->st_mode & S_IRGRP;
	return (st->st_mode & (S_IRGRP | S_IROTH)) == (S_IRGRP | S_IROTH);
}

/* follow_dir - read the directory @r ahead, if it is not followed already and a slot is free. */
static void follow_dir(struct prefetch *p, const struct dir_ref *r)
{
	/* A subdirectory takes only a free slot or a finished one's: it never
	 * pushes out a directory someone is reading, nor another found ahead. */
	const int max_rank = r->speculative ? 1 : 3;
	struct pf_dir *d;
	DIR *dp, *old = NULL;
	struct listing *old_list = NULL;
	int64_t now = now_ms();
	struct stat st;
	int fd;

	pthread_mutex_lock(&p->lock);
	d = find_dir(p, r->dev, r->ino);
	if (dir_followed(d, now)) {
		if (!r->speculative) {
			if (!d->done && dir_idle(d, now))
				pthread_cond_signal(&p->wake); /* it may be read again */
			d->active_ms = now;
			d->speculative = false;
		}
		pthread_mutex_unlock(&p->lock);
		return;
	}
	if (!d && !slot_to_take(p, now, max_rank)) {
		p->stats.overflow += !r->speculative;
		pthread_mutex_unlock(&p->lock);
		return;
	}
	pthread_mutex_unlock(&p->lock);

	/* A stream of the workers' own: a requester's has its own offset. */
	fd = openat(r->parent_fd, r->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 && (fstat(fd, &st) < 0 || st.st_dev != r->dev || st.st_ino != r->ino)) {
		close(fd); /* the name moved on meanwhile */
		fd = -1;
	}
	dp = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dp) {
		if (fd >= 0)
			close(fd);
		return;
	}
	pthread_mutex_lock(&p->lock);
	d = find_dir(p, r->dev, r->ino);
	if (dir_followed(d, now)) { /* another thread was first */
		old = dp;
	} else if (d || (d = slot_to_take(p, now, max_rank))) {
		old = d->dp; /* an idle directory's stream, given up */
		old_list = d->list;
		p->listed -= old_list ? old_list->n : 0;
		*d = (struct pf_dir){ .used = true, .in_root = r->in_root,
				      .speculative = r->speculative, .dev = r->dev, .ino = r->ino,
				      .uid = r->uid, .gid = r->gid, .gen = ++p->gen, .dp = dp,
				      .batch = r->speculative ? PREFETCH_BATCH : PREFETCH_FIRST_BATCH,
				      .added_ms = now,
				      .active_ms = now };
		pthread_cond_signal(&p->wake);
	} else {
		p->stats.overflow += !r->speculative;
		old = dp;
	}
	pthread_mutex_unlock(&p->lock);
	if (old)
		closedir(old);
	if (old_list)
		listing_free(old_list);
	free(old_list);
}

void prefetch_dir(struct prefetch *p, struct inode *dir, bool in_root, uid_t uid, gid_t gid)
{
	if (p)
		follow_dir(p, &(struct dir_ref){ .parent_fd = inode_fd(dir), .name = ".", .dev = dir->dev,
						 .ino = dir->ino, .in_root = in_root, .uid = uid,
						 .gid = gid });
}

/*
 * drop_ready_of - @d's ready entries leave the window (their DEKs stay
 * cached): read ahead in an order the reader does not go in, they would
 * hold the window until they expire.
 */
static void drop_ready_of(struct prefetch *p, const struct pf_dir *d)
{
	struct window_entry *e = window_oldest_ready(&p->win), *next;

	for (; e && e != &p->win.ready; e = next) {
		next = e->next;
		if (dir_of(p, e) == d)
			window_free(&p->win, e);
	}
}

/*
 * follow_reader - the file @ino of a directory read ahead from a listing was
 * opened: read on in the order the reader goes (prefetch_order.h), dropping
 * what was read ahead in the other.  Lock held.
 */
static void follow_reader(struct prefetch *p, dev_t dev, ino_t ino)
{
	for (unsigned i = 0; i < PREFETCH_DIRS; i++) {
		struct pf_dir *d = &p->dirs[i];
		size_t dir_k, ino_k;

		if (!d->used || !d->list || d->dev != dev || !listing_find(d->list, ino, &dir_k, &ino_k))
			continue;
		if (read_order_opened(&d->order, dir_k, ino_k)) {
			drop_ready_of(p, d);
			pthread_cond_signal(&p->wake); /* room */
		}
		return;
	}
}

void prefetch_opened(struct prefetch *p, dev_t dev, ino_t ino)
{
	struct window_entry *e;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	e = window_find(&p->win, dev, ino);
	if (e) {
		struct pf_dir *d = dir_of(p, e);

		if (d) {
			d->active_ms = now_ms();
			d->used_ahead++;
		}
		if (e->state == WINDOW_READY) {
			window_free(&p->win, e);
			pthread_cond_signal(&p->wake); /* room */
		} else {
			e->opened = true;
		}
	}
	follow_reader(p, dev, ino);
	pthread_mutex_unlock(&p->lock);
}

bool prefetch_wait(struct prefetch *p, dev_t dev, ino_t ino, int *rc)
{
	struct window_entry *e;

	if (!p)
		return false;
	pthread_mutex_lock(&p->lock);
	e = window_find(&p->win, dev, ino);
	if (!e || e->state == WINDOW_READY) {
		pthread_mutex_unlock(&p->lock);
		return false;
	}
	/* A waited-on entry is neither freed nor reused until its last waiter
	 * is gone (prefetch_window.h), so @e stays this file's. */
	e->waiters++;
	p->stats.waited++;
	while (e->state == WINDOW_IN_FLIGHT)
		pthread_cond_wait(&p->batch_done, &p->lock);
	*rc = e->rc;
	if (--e->waiters == 0)
		window_free(&p->win, e);
	pthread_cond_signal(&p->wake); /* room */
	pthread_mutex_unlock(&p->lock);
	return true;
}

void prefetch_get_stats(struct prefetch *p, struct prefetch_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	*out = p->stats;
	pthread_mutex_unlock(&p->lock);
}
