/* SPDX-License-Identifier: MIT */
/* The volume key file: see volkey.h. */
#include "volkey.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/secmem.h"

static void context_of(const struct volume_config *cfg, struct kms_context *ctx)
{
	memcpy(ctx->volume_uuid, cfg->uuid, sizeof(ctx->volume_uuid));
	memcpy(ctx->file_id, VOLKEY_FILE_ID, sizeof(ctx->file_id));
}

static void layout_for(uint32_t slot_size, struct layout *l)
{
	memset(l, 0, sizeof(*l));
	l->placement = PLACEMENT_HEADER;
	l->slot_size = slot_size;
	l->data_offset = 2 * slot_size;
}

int volkey_layout(int fd, struct layout *l)
{
	uint32_t hi = (uint32_t)slot_size_for(RECORD_MAX_KEY_REF, RECORD_MAX_WRAPPED);
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size == 0 || st.st_size % (2 * SLOT_ALIGN) ||
	    st.st_size > 2 * (off_t)hi)
		return -EBADMSG;
	layout_for((uint32_t)st.st_size / 2, l);
	return 0;
}

int volkey_open(int backing_fd, int flags, struct layout *l)
{
	int fd = openat(backing_fd, VOLKEY_NAME, flags | O_NOFOLLOW | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = volkey_layout(fd, l);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return fd;
}

int volkey_create(int backing_fd, const struct volume_config *cfg, struct kms *kms,
		  uint8_t *key_out)
{
	struct key_record *rec = calloc(1, sizeof(*rec));
	uint8_t *key = secmem_alloc(KMS_DEK_LEN);
	struct record_pos pos = {.seq = 0, .slot = -1};
	struct kms_context ctx;
	struct layout l;
	size_t blob_len;
	int fd = -1, ret;

	if (!rec || !key) {
		ret = -ENOMEM;
		goto out;
	}
	context_of(cfg, &ctx);
	ret = kms_generate(kms, &ctx, key, rec->wrapped, sizeof(rec->wrapped), &blob_len,
			   &rec->key_version);
	if (ret < 0)
		goto out;
	rec->wrapped_len = (uint16_t)blob_len;
	memcpy(rec->file_id, VOLKEY_FILE_ID, sizeof(rec->file_id));
	snprintf(rec->key_ref, sizeof(rec->key_ref), "%s", kms->key_ref);
	ret = record_seal_mac(rec, key, cfg->uuid);
	if (ret < 0)
		goto out;
	layout_for((uint32_t)slot_size_for(strlen(kms->key_ref), kms->max_blob_len), &l);
	fd = openat(backing_fd, VOLKEY_NAME, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = layout_write_record(&l, fd, rec, &pos);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (ret == 0 && fsync(backing_fd) < 0)
		ret = -errno;
	if (ret < 0)
		unlinkat(backing_fd, VOLKEY_NAME, 0);
out:
	if (fd >= 0)
		close(fd);
	if (ret == 0 && key_out)
		memcpy(key_out, key, KMS_DEK_LEN);
	secmem_free(key, KMS_DEK_LEN);
	free(rec);
	return ret;
}

int volkey_load(int backing_fd, const struct volume_config *cfg, const struct kms_pair *keys,
		uint8_t *key, char *err, size_t err_len)
{
	struct key_record *rec = malloc(sizeof(*rec));
	struct kms_context ctx;
	struct kms *kms;
	struct layout l;
	int fd, ret;

	if (!rec)
		return -ENOMEM;
	fd = volkey_open(backing_fd, O_RDONLY, &l);
	ret = fd < 0 ? fd : layout_read_record(&l, fd, rec, NULL);
	if (fd >= 0)
		close(fd);
	if (ret == -ENOENT) {
		snprintf(err, err_len, "the volume key %s is missing: restore it from a backup of "
			 "the backing directory", VOLKEY_NAME);
		goto out;
	}
	if (ret == 0 && memcmp(rec->file_id, VOLKEY_FILE_ID, sizeof(rec->file_id)) != 0)
		ret = -EBADMSG;
	if (ret < 0) {
		snprintf(err, err_len, "the volume key %s is unreadable or corrupt: %s", VOLKEY_NAME,
			 strerror(ret == -ENODATA ? EBADMSG : -ret));
		goto out;
	}
	kms = kms_pair_for(keys, rec->key_ref);
	if (!kms) {
		ret = -ENOKEY;
		snprintf(err, err_len, "the volume key %s is wrapped by master key %s, which is not "
			 "this volume's (%s%s%s)", VOLKEY_NAME, rec->key_ref, keys->current->key_ref,
			 keys->previous ? " or " : "", keys->previous ? keys->previous->key_ref : "");
		goto out;
	}
	context_of(cfg, &ctx);
	ret = kms_unwrap(kms, &ctx, rec->wrapped, rec->wrapped_len, key);
	if (ret < 0) {
		snprintf(err, err_len, "cannot unwrap the volume key %s with master key %s version "
			 "%u: %s", VOLKEY_NAME, rec->key_ref, rec->key_version, kms_strerror(ret));
		goto out;
	}
	if (record_check_mac(rec, key, cfg->uuid) != 0) {
		ret = -EBADMSG;
		snprintf(err, err_len, "the volume key %s fails authentication: its record was "
			 "tampered with", VOLKEY_NAME);
	}
out:
	if (ret < 0)
		secmem_wipe(key, KMS_DEK_LEN);
	free(rec);
	return ret;
}

/* fsync_dir - make the entries of the directory @dirfd durable; it may be O_PATH (the daemon's). */
static int fsync_dir(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/*
 * grow - give the key file slots of @slot_size bytes, holding its current
 * record: a new file is written beside it, synced and renamed over it, so a
 * crash leaves the old file or the new one, each with the same valid record.
 * @fd: the key file (layout @l).  0 or -errno.
 */
static int grow(int backing_fd, int fd, const struct layout *l, uint32_t slot_size)
{
	struct key_record *rec = malloc(sizeof(*rec));
	struct record_pos pos = {.seq = 0, .slot = -1};
	struct layout big;
	char tmp[sizeof(VOLKEY_NAME) + 16];
	int tfd = -1, ret;

	if (!rec)
		return -ENOMEM;
	ret = layout_read_record(l, fd, rec, NULL);
	snprintf(tmp, sizeof(tmp), "%s.tmp", VOLKEY_NAME);
	unlinkat(backing_fd, tmp, 0); /* left by a crash: never the key file itself */
	if (ret == 0) {
		tfd = openat(backing_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		ret = tfd < 0 ? -errno : 0;
	}
	layout_for(slot_size, &big);
	if (ret == 0)
		ret = layout_write_record(&big, tfd, rec, &pos);
	if (ret == 0 && fsync(tfd) < 0)
		ret = -errno;
	if (ret == 0 && renameat(backing_fd, tmp, backing_fd, VOLKEY_NAME) < 0)
		ret = -errno;
	if (ret == 0)
		ret = fsync_dir(backing_fd);
	if (tfd >= 0) {
		close(tfd);
		if (ret < 0)
			unlinkat(backing_fd, tmp, 0);
	}
	free(rec);
	return ret;
}

/* One re-wrap of the volume key at a time: a growth renames the file under a writer's fd. */
static pthread_mutex_t rewrap_lock = PTHREAD_MUTEX_INITIALIZER;

int volkey_rewrap(int backing_fd, const struct volume_config *cfg, const struct kms_pair *keys,
		  struct rewrap_result *res)
{
	uint32_t need = (uint32_t)slot_size_for(strlen(keys->current->key_ref),
						keys->current->max_blob_len);
	struct layout l;
	int fd, ret = 0;

	pthread_mutex_lock(&rewrap_lock);
	fd = volkey_open(backing_fd, O_RDWR, &l);
	/* Moved to a KMS with larger blobs: the file (unlike a file's header) can grow. */
	if (fd >= 0 && need > l.slot_size) {
		ret = grow(backing_fd, fd, &l, need);
		close(fd);
		fd = ret < 0 ? ret : volkey_open(backing_fd, O_RDWR, &l);
	}
	if (fd >= 0) {
		ret = rewrap_file(&l, keys, cfg->uuid, fd, NULL, res);
		close(fd);
	} else {
		ret = fd;
	}
	pthread_mutex_unlock(&rewrap_lock);
	return ret;
}
