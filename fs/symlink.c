/* SPDX-License-Identifier: MIT */
/* Symlinks with encrypted names and the link store: see symlink.h and docs/FORMAT.md. */
#include "symlink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scope_ops.h"
#include "crypto/random.h"
#include "layout.h"
#include "linkstore.h"
#include "log.h"
#include "ops_i.h"

static int root_fd(struct envfs *fs)
{
	return inode_fd(inode_table_root(fs->inodes));
}

/* The stored target of @entry in @dirfd into @out (NAMES_TARGET_MAX + 1). */
static int read_stored(int dirfd, const char *entry, char *out)
{
	ssize_t n = readlinkat(dirfd, entry, out, NAMES_TARGET_MAX + 1);

	if (n < 0)
		return -errno;
	if (n > NAMES_TARGET_MAX)
		return -EIO;
	out[n] = '\0';
	return 0;
}

/*
 * store_write - put @sealed (@len bytes) in the link store as the file of
 * link @id, durably (file and directory fsynced; the store directory, when
 * this makes it, with the root) before the caller makes the link.
 */
static int store_write(struct envfs *fs, const uint8_t *id, const uint8_t *sealed, size_t len)
{
	char name[NAMES_LINK_ID_TEXT + 1];
	int dir, fd, ret;

	if (mkdirat(root_fd(fs), NAMES_LINK_STORE, 0700) == 0) {
		ret = names_fsync_dir(root_fd(fs));
		if (ret < 0)
			return ret;
	} else if (errno != EEXIST) {
		return -errno;
	}
	dir = openat(root_fd(fs), NAMES_LINK_STORE, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0)
		return -errno;
	names_link_store_name(id, name);
	/* A fresh random ID: an existing file is a collision, never overwritten. */
	fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	ret = fd < 0 ? -errno : layout_pwrite_full(fd, sealed, len, 0);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	if (ret == 0)
		ret = names_fsync_dir(dir);
	if (ret < 0 && fd >= 0)
		unlinkat(dir, name, 0);
	close(dir);
	return ret;
}

static void store_remove(struct envfs *fs, const uint8_t *id)
{
	char path[LINKSTORE_PATH_LEN];

	linkstore_path(id, path);
	/* Left behind, it is an orphan: hidden and harmless (FORMAT.md). */
	(void)unlinkat(root_fd(fs), path, 0);
}

/* Seal @target as a version-2 link: @stored, with its store file written first if external. */
static int seal_v2(struct envfs *fs, struct names *codec, const char *target, char *stored)
{
	uint8_t id[NAMES_LINK_ID_LEN], *sealed = malloc(NAMES_TARGET_SEALED_MAX);
	struct names_target t;
	size_t len;
	int ret = sealed ? crypto_random(id, sizeof(id)) : -ENOMEM;

	if (ret == 0)
		ret = names_target_seal(codec, id, target, stored, sealed, &len);
	if (ret == 0)
		ret = names_target_parse(stored, &t);
	if (ret == 0 && t.form == NAMES_TARGET_EXTERNAL)
		ret = store_write(fs, id, sealed, len);
	free(sealed);
	return ret;
}

int symlink_write(struct envfs *fs, struct inode *dir, const char *name, const char *target,
		  int dirfd, const char *entry)
{
	char *stored = malloc(NAMES_TARGET_MAX + 1);
	struct names_target t = {.form = NAMES_TARGET_V1};
	struct names *codec;
	const uint8_t *id;
	int ret = stored ? inode_names(fs, dir, &codec) : -ENOMEM;

	if (ret == 0 && encrypted_names(fs) && symlinks_v2(fs))
		ret = seal_v2(fs, codec, target, stored);
	else if (ret == 0 && (ret = dir_id(fs, dir, &id)) == 0)
		ret = names_link_seal(codec, id, name, target, stored);
	if (ret == 0 && symlinkat(stored, dirfd, entry) < 0) {
		ret = -errno;
		/* The store file made for it is nobody's now. */
		if (encrypted_names(fs) && names_target_parse(stored, &t) == 0 &&
		    t.form == NAMES_TARGET_EXTERNAL)
			store_remove(fs, t.id);
	}
	free(stored);
	return ret;
}

int symlink_bound_to_name(struct envfs *fs, int dirfd, const char *entry)
{
	char stored[NAMES_TARGET_MAX + 1];
	struct names_target t;
	int ret;

	if (!encrypted_names(fs))
		return 0;
	ret = read_stored(dirfd, entry, stored);
	if (ret < 0)
		return ret;
	/* Malformed version-2 text is damage, not a version-1 link: readlink
	 * reports it; moving it changes nothing. */
	return names_target_parse(stored, &t) == 0 && t.form == NAMES_TARGET_V1;
}

/*
 * keep_target - keep @target (malloc'd with room for any target; taken) as
 * @in's target, unless one is kept already.
 */
static void keep_target(struct inode *in, char *target)
{
	/* Every symlink the kernel knows may hold one: only its own length. */
	char *fitted = realloc(target, strlen(target) + 1);

	target = fitted ? fitted : target;
	pthread_mutex_lock(&in->key_lock);
	if (!in->link_target) {
		in->link_target = target;
		in->link_size = strlen(target);
		target = NULL;
	}
	pthread_mutex_unlock(&in->key_lock);
	free(target);
}

void symlink_looked_up(struct envfs *fs, struct inode *dir, struct inode *in, const char *bname,
		       const char *name)
{
	char stored[NAMES_TARGET_MAX + 1], *target;
	struct names_target t;
	struct names *codec;
	const uint8_t *id;
	bool known;

	if (!encrypted_names(fs) || in->type != S_IFLNK)
		return;
	pthread_mutex_lock(&in->key_lock);
	known = in->link_size != 0; /* a version-1 target, or a version-2 link */
	pthread_mutex_unlock(&in->key_lock);
	if (known || read_stored(inode_fd(dir), bname, stored) < 0)
		return;
	if (names_target_parse(stored, &t) == 0 && t.form != NAMES_TARGET_V1) {
		/* Readlink decrypts it, from the inode alone. */
		pthread_mutex_lock(&in->key_lock);
		in->link_size = t.len;
		pthread_mutex_unlock(&in->key_lock);
		return;
	}
	if (dir_id(fs, dir, &id) < 0 || inode_names(fs, dir, &codec) < 0)
		return;
	target = malloc(NAMES_TARGET_MAX + 1);
	if (!target)
		return;
	if (names_link_open(codec, id, name, stored, target) < 0) {
		log_bad_name(fs, dir, bname, "the symlink target");
		free(target);
		return;
	}
	keep_target(in, target);
}

/* Decrypt the version-2 target of @in (stored as @stored) and keep it. */
static int open_v2(struct envfs *fs, struct inode *in, const char *stored)
{
	struct names_target t;
	uint8_t *sealed = NULL;
	struct names *codec;
	char *target = malloc(NAMES_TARGET_MAX + 1);
	int ret = target ? names_target_parse(stored, &t) : -ENOMEM;

	if (ret == 0)
		ret = inode_names(fs, in, &codec); /* a locked scope: EACCES */

	if (ret == 0 && t.form == NAMES_TARGET_V1)
		ret = -EBADMSG; /* only its name opens it, and readlink has none */
	if (ret == 0 && t.form == NAMES_TARGET_EXTERNAL) {
		sealed = malloc(NAMES_TARGET_SEALED_MAX);
		ret = sealed ? linkstore_read(root_fd(fs), &t, sealed) : -ENOMEM;
	}
	if (ret == 0)
		ret = names_target_open(codec, &t, sealed, NAMES_TARGET_TAG + t.len, target);
	free(sealed);
	if (ret < 0) {
		free(target);
		return ret;
	}
	keep_target(in, target);
	return 0;
}

int symlink_target(struct envfs *fs, struct inode *in, char *out)
{
	char stored[NAMES_TARGET_MAX + 1];
	bool known;
	int ret;

	pthread_mutex_lock(&in->key_lock);
	known = in->link_target != NULL;
	if (known)
		memcpy(out, in->link_target, in->link_size + 1);
	pthread_mutex_unlock(&in->key_lock);
	if (known)
		return 0;
	ret = read_stored(inode_fd(in), "", stored);
	if (ret == 0)
		ret = open_v2(fs, in, stored);
	if (ret == -EBADMSG || ret == -EIO) {
		atomic_fetch_add(&fs->counters.integrity_errors, 1);
		log_ratelimited(LOG_ERR, "symlink inode %llu: its target is damaged or forged; "
					 "returning EIO",
				(unsigned long long)in->ino);
		return -EIO;
	}
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&in->key_lock);
	memcpy(out, in->link_target, in->link_size + 1);
	pthread_mutex_unlock(&in->key_lock);
	return 0;
}

off_t symlink_plain_size(struct envfs *fs, struct inode *in, off_t backing_size)
{
	char stored[NAMES_TARGET_MAX + 1];
	struct names_target t;
	size_t known;

	if (!encrypted_names(fs))
		return backing_size;
	pthread_mutex_lock(&in->key_lock);
	known = in->link_size;
	pthread_mutex_unlock(&in->key_lock);
	if (known)
		return (off_t)known;
	/* A version-1 volume holds version-1 links only: the length says it. */
	if (!symlinks_v2(fs) || read_stored(inode_fd(in), "", stored) < 0 ||
	    names_target_parse(stored, &t) < 0 || t.form == NAMES_TARGET_V1)
		return (off_t)names_link_size(fs->names, (size_t)backing_size);
	pthread_mutex_lock(&in->key_lock);
	in->link_size = t.len;
	pthread_mutex_unlock(&in->key_lock);
	return (off_t)t.len;
}

/* The longest external target: b64(ID) ".." and four digits. */
#define EXTERNAL_TEXT_MAX (NAMES_LINK_ID_TEXT + 2 + 4)

void symlink_drop_begin(struct envfs *fs, int dirfd, const char *entry, const struct stat *st,
			struct symlink_drop *d)
{
	char stored[NAMES_TARGET_MAX + 1];
	struct names_target t;

	d->fd = -1;
	/* Any longer text is a target in its link: no store file to look for. */
	if (!encrypted_names(fs) || !S_ISLNK(st->st_mode) || st->st_size > EXTERNAL_TEXT_MAX ||
	    read_stored(dirfd, entry, stored) < 0 ||
	    names_target_parse(stored, &t) < 0 || t.form != NAMES_TARGET_EXTERNAL)
		return;
	memcpy(d->id, t.id, sizeof(d->id));
	d->fd = openat(dirfd, entry, O_PATH | O_NOFOLLOW | O_CLOEXEC);
}

void symlink_drop_end(struct envfs *fs, struct symlink_drop *d, bool gone)
{
	struct stat st;

	if (d->fd < 0)
		return;
	/* The backing's own count: a hard link made meanwhile, here or by
	 * another host, keeps the store file. */
	if (gone && fstat(d->fd, &st) == 0 && S_ISLNK(st.st_mode) && st.st_nlink == 0)
		store_remove(fs, d->id);
	close(d->fd);
	d->fd = -1;
}
