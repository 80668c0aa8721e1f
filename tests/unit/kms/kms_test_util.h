/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TESTS_KMS_UTIL_H
#define ENVELOPEFS_TESTS_KMS_UTIL_H

/* Small file helpers shared by the kms/ unit tests. */

#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * The Debian interpreter that has python3-cryptography and friends.  Exec it
 * with this same path as argv[0]: given a bare "python3", Python looks the
 * name up on PATH to find its prefix, and an earlier python3 there (pyenv, a
 * virtualenv) would lend it a standard library without those packages.
 */
#define TEST_PYTHON "/usr/bin/python3"

static char test_dir[256];

__attribute__((unused)) static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

__attribute__((unused)) static void test_dir_cleanup(void)
{
	if (test_dir[0])
		nftw(test_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* test_dir_make - a fresh private directory, removed at exit. */
__attribute__((unused)) static const char *test_dir_make(void)
{
	snprintf(test_dir, sizeof(test_dir), "/tmp/envfs-kms-test-XXXXXX");
	if (!mkdtemp(test_dir)) {
		perror("mkdtemp");
		exit(2);
	}
	atexit(test_dir_cleanup);
	return test_dir;
}

/* test_path - @name inside the test directory (a static buffer per call site slot). */
__attribute__((unused)) static char *test_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", test_dir, name);
	return buf;
}

/* read_all - whole file into a malloc'd buffer; NULL on error. */
__attribute__((unused)) static uint8_t *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc(n > 0 ? (size_t)n : 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* write_all - replace @path with @len bytes, mode @mode.  0 or -1. */
__attribute__((unused)) static int write_all(const char *path, const void *buf, size_t len, mode_t mode)
{
	int fd;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
	if (fd < 0)
		return -1;
	if (write(fd, buf, len) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	fchmod(fd, mode);
	close(fd);
	return 0;
}

#endif
