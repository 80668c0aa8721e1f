// SPDX-License-Identifier: MIT
/* The per-host state directory: see hoststate.h. */
#include "hoststate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/hex.h"
#include "crypto/kdf.h"
#include "fs/volume.h"
#include "kms/config.h"

static int put(char *out, size_t out_len, const char *fmt, const char *a, const char *b)
{
	return (size_t)snprintf(out, out_len, fmt, a, b) >= out_len ? -ENAMETOOLONG : 0;
}

int hoststate_root(const char *option, char *out, size_t out_len)
{
	const char *env = getenv(HOSTSTATE_ENV), *home;

	if (option && *option)
		return put(out, out_len, "%s%s", option, "");
	if (env && *env)
		return put(out, out_len, "%s%s", env, "");
	if (geteuid() == 0)
		return put(out, out_len, "%s%s", HOSTSTATE_SYSTEM_ROOT, "");
	env = getenv("XDG_STATE_HOME");
	if (env && *env == '/')
		return put(out, out_len, "%s%s", env, "/envelopefs");
	home = getenv("HOME");
	if (!home || *home != '/')
		return -ENOENT;
	return put(out, out_len, "%s%s", home, "/.local/state/envelopefs");
}

/* make_dir - mkdir @path 0700 unless it exists (as a directory).  0 or -errno. */
static int make_dir(const char *path)
{
	struct stat st;

	if (mkdir(path, 0700) == 0)
		return config_fsync_dir_of(path);
	if (errno != EEXIST)
		return -errno;
	if (stat(path, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* in_subdir - @out = ROOT/@sub/@name, making ROOT and ROOT/@sub when @create. */
static int in_subdir(const char *root, const char *sub, const char *name, int create, char *out,
		     size_t out_len)
{
	int ret;

	if (create) {
		/* The root's parent (/var/lib, ~/.local/state) may be missing too. */
		ret = put(out, out_len, "%s%s", root, "");
		if (ret == 0) {
			char *slash = strrchr(out, '/');

			if (slash && slash != out) {
				*slash = '\0';
				mkdir(out, 0755);
			}
			ret = make_dir(root);
		}
		if (ret < 0)
			return ret;
		if ((size_t)snprintf(out, out_len, "%s/%s", root, sub) >= out_len)
			return -ENAMETOOLONG;
		ret = make_dir(out);
		if (ret < 0)
			return ret;
	}
	return (size_t)snprintf(out, out_len, "%s/%s/%s", root, sub, name) >= out_len
		       ? -ENAMETOOLONG
		       : 0;
}

int hoststate_volume_file(const char *root, const uint8_t uuid[16], const char *name,
			  int create, char *out, size_t out_len)
{
	char text[37];

	uuid_format(uuid, text);
	return in_subdir(root, text, name, create, out, out_len);
}

int hoststate_path_file(const char *root, const char *backing, int create, char *out,
			size_t out_len)
{
	uint8_t digest[SHA256_LEN];
	char name[2 * SHA256_LEN + 1];
	int ret = crypto_sha256(backing, strlen(backing), digest);

	if (ret < 0)
		return ret;
	hex_encode(digest, sizeof(digest), name);
	return in_subdir(root, HOSTSTATE_BY_PATH, name, create, out, out_len);
}

long hoststate_read(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	while (got < cap) {
		ssize_t n = read(fd, buf + got, cap - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int ret = -errno;

			close(fd);
			return ret;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got == cap)
		return -EFBIG;
	buf[got] = '\0';
	return (long)got;
}

int hoststate_write(const char *path, const void *data, size_t len)
{
	char tmp[4200];
	size_t done = 0;
	int fd, ret = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp); /* left by a crash in an earlier write */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	while (ret == 0 && done < len) {
		ssize_t n = write(fd, (const char *)data + done, len - done);

		if (n < 0 && errno != EINTR)
			ret = -errno;
		else if (n > 0)
			done += (size_t)n;
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0) {
		unlink(tmp);
		return ret;
	}
	return config_fsync_dir_of(path);
}
