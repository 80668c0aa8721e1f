/* SPDX-License-Identifier: MIT */
/* Per-file key set-up: see filekey.h. */
#include "filekey.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "crypto/secmem.h"
#include "binding.h"
#include "fileversion.h"
#include "log.h"
#include "scopes.h"
#include "shared.h"

/* How long an unwrap's "KMS unavailable" answers the next reads of the same file. */
#define UNAVAILABLE_REUSE_MS 1000

/* auth_failure - @in's record does not authenticate under the DEK at hand. */
static int auth_failure(struct envfs *fs, struct inode *in)
{
	log_ratelimited(LOG_ERR, "inode %llu: key record fails authentication",
			(unsigned long long)in->ino);
	atomic_fetch_add(&fs->counters.integrity_errors, 1);
	return -EIO;
}

/*
 * read_record_at - read the record of @in (and where it is, into @pos when
 * not NULL); corrupt records, records binding the file to other names
 * (binding.h) and records older than this host saw (fileversion.h) are
 * logged and become -EIO.  Key lock held.
 */
static int read_record_at(struct envfs *fs, struct inode *in, int fd, struct key_record *rec,
			  struct record_pos *pos)
{
	struct record_pos here;
	int ret;

	if (!pos)
		pos = &here;
	ret = layout_read_record(&fs->layout, fd, rec, pos);

	/* Shared mode: most likely a re-key in progress on another host,
	 * which holds the key lock (shared.h); keylock_wait() waits it out. */
	if (ret == 0 && (rec->flags & RECORD_FLAG_REKEYING) && fs->shared && keylock_wait(fd) == 0) {
		shared_backing_fresh(fd); /* the flagged record may sit in its cache */
		ret = layout_read_record(&fs->layout, fd, rec, pos);
	}
	if (ret == 0 && (rec->flags & RECORD_FLAG_REKEYING)) {
		/* Only a crash mid re-key leaves this; the next mount finishes it. */
		log_ratelimited(LOG_ERR, "inode %llu: interrupted re-key; remount (as root) to "
					 "finish it from its journal",
				(unsigned long long)in->ino);
		return -EIO;
	}
	if (ret == -EBADMSG) {
		log_ratelimited(LOG_ERR, "inode %llu: key record is corrupt",
				(unsigned long long)in->ino);
		atomic_fetch_add(&fs->counters.integrity_errors, 1);
		return -EIO;
	}
	if (ret == 0)
		ret = binding_check(fs, in, rec);
	return ret == 0 ? fileversion_check_locked(fs, in, rec, pos) : ret;
}

static int read_record(struct envfs *fs, struct inode *in, int fd, struct key_record *rec)
{
	return read_record_at(fs, in, fd, rec, NULL);
}

/*
 * forget_stale_key - shared mode: another host may have re-keyed, replaced
 * or emptied the file since this daemon loaded its DEK, so the record just
 * read (@rec, NULL when there is none) decides: a DEK or a missed record
 * of another file ID is dropped, and the next I/O loads the record's.  Key
 * lock and content lock (exclusive) held: no I/O is using in->dek.
 */
static void forget_stale_key(struct envfs *fs, struct inode *in, const struct key_record *rec)
{
	if (in->dek && (!rec || memcmp(in->dek->file_id, rec->file_id, RECORD_FILE_ID_LEN) != 0)) {
		dekcache_put(fs->cache, in->dek);
		in->dek = NULL;
		/* The holes this host's writes left were in the content now replaced. */
		if (in->holes)
			in->holes->pending.n = 0;
	}
	if (in->missed_record &&
	    (!rec || memcmp(in->missed_record->file_id, rec->file_id, RECORD_FILE_ID_LEN) != 0)) {
		free(in->missed_record);
		in->missed_record = NULL;
	}
}

/*
 * adopt_holes - make @rec's hole ranges @in's (a version-1 record binds
 * none).  They decide what reads as zeros, so a record whose MAC was not
 * checked on its way here (@checked false: the DEK came from the cache) is
 * checked now against @dek.  On failure the DEK is let go.  Key lock held,
 * and no I/O on @in (no open yet, or the content lock held exclusively).
 * 0, -EIO or -ENOMEM.
 */
static int adopt_holes(struct envfs *fs, struct inode *in, const struct key_record *rec,
		       const uint8_t *dek, bool checked)
{
	if (rec->version == 2 && !checked && record_check_mac(rec, dek, fs->cfg.uuid) != 0) {
		dekcache_put(fs->cache, in->dek);
		in->dek = NULL;
		return auth_failure(fs, in);
	}
	if (rec->version != 2) {
		free(in->holes);
		in->holes = NULL;
	} else if (!in->holes && !(in->holes = calloc(1, sizeof(*in->holes)))) {
		dekcache_put(fs->cache, in->dek);
		in->dek = NULL;
		return -ENOMEM;
	}
	if (in->holes)
		in->holes->bound = rec->holes;
	fileversion_authentic(fs, rec);
	return 0;
}

int filekey_declare_holes(struct envfs *fs, struct inode *in, int fd, uint64_t first,
			  uint64_t end)
{
	struct key_record *rec = malloc(sizeof(*rec));
	struct record_pos pos;
	int ret = rec ? layout_read_record(&fs->layout, fd, rec, &pos) : -ENOMEM;

	/* The stored record is re-sealed below: it must be the one this DEK
	 * opened, or an edit of it would be sealed with ours. */
	if (ret == 0 && (memcmp(rec->file_id, in->dek->file_id, RECORD_FILE_ID_LEN) != 0 ||
			 rec->version != 2 || record_check_mac(rec, in->dek->key, fs->cfg.uuid) != 0)) {
		log_ratelimited(LOG_ERR, "inode %llu: key record changed or fails authentication",
				(unsigned long long)in->ino);
		atomic_fetch_add(&fs->counters.integrity_errors, 1);
		ret = -EIO;
	} else if (ret == -EBADMSG || ret == -ENODATA) {
		ret = -EIO;
	}
	if (ret == 0) {
		record_holes_add(&rec->holes, first, end);
		ret = record_seal_mac(rec, in->dek->key, fs->cfg.uuid);
	}
	/* Crash-safe and durable (layout.h) before any hole is made. */
	if (ret == 0)
		ret = layout_write_record(&fs->layout, fd, rec, &pos);
	if (ret == 0) {
		/* Declared only for a record that binds holes (content.c): in->holes is set. */
		in->holes->bound = rec->holes;
		pthread_mutex_lock(&in->key_lock);
		fileversion_written_locked(fs, in, rec, &pos, true);
		pthread_mutex_unlock(&in->key_lock);
	}
	free(rec);
	return ret;
}

int filekey_attach(struct envfs *fs, struct inode *in, int fd)
{
	struct key_record *rec = NULL;
	int ret = 0;

	prefetch_opened(fs->prefetch, in->dev, in->ino);
	/* Shared mode reads the record at every open: the exclusive content
	 * lock lets it replace a DEK that other opens' I/O would be using. */
	if (fs->shared)
		pthread_rwlock_wrlock(&in->content_lock);
	pthread_mutex_lock(&in->key_lock);
	if (!fs->shared && (in->opens > 0 || in->dek))
		goto counted; /* the record was checked by the first open */
	rec = malloc(sizeof(*rec));
	if (!rec) {
		ret = -ENOMEM;
		goto out;
	}
	ret = read_record(fs, in, fd, rec);
	if (fs->shared && (ret == 0 || ret == -ENODATA))
		forget_stale_key(fs, in, ret == 0 ? rec : NULL);
	if (ret == -ENODATA) {
		ret = 0; /* empty file: its record comes with the first write */
		goto counted;
	}
	if (ret < 0)
		goto out;
	if (in->missed_record) {
		/* Shared mode: the same file ID, perhaps with more holes. */
		free(in->missed_record);
		in->missed_record = rec;
		rec = NULL;
		goto counted;
	}
	/* A hit only if the cached DEK came from this very record's file ID
	 * (shared mode: the DEK kept, the record read again). */
	if (!in->dek)
		in->dek = dekcache_get(fs->cache, in->dev, in->ino, rec->file_id);
	if (in->dek) {
		ret = adopt_holes(fs, in, rec, in->dek->key, false);
		if (ret < 0)
			goto out;
	} else {
		in->missed_record = rec;
		rec = NULL;
	}
counted:
	in->opens++;
out:
	pthread_mutex_unlock(&in->key_lock);
	if (fs->shared)
		pthread_rwlock_unlock(&in->content_lock);
	free(rec);
	return ret;
}

int filekey_revalidate(struct envfs *fs, struct inode *in, int fd)
{
	struct key_record *rec = malloc(sizeof(*rec));
	int ret = rec ? keylock_wait(fd) : -ENOMEM;

	shared_backing_fresh(fd);

	pthread_rwlock_wrlock(&in->content_lock);
	pthread_mutex_lock(&in->key_lock);
	if (ret == 0)
		ret = read_record(fs, in, fd, rec);
	if (ret == 0 || ret == -ENODATA)
		forget_stale_key(fs, in, ret == 0 ? rec : NULL);
	/* The same file: another host may have added holes to its record. */
	if (ret == 0 && in->dek)
		ret = adopt_holes(fs, in, rec, in->dek->key, false);
	pthread_mutex_unlock(&in->key_lock);
	pthread_rwlock_unlock(&in->content_lock);
	free(rec);
	return ret == -ENODATA ? 0 : ret;
}

void filekey_detach(struct envfs *fs, struct inode *in)
{
	pthread_mutex_lock(&in->key_lock);
	if (--in->opens == 0) {
		dekcache_put(fs->cache, in->dek);
		in->dek = NULL;
		free(in->missed_record);
		in->missed_record = NULL;
		/* The bound holes come back with the key, from its record (as
		 * safe to drop as the key: no I/O without an open); pending
		 * holes a failed settle left are kept for the next writer. */
		if (in->holes && in->holes->pending.n == 0) {
			free(in->holes);
			in->holes = NULL;
		}
	}
	pthread_mutex_unlock(&in->key_lock);
}

static void context_of(const struct envfs *fs, const uint8_t file_id[16], struct kms_context *ctx)
{
	memcpy(ctx->volume_uuid, fs->cfg.uuid, sizeof(ctx->volume_uuid));
	memcpy(ctx->file_id, file_id, sizeof(ctx->file_id));
}

static int key_failure(struct envfs *fs, struct inode *in, const char *what, int err)
{
	atomic_fetch_add(&fs->counters.key_errors, 1);
	log_ratelimited(LOG_ERR, "inode %llu: %s: %s", (unsigned long long)in->ino, what,
			kms_strerror(err));
	/* A key scope's KMS that refuses is its tenant revoking: EACCES
	 * (docs/THREAT-MODEL.md, "Key scopes"); the volume's stays EIO. */
	return in->scope && err == -EACCES ? -EACCES : -EIO;
}

/*
 * keys_get / keys_put - the KMS set of @in's key scope (scopes.h; the
 * volume's outside any), held for one operation: a file's DEK is made and
 * unwrapped by its scope's KMS only.  keys_get: 0 or -EACCES (a scope its
 * KMS keeps locked).
 */
static int keys_get(struct envfs *fs, struct scope *scope, const struct kms_set **set)
{
	return scope_keys_get(scope, fs->keys, set);
}

static void keys_put(struct envfs *fs, struct scope *scope, const struct kms_set *set)
{
	scope_keys_put(scope, fs->keys, set);
}

/*
 * Give an empty file its record: a fresh file ID and DEK from the pool.  The
 * KMS set is held until the record is written, so a migration's reload
 * (kmsset.h) cannot return while a record of the provider it replaces is
 * still on its way to the disk.
 */
static int create_record(struct envfs *fs, struct inode *in, int fd, struct key_record *rec,
			 uint8_t *dek, struct filekey_first *first)
{
	struct record_pos pos = {.seq = 0, .slot = -1};
	struct fresh_key *key = malloc(sizeof(*key));
	struct scope *scope = in->scope;
	const struct kms_set *set;
	int ret;

	if (!key)
		return -ENOMEM;
	ret = keys_get(fs, scope, &set);
	if (ret < 0) {
		free(key);
		return ret; /* a locked scope: EACCES, logged by scopes.c */
	}
	ret = dek_pool_take(set->pool, key, dek);
	if (ret < 0 || key->blob_len > sizeof(rec->wrapped)) {
		keys_put(fs, scope, set);
		free(key);
		return key_failure(fs, in, "cannot create a data key", ret < 0 ? ret : -EIO);
	}
	memset(rec, 0, sizeof(*rec));
	rec->version = fs->layout.record_version;
	memcpy(rec->file_id, key->file_id, sizeof(rec->file_id));
	rec->key_version = key->version;
	rec->wrapped_len = (uint16_t)key->blob_len;
	memcpy(rec->wrapped, key->blob, key->blob_len);
	free(key);
	snprintf(rec->key_ref, sizeof(rec->key_ref), "%s", set->keys.current->key_ref);
	binding_stamp(fs, in, fd, rec);
	/* Format 3: a new record is version 1 (fileversion.h). */
	if (fs->rollback && rec->version == 2)
		rec->file_version = 1;
	ret = record_seal_mac(rec, dek, fs->cfg.uuid);
	if (ret == 0 && first && fs->layout.placement == PLACEMENT_HEADER) {
		ret = layout_first_header(&fs->layout, rec, &first->header);
		if (ret == 0) {
			first->set = set; /* held until the header is stored */
			first->scope = scope;
			/* Tracked once stored (filekey_first_done()): a syncfs
			 * before that must not count it. */
			memcpy(first->file_id, rec->file_id, sizeof(first->file_id));
			memcpy(first->mac, rec->mac, sizeof(first->mac));
			first->file_version = rec->file_version;
			return 0;
		}
	} else if (ret == 0) {
		ret = layout_write_record(&fs->layout, fd, rec, &pos);
		if (ret == 0)
			fileversion_written_locked(fs, in, rec, &pos, false);
	}
	keys_put(fs, scope, set);
	return ret;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* note_unavailable - an unwrap for @in found the KMS unavailable just now.  Key lock held. */
static void note_unavailable(struct inode *in)
{
	in->kms_unavailable = true;
	in->unavailable_ms = now_ms();
}

/*
 * kms_just_unavailable - whether an unwrap for @in found the KMS unavailable
 * less than UNAVAILABLE_REUSE_MS ago: a prefetch that an open waited for on
 * the key lock, or the read the kernel is now retrying (a failed read is
 * tried again, read-ahead then the read itself).  The read then fails at
 * once: asking again would double its wait, past the KMS deadline.  Key
 * lock held.
 */
static bool kms_just_unavailable(const struct inode *in)
{
	return in->kms_unavailable && now_ms() - in->unavailable_ms < UNAVAILABLE_REUSE_MS;
}

/* Unwrap the DEK of an existing record and authenticate the record with it. */
static int unwrap_record(struct envfs *fs, struct inode *in, const struct key_record *rec,
			 uint8_t *dek)
{
	struct scope *scope = in->scope;
	const struct kms_set *set;
	struct kms *kms;
	struct kms_context ctx;
	int ret = keys_get(fs, scope, &set);

	if (ret < 0)
		return ret; /* a locked scope: EACCES, logged by scopes.c */
	kms = kms_pair_for(&set->keys, rec->key_ref);
	if (!kms) {
		log_ratelimited(LOG_ERR, "inode %llu: key record names master key '%s', not this "
					 "%s's '%s'",
				(unsigned long long)in->ino, rec->key_ref,
				scope ? "key scope" : "volume", set->keys.current->key_ref);
		keys_put(fs, scope, set);
		atomic_fetch_add(&fs->counters.key_errors, 1);
		return -EIO;
	}
	context_of(fs, rec->file_id, &ctx);
	if (kms_just_unavailable(in)) {
		keys_put(fs, scope, set);
		return key_failure(fs, in, "cannot unwrap the data key", -EAGAIN);
	}
	ret = kms_unwrap(kms, &ctx, rec->wrapped, rec->wrapped_len, dek);
	keys_put(fs, scope, set);
	if (ret == -EAGAIN)
		note_unavailable(in);
	if (ret < 0)
		return key_failure(fs, in, "cannot unwrap the data key", ret);
	if (record_check_mac(rec, dek, fs->cfg.uuid) != 0)
		return auth_failure(fs, in);
	return 0;
}

/*
 * unwrap_or_wait - the DEK of @rec: when a prefetch batch is unwrapping it
 * (prefetch.h), wait for the batch and take the DEK it cached (in->dek set),
 * else unwrap it here (into @dek).  @from_open: @rec was read at open, and a
 * batch may have cached the DEK since (the cache is looked at again).  A
 * batch that found the KMS unavailable answers for this open too: asking
 * again would double its wait.  Key lock held.
 */
static int unwrap_or_wait(struct envfs *fs, struct inode *in, const struct key_record *rec,
			  uint8_t *dek, bool from_open)
{
	int rc = 0;
	bool waited = prefetch_wait(fs->prefetch, in->dev, in->ino, &rc);

	if (waited && rc == -EAGAIN) {
		note_unavailable(in);
		return key_failure(fs, in, "cannot unwrap the data key", rc);
	}
	/* The open counted its miss already: looking again counts only a hit. */
	if ((waited ||
	     (from_open && dekcache_holds(fs->cache, in->dev, in->ino, rec->file_id))) &&
	    (in->dek = dekcache_get(fs->cache, in->dev, in->ino, rec->file_id)))
		return 0;
	return unwrap_record(fs, in, rec, dek);
}

static int load_key(struct envfs *fs, struct inode *in, int fd, bool create,
		    struct filekey_first *first)
{
	struct key_record *rec, *missed;
	uint8_t *dek;
	int ret;

	pthread_mutex_lock(&in->key_lock);
	if (in->dek) {
		pthread_mutex_unlock(&in->key_lock);
		return 0;
	}
	missed = in->missed_record;
	in->missed_record = NULL;
	dek = secmem_alloc(KMS_DEK_LEN);
	rec = missed ? missed : malloc(sizeof(*rec));
	if (!rec || !dek) {
		ret = -ENOMEM;
		goto out;
	}
	if (rec == missed)
		ret = unwrap_or_wait(fs, in, rec, dek, true);
	else if ((ret = read_record(fs, in, fd, rec)) == -ENODATA && create)
		ret = create_record(fs, in, fd, rec, dek, first);
	else if (ret == 0 && (in->dek = dekcache_get(fs->cache, in->dev, in->ino, rec->file_id))) {
		ret = adopt_holes(fs, in, rec, in->dek->key, false); /* a cache hit */
		goto out;
	} else if (ret == 0)
		ret = unwrap_or_wait(fs, in, rec, dek, false);
	else
		goto out; /* error, or no record and none wanted */
	if (ret == 0 && in->dek) {
		/* Taken from a prefetch batch: its holes are this record's. */
		ret = adopt_holes(fs, in, rec, in->dek->key, false);
		goto out;
	}
	if (ret == 0)
		ret = dekcache_insert(fs->cache, in->dev, in->ino, rec->file_id, rec->key_version,
				      dek, &in->dek);
	if (ret == 0 && in->scope)
		dekcache_tag(fs->cache, in->dek, in->scope); /* a scope lock drops it */
	if (ret == 0)
		ret = adopt_holes(fs, in, rec, dek, true);
out:
	pthread_mutex_unlock(&in->key_lock);
	secmem_free(dek, KMS_DEK_LEN);
	free(rec);
	return ret;
}

int filekey_load(struct envfs *fs, struct inode *in, int fd, bool create)
{
	return load_key(fs, in, fd, create, NULL);
}

int filekey_load_for_write(struct envfs *fs, struct inode *in, int fd,
			   struct filekey_first *first)
{
	*first = (struct filekey_first){0};
	return load_key(fs, in, fd, true, first);
}

void filekey_first_done(struct envfs *fs, struct inode *in, struct filekey_first *first,
			int stored)
{
	if (!first->header)
		return;
	if (stored == 0 && fs->rollback) {
		struct key_record *rec = calloc(1, sizeof(*rec));
		struct record_pos pos = {.seq = 1, .slot = 0};

		/* Untracked when out of memory: then it is at its first read. */
		if (rec) {
			memcpy(rec->file_id, first->file_id, sizeof(rec->file_id));
			memcpy(rec->mac, first->mac, sizeof(rec->mac));
			rec->file_version = first->file_version;
			pthread_mutex_lock(&in->key_lock);
			fileversion_written_locked(fs, in, rec, &pos, false);
			pthread_mutex_unlock(&in->key_lock);
		}
		free(rec);
	}
	if (stored < 0) {
		/* The record never reached the file: the next write makes
		 * another, so the DEK of this one goes. */
		pthread_mutex_lock(&in->key_lock);
		dekcache_put(fs->cache, in->dek);
		in->dek = NULL;
		dekcache_forget(fs->cache, in->dev, in->ino);
		pthread_mutex_unlock(&in->key_lock);
	}
	keys_put(fs, first->scope, first->set);
	free(first->header);
	*first = (struct filekey_first){0};
}

/*
 * record_dek - the DEK for @rec if the daemon has it: the open file's pinned
 * one, or an idle cached one (then pinned in *@cached for the caller to put).
 * Key lock held.
 */
static const struct dek_entry *record_dek(struct envfs *fs, struct inode *in,
					  const struct key_record *rec, struct dek_entry **cached)
{
	*cached = NULL;
	if (in->dek && memcmp(in->dek->file_id, rec->file_id, FILE_ID_LEN) == 0)
		return in->dek;
	*cached = dekcache_get(fs->cache, in->dev, in->ino, rec->file_id);
	return *cached;
}

/*
 * record_to_replace - before @in's record is replaced: a record kept from
 * open is dropped (it is read afresh later), @rec gets the current record
 * and *@have its DEK if the daemon has it (see record_dek(); *@cached is the
 * caller's to put).  read_record()'s result.  Key lock held.
 */
static int record_to_replace(struct envfs *fs, struct inode *in, int fd, struct key_record *rec,
			     const struct dek_entry **have, struct dek_entry **cached)
{
	int ret;

	free(in->missed_record);
	in->missed_record = NULL;
	*have = NULL;
	*cached = NULL;
	ret = read_record(fs, in, fd, rec);
	if (ret == 0)
		*have = record_dek(fs, in, rec, cached);
	return ret;
}

/*
 * cache_new_record - after @in's record changed, cache @key under the new
 * file ID and version, replacing the old entry; an open file's pin moves to
 * the new entry.  Key lock held.
 */
static void cache_new_record(struct envfs *fs, struct inode *in, const uint8_t *file_id,
			     uint32_t version, const uint8_t *key)
{
	struct dek_entry *fresh;

	if (dekcache_insert(fs->cache, in->dev, in->ino, file_id, version, key, &fresh) < 0)
		return; /* out of memory: the next open unwraps again */
	if (in->scope)
		dekcache_tag(fs->cache, fresh, in->scope); /* a scope lock drops it, as the old one */
	if (in->dek) {
		dekcache_put(fs->cache, in->dek);
		in->dek = fresh;
	} else {
		dekcache_put(fs->cache, fresh);
	}
}

int filekey_edit_record(struct envfs *fs, struct inode *in, int fd,
			int (*edit)(struct key_record *rec, void *arg), void *arg)
{
	struct key_record *rec = malloc(sizeof(*rec));
	uint8_t *own = secmem_alloc(KMS_DEK_LEN);
	const struct dek_entry *have = NULL;
	struct dek_entry *cached = NULL;
	const uint8_t *dek = own;
	struct record_pos pos;
	int ret = rec && own ? 0 : -ENOMEM;

	pthread_rwlock_wrlock(&in->content_lock);
	/* Shared mode: a re-key on another host must not see the record
	 * change under it (as for a re-wrap, ioctl.c). */
	if (ret == 0 && fs->shared_locks)
		ret = keylock_share(fd);
	pthread_mutex_lock(&in->key_lock);
	if (ret == 0)
		ret = read_record_at(fs, in, fd, rec, &pos);
	if (ret == 0)
		have = record_dek(fs, in, rec, &cached);
	/* The record is re-sealed below: it must be authentic first, or an
	 * edit of it by the storage would be sealed with our DEK. */
	if (ret == 0 && have) {
		dek = have->key;
		if (record_check_mac(rec, dek, fs->cfg.uuid) != 0)
			ret = auth_failure(fs, in);
	} else if (ret == 0) {
		ret = unwrap_record(fs, in, rec, own);
	}
	if (ret == 0)
		ret = edit(rec, arg);
	if (ret == 0)
		ret = record_seal_mac(rec, dek, fs->cfg.uuid);
	if (ret == 0)
		ret = layout_write_record(&fs->layout, fd, rec, &pos);
	if (ret == 0)
		fileversion_written_locked(fs, in, rec, &pos, true);
	if (ret == 0) {
		/* A record kept from an open is the one replaced: read it again. */
		free(in->missed_record);
		in->missed_record = NULL;
	}
	dekcache_put(fs->cache, cached);
	pthread_mutex_unlock(&in->key_lock);
	pthread_rwlock_unlock(&in->content_lock);
	secmem_free(own, KMS_DEK_LEN);
	free(rec);
	return ret == -ENODATA || ret > 0 ? 0 : ret;
}

/*
 * raise_version - @rec (at @pos, read for the bump) one version up in one
 * unsynced write, when it is the record known durable (rule R, rollback.h);
 * else nothing (the version counts durable epochs).  Key lock held.
 */
static int raise_version(struct envfs *fs, struct inode *in, int fd, struct key_record *rec,
			 struct record_pos *pos)
{
	int ret;

	/* Another host re-keyed or replaced the file (its I/O finds out), or
	 * the record is not the one known durable (checked when it was read). */
	if (memcmp(rec->file_id, in->dek->file_id, RECORD_FILE_ID_LEN) != 0 || rec->version != 2 ||
	    !fileversion_durable_locked(fs, in, rec, pos) || rec->file_version == UINT64_MAX)
		return 0;
	/* It is re-sealed below with our DEK: it must be authentic. */
	if (record_check_mac(rec, in->dek->key, fs->cfg.uuid) != 0)
		return auth_failure(fs, in);
	rec->file_version++;
	ret = record_seal_mac(rec, in->dek->key, fs->cfg.uuid);
	if (ret == 0)
		ret = layout_bump_record(&fs->layout, fd, rec, pos);
	if (ret == 0)
		fileversion_written_locked(fs, in, rec, pos, false);
	return ret;
}

int filekey_bump(struct envfs *fs, struct inode *in, int fd)
{
	struct key_record *rec;
	struct record_pos pos;
	int ret;

	if (!fs->rollback)
		return 0;
	pthread_mutex_lock(&in->key_lock);
	/* Until a record of this inode is known durable the bump is skipped
	 * without reading anything, and stays due: after the open's first
	 * fsync, its next change raises the version.  Once done (or found not
	 * to apply), the next open for writing makes it due again. */
	if (!in->version_due || !in->dek || !fileversion_tracked_durable_locked(fs, in)) {
		pthread_mutex_unlock(&in->key_lock);
		return 0;
	}
	rec = malloc(sizeof(*rec));
	/* Only the record known durable is raised: one read since, by
	 * another host, is not, and needs no check here. */
	ret = rec ? layout_read_record(&fs->layout, fd, rec, &pos) : -ENOMEM;
	if (ret == 0)
		ret = raise_version(fs, in, fd, rec, &pos);
	else if (ret == -EBADMSG || ret == -ENODATA)
		ret = 0; /* the I/O that follows reports it */
	/* The change it follows is made: a raise that could not be written
	 * (a full disk, an xattr quota) fails nothing, and stays due for the
	 * next change.  A record failing authentication is reported (EIO). */
	if (ret < 0 && ret != -EIO) {
		log_ratelimited(LOG_WARNING, "inode %llu: file version not raised (%s); the next "
					     "change tries again",
				(unsigned long long)in->ino, strerror(-ret));
		ret = 0;
	} else {
		in->version_due = false;
	}
	pthread_mutex_unlock(&in->key_lock);
	free(rec);
	return ret;
}

int filekey_rewrap(struct envfs *fs, struct inode *in, int fd, struct rewrap_result *res)
{
	struct key_record *rec = malloc(sizeof(*rec));
	const struct dek_entry *have;
	struct dek_entry *cached;
	int ret;

	if (!rec)
		return -ENOMEM;
	pthread_mutex_lock(&in->key_lock);
	ret = record_to_replace(fs, in, fd, rec, &have, &cached);
	if (ret == 0) {
		struct scope *scope = in->scope;
		const struct kms_set *set;

		ret = keys_get(fs, scope, &set);
		if (ret == 0) {
			ret = rewrap_file(&fs->layout, &set->keys, fs->cfg.uuid, fd,
					  have ? have->key : NULL, res);
			if (ret == 0)
				dek_pool_note_version(set->pool, res->new_version);
			keys_put(fs, scope, set);
		}
		/* The cache learns the new version. */
		if (ret == 0 && have)
			cache_new_record(fs, in, res->file_id, res->new_version, have->key);
	}
	dekcache_put(fs->cache, cached);
	pthread_mutex_unlock(&in->key_lock);
	free(rec);

	if (ret == -EBADMSG) {
		log_ratelimited(LOG_ERR, "inode %llu: key record is corrupt; not re-wrapped",
				(unsigned long long)in->ino);
		atomic_fetch_add(&fs->counters.integrity_errors, 1);
		return -EIO;
	}
	if (ret == -ENOKEY || ret == -EOVERFLOW) {
		log_ratelimited(LOG_ERR, "inode %llu: not re-wrapped: %s",
				(unsigned long long)in->ino,
				ret == -ENOKEY ? "its key record names a master key that is not this "
						 "volume's"
					       : "the new KMS's key record does not fit the volume's "
						 "header slot");
		atomic_fetch_add(&fs->counters.key_errors, 1);
		return -EIO;
	}
	if (ret < 0 && ret != -ENODATA)
		return key_failure(fs, in, "cannot re-wrap the data key", ret);
	return ret;
}

void filekey_rekey_env(struct envfs *fs, const struct kms_set *set, struct rekey_env *env)
{
	*env = (struct rekey_env){ .layout = &fs->layout, .keys = set->keys, .pool = set->pool,
				   .volume_uuid = fs->cfg.uuid,
				   .root_fd = inode_fd(inode_table_root(fs->inodes)),
				   .names = fs->names };
}

int filekey_rekey(struct envfs *fs, struct inode *in, int fd, struct rekey_result *res)
{
	const struct dek_entry *have;
	struct dek_entry *cached;
	struct key_record *rec = malloc(sizeof(*rec));
	uint8_t *new_dek = secmem_alloc(KMS_DEK_LEN);
	struct scope *scope = in->scope;
	const struct kms_set *set;
	struct rekey_env env;
	int ret;

	if (!rec || !new_dek) {
		free(rec);
		secmem_free(new_dek, KMS_DEK_LEN);
		return -ENOMEM;
	}
	ret = keys_get(fs, scope, &set);
	if (ret < 0) {
		free(rec);
		secmem_free(new_dek, KMS_DEK_LEN);
		return ret;
	}
	filekey_rekey_env(fs, set, &env);
	if (scope)
		env.names = scope_names(scope); /* its user xattrs are sealed under the scope key */
	pthread_mutex_lock(&in->key_lock);
	ret = record_to_replace(fs, in, fd, rec, &have, &cached);
	if (ret == 0)
		ret = rekey_file(&env, fd, have ? have->key : NULL, new_dek, res);
	keys_put(fs, scope, set);
	dekcache_put(fs->cache, cached);
	/* The new DEK replaces the old entry, which is wiped once unpinned. */
	if (ret == 0)
		cache_new_record(fs, in, res->new_file_id, res->new_version, new_dek);
	pthread_mutex_unlock(&in->key_lock);
	secmem_free(new_dek, KMS_DEK_LEN);
	free(rec);

	if (ret == -EBADMSG) {
		log_ratelimited(LOG_ERR, "inode %llu: key record or a block fails authentication; "
					 "not re-keyed",
				(unsigned long long)in->ino);
		atomic_fetch_add(&fs->counters.integrity_errors, 1);
		return -EIO;
	}
	if (ret < 0 && ret != -ENODATA) {
		/* Out of space for the journal, or another host re-keying the
		 * file, is the caller's to see; the rest is EIO. */
		atomic_fetch_add(&fs->counters.key_errors, 1);
		log_ratelimited(LOG_ERR, "inode %llu: cannot re-key: %s",
				(unsigned long long)in->ino, strerror(-ret));
		return ret == -ENOSPC || ret == -EDQUOT || ret == -EBUSY ? ret : -EIO;
	}
	return ret;
}
