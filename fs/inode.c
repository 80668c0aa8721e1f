/* SPDX-License-Identifier: MIT */
/* The inode table: see inode.h for the invariants. */
#include "inode.h"
#include "mtime.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#define INODE_BUCKETS 65536 /* power of two */

struct inode_table {
	pthread_mutex_t lock;
	struct inode root;
	struct inode *buckets[INODE_BUCKETS];
	uint64_t count;
};

static size_t bucket_of(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev;

	return (size_t)(h >> 32) & (INODE_BUCKETS - 1);
}

static void inode_init(struct inode *in, int fd, const struct stat *st)
{
	in->fd = fd;
	in->dev = st->st_dev;
	in->ino = st->st_ino;
	in->type = st->st_mode & S_IFMT;
	in->keylock_fd = -1;
	pthread_rwlock_init(&in->content_lock, NULL);
	pthread_mutex_init(&in->key_lock, NULL);
	pthread_mutex_init(&in->mtime_lock, NULL);
}

int inode_table_create(int root_fd, struct inode_table **out)
{
	struct inode_table *t = calloc(1, sizeof(*t));
	struct stat st;

	if (!t)
		return -ENOMEM;
	if (fstat(root_fd, &st) < 0) {
		int err = -errno;
		free(t);
		return err;
	}
	pthread_mutex_init(&t->lock, NULL);
	inode_init(&t->root, root_fd, &st);
	t->root.nlookup = 1;
	*out = t;
	return 0;
}

struct inode *inode_table_root(struct inode_table *t)
{
	return &t->root;
}

static void inode_free(struct inode *in)
{
	/* The last chance to give the backing file the mtime the kernel sent;
	 * failing, it keeps the time of its last write (mtime.h). */
	mtime_flush(in);
	close(in->fd);
	free(in->link_target);
	pthread_rwlock_destroy(&in->content_lock);
	pthread_mutex_destroy(&in->key_lock);
	pthread_mutex_destroy(&in->mtime_lock);
	free(in);
}

void inode_table_destroy(struct inode_table *t)
{
	if (!t)
		return;
	for (size_t b = 0; b < INODE_BUCKETS; b++) {
		struct inode *in = t->buckets[b];
		while (in) {
			struct inode *next = in->hash_next;
			inode_free(in);
			in = next;
		}
	}
	close(t->root.fd);
	free(t->root.link_target);
	free(t);
}

static struct inode *find_locked(struct inode_table *t, dev_t dev, ino_t ino)
{
	struct inode *in;

	if (dev == t->root.dev && ino == t->root.ino)
		return &t->root;
	for (in = t->buckets[bucket_of(dev, ino)]; in; in = in->hash_next)
		if (in->dev == dev && in->ino == ino)
			break;
	return in;
}

struct inode *inode_lookup_known(struct inode_table *t, const struct stat *st)
{
	struct inode *in;

	pthread_mutex_lock(&t->lock);
	in = find_locked(t, st->st_dev, st->st_ino);
	if (in)
		in->nlookup++;
	pthread_mutex_unlock(&t->lock);
	return in;
}

struct inode *inode_lookup_or_add(struct inode_table *t, int fd, const struct stat *st)
{
	struct inode *in, *fresh = NULL;
	size_t b = bucket_of(st->st_dev, st->st_ino);

	for (;;) {
		pthread_mutex_lock(&t->lock);
		in = find_locked(t, st->st_dev, st->st_ino);
		if (in || fresh)
			break;
		/* Allocate outside the lock, then look again. */
		pthread_mutex_unlock(&t->lock);
		fresh = calloc(1, sizeof(*fresh));
		if (!fresh) {
			close(fd);
			return NULL;
		}
		inode_init(fresh, fd, st);
	}
	if (in) {
		in->nlookup++;
		pthread_mutex_unlock(&t->lock);
		if (fresh) {
			fresh->fd = -1;
			free(fresh);
		}
		close(fd);
		return in;
	}
	fresh->nlookup = 1;
	fresh->hash_next = t->buckets[b];
	t->buckets[b] = fresh;
	t->count++;
	pthread_mutex_unlock(&t->lock);
	return fresh;
}

static void unhash_locked(struct inode_table *t, struct inode *in)
{
	struct inode **p = &t->buckets[bucket_of(in->dev, in->ino)];

	while (*p != in)
		p = &(*p)->hash_next;
	*p = in->hash_next;
}

void inode_rebind(struct inode_table *t, const struct stat *was, int fd, const struct stat *st)
{
	bool same = was->st_dev == st->st_dev && was->st_ino == st->st_ino;
	struct inode *in;

	pthread_mutex_lock(&t->lock);
	in = find_locked(t, was->st_dev, was->st_ino);
	/* A fresh backing inode has no entry yet; the root is never replaced. */
	if (in && in != &t->root && (same || !find_locked(t, st->st_dev, st->st_ino)) &&
	    dup3(fd, in->fd, O_CLOEXEC) >= 0 && !same) {
		unhash_locked(t, in);
		in->dev = st->st_dev;
		in->ino = st->st_ino;
		size_t b = bucket_of(in->dev, in->ino);
		in->hash_next = t->buckets[b];
		t->buckets[b] = in;
	}
	pthread_mutex_unlock(&t->lock);
	close(fd);
}

void inode_forget(struct inode_table *t, struct inode *in, uint64_t n)
{
	pthread_mutex_lock(&t->lock);
	in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
	if (in->nlookup > 0 || in == &t->root) {
		pthread_mutex_unlock(&t->lock);
		return;
	}
	unhash_locked(t, in);
	t->count--;
	pthread_mutex_unlock(&t->lock);
	inode_free(in);
}

uint64_t inode_count(struct inode_table *t)
{
	uint64_t n;

	pthread_mutex_lock(&t->lock);
	n = t->count;
	pthread_mutex_unlock(&t->lock);
	return n;
}
