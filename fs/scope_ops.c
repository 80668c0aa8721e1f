/* SPDX-License-Identifier: MIT */
/* Key scopes in the daemon's operations: see scope_ops.h. */
#include "scope_ops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "crypto/hex.h"
#include "log.h"
#include "scope_convert.h"
#include "status.h"
#include "scopes.h"

int scopes_mount(struct envfs *fs, int root_fd, const uint8_t *volume_key)
{
	char err[512];
	int ret = scope_set_open(root_fd, volume_key, fs->cfg.uuid, fs->settings.dek_pool,
				 &fs->scopes, err, sizeof(err));

	if (ret == 0 && scope_set_count(fs->scopes) > 0 && !fs->cfg.scopes) {
		/* The MAC covers the line: its absence is damage, not an old volume. */
		snprintf(err, sizeof(err), "%s/ holds key scopes, but [volume] has no "
					   "scopes = true", SCOPE_REGISTRY);
		ret = -EBADMSG;
	}
	if (ret < 0)
		fprintf(stderr, "envelopefs: %s: %s\n", fs->backing, err);
	return ret;
}

/*
 * config_has_scopes - whether the volume's configuration on disk now says
 * scopes = true (envelopefsctl writes it, sealed, before the first scope:
 * the daemon does not hold the volume key that seals it).
 */
static bool config_has_scopes(struct envfs *fs)
{
	struct volume_config cfg;
	char path[PATH_MAX], err[512];
	bool yes;

	snprintf(path, sizeof(path), "%s/%s", fs->backing, VOLUME_CONFIG_NAME);
	if (volume_config_load(path, &cfg, err, sizeof(err)) < 0)
		return false;
	yes = cfg.scopes && memcmp(cfg.uuid, fs->cfg.uuid, sizeof(cfg.uuid)) == 0;
	volume_config_free(&cfg);
	return yes;
}

/* root_scope - the scope whose root directory @in is, or NULL. */
static struct scope *root_scope(struct envfs *fs, struct inode *in)
{
	const uint8_t *id;

	if (in->type != S_IFDIR || !fs->scopes || scope_set_count(fs->scopes) == 0 ||
	    dir_id(fs, in, &id) < 0 || !id)
		return NULL;
	return scope_by_root(fs->scopes, id);
}

struct scope *inode_scope(struct envfs *fs, struct inode *in)
{
	struct scope *root = root_scope(fs, in);

	return root ? root : atomic_load(&in->scope);
}

int inode_names(struct envfs *fs, struct inode *in, struct names **out)
{
	struct scope *s = inode_scope(fs, in);
	int ret;

	*out = fs->names;
	if (!s)
		return 0;
	/* Unlock it now if need be: a locked codec would call every name forged. */
	ret = scope_enter(s, NULL);
	if (ret < 0)
		return ret;
	scope_leave(s, NULL);
	*out = scope_names(s);
	return 0;
}

void scope_inherit(struct envfs *fs, struct inode *parent, struct inode *child)
{
	atomic_store(&child->scope, inode_scope(fs, parent));
}

int scope_cross(struct envfs *fs, struct inode *a, struct inode *b)
{
	return inode_scope(fs, a) == inode_scope(fs, b) ? 0 : -EXDEV;
}

struct scope *scope_entry_moving(struct envfs *fs, struct inode *dir)
{
	struct scope *s = inode_scope(fs, dir);

	if (s)
		scope_moves_begin(s);
	return s;
}

void scope_entry_moved(struct scope *s, bool done)
{
	if (s)
		scope_moves_end(s, done);
}

void scope_removed(struct envfs *fs, const uint8_t *dirid)
{
	if (fs->scopes)
		scope_set_forget_root(fs->scopes, inode_fd(inode_table_root(fs->inodes)), dirid);
}

/* dir_empty - whether the backing directory @dir holds nothing but its ID.  0, -ENOTEMPTY, -errno. */
static int dir_empty(struct inode *dir)
{
	int fd = openat(inode_fd(dir), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;
	struct dirent *de;
	DIR *dp;

	if (fd < 0)
		return -errno;
	dp = fdopendir(fd);
	if (!dp) {
		close(fd);
		return -errno;
	}
	while (ret == 0 && (de = readdir(dp)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
		    strcmp(de->d_name, NAMES_DIRID_ENTRY) != 0)
			ret = -ENOTEMPTY;
	closedir(dp);
	return ret;
}

/*
 * volume_refs - the volume's key references (current, and previous while it
 * moves) into @refs, NULL terminated, from @set (held by the caller): a
 * scope's master key must be none of them.
 */
static void volume_refs(const struct kms_set *set, const char *refs[3])
{
	refs[0] = set->keys.current->key_ref;
	refs[1] = set->keys.previous ? set->keys.previous->key_ref : NULL;
	refs[2] = NULL;
}

/*
 * volume_settings - the volume's [kms] settings on disk, canonical, into
 * @out (a converting scope's previous ones).  0, -EBUSY while the volume
 * itself moves to another KMS, or -errno (logged).
 */
static int volume_settings(struct envfs *fs, char *out, size_t cap)
{
	struct volume_config cfg;
	char path[PATH_MAX], err[512];
	int ret;

	snprintf(path, sizeof(path), "%s/%s", fs->backing, VOLUME_CONFIG_NAME);
	ret = volume_config_load(path, &cfg, err, sizeof(err));
	if (ret < 0) {
		log_msg(LOG_ERR, "%s", err);
		return ret;
	}
	if (iniparser_find_entry(cfg.ini, VOLUME_KMS_PREVIOUS)) {
		log_msg(LOG_ERR, "the volume is moving to another KMS: finish that before "
				 "converting a directory into a key scope");
		ret = -EBUSY;
	} else if ((ret = scope_settings_canon(cfg.ini, out, cap, err, sizeof(err))) < 0) {
		log_msg(LOG_ERR, "%s/%s: %s", fs->backing, VOLUME_CONFIG_NAME, err);
	}
	volume_config_free(&cfg);
	return ret;
}

/*
 * create_scope - ENVELOPEFS_IOC_SCOPE_CREATE on an empty @dir, or with
 * @convert ENVELOPEFS_IOC_SCOPE_CONVERT on any (scope_convert.h): 0, 1 (a
 * conversion to these settings under way: resume), or -errno.
 */
static int create_scope(struct envfs *fs, struct inode *dir, const struct scope_create_arg *arg,
			bool convert)
{
	char from[SCOPE_SETTINGS_MAX + 1];
	const char *refs[3];
	const struct kms_set *set;
	struct scope *s;
	const uint8_t *id;
	char err[512];
	int ret;

	if (!fs->scopes || !encrypted_names(fs) || is_root(fs, dir) ||
	    memchr(arg->settings, '\0', sizeof(arg->settings)) == NULL)
		return -EINVAL;
	if (convert && (s = root_scope(fs, dir))) {
		/* Resumed: inodes looked up before the first run may still be the volume's. */
		if (scope_converting_to(s, arg->settings))
			return scope_convert_adopt(fs, dir) < 0 ? -EIO : 1;
		return scope_converting(s) ? -EBUSY : -EEXIST;
	}
	if (inode_scope(fs, dir)) {
		log_msg(LOG_ERR, "directory inode %llu is in a key scope: nested scopes are not "
				 "supported", (unsigned long long)dir->ino);
		return -EINVAL;
	}
	if (fs->shared) {
		/* Other hosts' daemons read the registry at their mount only: they
		 * would key new files in the scope by the volume's KMS. */
		log_msg(LOG_ERR, "key scopes cannot be made in shared mode yet: make them with "
				 "the volume mounted on one host only");
		return -EINVAL;
	}
	if (!config_has_scopes(fs)) {
		log_msg(LOG_ERR, "%s/%s: [volume] has no scopes = true: make scopes with "
				 "envelopefsctl scope create", fs->backing, VOLUME_CONFIG_NAME);
		return -EINVAL;
	}
	ret = dir_id(fs, dir, &id);
	if (ret == 0)
		ret = convert ? volume_settings(fs, from, sizeof(from)) : dir_empty(dir);
	if (ret < 0)
		return ret;
	set = kms_keeper_get(fs->keys);
	volume_refs(set, refs);
	ret = scope_set_create(fs->scopes, inode_fd(inode_table_root(fs->inodes)), id,
			       arg->settings, convert ? from : NULL, refs, &fs->layout, err,
			       sizeof(err));
	kms_keeper_put(fs->keys, set);
	if (ret < 0) {
		log_msg(LOG_ERR, "directory inode %llu: cannot make a key scope: %s",
			(unsigned long long)dir->ino, err);
		return ret == -ENOMEM || ret == -EEXIST || ret == -EINVAL || ret == -EACCES ? ret
											       : -EIO;
	}
	log_msg(LOG_NOTICE, "directory inode %llu is the root of a new key scope%s",
		(unsigned long long)dir->ino, convert ? ", converting what it holds" : "");
	return convert && scope_convert_adopt(fs, dir) < 0 ? -EIO : 0;
}

static int lock_scope(struct envfs *fs, struct inode *dir)
{
	struct scope *s = root_scope(fs, dir);

	if (!s)
		return -EINVAL;
	scope_lock(s);
	dekcache_forget_tag(fs->cache, s);
	log_msg(LOG_NOTICE, "directory inode %llu: key scope locked",
		(unsigned long long)dir->ino);
	return 0;
}

/*
 * scope_version - ENVELOPEFS_IOC_SCOPE_VERSION, or with @rewrap
 * ENVELOPEFS_IOC_REWRAP, on the root @dir: the scope's current master-key
 * version, or for a re-wrap 0 (re-wrapped) or 1 (current already); or -errno.
 */
static int scope_version(struct envfs *fs, struct inode *dir, bool rewrap)
{
	struct scope *s = root_scope(fs, dir);
	uint32_t version;
	int ret;

	if (!s)
		return -EINVAL;
	if (scope_converting(s)) {
		/* Its files move onto its KMS by the conversion's re-keys: a rotation's
		 * re-wraps would keep DEKs the volume's KMS still wraps elsewhere. */
		log_msg(LOG_ERR, "directory inode %llu: a key scope being converted is not rotated: "
				 "finish the conversion (scope create --convert) first",
			(unsigned long long)dir->ino);
		return -EBUSY;
	}
	ret = rewrap ? scope_rewrap_key(s, inode_fd(inode_table_root(fs->inodes)), &version)
		     : scope_current_version(s, &version);
	if (ret == 0 && rewrap)
		log_msg(LOG_NOTICE, "directory inode %llu: scope key re-wrapped onto version %u",
			(unsigned long long)dir->ino, version);
	if (ret < 0)
		return ret == -EACCES || ret == -ENOMEM ? ret : -EIO;
	if (rewrap)
		return ret;
	return version > INT_MAX ? -EOVERFLOW : (int)version;
}

static int shred_scope(struct envfs *fs, struct inode *dir)
{
	struct scope *s = root_scope(fs, dir);
	char err[512] = "";
	int ret;

	if (!s)
		return -EINVAL;
	ret = scope_shred(s, err, sizeof(err));
	if (ret < 0) {
		log_msg(LOG_ERR, "directory inode %llu: key scope not shredded: %s",
			(unsigned long long)dir->ino, err);
		return ret == -EACCES || ret == -EPERM || ret == -EOPNOTSUPP || ret == -ENOMEM
			       ? ret
			       : -EIO;
	}
	dekcache_forget_tag(fs->cache, s);
	log_msg(LOG_NOTICE, "directory inode %llu: key scope shredded: its master key is "
			    "destroyed and nothing under it decrypts again%s%s",
		(unsigned long long)dir->ino, err[0] ? "; " : "", err);
	return 0;
}

/* scope_move - ENVELOPEFS_IOC_SCOPE_MOVE (@arg) or, @arg NULL, _MOVE_END on the root @dir. */
static int scope_move(struct envfs *fs, struct inode *dir, const struct scope_create_arg *arg)
{
	const char *refs[3];
	int root_fd = inode_fd(inode_table_root(fs->inodes)), ret;
	struct scope *s = root_scope(fs, dir);
	const struct kms_set *set;
	char err[512] = "";

	if (!s || (arg && memchr(arg->settings, '\0', sizeof(arg->settings)) == NULL))
		return -EINVAL;
	if (fs->shared) {
		/* Other hosts read a definition at their mount only: they would go on
		 * keying new files by the KMS the scope leaves. */
		log_msg(LOG_ERR, "a key scope cannot move to another KMS in shared mode yet: move "
				 "it with the volume mounted on one host only");
		return -EINVAL;
	}
	if (arg) {
		set = kms_keeper_get(fs->keys);
		volume_refs(set, refs);
		ret = scope_move_start(s, root_fd, arg->settings, refs, &fs->layout, err,
				       sizeof(err));
		kms_keeper_put(fs->keys, set);
	} else {
		ret = scope_move_end(s, root_fd, err, sizeof(err));
	}
	if (ret < 0) {
		log_msg(LOG_ERR, "directory inode %llu: key scope not %s: %s",
			(unsigned long long)dir->ino, arg ? "moved" : "settled", err);
		return ret == -EBUSY || ret == -EINVAL || ret == -EACCES || ret == -ENOMEM ? ret
											   : -EIO;
	}
	if (ret == 0)
		log_msg(LOG_NOTICE, "directory inode %llu: key scope %s", (unsigned long long)dir->ino,
			arg ? "moving to another KMS" : "moved: its previous KMS is needed no more");
	return ret;
}

bool scope_ioctl_cmd(struct envfs *fs, struct inode *in, unsigned int cmd)
{
	return cmd == ENVELOPEFS_IOC_SCOPE_CREATE || cmd == ENVELOPEFS_IOC_SCOPE_LOCK ||
	       cmd == ENVELOPEFS_IOC_SCOPE_VERSION || cmd == ENVELOPEFS_IOC_SCOPE_SHRED ||
	       cmd == ENVELOPEFS_IOC_SCOPE_MOVE || cmd == ENVELOPEFS_IOC_SCOPE_MOVE_END ||
	       cmd == ENVELOPEFS_IOC_SCOPE_CONVERT || cmd == ENVELOPEFS_IOC_SCOPE_CONVERT_END ||
	       (cmd == ENVELOPEFS_IOC_REWRAP && root_scope(fs, in));
}

int scope_key_description(struct envfs *fs, struct inode *in, char *out, size_t cap)
{
	struct scope *s = root_scope(fs, in);
	struct key_record rec;
	char id[33];
	int n;

	if (!s)
		return -ENODATA;
	/* A copy: a re-wrap may replace the record meanwhile (scope_rewrap_key). */
	scope_record_of(s, &rec);
	hex_encode(rec.file_id, 16, id);
	n = snprintf(out, cap, "%u %s %s\n", rec.key_version, rec.key_ref, id);
	return n < 0 || (size_t)n >= cap ? -ERANGE : n;
}

int scope_ioctl(struct envfs *fs, struct inode *dir, unsigned int cmd, const void *in_buf,
		size_t in_bufsz)
{
	if (dir->type != S_IFDIR)
		return -ENOTDIR;
	if (cmd == ENVELOPEFS_IOC_SCOPE_LOCK)
		return lock_scope(fs, dir);
	if (cmd == ENVELOPEFS_IOC_SCOPE_SHRED)
		return shred_scope(fs, dir);
	if (cmd == ENVELOPEFS_IOC_SCOPE_MOVE_END)
		return scope_move(fs, dir, NULL);
	if (cmd == ENVELOPEFS_IOC_SCOPE_MOVE)
		return in_bufsz == sizeof(struct scope_create_arg) ? scope_move(fs, dir, in_buf)
								   : -EINVAL;
	if (cmd == ENVELOPEFS_IOC_SCOPE_VERSION || cmd == ENVELOPEFS_IOC_REWRAP)
		return scope_version(fs, dir, cmd == ENVELOPEFS_IOC_REWRAP);
	if (cmd == ENVELOPEFS_IOC_SCOPE_CONVERT_END)
		return scope_convert_finish(fs, dir);
	if (in_bufsz != sizeof(struct scope_create_arg))
		return -EINVAL;
	return create_scope(fs, dir, in_buf, cmd == ENVELOPEFS_IOC_SCOPE_CONVERT);
}

int scope_xattr(struct envfs *fs, struct inode *in, char *out, size_t cap)
{
	struct scope *s = root_scope(fs, in);

	if (!s || cap < SCOPE_ID_TEXT + 1)
		return -ENODATA;
	return (int)names_b64_encode(scope_def_of(s)->id, SCOPE_ID_LEN, out);
}
