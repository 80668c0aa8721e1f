/* SPDX-License-Identifier: MIT */
/* Files bound to their directory entries: see binding.h. */
#include "binding.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "filekey.h"
#include "log.h"

static const uint8_t no_dirid[RECORD_BINDING_LEN];

/*
 * Shared mode: the inodes answered ESTALE for a name their record does not
 * list, remembered past the inode itself for RETRY_MS.  When the name is
 * gone the kernel forgets the inode, and the backing's own name cache
 * (GlusterFS keeps names for its entry timeout, 1 s) may still answer the
 * next lookup of that name with it; that lookup must find it gone too.
 */
#define RETRY_SLOTS 64
#define RETRY_MS 3000

static struct {
	pthread_mutex_t lock;
	struct {
		dev_t dev;
		ino_t ino;
		int64_t ms;
	} slot[RETRY_SLOTS];
	unsigned next;
} retried = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void retry_remember(const struct inode *in)
{
	pthread_mutex_lock(&retried.lock);
	retried.slot[retried.next].dev = in->dev;
	retried.slot[retried.next].ino = in->ino;
	retried.slot[retried.next].ms = now_ms();
	retried.next = (retried.next + 1) % RETRY_SLOTS;
	pthread_mutex_unlock(&retried.lock);
}

static bool retry_remembered(dev_t dev, ino_t ino)
{
	int64_t since = now_ms() - RETRY_MS;
	bool found = false;

	pthread_mutex_lock(&retried.lock);
	for (unsigned i = 0; i < RETRY_SLOTS && !found; i++)
		found = retried.slot[i].ms > since && retried.slot[i].ino == ino &&
			retried.slot[i].dev == dev;
	pthread_mutex_unlock(&retried.lock);
	return found;
}

int binding_entry(const uint8_t *dirid, const char *name, uint8_t out[RECORD_BINDING_LEN])
{
	return record_binding_of(dirid ? dirid : no_dirid, name, out);
}

void binding_note_entry(struct envfs *fs, struct inode *in, const uint8_t *dirid,
			const char *name)
{
	uint8_t entry[RECORD_BINDING_LEN];
	bool known;

	if (!record_tags_v3(&fs->cfg) || in->type != S_IFREG)
		return;
	known = binding_entry(dirid, name, entry) == 0;
	pthread_mutex_lock(&in->key_lock);
	/* A name that cannot be hashed (never: lookups pass valid names)
	 * must not leave the entry of another name behind. */
	in->entry_known = known;
	in->entry_fresh = true;
	in->entry_retrying = false;
	memcpy(in->entry, entry, sizeof(entry));
	pthread_mutex_unlock(&in->key_lock);
}

int binding_check(struct envfs *fs, struct inode *in, const struct key_record *rec)
{
	/* Bound to none, or an inode the kernel reached by no name we saw
	 * (none today: every inode comes from a lookup or a create). */
	bool fresh = in->entry_fresh;

	in->entry_fresh = false;
	if (!record_tags_v3(&fs->cfg) || rec->bindings.n == 0 || !in->entry_known ||
	    record_bindings_has(&rec->bindings, in->entry))
		return 0;
	/* Shared mode: the kernel may have reached the inode by another name
	 * it still caches (entry_timeout), one another host has renamed the
	 * file away from since; the daemon is not told which.  Unless a lookup
	 * noted the entry just before, the answer is ESTALE: the kernel looks
	 * the name up afresh (LOOKUP_REVAL), and the entry that lookup notes is
	 * the one the next check holds the record to. */
	if (fs->shared && !fresh) {
		in->entry_retrying = true;
		retry_remember(in);
		return -ESTALE;
	}
	log_ratelimited(LOG_ERR, "inode %llu: its key record binds it to other names: the "
				 "backing file was moved, swapped or replaced; returning EIO",
			(unsigned long long)in->ino);
	atomic_fetch_add(&fs->counters.integrity_errors, 1);
	return -EIO;
}

bool binding_retrying(struct inode *in, const struct stat *st)
{
	bool retrying = false;

	if (in) {
		pthread_mutex_lock(&in->key_lock);
		retrying = in->entry_retrying;
		pthread_mutex_unlock(&in->key_lock);
	}
	return retrying || (in && retry_remembered(in->dev, in->ino)) ||
	       (st && retry_remembered(st->st_dev, st->st_ino));
}

void binding_stamp(struct envfs *fs, const struct inode *in, int fd, struct key_record *rec)
{
	struct stat st;

	memset(&rec->bindings, 0, sizeof(rec->bindings));
	if (!record_tags_v3(&fs->cfg) || rec->version != 2 || !in->entry_known)
		return;
	/* Hard links made while the file had no record put no entry anywhere,
	 * and this daemon knows one of its names only: listing that one would
	 * refuse the others.  Such a file is bound to none, as one of more
	 * names than a record lists. */
	if (fstat(fd, &st) < 0 || st.st_nlink > 1)
		return;
	record_bindings_add(&rec->bindings, in->entry);
	if (in->entry_prev_known)
		record_bindings_add(&rec->bindings, in->entry_prev);
}

/*
 * edit_bindings - a filekey_edit_record() edit: @arg's move applied to
 * @rec's bindings.  1 when nothing changes (no write), else 0.
 */
static int edit_bindings(struct key_record *rec, void *arg)
{
	struct binding_move *m = arg;
	struct record_bindings b = rec->bindings;

	if (rec->version != 2)
		return 1;
	if (m->renamed && m->sole) {
		/* One link: the entry left and the one taken are all it has;
		 * the old one stays in case the rename never reaches the disk. */
		memset(&b, 0, sizeof(b));
		record_bindings_add(&b, m->old);
		record_bindings_add(&b, m->new);
	} else if (b.n == 0) {
		return 1; /* bound to none, as before: every entry passes */
	} else if (record_bindings_add(&b, m->new) == -ENOSPC) {
		/* More names than a record lists: bound to none from now on. */
		memset(&b, 0, sizeof(b));
	}
	if (b.n == rec->bindings.n &&
	    memcmp(b.id, rec->bindings.id, (size_t)b.n * RECORD_BINDING_LEN) == 0)
		return 1;
	m->before = rec->bindings;
	m->changed = true;
	rec->bindings = b;
	return 0;
}

int binding_add_entry(struct envfs *fs, struct inode *in, int fd, struct binding_move *move)
{
	move->changed = false;
	if (!record_tags_v3(&fs->cfg))
		return 0;
	return filekey_edit_record(fs, in, fd, edit_bindings, move);
}

/* restore_bindings - a filekey_edit_record() edit: @arg's move undone. */
static int restore_bindings(struct key_record *rec, void *arg)
{
	const struct binding_move *m = arg;

	if (rec->version != 2)
		return 1;
	rec->bindings = m->before;
	return 0;
}

int binding_undo(struct envfs *fs, struct inode *in, int fd, struct binding_move *move)
{
	int ret = 0;

	if (move->changed)
		ret = filekey_edit_record(fs, in, fd, restore_bindings, move);
	move->changed = false;
	return ret;
}

void binding_moved(struct envfs *fs, struct inode *in, const struct binding_move *move)
{
	if (!record_tags_v3(&fs->cfg) || in->type != S_IFREG)
		return;
	pthread_mutex_lock(&in->key_lock);
	in->entry_known = true;
	memcpy(in->entry, move->new, RECORD_BINDING_LEN);
	in->entry_prev_known = move->renamed;
	memcpy(in->entry_prev, move->old, RECORD_BINDING_LEN);
	pthread_mutex_unlock(&in->key_lock);
}
