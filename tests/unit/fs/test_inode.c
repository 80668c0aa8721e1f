// SPDX-License-Identifier: MIT
/*
 * The inode table over the descriptor cache (fs/inode.c, fs/fdcache.c), on
 * real files in /tmp: the number of open inode descriptors never passes
 * max_fds however many inodes are known, a pinned fd stays open and right,
 * an evicted one comes back by its file handle, and an entry whose backing
 * inode number was taken by another file is not handed out for it.  Needs
 * open_by_handle_at (root, CAP_DAC_READ_SEARCH), as the daemon does.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fs/inode.h"
#include "fs/inode_evict.h"

#define MAX_FDS 16
#define FILES 200

static char root[] = "/tmp/envfs-inode-XXXXXX";
static int root_fd = -1;

static int make_file(const char *name, const char *text)
{
	int fd = openat(root_fd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || write(fd, text, strlen(text)) < 0)
		return -1;
	close(fd);
	return 0;
}

/* The inode of @name added to @t (one reference), as a lookup adds it. */
static struct inode *add(struct inode_table *t, const char *name, struct stat *st)
{
	int fd = openat(root_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 || fstat(fd, st) < 0)
		return NULL;
	return inode_lookup_or_add(t, fd, st);
}

/* Descriptors this process has open now. */
static int open_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 4096; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

/* @in's backing file, read through a pinned fd. */
static int read_through(struct inode_table *t, struct inode *in, char *out, size_t cap)
{
	char path[64];
	ssize_t n;
	int fd;

	if (inode_pin(t, in) < 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", inode_fd(in));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	inode_unpin(t, in);
	if (fd < 0)
		return -1;
	n = read(fd, out, cap - 1);
	close(fd);
	out[n < 0 ? 0 : n] = '\0';
	return n < 0 ? -1 : 0;
}

static void test_bounded(void)
{
	static struct inode *ins[FILES];
	struct inode_table *t;
	char name[32], text[32], got[32];
	struct stat st;
	int base = open_fds(), fd;

	fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	REQUIRE(fd >= 0 && inode_table_create(fd, MAX_FDS, &t) == 0);
	REQUIRE(inode_fds_bounded(t));
	for (int i = 0; i < FILES; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		snprintf(text, sizeof(text), "text %d", i);
		REQUIRE(make_file(name, text) == 0);
		ins[i] = add(t, name, &st);
		REQUIRE(ins[i]);
		/* The root's fd, the cache's mount fd, and at most MAX_FDS. */
		CHECK(inode_open_fds(t) <= MAX_FDS + 1);
		CHECK(open_fds() <= base + 2 + MAX_FDS + 1);
	}
	CHECK_EQ_INT(inode_count(t), FILES);
	/* A second lookup of a file whose fd was closed finds the same inode. */
	ins[0] = add(t, "f0", &st);
	CHECK(ins[0] == add(t, "f0", &st));
	/* Every inode reaches its own file, its fd reopened by handle. */
	for (int i = 0; i < FILES; i++) {
		snprintf(text, sizeof(text), "text %d", i);
		CHECK(read_through(t, ins[i], got, sizeof(got)) == 0 && strcmp(got, text) == 0);
	}
	/* Pinned fds stay open past the bound, and the bound holds again after. */
	for (int i = 0; i < 2 * MAX_FDS; i++)
		CHECK(inode_pin(t, ins[i]) == 0 && inode_fd(ins[i]) >= 0);
	CHECK(inode_open_fds(t) >= 2 * MAX_FDS);
	for (int i = 0; i < 2 * MAX_FDS; i++)
		inode_unpin(t, ins[i]);
	CHECK(inode_open_fds(t) <= MAX_FDS + 1);
	inode_table_destroy(t);
	CHECK_EQ_INT(open_fds(), base);
}

/*
 * A backing inode number reused: the table holds "old", whose fd was closed
 * and whose file was removed; "new" arrives with old's number (as ext4 may
 * hand out a freed number at once).  The table must not answer with old's
 * inode (its DEK, its handle), and old's inode must fail with ESTALE.
 */
static void test_number_reuse(void)
{
	struct inode_table *t;
	struct inode *old, *fresh, *other;
	struct stat old_st, st;
	char name[32], got[32];
	int fd;

	fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	REQUIRE(fd >= 0 && inode_table_create(fd, MAX_FDS, &t) == 0);
	REQUIRE(make_file("old", "old") == 0 && make_file("new", "new") == 0);
	old = add(t, "old", &old_st);
	REQUIRE(old);
	for (int i = 0; i < 2 * MAX_FDS; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		REQUIRE(add(t, name, &st));
	}
	REQUIRE(unlinkat(root_fd, "old", 0) == 0);

	/* Found by old's number: the lookup by name sees another handle. */
	CHECK(inode_lookup_known(t, &old_st, root_fd, "new") == NULL);
	/* Added with old's number: a new inode, which reads the new file. */
	fd = openat(root_fd, "new", O_PATH | O_CLOEXEC);
	REQUIRE(fd >= 0);
	fresh = inode_lookup_or_add(t, fd, &old_st);
	REQUIRE(fresh && fresh != old);
	CHECK(read_through(t, fresh, got, sizeof(got)) == 0 && strcmp(got, "new") == 0);
	/* Old's inode lives on for its references, but names a file that is gone. */
	CHECK_EQ_INT(inode_pin(t, old), -ESTALE);
	/* And the number now leads to the new inode. */
	other = inode_lookup_known(t, &old_st, root_fd, "new");
	CHECK(other == fresh);
	inode_table_destroy(t);
}

/*
 * A table of many inodes: past the hash's first buckets it grows, several
 * times, and every inode is still found by its number (and only its own),
 * through the growth and after it, and each is freed at its last forget.
 */
#define MANY 5000
static void test_many(void)
{
	static struct inode *ins[MANY];
	static struct stat sts[MANY];
	struct inode_table *t;
	char name[32];
	int fd, lost = 0, strays = 0;

	fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	REQUIRE(fd >= 0 && inode_table_create(fd, MAX_FDS, &t) == 0);
	for (int i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "m%d", i);
		REQUIRE(make_file(name, "m") == 0);
		ins[i] = add(t, name, &sts[i]);
		REQUIRE(ins[i]);
		/* The first inode, found again at every size the table takes. */
		lost += inode_lookup_known(t, &sts[0], root_fd, "m0") != ins[0];
		strays += ins[i] == ins[0] && i > 0;
	}
	CHECK_EQ_INT(lost, 0);
	CHECK_EQ_INT(strays, 0);
	CHECK_EQ_INT(inode_count(t), MANY);
	for (int i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "m%d", i);
		lost += inode_lookup_known(t, &sts[i], root_fd, name) != ins[i];
	}
	CHECK_EQ_INT(lost, 0);
	/* Each holds 1 + (i == 0 ? MANY : 1) references now. */
	inode_forget(t, ins[0], MANY);
	for (int i = 0; i < MANY; i++)
		inode_forget(t, ins[i], 2);
	CHECK_EQ_INT(inode_count(t), 0);
	inode_table_destroy(t);
}

/* Whether @id is one of @ins[0..@n). */
static int index_of(struct inode **ins, int n, uint64_t id)
{
	for (int i = 0; i < n; i++)
		if ((uint64_t)(uintptr_t)ins[i] == id)
			return i;
	return -1;
}

/*
 * The clock (inode_victims()): an inode used since the hand last passed it
 * is passed over once (a new one too), the others are handed out, each at
 * most once per call; never the root, never a forgotten inode.
 */
#define CLOCKED 40
static void test_victims(void)
{
	struct inode *ins[CLOCKED];
	uint64_t ids[CLOCKED + 8];
	struct inode_table *t;
	struct stat st;
	char name[32];
	int fd, taken[CLOCKED] = {0}, strays = 0;
	size_t n;

	fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	REQUIRE(fd >= 0 && inode_table_create(fd, MAX_FDS, &t) == 0);
	for (int i = 0; i < CLOCKED; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		REQUIRE(make_file(name, "c") == 0);
		ins[i] = add(t, name, &st);
		REQUIRE(ins[i]);
	}
	/* All new: the first turn only takes their second chances. */
	CHECK_EQ_INT(inode_victims(t, ids, CLOCKED + 8), 0);
	n = inode_victims(t, ids, CLOCKED + 8);
	CHECK_EQ_INT(n, CLOCKED);
	for (size_t k = 0; k < n; k++) {
		int i = index_of(ins, CLOCKED, ids[k]);
		strays += i < 0;
		if (i >= 0)
			taken[i]++;
	}
	CHECK_EQ_INT(strays, 0);
	for (int i = 0; i < CLOCKED; i++)
		CHECK_EQ_INT(taken[i], 1);
	/* Three used again (a lookup's reference, a pin), one forgotten. */
	inode_ref(t, ins[1]);
	inode_ref(t, ins[2]);
	REQUIRE(inode_pin(t, ins[3]) == 0);
	inode_unpin(t, ins[3]);
	inode_forget(t, ins[4], 1);
	n = inode_victims(t, ids, CLOCKED + 8);
	CHECK_EQ_INT(n, CLOCKED - 4);
	for (size_t k = 0; k < n; k++) {
		int i = index_of(ins, CLOCKED, ids[k]);
		strays += i < 0 || (i >= 1 && i <= 4);
	}
	CHECK_EQ_INT(strays, 0);
	/* A smaller cap: as many as asked, the rest on the next call. */
	CHECK_EQ_INT(inode_victims(t, ids, 5), 5);
	inode_forget(t, ins[1], 2);
	inode_forget(t, ins[2], 2);
	for (int i = 0; i < CLOCKED; i++)
		if (i < 1 || i > 4)
			inode_forget(t, ins[i], 1);
	inode_forget(t, ins[3], 1);
	CHECK_EQ_INT(inode_count(t), 0);
	inode_table_destroy(t);
}

/*
 * The evictor against a kernel played by the test over a socket pair (one
 * message per write, as /dev/fuse takes them): its first request is empty,
 * each is a well-formed FUSE_NOTIFY_PRUNE, and "pruning" what it names (the
 * live ones: a freed id may come, and is skipped as the kernel skips ids it
 * does not know) brings the table down to the bound.
 */
#define EVICT_FILES 300
#define EVICT_BOUND 64

/* One prune request as the kernel reads it: header, argument, node ids. */
struct prune_msg {
	uint32_t len;
	int32_t code;
	uint64_t unique;
	uint32_t count;
	uint32_t padding;
	uint64_t spare;
	uint64_t ids[512];
};

/* read_prune - the next request from @fd into @m: its size, or -1. */
static ssize_t read_prune(int fd, struct prune_msg *m)
{
	unsigned char buf[sizeof(*m)];
	ssize_t got = read(fd, buf, sizeof(buf));

	memset(m, 0, sizeof(*m));
	if (got > 0)
		memcpy(m, buf, (size_t)got);
	return got;
}

static void test_evictor(void)
{
	static struct inode *ins[EVICT_FILES];
	static int live[EVICT_FILES];
	struct prune_msg m;
	struct inode_evictor *e;
	struct inode_table *t;
	struct stat st;
	char name[32];
	int fd, sv[2], bad = 0, messages = 0;
	ssize_t got;

	REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
	fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	REQUIRE(fd >= 0 && inode_table_create(fd, MAX_FDS, &t) == 0);
	REQUIRE(inode_evict_start(t, sv[0], EVICT_BOUND, &e) == 0 && e);
	/* The probe: a header (16 bytes) and an empty prune argument (16). */
	got = read_prune(sv[1], &m);
	CHECK_EQ_INT(got, 32);
	CHECK_EQ_INT(m.len, 32);
	CHECK_EQ_INT(m.code, 9); /* FUSE_NOTIFY_PRUNE */
	CHECK_EQ_INT(m.unique, 0);
	CHECK_EQ_INT(m.count, 0);
	for (int i = 0; i < EVICT_FILES; i++) {
		snprintf(name, sizeof(name), "e%d", i);
		REQUIRE(make_file(name, "e") == 0);
		ins[i] = add(t, name, &st);
		REQUIRE(ins[i]);
		live[i] = 1;
	}
	while (inode_count(t) > EVICT_BOUND) {
		got = read_prune(sv[1], &m);
		REQUIRE(got >= 32);
		messages++;
		bad += m.len != (uint32_t)got || m.code != 9 || m.unique != 0 ||
		       (size_t)got != 32 + m.count * sizeof(uint64_t);
		for (uint32_t k = 0; k < m.count; k++) {
			int i = index_of(ins, EVICT_FILES, m.ids[k]);

			bad += i < 0;
			if (i >= 0 && live[i]) {
				live[i] = 0;
				inode_forget(t, ins[i], 1);
			}
		}
	}
	CHECK_EQ_INT(bad, 0);
	CHECK(messages >= 1);
	CHECK(inode_evict_applied(e));
	CHECK(inode_evict_requested(e) >= EVICT_FILES - EVICT_BOUND);
	CHECK(inode_peak(t) == EVICT_FILES);
	inode_evict_stop(e);
	for (int i = 0; i < EVICT_FILES; i++)
		if (live[i])
			inode_forget(t, ins[i], 1);
	CHECK_EQ_INT(inode_count(t), 0);
	inode_table_destroy(t);
	close(sv[0]);
	close(sv[1]);
}

/*
 * The fallback (ENVELOPEFS_INODE_EVICT=inval_entry) against the same
 * played kernel: no probe, then one well-formed FUSE_NOTIFY_INVAL_ENTRY per
 * victim naming its noted entry (a renamed file by its new name), never a
 * directory, an open file, a file with no name noted or whose name an
 * unlink dropped; invalidating what they name brings the table down to
 * the bound beside those kept.
 */
#define KEPT 4 /* a directory, an open file, one never named, one unlinked */

/* One invalidation as the kernel reads it: header, argument, name. */
struct inval_msg {
	uint32_t len;
	int32_t code;
	uint64_t unique;
	uint64_t parent;
	uint32_t namelen;
	uint32_t flags;
	char name[1100];
};

static void test_evictor_fallback(void)
{
	static struct inode *ins[EVICT_FILES];
	static int live[EVICT_FILES];
	struct inode *kept[KEPT];
	struct inval_msg m;
	struct inode_evictor *e;
	struct inode_table *t;
	struct stat st;
	char name[32], plain[40];
	int fd, sv[2], bad = 0, renamed_seen = 0;
	ssize_t got;

	REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
	fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	REQUIRE(fd >= 0 && inode_table_create(fd, MAX_FDS, &t) == 0);
	REQUIRE(setenv("ENVELOPEFS_INODE_EVICT", "inval_entry", 1) == 0);
	REQUIRE(inode_evict_start(t, sv[0], EVICT_BOUND, &e) == 0 && e);
	unsetenv("ENVELOPEFS_INODE_EVICT");
	CHECK(inode_evict_applied(e));
	CHECK(strcmp(inode_evict_mode(e), "inval_entry") == 0);
	REQUIRE(mkdirat(root_fd, "kd", 0700) == 0 && make_file("ko", "o") == 0 &&
		make_file("kn", "n") == 0 && make_file("ku", "u") == 0);
	kept[0] = add(t, "kd", &st);
	kept[1] = add(t, "ko", &st);
	kept[2] = add(t, "kn", &st);
	kept[3] = add(t, "ku", &st);
	REQUIRE(kept[0] && kept[1] && kept[2] && kept[3]);
	inode_evict_note_name(e, inode_table_root(t), kept[0], "plain-kd");
	inode_evict_note_name(e, inode_table_root(t), kept[1], "plain-ko");
	inode_evict_note_name(e, inode_table_root(t), kept[3], "plain-ku");
	inode_evict_note_unlinked(e, &st);
	kept[1]->opens = 1;
	for (int i = 0; i < EVICT_FILES; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		REQUIRE(make_file(name, "f") == 0);
		ins[i] = add(t, name, &st);
		REQUIRE(ins[i]);
		snprintf(plain, sizeof(plain), "plain-%s", name);
		inode_evict_note_name(e, inode_table_root(t), ins[i], plain);
		live[i] = 1;
		/* A rename, while the table is below its bound: the file is
		 * known by its new name from now on. */
		if (i == 7) {
			REQUIRE(renameat(root_fd, "f7", root_fd, "g7") == 0);
			inode_evict_note_moved(e, inode_table_root(t), "g7", "plain-g7");
		}
	}
	while (inode_count(t) > EVICT_BOUND + KEPT) {
		int i = -1;

		got = read(sv[1], &m, sizeof(m));
		REQUIRE(got >= 33);
		bad += m.len != (uint32_t)got || m.code != 3 || m.unique != 0 || m.parent != 1 ||
		       m.flags != 0 || (size_t)got != 32 + m.namelen + 1 || m.name[m.namelen] != '\0';
		m.name[m.namelen] = '\0';
		if (strcmp(m.name, "plain-g7") == 0) {
			i = 7;
			renamed_seen++;
		} else if (sscanf(m.name, "plain-f%d", &i) != 1 || i == 7) {
			i = -1;
		}
		bad += i < 0 || i >= EVICT_FILES;
		if (i >= 0 && i < EVICT_FILES && live[i]) {
			live[i] = 0;
			inode_forget(t, ins[i], 1);
		}
	}
	CHECK_EQ_INT(bad, 0);
	CHECK(inode_evict_requested(e) >= EVICT_FILES - EVICT_BOUND);
	inode_evict_stop(e);
	/* "f7" went by its new name only (the old one counted as bad). */
	/* An inode may be asked for again before its forget comes (as the
	 * test reads behind the evictor): by its new name each time. */
	CHECK(live[7] || renamed_seen >= 1);
	for (int i = 0; i < EVICT_FILES; i++)
		if (live[i])
			inode_forget(t, ins[i], 1);
	CHECK_EQ_INT(inode_count(t), KEPT);
	kept[1]->opens = 0;
	for (int k = 0; k < KEPT; k++)
		inode_forget(t, kept[k], 1);
	CHECK_EQ_INT(inode_count(t), 0);
	inode_table_destroy(t);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	RUN(test_bounded);
	RUN(test_number_reuse);
	RUN(test_many);
	RUN(test_victims);
	RUN(test_evictor);
	RUN(test_evictor_fallback);
	close(root_fd);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", root);
	return check_summary();
}
