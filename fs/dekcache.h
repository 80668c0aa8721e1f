/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_DEKCACHE_H
#define ENVELOPEFS_FS_DEKCACHE_H

/*
 * The DEK cache: backing (dev, ino) -> unwrapped DEK, so that a file's key
 * is unwrapped by the KMS once and not on every open.
 *
 * Invariants:
 *  - An entry's key lives in secmem and is wiped (secmem_free) when the
 *    entry is evicted, replaced, forgotten or the cache is destroyed.
 *  - An entry is pinned while any user holds it (dekcache_get/insert return
 *    it pinned; dekcache_put unpins).  Pinned entries are never evicted and
 *    never freed; their key bytes never change.
 *  - Unpinned entries sit in an LRU list bounded by max_entries and by
 *    max_age seconds since last use.
 *  - An entry also records the file ID of the key record it was unwrapped
 *    from.  dekcache_get() only answers when the caller's file ID matches:
 *    a backing inode number reused by a new file, whose record has another
 *    file ID, never gets the old file's DEK (the stale entry is dropped).
 *  - Hard links share (dev, ino) and so share one entry.
 * All functions are thread-safe (one mutex; no KMS call or I/O under it).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DEK_LEN 32
#define FILE_ID_LEN 16

struct dek_entry {
	/* Immutable while the entry exists. */
	dev_t dev;
	ino_t ino;
	uint8_t file_id[FILE_ID_LEN];
	uint32_t key_version;
	uint8_t *key; /* DEK_LEN bytes of secmem */
	/* The key scope the file is in (scopes.h), NULL for the volume's;
	 * set once, by dekcache_tag(), under the cache lock. */
	const void *tag;

	/* Guarded by the cache lock. */
	unsigned pins;
	bool linked;	   /* in the hash table (false once replaced/forgotten) */
	uint64_t last_use; /* monotonic seconds */
	struct dek_entry *hash_next;
	struct dek_entry *lru_prev, *lru_next; /* only while unpinned and linked */
};

struct dekcache_stats {
	uint64_t hits;
	uint64_t misses;
	uint64_t evictions;
	uint64_t entries;
	uint64_t pinned;
};

struct dekcache;

/* dekcache_create - cache bounded to @max_entries unpinned entries, @max_age s. 0 or -ENOMEM. */
int dekcache_create(size_t max_entries, unsigned max_age, struct dekcache **out);

/* dekcache_destroy - wipe and free every entry, pinned or not (unmount). */
void dekcache_destroy(struct dekcache *c);

/*
 * dekcache_get - the entry for (@dev, @ino) if its file ID is @file_id,
 * pinned; NULL on a miss.  An entry with another file ID is dropped.
 */
struct dek_entry *dekcache_get(struct dekcache *c, dev_t dev, ino_t ino,
			       const uint8_t file_id[FILE_ID_LEN]);

/*
 * dekcache_holds - whether an entry for (@dev, @ino) with file ID @file_id
 * exists; it is neither pinned, nor counted as a hit or a miss, nor moved
 * in the LRU (a look ahead, not a use).
 */
bool dekcache_holds(struct dekcache *c, dev_t dev, ino_t ino, const uint8_t file_id[FILE_ID_LEN]);

/*
 * dekcache_file_id - the file ID of the entry for (@dev, @ino), if any,
 * into @file_id: the ID of a record of that inode whose DEK was unwrapped
 * for it (the KMS binds the file ID) and whose MAC was checked.
 */
bool dekcache_file_id(struct dekcache *c, dev_t dev, ino_t ino, uint8_t file_id[FILE_ID_LEN]);

/*
 * dekcache_insert - copy @key into a new pinned entry for (@dev, @ino),
 * replacing any previous entry for that inode.  0 or -ENOMEM.
 */
int dekcache_insert(struct dekcache *c, dev_t dev, ino_t ino, const uint8_t file_id[FILE_ID_LEN],
		    uint32_t key_version, const uint8_t *key, struct dek_entry **out);

/* dekcache_put - unpin @e (NULL is a no-op); frees it if it was replaced. */
void dekcache_put(struct dekcache *c, struct dek_entry *e);

/* dekcache_forget - drop the entry for (@dev, @ino), if any, once unpinned. */
void dekcache_forget(struct dekcache *c, dev_t dev, ino_t ino);

/* dekcache_tag - mark @e (pinned by the caller) as a key of key scope @tag. */
void dekcache_tag(struct dekcache *c, struct dek_entry *e, const void *tag);

/*
 * dekcache_forget_tag - drop every entry of key scope @tag (a scope lock):
 * unpinned ones are wiped at once, pinned ones (open files) when unpinned.
 */
void dekcache_forget_tag(struct dekcache *c, const void *tag);

/* dekcache_expire - evict unpinned entries idle for longer than max_age. */
void dekcache_expire(struct dekcache *c);

void dekcache_get_stats(struct dekcache *c, struct dekcache_stats *out);

#endif
