/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_REKEY_H
#define ENVELOPEFS_FS_REKEY_H

/*
 * Re-keying one file: a fresh DEK (and file ID) for a file whose DEK may
 * have been exposed, with every content block re-encrypted under it, in
 * place, so the backing inode — its number and its hard links — stays.
 * Shared by the daemon (online, under the inode's content lock) and
 * `envelopefsctl rotate --rekey --offline`.
 *
 * Crash safety comes from a journal holding the complete new content
 * (docs/FORMAT.md, "Re-keying"):
 *
 *   1. Every block is opened under the old DEK and sealed under the new one
 *      into BACKING/envelopefs.rekey/<new file ID>.tmp, which is synced and
 *      renamed to <new file ID>: the journal now exists complete, or not at
 *      all.  Nothing in the file has changed yet.
 *   2. The new record, flagged RECORD_FLAG_REKEYING, replaces the old one
 *      (the two-slot rule).  From here the re-key can only go forward.
 *   3. The journal's blocks are copied over the file's, which is synced.
 *   4. The record is written again without the flag, then the journal is
 *      removed.
 *
 * A crash before 2 leaves the file untouched (and at most a journal that
 * rekey_recover() removes); after 2, rekey_recover() redoes 3 and 4, which
 * are idempotent, so a torn block write in 3 is repaired as well.  Readers
 * refuse a record with the flag (the file is mid re-key until recovered).
 * The journal holds a file handle (name_to_handle_at) of the backing file,
 * so recovery finds it however it was renamed; that needs
 * CAP_DAC_READ_SEARCH (the daemon running as root).  The file's record
 * (its old or new file ID) confirms the handle's file, and finds it when a
 * handle did not outlive the backing's mount (rekey_find.h).
 *
 * Holes stay holes: an all-zero stored block is copied as a hole.
 *
 * With encrypted names, user xattrs are sealed to the file ID: between
 * steps 1 and 2 each gets a copy sealed to the new ID (the originals stay),
 * and the originals are removed after step 4; recovery removes whichever
 * set belongs to the record that lost (the journal names both IDs).
 */

#include <stdint.h>

#include "kms/dekpool.h"
#include "kms/kms.h"
#include "layout.h"
#include "names.h"
#include "rewrap.h"
#include "volume.h"

#define REKEY_DIR VOLUME_REKEY_DIR

struct rekey_env {
	const struct layout *layout;
	struct kms_pair keys;	    /* a record opens through the provider it names */
	struct dek_pool *pool;	    /* where the new DEK comes from (the current provider) */
	const uint8_t *volume_uuid; /* 16 bytes */
	int root_fd;		    /* the backing root (O_PATH is enough) */
	/* The name codec: with encrypted names, user xattrs are sealed to the
	 * file ID, which a re-key changes, so they are re-sealed with it.  NULL
	 * when the volume has no codec at hand (recovery of plain volumes). */
	const struct names *names;
};

struct rekey_result {
	uint8_t old_file_id[16];
	uint8_t new_file_id[16];
	uint32_t new_version;
};

/*
 * rekey_file - re-key the backing file @fd (read-write).  @old_dek: the
 * file's current DEK if the caller has it, else NULL (unwrapped here).
 * @new_dek (KMS_DEK_LEN bytes of secmem) receives the new DEK.  The caller
 * excludes every other user of the file's content and record.
 * Returns 0; -ENODATA for a file without a record (nothing to re-key);
 * -EBADMSG when the record or a block fails authentication (nothing was
 * changed); -EBUSY when another open file of it (a re-key on another
 * host) holds its key lock (ofdlock.h), which this call holds through @fd
 * until @fd is closed; -EINPROGRESS when the file is already mid re-key (recover it
 * first); -ENOKEY when the record names neither provider of @env->keys; KMS
 * errors; other -errno.
 */
int rekey_file(const struct rekey_env *env, int fd, const uint8_t *old_dek, uint8_t *new_dek,
	       struct rekey_result *res);

/*
 * The journal's header (docs/FORMAT.md, "Re-keying"): REKEY_JOURNAL_HEADER
 * bytes, SHA-256-checked, before the file's new content.
 */
#define REKEY_JOURNAL_HEADER 4096
#define REKEY_MAX_HANDLE 128 /* MAX_HANDLE_SZ */

struct rekey_journal_header {
	uint8_t old_file_id[16];
	uint8_t new_file_id[16];
	uint64_t plain_size;
	int32_t handle_type;
	uint32_t handle_len; /* 1 .. REKEY_MAX_HANDLE */
	uint8_t handle[REKEY_MAX_HANDLE];
};

/* rekey_journal_encode - @h as a header, checksum included.  0, -EINVAL or -EIO. */
int rekey_journal_encode(const struct rekey_journal_header *h, uint8_t out[REKEY_JOURNAL_HEADER]);

/*
 * rekey_journal_decode - strict: magic, version, lengths, zero padding and
 * checksum.  0 or -EBADMSG.
 */
int rekey_journal_decode(const uint8_t in[REKEY_JOURNAL_HEADER], struct rekey_journal_header *h);

struct rekey_recovery {
	unsigned finished; /* re-keys completed from their journal */
	unsigned removed;  /* journals of re-keys that never started or had ended */
	unsigned failed;   /* journals left for a later attempt */
	unsigned busy;	   /* journals of re-keys running now on another host */
};

/*
 * rekey_recover - finish or clean up every re-key a crash interrupted, from
 * the journals in BACKING/REKEY_DIR.  Call before the volume is used (mount,
 * offline tools).  @log receives one line per failure (may be NULL).
 * Returns 0 (see *@out for what happened) or -errno if the journal directory
 * cannot be read.
 */
int rekey_recover(const struct rekey_env *env, struct rekey_recovery *out,
		  void (*log)(const char *msg));

#endif
