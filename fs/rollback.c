/* SPDX-License-Identifier: MIT */
/* Per-host versions of files: see rollback.h. */
#include "rollback.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/hex.h"
#include "hoststate.h"
#include "log.h"

/* How often the sync thread writes the versions learnt since (ms). */
#define LEARN_DELAY_MS 1000

/* A version learnt and not written to the table yet. */
struct pending_learn {
	uint8_t file_id[RECORD_FILE_ID_LEN];
	uint64_t version;
};

/* A bump waiting for the syncfs that makes it durable. */
struct queued_bump {
	uint8_t file_id[RECORD_FILE_ID_LEN];
	uint64_t version;
	uint64_t gen;
};

struct rollback {
	struct rollback_table table;
	atomic_uint tmp_seq;	 /* names the temporary files of concurrent learns */
	/* One write of the table at a time (a lower one never wins a race),
	 * and rollback_seen() never between a flush's taking and writing. */
	pthread_mutex_t learn_lock;

	/* Generations (rollback.h).  bump_gen: the last one given out;
	 * synced_gen: covered by a completed syncfs. */
	atomic_uint_fast64_t bump_gen, synced_gen;

	pthread_mutex_t lock; /* guards the queue, the learnt versions and stop */
	pthread_cond_t wake;
	struct queued_bump queue[ROLLBACK_QUEUE_MAX]; /* a ring */
	unsigned head, count;
	/* Learnt, to be written by the sync thread: one entry per file ID,
	 * so a loop of fsyncs writes the table once per LEARN_DELAY_MS. */
	struct pending_learn learnt[ROLLBACK_LEARN_MAX];
	unsigned n_learnt;
	/* Dropped (rollback_drop()), to be removed from the table by the sync
	 * thread after the learnt versions it writes. */
	uint8_t dropped[ROLLBACK_DROP_MAX][RECORD_FILE_ID_LEN];
	unsigned n_dropped;
	bool stop;

	int sync_fd; /* the backing root, -1: no syncfs */
	unsigned interval;
	pthread_t thread;
	bool thread_running;
};

static void *sync_thread(void *arg);

int rollback_open(const char *root, const uint8_t uuid[16], int sync_fd, unsigned interval,
		  struct rollback **out)
{
	struct rollback *rb = calloc(1, sizeof(*rb));
	int ret;

	if (!rb) {
		if (sync_fd >= 0)
			close(sync_fd);
		return -ENOMEM;
	}
	rb->sync_fd = sync_fd;
	rb->interval = interval;
	atomic_init(&rb->bump_gen, ROLLBACK_GEN_DURABLE);
	atomic_init(&rb->synced_gen, ROLLBACK_GEN_DURABLE);
	pthread_mutex_init(&rb->learn_lock, NULL);
	pthread_mutex_init(&rb->lock, NULL);
	pthread_cond_init(&rb->wake, NULL);
	ret = hoststate_volume_file(root, uuid, ROLLBACK_VERSIONS_DIR, 1, rb->table.dir,
				    sizeof(rb->table.dir));
	if (ret == 0 && mkdir(rb->table.dir, 0700) < 0 && errno != EEXIST)
		ret = -errno;
	if (ret == 0) {
		ret = -pthread_create(&rb->thread, NULL, sync_thread, rb);
		rb->thread_running = ret == 0;
	}
	if (ret < 0) {
		rollback_close(rb, false);
		return ret;
	}
	*out = rb;
	return 0;
}

/* entry_path - ROOT/<uuid>/versions/<2 hex>[/<30 hex>] of @file_id into @out. */
static void entry_path(const struct rollback_table *t, const uint8_t *file_id, bool file,
		       char out[PATH_MAX])
{
	char hex[2 * RECORD_FILE_ID_LEN + 1];

	hex_encode(file_id, RECORD_FILE_ID_LEN, hex);
	snprintf(out, PATH_MAX, "%s/%.2s%s%s", t->dir, hex, file ? "/" : "", file ? hex + 2 : "");
}

/* pending_of - a version of @file_id learnt and not written yet, 0 if none.  rb->lock held. */
static uint64_t pending_of(const struct rollback *rb, const uint8_t *file_id)
{
	for (unsigned i = 0; i < rb->n_learnt; i++)
		if (memcmp(rb->learnt[i].file_id, file_id, RECORD_FILE_ID_LEN) == 0)
			return rb->learnt[i].version;
	return 0;
}

int rollback_table_at(const char *root, const uint8_t uuid[16], struct rollback_table *t)
{
	return hoststate_volume_file(root, uuid, ROLLBACK_VERSIONS_DIR, 0, t->dir, sizeof(t->dir));
}

uint64_t rollback_table_version(const struct rollback_table *t,
				const uint8_t file_id[RECORD_FILE_ID_LEN])
{
	char path[PATH_MAX], text[24], *end;
	uint64_t version;
	ssize_t n;
	int fd;

	entry_path(t, file_id, true, path);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	version = strtoull(text, &end, 10);
	/* A torn or foreign file is no knowledge: it can only miss a rollback. */
	return *end == '\n' ? version : 0;
}

bool rollback_table_rolled_back(const struct rollback_table *t, const struct key_record *rec,
				uint64_t *seen)
{
	*seen = rollback_table_version(t, rec->file_id);
	return rec->file_version < *seen;
}

int rollback_table_remove(const struct rollback_table *t,
			  const uint8_t file_id[RECORD_FILE_ID_LEN])
{
	char path[PATH_MAX];

	entry_path(t, file_id, true, path);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	/* The <2 hex> directory goes when it was the last entry in it. */
	entry_path(t, file_id, false, path);
	rmdir(path);
	return 0;
}

/* each_in - rollback_table_each() of the entries of one <2 hex> directory @prefix. */
static int each_in(const struct rollback_table *t, const char *prefix,
		   int (*fn)(void *arg, const uint8_t file_id[RECORD_FILE_ID_LEN]), void *arg)
{
	char path[PATH_MAX], hex[2 * RECORD_FILE_ID_LEN + 1];
	uint8_t id[RECORD_FILE_ID_LEN];
	struct dirent *e;
	DIR *d;
	int ret = 0;

	snprintf(path, sizeof(path), "%s/%s", t->dir, prefix);
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (ret == 0 && (e = readdir(d))) {
		if (strlen(e->d_name) != 2 * RECORD_FILE_ID_LEN - 2)
			continue;
		snprintf(hex, sizeof(hex), "%s%s", prefix, e->d_name);
		if (hex_decode(hex, id, sizeof(id)) == 0)
			ret = fn(arg, id);
	}
	closedir(d);
	return ret;
}

int rollback_table_each(const struct rollback_table *t,
			int (*fn)(void *arg, const uint8_t file_id[RECORD_FILE_ID_LEN]),
			void *arg)
{
	DIR *d = opendir(t->dir);
	struct dirent *e;
	int ret = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (ret == 0 && (e = readdir(d)))
		if (strlen(e->d_name) == 2 && isxdigit((unsigned char)e->d_name[0]) &&
		    isxdigit((unsigned char)e->d_name[1]))
			ret = each_in(t, e->d_name, fn, arg);
	closedir(d);
	return ret;
}

uint64_t rollback_seen(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN])
{
	uint64_t stored, pending;

	/* Not while a flush has taken versions out of memory and not yet
	 * written them: they would be in neither place. */
	pthread_mutex_lock(&rb->learn_lock);
	stored = rollback_table_version(&rb->table, file_id);
	pthread_mutex_lock(&rb->lock);
	pending = pending_of(rb, file_id);
	pthread_mutex_unlock(&rb->lock);
	pthread_mutex_unlock(&rb->learn_lock);
	return pending > stored ? pending : stored;
}

/* learn_locked - rollback_learn() with learn_lock held. */
static int learn_locked(struct rollback *rb, const uint8_t *file_id, uint64_t version)
{
	char path[PATH_MAX], tmp[PATH_MAX + 32], text[24];
	int fd, len, ret = 0;

	if (version <= rollback_table_version(&rb->table, file_id))
		return 0;
	entry_path(&rb->table, file_id, false, path);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	entry_path(&rb->table, file_id, true, path);
	snprintf(tmp, sizeof(tmp), "%s.%d.%u.tmp", path, (int)getpid(),
		 atomic_fetch_add(&rb->tmp_seq, 1));
	len = snprintf(text, sizeof(text), "%" PRIu64 "\n", version);
	/* No sync: a version lost in a host crash only misses a rollback. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, text, (size_t)len) != len)
		ret = -EIO;
	close(fd);
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0)
		unlink(tmp);
	return ret;
}

/* write_learnt_locked - write @version of @file_id to the table now.  learn_lock held. */
static void write_learnt_locked(struct rollback *rb, const uint8_t *file_id, uint64_t version)
{
	int ret = learn_locked(rb, file_id, version);

	if (ret < 0)
		log_ratelimited(LOG_WARNING, "cannot keep a file version in %s: %s", rb->table.dir,
				strerror(-ret));
}

void rollback_learn(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN],
		    uint64_t version)
{
	struct pending_learn *p = NULL;

	if (version == 0)
		return;
	pthread_mutex_lock(&rb->lock);
	for (unsigned i = 0; i < rb->n_learnt && !p; i++)
		if (memcmp(rb->learnt[i].file_id, file_id, RECORD_FILE_ID_LEN) == 0)
			p = &rb->learnt[i];
	if (!p && rb->n_learnt < ROLLBACK_LEARN_MAX) {
		p = &rb->learnt[rb->n_learnt++];
		memcpy(p->file_id, file_id, RECORD_FILE_ID_LEN);
		p->version = 0;
	}
	if (p && version > p->version)
		p->version = version;
	pthread_mutex_unlock(&rb->lock);
	/* Full: written at once, by the caller. */
	if (!p) {
		pthread_mutex_lock(&rb->learn_lock);
		write_learnt_locked(rb, file_id, version);
		pthread_mutex_unlock(&rb->learn_lock);
	}
}

/* remove_locked - @file_id's entry off the table now.  learn_lock held. */
static void remove_locked(struct rollback *rb, const uint8_t *file_id)
{
	int ret = rollback_table_remove(&rb->table, file_id);

	if (ret < 0)
		log_ratelimited(LOG_WARNING, "cannot drop a deleted file's version from %s: %s",
				rb->table.dir, strerror(-ret));
}

/*
 * take_batch - move up to @max items of @size bytes off the end of @items
 * (*@n of them) into @out, under rb->lock, so that the items left stay
 * packed; how many were moved.
 */
static unsigned take_batch(struct rollback *rb, void *items, unsigned *n, size_t size, void *out,
			   unsigned max)
{
	unsigned taken;

	pthread_mutex_lock(&rb->lock);
	taken = *n < max ? *n : max;
	*n -= taken;
	memcpy(out, (char *)items + (size_t)*n * size, (size_t)taken * size);
	pthread_mutex_unlock(&rb->lock);
	return taken;
}

/* flush_learnt - write every version learnt so far to the table, then remove the dropped. */
static void flush_learnt(struct rollback *rb)
{
	enum { BATCH = 64 };
	struct pending_learn out[BATCH];
	uint8_t dropped[BATCH][RECORD_FILE_ID_LEN];
	unsigned n;

	pthread_mutex_lock(&rb->learn_lock);
	do {
		n = take_batch(rb, rb->learnt, &rb->n_learnt, sizeof(out[0]), out, BATCH);
		for (unsigned i = 0; i < n; i++)
			write_learnt_locked(rb, out[i].file_id, out[i].version);
	} while (n == BATCH);
	do {
		n = take_batch(rb, rb->dropped, &rb->n_dropped, sizeof(dropped[0]), dropped, BATCH);
		for (unsigned i = 0; i < n; i++)
			remove_locked(rb, dropped[i]);
	} while (n == BATCH);
	pthread_mutex_unlock(&rb->learn_lock);
}

void rollback_drop(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN])
{
	bool queued = false;

	/* Out of memory at once (a flush would write it back); off the disk
	 * by the next flush, which writes what it learnt before it removes. */
	pthread_mutex_lock(&rb->lock);
	for (unsigned i = 0; i < rb->n_learnt; i++)
		if (memcmp(rb->learnt[i].file_id, file_id, RECORD_FILE_ID_LEN) == 0) {
			rb->learnt[i] = rb->learnt[--rb->n_learnt];
			break;
		}
	for (unsigned i = 0; i < rb->count; i++) {
		struct queued_bump *q = &rb->queue[(rb->head + i) % ROLLBACK_QUEUE_MAX];

		if (memcmp(q->file_id, file_id, RECORD_FILE_ID_LEN) == 0)
			q->version = 0; /* learnt as nothing (rollback_learn() skips 0) */
	}
	if (rb->n_dropped < ROLLBACK_DROP_MAX) {
		memcpy(rb->dropped[rb->n_dropped++], file_id, RECORD_FILE_ID_LEN);
		queued = true;
	}
	pthread_mutex_unlock(&rb->lock);
	/* Full: removed at once, by the caller. */
	if (!queued) {
		pthread_mutex_lock(&rb->learn_lock);
		remove_locked(rb, file_id);
		pthread_mutex_unlock(&rb->learn_lock);
	}
}

uint64_t rollback_bumped(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN],
			 uint64_t version)
{
	struct queued_bump *q;
	uint64_t gen;

	pthread_mutex_lock(&rb->lock);
	gen = atomic_fetch_add(&rb->bump_gen, 1) + 1;
	if (rb->count == ROLLBACK_QUEUE_MAX) {
		/* Full: the oldest is learnt at its file's next fsync, or never. */
		rb->head = (rb->head + 1) % ROLLBACK_QUEUE_MAX;
		rb->count--;
	}
	q = &rb->queue[(rb->head + rb->count) % ROLLBACK_QUEUE_MAX];
	memcpy(q->file_id, file_id, RECORD_FILE_ID_LEN);
	q->version = version;
	q->gen = gen;
	rb->count++;
	pthread_mutex_unlock(&rb->lock);
	return gen;
}

uint64_t rollback_read_gen(struct rollback *rb)
{
	/* The next bump's: a syncfs covering it starts after this read. */
	return atomic_load(&rb->bump_gen) + 1;
}

uint64_t rollback_synced(struct rollback *rb)
{
	return atomic_load(&rb->synced_gen);
}

/*
 * sync_and_learn - syncfs the backing if a generation is pending, then
 * learn the queued bumps it covered.  Called by one thread at a time (the
 * sync thread, or rollback_close() once it is gone).
 */
static void sync_and_learn(struct rollback *rb)
{
	uint64_t upto = atomic_load(&rb->bump_gen);

	if (upto <= atomic_load(&rb->synced_gen))
		return;
	if (syncfs(rb->sync_fd) < 0) {
		log_ratelimited(LOG_WARNING, "syncfs of the backing: %s; file versions are learnt "
					     "at fsync only", strerror(errno));
		return;
	}
	atomic_store(&rb->synced_gen, upto);
	pthread_mutex_lock(&rb->lock);
	while (rb->count > 0 && rb->queue[rb->head].gen <= upto) {
		struct queued_bump q = rb->queue[rb->head];

		rb->head = (rb->head + 1) % ROLLBACK_QUEUE_MAX;
		rb->count--;
		pthread_mutex_unlock(&rb->lock);
		rollback_learn(rb, q.file_id, q.version);
		pthread_mutex_lock(&rb->lock);
	}
	pthread_mutex_unlock(&rb->lock);
}

/*
 * sync_thread - every LEARN_DELAY_MS the versions learnt are written; every
 * rb->interval seconds (when there is a backing to sync) the pending
 * generations are synced and learnt.
 */
static void *sync_thread(void *arg)
{
	struct rollback *rb = arg;
	unsigned ticks = 0, sync_ticks = rb->interval * (1000 / LEARN_DELAY_MS);
	struct timespec until;

	pthread_mutex_lock(&rb->lock);
	while (!rb->stop) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)LEARN_DELAY_MS * 1000000;
		until.tv_sec += until.tv_nsec / 1000000000;
		until.tv_nsec %= 1000000000;
		while (!rb->stop && pthread_cond_timedwait(&rb->wake, &rb->lock, &until) == 0)
			;
		if (rb->stop)
			break;
		pthread_mutex_unlock(&rb->lock);
		if (rb->sync_fd >= 0 && sync_ticks > 0 && ++ticks >= sync_ticks) {
			ticks = 0;
			sync_and_learn(rb);
		}
		flush_learnt(rb);
		pthread_mutex_lock(&rb->lock);
	}
	pthread_mutex_unlock(&rb->lock);
	return NULL;
}

void rollback_close(struct rollback *rb, bool clean)
{
	if (!rb)
		return;
	if (rb->thread_running) {
		pthread_mutex_lock(&rb->lock);
		rb->stop = true;
		pthread_cond_signal(&rb->wake);
		pthread_mutex_unlock(&rb->lock);
		pthread_join(rb->thread, NULL);
	}
	if (clean && rb->sync_fd >= 0)
		sync_and_learn(rb);
	flush_learnt(rb);
	if (rb->sync_fd >= 0)
		close(rb->sync_fd);
	pthread_cond_destroy(&rb->wake);
	pthread_mutex_destroy(&rb->lock);
	pthread_mutex_destroy(&rb->learn_lock);
	free(rb);
}

/* remove_tree - rm -r of @dir's entries and @dir itself (two levels deep at most). */
static int remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int ret = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		char path[PATH_MAX];

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (e->d_type == DT_DIR)
			ret = remove_tree(path);
		else if (unlink(path) < 0)
			ret = -errno;
		if (ret < 0)
			break;
	}
	closedir(d);
	if (ret == 0 && rmdir(dir) < 0)
		ret = -errno;
	return ret;
}

int rollback_forget(const char *root, const uint8_t uuid[16])
{
	char dir[PATH_MAX];
	int ret = hoststate_volume_file(root, uuid, ROLLBACK_VERSIONS_DIR, 0, dir, sizeof(dir));

	return ret < 0 ? ret : remove_tree(dir);
}
