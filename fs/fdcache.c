/* SPDX-License-Identifier: MIT */
/* The descriptor cache: see fdcache.h for the invariants. */
#include "fdcache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"

struct fdcache {
	pthread_mutex_t lock;
	int mount_fd; /* the backing root, opened for open_by_handle_at(); -1 if it failed */
	int mount_id; /* of mount_fd: a handle from another mount is not used */
	bool handles;
	unsigned max;
	unsigned open; /* slot fds open, pinned or not */
	struct fd_slot lru; /* list head: lru.lru_next is the least recently used */
};

static void lru_remove(struct fd_slot *s)
{
	s->lru_prev->lru_next = s->lru_next;
	s->lru_next->lru_prev = s->lru_prev;
	s->lru_prev = s->lru_next = NULL;
}

static void lru_append(struct fdcache *c, struct fd_slot *s)
{
	s->lru_prev = c->lru.lru_prev;
	s->lru_next = &c->lru;
	c->lru.lru_prev->lru_next = s;
	c->lru.lru_prev = s;
}

static bool on_lru(const struct fd_slot *s)
{
	return s->lru_next != NULL;
}

/* Close least recently used fds until at most @keep are open (or none is left to close). */
static void shrink_locked(struct fdcache *c, unsigned keep)
{
	while (c->open > keep && c->lru.lru_next != &c->lru) {
		struct fd_slot *s = c->lru.lru_next;

		lru_remove(s);
		close(s->fd);
		s->fd = -1;
		c->open--;
	}
}

/* After @s was unpinned or opened: on the LRU when it may be closed. */
static void settle_locked(struct fdcache *c, struct fd_slot *s)
{
	if (s->pins == 0 && s->fh && s->fd >= 0 && !on_lru(s))
		lru_append(c, s);
	shrink_locked(c, c->max);
}

static struct file_handle *handle_at(int dirfd, const char *name, int *mount_id)
{
	struct file_handle *fh = malloc(sizeof(*fh) + MAX_HANDLE_SZ);
	struct file_handle *out;

	if (!fh)
		return NULL;
	fh->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(dirfd, name, fh, mount_id, *name ? 0 : AT_EMPTY_PATH) < 0) {
		free(fh);
		return NULL;
	}
	/* Trimmed: most handles are 8 to 40 bytes, and one is kept per inode. */
	out = realloc(fh, sizeof(*fh) + fh->handle_bytes);
	return out ? out : fh;
}

int fdcache_create(int root_fd, unsigned max, struct fdcache **out)
{
	struct fdcache *c = calloc(1, sizeof(*c));
	struct file_handle *fh = NULL;
	char path[64];
	int fd;

	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	/* open_by_handle_at() refuses an O_PATH fd for the mount: a real one. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", root_fd);
	c->mount_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	c->max = max;
	c->lru.lru_next = c->lru.lru_prev = &c->lru;
	/* Tried once on the root: a backing without handles (FUSE, some network
	 * file systems) or a daemon without CAP_DAC_READ_SEARCH keeps every fd. */
	if (c->mount_fd >= 0)
		fh = handle_at(c->mount_fd, "", &c->mount_id);
	if (fh) {
		fd = open_by_handle_at(c->mount_fd, fh, O_PATH | O_CLOEXEC);
		c->handles = fd >= 0;
		if (fd >= 0)
			close(fd);
		else
			log_msg(LOG_NOTICE, "file handles refused (%s): one descriptor per known "
					    "inode, bounded only by RLIMIT_NOFILE",
				strerror(errno));
		free(fh);
	} else {
		log_msg(LOG_NOTICE, "no file handles on the backing: one descriptor per known "
				    "inode, bounded only by RLIMIT_NOFILE");
	}
	*out = c;
	return 0;
}

void fdcache_destroy(struct fdcache *c)
{
	if (!c)
		return;
	if (c->mount_fd >= 0)
		close(c->mount_fd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

bool fdcache_bounded(const struct fdcache *c)
{
	return c->handles;
}

struct file_handle *fdcache_handle_of(struct fdcache *c, int dirfd, const char *name)
{
	struct file_handle *fh;
	int mount_id;

	if (!c->handles)
		return NULL;
	fh = handle_at(dirfd, name, &mount_id);
	if (fh && mount_id != c->mount_id) {
		free(fh);
		return NULL;
	}
	return fh;
}

bool fdcache_handle_equal(const struct file_handle *a, const struct file_handle *b)
{
	return a->handle_type == b->handle_type && a->handle_bytes == b->handle_bytes &&
	       memcmp(a->f_handle, b->f_handle, a->handle_bytes) == 0;
}

void fdcache_slot_init(struct fdcache *c, struct fd_slot *s, int fd, struct file_handle *fh)
{
	*s = (struct fd_slot){.fd = fd, .fh = fh};
	pthread_mutex_lock(&c->lock);
	c->open++;
	settle_locked(c, s);
	pthread_mutex_unlock(&c->lock);
}

void fdcache_slot_fini(struct fdcache *c, struct fd_slot *s)
{
	pthread_mutex_lock(&c->lock);
	if (on_lru(s))
		lru_remove(s);
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
		c->open--;
	}
	pthread_mutex_unlock(&c->lock);
	free(s->fh);
	s->fh = NULL;
}

/* Open @fh; out of descriptors, close every unpinned slot fd and try once more. */
static int open_handle(struct fdcache *c, struct file_handle *fh)
{
	int fd = open_by_handle_at(c->mount_fd, fh, O_PATH | O_CLOEXEC);

	if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
		pthread_mutex_lock(&c->lock);
		shrink_locked(c, 0);
		pthread_mutex_unlock(&c->lock);
		fd = open_by_handle_at(c->mount_fd, fh, O_PATH | O_CLOEXEC);
	}
	return fd < 0 ? -errno : fd;
}

int fdcache_pin(struct fdcache *c, struct fd_slot *s)
{
	union {
		struct file_handle fh;
		char bytes[sizeof(struct file_handle) + MAX_HANDLE_SZ];
	} copy;
	unsigned gen;
	int fd;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		if (s->fd >= 0) {
			if (on_lru(s))
				lru_remove(s);
			s->pins++;
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		if (!s->fh) {
			/* Only a slot with a handle is ever closed before its end. */
			pthread_mutex_unlock(&c->lock);
			return -EBADF;
		}
		/* Opened outside the lock (a network backing may take a while),
		 * from a copy: a rebind may replace the handle meanwhile. */
		memcpy(&copy, s->fh, sizeof(*s->fh) + s->fh->handle_bytes);
		gen = s->gen;
		pthread_mutex_unlock(&c->lock);
		fd = open_handle(c, &copy.fh);
		if (fd < 0)
			return fd;
		pthread_mutex_lock(&c->lock);
		if (s->fd < 0 && s->gen == gen) {
			s->fd = fd;
			s->pins++;
			c->open++;
			shrink_locked(c, c->max);
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		/* Another request opened it first, or it was rebound: look again. */
		close(fd);
	}
}

bool fdcache_unpin(struct fdcache *c, struct fd_slot *s)
{
	bool last;

	pthread_mutex_lock(&c->lock);
	last = --s->pins == 0 && s->orphan;
	settle_locked(c, s);
	pthread_mutex_unlock(&c->lock);
	return last;
}

bool fdcache_orphan(struct fdcache *c, struct fd_slot *s)
{
	bool unpinned;

	pthread_mutex_lock(&c->lock);
	unpinned = s->pins == 0;
	s->orphan = !unpinned;
	pthread_mutex_unlock(&c->lock);
	return unpinned;
}

bool fdcache_holds(struct fdcache *c, struct fd_slot *s)
{
	bool open;

	pthread_mutex_lock(&c->lock);
	open = s->fd >= 0;
	pthread_mutex_unlock(&c->lock);
	return open;
}

bool fdcache_names(struct fdcache *c, struct fd_slot *s, const struct file_handle *fh)
{
	bool same;

	if (!fh)
		return true;
	pthread_mutex_lock(&c->lock);
	same = s->fd >= 0 || (s->fh && fdcache_handle_equal(s->fh, fh));
	pthread_mutex_unlock(&c->lock);
	return same;
}

void fdcache_rebind(struct fdcache *c, struct fd_slot *s, int fd, struct file_handle *fh)
{
	struct file_handle *old;

	pthread_mutex_lock(&c->lock);
	old = s->fh;
	s->fh = fh;
	s->gen++;
	if (s->fd >= 0) {
		if (dup3(fd, s->fd, O_CLOEXEC) < 0)
			log_msg(LOG_WARNING, "cannot rebind an inode's descriptor: %s",
				strerror(errno));
		close(fd);
	} else {
		s->fd = fd;
		c->open++;
	}
	/* Without a handle the slot keeps its fd from now on. */
	if (!fh && on_lru(s))
		lru_remove(s);
	settle_locked(c, s);
	pthread_mutex_unlock(&c->lock);
	free(old);
}

unsigned fdcache_open_fds(struct fdcache *c)
{
	unsigned n;

	pthread_mutex_lock(&c->lock);
	n = c->open;
	pthread_mutex_unlock(&c->lock);
	return n;
}

unsigned fdcache_default_max(void)
{
	struct rlimit rl;
	rlim_t half;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return FDCACHE_DEFAULT_CEILING;
	half = rl.rlim_cur / 2;
	return half < 64 ? 64 : half > FDCACHE_DEFAULT_CEILING ? FDCACHE_DEFAULT_CEILING
							       : (unsigned)half;
}
