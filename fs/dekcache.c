/* SPDX-License-Identifier: MIT */
/* The DEK cache: see dekcache.h for the invariants. */
#include "dekcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/secmem.h"

struct dekcache {
	pthread_mutex_t lock;
	struct dek_entry **buckets;
	size_t nbuckets; /* power of two */
	size_t max_entries;
	unsigned max_age;
	struct dek_entry *lru_head, *lru_tail; /* head = most recently used */
	size_t lru_len;
	struct dekcache_stats stats;
};

static uint64_t now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

static size_t bucket_of(const struct dekcache *c, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev;

	return (size_t)(h ^ (h >> 29)) & (c->nbuckets - 1);
}

int dekcache_create(size_t max_entries, unsigned max_age, struct dekcache **out)
{
	struct dekcache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->nbuckets = 64;
	while (c->nbuckets < max_entries * 2)
		c->nbuckets <<= 1;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	if (!c->buckets) {
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->lock, NULL);
	c->max_entries = max_entries;
	c->max_age = max_age;
	*out = c;
	return 0;
}

static void entry_free(struct dek_entry *e)
{
	secmem_free(e->key, DEK_LEN);
	free(e);
}

static void lru_unlink(struct dekcache *c, struct dek_entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		c->lru_head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		c->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
	c->lru_len--;
}

static void lru_push_head(struct dekcache *c, struct dek_entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = c->lru_head;
	if (c->lru_head)
		c->lru_head->lru_prev = e;
	else
		c->lru_tail = e;
	c->lru_head = e;
	c->lru_len++;
}

static void hash_unlink(struct dekcache *c, struct dek_entry *e)
{
	struct dek_entry **p = &c->buckets[bucket_of(c, e->dev, e->ino)];

	while (*p != e)
		p = &(*p)->hash_next;
	*p = e->hash_next;
	e->hash_next = NULL;
	e->linked = false;
	c->stats.entries--;
}

/*
 * Take @e out of the cache.  An unpinned entry is wiped now; a pinned one is
 * only unlinked, and wiped by the dekcache_put() that drops its last pin.
 */
static void entry_drop(struct dekcache *c, struct dek_entry *e)
{
	hash_unlink(c, e);
	if (e->pins == 0) {
		lru_unlink(c, e);
		entry_free(e);
	}
}

static struct dek_entry *hash_find(struct dekcache *c, dev_t dev, ino_t ino)
{
	struct dek_entry *e = c->buckets[bucket_of(c, dev, ino)];

	while (e && !(e->dev == dev && e->ino == ino))
		e = e->hash_next;
	return e;
}

static void pin(struct dekcache *c, struct dek_entry *e)
{
	if (e->pins++ == 0) {
		lru_unlink(c, e);
		c->stats.pinned++;
	}
	e->last_use = now_seconds();
}

/* Evict from the LRU tail while over the count bound or past the age bound. */
static void evict_locked(struct dekcache *c, uint64_t now)
{
	while (c->lru_tail &&
	       (c->lru_len > c->max_entries || now - c->lru_tail->last_use > c->max_age)) {
		c->stats.evictions++;
		entry_drop(c, c->lru_tail);
	}
}

struct dek_entry *dekcache_get(struct dekcache *c, dev_t dev, ino_t ino,
			       const uint8_t file_id[FILE_ID_LEN])
{
	struct dek_entry *e;

	pthread_mutex_lock(&c->lock);
	e = hash_find(c, dev, ino);
	if (e && memcmp(e->file_id, file_id, FILE_ID_LEN) != 0) {
		/* The inode number now belongs to another file. */
		entry_drop(c, e);
		e = NULL;
	}
	if (e) {
		pin(c, e);
		c->stats.hits++;
	} else {
		c->stats.misses++;
	}
	pthread_mutex_unlock(&c->lock);
	return e;
}

bool dekcache_holds(struct dekcache *c, dev_t dev, ino_t ino, const uint8_t file_id[FILE_ID_LEN])
{
	struct dek_entry *e;
	bool held;

	pthread_mutex_lock(&c->lock);
	e = hash_find(c, dev, ino);
	held = e && memcmp(e->file_id, file_id, FILE_ID_LEN) == 0;
	pthread_mutex_unlock(&c->lock);
	return held;
}

bool dekcache_file_id(struct dekcache *c, dev_t dev, ino_t ino, uint8_t file_id[FILE_ID_LEN])
{
	struct dek_entry *e;

	pthread_mutex_lock(&c->lock);
	e = hash_find(c, dev, ino);
	if (e)
		memcpy(file_id, e->file_id, FILE_ID_LEN);
	pthread_mutex_unlock(&c->lock);
	return e != NULL;
}

int dekcache_insert(struct dekcache *c, dev_t dev, ino_t ino, const uint8_t file_id[FILE_ID_LEN],
		    uint32_t key_version, const uint8_t *key, struct dek_entry **out)
{
	struct dek_entry *e = calloc(1, sizeof(*e)), *old;

	if (!e)
		return -ENOMEM;
	e->key = secmem_alloc(DEK_LEN);
	if (!e->key) {
		free(e);
		return -ENOMEM;
	}
	memcpy(e->key, key, DEK_LEN);
	memcpy(e->file_id, file_id, FILE_ID_LEN);
	e->dev = dev;
	e->ino = ino;
	e->key_version = key_version;
	e->pins = 1;
	e->last_use = now_seconds();

	pthread_mutex_lock(&c->lock);
	old = hash_find(c, dev, ino);
	if (old)
		entry_drop(c, old);
	size_t b = bucket_of(c, dev, ino);
	e->hash_next = c->buckets[b];
	c->buckets[b] = e;
	e->linked = true;
	c->stats.entries++;
	c->stats.pinned++;
	pthread_mutex_unlock(&c->lock);
	*out = e;
	return 0;
}

void dekcache_put(struct dekcache *c, struct dek_entry *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&c->lock);
	if (--e->pins == 0) {
		c->stats.pinned--;
		if (e->linked) {
			e->last_use = now_seconds();
			lru_push_head(c, e);
			evict_locked(c, e->last_use);
		} else {
			entry_free(e);
		}
	}
	pthread_mutex_unlock(&c->lock);
}

void dekcache_forget(struct dekcache *c, dev_t dev, ino_t ino)
{
	struct dek_entry *e;

	pthread_mutex_lock(&c->lock);
	e = hash_find(c, dev, ino);
	if (e)
		entry_drop(c, e);
	pthread_mutex_unlock(&c->lock);
}

void dekcache_tag(struct dekcache *c, struct dek_entry *e, const void *tag)
{
	pthread_mutex_lock(&c->lock);
	e->tag = tag;
	pthread_mutex_unlock(&c->lock);
}

void dekcache_forget_tag(struct dekcache *c, const void *tag)
{
	pthread_mutex_lock(&c->lock);
	for (size_t b = 0; b < c->nbuckets; b++) {
		struct dek_entry *e = c->buckets[b], *next;

		for (; e; e = next) {
			next = e->hash_next; /* entry_drop unlinks e */
			if (e->tag == tag)
				entry_drop(c, e);
		}
	}
	pthread_mutex_unlock(&c->lock);
}

void dekcache_expire(struct dekcache *c)
{
	pthread_mutex_lock(&c->lock);
	evict_locked(c, now_seconds());
	pthread_mutex_unlock(&c->lock);
}

void dekcache_get_stats(struct dekcache *c, struct dekcache_stats *out)
{
	pthread_mutex_lock(&c->lock);
	*out = c->stats;
	pthread_mutex_unlock(&c->lock);
}

void dekcache_destroy(struct dekcache *c)
{
	if (!c)
		return;
	for (size_t b = 0; b < c->nbuckets; b++) {
		struct dek_entry *e = c->buckets[b];
		while (e) {
			struct dek_entry *next = e->hash_next;
			entry_free(e);
			e = next;
		}
	}
	pthread_mutex_destroy(&c->lock);
	free(c->buckets);
	free(c);
}
