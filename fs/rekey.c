/* SPDX-License-Identifier: MIT */
/* Re-keying one file through a journal: see rekey.h and docs/FORMAT.md, "Re-keying". */
#include "rekey.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "crypto/bigendian.h"
#include "crypto/block.h"
#include "crypto/hex.h"
#include "crypto/kdf.h"
#include "crypto/secmem.h"
#include "ofdlock.h"
#include "rekey_find.h"

/* Journal header: JOURNAL_DATA bytes, then the file's data region as it is to be. */
#define JOURNAL_MAGIC "EFRJ"
#define JOURNAL_VERSION 1
#define JOURNAL_DATA REKEY_JOURNAL_HEADER
#define JOURNAL_SUM_OFF (JOURNAL_DATA - 32)
#define JOURNAL_MAX_HANDLE REKEY_MAX_HANDLE
#define CHUNK_BLOCKS 256       /* blocks per read/write while copying */


/* pread_full - layout_pread_full(), a short file being a damaged one here. */
static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	int ret = layout_pread_full(fd, buf, len, off);

	return ret == -ENODATA ? -EBADMSG : ret;
}

int rekey_journal_encode(const struct rekey_journal_header *h, uint8_t out[REKEY_JOURNAL_HEADER])
{
	if (h->handle_len == 0 || h->handle_len > JOURNAL_MAX_HANDLE)
		return -EINVAL;
	memset(out, 0, JOURNAL_DATA);
	memcpy(out, JOURNAL_MAGIC, 4);
	out[4] = JOURNAL_VERSION;
	memcpy(out + 8, h->new_file_id, 16);
	put_be32(out + 24, (uint32_t)(h->plain_size >> 32));
	put_be32(out + 28, (uint32_t)h->plain_size);
	put_be32(out + 32, (uint32_t)h->handle_type);
	put_be32(out + 36, h->handle_len);
	memcpy(out + 40, h->old_file_id, 16);
	memcpy(out + 56, h->handle, h->handle_len);
	return crypto_sha256(out, JOURNAL_SUM_OFF, out + JOURNAL_SUM_OFF);
}

int rekey_journal_decode(const uint8_t in[REKEY_JOURNAL_HEADER], struct rekey_journal_header *h)
{
	uint8_t sum[32];
	size_t i;

	if (crypto_sha256(in, JOURNAL_SUM_OFF, sum) < 0 ||
	    !crypto_memeq(sum, in + JOURNAL_SUM_OFF, 32) || memcmp(in, JOURNAL_MAGIC, 4) != 0 ||
	    in[4] != JOURNAL_VERSION || in[5] || in[6] || in[7])
		return -EBADMSG;
	memcpy(h->new_file_id, in + 8, 16);
	h->plain_size = (uint64_t)get_be32(in + 24) << 32 | get_be32(in + 28);
	h->handle_type = (int32_t)get_be32(in + 32);
	h->handle_len = get_be32(in + 36);
	if (h->handle_len == 0 || h->handle_len > JOURNAL_MAX_HANDLE)
		return -EBADMSG;
	memcpy(h->old_file_id, in + 40, 16);
	memcpy(h->handle, in + 56, h->handle_len);
	for (i = 56 + h->handle_len; i < JOURNAL_SUM_OFF; i++)
		if (in[i])
			return -EBADMSG;
	return 0;
}

static size_t sealed_len_of(const struct layout *l, uint64_t plain_size, uint64_t index)
{
	uint64_t start = index * l->block_size;
	uint64_t left = plain_size - start;

	return (size_t)(left < l->block_size ? left : l->block_size) + BLOCK_OVERHEAD;
}

/*
 * reseal_into_journal - step 1's copy: every block of @fd opened under @old
 * and sealed under @new into @jfd at JOURNAL_DATA.  Holes are left as holes.
 */
static int reseal_into_journal(const struct layout *l, int fd, int jfd, uint64_t plain_size,
			       const struct block_owner *old, const struct block_owner *new)
{
	uint64_t n_blocks = (plain_size + l->block_size - 1) / l->block_size, i;
	uint8_t *sealed = malloc(l->sealed_size), *plain = malloc(l->block_size),
		*out = malloc(l->sealed_size);
	int ret = sealed && plain && out ? 0 : -ENOMEM;

	for (i = 0; i < n_blocks && ret == 0; i++) {
		size_t len = sealed_len_of(l, plain_size, i);

		ret = pread_full(fd, sealed, len, layout_block_offset(l, i));
		if (ret < 0 || layout_is_hole(sealed, len))
			continue;
		ret = block_open(old, i, sealed, len, plain);
		if (ret == 0)
			ret = block_seal(new, i, plain, len - BLOCK_OVERHEAD, out);
		if (ret == 0)
			ret = layout_pwrite_full(jfd, out, len,
						 JOURNAL_DATA + i * (uint64_t)l->sealed_size);
	}
	if (plain)
		secmem_wipe(plain, l->block_size);
	free(sealed);
	free(plain);
	free(out);
	return ret;
}

/* copy_from_journal - step 3: the journal's non-hole blocks over the file's, then sync. */
static int copy_from_journal(const struct layout *l, int fd, int jfd, uint64_t plain_size)
{
	uint64_t n_blocks = (plain_size + l->block_size - 1) / l->block_size, i;
	uint8_t *buf = malloc(l->sealed_size);
	int ret = buf ? 0 : -ENOMEM;

	for (i = 0; i < n_blocks && ret == 0; i++) {
		size_t len = sealed_len_of(l, plain_size, i);

		ret = pread_full(jfd, buf, len, JOURNAL_DATA + i * (uint64_t)l->sealed_size);
		if (ret == 0 && !layout_is_hole(buf, len))
			ret = layout_pwrite_full(fd, buf, len, layout_block_offset(l, i));
	}
	free(buf);
	if (ret == 0 && fdatasync(fd) < 0)
		ret = -errno;
	return ret;
}

/* The journal directory, made on first use (0700: ciphertext only, but nobody else's business). */
static int journal_open_dir(const struct rekey_env *env, bool create)
{
	int dfd;

	if (create && mkdirat(env->root_fd, REKEY_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	dfd = openat(env->root_fd, REKEY_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return dfd < 0 ? -errno : dfd;
}

/* user_xattr_names - the stored user.* names of @fd but our key record's, in *@list. */
static ssize_t user_xattr_names(int fd, char **list)
{
	ssize_t len = flistxattr(fd, NULL, 0);

	*list = NULL;
	if (len <= 0)
		return len < 0 && errno != ENOTSUP ? -errno : 0;
	*list = malloc((size_t)len);
	if (!*list)
		return -ENOMEM;
	len = flistxattr(fd, *list, (size_t)len);
	return len < 0 ? -errno : len;
}

static bool sealed_user_xattr(const struct names *n, const char *stored)
{
	return names_xattr_is_user(n, stored) && strcmp(stored, VOLUME_XATTR_NAME) != 0;
}

/*
 * reseal_one - add the copy of the user xattr @stored (sealed to @from)
 * sealed to @to.  Values are plaintext only in @plain, wiped here.
 */
static int reseal_one(const struct names *n, int fd, const char *stored, const uint8_t from[16],
		      const uint8_t to[16], uint8_t *sealed, uint8_t *plain)
{
	char name[NAMES_XATTR_NAME_MAX + 1], resealed[NAMES_XATTR_NAME_MAX + 1];
	ssize_t len = fgetxattr(fd, stored, sealed, NAMES_XATTR_VALUE_MAX);
	size_t plain_len;
	int ret;

	if (len < 0)
		return errno == ENODATA ? 0 : -errno;
	if (names_xattr_name_open(n, from, stored, name) < 0)
		return 0; /* not sealed to @from: not this file's, or already resealed */
	if ((size_t)len < NAMES_XATTR_OVERHEAD)
		return -EBADMSG;
	plain_len = (size_t)len - NAMES_XATTR_OVERHEAD;
	ret = names_xattr_value_open(n, from, name, sealed, (size_t)len, plain);
	if (ret == 0)
		ret = names_xattr_name_seal(n, to, name, resealed);
	if (ret == 0)
		ret = names_xattr_value_seal(n, to, name, plain, plain_len, sealed);
	secmem_wipe(plain, plain_len);
	if (ret == 0 && fsetxattr(fd, resealed, sealed, plain_len + NAMES_XATTR_OVERHEAD, 0) < 0)
		ret = -errno;
	return ret;
}

/*
 * reseal_xattrs - with encrypted names a user xattr is sealed to its file's
 * ID: give every one sealed to @from a copy sealed to @to.  The originals
 * stay until drop_xattrs(), so the file has a complete set under whichever
 * record is current.  -EBADMSG when one does not open (nothing to vouch for).
 */
static int reseal_xattrs(const struct names *n, int fd, const uint8_t from[16],
			 const uint8_t to[16])
{
	uint8_t *sealed = malloc(NAMES_XATTR_VALUE_MAX), *plain = malloc(NAMES_XATTR_VALUE_MAX);
	char *list, *p;
	ssize_t len;
	int ret = 0;

	if (!n || !sealed || !plain) {
		ret = n ? -ENOMEM : 0;
		goto out;
	}
	len = user_xattr_names(fd, &list);
	if (len < 0)
		ret = (int)len;
	for (p = list; ret == 0 && len > 0 && p < list + len; p += strlen(p) + 1)
		if (sealed_user_xattr(n, p))
			ret = reseal_one(n, fd, p, from, to, sealed, plain);
	free(list);
out:
	free(sealed);
	free(plain);
	return ret;
}

/* drop_xattrs - remove the user xattrs sealed to @owner (a re-key's leftovers). */
static void drop_xattrs(const struct names *n, int fd, const uint8_t owner[16])
{
	char name[NAMES_XATTR_NAME_MAX + 1], *list, *p;
	ssize_t len;

	if (!n)
		return;
	len = user_xattr_names(fd, &list);
	for (p = list; len > 0 && p < list + len; p += strlen(p) + 1)
		if (sealed_user_xattr(n, p) && names_xattr_name_open(n, owner, p, name) == 0)
			fremovexattr(fd, p);
	free(list);
}

/*
 * restore_mtime - give @fd the mtime it had before its re-key, which its
 * journal @jfd carries as its own (write_journal): re-keying changes no
 * content.  Durable on return.
 */
static int restore_mtime(int fd, int jfd)
{
	struct stat journal;

	if (fstat(jfd, &journal) < 0 ||
	    futimens(fd, (struct timespec[2]){{.tv_nsec = UTIME_OMIT}, journal.st_mtim}) < 0 ||
	    fsync(fd) < 0)
		return -errno;
	return 0;
}

/*
 * finish - steps 3 and 4, for a file whose record @pending (flagged, DEK
 * @dek) is current: copy, commit the record without the flag, drop the
 * journal.  Idempotent.
 */
static int finish(const struct rekey_env *env, int fd, int dfd, int jfd, const char *jname,
		  const struct rekey_journal_header *h, struct key_record *pending,
		  struct record_pos *pos, const uint8_t *dek)
{
	int ret = copy_from_journal(env->layout, fd, jfd, h->plain_size);

	if (ret == 0)
		ret = restore_mtime(fd, jfd); /* the record write below keeps it */
	if (ret < 0)
		return ret;
	pending->flags = 0;
	ret = record_seal_mac(pending, dek, env->volume_uuid);
	if (ret == 0)
		ret = layout_write_record(env->layout, fd, pending, pos);
	if (ret < 0)
		return ret;
	/* Before the journal goes: it is what tells recovery the old ID. */
	drop_xattrs(env->names, fd, h->old_file_id);
	if (unlinkat(dfd, jname, 0) < 0 && errno != ENOENT)
		return -errno;
	return fsync(dfd) < 0 ? -errno : 0;
}

static void context_of(const struct rekey_env *env, const uint8_t file_id[16],
		       struct kms_context *ctx)
{
	memcpy(ctx->volume_uuid, env->volume_uuid, 16);
	memcpy(ctx->file_id, file_id, 16);
}

/* unwrap_record - @rec's DEK, through the provider its key reference names. */
static int unwrap_record(const struct rekey_env *env, const struct kms_context *ctx,
			 const struct key_record *rec, uint8_t *dek)
{
	struct kms *kms = kms_pair_for(&env->keys, rec->key_ref);

	return kms ? kms_unwrap(kms, ctx, rec->wrapped, rec->wrapped_len, dek) : -ENOKEY;
}

/* The plaintext size of @fd; -EBADMSG if its backing size is not one a file can have. */
static int plain_size_of(const struct layout *l, int fd, uint64_t *size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*size = layout_plain_size(l, (uint64_t)st.st_size);
	return layout_backing_size(l, *size) == (uint64_t)st.st_size ? 0 : -EBADMSG;
}

/* write_journal - step 1: the complete journal under its final name, durable. */
static int write_journal(const struct rekey_env *env, int fd, int dfd, const char *jname,
			 const struct rekey_journal_header *h, const struct block_owner *old,
			 const struct block_owner *new)
{
	uint64_t data_len = layout_backing_size(env->layout, h->plain_size) - env->layout->data_offset;
	char tmp[64];
	uint8_t *head = malloc(JOURNAL_DATA);
	struct stat st;
	int jfd, ret;

	snprintf(tmp, sizeof(tmp), "%s.tmp", jname);
	jfd = openat(dfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (jfd < 0 || !head) {
		ret = jfd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	ret = rekey_journal_encode(h, head);
	if (ret == 0)
		ret = layout_pwrite_full(jfd, head, JOURNAL_DATA, 0);
	if (ret == 0)
		ret = reseal_into_journal(env->layout, fd, jfd, h->plain_size, old, new);
	/* Trailing holes would leave the journal short: give it its full length. */
	if (ret == 0 && ftruncate(jfd, (off_t)(JOURNAL_DATA + data_len)) < 0)
		ret = -errno;
	/* The file's mtime rides on the journal's, for finish() to put back:
	 * re-keying changes no content.  fsync, not fdatasync, to keep it. */
	if (ret == 0 && (fstat(fd, &st) < 0 ||
			 futimens(jfd, (struct timespec[2]){{.tv_nsec = UTIME_OMIT}, st.st_mtim}) < 0 ||
			 fsync(jfd) < 0))
		ret = -errno;
	if (ret == 0 && renameat(dfd, tmp, dfd, jname) < 0)
		ret = -errno;
	if (ret == 0 && fsync(dfd) < 0)
		ret = -errno;
	if (ret < 0)
		unlinkat(dfd, tmp, 0);
out:
	if (jfd >= 0)
		close(jfd);
	free(head);
	return ret;
}

int rekey_file(const struct rekey_env *env, int fd, const uint8_t *old_dek, uint8_t *new_dek,
	       struct rekey_result *res)
{
	struct key_record *rec = malloc(sizeof(*rec));
	struct rekey_journal_header *h = calloc(1, sizeof(*h));
	struct fresh_key *fresh = malloc(sizeof(*fresh));
	struct file_handle *fh = malloc(sizeof(*fh) + JOURNAL_MAX_HANDLE);
	uint8_t *own_dek = NULL;
	struct record_pos pos;
	struct kms_context ctx;
	char jname[33];
	int dfd = -1, jfd = -1, mount_id, ret;

	if (!rec || !h || !fresh || !fh) {
		ret = -ENOMEM;
		goto out;
	}
	/* The key lock (ofdlock.h), held through @fd until it is closed: a
	 * mount on another host then leaves this re-key's journal alone, and
	 * two hosts never re-key one file at once.  A backing without OFD
	 * locks has a single host. */
	ret = ofd_lock(fd, F_WRLCK, KEYLOCK_OFFSET, 1, false);
	if (ret == -EAGAIN) {
		ret = -EBUSY;
		goto out;
	}
	ret = layout_read_record(env->layout, fd, rec, &pos);
	if (ret < 0)
		goto out;
	if (rec->flags & RECORD_FLAG_REKEYING) {
		ret = -EINPROGRESS;
		goto out;
	}
	ret = plain_size_of(env->layout, fd, &h->plain_size);
	if (ret < 0)
		goto out;
	if (!old_dek) {
		own_dek = secmem_alloc(KMS_DEK_LEN);
		if (!own_dek) {
			ret = -ENOMEM;
			goto out;
		}
		context_of(env, rec->file_id, &ctx);
		ret = unwrap_record(env, &ctx, rec, own_dek);
		if (ret < 0)
			goto out;
		old_dek = own_dek;
	}
	if (record_check_mac(rec, old_dek, env->volume_uuid) != 0) {
		ret = -EBADMSG;
		goto out;
	}
	fh->handle_bytes = JOURNAL_MAX_HANDLE;
	if (name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) < 0) {
		ret = -errno;
		goto out;
	}
	ret = dek_pool_take(env->pool, fresh, new_dek);
	if (ret < 0)
		goto out;
	if (fresh->blob_len > sizeof(rec->wrapped)) {
		ret = -EIO;
		goto out;
	}
	memcpy(h->new_file_id, fresh->file_id, 16);
	memcpy(h->old_file_id, rec->file_id, 16);
	h->handle_type = fh->handle_type;
	h->handle_len = fh->handle_bytes;
	memcpy(h->handle, fh->f_handle, fh->handle_bytes);
	hex_encode(fresh->file_id, 16, jname);

	/* 1: the journal, complete and durable, before the file is touched. */
	dfd = journal_open_dir(env, true);
	if (dfd < 0) {
		ret = dfd;
		goto out;
	}
	ret = write_journal(env, fd, dfd, jname,
			    h, &(struct block_owner){ old_dek, env->volume_uuid, rec->file_id },
			    &(struct block_owner){ new_dek, env->volume_uuid, fresh->file_id });
	if (ret == 0)
		ret = reseal_xattrs(env->names, fd, h->old_file_id, h->new_file_id);
	if (ret < 0) {
		drop_xattrs(env->names, fd, h->new_file_id);
		unlinkat(dfd, jname, 0);
		goto out;
	}

	/* 2: the flagged new record.  A failure here leaves the old one current. */
	memcpy(res->old_file_id, rec->file_id, 16);
	rec->flags = RECORD_FLAG_REKEYING;
	memcpy(rec->file_id, fresh->file_id, 16);
	rec->key_version = fresh->version;
	rec->wrapped_len = (uint16_t)fresh->blob_len;
	memcpy(rec->wrapped, fresh->blob, fresh->blob_len);
	snprintf(rec->key_ref, sizeof(rec->key_ref), "%s", env->keys.current->key_ref);
	ret = record_seal_mac(rec, new_dek, env->volume_uuid);
	if (ret == 0)
		ret = layout_write_record(env->layout, fd, rec, &pos);
	if (ret < 0) {
		drop_xattrs(env->names, fd, h->new_file_id);
		unlinkat(dfd, jname, 0);
		goto out;
	}

	/* 3 and 4.  A failure from here on is finished by rekey_recover(). */
	jfd = openat(dfd, jname, O_RDONLY | O_CLOEXEC);
	ret = jfd < 0 ? -errno
		      : finish(env, fd, dfd, jfd, jname, h, rec, &pos, new_dek);
	if (ret == 0) {
		memcpy(res->new_file_id, fresh->file_id, 16);
		res->new_version = fresh->version;
	}
out:
	if (jfd >= 0)
		close(jfd);
	if (dfd >= 0)
		close(dfd);
	secmem_free(own_dek, KMS_DEK_LEN);
	if (fresh)
		secmem_wipe(fresh, sizeof(*fresh));
	free(fresh);
	free(fh);
	free(h);
	free(rec);
	return ret;
}

/* recover_one - act on the journal @name: finish its re-key or remove it. */
/*
 * journal_target_busy - whether journal @name's file is being re-keyed now,
 * by another host (its key lock is held: rekey_file).  A journal too short
 * to name its file is not.
 */
static bool journal_target_busy(int dfd, const char *name)
{
	struct rekey_journal_header *h = malloc(sizeof(*h));
	struct file_handle *fh = malloc(sizeof(*fh) + JOURNAL_MAX_HANDLE);
	uint8_t *head = malloc(JOURNAL_DATA);
	int jfd = openat(dfd, name, O_RDONLY | O_CLOEXEC), fd = -1;
	bool busy = false;

	if (jfd >= 0 && h && fh && head && pread_full(jfd, head, JOURNAL_DATA, 0) == 0 &&
	    rekey_journal_decode(head, h) == 0) {
		fh->handle_type = h->handle_type;
		fh->handle_bytes = h->handle_len;
		memcpy(fh->f_handle, h->handle, h->handle_len);
		fd = open_by_handle_at(dfd, fh, O_RDONLY | O_CLOEXEC);
		busy = fd >= 0 && ofd_lock_held(fd, KEYLOCK_OFFSET, 1) == 1;
	}
	if (fd >= 0)
		close(fd);
	if (jfd >= 0)
		close(jfd);
	free(head);
	free(fh);
	free(h);
	return busy;
}

/*
 * journal_target - a read-write fd of the file the journal @h is about: the
 * one its handle @fh opens if that file's record has one of the journal's
 * IDs, else the one found by record (rekey_find.h).  -ENOENT if none has.
 * Whatever the handle gives — ESTALE, ENOENT, another file, a directory
 * (EISDIR) — only the record says which file it is.
 */
static int journal_target(const struct rekey_env *env, int dfd, struct file_handle *fh,
			  const struct rekey_journal_header *h)
{
	/* Any real fd on the backing filesystem names it (not an O_PATH one). */
	int fd = open_by_handle_at(dfd, fh, O_RDWR | O_CLOEXEC), ret;

	if (fd >= 0) {
		ret = rekey_file_has_id(env->layout, fd, h->old_file_id, h->new_file_id);
		if (ret == 1)
			return fd;
		close(fd);
		if (ret < 0)
			return ret;
	}
	return rekey_find_file(env->layout, env->root_fd, h->old_file_id, h->new_file_id);
}

static int recover_one(const struct rekey_env *env, int dfd, const char *name, bool *finished)
{
	struct rekey_journal_header *h = malloc(sizeof(*h));
	struct key_record *rec = malloc(sizeof(*rec));
	struct file_handle *fh = malloc(sizeof(*fh) + JOURNAL_MAX_HANDLE);
	uint8_t *head = malloc(JOURNAL_DATA), *dek = NULL;
	struct record_pos pos;
	struct kms_context ctx;
	int jfd, fd = -1, ret;

	*finished = false;
	jfd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	if (jfd < 0 || !h || !rec || !fh || !head) {
		ret = jfd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	ret = pread_full(jfd, head, JOURNAL_DATA, 0);
	if (ret == 0)
		ret = rekey_journal_decode(head, h);
	if (ret < 0)
		goto out; /* renamed into place only when complete: left for a human */
	fh->handle_type = h->handle_type;
	fh->handle_bytes = h->handle_len;
	memcpy(fh->f_handle, h->handle, h->handle_len);
	fd = journal_target(env, dfd, fh, h);
	if (fd == -ENOENT)
		goto remove; /* the file is gone, and its re-key with it */
	if (fd < 0) {
		ret = fd;
		goto out;
	}
	/* Another host's re-key, alive: its journal is its own (rekey_file). */
	if (ofd_lock_held(fd, KEYLOCK_OFFSET, 1) == 1) {
		ret = -EBUSY;
		goto out;
	}
	ret = layout_read_record(env->layout, fd, rec, &pos);
	if (ret < 0)
		goto out;
	if (memcmp(rec->file_id, h->new_file_id, 16) != 0 || !(rec->flags & RECORD_FLAG_REKEYING)) {
		/* A crash inside a record write may have left its time on the file. */
		ret = restore_mtime(fd, jfd);
		if (ret < 0)
			goto out;
	}
	if (memcmp(rec->file_id, h->new_file_id, 16) != 0) {
		/* Crashed before step 2: the copies sealed to the new ID go. */
		drop_xattrs(env->names, fd, h->new_file_id);
		goto remove;
	}
	if (!(rec->flags & RECORD_FLAG_REKEYING)) {
		/* Crashed after step 4's record: the originals go. */
		drop_xattrs(env->names, fd, h->old_file_id);
		goto remove;
	}
	dek = secmem_alloc(KMS_DEK_LEN);
	if (!dek) {
		ret = -ENOMEM;
		goto out;
	}
	context_of(env, rec->file_id, &ctx);
	ret = unwrap_record(env, &ctx, rec, dek);
	if (ret == 0 && record_check_mac(rec, dek, env->volume_uuid) != 0)
		ret = -EBADMSG;
	if (ret == 0)
		ret = finish(env, fd, dfd, jfd, name, h, rec, &pos, dek);
	*finished = ret == 0;
	goto out;
remove:
	ret = unlinkat(dfd, name, 0) < 0 ? -errno : 0;
out:
	if (fd >= 0)
		close(fd);
	if (jfd >= 0)
		close(jfd);
	secmem_free(dek, KMS_DEK_LEN);
	free(head);
	free(fh);
	free(rec);
	free(h);
	return ret;
}

int rekey_recover(const struct rekey_env *env, struct rekey_recovery *out,
		  void (*log)(const char *msg))
{
	struct dirent *de;
	char msg[512];
	bool finished;
	DIR *dir;
	int dfd, ret;

	memset(out, 0, sizeof(*out));
	dfd = journal_open_dir(env, false);
	if (dfd == -ENOENT)
		return 0;
	if (dfd < 0)
		return dfd;
	dir = fdopendir(dfd);
	if (!dir) {
		close(dfd);
		return -errno;
	}
	while ((de = readdir(dir)) != NULL) {
		size_t len = strlen(de->d_name);

		if (de->d_name[0] == '.')
			continue;
		/* An unfinished journal: its re-key never reached the file,
		 * unless it is still writing it on another host. */
		if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0) {
			if (journal_target_busy(dfd, de->d_name))
				out->busy++;
			else if (unlinkat(dfd, de->d_name, 0) == 0)
				out->removed++;
			continue;
		}
		ret = recover_one(env, dfd, de->d_name, &finished);
		if (ret == -EBUSY) {
			out->busy++;
			continue;
		}
		if (ret == 0) {
			if (finished)
				out->finished++;
			else
				out->removed++;
			continue;
		}
		out->failed++;
		if (log) {
			snprintf(msg, sizeof(msg), "re-key journal %s/%s: cannot finish: %s",
				 REKEY_DIR, de->d_name,
				 ret == -EPERM ? "finding the file by handle needs root "
						 "(CAP_DAC_READ_SEARCH)"
					       : strerror(-ret));
			log(msg);
		}
	}
	closedir(dir);
	return 0;
}
