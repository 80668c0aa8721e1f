/* SPDX-License-Identifier: MIT */
/*
 * powerloss - a test file system that loses, on a power cut, all that was not
 * made durable, for the crash tests of envelopefs (tests/integration/test_powerloss.py).
 *
 *   powerloss -o disk=DIR[,crash_after=N][,count_file=PATH][,fault_file=PATH] MOUNTPOINT
 *
 * The whole tree lives in memory.  DIR, on a real file system, holds only what
 * is durable: one file per inode (i/ID: content; i/ID.m: mode, owner, times,
 * xattrs) and one listing per directory (d/ID).  At start the tree is loaded
 * from DIR; a power cut is this process dying (crash_after, or SIGKILL) and
 * the next start sees only DIR.
 *
 * What becomes durable, and when (the model, stricter than ext4 where it may be):
 *  - A file's content, size, mode, owner, times and xattrs: at fsync or
 *    fdatasync of that file, all together.  Nothing reaches DIR by itself
 *    (ext4 writes dirty pages back after a while; here they wait for a power cut).
 *  - Namespace changes (create, mkdir, mknod, symlink, link, unlink, rmdir,
 *    rename) go to an ordered journal, as in ext4's ordered mode.  fsync of a
 *    directory commits the journal up to the last entry that changed that
 *    directory, so a commit is always a prefix: a rename is never half made
 *    and the parent of a committed entry is committed too.  ext4 commits the
 *    whole journal at any fsync, a file's included; here a file's fsync
 *    commits no name (POSIX asks for the directory's fsync).
 *  - An inode whose name is committed before its content was ever synced
 *    comes back empty, with the mode it had then and no xattrs (ext4's
 *    zero-length file after a crash); a symlink comes back with its target.
 *  - A directory's own mode, times and xattrs: at fsync of that directory.
 *  - Unmounting cleanly commits everything.
 *
 * crash_after=N: the Nth mutating request (writes, truncates, namespace and
 * attribute changes, xattr changes, fallocate, fsync, fsyncdir) is not
 * carried out: the process exits at once, as at a power cut just before it.
 * count_file=PATH: the number of mutating requests seen so far is written
 * there at unmount and at the crash, to choose crash points; and the number
 * of directory handles open (opendir without its releasedir yet) is written to
 * PATH.dirs whenever it changes.  The kernel sends RELEASEDIR in the
 * background after the last close: an unmount before it arrives leaves the
 * handle's memory in the library, which a sanitizer build reports as a leak,
 * so a clean shutdown waits for 0 there first.
 * fault_file=PATH: a fault plan, read when SIGUSR1 arms it (counts start
 * afresh); SIGUSR2 clears it.  One fault a line, OP:ERRNO:NTH[:COUNT]: the NTH
 * call (from 1) of request OP and the COUNT-1 after it fail with ERRNO (EIO,
 * ENOSPC, EDQUOT or a number), or with ERRNO "short" a read or write moves half
 * its bytes (at most one such fault a request).  OP is a request name (the pl_
 * functions' names without pl_), or "any".  Each fault injected adds one to
 * the number in PATH.hits.
 * Single-threaded (-s is forced): requests are handled one at a time, in order.
 */
#define FUSE_USE_VERSION 35
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

struct xattr {
	char *name;
	unsigned char *value;
	size_t len;
	struct xattr *next;
};

struct entry {
	char *name;
	uint64_t child;
	struct entry *next;
};

struct node {
	uint64_t id;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	dev_t rdev;
	struct timespec atime, mtime, ctime;
	unsigned char *data; /* regular file content or symlink target (live) */
	size_t size, cap;
	struct xattr *xattrs;  /* live */
	struct entry *live;    /* directory entries as seen now */
	struct entry *durable; /* directory entries as in DIR (d/ID) */
	bool on_disk;          /* i/ID exists in DIR */
};

enum ns_kind { NS_LINK, NS_UNLINK, NS_RENAME };

/* One namespace change in the journal; names are owned by the record. */
struct ns_op {
	enum ns_kind kind;
	uint64_t dir1, dir2, child;
	char *name1, *name2;
	unsigned int flags;
};

struct fault {
	char op[32];
	int err; /* positive errno, or -1: short transfer */
	unsigned long nth, count, seen;
};

struct layer {
	char *disk;
	unsigned long crash_after;
	char *count_file;
	char *fault_file;
	unsigned long fault_hits;
	unsigned long mutations;
	unsigned long open_dirs;
	struct node **nodes; /* by id; never freed: the journal may still name them */
	uint64_t nnodes, next_id;
	struct ns_op *log;
	size_t nlog, caplog, committed; /* log[0 .. committed) is in DIR */
	struct fault faults[16];
	int nfaults;
};

static struct layer pl;
static volatile sig_atomic_t faults_armed, faults_rearmed;

static void on_arm(int sig)
{
	faults_armed = sig == SIGUSR1;
	faults_rearmed = faults_armed;
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);

	if (!p) {
		perror("powerloss");
		_exit(2);
	}
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = xmalloc(strlen(s) + 1);

	return strcpy(p, s);
}

static void write_count(void)
{
	FILE *f;

	if (!pl.count_file || !(f = fopen(pl.count_file, "w")))
		return;
	fprintf(f, "%lu\n", pl.mutations);
	fclose(f);
}

/* open_dirs_add - @delta more directory handles open: published in count_file.dirs. */
static void open_dirs_add(long delta)
{
	char path[PATH_MAX], tmp[PATH_MAX + 4];
	FILE *f;

	pl.open_dirs += delta;
	if (!pl.count_file)
		return;
	/* Replaced whole, never seen half-written by the test polling it. */
	snprintf(path, sizeof(path), "%s.dirs", pl.count_file);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((f = fopen(tmp, "w"))) {
		fprintf(f, "%lu\n", pl.open_dirs);
		if (fclose(f) == 0)
			rename(tmp, path);
	}
}

/* mutation - count one mutating request; at crash_after, the power is cut before it. */
static void mutation(void)
{
	pl.mutations++;
	if (pl.crash_after && pl.mutations >= pl.crash_after) {
		write_count();
		_exit(0);
	}
}

static int parse_fault(const char *spec)
{
	struct fault *f = &pl.faults[pl.nfaults];
	char err[32];

	if (pl.nfaults == (int)(sizeof(pl.faults) / sizeof(pl.faults[0])))
		return -1;
	f->count = 1;
	if (sscanf(spec, "%31[^:]:%31[^:]:%lu:%lu", f->op, err, &f->nth, &f->count) < 3)
		return -1;
	if (!strcmp(err, "short"))
		f->err = -1;
	else if (!strcmp(err, "EIO"))
		f->err = EIO;
	else if (!strcmp(err, "ENOSPC"))
		f->err = ENOSPC;
	else if (!strcmp(err, "EDQUOT"))
		f->err = EDQUOT;
	else if ((f->err = atoi(err)) <= 0)
		return -1;
	pl.nfaults++;
	return 0;
}

/* load_faults - the plan in fault_file, counts from zero. */
static void load_faults(void)
{
	char line[128];
	FILE *f = pl.fault_file ? fopen(pl.fault_file, "r") : NULL;

	memset(pl.faults, 0, sizeof(pl.faults));
	pl.nfaults = 0;
	pl.fault_hits = 0;
	while (f && fgets(line, sizeof(line), f))
		if (line[0] != '\n' && parse_fault(line) < 0)
			fprintf(stderr, "powerloss: bad fault %s", line);
	if (f)
		fclose(f);
}

static void count_hit(void)
{
	char path[PATH_MAX];
	FILE *f;

	pl.fault_hits++;
	snprintf(path, sizeof(path), "%s.hits", pl.fault_file);
	f = fopen(path, "w");
	if (f) {
		fprintf(f, "%lu\n", pl.fault_hits);
		fclose(f);
	}
}

/* fault - the errno (negative) an injected fault gives the request @op, 1 for a
 * short transfer, 0 for none. */
static int fault(const char *op)
{
	int ret = 0;

	if (!faults_armed)
		return 0;
	if (faults_rearmed) {
		faults_rearmed = 0;
		load_faults();
	}
	for (int i = 0; i < pl.nfaults; i++) {
		struct fault *f = &pl.faults[i];

		if (strcmp(f->op, op) && strcmp(f->op, "any"))
			continue;
		f->seen++;
		if (ret == 0 && f->seen >= f->nth && f->seen < f->nth + f->count)
			ret = f->err < 0 ? 1 : -f->err;
	}
	if (ret)
		count_hit();
	return ret;
}

#define FAULT(op)                           \
	do {                                \
		int f_ = fault(op);         \
		if (f_ < 0)                 \
			return f_;          \
	} while (0)

static struct node *node_get(uint64_t id)
{
	return id < pl.nnodes ? pl.nodes[id] : NULL;
}

static struct node *node_new(uint64_t id, mode_t mode)
{
	struct node *n = xmalloc(sizeof(*n));

	if (id >= pl.nnodes) {
		uint64_t want = id * 2 + 16;

		pl.nodes = realloc(pl.nodes, want * sizeof(*pl.nodes));
		if (!pl.nodes)
			_exit(2);
		memset(pl.nodes + pl.nnodes, 0, (want - pl.nnodes) * sizeof(*pl.nodes));
		pl.nnodes = want;
	}
	if (id >= pl.next_id)
		pl.next_id = id + 1;
	n->id = id;
	n->mode = mode;
	clock_gettime(CLOCK_REALTIME, &n->mtime);
	n->atime = n->ctime = n->mtime;
	pl.nodes[id] = n;
	return n;
}

static void touch(struct node *n, bool content)
{
	clock_gettime(CLOCK_REALTIME, &n->ctime);
	if (content)
		n->mtime = n->ctime;
}

/* ---- the durable side: DIR ---- */

static void disk_path(char *buf, const char *kind, uint64_t id, const char *suffix)
{
	snprintf(buf, PATH_MAX, "%s/%s/%" PRIu64 "%s", pl.disk, kind, id, suffix);
}

/* write_file - @len bytes to DIR/@kind/@id@suffix, replaced whole (the process
 * dying mid-way is the only crash this layer knows, and it never dies there). */
static void write_file(const char *kind, uint64_t id, const char *suffix, const void *buf, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	FILE *f;

	disk_path(path, kind, id, suffix);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f) || rename(tmp, path)) {
		perror(path);
		_exit(2);
	}
}

static void hex(FILE *f, const unsigned char *p, size_t n)
{
	if (!n)
		fputc('-', f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%02x", p[i]);
}

static size_t unhex(const char *s, unsigned char *out)
{
	size_t n = 0;

	if (!strcmp(s, "-"))
		return 0;
	for (; s[0] && s[1]; s += 2)
		sscanf(s, "%2hhx", &out[n++]);
	return n;
}

/* store_inode - make @n's current content and attributes durable; with
 * @empty its content and xattrs as a never-synced inode has them. */
static void store_inode(struct node *n, bool empty)
{
	char *meta = NULL;
	size_t mlen = 0;
	FILE *m = open_memstream(&meta, &mlen);

	fprintf(m, "%o %u %u %lu %ld %ld %ld %ld %ld %ld\n", n->mode, n->uid, n->gid,
		(unsigned long)n->rdev, (long)n->atime.tv_sec, n->atime.tv_nsec,
		(long)n->mtime.tv_sec, n->mtime.tv_nsec, (long)n->ctime.tv_sec, n->ctime.tv_nsec);
	for (struct xattr *x = empty ? NULL : n->xattrs; x; x = x->next) {
		hex(m, (const unsigned char *)x->name, strlen(x->name));
		fputc(' ', m);
		hex(m, x->value, x->len);
		fputc('\n', m);
	}
	fclose(m);
	if (!S_ISDIR(n->mode))
		write_file("i", n->id, "", n->data, empty && !S_ISLNK(n->mode) ? 0 : n->size);
	write_file("i", n->id, ".m", meta, mlen);
	free(meta);
	n->on_disk = true;
}

static void store_dir(struct node *d)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	for (struct entry *e = d->durable; e; e = e->next) {
		hex(m, (const unsigned char *)e->name, strlen(e->name));
		fprintf(m, " %" PRIu64 "\n", e->child);
	}
	fclose(m);
	write_file("d", d->id, "", buf, len);
	free(buf);
}

static struct entry **entry_find(struct entry **list, const char *name)
{
	for (; *list; list = &(*list)->next)
		if (!strcmp((*list)->name, name))
			return list;
	return NULL;
}

static void entry_set(struct entry **list, const char *name, uint64_t child)
{
	struct entry **e = entry_find(list, name);
	struct entry *n;

	if (e) {
		(*e)->child = child;
		return;
	}
	n = xmalloc(sizeof(*n));
	n->name = xstrdup(name);
	n->child = child;
	n->next = *list;
	*list = n;
}

/* entry_del - remove @name from @list; the child id it named, 0 if none. */
static uint64_t entry_del(struct entry **list, const char *name)
{
	struct entry **e = entry_find(list, name), *gone;
	uint64_t child;

	if (!e)
		return 0;
	gone = *e;
	child = gone->child;
	*e = gone->next;
	free(gone->name);
	free(gone);
	return child;
}

/* ensure_on_disk - an inode a committed entry names exists in DIR. */
static void ensure_on_disk(uint64_t id)
{
	struct node *n = node_get(id);

	if (n && !n->on_disk) {
		store_inode(n, true);
		if (S_ISDIR(n->mode))
			store_dir(n);
	}
}

/* commit - apply the journal up to (not including) @upto to DIR. */
static void commit(size_t upto)
{
	bool *touched = xmalloc(pl.next_id * sizeof(bool));

	for (; pl.committed < upto; pl.committed++) {
		struct ns_op *op = &pl.log[pl.committed];
		struct node *d1 = node_get(op->dir1), *d2 = node_get(op->dir2);
		uint64_t a, b;

		touched[op->dir1] = true;
		switch (op->kind) {
		case NS_LINK:
			ensure_on_disk(op->child);
			entry_set(&d1->durable, op->name1, op->child);
			break;
		case NS_UNLINK:
			entry_del(&d1->durable, op->name1);
			break;
		case NS_RENAME:
			touched[op->dir2] = true;
			a = entry_del(&d1->durable, op->name1);
			if (op->flags & RENAME_EXCHANGE) {
				b = entry_del(&d2->durable, op->name2);
				entry_set(&d1->durable, op->name1, b);
			}
			entry_set(&d2->durable, op->name2, a);
			break;
		}
	}
	for (uint64_t id = 0; id < pl.next_id; id++)
		if (touched[id] && node_get(id)) {
			ensure_on_disk(id);
			store_dir(node_get(id));
		}
	free(touched);
}

static void journal(enum ns_kind kind, uint64_t dir1, const char *name1, uint64_t dir2,
		    const char *name2, uint64_t child, unsigned int flags)
{
	struct ns_op *op;

	if (pl.nlog == pl.caplog) {
		pl.caplog = pl.caplog * 2 + 64;
		pl.log = realloc(pl.log, pl.caplog * sizeof(*pl.log));
		if (!pl.log)
			_exit(2);
	}
	op = &pl.log[pl.nlog++];
	*op = (struct ns_op){ kind, dir1, dir2, child, xstrdup(name1), name2 ? xstrdup(name2) : NULL,
			      flags };
}

/* ---- loading DIR at start ---- */

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t cap = 0, n;

	*len = 0;
	if (!f)
		return NULL;
	for (;;) {
		if (*len + 65536 > cap) {
			cap = (*len + 65536) * 2;
			buf = realloc(buf, cap + 1);
			if (!buf)
				_exit(2);
		}
		n = fread(buf + *len, 1, cap - *len, f);
		*len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	buf[*len] = 0;
	return buf;
}

static struct node *load_inode(uint64_t id)
{
	char path[PATH_MAX], *meta, *line, *save;
	size_t len;
	unsigned long rdev;
	long t[6];
	unsigned int mode, uid, gid;
	struct node *n;

	if (node_get(id))
		return node_get(id);
	disk_path(path, "i", id, ".m");
	meta = slurp(path, &len);
	if (!meta || sscanf(meta, "%o %u %u %lu %ld %ld %ld %ld %ld %ld", &mode, &uid, &gid, &rdev, &t[0],
			    &t[1], &t[2], &t[3], &t[4], &t[5]) != 10) {
		fprintf(stderr, "powerloss: %s unreadable\n", path);
		_exit(2);
	}
	n = node_new(id, mode);
	n->uid = uid;
	n->gid = gid;
	n->rdev = rdev;
	n->atime = (struct timespec){ t[0], t[1] };
	n->mtime = (struct timespec){ t[2], t[3] };
	n->ctime = (struct timespec){ t[4], t[5] };
	n->on_disk = true;
	line = strtok_r(meta, "\n", &save);
	while ((line = strtok_r(NULL, "\n", &save))) {
		char *sp = strchr(line, ' ');
		struct xattr *x = xmalloc(sizeof(*x));

		*sp = 0;
		x->name = xmalloc(strlen(line) / 2 + 1);
		unhex(line, (unsigned char *)x->name);
		x->value = xmalloc(strlen(sp + 1) / 2 + 1);
		x->len = unhex(sp + 1, x->value);
		x->next = n->xattrs;
		n->xattrs = x;
	}
	free(meta);
	if (S_ISDIR(mode)) {
		char *list;

		disk_path(path, "d", id, "");
		list = slurp(path, &len);
		for (line = list ? strtok_r(list, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
			char name[NAME_MAX + 1] = { 0 }, *sp = strchr(line, ' ');
			uint64_t child = strtoull(sp + 1, NULL, 10);

			*sp = 0;
			unhex(line, (unsigned char *)name);
			entry_set(&n->durable, name, child);
			entry_set(&n->live, name, child);
			load_inode(child);
		}
		free(list);
	} else {
		disk_path(path, "i", id, "");
		n->data = (unsigned char *)slurp(path, &n->size);
		n->cap = n->data ? n->size + 1 : 0;
	}
	return n;
}

static void load(void)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/i", pl.disk);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/d", pl.disk);
	mkdir(path, 0700);
	pl.next_id = 2;
	disk_path(path, "i", 1, ".m");
	if (access(path, F_OK) == 0) {
		load_inode(1);
		/* Ids of inodes no committed entry names are free again. */
		return;
	}
	node_new(1, S_IFDIR | 0755);
	store_inode(node_get(1), false);
	store_dir(node_get(1));
}

/* ---- the live tree ---- */

static int child_count(struct node *d)
{
	int n = 0;

	for (struct entry *e = d->live; e; e = e->next)
		n++;
	return n;
}

static int nlink_of(struct node *n)
{
	int links = 0;

	if (S_ISDIR(n->mode)) {
		links = 2;
		for (struct entry *e = n->live; e; e = e->next)
			links += S_ISDIR(node_get(e->child)->mode);
		return links;
	}
	for (uint64_t id = 1; id < pl.next_id; id++) {
		struct node *d = node_get(id);

		if (d && S_ISDIR(d->mode))
			for (struct entry *e = d->live; e; e = e->next)
				links += e->child == n->id;
	}
	return links;
}

/* resolve - the node at @path; with @parent, its parent and @base its last name. */
static struct node *resolve(const char *path, struct node **parent, char *base)
{
	struct node *cur = node_get(1), *up = NULL;
	char buf[PATH_MAX], *save, *part, *last = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (part = strtok_r(buf, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
		struct entry **e;

		if (!cur || !S_ISDIR(cur->mode)) {
			cur = NULL;
			up = NULL;
			break;
		}
		up = cur;
		last = part;
		e = entry_find(&cur->live, part);
		cur = e ? node_get((*e)->child) : NULL;
	}
	if (parent)
		*parent = up;
	if (base)
		snprintf(base, NAME_MAX + 1, "%s", last ? last : "");
	return cur;
}

static struct node *from_fi(const char *path, struct fuse_file_info *fi)
{
	return fi && fi->fh ? node_get(fi->fh) : resolve(path, NULL, NULL);
}

static void fill_stat(struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->id;
	st->st_mode = n->mode;
	st->st_nlink = nlink_of(n);
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_rdev = n->rdev;
	st->st_size = S_ISDIR(n->mode) ? 4096 : (off_t)n->size;
	st->st_blksize = 4096;
	st->st_blocks = (st->st_size + 511) / 512;
	st->st_atim = n->atime;
	st->st_mtim = n->mtime;
	st->st_ctim = n->ctime;
}

static int pl_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct node *n = from_fi(path, fi);

	FAULT("getattr");
	if (!n)
		return -ENOENT;
	fill_stat(n, st);
	return 0;
}

static int resize(struct node *n, size_t size)
{
	if (size > ((size_t)1 << 32))
		return -EFBIG;
	if (size > n->cap) {
		size_t cap = size * 2 + 4096;
		unsigned char *p = realloc(n->data, cap);

		if (!p)
			return -ENOSPC;
		n->data = p;
		n->cap = cap;
	}
	if (size > n->size)
		memset(n->data + n->size, 0, size - n->size);
	n->size = size;
	return 0;
}

/* make - a new node named @path; journaled. */
static int make(const char *path, mode_t mode, dev_t rdev, const char *target, struct node **out)
{
	struct node *parent, *n;
	char base[NAME_MAX + 1];
	struct fuse_context *ctx = fuse_get_context();

	if (resolve(path, &parent, base))
		return -EEXIST;
	if (!parent || !S_ISDIR(parent->mode))
		return -ENOENT;
	if (strlen(base) > NAME_MAX)
		return -ENAMETOOLONG;
	n = node_new(pl.next_id, mode);
	n->uid = ctx->uid;
	n->gid = ctx->gid;
	n->rdev = rdev;
	if (target) {
		resize(n, strlen(target));
		memcpy(n->data, target, n->size);
	}
	entry_set(&parent->live, base, n->id);
	touch(parent, true);
	journal(NS_LINK, parent->id, base, 0, NULL, n->id, 0);
	if (out)
		*out = n;
	return 0;
}

static int pl_mknod(const char *path, mode_t mode, dev_t rdev)
{
	FAULT("mknod");
	mutation();
	return make(path, mode, rdev, NULL, NULL);
}

static int pl_mkdir(const char *path, mode_t mode)
{
	FAULT("mkdir");
	mutation();
	return make(path, S_IFDIR | (mode & 07777), 0, NULL, NULL);
}

static int pl_symlink(const char *target, const char *path)
{
	FAULT("symlink");
	mutation();
	return make(path, S_IFLNK | 0777, 0, target, NULL);
}

static int pl_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct node *n;
	int ret;

	FAULT("create");
	mutation();
	ret = make(path, S_IFREG | (mode & 07777), 0, NULL, &n);
	if (ret == 0)
		fi->fh = n->id;
	return ret;
}

static int pl_readlink(const char *path, char *buf, size_t size)
{
	struct node *n = resolve(path, NULL, NULL);

	FAULT("readlink");
	if (!n)
		return -ENOENT;
	if (!S_ISLNK(n->mode))
		return -EINVAL;
	snprintf(buf, size, "%.*s", (int)n->size, n->data);
	return 0;
}

static int remove_entry(const char *path, bool dir)
{
	struct node *parent, *n = resolve(path, &parent, NULL);
	char base[NAME_MAX + 1];

	resolve(path, NULL, base);
	if (!n)
		return -ENOENT;
	if (dir && !S_ISDIR(n->mode))
		return -ENOTDIR;
	if (!dir && S_ISDIR(n->mode))
		return -EISDIR;
	if (dir && child_count(n))
		return -ENOTEMPTY;
	entry_del(&parent->live, base);
	touch(parent, true);
	touch(n, false);
	journal(NS_UNLINK, parent->id, base, 0, NULL, n->id, 0);
	return 0;
}

static int pl_unlink(const char *path)
{
	FAULT("unlink");
	mutation();
	return remove_entry(path, false);
}

static int pl_rmdir(const char *path)
{
	FAULT("rmdir");
	mutation();
	return remove_entry(path, true);
}

static int pl_rename(const char *from, const char *to, unsigned int flags)
{
	struct node *p1, *p2, *a, *b;
	char n1[NAME_MAX + 1], n2[NAME_MAX + 1];

	FAULT("rename");
	mutation();
	a = resolve(from, &p1, n1);
	b = resolve(to, &p2, n2);
	if (!a || !p2)
		return -ENOENT;
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if (b && (flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (!b && (flags & RENAME_EXCHANGE))
		return -ENOENT;
	if (a == b)
		return 0;
	if (b && !(flags & RENAME_EXCHANGE)) {
		if (S_ISDIR(b->mode) && !S_ISDIR(a->mode))
			return -EISDIR;
		if (!S_ISDIR(b->mode) && S_ISDIR(a->mode))
			return -ENOTDIR;
		if (S_ISDIR(b->mode) && child_count(b))
			return -ENOTEMPTY;
	}
	entry_del(&p1->live, n1);
	if (flags & RENAME_EXCHANGE)
		entry_set(&p1->live, n1, b->id);
	entry_set(&p2->live, n2, a->id);
	touch(p1, true);
	touch(p2, true);
	touch(a, false);
	journal(NS_RENAME, p1->id, n1, p2->id, n2, a->id, flags);
	return 0;
}

static int pl_link(const char *from, const char *to)
{
	struct node *n = resolve(from, NULL, NULL), *parent;
	char base[NAME_MAX + 1];

	FAULT("link");
	mutation();
	if (!n)
		return -ENOENT;
	if (resolve(to, &parent, base))
		return -EEXIST;
	if (!parent)
		return -ENOENT;
	entry_set(&parent->live, base, n->id);
	touch(parent, true);
	touch(n, false);
	journal(NS_LINK, parent->id, base, 0, NULL, n->id, 0);
	return 0;
}

static int pl_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct node *n = from_fi(path, fi);

	FAULT("chmod");
	mutation();
	if (!n)
		return -ENOENT;
	n->mode = (n->mode & S_IFMT) | (mode & 07777);
	touch(n, false);
	return 0;
}

static int pl_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	struct node *n = from_fi(path, fi);

	FAULT("chown");
	mutation();
	if (!n)
		return -ENOENT;
	if (uid != (uid_t)-1)
		n->uid = uid;
	if (gid != (gid_t)-1)
		n->gid = gid;
	touch(n, false);
	return 0;
}

static int pl_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct node *n = from_fi(path, fi);
	int ret;

	FAULT("truncate");
	mutation();
	if (!n)
		return -ENOENT;
	if (S_ISDIR(n->mode))
		return -EISDIR;
	ret = resize(n, size);
	if (ret == 0)
		touch(n, true);
	return ret;
}

static int pl_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	struct node *n = from_fi(path, fi);
	struct timespec now;

	FAULT("utimens");
	mutation();
	if (!n)
		return -ENOENT;
	clock_gettime(CLOCK_REALTIME, &now);
	if (tv[0].tv_nsec != UTIME_OMIT)
		n->atime = tv[0].tv_nsec == UTIME_NOW ? now : tv[0];
	if (tv[1].tv_nsec != UTIME_OMIT)
		n->mtime = tv[1].tv_nsec == UTIME_NOW ? now : tv[1];
	n->ctime = now;
	return 0;
}

static int pl_open(const char *path, struct fuse_file_info *fi)
{
	struct node *n = resolve(path, NULL, NULL);

	FAULT("open");
	if (!n)
		return -ENOENT;
	fi->fh = n->id;
	if (fi->flags & O_TRUNC) {
		mutation();
		resize(n, 0);
		touch(n, true);
	}
	return 0;
}

static int pl_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct node *n = from_fi(path, fi);
	int f = fault("read");

	if (f < 0)
		return f;
	if (!n)
		return -ENOENT;
	if ((size_t)off >= n->size)
		return 0;
	if (size > n->size - off)
		size = n->size - off;
	if (f == 1 && size > 1)
		size /= 2;
	memcpy(buf, n->data + off, size);
	return size;
}

static int pl_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct node *n = from_fi(path, fi);
	int f = fault("write"), ret;

	if (f < 0)
		return f;
	mutation();
	if (!n)
		return -ENOENT;
	if (f == 1 && size > 1)
		size /= 2;
	if (off + size > n->size && (ret = resize(n, off + size)) < 0)
		return ret;
	memcpy(n->data + off, buf, size);
	touch(n, true);
	return size;
}

static int pl_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	FAULT("statfs");
	memset(st, 0, sizeof(*st));
	st->f_bsize = st->f_frsize = 4096;
	st->f_blocks = st->f_bfree = st->f_bavail = 1 << 22;
	st->f_files = st->f_ffree = 1 << 20;
	st->f_namemax = NAME_MAX;
	return 0;
}

static int pl_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct node *n = from_fi(path, fi);

	(void)datasync;
	FAULT("fsync");
	mutation();
	if (!n)
		return -ENOENT;
	store_inode(n, false);
	return 0;
}

static int pl_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct node *d = from_fi(path, fi);
	size_t upto = pl.committed;

	(void)datasync;
	FAULT("fsyncdir");
	mutation();
	if (!d)
		return -ENOENT;
	for (size_t i = pl.committed; i < pl.nlog; i++)
		if (pl.log[i].dir1 == d->id || (pl.log[i].kind == NS_RENAME && pl.log[i].dir2 == d->id))
			upto = i + 1;
	commit(upto);
	store_inode(d, false);
	return 0;
}

static struct xattr **xattr_find(struct node *n, const char *name)
{
	struct xattr **x;

	for (x = &n->xattrs; *x; x = &(*x)->next)
		if (!strcmp((*x)->name, name))
			return x;
	return NULL;
}

static int pl_setxattr(const char *path, const char *name, const char *value, size_t size, int flags)
{
	struct node *n = resolve(path, NULL, NULL);
	struct xattr **x, *nx;

	FAULT("setxattr");
	mutation();
	if (!n)
		return -ENOENT;
	x = xattr_find(n, name);
	if (x && (flags & XATTR_CREATE))
		return -EEXIST;
	if (!x && (flags & XATTR_REPLACE))
		return -ENODATA;
	if (!x) {
		nx = xmalloc(sizeof(*nx));
		nx->name = xstrdup(name);
		nx->next = n->xattrs;
		n->xattrs = nx;
	} else {
		nx = *x;
		free(nx->value);
	}
	nx->value = xmalloc(size);
	memcpy(nx->value, value, size);
	nx->len = size;
	touch(n, false);
	return 0;
}

static int pl_getxattr(const char *path, const char *name, char *value, size_t size)
{
	struct node *n = resolve(path, NULL, NULL);
	struct xattr **x;

	FAULT("getxattr");
	if (!n)
		return -ENOENT;
	x = xattr_find(n, name);
	if (!x)
		return -ENODATA;
	if (size == 0)
		return (*x)->len;
	if (size < (*x)->len)
		return -ERANGE;
	memcpy(value, (*x)->value, (*x)->len);
	return (*x)->len;
}

static int pl_listxattr(const char *path, char *list, size_t size)
{
	struct node *n = resolve(path, NULL, NULL);
	size_t need = 0;

	FAULT("listxattr");
	if (!n)
		return -ENOENT;
	for (struct xattr *x = n->xattrs; x; x = x->next)
		need += strlen(x->name) + 1;
	if (size == 0)
		return need;
	if (size < need)
		return -ERANGE;
	for (struct xattr *x = n->xattrs; x; x = x->next) {
		strcpy(list, x->name);
		list += strlen(x->name) + 1;
	}
	return need;
}

static int pl_removexattr(const char *path, const char *name)
{
	struct node *n = resolve(path, NULL, NULL);
	struct xattr **x, *gone;

	FAULT("removexattr");
	mutation();
	if (!n)
		return -ENOENT;
	x = xattr_find(n, name);
	if (!x)
		return -ENODATA;
	gone = *x;
	*x = gone->next;
	free(gone->name);
	free(gone->value);
	free(gone);
	touch(n, false);
	return 0;
}

static int pl_opendir(const char *path, struct fuse_file_info *fi)
{
	struct node *n = resolve(path, NULL, NULL);

	FAULT("opendir");
	if (!n)
		return -ENOENT;
	if (!S_ISDIR(n->mode))
		return -ENOTDIR;
	fi->fh = n->id;
	open_dirs_add(1);
	return 0;
}

static int pl_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	open_dirs_add(-1);
	return 0;
}

static int pl_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	struct node *d = from_fi(path, fi);

	(void)off;
	(void)flags;
	FAULT("readdir");
	if (!d)
		return -ENOENT;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	for (struct entry *e = d->live; e; e = e->next) {
		struct stat st;

		fill_stat(node_get(e->child), &st);
		if (fill(buf, e->name, &st, 0, 0))
			break;
	}
	return 0;
}

static int pl_access(const char *path, int mask)
{
	(void)mask;
	return resolve(path, NULL, NULL) ? 0 : -ENOENT;
}

static int pl_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	struct node *n = from_fi(path, fi);
	int ret = 0;

	FAULT("fallocate");
	mutation();
	if (!n)
		return -ENOENT;
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if (!(mode & FALLOC_FL_KEEP_SIZE) && (size_t)(off + len) > n->size)
		ret = resize(n, off + len);
	if (ret == 0 && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) && (size_t)off < n->size) {
		size_t end = (size_t)(off + len) < n->size ? (size_t)(off + len) : n->size;

		memset(n->data + off, 0, end - off);
	}
	if (ret == 0)
		touch(n, true);
	return ret;
}

static void free_entries(struct entry *e)
{
	while (e) {
		struct entry *next = e->next;

		free(e->name);
		free(e);
		e = next;
	}
}

/* free_all - everything, at exit: a clean run leaks nothing (the sanitizer build checks). */
static void free_all(void)
{
	for (uint64_t id = 0; id < pl.nnodes; id++) {
		struct node *n = pl.nodes[id];

		if (!n)
			continue;
		while (n->xattrs) {
			struct xattr *next = n->xattrs->next;

			free(n->xattrs->name);
			free(n->xattrs->value);
			free(n->xattrs);
			n->xattrs = next;
		}
		free_entries(n->live);
		free_entries(n->durable);
		free(n->data);
		free(n);
	}
	free(pl.nodes);
	for (size_t i = 0; i < pl.nlog; i++) {
		free(pl.log[i].name1);
		free(pl.log[i].name2);
	}
	free(pl.log);
}

static void *pl_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->use_ino = 1;
	cfg->nullpath_ok = 1;
	cfg->hard_remove = 1;
	return NULL;
}

/* A clean unmount: everything becomes durable. */
static void pl_destroy(void *data)
{
	(void)data;
	commit(pl.nlog);
	for (uint64_t id = 1; id < pl.next_id; id++)
		if (node_get(id) && node_get(id)->on_disk)
			store_inode(node_get(id), false);
	write_count();
}

static const struct fuse_operations ops = {
	.getattr = pl_getattr,
	.readlink = pl_readlink,
	.mknod = pl_mknod,
	.mkdir = pl_mkdir,
	.unlink = pl_unlink,
	.rmdir = pl_rmdir,
	.symlink = pl_symlink,
	.rename = pl_rename,
	.link = pl_link,
	.chmod = pl_chmod,
	.chown = pl_chown,
	.truncate = pl_truncate,
	.open = pl_open,
	.read = pl_read,
	.write = pl_write,
	.statfs = pl_statfs,
	.fsync = pl_fsync,
	.setxattr = pl_setxattr,
	.getxattr = pl_getxattr,
	.listxattr = pl_listxattr,
	.removexattr = pl_removexattr,
	.opendir = pl_opendir,
	.readdir = pl_readdir,
	.releasedir = pl_releasedir,
	.fsyncdir = pl_fsyncdir,
	.init = pl_init,
	.destroy = pl_destroy,
	.access = pl_access,
	.create = pl_create,
	.utimens = pl_utimens,
	.fallocate = pl_fallocate,
};

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	const struct fuse_opt opts[] = {
		{ "disk=%s", offsetof(struct layer, disk), 0 },
		{ "crash_after=%lu", offsetof(struct layer, crash_after), 0 },
		{ "count_file=%s", offsetof(struct layer, count_file), 0 },
		{ "fault_file=%s", offsetof(struct layer, fault_file), 0 },
		FUSE_OPT_END,
	};
	int ret;

	if (fuse_opt_parse(&args, &pl, opts, NULL) < 0 || !pl.disk) {
		fprintf(stderr, "usage: powerloss -o disk=DIR[,crash_after=N][,count_file=PATH]"
				"[,fault_file=PATH] MOUNTPOINT\n");
		return 2;
	}
	load();
	open_dirs_add(0); /* a count left by the previous run (a power cut) is not ours */
	signal(SIGUSR1, on_arm);
	signal(SIGUSR2, on_arm);
	fuse_opt_add_arg(&args, "-s");
	ret = fuse_main(args.argc, args.argv, &ops, NULL);
	fuse_opt_free_args(&args);
	free_all();
	free(pl.disk);
	free(pl.count_file);
	free(pl.fault_file);
	return ret;
}
