/* SPDX-License-Identifier: MIT */
/* Converting a non-empty directory into a key scope, online: see scope_convert.h. */
#include "scope_convert.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "backing_rename.h"
#include "crypto/secmem.h"
#include "filekey.h"
#include "log.h"
#include "rekey.h"
#include "scopes.h"
#include "shared.h"
#include "symlink.h"

/* A directory's entries, read before any is renamed (a rename may move one past the reader). */
struct entry_list {
	char **v;
	size_t n;
};

static void entry_list_free(struct entry_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

/* read_entries - the names in directory @fd (open for reading) into @l.  0 or -errno. */
static int read_entries(int fd, struct entry_list *l)
{
	int dfd = dup(fd), ret = 0;
	struct dirent *de;
	DIR *dp;

	l->v = NULL;
	l->n = 0;
	if (dfd < 0)
		return -errno;
	dp = fdopendir(dfd);
	if (!dp) {
		close(dfd);
		return -errno;
	}
	rewinddir(dp);
	while (ret == 0 && (de = readdir(dp))) {
		char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

		if (!v || !(v[l->n] = strdup(de->d_name))) {
			l->v = v ? v : l->v;
			ret = -ENOMEM;
			break;
		}
		l->v = v;
		l->n++;
	}
	closedir(dp);
	return ret;
}

static int sync_dir(int fd)
{
	return fsync(fd) < 0 ? -errno : 0;
}

/*
 * reseal_dir_xattr - the user xattr @stored of directory @fd (ID @id) under
 * the scope's seal: a copy sealed by @codec is written, then the volume's
 * original removed (a crash in between leaves both, the same value: the
 * next run removes the original).  One already the scope's is left alone.
 * 1 (resealed), 0 (nothing to do) or -errno.
 */
static int reseal_dir_xattr(const struct names *codec, int fd, const uint8_t *id,
			    const char *stored, uint8_t *sealed, uint8_t *plain)
{
	char name[NAMES_XATTR_NAME_MAX + 1], resealed[NAMES_XATTR_NAME_MAX + 1];
	ssize_t len;
	size_t plain_len;
	int ret;

	if (names_xattr_name_open(codec, id, stored, name) < 0)
		return 0; /* not authentic under either key: left as it is, reads EIO */
	ret = names_xattr_name_seal(codec, id, name, resealed);
	if (ret < 0 || strcmp(resealed, stored) == 0)
		return ret; /* the scope's already */
	len = fgetxattr(fd, stored, sealed, NAMES_XATTR_VALUE_MAX);
	if (len < 0)
		return errno == ENODATA ? 0 : -errno;
	if ((size_t)len < NAMES_XATTR_OVERHEAD)
		return -EBADMSG;
	plain_len = (size_t)len - NAMES_XATTR_OVERHEAD;
	ret = names_xattr_value_open(codec, id, name, sealed, (size_t)len, plain);
	if (ret == 0)
		ret = names_xattr_value_seal(codec, id, name, plain, plain_len, sealed);
	secmem_wipe(plain, plain_len);
	/* A copy under the scope's seal already there was made by a run a crash
	 * cut short before it removed this one, and may have been changed since:
	 * it is kept, and only the volume's copy goes. */
	if (ret == 0 && fsetxattr(fd, resealed, sealed, (size_t)len, XATTR_CREATE) < 0 &&
	    errno != EEXIST)
		ret = -errno;
	if (ret == 0 && fremovexattr(fd, stored) < 0 && errno != ENODATA)
		ret = -errno;
	return ret < 0 ? ret : 1;
}

/*
 * reseal_dir_xattrs - every user xattr of directory @fd (ID @id) under the
 * scope's seal; *@changed counts those resealed.  0 or -errno.
 */
static int reseal_dir_xattrs(const struct names *codec, int fd, const uint8_t *id,
			     unsigned *changed)
{
	uint8_t *sealed = malloc(NAMES_XATTR_VALUE_MAX), *plain = malloc(NAMES_XATTR_VALUE_MAX);
	ssize_t len = flistxattr(fd, NULL, 0);
	char *list = len > 0 ? malloc((size_t)len) : NULL;
	int ret = 0;

	if (len < 0 && errno != ENOTSUP)
		ret = -errno;
	else if (!sealed || !plain || (len > 0 && !list))
		ret = -ENOMEM;
	else if (len > 0 && (len = flistxattr(fd, list, (size_t)len)) < 0)
		ret = -errno;
	for (char *p = list; ret == 0 && len > 0 && p < list + len; p += strlen(p) + 1)
		if (names_xattr_is_user(codec, p) && strcmp(p, VOLUME_XATTR_NAME) != 0 &&
		    (ret = reseal_dir_xattr(codec, fd, id, p, sealed, plain)) > 0) {
			(*changed)++;
			ret = 0;
		}
	free(list);
	free(sealed);
	free(plain);
	return ret;
}

/*
 * rename_entry - give entry @entry (attributes @st) of @dir its scope form
 * @b: a long name's side record first, the entry renamed (never over
 * another), the old side record last, so an entry never lacks its record.
 * A backing without RENAME_NOREPLACE links a file to its new name and then
 * unlinks the old one (backing_rename.h): a crash in between leaves both
 * names of one inode, and the next run drops the old one.
 */
static int rename_entry(struct envfs *fs, struct inode *dir, int fd, const char *entry,
			const struct stat *st, const struct backing_name *b)
{
	struct stat there;
	int ret = prepare_entry(dir, b);

	if (ret == 0)
		ret = backing_rename_noreplace(&fs->caps, fd, entry, fd, b->entry,
					       S_ISDIR(st->st_mode), true);
	if (ret == -EEXIST && fstatat(fd, b->entry, &there, AT_SYMLINK_NOFOLLOW) == 0 &&
	    there.st_dev == st->st_dev && there.st_ino == st->st_ino && !S_ISDIR(st->st_mode))
		ret = unlinkat(fd, entry, 0) < 0 ? -errno : 0;
	if (ret < 0) {
		if (ret == -EEXIST)
			log_msg(LOG_ERR, "directory inode %llu: entry %s has both a volume and a "
					 "scope form (%s) of one name",
				(unsigned long long)dir->ino, entry, b->entry);
		abandon_entry(dir, b);
		return ret;
	}
	names_side_remove(fd, entry); /* none for a short name */
	return 0;
}

/*
 * relink - replace the symlink @entry (attributes @st, plaintext @name) of
 * @dir by one holding @target sealed under the scope's key (symlink_write(),
 * with @dir's codec): made under a hidden name, with the link's owner and
 * times, and renamed over it; the kernel's inode follows (inode_rebind).
 */
static int relink(struct envfs *fs, struct inode *dir, int fd, const char *entry,
		  const char *name, const char *target, const struct stat *st)
{
	struct timespec times[2] = {st->st_atim, st->st_mtim};
	struct stat made;
	char tmp[64];
	int lfd, ret;

	shared_temp_name(tmp);
	ret = symlink_write(fs, dir, name, target, fd, tmp);
	if (ret < 0)
		return ret;
	if (fchownat(fd, tmp, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
	    utimensat(fd, tmp, times, AT_SYMLINK_NOFOLLOW) < 0 || renameat(fd, tmp, fd, entry) < 0) {
		ret = -errno;
		unlinkat(fd, tmp, 0);
		return ret;
	}
	lfd = openat(fd, entry, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (lfd >= 0 && fstat(lfd, &made) == 0 && S_ISLNK(made.st_mode))
		inode_rebind(fs->inodes, st, lfd, &made);
	else if (lfd >= 0)
		close(lfd);
	return 0;
}

/*
 * restore_target - replace the link-store file of external link @t by @sealed
 * (@len bytes): written to a hidden name, synced, renamed over it, the
 * store synced.  The link itself names only its ID and length: it stays.
 */
static int restore_target(struct envfs *fs, const struct names_target *t, const uint8_t *sealed,
			  size_t len)
{
	char file[NAMES_LINK_ID_TEXT + 1], tmp[NAMES_LINK_ID_TEXT + 8];
	int store = openat(inode_fd(inode_table_root(fs->inodes)), NAMES_LINK_STORE,
			   O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int out = -1, ret = 0;

	if (store < 0)
		return -errno;
	names_link_store_name(t->id, file);
	snprintf(tmp, sizeof(tmp), "%s.tmp", file);
	out = openat(store, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0)
		ret = -errno;
	else if (write(out, sealed, len) != (ssize_t)len)
		ret = -EIO; /* a short write of a few KiB to a local file: out of space or worse */
	else if (fsync(out) < 0 || renameat(store, tmp, store, file) < 0)
		ret = -errno;
	if (out >= 0)
		close(out);
	if (ret < 0)
		unlinkat(store, tmp, 0);
	else
		ret = sync_dir(store);
	close(store);
	return ret;
}

/*
 * read_store - the link-store file of link @t into @side
 * (NAMES_TARGET_SEALED_MAX bytes): its length, or -errno.
 */
static ssize_t read_store(struct envfs *fs, const struct names_target *t, uint8_t *side)
{
	char path[NAMES_LINK_ID_TEXT + sizeof(NAMES_LINK_STORE) + 2];
	ssize_t len;
	int fd;

	snprintf(path, sizeof(path), "%s/", NAMES_LINK_STORE);
	names_link_store_name(t->id, path + strlen(path));
	fd = openat(inode_fd(inode_table_root(fs->inodes)), path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	len = read(fd, side, NAMES_TARGET_SEALED_MAX);
	close(fd);
	return len < 0 ? -errno : len;
}

/* Scratch space for one symlink's conversion (too large for a FUSE thread's stack). */
struct link_work {
	char stored[NAMES_TARGET_MAX + 1], resealed[NAMES_TARGET_MAX + 1];
	char target[NAMES_TARGET_MAX + 1];
	uint8_t side[NAMES_TARGET_SEALED_MAX], sealed[NAMES_TARGET_SEALED_MAX];
};

/*
 * convert_link - the symlink @entry (plaintext @name, attributes @st) of
 * @dir (ID @id) with its target sealed under the scope's key: a version-1
 * or inline target by a new link (relink), an external one by its store
 * file.  One that opens under the scope's key already is left alone.
 * *@changed counts a target sealed anew.  0 or -errno.
 */
static int convert_link(struct envfs *fs, struct inode *dir, const struct names *codec, int fd,
			const uint8_t *id, const char *entry, const char *name,
			const struct stat *st, unsigned *changed)
{
	bool sealed_anew = true;
	struct link_work *w = malloc(sizeof(*w));
	struct names_target t;
	size_t sealed_len;
	ssize_t n;
	int ret;

	if (!w)
		return -ENOMEM;
	n = readlinkat(fd, entry, w->stored, sizeof(w->stored) - 1);
	ret = n < 0 ? -errno : 0;
	if (ret == 0) {
		w->stored[n] = '\0';
		ret = names_target_parse(w->stored, &t);
	}
	if (ret == 0 && t.form == NAMES_TARGET_V1) {
		/* Made anew as a version-2 link, as a rename of it would be. */
		ret = names_link_open(codec, id, name, w->stored, w->target);
		/* A new inode would split hard links to it, as for an inline target below. */
		if (ret == 0)
			ret = st->st_nlink > 1 ? -EMLINK : relink(fs, dir, fd, entry, name, w->target, st);
	} else if (ret == 0) {
		n = t.form == NAMES_TARGET_EXTERNAL ? read_store(fs, &t, w->side) : 0;
		ret = n < 0 ? (int)n : names_target_open(codec, &t, w->side, (size_t)n, w->target);
		if (ret == 0)
			ret = names_target_seal(codec, t.id, w->target, w->resealed, w->sealed,
						&sealed_len);
		if (ret == 0 && t.form == NAMES_TARGET_INLINE && strcmp(w->resealed, w->stored) != 0)
			ret = st->st_nlink > 1 ? -EMLINK : relink(fs, dir, fd, entry, name, w->target, st);
		else if (ret == 0 && t.form == NAMES_TARGET_EXTERNAL &&
			 (sealed_len != (size_t)n || memcmp(w->sealed, w->side, sealed_len) != 0))
			ret = restore_target(fs, &t, w->sealed, sealed_len);
		else
			sealed_anew = false;
	}
	if (ret == 0 && sealed_anew)
		(*changed)++;
	if (ret == -EMLINK)
		log_msg(LOG_ERR, "directory inode %llu: symlink %s has hard links: its target "
				 "cannot be sealed anew in place; not converted",
			(unsigned long long)dir->ino, entry);
	else if (ret == -EBADMSG)
		log_bad_name(fs, dir, entry, "the symlink target");
	secmem_wipe(w, sizeof(*w));
	free(w);
	return ret == -EBADMSG ? 0 : ret; /* a forged target stays forged: EIO to readers */
}

/*
 * adopt - the daemon's inode of the backing inode @st (entry @entry of @fd),
 * if the kernel knows it, is in scope @s from now on: it was looked up
 * before its directory became part of the scope.
 */
static void adopt(struct envfs *fs, struct scope *s, int fd, const char *entry,
		  const struct stat *st)
{
	struct inode *in = inode_lookup_known(fs->inodes, st, fd, entry);

	if (in) {
		atomic_store(&in->scope, s);
		inode_forget(fs->inodes, in, 1); /* the reference the look-up took */
	}
}

/*
 * adopt_tree - adopt() every inode below the backing directory @fd, top
 * down, so that a parent is in the scope before a lookup in it hands its
 * scope on, and drop the DEKs cached for its files as the volume's (an open
 * file's when it closes): the next use unwraps through the scope, so a
 * scope lock reaches them.  -errno for a directory that cannot be read.
 */
static int adopt_tree(struct envfs *fs, struct scope *s, int fd)
{
	struct entry_list l = {0};
	struct stat st;
	int ret = read_entries(fd, &l);

	for (size_t i = 0; ret == 0 && i < l.n; i++) {
		const char *entry = l.v[i];
		int sub;

		if (strcmp(entry, ".") == 0 || strcmp(entry, "..") == 0 ||
		    fstatat(fd, entry, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* gone meanwhile: nothing to adopt */
		adopt(fs, s, fd, entry, &st);
		/* A DEK cached as the volume's would outlive a lock of the scope. */
		if (S_ISREG(st.st_mode))
			dekcache_forget(fs->cache, st.st_dev, st.st_ino);
		if (!S_ISDIR(st.st_mode))
			continue;
		sub = openat(fd, entry, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			continue;
		ret = adopt_tree(fs, s, sub);
		close(sub);
	}
	entry_list_free(&l);
	return ret;
}

int scope_convert_adopt(struct envfs *fs, struct inode *root)
{
	struct scope *s = inode_scope(fs, root);
	int fd, ret;

	if (!s || !scope_converting(s))
		return -EINVAL;
	fd = openat(inode_fd(root), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ret = fd < 0 ? -errno : adopt_tree(fs, s, fd);
	if (fd >= 0)
		close(fd);
	if (ret < 0)
		log_msg(LOG_ERR, "directory inode %llu: the inodes below it could not all learn "
				 "their key scope: %s", (unsigned long long)root->ino, strerror(-ret));
	return ret;
}

/*
 * convert_entry - one entry of @dir (ID @id): its name, its inode's scope, a
 * symlink's target; *@changed counts what changed.  0 or -errno.
 */
static int convert_entry(struct envfs *fs, struct scope *s, struct inode *dir, int fd,
			 const uint8_t *id, const char *entry, unsigned *changed)
{
	char full[NAMES_FULL_MAX + 1], name[NAMES_MAX + 1];
	enum names_entry kind = names_classify(scope_names(s), false, entry);
	struct backing_name b;
	struct stat st;
	int ret;

	if (kind == NAMES_ENTRY_HIDDEN)
		return 0;
	if (kind == NAMES_ENTRY_LONG && names_side_read(fd, entry, full) < 0) {
		log_bad_name(fs, dir, entry, "the side record");
		return 0;
	}
	if (names_decode(scope_names(s), id, false, entry, kind == NAMES_ENTRY_LONG ? full : NULL,
			 name) < 0) {
		log_bad_name(fs, dir, entry, "the name");
		return 0; /* forged under both keys: left alone, as a listing leaves it out */
	}
	ret = names_encode(scope_names(s), id, false, name, &b);
	if (ret == 0 && fstatat(fd, entry, &st, AT_SYMLINK_NOFOLLOW) < 0)
		ret = -errno;
	if (ret == 0 && strcmp(b.entry, entry) != 0 &&
	    (ret = rename_entry(fs, dir, fd, entry, &st, &b)) == 0)
		(*changed)++;
	if (ret < 0)
		return ret;
	adopt(fs, s, fd, b.entry, &st);
	return S_ISLNK(st.st_mode) ? convert_link(fs, dir, scope_names(s), fd, id, b.entry, name, &st,
						  changed)
				   : 0;
}

int scope_convert_dir(struct envfs *fs, struct inode *dir, bool check)
{
	struct scope *s = dir->type == S_IFDIR ? inode_scope(fs, dir) : NULL;
	struct entry_list l = {0};
	unsigned changed = 0;
	const uint8_t *id;
	struct stat before;
	int fd, ret;

	if (!s || !scope_converting(s))
		return -EINVAL;
	ret = dir_id(fs, dir, &id);
	if (ret < 0)
		return ret;
	/* The checking walk starts at the root: from here on a rename or a link
	 * inside the scope keeps the conversion from ending (scopes.h). */
	if (check && memcmp(scope_def_of(s)->root_dirid, id, 16) == 0)
		scope_check_begins(s);
	ret = scope_enter(s, NULL); /* its keys, held for the whole directory */
	if (ret < 0)
		return ret;
	fd = openat(inode_fd(dir), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ret = fd < 0 ? -errno : fstat(fd, &before) < 0 ? -errno : 0;
	if (ret == 0)
		ret = reseal_dir_xattrs(scope_names(s), fd, id, &changed);
	if (ret == 0)
		ret = read_entries(fd, &l);
	for (size_t i = 0; ret == 0 && i < l.n; i++)
		ret = convert_entry(fs, s, dir, fd, id, l.v[i], &changed);
	/* Its entries renamed to their scope form are the same entries: the
	 * directory's mtime stays what it showed (nothing else changed it
	 * meanwhile: the kernel holds the directory's lock through this). */
	if (ret == 0 && changed &&
	    futimens(fd, (struct timespec[2]){ { .tv_nsec = UTIME_OMIT }, before.st_mtim }) < 0)
		ret = -errno;
	if (ret == 0)
		ret = sync_dir(fd); /* each rename is atomic; this makes them durable */
	entry_list_free(&l);
	if (fd >= 0)
		close(fd);
	scope_leave(s, NULL);
	if (ret < 0) {
		log_msg(LOG_ERR, "directory inode %llu: not converted into its key scope: %s",
			(unsigned long long)dir->ino, strerror(-ret));
		return ret == -ENOMEM || ret == -ENOSPC || ret == -EDQUOT || ret == -EMLINK ? ret
											 : -EIO;
	}
	/* A check found something left (moved in after its walk): converted now, said so. */
	return check && changed ? -EINPROGRESS : 0;
}

/* journals_left - whether the re-key journal directory holds anything. */
static bool journals_left(struct envfs *fs)
{
	int fd = openat(inode_fd(inode_table_root(fs->inodes)), REKEY_DIR,
			O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct entry_list l = {0};
	bool any = false;

	if (fd < 0)
		return false;
	if (read_entries(fd, &l) == 0)
		for (size_t i = 0; i < l.n; i++)
			any |= l.v[i][0] != '.';
	entry_list_free(&l);
	close(fd);
	return any;
}

int scope_convert_finish(struct envfs *fs, struct inode *dir)
{
	struct scope *s = dir->type == S_IFDIR ? inode_scope(fs, dir) : NULL;
	const uint8_t *id;
	char err[512] = "";
	int ret;

	if (!s || dir_id(fs, dir, &id) < 0 || memcmp(scope_def_of(s)->root_dirid, id, 16) != 0)
		return -EINVAL; /* not a scope's root */
	/* A re-key journal left may be one of this scope's files, interrupted
	 * after its new record was written: that record opens only through the
	 * scope's KMS, and only a converting scope's recovery (at mount) brings
	 * it.  Ended now, nothing would ever finish it.  One running elsewhere
	 * makes this wait too: the caller tries again. */
	if (journals_left(fs)) {
		log_msg(LOG_WARNING, "directory inode %llu: key scope conversion not ended: a re-key "
				     "is running or was interrupted (remount with the scope's KMS "
				     "reachable to finish it)",
			(unsigned long long)dir->ino);
		return -EBUSY;
	}
	ret = scope_convert_end(s, inode_fd(inode_table_root(fs->inodes)), err, sizeof(err));
	if (ret == -EAGAIN) {
		log_msg(LOG_NOTICE, "directory inode %llu: key scope conversion not ended yet: %s",
			(unsigned long long)dir->ino, err);
		return ret;
	}
	if (ret < 0) {
		log_msg(LOG_ERR, "directory inode %llu: key scope conversion not ended: %s",
			(unsigned long long)dir->ino, err);
		return ret == -ENOMEM ? ret : -EIO;
	}
	if (ret == 0)
		log_msg(LOG_NOTICE, "directory inode %llu: converted into its key scope: the "
				    "volume's keys open nothing under it any more",
			(unsigned long long)dir->ino);
	return ret;
}

int scope_to_backing(struct envfs *fs, struct inode *dir, const struct names *codec,
		     const uint8_t *id, const char *name, struct backing_name *b)
{
	const struct names *fallback = names_fallback(codec);
	struct backing_name old;
	struct stat st;
	int ret = names_encode(codec, id, is_root(fs, dir), name, b);

	if (ret < 0 || !fallback ||
	    fstatat(inode_fd(dir), b->entry, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return ret;
	/* Not converted yet (scope_convert_dir holds the directory's lock while it is). */
	if (names_encode(fallback, id, is_root(fs, dir), name, &old) == 0 &&
	    fstatat(inode_fd(dir), old.entry, &st, AT_SYMLINK_NOFOLLOW) == 0)
		*b = old;
	return 0;
}

bool scope_dir_converting(struct envfs *fs, struct inode *dir)
{
	struct scope *s = inode_scope(fs, dir);

	return s && scope_converting(s);
}

int scope_xattr_name(const struct names *codec, const char *path, const uint8_t *owner,
		     const char *name, char *stored)
{
	const struct names *fallback = names_fallback(codec);
	char old[NAMES_XATTR_NAME_MAX + 1];
	int ret = names_xattr_name_seal(codec, owner, name, stored);

	if (ret < 0 || !fallback || getxattr(path, stored, NULL, 0) >= 0 || errno != ENODATA)
		return ret;
	/* A file or directory the conversion has not reached: the volume's seal. */
	if (names_xattr_name_seal(fallback, owner, name, old) == 0 &&
	    getxattr(path, old, NULL, 0) >= 0)
		strcpy(stored, old);
	return 0;
}

void scope_finish_rekeys(struct envfs *fs)
{
	size_t n = fs->scopes ? scope_set_count(fs->scopes) : 0;

	for (size_t i = 0; i < n && journals_left(fs); i++) {
		struct scope *s = scope_set_at(fs->scopes, i);
		struct rekey_recovery rec;
		const struct kms_set *set;
		struct rekey_env env;

		if (scope_gone(s) || !scope_converting(s) || scope_enter(s, &set) < 0)
			continue;
		filekey_rekey_env(fs, set, &env);
		env.names = scope_names(s);
		if (rekey_recover(&env, &rec, NULL) == 0 && rec.finished)
			log_msg(LOG_NOTICE, "converting key scope: %u interrupted re-keys finished",
				rec.finished);
		scope_leave(s, set);
	}
}
