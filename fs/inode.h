/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_INODE_H
#define ENVELOPEFS_FS_INODE_H

/*
 * The inode table: one struct inode per backing inode the kernel knows about,
 * keyed by backing (dev, ino).  The FUSE node id is the struct's address
 * (FUSE_ROOT_ID stands for the root).
 *
 * Invariants:
 *  - An inode names its backing inode by an O_PATH fd in the descriptor
 *    cache (fdcache.h): by file handle, with the fd opened on demand and
 *    closed when the cache is full, or, where handles are not available,
 *    by an fd kept for the inode's whole life.  inode_fd(in) may be used
 *    only between inode_pin() and inode_unpin(): every FUSE handler pins
 *    the inodes whose fd it uses, an open file pins its inode while open.
 *  - A backing inode number may be reused once its inode is gone, which an
 *    fd no longer prevents: an entry found by (dev, ino) is trusted only
 *    when its fd is open or its handle is the one the name has now; one
 *    that is not is taken out of the hash (it lives on, unreachable by
 *    lookups, until the kernel forgets it, and its operations fail with
 *    ESTALE as the backing inode is gone).
 *  - nlookup counts the kernel's references (lookup, create, readdirplus
 *    entries, link); inode_forget() frees the inode when it reaches zero
 *    and no pin is held, else the last inode_unpin() does.  The root is
 *    never freed.
 *  - content_lock: shared for reads, exclusive for anything that changes the
 *    content or size.  key_lock guards dek and opens; it is never held
 *    across I/O other than the key-record read and the KMS call that loads
 *    the key (so concurrent first reads unwrap once).
 *  - dek is a pinned DEK-cache entry while opens > 0 and the key is loaded.
 *  - The table may be bounded (inode_bound_set()): the count of live
 *    inodes may pass the bound, as only the kernel frees them (FORGET); an
 *    evictor (inode_evict.h) then asks it to let go of inodes that were not
 *    used since the clock hand last passed (inode_victims()).
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "content.h"
#include "crypto/record.h"
#include "dekcache.h"
#include "fdcache.h"

/* A version-2 record's hole ranges and the holes this daemon's writes left
 * (struct inode's holes). */
struct inode_holes {
	struct record_holes bound;
	struct pending_holes pending; /* content.h */
};

struct inode {
	struct fd_slot slot; /* O_PATH; use inode_fd() while pinned */
	bool hashed; /* reachable by (dev, ino); guarded by the table lock */
	/* Used (looked up, referenced or pinned) since the clock hand last
	 * passed it (inode_victims()); atomic, as a pin sets it without the
	 * table lock. */
	_Atomic bool recent;
	mode_t type; /* S_IFMT bits; here, where it fills what the bools leave */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup;

	pthread_rwlock_t content_lock;
	pthread_mutex_t key_lock;
	struct dek_entry *dek;
	/* The record the first open read and found no cached DEK for: the
	 * first read or write unwraps it without reading it again. */
	struct key_record *missed_record;
	unsigned opens;
	/* A version-2 record's hole ranges (docs/FORMAT.md, "Holes"), NULL
	 * while no record binds them (no key loaded, or version 1): with
	 * them, an all-zero block outside them is damage.  Set with the DEK
	 * (filekey.c), under the key lock with no I/O running or the content
	 * lock held exclusively; read under the content lock.  The pending
	 * holes follow the same rules.  Out of line (176 bytes), and let go
	 * with the DEK at the last close unless pending holes remain: most
	 * inodes the kernel knows are not open. */
	struct inode_holes *holes;
	/* An unwrap of this file's DEK (a prefetch's or a read's) found the KMS
	 * unavailable at unavailable_ms (monotonic): a read moments later takes
	 * that answer instead of waiting for the KMS a second time (filekey.c). */
	bool kms_unavailable;
	int64_t unavailable_ms;
	/* Format-3 volumes, regular files (binding.h): the binding of the
	 * directory entry the kernel last reached this inode by, which its key
	 * record must list, and of the one a rename through this daemon took
	 * it from (a first record lists both: that rename may not be durable
	 * yet).  Shared mode (binding_check()): @entry_fresh, noted by a
	 * lookup and not checked since; @entry_retrying, a record that did not
	 * list @entry was answered ESTALE, and no lookup came since.  Guarded
	 * by key_lock. */
	bool entry_known, entry_prev_known, entry_fresh, entry_retrying;
	uint8_t entry[RECORD_BINDING_LEN];
	uint8_t entry_prev[RECORD_BINDING_LEN];

	/* Format-3 versions (fileversion.h), guarded by key_lock.
	 * version_due: the next content change over a record known durable
	 * raises the version (set by an open for writing, cleared by the
	 * raise).  record_mac/record_seq:
	 * (and record_file_id) the record this daemon last read or wrote; it is durable once
	 * rollback_synced() reaches record_gen (0: not known durable);
	 * record_learn: its version, this daemon's own, to learn once it is
	 * durable (0: none). */
	bool version_due;
	uint8_t record_mac[16];
	uint8_t record_file_id[RECORD_FILE_ID_LEN];
	uint64_t record_seq;
	uint64_t record_gen;
	uint64_t record_learn;

	/* Encrypted-name volumes, guarded by key_lock.  A directory's ID is
	 * read once: it never changes, and travels with the directory.  A
	 * symlink's target (symlink.h) is decrypted when its name is looked
	 * up (version 1: bound to that name, and readlink names only the
	 * inode) or at the first readlink (version 2); link_size is its
	 * length once known (0: not yet), which a version-2 link tells before
	 * its target is decrypted.  A backing symlink never changes. */
	bool dirid_known;
	uint8_t dirid[16];
	char *link_target;
	size_t link_size;

	/* A regular file's modification time the kernel sent and the backing
	 * file does not have yet (mtime.h), guarded by mtime_lock. */
	pthread_mutex_t mtime_lock;
	bool mtime_pending;
	struct timespec pending_mtime;

	/* Shared mode (shared.h): opens for writing, and the fd through which
	 * they hold the key lock shared (-1 when none), guarded by key_lock. */
	unsigned keylock_writers;
	int keylock_fd;
	bool keylock_copy; /* keylock_fd is ours to close, not a writer's */
	/* Shared mode: opening the backing inode found it gone (ESTALE: another
	 * host replaced or removed it), so the backing's own name cache may
	 * still lead its lookups here (lookup.c).  Guarded by key_lock. */
	bool stale;
	/* Security and ACL xattrs known absent (xattr_absent.h); 0 unknown.
	 * Here, where it fills what the bools before leave: with kname, the
	 * struct stays 472 bytes, so the prune mode pays nothing for it. */
	_Atomic uint32_t xattr_absent;
	/* Shared mode: each lock owner's fd on the backing file (locks.c),
	 * guarded by key_lock. */
	struct lock_owner *lock_owners;
	/* Shared mode: when (monotonic ms) an open last made the backing
	 * refresh this file's attributes (shared_mark_fresh()); 0 never. */
	_Atomic int64_t fresh_ms;

	/* The key scope (scopes.h) the inode is in, NULL for the volume's:
	 * its parent directory's, set at every lookup (scope_ops.c); atomic,
	 * as a lookup may set it while another request reads it. */
	struct scope *_Atomic scope;

	/* The entry the kernel last reached this inode by, for the evictor's
	 * fallback (inode_evict.h, which owns its layout); NULL unless that
	 * mode noted one.  Guarded by the table lock (inode_kname_swap()). */
	struct inode_kname *kname;

	struct inode *hash_next;
};

struct inode_table;

/*
 * inode_table_create - the table, rooted at @root_fd (O_PATH directory,
 * adopted, never closed before the table goes), keeping at most @max_fds
 * inode fds open where the backing has file handles (0: fdcache_default_max()).
 */
int inode_table_create(int root_fd, unsigned max_fds, struct inode_table **out);
void inode_table_destroy(struct inode_table *t);
struct inode *inode_table_root(struct inode_table *t);

/*
 * inode_lookup_or_add - the inode for @st (one more kernel reference).
 * @fd is an O_PATH fd for it: adopted by a new inode, closed when one exists.
 * Returns NULL (fd closed) on allocation failure.
 */
struct inode *inode_lookup_or_add(struct inode_table *t, int fd, const struct stat *st);

/*
 * inode_lookup_known - the inode for @st, found as @name in @dirfd (@name
 * "" for @dirfd itself), with one more kernel reference if it is already in
 * the table and is that backing inode, not an earlier one whose number
 * @st's reuses; else NULL.
 */
struct inode *inode_lookup_known(struct inode_table *t, const struct stat *st, int dirfd,
				 const char *name);

/* inode_ref - one more reference on @in, which the caller holds one on. */
void inode_ref(struct inode_table *t, struct inode *in);

/*
 * inode_pin - keep inode_fd(@in) open until inode_unpin(): the cached fd,
 * or one opened again from the handle.  0, or -errno (-ESTALE: the backing
 * inode is gone).  Pins nest.  The caller holds a reference; a pinned inode
 * whose references all go (a FORGET right after the reply) is freed by its
 * last unpin, so a handler may unpin after replying.
 */
int inode_pin(struct inode_table *t, struct inode *in);
void inode_unpin(struct inode_table *t, struct inode *in);

/* inode_fd - @in's O_PATH fd; only while pinned (or for the root, always). */
static inline int inode_fd(const struct inode *in)
{
	return in->slot.fd;
}

/*
 * inode_rebind - the backing inode @was was replaced by the one open as
 * @fd (O_PATH) with attributes @st, under the same plaintext name (a
 * symlink renamed with encrypted names is made anew): the kernel's inode
 * for @was, if any, now stands for @st.  Its fd number stays the same, so
 * a concurrent request on it sees the old or the new backing inode, never
 * a closed or reused fd.  @st may be @was itself, reached by a new name: a
 * path-based backing (bindfs) names an inode by its path, so an fd opened
 * by the old name fails once that name is gone.  @fd is always consumed.
 */
void inode_rebind(struct inode_table *t, const struct stat *was, int fd, const struct stat *st);
/* inode_forget - drop @n kernel references; frees the inode at zero. */
void inode_forget(struct inode_table *t, struct inode *in, uint64_t n);

/* inode_count - number of live inodes (status); inode_peak - the most there were. */
uint64_t inode_count(struct inode_table *t);
uint64_t inode_peak(struct inode_table *t);
/* inode_freed - how many inodes the kernel's forgets freed so far. */
uint64_t inode_freed(struct inode_table *t);

/*
 * The bound (inode_evict.h).  inode_bound_set - above @max live inodes (0:
 * none), inode_bound_wait() returns: set before the evictor starts.
 */
void inode_bound_set(struct inode_table *t, uint64_t max);
/*
 * inode_bound_wait - wait until more than the bound are live: their count,
 * or 0 once inode_bound_stop() was called.
 */
uint64_t inode_bound_wait(struct inode_table *t);
/* inode_bound_stop - inode_bound_wait() returns 0 from now on. */
void inode_bound_stop(struct inode_table *t);

/*
 * inode_victims - up to @cap node ids of inodes the kernel may be asked to
 * let go of (into @ids; the number returned): the CLOCK algorithm over the
 * hash, from where the hand stopped last time, at most one turn (so each
 * inode at most once).  An inode used since the hand last passed it
 * (@in->recent) gets a second chance: the hand clears the mark and moves on.  The root and inodes out of the hash (whose
 * number another took: the kernel forgets them on its own) never are.
 * The ids may name freed inodes by the time they reach the kernel, or new
 * ones at the same address: a prune of either is harmless (the kernel
 * skips ids it does not know and inodes in use, and drops an unused one
 * from its cache only), and nothing here dereferences them.
 */
size_t inode_victims(struct inode_table *t, uint64_t *ids, size_t cap);

/*
 * inode_victims_each - inode_victims() with the choice left to @take: the
 * clock hands it each inode it would hand out, under the table lock (so
 * @in lives and its kname stays put; @take must neither block nor take the
 * table lock), and counts those it takes (true) against @cap.
 */
typedef bool inode_victim_fn(void *arg, struct inode *in);
size_t inode_victims_each(struct inode_table *t, size_t cap, inode_victim_fn *take, void *arg);

/*
 * inode_kname_swap - @in's kname becomes @name (NULL: none); the one it had
 * is returned, for the caller to free.  inode_kname_swap_at - the same for
 * the hashed inode of backing (@st's dev, ino), if any, else @name itself
 * is returned.  The inode frees the last one with itself.
 */
struct inode_kname *inode_kname_swap(struct inode_table *t, struct inode *in,
				     struct inode_kname *name);
struct inode_kname *inode_kname_swap_at(struct inode_table *t, const struct stat *st,
					struct inode_kname *name);
/*
 * inode_kname_take_if - the hashed inode of backing (@dev, @ino) loses its
 * kname if it is still @name (compared, not read: it may be freed), which
 * is returned for the caller to free; else NULL.
 */
struct inode_kname *inode_kname_take_if(struct inode_table *t, dev_t dev, ino_t ino,
					const struct inode_kname *name);
/* inode_open_fds - inode fds open now (status); inode_fds_bounded - whether they are bounded. */
unsigned inode_open_fds(struct inode_table *t);
bool inode_fds_bounded(struct inode_table *t);

#endif
