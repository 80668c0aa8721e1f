/* SPDX-License-Identifier: MIT */
/*
 * Extended attributes: user xattrs encrypted and bound to their file
 * (names.h), the daemon's read-only virtual names (status.h), the rest
 * passed through.  With `xattrs = false` the mount has none, as a file
 * system without them (vfat): every name but the daemon's answers
 * EOPNOTSUPP and the list is empty, so tools such as ls stop asking (they
 * remember that answer per device), which saves a round trip per file.
 */
#include "ops_i.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "scope_convert.h"
#include "scope_ops.h"
#include "crypto/hex.h"
#include "filekey.h"
#include "log.h"
#include "status.h"
#include "volkey.h"
#include "xattr_absent.h"

/* The key record's xattr and the daemon's virtual names are not the user's. */
static bool volume_xattr(const char *name)
{
	return strcmp(name, VOLUME_XATTR_NAME) == 0 ||
	       strncmp(name, VIRTUAL_XATTR_PREFIX, strlen(VIRTUAL_XATTR_PREFIX)) == 0;
}

static void reply_xattr_value(fuse_req_t req, const char *value, ssize_t len, size_t size)
{
	if (len < 0)
		fuse_reply_err(req, (int)-len);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)len);
	else if ((size_t)len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, (size_t)len);
}

/* "VERSION KEY_REF FILE_ID\n" of a regular file's key record. */
static int key_description(struct envfs *fs, struct inode *in, char *out, size_t cap)
{
	struct key_record *rec;
	char id[33];
	int fd, n, ret;

	struct layout volkey_layout;
	bool volume_key = is_root(fs, in) && encrypted_names(fs);

	/* The root of a volume with encrypted names describes the volume key. */
	if (in->type != S_IFREG && !volume_key)
		return in->type == S_IFDIR ? scope_key_description(fs, in, out, cap) : -ENODATA;
	fd = volume_key ? volkey_open(inode_fd(in), O_RDONLY, &volkey_layout)
			: reopen(fs, in, O_RDONLY);
	if (fd < 0)
		return fd == -EBADMSG ? -EIO : fd;
	rec = malloc(sizeof(*rec));
	if (!rec) {
		close(fd);
		return -ENOMEM;
	}
	pthread_rwlock_rdlock(&in->content_lock);
	ret = layout_read_record(volume_key ? &volkey_layout : &fs->layout, fd, rec, NULL);
	pthread_rwlock_unlock(&in->content_lock);
	close(fd);
	if (ret == 0) {
		hex_encode(rec->file_id, 16, id);
		n = snprintf(out, cap, "%u %s %s\n", rec->key_version, rec->key_ref, id);
		ret = n < 0 || (size_t)n >= cap ? -ERANGE : n;
	} else if (ret == -EBADMSG) {
		ret = -EIO;
	}
	free(rec);
	return ret;
}

/*
 * xattr_owner - the ID user xattrs of @in are bound to: a directory's ID, or
 * a regular file's key-record file ID.  @create gives a record-less (empty)
 * file its record, so that it has an ID; otherwise such a file has no user
 * xattr (-ENODATA).  Other file types hold no user xattrs.
 */
static int xattr_owner(struct envfs *fs, struct inode *in, bool create, uint8_t owner[16],
		       struct names **codec)
{
	struct key_record *rec;
	const uint8_t *id;
	int fd, ret = inode_names(fs, in, codec); /* its key scope's, if in one */

	if (ret < 0)
		return ret;
	if (in->type == S_IFDIR) {
		ret = dir_id(fs, in, &id);
		if (ret == 0)
			memcpy(owner, id, NAMES_DIRID_LEN);
		return ret;
	}
	if (in->type != S_IFREG)
		return create ? -EPERM : -ENODATA;
	fd = reopen(fs, in, create ? O_RDWR : O_RDONLY);
	if (fd < 0)
		return fd;
	if (create) {
		ret = filekey_attach(fs, in, fd);
		if (ret == 0) {
			pthread_rwlock_wrlock(&in->content_lock);
			ret = filekey_load(fs, in, fd, true);
			if (ret == 0)
				memcpy(owner, in->dek->file_id, RECORD_FILE_ID_LEN);
			pthread_rwlock_unlock(&in->content_lock);
			filekey_detach(fs, in);
		}
		close(fd);
		return ret;
	}
	rec = malloc(sizeof(*rec));
	if (!rec) {
		close(fd);
		return -ENOMEM;
	}
	pthread_rwlock_rdlock(&in->content_lock);
	ret = layout_read_record(&fs->layout, fd, rec, NULL);
	pthread_rwlock_unlock(&in->content_lock);
	close(fd);
	if (ret == 0)
		memcpy(owner, rec->file_id, RECORD_FILE_ID_LEN);
	free(rec);
	return ret == -EBADMSG ? -EIO : ret;
}

static void log_bad_xattr(struct envfs *fs, struct inode *in, const char *stored)
{
	atomic_fetch_add(&fs->counters.integrity_errors, 1);
	log_ratelimited(LOG_ERR, "inode %llu: xattr %s is damaged or forged (or copied from "
				 "another file)",
			(unsigned long long)in->ino, stored);
}

/* getxattr of an encrypted user xattr: the value is read and opened here. */
static ssize_t get_user_xattr(struct envfs *fs, struct inode *in, const char *name,
			      char *value, size_t size)
{
	char stored_name[NAMES_XATTR_NAME_MAX + 1], path[64];
	uint8_t owner[16], *stored;
	struct names *codec;
	ssize_t len;
	int ret = xattr_owner(fs, in, false, owner, &codec);

	proc_path(inode_fd(in), path);
	if (ret == 0)
		ret = scope_xattr_name(codec, path, owner, name, stored_name);
	if (ret < 0)
		return ret == -ERANGE ? -ENODATA : ret;
	len = getxattr(path, stored_name, NULL, 0);
	if (len < 0)
		return -errno;
	if (len < NAMES_XATTR_OVERHEAD) {
		log_bad_xattr(fs, in, stored_name);
		return -EIO;
	}
	if (size == 0)
		return len - NAMES_XATTR_OVERHEAD;
	stored = malloc((size_t)len);
	if (!stored)
		return -ENOMEM;
	len = getxattr(path, stored_name, stored, (size_t)len);
	if (len < 0)
		ret = -errno; /* ERANGE if it grew meanwhile: the caller retries */
	else if (len < NAMES_XATTR_OVERHEAD || (size_t)len - NAMES_XATTR_OVERHEAD > size)
		ret = len < NAMES_XATTR_OVERHEAD ? -EIO : -ERANGE;
	else if (names_xattr_value_open(codec, owner, name, stored, (size_t)len, value) < 0)
		ret = -EIO;
	if (ret == -EIO)
		log_bad_xattr(fs, in, stored_name);
	free(stored);
	return ret < 0 ? ret : len - NAMES_XATTR_OVERHEAD;
}

static void getxattr_pinned(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char path[64], *value = NULL;
	ssize_t len;

	if (volume_xattr(name)) {
		char text[4 * PATH_MAX];

		if (strcmp(name, STATUS_XATTR) == 0 && is_root(fs, in))
			len = status_json(fs, text, sizeof(text));
		else if (strcmp(name, KEY_XATTR) == 0)
			len = key_description(fs, in, text, sizeof(text));
		else if (strcmp(name, SCOPE_XATTR) == 0)
			len = scope_xattr(fs, in, text, sizeof(text));
		else
			len = -ENODATA;
		if (len != -ENODATA && fuse_req_ctx(req)->uid != 0)
			len = -EPERM;
		reply_xattr_value(req, text, len, size);
		return;
	}
	if (!fs->settings.xattrs) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (size > 0 && !(value = malloc(size))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (names_xattr_is_user(fs->names, name)) {
		len = get_user_xattr(fs, in, name, value, size);
	} else if ((len = xattr_absent_answer(fs, in, name)) == 0) {
		proc_path(inode_fd(in), path);
		len = getxattr(path, name, value, size);
		if (len < 0)
			len = -errno;
		xattr_absent_note(fs, in, name, len);
	}
	reply_xattr_value(req, value, len, size);
	free(value);
}

void envfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	getxattr_pinned(req, ino, name, size);
	unpin(fs, in);
}

static void listxattr_pinned(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char path[64], *list;
	ssize_t len, out = 0;
	uint8_t owner[16];
	struct names *codec = fs->names;
	int owner_ret = -ENODATA;

	if (!fs->settings.xattrs) {
		reply_xattr_value(req, "", 0, size);
		return;
	}
	proc_path(inode_fd(in), path);
	/* Ask the backing file with room to spare: the hidden name is removed.
	 * A decrypted name is never longer than its sealed form. */
	len = listxattr(path, NULL, 0);
	if (len < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	list = malloc((size_t)len + 1);
	if (!list) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	len = listxattr(path, list, (size_t)len);
	if (len < 0) {
		free(list);
		fuse_reply_err(req, errno); /* ERANGE if it grew meanwhile: the caller retries */
		return;
	}
	for (ssize_t i = 0; i < len;) {
		size_t stored_n = strlen(list + i) + 1;
		char plain[NAMES_XATTR_NAME_MAX + 1];
		const char *show = list + i;

		if (names_xattr_is_user(fs->names, show) && !volume_xattr(show)) {
			if (owner_ret == -ENODATA)
				owner_ret = xattr_owner(fs, in, false, owner, &codec);
			if (owner_ret < 0 ||
			    names_xattr_name_open(codec, owner, show, plain) < 0) {
				/* Not this file's: skipped, like a forged file name. */
				log_bad_xattr(fs, in, show);
				show = NULL;
			} else {
				show = plain;
			}
		}
		/* A shown name is never longer than its stored form, so it
		 * never overtakes the entries still to be read. */
		if (show && !volume_xattr(show)) {
			size_t n = strlen(show) + 1;
			memmove(list + out, show, n);
			out += (ssize_t)n;
		}
		i += (ssize_t)stored_n;
	}
	reply_xattr_value(req, list, out, size);
	free(list);
}

void envfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	listxattr_pinned(req, ino, size);
	unpin(fs, in);
}

static int set_user_xattr(struct envfs *fs, struct inode *in, const char *path, const char *name,
			  const char *value, size_t size, int flags)
{
	char stored_name[NAMES_XATTR_NAME_MAX + 1];
	uint8_t owner[16], *stored;
	struct names *codec;
	int ret = xattr_owner(fs, in, true, owner, &codec);

	if (ret == 0)
		ret = scope_xattr_name(codec, path, owner, name, stored_name);
	if (ret < 0)
		return ret;
	if (size > NAMES_XATTR_VALUE_MAX - NAMES_XATTR_OVERHEAD)
		return -E2BIG;
	stored = malloc(size + NAMES_XATTR_OVERHEAD);
	if (!stored)
		return -ENOMEM;
	ret = names_xattr_value_seal(codec, owner, name, value, size, stored);
	if (ret == 0 && setxattr(path, stored_name, stored, size + NAMES_XATTR_OVERHEAD, flags) < 0)
		ret = -errno;
	free(stored);
	return ret;
}

static void setxattr_pinned(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			    size_t size, int flags)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char path[64];
	int ret;

	if (strcmp(name, SCOPE_CONVERT_XATTR) == 0) {
		/* Not stored: converts the directory, under the lock the kernel holds on it. */
		bool check = size == strlen(SCOPE_CONVERT_CHECK) &&
			     memcmp(value, SCOPE_CONVERT_CHECK, size) == 0;

		fuse_reply_err(req, fuse_req_ctx(req)->uid != 0 ? EPERM
							       : -scope_convert_dir(fs, in, check));
		return;
	}
	if (volume_xattr(name)) {
		fuse_reply_err(req, EPERM); /* the daemon's names are read-only */
		return;
	}
	if (!fs->settings.xattrs) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	proc_path(inode_fd(in), path);
	if (names_xattr_is_user(fs->names, name)) {
		fuse_reply_err(req, -set_user_xattr(fs, in, path, name, value, size, flags));
		return;
	}
	ret = setxattr(path, name, value, size, flags) < 0 ? errno : 0;
	xattr_absent_changed(in);
	fuse_reply_err(req, ret);
}

void envfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size, int flags)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	setxattr_pinned(req, ino, name, value, size, flags);
	unpin(fs, in);
}

static void removexattr_pinned(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char path[64], stored_name[NAMES_XATTR_NAME_MAX + 1];
	uint8_t owner[16];
	struct names *codec;
	int ret;

	if (volume_xattr(name)) {
		fuse_reply_err(req, strcmp(name, VOLUME_XATTR_NAME) == 0 ? ENODATA : EPERM);
		return;
	}
	if (!fs->settings.xattrs) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}

	proc_path(inode_fd(in), path);
	if (names_xattr_is_user(fs->names, name)) {
		ret = xattr_owner(fs, in, false, owner, &codec);
		if (ret == 0)
			ret = scope_xattr_name(codec, path, owner, name, stored_name);
		if (ret < 0) {
			fuse_reply_err(req, ret == -ERANGE ? ENODATA : -ret);
			return;
		}
		name = stored_name;
	}
	ret = removexattr(path, name) < 0 ? errno : 0;
	xattr_absent_changed(in);
	fuse_reply_err(req, ret);
}

void envfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	removexattr_pinned(req, ino, name);
	unpin(fs, in);
}
