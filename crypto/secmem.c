// SPDX-License-Identifier: MIT
/*
 * Locked, non-dumpable memory for key material (see secmem.h).
 *
 * Small requests are served from 64-byte cells carved out of whole pages;
 * the free cells form a LIFO list whose link lives in the first bytes of
 * each free cell (a pointer into our own pool, not a secret).  Pool pages
 * are never returned to the kernel: a DEK cache grows and shrinks around a
 * steady state, and handing pages back would only add mlock churn.
 */

#include "crypto/secmem.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define CELL_SIZE 64

struct free_cell {
	struct free_cell *next;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct free_cell *free_list;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/*
 * fork() handlers.  Holding the lock across fork() keeps a child from
 * inheriting it locked by a thread that does not exist there.  The child's
 * pool pages read as zeros (MADV_WIPEONFORK), so the inherited free list is
 * meaningless: it starts a new one, and the parent's cells are simply lost
 * to it - as are the secrets in them, which is the point.
 */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&pool_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&pool_lock);
}

static void atfork_child(void)
{
	free_list = NULL;
	pthread_mutex_unlock(&pool_lock);
}

static void atfork_register(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static size_t page_size(void)
{
	static size_t cached;
	long ps;

	if (cached)
		return cached;
	ps = sysconf(_SC_PAGESIZE);
	cached = ps > 0 ? (size_t)ps : 4096;
	return cached;
}

/*
 * The mlock system calls are made directly: sanitizer runtimes intercept
 * mlock()/munlock() and turn them into successful no-ops, which would let a
 * sanitizer build hand out unlocked memory and hide an mlock failure.
 */
static int lock_pages(void *p, size_t len)
{
	return (int)syscall(SYS_mlock, p, len);
}

static void unlock_pages(void *p, size_t len)
{
	syscall(SYS_munlock, p, len);
}

/*
 * map_locked - map @len bytes (a multiple of the page size) of anonymous
 * memory and lock it, exclude it from core dumps and wipe it in forked
 * children.  Any failure unmaps and returns NULL with errno set: memory that
 * could be swapped or dumped is never handed out.
 */
static void *map_locked(size_t len)
{
	void *p;
	int saved;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (lock_pages(p, len) != 0)
		goto fail_unmap;
	if (madvise(p, len, MADV_DONTDUMP) != 0)
		goto fail_unlock;
	if (madvise(p, len, MADV_WIPEONFORK) != 0)
		goto fail_unlock;
	return p;

fail_unlock:
	saved = errno;
	unlock_pages(p, len);
	errno = saved;
fail_unmap:
	saved = errno;
	munmap(p, len);
	errno = saved;
	return NULL;
}

/* Carve a fresh locked page into cells and push them all on the free list. */
static int pool_grow_locked(void)
{
	size_t ps = page_size();
	uint8_t *page;
	size_t off;

	page = map_locked(ps);
	if (!page)
		return -errno;
	/* Push in reverse so cells are handed out in address order. */
	for (off = ps; off >= CELL_SIZE; off -= CELL_SIZE) {
		struct free_cell *c = (struct free_cell *)(page + off - CELL_SIZE);

		c->next = free_list;
		free_list = c;
	}
	return 0;
}

/**
 * secmem_alloc - see secmem.h.  @len 0 is rejected with EINVAL.
 */
void *secmem_alloc(size_t len)
{
	struct free_cell *c;
	size_t ps = page_size();
	size_t maplen;
	int err;

	if (len == 0) {
		errno = EINVAL;
		return NULL;
	}
	if (len > CELL_SIZE) {
		if (len > SIZE_MAX - ps) {
			errno = ENOMEM;
			return NULL;
		}
		maplen = (len + ps - 1) & ~(ps - 1);
		/* Anonymous mappings start zeroed. */
		return map_locked(maplen);
	}

	pthread_once(&atfork_once, atfork_register);
	pthread_mutex_lock(&pool_lock);
	if (!free_list) {
		err = pool_grow_locked();
		if (err) {
			pthread_mutex_unlock(&pool_lock);
			errno = -err;
			return NULL;
		}
	}
	c = free_list;
	free_list = c->next;
	pthread_mutex_unlock(&pool_lock);

	/* The rest of the cell was wiped by secmem_free(); only the link remains. */
	memset(c, 0, CELL_SIZE);
	return c;
}

/**
 * secmem_free - see secmem.h.  The whole cell (or every page of a large
 * allocation) is cleansed, not just @len bytes, so a caller that passes a
 * shorter length than it wrote still leaves nothing behind.
 */
void secmem_free(void *p, size_t len)
{
	struct free_cell *c = p;
	size_t ps = page_size();
	size_t maplen;

	if (!p)
		return;
	if (len > CELL_SIZE) {
		maplen = (len + ps - 1) & ~(ps - 1);
		OPENSSL_cleanse(p, maplen);
		unlock_pages(p, maplen);
		munmap(p, maplen);
		return;
	}

	OPENSSL_cleanse(c, CELL_SIZE);
	pthread_mutex_lock(&pool_lock);
	c->next = free_list;
	free_list = c;
	pthread_mutex_unlock(&pool_lock);
}

/**
 * secmem_wipe - see secmem.h.
 */
void secmem_wipe(void *p, size_t len)
{
	if (p && len)
		OPENSSL_cleanse(p, len);
}

/**
 * secmem_harden_process - see secmem.h.  Both settings are applied even if
 * the first fails; the first error is returned.
 */
int secmem_harden_process(void)
{
	struct rlimit none = { 0, 0 };
	int err = 0;

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		err = -errno;
	if (setrlimit(RLIMIT_CORE, &none) != 0 && !err)
		err = -errno;
	return err;
}
