/* SPDX-License-Identifier: MIT */
/*
 * envelopefsctl import SRC DEST: encrypt an existing plaintext tree into a
 * volume, keeping what `rsync -aHX` keeps (owners, modes, nanosecond
 * mtimes, xattrs, hard links, symlinks, special files) and, unlike rsync
 * without -S, the holes of sparse files.
 *
 * Everything is written through a mount, never into backing files: the
 * daemon alone knows how names and content are stored.  DEST is either a
 * directory inside a mounted volume, or a volume's backing directory, which
 * is then mounted for the duration in a private mount namespace (nobody
 * else sees that mount; the daemon dies with this process).
 *
 * SRC is only read: files are opened O_NOATIME, nothing is written there.
 *
 * Re-running finishes an interrupted import: a regular file whose DEST copy
 * has the same size and mtime is left alone (the mtime is set last, after
 * the content, owner, mode and xattrs, so a file cut off mid-copy never has
 * it); everything else is (re)applied.  At the end the written data is
 * synced (the mount, then the backing filesystem), and every regular file
 * is read back through the mount with its page cache dropped and compared
 * with SRC by SHA-256.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fs/status.h"
#include "tools/ctl.h"

static const char import_usage[] =
	"Usage: envelopefsctl import [--quiet] [--no-verify] SRC DEST\n"
	"\n"
	"Copy the plaintext tree SRC into an envelopefs volume, encrypted, keeping owners,\n"
	"modes, timestamps, xattrs, hard links, symlinks, sparse regions and special\n"
	"files.  DEST is a directory in a mounted volume (created if missing), or a\n"
	"volume's unmounted BACKING directory, which is then mounted privately for the\n"
	"duration.  SRC is never modified.  Interrupted, run the same command again: files\n"
	"already copied are kept.  At the end every file is read back through the mount\n"
	"and compared with SRC by SHA-256.\n"
	"\n"
	"Options:\n"
	"  --quiet      no progress and no summary (errors only)\n"
	"  --no-verify  skip the final read-back comparison\n"
	"\n"
	"Progress goes to stderr: a live line on a terminal, a line every 5 s otherwise.\n"
	"Needs root (owners, the private mount).  The daemon for a BACKING is the\n"
	"`envelopefs` next to envelopefsctl, or $ENVELOPEFS_DAEMON.\n";

#define COPY_CHUNK (1u << 20)
#define XATTR_LIST_MAX_LEN 65536
#define XATTR_VALUE_MAX_LEN 65536

/* A regular file to verify: its DEST path (relative) and SRC's hash. */
struct verify_item {
	char *rel;
	unsigned char hash[32];
	bool hashed; /* false: left from an earlier run, hash SRC at the end */
	unsigned long long size;
};

/* First path seen of a SRC inode with several links. */
struct link_slot {
	dev_t dev;
	ino_t ino;
	char *rel; /* NULL: empty slot */
};

struct import_counts {
	size_t files, dirs, symlinks, specials, hardlinks, xattrs, kept, errors;
	unsigned long long bytes;
};

struct importer {
	const char *src;
	int src_root, dst_root;
	bool quiet, verify;
	struct import_counts n;
	/* totals from the first walk, for progress */
	size_t total_entries, done_entries;
	unsigned long long total_bytes, done_bytes;
	bool tty;
	double started, last_progress;
	const char *phase;
	/* hard links */
	struct link_slot *links;
	size_t links_cap, links_used;
	/* verification */
	struct verify_item *items;
	size_t n_items, cap_items;
	unsigned char *buf;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void show_progress(struct importer *im, bool last)
{
	double t = now(), elapsed = t - im->started;
	double pct = im->total_bytes ? 100.0 * (double)im->done_bytes / (double)im->total_bytes
				     : (im->total_entries ? 100.0 * (double)im->done_entries /
								    (double)im->total_entries
							  : 100.0);

	if (im->quiet || (!last && t - im->last_progress < (im->tty ? 0.2 : 5.0)))
		return;
	im->last_progress = t;
	fprintf(stderr, "%s%s: %3.0f%%  %zu/%zu entries  %.1f/%.1f MiB  %.1f MiB/s%s",
		im->tty ? "\r" : "", im->phase, pct, im->done_entries, im->total_entries,
		(double)im->done_bytes / 1048576.0, (double)im->total_bytes / 1048576.0,
		elapsed > 0 ? (double)im->done_bytes / 1048576.0 / elapsed : 0.0,
		im->tty && !last ? "   " : "\n");
	fflush(stderr);
}

/* "SRC/rel: what: reason" once, counted. */
static void entry_error(struct importer *im, const char *rel, const char *what, int err)
{
	if (im->tty && !im->quiet)
		fputc('\n', stderr);
	ctl_err(0, "%s/%s: %s: %s", im->src, rel, what, strerror(err));
	im->n.errors++;
}

static char *join(const char *rel, const char *name)
{
	size_t a = strlen(rel), b = strlen(name);
	char *out = malloc(a + b + 2);

	if (!out)
		return NULL;
	if (a) {
		memcpy(out, rel, a);
		out[a++] = '/';
	}
	memcpy(out + a, name, b + 1);
	return out;
}

/* "/proc/self/fd/DIRFD/NAME": the l*xattr calls have no *at() form. */
static void fd_path(int dirfd, const char *name, char out[PATH_MAX + 32])
{
	snprintf(out, PATH_MAX + 32, "/proc/self/fd/%d/%s", dirfd, name);
}

/* ---------------------------------------------------------------- hard links */

static size_t link_hash(dev_t dev, ino_t ino, size_t cap)
{
	unsigned long long h = (unsigned long long)ino * 0x9E3779B97F4A7C15ull ^ (unsigned long long)dev;

	return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

/* The slot of (dev, ino): an empty one if it was not seen yet; NULL on ENOMEM. */
static struct link_slot *link_find(struct importer *im, dev_t dev, ino_t ino)
{
	if (im->links_used * 2 >= im->links_cap) {
		size_t cap = im->links_cap ? im->links_cap * 2 : 1024;
		struct link_slot *grown = calloc(cap, sizeof(*grown));
		if (!grown)
			return NULL;
		for (size_t i = 0; i < im->links_cap; i++) {
			struct link_slot *s = &im->links[i];
			if (!s->rel)
				continue;
			size_t j = link_hash(s->dev, s->ino, cap);
			while (grown[j].rel)
				j = (j + 1) & (cap - 1);
			grown[j] = *s;
		}
		free(im->links);
		im->links = grown;
		im->links_cap = cap;
	}
	size_t i = link_hash(dev, ino, im->links_cap);
	while (im->links[i].rel && (im->links[i].dev != dev || im->links[i].ino != ino))
		i = (i + 1) & (im->links_cap - 1);
	return &im->links[i];
}

/*
 * A further name of an inode already imported as @first: link it in DEST
 * (unless it already is that inode there).  0 or -errno.
 */
static int import_hardlink(struct importer *im, int dfd, const char *name, const char *first)
{
	struct stat a, b;

	if (fstatat(im->dst_root, first, &a, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (fstatat(dfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0) {
		if (a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			return 0;
		if (S_ISDIR(b.st_mode))
			return -EISDIR;
		if (unlinkat(dfd, name, 0) < 0)
			return -errno;
	}
	return linkat(im->dst_root, first, dfd, name, 0) < 0 ? -errno : 0;
}

/* ---------------------------------------------------------------- metadata */

/* Copy every xattr of SRC's entry that a volume can hold; count them. */
static int copy_xattrs(struct importer *im, int sfd, int dfd, const char *name)
{
	char spath[PATH_MAX + 32], dpath[PATH_MAX + 32], *list = NULL, *value = NULL;
	ssize_t len;
	int ret = 0;

	fd_path(sfd, name, spath);
	fd_path(dfd, name, dpath);
	len = llistxattr(spath, NULL, 0);
	if (len <= 0)
		return len < 0 && errno != ENOTSUP ? -errno : 0;
	list = malloc(XATTR_LIST_MAX_LEN);
	value = malloc(XATTR_VALUE_MAX_LEN);
	if (!list || !value) {
		ret = -ENOMEM;
		goto out;
	}
	len = llistxattr(spath, list, XATTR_LIST_MAX_LEN);
	if (len < 0) {
		ret = -errno;
		goto out;
	}
	for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1) {
		const char *key = list + i;
		/* POSIX ACLs need FUSE_POSIX_ACL, which the daemon does not
		 * claim: the kernel refuses them on the mount. */
		if (strncmp(key, "system.", 7) == 0)
			continue;
		ssize_t vlen = lgetxattr(spath, key, value, XATTR_VALUE_MAX_LEN);
		if (vlen < 0 || lsetxattr(dpath, key, value, (size_t)vlen, 0) < 0) {
			ret = -errno;
			goto out;
		}
		im->n.xattrs++;
	}
out:
	free(list);
	free(value);
	return ret;
}

/*
 * Owner, mode, xattrs, then times, in that order: chown clears setuid bits
 * and file capabilities, and anything but the times changes the ctime only.
 */
static int apply_metadata(struct importer *im, int sfd, int dfd, const char *name,
			  const struct stat *st)
{
	struct timespec times[2] = {st->st_atim, st->st_mtim};
	int ret;

	if (fchownat(dfd, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISLNK(st->st_mode) && fchmodat(dfd, name, st->st_mode & 07777, 0) < 0)
		return -errno;
	ret = copy_xattrs(im, sfd, dfd, name);
	if (ret < 0)
		return ret;
	return utimensat(dfd, name, times, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* ---------------------------------------------------------------- content */

static int write_full_at(int fd, const unsigned char *buf, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* Feed @len zero bytes (a hole) to @md. */
static void hash_zeros(EVP_MD_CTX *md, unsigned long long len)
{
	static const unsigned char zeros[65536];

	while (len > 0) {
		size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
		EVP_DigestUpdate(md, zeros, n);
		len -= n;
	}
}

/*
 * Copy the data regions of @in to @out (holes stay holes: the daemon keeps
 * a block never written as a hole), hashing the whole logical content into
 * @hash.  0 or -errno.
 */
static int copy_content(struct importer *im, int in, int out, off_t size, unsigned char hash[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	off_t pos = 0;
	int ret = 0;

	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(md);
		return -ENOMEM;
	}
	while (pos < size && ret == 0) {
		off_t data = lseek(in, pos, SEEK_DATA), end;
		if (data < 0 && errno == ENXIO)
			data = size; /* only a hole is left */
		else if (data < 0) {
			ret = -errno;
			break;
		}
		hash_zeros(md, (unsigned long long)(data - pos));
		im->done_bytes += (unsigned long long)(data - pos);
		end = data < size ? lseek(in, data, SEEK_HOLE) : size;
		if (end < 0) {
			ret = -errno;
			break;
		}
		if (end > size)
			end = size; /* grown since the stat: the copy is of that moment */
		for (pos = data; pos < end && ret == 0;) {
			size_t want = end - pos < COPY_CHUNK ? (size_t)(end - pos) : COPY_CHUNK;
			ssize_t n = pread(in, im->buf, want, pos);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				ret = n < 0 ? -errno : -EIO; /* shrank under us */
				break;
			}
			EVP_DigestUpdate(md, im->buf, (size_t)n);
			ret = write_full_at(out, im->buf, (size_t)n, pos);
			pos += n;
			im->done_bytes += (unsigned long long)n;
			show_progress(im, false);
		}
	}
	/* Trailing holes: the size is set, no data is written. */
	if (ret == 0 && ftruncate(out, size) < 0)
		ret = -errno;
	if (ret == 0 && !EVP_DigestFinal_ex(md, hash, NULL))
		ret = -EIO;
	EVP_MD_CTX_free(md);
	return ret;
}

/* SHA-256 of everything readable from @fd; @progress: count it as verified. */
static int hash_fd(struct importer *im, int fd, unsigned char hash[32], bool progress)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ret = 0;

	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(md);
		return -ENOMEM;
	}
	for (;;) {
		size_t got;
		ret = ctl_read_full(fd, im->buf, COPY_CHUNK, &got);
		if (ret < 0 || got == 0)
			break;
		EVP_DigestUpdate(md, im->buf, got);
		if (progress) {
			im->done_bytes += got;
			show_progress(im, false);
		}
	}
	if (ret == 0 && !EVP_DigestFinal_ex(md, hash, NULL))
		ret = -EIO;
	EVP_MD_CTX_free(md);
	return ret;
}

static int open_src(int dirfd, const char *name, int flags)
{
	/* O_NOATIME: reading SRC changes nothing, not even atimes. */
	int fd = openat(dirfd, name, flags | O_NOATIME | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 && errno == EPERM)
		fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int remember_for_verify(struct importer *im, const char *rel, const unsigned char *hash,
			       unsigned long long size)
{
	if (im->n_items == im->cap_items) {
		size_t cap = im->cap_items ? im->cap_items * 2 : 256;
		struct verify_item *grown = realloc(im->items, cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		im->items = grown;
		im->cap_items = cap;
	}
	struct verify_item *it = &im->items[im->n_items];
	it->rel = strdup(rel);
	if (!it->rel)
		return -ENOMEM;
	im->n_items++;
	it->hashed = hash != NULL;
	it->size = size;
	if (hash)
		memcpy(it->hash, hash, sizeof(it->hash));
	return 0;
}

/* A regular file: copy it unless an earlier run completed it.  0 or -errno. */
static int import_file(struct importer *im, int sfd, int dfd, const char *name, const char *rel,
		       const struct stat *st)
{
	unsigned char hash[32];
	struct stat cur;
	int in, out, ret;

	if (fstatat(dfd, name, &cur, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISREG(cur.st_mode) && cur.st_size == st->st_size &&
		    cur.st_mtim.tv_sec == st->st_mtim.tv_sec &&
		    cur.st_mtim.tv_nsec == st->st_mtim.tv_nsec) {
			/* Its content was complete; owner, mode and xattrs may
			 * have changed since, as they may in SRC. */
			im->n.kept++;
			im->done_bytes += (unsigned long long)st->st_size;
			ret = apply_metadata(im, sfd, dfd, name, st);
			return ret < 0 ? ret
				       : remember_for_verify(im, rel, NULL,
							     (unsigned long long)st->st_size);
		}
		if (!S_ISREG(cur.st_mode) &&
		    unlinkat(dfd, name, S_ISDIR(cur.st_mode) ? AT_REMOVEDIR : 0) < 0)
			return -errno;
	}
	in = open_src(sfd, name, O_RDONLY);
	if (in < 0)
		return in;
	/* Root-only until its owner and mode are set. */
	out = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0) {
		ret = -errno;
		close(in);
		return ret;
	}
	ret = copy_content(im, in, out, st->st_size, hash);
	close(in);
	if (close(out) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0)
		ret = apply_metadata(im, sfd, dfd, name, st);
	if (ret < 0)
		return ret;
	im->n.files++;
	im->n.bytes += (unsigned long long)st->st_size;
	return remember_for_verify(im, rel, hash, (unsigned long long)st->st_size);
}

/* A symlink, FIFO, socket or device node.  0 or -errno. */
static int import_other(struct importer *im, int sfd, int dfd, const char *name,
			const struct stat *st)
{
	char target[PATH_MAX + 1], have[PATH_MAX + 1];
	struct stat cur;
	bool exists = fstatat(dfd, name, &cur, AT_SYMLINK_NOFOLLOW) == 0, same = false;

	if (S_ISLNK(st->st_mode)) {
		ssize_t n = readlinkat(sfd, name, target, sizeof(target) - 1);
		if (n < 0)
			return -errno;
		target[n] = '\0';
		if (exists && S_ISLNK(cur.st_mode)) {
			ssize_t m = readlinkat(dfd, name, have, sizeof(have) - 1);
			same = m == n && memcmp(have, target, (size_t)n) == 0;
		}
	} else {
		same = exists && (cur.st_mode & S_IFMT) == (st->st_mode & S_IFMT) &&
		       cur.st_rdev == st->st_rdev;
	}
	if (exists && !same && unlinkat(dfd, name, S_ISDIR(cur.st_mode) ? AT_REMOVEDIR : 0) < 0)
		return -errno;
	if (!same) {
		int r = S_ISLNK(st->st_mode)
				? symlinkat(target, dfd, name)
				: mknodat(dfd, name, (st->st_mode & S_IFMT) | 0600, st->st_rdev);
		if (r < 0)
			return -errno;
	}
	if (S_ISLNK(st->st_mode))
		im->n.symlinks++;
	else
		im->n.specials++;
	return apply_metadata(im, sfd, dfd, name, st);
}

/* ---------------------------------------------------------------- the walk */

typedef int (*entry_fn)(struct importer *im, int sfd, int dfd, const char *name,
			const char *rel, const struct stat *st);

/* Call @fn for every entry of directory @sfd, recursing into directories. */
static int walk_dir(struct importer *im, int sfd, int dfd, const char *rel, entry_fn fn)
{
	/* A new open file description: a dup would share the read position. */
	int fd = open_src(sfd, ".", O_RDONLY | O_DIRECTORY);
	DIR *dp = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	if (!dp) {
		if (fd >= 0)
			close(fd);
		entry_error(im, rel, "cannot read directory", errno);
		return 0;
	}
	while ((errno = 0, de = readdir(dp))) {
		struct stat st;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(sfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) /* gone since readdir: nothing to import */
				entry_error(im, rel, de->d_name, errno);
			continue;
		}
		int ret = fn(im, sfd, dfd, de->d_name, rel, &st);
		if (ret < 0) {
			closedir(dp);
			return ret; /* out of memory: stop */
		}
	}
	if (errno)
		entry_error(im, rel, "readdir", errno);
	closedir(dp);
	return 0;
}

/* First walk: how much there is, for the progress line. */
static int count_entry(struct importer *im, int sfd, int dfd, const char *name, const char *rel,
		       const struct stat *st)
{
	(void)dfd;
	(void)rel;
	im->total_entries++;
	if (S_ISREG(st->st_mode))
		im->total_bytes += (unsigned long long)st->st_size;
	if (S_ISDIR(st->st_mode)) {
		int child = open_src(sfd, name, O_RDONLY | O_DIRECTORY);
		if (child >= 0) {
			int ret = walk_dir(im, child, -1, "", count_entry);
			close(child);
			return ret;
		}
	}
	return 0;
}

static int import_entry(struct importer *im, int sfd, int dfd, const char *name, const char *rel,
			const struct stat *st)
{
	char *path = join(rel, name);
	int ret = 0;

	if (!path)
		return -ENOMEM;
	im->done_entries++;
	if (S_ISDIR(st->st_mode)) {
		struct stat cur;
		int schild = -1, dchild = -1;
		/* Root-only while it fills; its own mode comes after its content. */
		if (mkdirat(dfd, name, 0700) < 0 &&
		    !(errno == EEXIST && fstatat(dfd, name, &cur, AT_SYMLINK_NOFOLLOW) == 0 &&
		      S_ISDIR(cur.st_mode))) {
			entry_error(im, path, "mkdir", errno);
			goto out;
		}
		schild = open_src(sfd, name, O_RDONLY | O_DIRECTORY);
		dchild = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (schild < 0 || dchild < 0) {
			entry_error(im, path, "open directory", schild < 0 ? -schild : errno);
		} else {
			ret = walk_dir(im, schild, dchild, path, import_entry);
			int err = ret < 0 ? 0 : apply_metadata(im, sfd, dfd, name, st);
			if (err < 0)
				entry_error(im, path, "set owner, mode, xattrs or times", -err);
			im->n.dirs++;
		}
		if (schild >= 0)
			close(schild);
		if (dchild >= 0)
			close(dchild);
		goto out;
	}
	if (st->st_nlink > 1) {
		struct link_slot *slot = link_find(im, st->st_dev, st->st_ino);
		if (!slot) {
			ret = -ENOMEM;
			goto out;
		}
		if (slot->rel) {
			int err = import_hardlink(im, dfd, name, slot->rel);
			if (err < 0)
				entry_error(im, path, "link", -err);
			else
				im->n.hardlinks++;
			if (S_ISREG(st->st_mode))
				im->done_bytes += (unsigned long long)st->st_size;
			goto out;
		}
		slot->dev = st->st_dev;
		slot->ino = st->st_ino;
		slot->rel = strdup(path);
		if (!slot->rel) {
			ret = -ENOMEM;
			goto out;
		}
		im->links_used++;
	}
	if (S_ISREG(st->st_mode)) {
		int err = import_file(im, sfd, dfd, name, path, st);
		if (err == -ENOMEM)
			ret = err;
		else if (err < 0)
			entry_error(im, path, "copy", -err);
	} else {
		int err = import_other(im, sfd, dfd, name, st);
		if (err < 0)
			entry_error(im, path, "create", -err);
	}
out:
	free(path);
	show_progress(im, false);
	return ret;
}

/* ---------------------------------------------------------------- verify */

static int verify(struct importer *im, size_t *mismatches)
{
	*mismatches = 0;
	im->phase = "verify";
	im->done_bytes = 0;
	im->done_entries = 0;
	im->total_entries = im->n_items;
	im->total_bytes = 0;
	for (size_t i = 0; i < im->n_items; i++)
		im->total_bytes += im->items[i].size;
	im->started = now();
	for (size_t i = 0; i < im->n_items; i++) {
		struct verify_item *it = &im->items[i];
		unsigned char got[32];
		int fd, ret;

		im->done_entries++;
		if (!it->hashed) {
			fd = open_src(im->src_root, it->rel, O_RDONLY);
			ret = fd < 0 ? fd : hash_fd(im, fd, it->hash, false);
			if (fd >= 0)
				close(fd);
			if (ret < 0) {
				entry_error(im, it->rel, "read for verification", -ret);
				continue;
			}
		}
		fd = openat(im->dst_root, it->rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			entry_error(im, it->rel, "open the copy for verification", errno);
			continue;
		}
		/* Drop the mount's cached pages: the bytes come from the daemon,
		 * decrypted from the backing file. */
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		ret = hash_fd(im, fd, got, true);
		close(fd);
		if (ret < 0) {
			entry_error(im, it->rel, "read the copy for verification", -ret);
			continue;
		}
		if (memcmp(got, it->hash, sizeof(got)) != 0) {
			ctl_err(0, "%s/%s: the copy differs from the original", im->src, it->rel);
			(*mismatches)++;
		}
	}
	show_progress(im, true);
	return 0;
}

/* ---------------------------------------------------------------- destinations */

/* Is @fd inside a mounted envelopefs volume?  Its root answers the status xattr. */
static bool in_envelopefs_mount(int fd, char *backing, size_t cap)
{
	char status[8192], *p, *q;
	struct statfs sfs;
	struct stat st, up;
	int cur = dup(fd);
	ssize_t n;

	if (cur < 0 || fstatfs(cur, &sfs) < 0 || sfs.f_type != 0x65735546 /* FUSE */) {
		if (cur >= 0)
			close(cur);
		return false;
	}
	/* Up to the mount root: the last directory on the same device. */
	while (fstat(cur, &st) == 0) {
		int parent = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (parent < 0 || fstat(parent, &up) < 0 || up.st_dev != st.st_dev ||
		    up.st_ino == st.st_ino) {
			if (parent >= 0)
				close(parent);
			break;
		}
		close(cur);
		cur = parent;
	}
	n = fgetxattr(cur, STATUS_XATTR, status, sizeof(status) - 1);
	close(cur);
	if (n < 0)
		return false;
	status[n] = '\0';
	/* The daemon's backing path, to sync it at the end. */
	p = strstr(status, "\"backing\":\"");
	*backing = '\0';
	if (p && (q = strchr(p + 11, '"')) && (size_t)(q - p - 11) < cap && !memchr(p + 11, '\\', (size_t)(q - p - 11))) {
		memcpy(backing, p + 11, (size_t)(q - p - 11));
		backing[q - p - 11] = '\0';
	}
	return true;
}

/* The daemon binary: $ENVELOPEFS_DAEMON, next to us (installed), or ../fs/ (build tree). */
static void daemon_path(char *out, size_t cap)
{
	const char *env = getenv("ENVELOPEFS_DAEMON");
	char self[PATH_MAX - 32]; /* room for the suffixes in @out */
	ssize_t n;

	if (env && *env) {
		snprintf(out, cap, "%s", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		*slash = '\0';
		snprintf(out, cap, "%s/envelopefs", self);
		if (access(out, X_OK) == 0)
			return;
		snprintf(out, cap, "%s/../fs/envelopefs", self);
		if (access(out, X_OK) == 0)
			return;
	}
	snprintf(out, cap, "envelopefs");
}

/* A private mount of BACKING on a fresh directory, served by a daemon that
 * dies with this process (PR_SET_PDEATHSIG). */
struct private_mount {
	char dir[64];
	pid_t daemon;
	int log; /* the daemon's stderr, shown only if it fails */
};

static void show_daemon_log(struct private_mount *pm)
{
	char buf[4096];
	ssize_t n;

	if (pm->log < 0 || lseek(pm->log, 0, SEEK_SET) < 0)
		return;
	while ((n = read(pm->log, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)n, stderr);
}

static int mount_private(const char *backing, struct private_mount *pm)
{
	char daemon[PATH_MAX];
	struct stat st, parent;
	pid_t self = getpid();

	if (unshare(CLONE_NEWNS) < 0)
		return ctl_err(CTL_FAILED, "cannot make a private mount namespace: %s (needs root)",
			       strerror(errno));
	/* Mounts made from here on stay in this namespace. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return ctl_err(CTL_FAILED, "cannot make the mounts private: %s", strerror(errno));
	snprintf(pm->dir, sizeof(pm->dir), "/tmp/envelopefs-import.XXXXXX");
	if (!mkdtemp(pm->dir))
		return ctl_err(CTL_FAILED, "mkdtemp: %s", strerror(errno));
	daemon_path(daemon, sizeof(daemon));
	pm->log = memfd_create("envelopefs-daemon-log", MFD_CLOEXEC);
	pm->daemon = fork();
	if (pm->daemon < 0)
		return ctl_err(CTL_FAILED, "fork: %s", strerror(errno));
	if (pm->daemon == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != self)
			_exit(1);
		if (pm->log >= 0)
			dup2(pm->log, STDERR_FILENO);
		execlp(daemon, daemon, "-f", backing, pm->dir, (char *)NULL);
		fprintf(stderr, "envelopefsctl import: cannot run %s: %s\n", daemon,
			strerror(errno));
		_exit(127);
	}
	/* Mounted once the directory is the root of another device. */
	for (int i = 0; i < 3000; i++) {
		int status;
		if (waitpid(pm->daemon, &status, WNOHANG) == pm->daemon) {
			pm->daemon = 0;
			rmdir(pm->dir);
			show_daemon_log(pm);
			return ctl_err(WIFEXITED(status) && WEXITSTATUS(status) == 4 ? CTL_KEY
										    : CTL_FAILED,
				       "the daemon could not mount %s (exit status %d)", backing,
				       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		}
		if (stat(pm->dir, &st) == 0 && stat("/tmp", &parent) == 0 &&
		    st.st_dev != parent.st_dev)
			return CTL_OK;
		struct timespec tick = {0, 20 * 1000 * 1000};
		nanosleep(&tick, NULL);
	}
	return ctl_err(CTL_FAILED, "the daemon did not mount %s within 60 s", backing);
}

static void unmount_private(struct private_mount *pm)
{
	if (pm->daemon > 0) {
		if (umount2(pm->dir, 0) < 0)
			umount2(pm->dir, MNT_DETACH);
		waitpid(pm->daemon, NULL, 0);
	}
	if (pm->log >= 0)
		close(pm->log);
	rmdir(pm->dir);
}

/* Sync what went through the mount, then the backing filesystem under it. */
static int sync_volume(struct importer *im, const char *backing)
{
	int fd;

	/* Writes the mount's dirty pages to the daemon, which writes them
	 * to the backing files. */
	if (syncfs(im->dst_root) < 0)
		return -errno;
	if (!*backing)
		return 0;
	fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int ret = syncfs(fd) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

static void print_summary(const struct importer *im, bool verified, size_t mismatches)
{
	const struct import_counts *n = &im->n;

	if (im->quiet)
		return;
	printf("copied:       %zu files (%.1f MiB), %zu directories, %zu symlinks, %zu hard links, "
	       "%zu special files, %zu xattrs\n",
	       n->files, (double)n->bytes / 1048576.0, n->dirs, n->symlinks, n->hardlinks,
	       n->specials, n->xattrs);
	printf("kept:         %zu files already copied by an earlier run\n", n->kept);
	if (verified)
		printf("verified:     %zu files by SHA-256 through the mount, %zu differ\n",
		       im->n_items, mismatches);
	else
		printf("verified:     skipped (--no-verify)\n");
	printf("errors:       %zu\n", n->errors);
}

static int parse_args(int argc, char **argv, struct importer *im)
{
	static const struct option opts[] = {
		{"quiet", no_argument, NULL, 'q'},
		{"no-verify", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	im->verify = true;
	while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
		if (c == 'q')
			im->quiet = true;
		else if (c == 'V')
			im->verify = false;
		else
			return ctl_usage(import_usage, c == 'h') == CTL_OK ? -1 : CTL_USAGE;
	}
	if (optind != argc - 2)
		return ctl_usage(import_usage, false);
	return CTL_OK;
}

/* Neither tree may contain the other. */
static bool nested(const char *a, const char *b)
{
	size_t n = strlen(a);

	return strncmp(a, b, n) == 0 && (b[n] == '/' || b[n] == '\0' || n == 1);
}

int cmd_import(int argc, char **argv)
{
	struct importer im = {.src_root = -1, .dst_root = -1, .phase = "import"};
	struct private_mount pm = {.daemon = -1, .log = -1};
	char src[PATH_MAX], dst[PATH_MAX], backing[PATH_MAX] = "", conf[PATH_MAX + 32];
	struct stat sst;
	size_t mismatches = 0;
	int code = parse_args(argc, argv, &im);

	if (code == -1)
		return CTL_OK;
	if (code != CTL_OK)
		return code;
	if (!realpath(argv[optind], src) || stat(src, &sst) < 0 || !S_ISDIR(sst.st_mode))
		return ctl_err(CTL_USAGE, "%s is not a directory", argv[optind]);
	/* A missing DEST is made (in a mount: its owner and mode come from SRC). */
	bool made = mkdir(argv[optind + 1], 0700) == 0;
	if (!made && errno != EEXIST)
		return ctl_err(CTL_FAILED, "%s: %s", argv[optind + 1], strerror(errno));
	if (!realpath(argv[optind + 1], dst))
		return ctl_err(CTL_FAILED, "%s: %s", argv[optind + 1], strerror(errno));
	if (nested(src, dst) || nested(dst, src))
		return ctl_err(CTL_USAGE, "%s and %s overlap", src, dst);
	im.src = src;
	im.tty = isatty(STDERR_FILENO);
	im.buf = malloc(COPY_CHUNK);
	if (!im.buf)
		return ctl_err(CTL_FAILED, "out of memory");

	im.dst_root = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(conf, sizeof(conf), "%s/%s", dst, VOLUME_CONFIG_NAME);
	if (im.dst_root >= 0 && !in_envelopefs_mount(im.dst_root, backing, sizeof(backing))) {
		if (access(conf, F_OK) != 0) {
			if (made)
				rmdir(dst);
			code = ctl_err(CTL_USAGE,
				       "%s is neither inside a mounted envelopefs volume nor a volume's "
				       "backing directory",
				       dst);
			goto out;
		}
		if (ctl_backing_mounted(dst)) {
			code = ctl_err(CTL_FAILED, "%s is mounted: import into its mountpoint", dst);
			goto out;
		}
		snprintf(backing, sizeof(backing), "%s", dst);
		code = mount_private(dst, &pm);
		if (code != CTL_OK)
			goto out;
		close(im.dst_root);
		im.dst_root = open(pm.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (im.dst_root < 0) {
		code = ctl_err(CTL_FAILED, "%s: %s", dst, strerror(errno));
		goto out;
	}
	im.src_root = open_src(AT_FDCWD, src, O_RDONLY | O_DIRECTORY);
	if (im.src_root < 0) {
		code = ctl_err(CTL_FAILED, "%s: %s", src, strerror(-im.src_root));
		goto out;
	}

	/* Count, copy, sync, verify. */
	if (walk_dir(&im, im.src_root, -1, "", count_entry) < 0 ||
	    (im.started = now(), walk_dir(&im, im.src_root, im.dst_root, "", import_entry)) < 0) {
		code = ctl_err(CTL_FAILED, "out of memory");
		goto out;
	}
	/* The top: SRC's owner, mode, xattrs and times, as `rsync -a SRC/ DEST/`. */
	int err = apply_metadata(&im, im.src_root, im.dst_root, ".", &sst);
	if (err < 0)
		entry_error(&im, ".", "set owner, mode, xattrs or times", -err);
	show_progress(&im, true);
	err = sync_volume(&im, backing);
	if (err < 0) {
		ctl_err(0, "sync: %s", strerror(-err));
		im.n.errors++;
	}
	if (im.verify)
		verify(&im, &mismatches);
	print_summary(&im, im.verify, mismatches);
	code = mismatches ? CTL_INTEGRITY : im.n.errors ? CTL_FAILED : CTL_OK;
out:
	if (im.src_root >= 0)
		close(im.src_root);
	if (im.dst_root >= 0)
		close(im.dst_root);
	if (pm.daemon >= 0)
		unmount_private(&pm);
	for (size_t i = 0; i < im.n_items; i++)
		free(im.items[i].rel);
	for (size_t i = 0; i < im.links_cap; i++)
		free(im.links[i].rel);
	free(im.items);
	free(im.links);
	free(im.buf);
	return code;
}
