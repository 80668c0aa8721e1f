/* SPDX-License-Identifier: MIT */
/*
 * The rotation and reload ioctls (status.h): re-wrap, re-key, reload KMS.
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
#include <unistd.h>

#include "scope_ops.h"
#include "filekey.h"
#include "log.h"
#include "shared.h"
#include "status.h"
#include "confmac.h"
#include "crypto/secmem.h"
#include "volkey.h"

/*
 * rotate_inode - re-wrap (ENVELOPEFS_IOC_REWRAP) or re-key
 * (ENVELOPEFS_IOC_REKEY) a regular file, under its exclusive content lock.
 * 0 when done, 1 when a re-wrap found the record already current (another
 * name of the file got there first), or -errno.
 */
static int rotate_inode(struct envfs *fs, struct inode *in, bool rekey)
{
	struct rewrap_result wrapped;
	struct rekey_result keyed;
	int fd, ret;

	if (in->type != S_IFREG)
		return -EINVAL;
	fd = reopen(fs, in, O_RDWR);
	if (fd < 0)
		return fd;
	pthread_rwlock_wrlock(&in->content_lock);
	/* Shared mode (shared.h): a re-key waits for writers on every host;
	 * a re-wrap only for a re-key. */
	ret = !fs->shared_locks ? 0 : rekey ? keylock_rekey(in, fd) : keylock_share(fd);
	if (ret == 0)
		ret = rekey ? filekey_rekey(fs, in, fd, &keyed)
			    : filekey_rewrap(fs, in, fd, &wrapped);
	if (fs->shared_locks && rekey)
		keylock_rekey_done(in, fd);
	/* Closed before the content lock goes: a re-key holds the key lock
	 * through @fd (rekey.h), and the next re-key of the file -- another
	 * name of it, on another thread -- would find it still held (EBUSY). */
	close(fd);
	pthread_rwlock_unlock(&in->content_lock);
	if (ret == 0 && rekey)
		log_msg(LOG_DEBUG, "inode %llu: re-keyed (master-key version %u)",
			(unsigned long long)in->ino, keyed.new_version);
	else if (ret == 0)
		log_msg(LOG_DEBUG, "inode %llu: key re-wrapped from version %u to %u",
			(unsigned long long)in->ino, wrapped.old_version, wrapped.new_version);
	return ret;
}

/* Re-wrap the volume key: rotation asks for it through the mount root. */
static int rewrap_volume_key(struct envfs *fs)
{
	const struct kms_set *set = kms_keeper_get(fs->keys);
	struct rewrap_result res;
	int ret = volkey_rewrap(inode_fd(inode_table_root(fs->inodes)), &fs->cfg, &set->keys, &res);

	kms_keeper_put(fs->keys, set);
	if (ret < 0)
		log_msg(LOG_ERR, "cannot re-wrap the volume key %s: %s", VOLKEY_NAME,
			ret == -EBADMSG	   ? "its record is corrupt"
			: ret == -ENOKEY    ? "it names a master key that is not this volume's"
			: ret == -EOVERFLOW ? "the new record does not fit its slot"
					    : kms_strerror(ret));
	else if (ret == 0)
		log_msg(LOG_INFO, "volume key %s from version %u to %u",
			res.moved ? "moved to the new KMS" : "re-wrapped", res.old_version,
			res.new_version);
	return ret < 0 ? (ret == -EBADMSG || ret == -ENOKEY || ret == -EOVERFLOW ? -EIO : ret) : 0;
}

/*
 * check_mac - the reloaded configuration @cfg must carry a valid MAC
 * (confmac.h) under the volume key, unwrapped through the providers in use.
 */
static int check_mac(struct envfs *fs, const struct volume_config *cfg, char *err, size_t err_len)
{
	const struct kms_set *set = kms_keeper_get(fs->keys);
	uint8_t *key = secmem_alloc(KMS_DEK_LEN);
	int ret = key ? volkey_load(inode_fd(inode_table_root(fs->inodes)), cfg, &set->keys, key, err,
				    err_len)
		      : -ENOMEM;

	kms_keeper_put(fs->keys, set);
	if (ret == 0 && confmac_verify(cfg, key) < 0) {
		ret = -EINVAL;
		snprintf(err, err_len, "[volume] mac does not match: it was not written by "
			 "envelopefsctl");
	}
	secmem_free(key, KMS_DEK_LEN);
	return ret;
}

/*
 * reload_kms - ENVELOPEFS_IOC_RELOAD_KMS: re-read the volume configuration
 * and make its providers the volume's (kmsset.h).  Its [volume] part must
 * be the mounted one's: the data depends on it.
 */
static int reload_kms(struct envfs *fs)
{
	struct volume_config cfg;
	char path[PATH_MAX], err[512];
	int ret;

	snprintf(path, sizeof(path), "%s/%s", fs->backing, VOLUME_CONFIG_NAME);
	ret = volume_config_load(path, &cfg, err, sizeof(err));
	if (ret == 0 && (memcmp(cfg.uuid, fs->cfg.uuid, 16) != 0 ||
			 cfg.block_size != fs->cfg.block_size || cfg.placement != fs->cfg.placement ||
			 cfg.header_size != fs->cfg.header_size ||
			 cfg.names_encrypted != fs->cfg.names_encrypted)) {
		ret = -EINVAL;
		snprintf(err, sizeof(err), "its [volume] section differs from the mounted volume's");
	}
	if (ret == 0 && volume_config_sealed(&cfg))
		ret = check_mac(fs, &cfg, err, sizeof(err));
	if (ret == 0)
		ret = kms_keeper_reload(fs->keys, cfg.ini, err, sizeof(err));
	volume_config_free(&cfg);
	if (ret < 0) {
		log_msg(LOG_ERR, "cannot reload the KMS settings of %s: %s", path, err);
		return ret == -ENOMEM ? ret : ret == -EINVAL ? -EINVAL : -EIO;
	}
	log_msg(LOG_NOTICE, "KMS settings of %s reloaded", fs->backing);
	return 0;
}

/* The rotation ioctls (fs/status.h); every other ioctl is not ours. */
static void ioctl_pinned(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
			 struct fuse_file_info *fi, unsigned flags, const void *in_buf,
			 size_t in_bufsz, size_t out_bufsz)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	int ret;

	(void)arg;
	(void)fi;
	(void)in_buf;
	(void)in_bufsz;
	(void)out_bufsz;
	bool scope_cmd = scope_ioctl_cmd(fs, in, cmd);

	if (flags & FUSE_IOCTL_COMPAT || (cmd != ENVELOPEFS_IOC_REWRAP && cmd != ENVELOPEFS_IOC_REKEY &&
					  cmd != ENVELOPEFS_IOC_RELOAD_KMS && !scope_cmd))
		ret = -ENOTTY;
	else if (fuse_req_ctx(req)->uid != 0)
		ret = -EPERM;
	else if (scope_cmd)
		ret = scope_ioctl(fs, in, cmd, in_buf, in_bufsz);
	else if (cmd == ENVELOPEFS_IOC_RELOAD_KMS)
		ret = is_root(fs, in) ? reload_kms(fs) : -EINVAL;
	else if (cmd == ENVELOPEFS_IOC_REWRAP && is_root(fs, in) && encrypted_names(fs))
		ret = rewrap_volume_key(fs);
	else
		ret = rotate_inode(fs, in, cmd == ENVELOPEFS_IOC_REKEY);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_ioctl(req, ret, NULL, 0); /* ioctl(2) returns it */
}

void envfs_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		 struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		 size_t in_bufsz, size_t out_bufsz)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	ioctl_pinned(req, ino, cmd, arg, fi, flags, in_buf, in_bufsz, out_bufsz);
	unpin(fs, in);
}
