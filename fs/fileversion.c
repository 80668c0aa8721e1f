/* SPDX-License-Identifier: MIT */
/* Record versions of open inodes: see fileversion.h. */
#include "fileversion.h"

#include <errno.h>
#include <string.h>

#include "log.h"
#include "rollback.h"

/*
 * record_seq_of - the slot sequence that tells two writes of one record
 * apart: with xattr placement there is one place, replaced atomically, so
 * only the MAC counts.
 */
static uint64_t record_seq_of(const struct envfs *fs, const struct record_pos *pos)
{
	return fs->layout.placement == PLACEMENT_HEADER ? pos->seq : 0;
}

static bool is_tracked(const struct envfs *fs, const struct inode *in,
		       const struct key_record *rec, const struct record_pos *pos)
{
	return in->record_gen != 0 && in->record_seq == record_seq_of(fs, pos) &&
	       memcmp(in->record_mac, rec->mac, sizeof(in->record_mac)) == 0;
}

static void track(struct envfs *fs, struct inode *in, const struct key_record *rec,
		  const struct record_pos *pos, uint64_t gen, uint64_t learn)
{
	memcpy(in->record_mac, rec->mac, sizeof(in->record_mac));
	memcpy(in->record_file_id, rec->file_id, sizeof(in->record_file_id));
	in->record_seq = record_seq_of(fs, pos);
	in->record_gen = gen;
	in->record_learn = learn;
}

int fileversion_check_locked(struct envfs *fs, struct inode *in, const struct key_record *rec,
			     const struct record_pos *pos)
{
	uint64_t seen;

	/* The record this daemon last read (and checked) or wrote itself: the
	 * host learnt nothing above it since, or it would track a newer one. */
	if (!fs->rollback || is_tracked(fs, in, rec, pos))
		return 0;
	/* One small read of this host's state: next to the record read. */
	seen = rollback_seen(fs->rollback, rec->file_id);
	if (rec->file_version < seen) {
		log_ratelimited(LOG_ERR, "inode %llu: rolled back: version %llu, this host saw %llu "
					 "(the storage put an older copy of the file back); returning "
					 "EIO until it is restored or the volume is mounted with -o "
					 "accept_rollback",
				(unsigned long long)in->ino, (unsigned long long)rec->file_version,
				(unsigned long long)seen);
		atomic_fetch_add(&fs->counters.integrity_errors, 1);
		return -EIO;
	}
	/* The table holds only versions known durable (rollback.h), so a
	 * record of that very version is durable as far as rule R needs (a
	 * power cut can only put back another record of that version): the
	 * next raise need not wait for a sync, even in an inode the kernel
	 * let go of since this host's own fsync made it durable. */
	track(fs, in, rec, pos,
	      seen > 0 && rec->file_version == seen ? ROLLBACK_GEN_DURABLE
						    : rollback_read_gen(fs->rollback),
	      0);
	return 0;
}

void fileversion_authentic(struct envfs *fs, const struct key_record *rec)
{
	/* Rule R (rollback.h): version - 1 was durable when this one was written. */
	if (fs->rollback && rec->file_version > 1)
		rollback_learn(fs->rollback, rec->file_id, rec->file_version - 1);
}

void fileversion_written_locked(struct envfs *fs, struct inode *in,
				const struct key_record *rec, const struct record_pos *pos,
				bool synced)
{
	if (!fs->rollback)
		return;
	if (synced) {
		track(fs, in, rec, pos, ROLLBACK_GEN_DURABLE, 0);
		rollback_learn(fs->rollback, rec->file_id, rec->file_version);
	} else {
		track(fs, in, rec, pos,
		      rollback_bumped(fs->rollback, rec->file_id, rec->file_version),
		      rec->file_version);
	}
}

bool fileversion_durable_locked(struct envfs *fs, struct inode *in, const struct key_record *rec,
				const struct record_pos *pos)
{
	return fs->rollback && is_tracked(fs, in, rec, pos) &&
	       in->record_gen <= rollback_synced(fs->rollback);
}

bool fileversion_tracked_durable_locked(struct envfs *fs, const struct inode *in)
{
	return fs->rollback && in->record_gen != 0 &&
	       in->record_gen <= rollback_synced(fs->rollback);
}

void fileversion_due(struct envfs *fs, struct inode *in)
{
	if (!fs->rollback)
		return;
	pthread_mutex_lock(&in->key_lock);
	in->version_due = true;
	pthread_mutex_unlock(&in->key_lock);
}

void fileversion_sync_begin(struct envfs *fs, struct inode *in, struct fileversion_sync *s)
{
	s->known = false;
	s->full = false;
	if (!fs->rollback)
		return;
	pthread_mutex_lock(&in->key_lock);
	s->known = in->record_gen != 0;
	s->full = fs->layout.placement == PLACEMENT_XATTR && s->known &&
		  in->record_gen != ROLLBACK_GEN_DURABLE;
	memcpy(s->mac, in->record_mac, sizeof(s->mac));
	s->seq = in->record_seq;
	pthread_mutex_unlock(&in->key_lock);
}

void fileversion_sync_end(struct envfs *fs, struct inode *in, const struct fileversion_sync *s)
{
	uint8_t file_id[RECORD_FILE_ID_LEN];
	uint64_t learn = 0;

	if (!fs->rollback)
		return;
	pthread_mutex_lock(&in->key_lock);
	/* Still the record that was on the backing when the fsync began:
	 * the fsync made it durable. */
	if (s->known && in->record_gen != 0 && in->record_seq == s->seq &&
	    memcmp(in->record_mac, s->mac, sizeof(s->mac)) == 0) {
		in->record_gen = ROLLBACK_GEN_DURABLE;
		learn = in->record_learn;
		in->record_learn = 0;
		memcpy(file_id, in->record_file_id, sizeof(file_id));
	}
	pthread_mutex_unlock(&in->key_lock);
	/* The host's table is written outside the key lock. */
	if (learn)
		rollback_learn(fs->rollback, file_id, learn);
}

void fileversion_unlink_begin(struct envfs *fs, int dirfd, const char *name, const struct stat *st,
			      struct fileversion_unlink *u)
{
	struct inode *in;

	u->known = false;
	if (!fs->rollback || !S_ISREG(st->st_mode) || st->st_nlink != 1)
		return;
	in = inode_lookup_known(fs->inodes, st, dirfd, name);
	if (in) {
		pthread_mutex_lock(&in->key_lock);
		/* record_gen != 0: the record it names was checked, or written here. */
		u->known = in->record_gen != 0;
		memcpy(u->file_id, in->record_file_id, sizeof(u->file_id));
		pthread_mutex_unlock(&in->key_lock);
		inode_forget(fs->inodes, in, 1);
	}
	/* An inode the kernel let go of (or never looked up here) starts
	 * untracked: its DEK may still be cached, and the cache holds only
	 * DEKs of authentic records.  Else nothing is dropped (fsck --repair). */
	if (!u->known)
		u->known = dekcache_file_id(fs->cache, st->st_dev, st->st_ino, u->file_id);
}

void fileversion_unlink_end(struct envfs *fs, const struct fileversion_unlink *u, bool done)
{
	if (done && u->known)
		rollback_drop(fs->rollback, u->file_id);
}
