// SPDX-License-Identifier: MIT
/*
 * The rename fallbacks of fs/backing_rename.c, run on a local directory
 * with the capabilities a GlusterFS or FUSE backing reports (no renameat2
 * flags): a new name is claimed without ever replacing an entry, and an
 * exchange is refused.  The same calls with the flags present go to the
 * backing's renameat2, checked once each for the same outcome.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fs/backing_rename.h"

static const struct backing_caps without = {.fs_name = "test"};
static const struct backing_caps with = {
	.fs_name = "test", .rename_noreplace = true, .rename_exchange = true};

static char root[] = "/tmp/envfs-brename-XXXXXX";
static int dfd = -1;

static void put(const char *name, const char *text)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd >= 0) {
		if (write(fd, text, strlen(text)) < 0)
			perror(name);
		close(fd);
	}
}

static int read_back(const char *name, char *out, size_t cap)
{
	int fd = openat(dfd, name, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, out, cap - 1);

	if (fd >= 0)
		close(fd);
	out[n < 0 ? 0 : n] = '\0';
	return n < 0 ? -1 : 0;
}

static bool exists(const char *name)
{
	struct stat st;

	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* A directory with one entry in it, as every encrypted-names directory holds its ID. */
static void make_full_dir(const char *name)
{
	char inside[256];

	mkdirat(dfd, name, 0700);
	snprintf(inside, sizeof(inside), "%s/id", name);
	put(inside, "id");
}

static void remove_tree(const char *name)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s/%s'", root, name);
	if (system(cmd) != 0)
		perror(cmd);
}

static void test_file_to_free_name(void)
{
	char text[16];

	put("a", "A");
	CHECK_EQ_INT(backing_rename_noreplace(&without, dfd, "a", dfd, "b", false, false), 0);
	CHECK(!exists("a"));
	CHECK(read_back("b", text, sizeof(text)) == 0 && strcmp(text, "A") == 0);
	unlinkat(dfd, "b", 0);
}

static void test_file_never_replaces(void)
{
	const struct backing_caps *caps[] = {&without, &with};
	char text[16];

	for (int i = 0; i < 2; i++) {
		put("a", "A");
		put("b", "B");
		CHECK_EQ_INT(backing_rename_noreplace(caps[i], dfd, "a", dfd, "b", false, false),
			     -EEXIST);
		CHECK(read_back("a", text, sizeof(text)) == 0 && strcmp(text, "A") == 0);
		CHECK(read_back("b", text, sizeof(text)) == 0 && strcmp(text, "B") == 0);
		unlinkat(dfd, "a", 0);
		unlinkat(dfd, "b", 0);
	}
}

static void test_symlink_moves_as_itself(void)
{
	char target[16] = "";
	ssize_t n;

	CHECK(symlinkat("nowhere", dfd, "l") == 0);
	CHECK_EQ_INT(backing_rename_noreplace(&without, dfd, "l", dfd, "m", false, false), 0);
	n = readlinkat(dfd, "m", target, sizeof(target) - 1);
	CHECK(n == 7 && strncmp(target, "nowhere", 7) == 0);
	CHECK(!exists("l"));
	unlinkat(dfd, "m", 0);
}

/* Encrypted names: directories are never empty, so rename(2) cannot replace one. */
static void test_dir_never_empty(void)
{
	make_full_dir("d");
	make_full_dir("e");
	put("f", "F");
	CHECK_EQ_INT(backing_rename_noreplace(&without, dfd, "d", dfd, "e", true, true), -EEXIST);
	CHECK_EQ_INT(backing_rename_noreplace(&without, dfd, "d", dfd, "f", true, true), -EEXIST);
	CHECK(exists("d/id") && exists("e/id") && exists("f"));
	CHECK_EQ_INT(backing_rename_noreplace(&without, dfd, "d", dfd, "g", true, true), 0);
	CHECK(exists("g/id") && !exists("d"));
	remove_tree("e");
	remove_tree("g");
	unlinkat(dfd, "f", 0);
}

/* Plain names: an empty directory may be the target, so a placeholder claims the name. */
static void test_dir_with_placeholder(void)
{
	make_full_dir("d");
	mkdirat(dfd, "empty", 0700);
	CHECK_EQ_INT(backing_rename_noreplace(&without, dfd, "d", dfd, "empty", true, false), -EEXIST);
	CHECK(exists("d/id") && exists("empty") && !exists("empty/id"));
	CHECK_EQ_INT(backing_rename_noreplace(&without, dfd, "d", dfd, "new", true, false), 0);
	CHECK(exists("new/id") && !exists("d"));
	remove_tree("new");
	unlinkat(dfd, "empty", AT_REMOVEDIR);
}

static void test_exchange_refused_without_the_flag(void)
{
	char text[16];

	put("a", "A");
	put("b", "B");
	CHECK_EQ_INT(backing_rename_exchange(&without, dfd, "a", dfd, "b"), -EINVAL);
	CHECK(read_back("a", text, sizeof(text)) == 0 && strcmp(text, "A") == 0);
	CHECK_EQ_INT(backing_rename_exchange(&with, dfd, "a", dfd, "b"), 0);
	CHECK(read_back("a", text, sizeof(text)) == 0 && strcmp(text, "B") == 0);
	unlinkat(dfd, "a", 0);
	unlinkat(dfd, "b", 0);
}

int main(void)
{
	if (!mkdtemp(root) || (dfd = open(root, O_RDONLY | O_DIRECTORY)) < 0) {
		perror(root);
		return 1;
	}
	RUN(test_file_to_free_name);
	RUN(test_file_never_replaces);
	RUN(test_symlink_moves_as_itself);
	RUN(test_dir_never_empty);
	RUN(test_dir_with_placeholder);
	RUN(test_exchange_refused_without_the_flag);
	close(dfd);
	rmdir(root);
	return check_summary();
}
