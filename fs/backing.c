/* SPDX-License-Identifier: MIT */
/* What the backing file system can do: see backing.h. */
#include "backing.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/limits.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "crypto/hex.h"
#include "crypto/random.h"
#include "names.h"
#include "volume.h"

#define SCRATCH_PREFIX NAMES_TEMP_PREFIX "probe."
#define SCRATCH_ID_LEN 8
#define PROBE_XATTR "user.envelopefs.probe"
/*
 * The holes probe: a file shaped like the daemon's, a header at 0 and one
 * block at 1 MiB, with a hole between them.
 */
#define HOLES_HEAD_LEN 512
#define HOLES_DATA_AT ((off_t)1 << 20)
#define HOLES_DATA_LEN 4096
#define HOLES_SIZE (HOLES_DATA_AT + HOLES_DATA_LEN)
/* A file with two written ranges splits into a few ranges at most. */
#define HOLES_MAX_RANGES 8
/* Files asked: a backing whose answers race its writes is caught. */
#define HOLES_TRIALS 8

/* Magic numbers linux/magic.h lacks (from each file system's source). */
#define LUSTRE_SUPER_MAGIC 0x0bd00bd0
#define GPFS_SUPER_MAGIC 0x47504653
#define GFS2_SUPER_MAGIC 0x01161970
#define BEEGFS_SUPER_MAGIC 0x19830326
#define ZFS_SUPER_MAGIC 0x2fc12fc1
#define BCACHEFS_SUPER_MAGIC 0xca451a4e

/*
 * Shared: several hosts may use the file system at once (a network or
 * cluster file system), or it is FUSE, whose server may be anything.
 */
static const struct fs_kind {
	uint32_t magic;
	const char *name;
	bool shared;
} fs_kinds[] = {
	{ EXT4_SUPER_MAGIC, "ext4", false }, /* ext2 and ext3 share it */
	{ XFS_SUPER_MAGIC, "xfs", false },
	{ BTRFS_SUPER_MAGIC, "btrfs", false },
	{ TMPFS_MAGIC, "tmpfs", false },
	{ RAMFS_MAGIC, "ramfs", false },
	{ OVERLAYFS_SUPER_MAGIC, "overlayfs", false },
	{ F2FS_SUPER_MAGIC, "f2fs", false },
	{ ZFS_SUPER_MAGIC, "zfs", false },
	{ BCACHEFS_SUPER_MAGIC, "bcachefs", false },
	{ NFS_SUPER_MAGIC, "nfs", true },
	{ SMB_SUPER_MAGIC, "smb", true },
	{ CIFS_SUPER_MAGIC, "cifs", true },
	{ SMB2_SUPER_MAGIC, "smb2", true },
	{ CEPH_SUPER_MAGIC, "ceph", true },
	{ AFS_SUPER_MAGIC, "afs", true },
	{ AFS_FS_MAGIC, "afs", true },
	{ V9FS_MAGIC, "9p", true },
	{ LUSTRE_SUPER_MAGIC, "lustre", true },
	{ GPFS_SUPER_MAGIC, "gpfs", true },
	{ BEEGFS_SUPER_MAGIC, "beegfs", true },
	{ OCFS2_SUPER_MAGIC, "ocfs2", true },
	{ GFS2_SUPER_MAGIC, "gfs2", true },
	{ FUSE_SUPER_MAGIC, "fuse", true },
};

/*
 * The features, in struct order: each names a bool of struct backing_caps
 * (has_feature reads it through its offset), its JSON name is the field's
 * name, and its line says what is done without it.
 */
#define FEATURE(field, without) { #field, offsetof(struct backing_caps, field), without }
static const struct feature {
	const char *name;
	size_t offset; /* of its bool in struct backing_caps */
	const char *without;
} features[] = {
	FEATURE(rename_noreplace, "renameat2 RENAME_NOREPLACE: missing; link and unlink, and for "
				  "directories an empty placeholder or plain rename (never replacing)"),
	FEATURE(rename_exchange, "renameat2 RENAME_EXCHANGE: missing; refused with EINVAL, and a "
				 "directory renamed over an empty one moves it aside first"),
	FEATURE(tmpfile, "O_TMPFILE: missing; not used"),
	FEATURE(user_xattr, "user xattrs: missing; key records in file headers only, xattrs on "
			    "files fail with EOPNOTSUPP"),
	FEATURE(holes_trusted, "SEEK_HOLE/SEEK_DATA: untrusted; every block read as data, "
			       "SEEK_HOLE answers the end of the file, writes always reserve"),
	FEATURE(fallocate, "fallocate: missing; writes reserve no space ahead, fallocate on the "
			   "volume fails with EOPNOTSUPP"),
	FEATURE(punch_hole, "fallocate PUNCH_HOLE: missing; punching holes in the volume fails "
			    "with EOPNOTSUPP"),
	FEATURE(file_handles, "name_to_handle_at: missing; re-keying a file fails (its journal "
			      "names it by file handle)"),
	FEATURE(posix_locks, "fcntl F_SETLK: missing; not used"),
	FEATURE(ofd_locks, "fcntl F_OFD_SETLK: missing; in shared mode locks exclude only on this "
			   "host, and a re-key does not wait for other hosts' writers"),
	FEATURE(flock, "flock: missing; envelopefsctl rotate --offline and --to-kms fail (they "
		       "lock with it)"),
};
#define N_FEATURES (sizeof(features) / sizeof(features[0]))

static bool has_feature(const struct backing_caps *caps, const struct feature *f)
{
	return *(const bool *)((const char *)caps + f->offset);
}

/*
 * is_glusterfs - is the FUSE mount of device @dev a GlusterFS client?
 * Every mount of one FUSE connection shares its device number, and so its
 * file system type, so the first /proc/self/mountinfo entry with @dev tells.
 */
static bool is_glusterfs(dev_t dev)
{
	FILE *mountinfo = fopen("/proc/self/mountinfo", "re");
	char *line = NULL, fstype[64];
	const char *fields;
	unsigned int major_nr, minor_nr;
	size_t cap = 0;
	bool found = false;

	if (!mountinfo)
		return false;
	/* "ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [TAG...] - TYPE SOURCE OPTIONS";
	 * paths escape their spaces, so " - " is the separator. */
	while (!found && getline(&line, &cap, mountinfo) > 0) {
		found = sscanf(line, "%*d %*d %u:%u", &major_nr, &minor_nr) == 2 &&
			makedev(major_nr, minor_nr) == dev;
	}
	fields = found ? strstr(line, " - ") : NULL;
	found = fields && sscanf(fields + 3, "%63s", fstype) == 1 &&
		strcmp(fstype, "fuse.glusterfs") == 0;
	free(line);
	fclose(mountinfo);
	return found;
}

/* probe_fs_type - fs_type, fs_name and shared, from fstatfs (and mountinfo for FUSE). */
static int probe_fs_type(int root_fd, struct backing_caps *caps)
{
	struct statfs sfs;
	struct stat st;
	size_t i;

	if (fstatfs(root_fd, &sfs) < 0)
		return -errno;
	caps->fs_type = (long)sfs.f_type;
	for (i = 0; i < sizeof(fs_kinds) / sizeof(fs_kinds[0]); i++) {
		if ((uint32_t)sfs.f_type == fs_kinds[i].magic) {
			caps->fs_name = fs_kinds[i].name;
			caps->shared = fs_kinds[i].shared;
			break;
		}
	}
	if ((uint32_t)sfs.f_type == FUSE_SUPER_MAGIC && fstat(root_fd, &st) == 0 &&
	    is_glusterfs(st.st_dev))
		caps->fs_name = "glusterfs";
	return 0;
}

/* create_file - a new, empty file @name in @dir: an O_RDWR fd, or -1. */
static int create_file(int dir, const char *name)
{
	return openat(dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
}

/* write_text - a new file @name in @dir holding @text, closed again. */
static bool write_text(int dir, const char *name, const char *text)
{
	size_t len = strlen(text);
	int fd = create_file(dir, name);
	bool written;

	if (fd < 0)
		return false;
	written = pwrite(fd, text, len, 0) == (ssize_t)len;
	close(fd);
	return written;
}

/* holds_text - does file @name in @dir hold exactly @text (a few bytes)? */
static bool holds_text(int dir, const char *name, const char *text)
{
	char buf[16];
	size_t len = strlen(text);
	int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t got;

	if (fd < 0)
		return false;
	got = pread(fd, buf, sizeof(buf), 0);
	close(fd);
	return got == (ssize_t)len && memcmp(buf, text, len) == 0;
}

static bool filled_with(const uint8_t *buf, size_t len, uint8_t byte)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (buf[i] != byte)
			return false;
	return true;
}

/*
 * probe_rename_noreplace - RENAME_NOREPLACE must move a file to a missing
 * name, and fail with EEXIST onto an existing one, leaving both as they
 * were.  A backing that replaces the target instead ignores the flag:
 * that is as good as missing.
 */
static bool probe_rename_noreplace(int dir)
{
	if (!write_text(dir, "noreplace.a", "a") || !write_text(dir, "noreplace.c", "c"))
		return false;
	if (renameat2(dir, "noreplace.a", dir, "noreplace.b", RENAME_NOREPLACE) < 0)
		return false; /* FUSE without rename2: EINVAL; others ENOSYS, EOPNOTSUPP */
	if (faccessat(dir, "noreplace.a", F_OK, AT_SYMLINK_NOFOLLOW) == 0 ||
	    !holds_text(dir, "noreplace.b", "a"))
		return false;
	if (renameat2(dir, "noreplace.c", dir, "noreplace.b", RENAME_NOREPLACE) == 0 ||
	    errno != EEXIST)
		return false;
	return holds_text(dir, "noreplace.b", "a") && holds_text(dir, "noreplace.c", "c");
}

/* probe_rename_exchange - RENAME_EXCHANGE must swap two files' contents under their names. */
static bool probe_rename_exchange(int dir)
{
	if (!write_text(dir, "exchange.x", "x") || !write_text(dir, "exchange.y", "y"))
		return false;
	if (renameat2(dir, "exchange.x", dir, "exchange.y", RENAME_EXCHANGE) < 0)
		return false;
	return holds_text(dir, "exchange.x", "y") && holds_text(dir, "exchange.y", "x");
}

static bool probe_tmpfile(int dir)
{
	int fd = openat(dir, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd < 0)
		return false;
	close(fd); /* an O_TMPFILE file has no name: it is gone with its fd */
	return true;
}

/* xattr_holds - does @fd store @size bytes of @value as PROBE_XATTR and give them back? */
static bool xattr_holds(int fd, const uint8_t *value, uint8_t *back, size_t size)
{
	/* Each size is tried alone, as a key record is stored. */
	fremovexattr(fd, PROBE_XATTR);
	return fsetxattr(fd, PROBE_XATTR, value, size, 0) == 0 &&
	       fgetxattr(fd, PROBE_XATTR, back, size) == (ssize_t)size &&
	       memcmp(value, back, size) == 0;
}

/*
 * probe_xattrs - the largest user xattr value stored and read back.  The
 * growing sizes bracket the limit and halving the bracket finds it to the
 * byte, so a record just under an odd limit (ext4's is a little under its
 * block size) is not refused.  0, or -ENOMEM.
 */
static int probe_xattrs(int dir, struct backing_caps *caps)
{
	static const size_t sizes[] = { 64, 256, 512, 1024, 2048, 4096, 16384, XATTR_SIZE_MAX };
	size_t stored = 0, refused = 0, i, mid;
	uint8_t *value, *back;
	int fd = create_file(dir, "xattr");

	if (fd < 0)
		return 0;
	value = malloc(2 * (size_t)XATTR_SIZE_MAX);
	if (!value) {
		close(fd);
		return -ENOMEM;
	}
	back = value + XATTR_SIZE_MAX;
	for (i = 0; i < XATTR_SIZE_MAX; i++)
		value[i] = (uint8_t)(i * 31 + 7);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && !refused; i++) {
		if (xattr_holds(fd, value, back, sizes[i]))
			stored = sizes[i];
		else
			refused = sizes[i];
	}
	/* Invariant: stored is held, refused (when not 0) is not. */
	while (stored && refused > stored + 1) {
		mid = stored + (refused - stored) / 2;
		if (xattr_holds(fd, value, back, mid))
			stored = mid;
		else
			refused = mid;
	}
	free(value);
	close(fd);
	caps->xattr_max = stored;
	caps->user_xattr = stored > 0;
	return 0;
}

/* holds_data - does [@start, @end) of the holes probe's file hold written bytes? */
static bool holds_data(off_t start, off_t end)
{
	return start < HOLES_HEAD_LEN || (start < HOLES_SIZE && end > HOLES_DATA_AT);
}

/*
 * holes_told_truly - do SEEK_DATA and SEEK_HOLE tell the truth about the
 * holes probe's file @fd?  Data reported where there is none is never wrong
 * (it reads as zeros), a hole reported over written bytes is: walking the
 * file from 0, no range called a hole may hold any, and the data must run
 * to the end of the file; asked from inside the block, the answers must
 * agree.  An error (EINVAL, EOPNOTSUPP) or an ENXIO before the end of the
 * file is untrusted too.
 */
static bool holes_told_truly(int fd)
{
	const off_t inside = HOLES_DATA_AT + HOLES_DATA_LEN / 2;
	off_t from = 0, data, hole = 0;
	int ranges;

	/* First where the last write landed: a backing whose answers lag
	 * behind its writes is asked before it catches up. */
	data = lseek(fd, HOLES_HEAD_LEN, SEEK_DATA);
	if (data < HOLES_HEAD_LEN || data > HOLES_DATA_AT)
		return false;
	for (ranges = 0; ranges < HOLES_MAX_RANGES && hole != HOLES_SIZE; ranges++) {
		data = lseek(fd, from, SEEK_DATA);
		if (data < from || data >= HOLES_SIZE || (data > from && holds_data(from, data)))
			return false;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole <= data || hole > HOLES_SIZE)
			return false;
		from = hole;
	}
	return hole == HOLES_SIZE && lseek(fd, inside, SEEK_DATA) == inside &&
	       lseek(fd, inside, SEEK_HOLE) == HOLES_SIZE;
}

/*
 * probe_holes - SEEK_DATA and SEEK_HOLE must tell the truth right after
 * the writes, as the daemon asks after its own, and once the file is
 * synced.  GlusterFS 10.3 answers ENXIO for SEEK_DATA past the header most
 * of the time while its write-behind still holds a new file's writes
 * (synced, it answers right), so the question is put to HOLES_TRIALS new
 * files: one wrong answer is enough.
 */
static bool probe_holes(int dir)
{
	uint8_t bytes[HOLES_DATA_LEN];
	bool trusted = true;
	char name[16];
	int trial, fd;

	memset(bytes, 0xa5, sizeof(bytes));
	for (trial = 0; trial < HOLES_TRIALS && trusted; trial++) {
		snprintf(name, sizeof(name), "holes.%d", trial);
		fd = create_file(dir, name);
		if (fd < 0)
			return false;
		trusted = pwrite(fd, bytes, HOLES_HEAD_LEN, 0) == HOLES_HEAD_LEN &&
			  pwrite(fd, bytes, HOLES_DATA_LEN, HOLES_DATA_AT) == HOLES_DATA_LEN &&
			  holes_told_truly(fd);
		/* One fsync is enough to see the file system's own answer. */
		if (trusted && trial == HOLES_TRIALS - 1)
			trusted = fsync(fd) == 0 && holes_told_truly(fd);
		close(fd);
	}
	return trusted;
}

/* probe_fallocate - FALLOC_FL_KEEP_SIZE must reserve without growing the file. */
static bool probe_fallocate(int dir)
{
	struct stat st;
	int fd = create_file(dir, "fallocate");
	bool works;

	if (fd < 0)
		return false;
	works = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 65536) == 0 && fstat(fd, &st) == 0 &&
		st.st_size == 0;
	close(fd);
	return works;
}

/* probe_punch_hole - a punched range must read as zeros, the rest and the size stay. */
static bool probe_punch_hole(int dir)
{
	uint8_t buf[8192];
	struct stat st;
	int fd = create_file(dir, "punch");
	bool works;

	if (fd < 0)
		return false;
	memset(buf, 0x5a, sizeof(buf));
	works = pwrite(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf) &&
		fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0 &&
		pread(fd, buf, sizeof(buf), 0) == (ssize_t)sizeof(buf) &&
		filled_with(buf, 4096, 0) && filled_with(buf + 4096, 4096, 0x5a) &&
		fstat(fd, &st) == 0 && st.st_size == (off_t)sizeof(buf);
	close(fd);
	return works;
}

/* probe_file_handles - name_to_handle_at on a file.  0, or -ENOMEM. */
static int probe_file_handles(int dir, struct backing_caps *caps)
{
	struct file_handle *fh = malloc(sizeof(*fh) + MAX_HANDLE_SZ);
	int fd, mount_id;

	if (!fh)
		return -ENOMEM;
	fd = create_file(dir, "handle");
	fh->handle_bytes = MAX_HANDLE_SZ;
	caps->file_handles = fd >= 0 && name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) == 0;
	if (fd >= 0)
		close(fd);
	free(fh);
	return 0;
}

/*
 * probe_locks - take and release each kind of whole-file write lock.  Each
 * is released before the next is tried: NFS makes flock() a POSIX lock,
 * and OFD locks conflict with POSIX ones even within one process.
 */
static void probe_locks(int dir, struct backing_caps *caps)
{
	struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET };   /* l_pid 0, as OFD wants */
	struct flock unlock = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
	int fd = create_file(dir, "locks");

	if (fd < 0)
		return;
	caps->posix_locks = fcntl(fd, F_SETLK, &lock) == 0 && fcntl(fd, F_SETLK, &unlock) == 0;
	caps->ofd_locks = fcntl(fd, F_OFD_SETLK, &lock) == 0 && fcntl(fd, F_OFD_SETLK, &unlock) == 0;
	caps->flock = flock(fd, LOCK_EX | LOCK_NB) == 0 && flock(fd, LOCK_UN) == 0;
	close(fd);
}

/*
 * probe_features - try every feature in the scratch directory @dir.  A
 * probe that fails for any reason reports its feature missing: the
 * fallback is always safe, the feature only when it was seen to work.
 * Every probe closes its files, so that NFS can remove them (an open file
 * is only renamed to .nfsXXXX).  0, or -ENOMEM.
 */
static int probe_features(int dir, struct backing_caps *caps)
{
	int ret;

	caps->rename_noreplace = probe_rename_noreplace(dir);
	caps->rename_exchange = probe_rename_exchange(dir);
	caps->tmpfile = probe_tmpfile(dir);
	caps->holes_trusted = probe_holes(dir);
	caps->fallocate = probe_fallocate(dir);
	caps->punch_hole = probe_punch_hole(dir);
	probe_locks(dir, caps);
	ret = probe_xattrs(dir, caps);
	if (ret == 0)
		ret = probe_file_handles(dir, caps);
	return ret;
}

/*
 * empty_scratch - remove every entry of the scratch directory @dir (all are
 * the probe's: its name is random) and close @dir.  Passes repeat until one
 * finds nothing: a network file system's readdir may skip entries while
 * others are removed.  0, or -errno.
 */
static int empty_scratch(int dir)
{
	DIR *listing = fdopendir(dir);
	struct dirent *de;
	int ret = 0, removed;

	if (!listing) {
		ret = -errno;
		close(dir);
		return ret;
	}
	do {
		removed = 0;
		rewinddir(listing);
		while (ret == 0 && (de = readdir(listing)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			if (unlinkat(dirfd(listing), de->d_name, 0) < 0)
				ret = -errno;
			else
				removed++;
		}
	} while (ret == 0 && removed);
	closedir(listing);
	return ret;
}

int backing_probe(int root_fd, struct backing_caps *caps)
{
	char scratch[sizeof(SCRATCH_PREFIX) + 2 * SCRATCH_ID_LEN];
	uint8_t id[SCRATCH_ID_LEN];
	int home, dir, ret, cleanup;

	*caps = (struct backing_caps){ .fs_name = "unknown" };
	ret = probe_fs_type(root_fd, caps);
	if (ret == 0)
		ret = crypto_random(id, sizeof(id));
	if (ret < 0)
		return ret;
	memcpy(scratch, SCRATCH_PREFIX, strlen(SCRATCH_PREFIX));
	hex_encode(id, sizeof(id), scratch + strlen(SCRATCH_PREFIX));
	if (mkdirat(root_fd, VOLUME_PROBE_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	home = openat(root_fd, VOLUME_PROBE_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (home < 0)
		return -errno;
	if (mkdirat(home, scratch, 0700) < 0) {
		ret = -errno;
		close(home);
		return ret;
	}
	dir = openat(home, scratch, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	ret = dir < 0 ? -errno : probe_features(dir, caps);
	/* Whatever happened above, nothing the probe made stays behind. */
	cleanup = dir < 0 ? 0 : empty_scratch(dir);
	if (unlinkat(home, scratch, AT_REMOVEDIR) < 0 && cleanup == 0)
		cleanup = -errno;
	close(home);
	if (ret == 0)
		ret = cleanup;
	if (ret < 0)
		*caps = (struct backing_caps){ .fs_type = caps->fs_type, .fs_name = caps->fs_name,
					       .shared = caps->shared };
	return ret;
}

/* append - @text at @*len in @out (@cap bytes, kept NUL-terminated), truncated to fit. */
static void append(char *out, size_t cap, size_t *len, const char *text)
{
	size_t n = strlen(text);

	if (*len + 1 >= cap)
		return;
	if (n > cap - 1 - *len)
		n = cap - 1 - *len;
	memcpy(out + *len, text, n);
	*len += n;
	out[*len] = '\0';
}

size_t backing_fallbacks(const struct backing_caps *caps, char *out, size_t cap)
{
	size_t len = 0, i;

	if (cap == 0)
		return 0;
	out[0] = '\0';
	for (i = 0; i < N_FEATURES; i++) {
		if (has_feature(caps, &features[i]))
			continue;
		append(out, cap, &len, features[i].without);
		append(out, cap, &len, "\n");
	}
	return len;
}

/* put - printf at @*len in @out (@cap bytes); false when it did not fit. */
static bool __attribute__((format(printf, 4, 5)))
put(char *out, size_t cap, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out + *len, cap - *len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap - *len)
		return false;
	*len += (size_t)n;
	return true;
}

int backing_caps_json(const struct backing_caps *caps, char *out, size_t cap)
{
	size_t len = 0, i;
	bool fits;

	/* fs_name is one of fs_kinds' names: nothing in it to escape. */
	fits = put(out, cap, &len, "{\"fs\":\"%s\",\"fs_type\":%ld,\"shared\":%s",
		   caps->fs_name ? caps->fs_name : "unknown", caps->fs_type,
		   caps->shared ? "true" : "false");
	for (i = 0; fits && i < N_FEATURES; i++)
		fits = put(out, cap, &len, ",\"%s\":%s", features[i].name,
			   has_feature(caps, &features[i]) ? "true" : "false");
	if (fits)
		fits = put(out, cap, &len, ",\"xattr_max\":%zu}", caps->xattr_max);
	return fits ? (int)len : -ENOSPC;
}

const char *backing_refusal(const struct backing_caps *caps, bool xattr_records, size_t record_len)
{
	if (!xattr_records)
		return NULL;
	if (!caps->user_xattr)
		return "the backing file system stores no user xattrs, and --header xattr keeps "
		       "each file's key record in one: choose --header file";
	if (caps->xattr_max < record_len)
		return "the backing file system's user xattrs are too small for a key record: "
		       "choose --header file";
	return NULL;
}
