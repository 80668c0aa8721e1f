/* SPDX-License-Identifier: MIT */
/* The volume epoch: see volepoch.h. */
#include "volepoch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/kdf.h"
#include "crypto/secmem.h"
#include "hoststate.h"
#include "layout.h"
#include "ofdlock.h"
#include "volkey.h"

/* The byte of the volume key file whose OFD lock serialises raises. */
#define EPOCHLOCK_OFFSET (LOCKS_RESERVED_START - 1)

struct volepoch {
	uint8_t *key; /* K, 32 bytes of secmem */
	uint8_t uuid[16];
	char backing[PATH_MAX];
	char state_root[PATH_MAX];
	bool lock;
};

int volepoch_key(const uint8_t *volume_key, const uint8_t uuid[16], uint8_t key[32])
{
	return crypto_hkdf_sha256(volume_key, 32, uuid, 16, VOLEPOCH_INFO, strlen(VOLEPOCH_INFO),
				  key, 32);
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

int volepoch_encode(const uint8_t key[32], uint64_t epoch, uint8_t out[VOLEPOCH_LEN])
{
	memcpy(out, VOLEPOCH_MAGIC, 4);
	out[4] = 1;
	put_be64(out + 5, epoch);
	return crypto_hmac_sha256(key, 32, out, VOLEPOCH_HEAD_LEN, out + VOLEPOCH_HEAD_LEN);
}

int volepoch_decode(const uint8_t key[32], const uint8_t *buf, size_t len, uint64_t *epoch)
{
	uint8_t mac[SHA256_LEN];

	if (len != VOLEPOCH_LEN || memcmp(buf, VOLEPOCH_MAGIC, 4) != 0 || buf[4] != 1)
		return -EBADMSG;
	if (crypto_hmac_sha256(key, 32, buf, VOLEPOCH_HEAD_LEN, mac) < 0)
		return -EIO;
	if (!crypto_memeq(mac, buf + VOLEPOCH_HEAD_LEN, sizeof(mac)))
		return -EBADMSG;
	*epoch = get_be64(buf + 5);
	return 0;
}

int volepoch_read(int backing_fd, const uint8_t key[32], uint64_t *epoch)
{
	uint8_t buf[VOLEPOCH_LEN + 1];
	size_t got = 0;
	int fd = openat(backing_fd, VOLEPOCH_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = layout_pread_upto(fd, buf, sizeof(buf), 0, &got);
	close(fd);
	return ret < 0 ? ret : volepoch_decode(key, buf, got, epoch);
}

/* write_file - replace the epoch file with @epoch, crash-safely (volepoch.h).  0 or -errno. */
static int write_file(int dirfd, const uint8_t key[32], uint64_t epoch)
{
	uint8_t buf[VOLEPOCH_LEN];
	int fd, ret = volepoch_encode(key, epoch, buf);

	if (ret < 0)
		return ret;
	unlinkat(dirfd, VOLEPOCH_TMP, 0); /* left by a crash in an earlier raise */
	fd = openat(dirfd, VOLEPOCH_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	ret = layout_pwrite_full(fd, buf, sizeof(buf), 0);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret == 0 && renameat(dirfd, VOLEPOCH_TMP, dirfd, VOLEPOCH_NAME) < 0)
		ret = -errno;
	if (ret < 0) {
		unlinkat(dirfd, VOLEPOCH_TMP, 0);
		return ret;
	}
	return fsync(dirfd) < 0 ? -errno : 0;
}

int volepoch_host_seen(const char *state_root, const uint8_t uuid[16], uint64_t *seen)
{
	char path[PATH_MAX], text[32], *end;
	long n;
	int ret = hoststate_volume_file(state_root, uuid, VOLEPOCH_HOST_NAME, 0, path,
					sizeof(path));

	if (ret < 0)
		return ret;
	n = hoststate_read(path, text, sizeof(text));
	if (n < 0)
		return (int)n;
	*seen = strtoull(text, &end, 10);
	/* Written atomically (hoststate.h): anything else is not ours. */
	return *end == '\n' && end != text ? 0 : -EBADMSG;
}

static int host_note(const struct volepoch *e, uint64_t epoch)
{
	char path[PATH_MAX], text[32];
	int len, ret = hoststate_volume_file(e->state_root, e->uuid, VOLEPOCH_HOST_NAME, 1, path,
					     sizeof(path));

	if (ret < 0)
		return ret;
	len = snprintf(text, sizeof(text), "%" PRIu64 "\n", epoch);
	return hoststate_write(path, text, (size_t)len);
}

int volepoch_open(const char *backing, const uint8_t uuid[16], const uint8_t *volume_key,
		  const char *state_root, bool lock, struct volepoch **out)
{
	struct volepoch *e = calloc(1, sizeof(*e));
	int ret;

	if (!e)
		return -ENOMEM;
	e->key = secmem_alloc(32);
	ret = e->key ? volepoch_key(volume_key, uuid, e->key) : -ENOMEM;
	if (ret == 0 && ((size_t)snprintf(e->backing, sizeof(e->backing), "%s", backing) >=
			 sizeof(e->backing) ||
			 (size_t)snprintf(e->state_root, sizeof(e->state_root), "%s", state_root) >=
			 sizeof(e->state_root)))
		ret = -ENAMETOOLONG;
	if (ret < 0) {
		volepoch_close(e);
		return ret;
	}
	memcpy(e->uuid, uuid, 16);
	e->lock = lock;
	*out = e;
	return 0;
}

/*
 * raise_locked - volepoch_raise() with the lock (if any) held, through
 * @dirfd on the backing root.
 */
static int raise_locked(struct volepoch *e, int dirfd, enum volepoch_raise how, char *err,
			size_t err_len)
{
	uint64_t epoch = 0, seen = 0, next, theirs, ours;
	int found = volepoch_read(dirfd, e->key, &epoch);
	int known = how == VOLEPOCH_ACCEPT ? -ENOENT : volepoch_host_seen(e->state_root, e->uuid, &seen);
	int ret;

	if (found < 0 && found != -ENOENT && found != -EBADMSG) {
		snprintf(err, err_len, "cannot read %s: %s", VOLEPOCH_NAME, strerror(-found));
		return found;
	}
	if (how == VOLEPOCH_MOUNT && known == 0 && (found < 0 || epoch < seen)) {
		if (found < 0)
			snprintf(err, err_len, "%s is %s, and this host saw epoch %" PRIu64,
				 VOLEPOCH_NAME, found == -ENOENT ? "missing" : "not authentic",
				 seen);
		else
			snprintf(err, err_len, "its epoch is %" PRIu64 " and this host saw %" PRIu64,
				 epoch, seen);
		return -ESTALE;
	}
	/* Past the volume's and this host's: a raise never goes back. */
	theirs = found == 0 ? epoch : 0;
	ours = known == 0 ? seen : 0;
	next = theirs > ours ? theirs : ours;
	if (next == UINT64_MAX) {
		snprintf(err, err_len, "%s is at its highest value", VOLEPOCH_NAME);
		return -EOVERFLOW;
	}
	next++;
	ret = write_file(dirfd, e->key, next);
	/* Only a durable epoch is noted: a crash never leaves the host ahead. */
	if (ret == 0)
		ret = host_note(e, next);
	if (ret < 0)
		snprintf(err, err_len, "cannot raise %s: %s", VOLEPOCH_NAME, strerror(-ret));
	return ret;
}

int volepoch_raise(struct volepoch *e, enum volepoch_raise how, char *err, size_t err_len)
{
	int dirfd = open(e->backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC), lock_fd = -1, ret = 0;

	if (dirfd < 0) {
		ret = -errno;
		snprintf(err, err_len, "cannot open %s: %s", e->backing, strerror(-ret));
		return ret;
	}
	lock_fd = openat(dirfd, VOLKEY_NAME, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	ret = lock_fd < 0 ? -errno : ofd_lock(lock_fd, F_WRLCK, EPOCHLOCK_OFFSET, 1, true);
	/* A backing without OFD locks has one daemon at a time (shared.h), but
	 * for an unmount's raise that may still be finishing as the next mount
	 * raises: fine, as long as the two never run at once. */
	if (ret < 0 && !e->lock && (ret == -EINVAL || ret == -ENOLCK || ret == -EOPNOTSUPP))
		ret = 0;
	/* A read-only backing: checked below, and nobody raises it. */
	if (ret == -EROFS)
		ret = 0;
	if (ret < 0)
		snprintf(err, err_len, "cannot lock %s: %s", VOLKEY_NAME, strerror(-ret));
	if (ret == 0)
		ret = raise_locked(e, dirfd, how, err, err_len);
	if (lock_fd >= 0)
		close(lock_fd); /* drops the lock */
	close(dirfd);
	return ret;
}

void volepoch_close(struct volepoch *e)
{
	if (!e)
		return;
	secmem_free(e->key, 32);
	free(e);
}
