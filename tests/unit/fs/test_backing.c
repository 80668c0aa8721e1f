// SPDX-License-Identifier: MIT
/*
 * fs/backing.c: the probe on a real directory (whatever file system /tmp
 * is, and, as root, tmpfs and ramfs mounted in a private mount namespace),
 * and the reports made from a probe.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "check.h"
#include "fs/backing.h"
#include "fs/volume.h"

static const char *const json_keys[] = {
	"\"fs\":",	    "\"fs_type\":",	 "\"shared\":",	    "\"rename_noreplace\":",
	"\"rename_exchange\":", "\"tmpfile\":",	 "\"user_xattr\":",   "\"holes_trusted\":",
	"\"fallocate\":",   "\"punch_hole\":",	 "\"file_handles\":", "\"posix_locks\":",
	"\"ofd_locks\":",   "\"flock\":",	 "\"xattr_max\":",
};

/* The caps of a backing that has everything. */
static struct backing_caps everything(void)
{
	return (struct backing_caps){
		.fs_type = 0xef53, .fs_name = "ext4", .rename_noreplace = true,
		.rename_exchange = true, .tmpfile = true, .user_xattr = true, .xattr_max = 4000,
		.holes_trusted = true, .fallocate = true, .punch_hole = true,
		.file_handles = true, .posix_locks = true, .ofd_locks = true, .flock = true,
	};
}

static bool nothing_missing(const struct backing_caps *c)
{
	return c->rename_noreplace && c->rename_exchange && c->tmpfile && c->user_xattr &&
	       c->holes_trusted && c->fallocate && c->punch_hole && c->file_handles &&
	       c->posix_locks && c->ofd_locks && c->flock;
}

/* Entries of directory @path besides "." and "..", or -1. */
static int count_entries(const char *path)
{
	DIR *dir = opendir(path);
	struct dirent *de;
	int n = 0;

	if (!dir)
		return -1;
	while ((de = readdir(dir)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(dir);
	return n;
}

/*
 * left_clean - the probe left @root holding only its own empty directory
 * (so that a mount never changes the root's times), which is removed here
 * so that the next probe makes it again.
 */
static bool left_clean(const char *root)
{
	char home[PATH_MAX];
	bool clean;

	snprintf(home, sizeof(home), "%s/%s", root, VOLUME_PROBE_DIR);
	clean = count_entries(root) == 1 && count_entries(home) == 0;
	return rmdir(home) == 0 && clean;
}

/* What holds of any probe's result, on any file system. */
static void check_report(const struct backing_caps *caps)
{
	char json[1024], lines[4096];
	size_t i, n;
	int len;

	CHECK(caps->fs_name != NULL);
	CHECK(caps->user_xattr == (caps->xattr_max > 0));
	CHECK(caps->xattr_max <= 65536);
	len = backing_caps_json(caps, json, sizeof(json));
	REQUIRE(len > 0);
	CHECK_EQ_INT(len, strlen(json));
	CHECK(json[0] == '{' && json[len - 1] == '}');
	for (i = 0; i < sizeof(json_keys) / sizeof(json_keys[0]); i++)
		CHECK(strstr(json, json_keys[i]) != NULL);
	n = backing_fallbacks(caps, lines, sizeof(lines));
	CHECK_EQ_INT(n, strlen(lines));
	CHECK((n == 0) == nothing_missing(caps));
	CHECK(n == 0 || lines[n - 1] == '\n');
	printf("#   %s\n", json);
}

/* probe_dir - probe @path through an fd opened with @flags; the probe's return. */
static int probe_dir(const char *path, int flags, struct backing_caps *caps)
{
	int fd = open(path, flags | O_DIRECTORY | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = backing_probe(fd, caps);
	close(fd);
	return ret;
}

static void test_probe_tmp(void)
{
	char root[] = "/tmp/envfs-backing-XXXXXX";
	struct backing_caps caps;
	struct statfs sfs;

	REQUIRE(mkdtemp(root) != NULL);
	REQUIRE(statfs(root, &sfs) == 0);
	/* The daemon holds its root as O_PATH, envelopefsctl as O_RDONLY. */
	CHECK_EQ_INT(probe_dir(root, O_PATH, &caps), 0);
	CHECK(left_clean(root));
	CHECK_EQ_INT(caps.fs_type, (long)sfs.f_type);
	check_report(&caps);
	CHECK_EQ_INT(probe_dir(root, O_RDONLY, &caps), 0);
	CHECK(left_clean(root));
	/* What every Linux disk file system has done for years. */
	if (strcmp(caps.fs_name, "ext4") == 0 || strcmp(caps.fs_name, "xfs") == 0 ||
	    strcmp(caps.fs_name, "btrfs") == 0) {
		CHECK(!caps.shared);
		CHECK(caps.rename_noreplace && caps.rename_exchange && caps.tmpfile);
		CHECK(caps.user_xattr && caps.xattr_max >= 2048);
		CHECK(caps.holes_trusted && caps.fallocate && caps.punch_hole);
		CHECK(caps.posix_locks && caps.ofd_locks && caps.flock);
	}
	CHECK(rmdir(root) == 0);
}

static void test_probe_fails_cleanly(void)
{
	struct backing_caps caps = everything();
	int fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);

	REQUIRE(fd >= 0);
	/* No scratch directory can be made there: every feature reads as missing. */
	CHECK(backing_probe(fd, &caps) < 0);
	CHECK_EQ_INT(caps.fs_type, 0x9fa0); /* PROC_SUPER_MAGIC: statfs still answered */
	CHECK(!caps.rename_noreplace && !caps.user_xattr && caps.xattr_max == 0);
	CHECK(!caps.holes_trusted && !caps.flock);
	close(fd);
	CHECK(backing_probe(-1, &caps) == -EBADF);
	CHECK(strcmp(caps.fs_name, "unknown") == 0);
}

static void test_fallbacks(void)
{
	struct backing_caps caps = everything();
	char out[4096], tiny[8];

	CHECK_EQ_INT(backing_fallbacks(&caps, out, sizeof(out)), 0);
	CHECK(out[0] == '\0');
	caps.rename_noreplace = false;
	caps.holes_trusted = false;
	CHECK_EQ_INT(backing_fallbacks(&caps, out, sizeof(out)), strlen(out));
	CHECK(strncmp(out, "renameat2 RENAME_NOREPLACE: missing; ", 37) == 0);
	CHECK(strstr(out, "\nSEEK_HOLE/SEEK_DATA: untrusted; ") != NULL);
	CHECK(strchr(out, '\n') != strrchr(out, '\n')); /* two lines */
	/* Truncated, always terminated. */
	CHECK_EQ_INT(backing_fallbacks(&caps, tiny, sizeof(tiny)), sizeof(tiny) - 1);
	CHECK(strncmp(tiny, out, sizeof(tiny) - 1) == 0 && tiny[sizeof(tiny) - 1] == '\0');
	CHECK_EQ_INT(backing_fallbacks(&caps, tiny, 0), 0);
	/* Every feature missing: one line each. */
	caps = (struct backing_caps){ .fs_name = "unknown" };
	backing_fallbacks(&caps, out, sizeof(out));
	size_t lines = 0;
	for (const char *p = out; (p = strchr(p, '\n')) != NULL; p++)
		lines++;
	CHECK_EQ_INT(lines, 11);
}

static void test_json(void)
{
	static const char want[] =
		"{\"fs\":\"glusterfs\",\"fs_type\":1702057286,\"shared\":true,"
		"\"rename_noreplace\":false,\"rename_exchange\":false,\"tmpfile\":false,"
		"\"user_xattr\":true,\"holes_trusted\":false,\"fallocate\":true,"
		"\"punch_hole\":true,\"file_handles\":true,\"posix_locks\":true,"
		"\"ofd_locks\":true,\"flock\":true,\"xattr_max\":65536}";
	struct backing_caps caps = everything();
	char out[sizeof(want)];
	size_t cap;

	caps.fs_type = 0x65735546;
	caps.fs_name = "glusterfs";
	caps.shared = true;
	caps.rename_noreplace = caps.rename_exchange = caps.tmpfile = false;
	caps.holes_trusted = false;
	caps.xattr_max = 65536;
	CHECK_EQ_INT(backing_caps_json(&caps, out, sizeof(out)), strlen(want));
	CHECK(strcmp(out, want) == 0);
	for (cap = 0; cap < sizeof(want); cap++)
		CHECK_EQ_INT(backing_caps_json(&caps, out, cap), -ENOSPC);
}

static void test_refusal(void)
{
	struct backing_caps caps = everything();
	const char *why;

	/* Key records in headers need nothing of the backing's xattrs. */
	caps.user_xattr = false;
	caps.xattr_max = 0;
	CHECK(backing_refusal(&caps, false, 700) == NULL);
	why = backing_refusal(&caps, true, 700);
	CHECK(why && strstr(why, "choose --header file"));
	/* A record must fit whole. */
	caps.user_xattr = true;
	caps.xattr_max = 600;
	why = backing_refusal(&caps, true, 601);
	CHECK(why && strstr(why, "choose --header file"));
	CHECK(backing_refusal(&caps, true, 600) == NULL);
	CHECK(backing_refusal(&caps, false, 601) == NULL);
}

/*
 * As root, in a mount namespace of its own: tmpfs (local; read-only it
 * cannot be probed but still names itself) and ramfs (no user xattrs, so
 * xattr key records are refused).
 */
static void test_probe_mounted(void)
{
	char root[] = "/tmp/envfs-backing-mnt-XXXXXX";
	struct backing_caps caps;

	if (geteuid() != 0 || unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		printf("#   skipped: needs root and a mount namespace\n");
		return;
	}
	REQUIRE(mkdtemp(root) != NULL);
	if (mount("envfs-test", root, "tmpfs", 0, "size=16m") == 0) {
		CHECK_EQ_INT(probe_dir(root, O_PATH, &caps), 0);
		CHECK(strcmp(caps.fs_name, "tmpfs") == 0 && !caps.shared);
		CHECK(caps.rename_noreplace && caps.rename_exchange);
		CHECK(left_clean(root));
		check_report(&caps);
		CHECK(mount(NULL, root, NULL, MS_REMOUNT | MS_RDONLY, NULL) == 0);
		CHECK_EQ_INT(probe_dir(root, O_PATH, &caps), -EROFS);
		CHECK(strcmp(caps.fs_name, "tmpfs") == 0 && !caps.rename_noreplace);
		CHECK(umount(root) == 0);
	}
	if (mount("envfs-test", root, "ramfs", 0, NULL) == 0) {
		CHECK_EQ_INT(probe_dir(root, O_PATH, &caps), 0);
		CHECK(strcmp(caps.fs_name, "ramfs") == 0);
		CHECK(!caps.user_xattr && caps.xattr_max == 0);
		CHECK(backing_refusal(&caps, true, 100) != NULL);
		CHECK(left_clean(root));
		check_report(&caps);
		CHECK(umount(root) == 0);
	}
	CHECK(rmdir(root) == 0);
}

int main(void)
{
	RUN(test_probe_tmp);
	RUN(test_probe_fails_cleanly);
	RUN(test_fallbacks);
	RUN(test_json);
	RUN(test_refusal);
	RUN(test_probe_mounted);
	return check_summary();
}
