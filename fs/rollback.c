/* SPDX-License-Identifier: MIT */
/* Per-host versions of files: see rollback.h. */
#include "rollback.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/hex.h"
#include "envfs.h"
#include "hoststate.h"
#include "log.h"

#define VERSIONS_DIR "versions"

struct rollback {
	char dir[PATH_MAX - 64]; /* ROOT/<uuid>/versions, with room for an entry below */
	atomic_uint tmp_seq; /* names the temporary files of concurrent notes */
};

int rollback_open(const char *root, const uint8_t uuid[16], struct rollback **out)
{
	struct rollback *rb = calloc(1, sizeof(*rb));
	int ret;

	if (!rb)
		return -ENOMEM;
	ret = hoststate_volume_file(root, uuid, VERSIONS_DIR, 1, rb->dir, sizeof(rb->dir));
	if (ret == 0 && mkdir(rb->dir, 0700) < 0 && errno != EEXIST)
		ret = -errno;
	if (ret < 0) {
		free(rb);
		return ret;
	}
	*out = rb;
	return 0;
}

void rollback_close(struct rollback *rb)
{
	free(rb);
}

/* entry_path - ROOT/<uuid>/versions/<2 hex>[/<30 hex>] of @file_id into @out. */
static void entry_path(const struct rollback *rb, const uint8_t *file_id, bool file,
		       char out[PATH_MAX])
{
	char hex[2 * RECORD_FILE_ID_LEN + 1];

	hex_encode(file_id, RECORD_FILE_ID_LEN, hex);
	snprintf(out, PATH_MAX, "%s/%.2s%s%s", rb->dir, hex, file ? "/" : "", file ? hex + 2 : "");
}

uint64_t rollback_seen(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN])
{
	char path[PATH_MAX], text[24], *end;
	uint64_t version;
	ssize_t n;
	int fd;

	entry_path(rb, file_id, true, path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	version = strtoull(text, &end, 10);
	/* A torn or foreign file is no knowledge: it can only miss a rollback. */
	return *end == '\n' ? version : 0;
}

int rollback_note(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN],
		  uint64_t version)
{
	char path[PATH_MAX], tmp[PATH_MAX + 32], text[24];
	int fd, len, ret = 0;

	if (version <= rollback_seen(rb, file_id))
		return 0;
	entry_path(rb, file_id, false, path);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	entry_path(rb, file_id, true, path);
	snprintf(tmp, sizeof(tmp), "%s.%d.%u", path, (int)getpid(),
		 atomic_fetch_add(&rb->tmp_seq, 1));
	len = snprintf(text, sizeof(text), "%" PRIu64 "\n", version);
	/* No sync: a version lost in a host crash only misses a rollback. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, text, (size_t)len) != len)
		ret = -EIO;
	close(fd);
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0)
		unlink(tmp);
	return ret;
}

int rollback_check(struct envfs *fs, struct inode *in, const struct key_record *rec)
{
	uint64_t seen;

	if (!fs->rollback || !record_tags_v3(&fs->cfg))
		return 0;
	seen = rollback_seen(fs->rollback, rec->file_id);
	if (rec->file_version >= seen)
		return 0;
	log_ratelimited(LOG_ERR, "inode %llu: its key record is version %llu, and this host saw "
				 "version %llu: the storage rolled the file back; returning EIO",
			(unsigned long long)in->ino, (unsigned long long)rec->file_version,
			(unsigned long long)seen);
	atomic_fetch_add(&fs->counters.integrity_errors, 1);
	return -EIO;
}

void rollback_adopt(struct envfs *fs, const struct key_record *rec)
{
	if (fs->rollback && record_tags_v3(&fs->cfg) && rec->file_version)
		rollback_note(fs->rollback, rec->file_id, rec->file_version);
}
