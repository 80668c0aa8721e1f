/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_FDCACHE_H
#define ENVELOPEFS_FS_FDCACHE_H

/*
 * The descriptor cache: a bounded set of O_PATH descriptors on backing
 * objects, each named by its file handle (name_to_handle_at) and opened
 * again on demand (open_by_handle_at, which needs CAP_DAC_READ_SEARCH), so
 * that the daemon's descriptors stay under a bound however many backing
 * objects it names.  A handle carries the inode's generation: an object
 * removed and its inode number reused is a different handle, and opening
 * the old one fails with ESTALE.
 *
 * Each object has a struct fd_slot (in struct inode).  Invariants, under the
 * cache's lock:
 *  - while slot->pins > 0, slot->fd is open on the slot's object and is
 *    neither closed nor reused for another object (fdcache_rebind() swaps
 *    the object behind the same number, atomically, with dup3);
 *  - a slot with a handle, an open fd and no pins is on the LRU list; the
 *    cache closes the least recently used of those whenever more than `max`
 *    slot fds are open (pinned fds are never closed: they may exceed it);
 *  - a slot without a handle (the backing has no file handles, the daemon
 *    may not open them, or the object is on another mount) keeps its fd
 *    from fdcache_slot_init() to fdcache_slot_fini(): no bound, as before;
 *  - slot->gen counts rebinds: a reopen by a handle that was replaced while
 *    the open ran is thrown away.
 *  - an orphan slot (fdcache_orphan() found it pinned) is ended by its
 *    owner once fdcache_unpin() reports its last pin gone, and only then.
 */

#include <stdbool.h>
#include <stdint.h>

struct file_handle;

struct fd_slot {
	int fd;			/* -1 while closed */
	unsigned pins;
	unsigned gen;
	bool orphan;		/* its owner is gone but for the pins: the last unpin ends it */
	struct file_handle *fh; /* NULL: the fd stays open for the slot's life */
	struct fd_slot *lru_prev, *lru_next;
};

struct fdcache;

/*
 * fdcache_create - a cache of at most @max open slot fds on the file
 * system of @root_fd (the backing root, O_PATH; the cache opens its own
 * fd on it, one more descriptor).  Handles are used only when both
 * name_to_handle_at and open_by_handle_at work on the root; otherwise
 * every slot keeps its fd (fdcache_bounded() false).
 */
int fdcache_create(int root_fd, unsigned max, struct fdcache **out);
void fdcache_destroy(struct fdcache *c);
bool fdcache_bounded(const struct fdcache *c);

/*
 * fdcache_handle_of - the handle of @name in @dirfd (@name "" for @dirfd
 * itself), allocated; NULL when the cache uses no handles, the object is
 * on another mount, or the backing refuses.
 */
struct file_handle *fdcache_handle_of(struct fdcache *c, int dirfd, const char *name);
bool fdcache_handle_equal(const struct file_handle *a, const struct file_handle *b);

/* fdcache_slot_init - @s holds @fd (O_PATH, adopted) and @fh (adopted, may be NULL), unpinned. */
void fdcache_slot_init(struct fdcache *c, struct fd_slot *s, int fd, struct file_handle *fh);
/* fdcache_slot_fini - @s (unpinned) goes: its fd closed, its handle freed. */
void fdcache_slot_fini(struct fdcache *c, struct fd_slot *s);

/*
 * fdcache_pin - @s->fd open and kept until fdcache_unpin(): the cached fd,
 * or one opened from the handle (making room first when the process is out
 * of descriptors).  0, or -errno (-ESTALE: the object is gone).
 */
/* fdcache_unpin - true when that was the last pin of an orphan: its owner ends it now. */
bool fdcache_unpin(struct fdcache *c, struct fd_slot *s);
int fdcache_pin(struct fdcache *c, struct fd_slot *s);

/*
 * fdcache_orphan - @s's owner has no other reference left: true when @s is
 * unpinned (the owner ends it now), else false, and the last unpin says so.
 */
bool fdcache_orphan(struct fdcache *c, struct fd_slot *s);

/*
 * fdcache_holds - whether @s's fd is open now (always, for a slot without
 * a handle): the fd holds the object, so no other has its inode number.
 */
bool fdcache_holds(struct fdcache *c, struct fd_slot *s);

/*
 * fdcache_names - whether @s names the object of handle @fh: certainly when
 * its fd is open (the open fd keeps the object, so no other object has its
 * inode number), else when the handles are equal.  @fh NULL: true.
 */
bool fdcache_names(struct fdcache *c, struct fd_slot *s, const struct file_handle *fh);

/*
 * fdcache_rebind - @s now names the object open as @fd (O_PATH, adopted),
 * with handle @fh (adopted, may be NULL).  An open slot fd keeps its number
 * (dup3), so a request holding it sees the old object or the new one.
 */
void fdcache_rebind(struct fdcache *c, struct fd_slot *s, int fd, struct file_handle *fh);

/* fdcache_open_fds - slot fds open now (status, tests). */
unsigned fdcache_open_fds(struct fdcache *c);

/*
 * fdcache_default_max - the bound when the settings give none: half the
 * soft RLIMIT_NOFILE (the rest for open files, directories and sockets),
 * at least 64 and at most FDCACHE_DEFAULT_CEILING.
 */
#define FDCACHE_DEFAULT_CEILING 65536
unsigned fdcache_default_max(void);

#endif
