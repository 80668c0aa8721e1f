/* SPDX-License-Identifier: MIT */
/* Shared mode: see shared.h. */
#include "shared.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/random.h"
#include "inode.h"
#include "names.h"

/* How often a re-key asks again for a key lock that writers hold. */
#define REKEY_POLL_MS 20

bool shared_mode_on(enum shared_setting setting, bool backing_is_shared)
{
	return setting == SHARED_AUTO ? backing_is_shared : setting == SHARED_ON;
}

void shared_temp_name(char out[64])
{
	static atomic_uint_fast64_t counter;
	uint64_t nonce = 0;

	/* Another host's daemon may have our PID: the random part keeps two
	 * hosts' names apart, so a rename onto one never meets the other's. */
	if (crypto_random(&nonce, sizeof(nonce)) < 0)
		nonce = (uint64_t)time(NULL);
	snprintf(out, 64, NAMES_TEMP_PREFIX "%ld.%llu.%016llx", (long)getpid(),
		 (unsigned long long)atomic_fetch_add(&counter, 1), (unsigned long long)nonce);
}

/* One request on the key lock's byte through @fd. */
static int keylock_fcntl(int fd, bool wait, short type)
{
	return ofd_lock(fd, type, KEYLOCK_OFFSET, 1, wait);
}

int keylock_writer_open(struct inode *in, int fd)
{
	int ret = 0;

	pthread_mutex_lock(&in->key_lock);
	if (in->keylock_writers++ == 0) {
		ret = keylock_fcntl(fd, true, F_RDLCK);
		if (ret < 0)
			in->keylock_writers--;
		else
			in->keylock_fd = fd;
	}
	pthread_mutex_unlock(&in->key_lock);
	return ret;
}

void keylock_writer_close(struct inode *in, int fd)
{
	pthread_mutex_lock(&in->key_lock);
	if (--in->keylock_writers == 0) {
		/* The lock goes with the last close of its description. */
		if (in->keylock_copy)
			close(in->keylock_fd);
		in->keylock_fd = -1;
		in->keylock_copy = false;
	} else if (fd == in->keylock_fd && !in->keylock_copy) {
		/* Writers remain: the lock must outlive this fd.  If no copy
		 * can be had, give it up for now; a re-key then only waits
		 * on the other hosts' writers, never on ours, which it
		 * excludes through the content lock. */
		in->keylock_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		in->keylock_copy = in->keylock_fd >= 0;
	}
	pthread_mutex_unlock(&in->key_lock);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int keylock_rekey(struct inode *in, int fd)
{
	int64_t deadline = now_ms() + SHARED_REKEY_WAIT_MS;
	int ret;

	/* Our own writers wait on the content lock the caller holds. */
	pthread_mutex_lock(&in->key_lock);
	if (in->keylock_fd >= 0)
		keylock_fcntl(in->keylock_fd, false, F_UNLCK);
	pthread_mutex_unlock(&in->key_lock);
	while ((ret = keylock_fcntl(fd, false, F_WRLCK)) == -EAGAIN && now_ms() < deadline) {
		struct timespec pause = {.tv_nsec = REKEY_POLL_MS * 1000000L};
		nanosleep(&pause, NULL);
	}
	return ret == -EAGAIN ? -EBUSY : ret;
}

void keylock_rekey_done(struct inode *in, int fd)
{
	keylock_fcntl(fd, false, F_UNLCK);
	pthread_mutex_lock(&in->key_lock);
	/* Nobody else asks for it exclusively but a re-key, which waits. */
	if (in->keylock_fd >= 0)
		keylock_fcntl(in->keylock_fd, true, F_RDLCK);
	pthread_mutex_unlock(&in->key_lock);
}

int keylock_share(int fd)
{
	return keylock_fcntl(fd, true, F_RDLCK);
}

int keylock_wait(int fd)
{
	int ret = keylock_share(fd);

	if (ret == 0)
		keylock_fcntl(fd, false, F_UNLCK);
	return ret;
}

void shared_backing_fresh(int fd)
{
	struct statx stx;

	/* A FUSE or network backing answers from its own caches for a while
	 * (GlusterFS: a second of attributes, pages kept across opens):
	 * ask it for the attributes now, and drop the pages it holds. */
	statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_SIZE | STATX_MTIME, &stx);
	shared_backing_drop_pages(fd);
}

void shared_backing_drop_pages(int fd)
{
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

void shared_mark_stale(struct inode *in)
{
	atomic_store_explicit(&in->fresh_ms, 0, memory_order_relaxed);
}

void shared_mark_fresh(struct inode *in)
{
	atomic_store_explicit(&in->fresh_ms, now_ms(), memory_order_relaxed);
}

bool shared_recently_fresh(const struct inode *in)
{
	int64_t at = atomic_load_explicit(&in->fresh_ms, memory_order_relaxed);

	return at != 0 && now_ms() - at < SHARED_FRESH_REUSE_MS;
}

int shared_flush_backing(int fd)
{
	int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);

	if (copy < 0)
		return -errno;
	/* Closing a copy flushes the open file description and keeps it
	 * open: a FUSE backing gets FLUSH, NFS writes back and commits. */
	return close(copy) < 0 && errno != EINTR ? -errno : 0;
}
