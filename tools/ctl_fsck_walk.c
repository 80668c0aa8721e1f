// SPDX-License-Identifier: MIT
/*
 * envelopefsctl fsck: the walk of the backing tree (ctl_fsck.h).  Names,
 * directory IDs and side records are checked here, as the daemon's lookup
 * and readdir check them (fs/names.h); the objects behind the names are
 * handed to the workers (ctl_fsck_check.c) as they are found.  The
 * volume's own entries are sorted into what a reader needs and leftovers.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/scopedef.h"
#include "fs/rekey.h"
#include "fs/volepoch.h"
#include "fs/volkey.h"
#include "tools/ctl_fsck.h"

/*
 * dir_open - a stream of the entries of directory @name in @at: read as it
 * goes, never whole, so a directory of a million entries costs one buffer.
 * NULL with errno set.
 */
static DIR *dir_open(int at, const char *name)
{
	int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *dp;

	if (fd < 0)
		return NULL;
	dp = fdopendir(fd);
	if (!dp) {
		int err = errno;

		close(fd);
		errno = err;
	}
	return dp;
}

/* dir_next - the next entry of @dp but "." and "..": NULL at the end, or with errno set on an error. */
static const char *dir_next(DIR *dp)
{
	struct dirent *de;

	errno = 0;
	while ((de = readdir(dp)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			return de->d_name;
	return NULL;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && strcmp(s + n - m, suffix) == 0;
}

/* join - "@dir/@name" into a malloc'd string ("/" as @dir gives "/@name"). */
static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir), m = strlen(name);
	char *out = malloc(n + m + 2);

	if (out)
		snprintf(out, n + m + 2, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
	return out;
}

struct fsck_item *fsck_item_new(const char *backing, const char *path, const char *name,
				const struct stat *st, const uint8_t *dirid)
{
	size_t nb = strlen(backing) + 1, np = strlen(path) + 1, nn = strlen(name) + 1;
	struct fsck_item *it = malloc(sizeof(*it) + nb + np + nn);

	if (!it)
		return NULL;
	*it = (struct fsck_item){ .backing = (char *)(it + 1), .type = st->st_mode & S_IFMT,
				  .dev = st->st_dev, .ino = st->st_ino, .nlink = st->st_nlink };
	it->path = it->backing + nb;
	it->name = it->path + np;
	memcpy(it->backing, backing, nb);
	memcpy(it->path, path, np);
	memcpy(it->name, name, nn);
	if (dirid)
		memcpy(it->dirid, dirid, NAMES_DIRID_LEN);
	return it;
}

/*
 * add_item - hand the object to the workers (a hard-linked file through
 * fsck_links): 0, or -ENOMEM.
 */
static int add_item(struct fsck *f, const char *backing, const char *path, const char *name,
		    const struct stat *st, const uint8_t *dirid)
{
	struct fsck_item *it = fsck_item_new(backing, path, name, st, dirid);

	if (!it)
		return -ENOMEM;
	if (it->nlink > 1 && it->type != S_IFDIR)
		fsck_links_walked(f, it);
	else
		fsck_check(f, it);
	return 0;
}

/*
 * holds_user_entries - does the backing directory @name in @at hold, at any depth
 * below the volume's own hidden entries, an entry a listing would show?
 * A temporary directory (a crashed mkdir, rmdir or rename) never does.
 * Unreadable counts as yes: what cannot be seen is not provably orphaned.
 */
static bool holds_user_entries(struct fsck *f, int at, const char *name)
{
	DIR *dp = dir_open(at, name);
	const char *entry;
	bool found = false;

	if (!dp)
		return true;
	while (!found && (entry = dir_next(dp))) {
		struct stat st;

		if (names_classify(f->names, false, entry) != NAMES_ENTRY_HIDDEN)
			found = true;
		else if (fstatat(dirfd(dp), entry, &st, AT_SYMLINK_NOFOLLOW) < 0)
			found = true; /* unseen */
		else if (S_ISDIR(st.st_mode))
			found = holds_user_entries(f, dirfd(dp), entry);
		else if (!S_ISLNK(st.st_mode))
			found = true; /* the volume's hidden entries in a directory are links */
	}
	if (!found && errno)
		found = true; /* a listing cut short: unseen */
	closedir(dp);
	return found;
}

int fsck_read_journal(int dirfd, const char *path, struct rekey_journal_header *h)
{
	uint8_t *head = malloc(REKEY_JOURNAL_HEADER);
	int fd = openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), rc;

	rc = fd < 0 ? -errno : !head ? -ENOMEM : layout_pread_full(fd, head, REKEY_JOURNAL_HEADER, 0);
	if (rc == 0)
		rc = rekey_journal_decode(head, h);
	if (fd >= 0)
		close(fd);
	free(head);
	return rc == -ENODATA ? -EBADMSG : rc;
}

/* The re-key journals: a complete one is finished by the next mount, a ".tmp" one is debris. */
static void walk_rekey_dir(struct fsck *f, int root_fd, const char *backing)
{
	struct rekey_journal_header h;
	DIR *dp = dir_open(root_fd, VOLUME_REKEY_DIR);
	const char *name;

	if (!dp)
		return;
	while ((name = dir_next(dp))) {
		char *path = join(backing, name);

		if (!path)
			continue;
		if (has_suffix(name, ".tmp"))
			fsck_leftover(f, path, "rekey-journal-tmp", !f->online, false,
				      "the journal of a re-key that crashed before it was complete: "
				      "nothing needs it");
		else if (fsck_read_journal(dirfd(dp), name, &h) == -EBADMSG)
			fsck_leftover(f, path, "rekey-journal-damaged", false, false,
				      "not a valid re-key journal: the daemon's recovery leaves it "
				      "alone, and so does fsck");
		else
			fsck_leftover(f, path, "rekey-journal", false, false,
				      "an interrupted re-key: the next mount (or `envelopefsctl "
				      "rotate --offline`) finishes it; never removed by fsck");
		free(path);
	}
	closedir(dp);
}

/* envelopefs.probe holds nothing between probes: whatever is in it was left by a crash. */
static void walk_probe_dir(struct fsck *f, int root_fd, const char *backing)
{
	DIR *dp = dir_open(root_fd, VOLUME_PROBE_DIR);
	const char *name;

	if (!dp)
		return;
	while ((name = dir_next(dp))) {
		char *path = join(backing, name);

		if (path)
			fsck_leftover(f, path, "stale-probe", !f->online, true,
				      "a backing probe's scratch directory left by a crash");
		free(path);
	}
	closedir(dp);
}

/*
 * The volume's own entries of the backing root: what a reader needs is
 * left alone (and checked elsewhere), the rest are leftovers.  Returns true
 * for a name handled here.
 */
static bool root_entry(struct fsck *f, int root_fd, const char *name, const char *backing)
{
	char tmp_conf[] = VOLUME_CONFIG_NAME VOLUME_CONFIG_TMP_SUFFIX;
	char tmp_key[] = VOLKEY_NAME ".tmp";

	if (strcmp(name, VOLUME_CONFIG_NAME) == 0 || strcmp(name, VOLKEY_NAME) == 0 ||
	    strcmp(name, NAMES_LINK_STORE) == 0 || strcmp(name, SCOPE_REGISTRY) == 0 ||
	    strcmp(name, VOLEPOCH_NAME) == 0) /* checked by check_volume() */
		return true;
	if (strcmp(name, VOLEPOCH_TMP) == 0) {
		fsck_leftover(f, backing, "replacement-tmp", !f->online, false,
			      "a raise of the volume epoch that a crash interrupted: the epoch it "
			      "was to replace is still whole");
		return true;
	}
	if (strcmp(name, VOLUME_REKEY_DIR) == 0) {
		walk_rekey_dir(f, root_fd, backing);
		return true;
	}
	if (strcmp(name, VOLUME_PROBE_DIR) == 0) {
		walk_probe_dir(f, root_fd, backing);
		return true;
	}
	if (strcmp(name, tmp_conf) == 0 || strcmp(name, tmp_key) == 0) {
		fsck_leftover(f, backing, "replacement-tmp", !f->online, false,
			      "a replacement of the volume's %s that a crash interrupted: the "
			      "file it was to replace is still whole",
			      strcmp(name, tmp_conf) == 0 ? "configuration" : "key file");
		return true;
	}
	return false;
}

/* A hidden entry of an encrypted directory that is not a name, an ID or a root file. */
static void hidden_entry(struct fsck *f, int dirfd, const char *name, const char *backing)
{
	struct stat st;

	if (strcmp(name, NAMES_DIRID_ENTRY) == 0)
		return;
	if (has_prefix(name, NAMES_LONG_PREFIX) && has_suffix(name, NAMES_SIDE_SUFFIX)) {
		char entry[NAMES_MAX + 1];
		size_t n = strlen(name) - strlen(NAMES_SIDE_SUFFIX);

		if (n <= NAMES_MAX) {
			memcpy(entry, name, n);
			entry[n] = '\0';
			if (fstatat(dirfd, entry, &st, AT_SYMLINK_NOFOLLOW) == 0)
				return;
		}
		fsck_leftover(f, backing, "orphan-side-record", !f->online, false,
			      "the side record of a long name whose entry is gone (a crash "
			      "between the two)");
		return;
	}
	if (has_prefix(name, NAMES_TEMP_PREFIX) && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    (S_ISLNK(st.st_mode) || S_ISDIR(st.st_mode))) {
		bool user = false;

		if (S_ISDIR(st.st_mode))
			user = holds_user_entries(f, dirfd, name);
		fsck_leftover(f, backing, "temp-entry", !f->online && !user, S_ISDIR(st.st_mode),
			      user ? "a temporary entry holding named entries: left for a human"
				   : "a temporary entry of an operation a crash interrupted");
		return;
	}
	fsck_leftover(f, backing, "unknown-entry", false, false,
		      "an entry the volume does not use (hidden by the daemon): left alone");
}

/*
 * The plaintext name of backing entry @name in the encrypted directory
 * @dirfd (ID @dirid) into @out, as the daemon's readdir finds it: 0, 1 for
 * a hidden entry, or -EBADMSG (reported).
 */
static int decode_entry(struct fsck *f, int dirfd, const uint8_t *dirid, bool in_root,
			const char *name, const char *dpath, const char *backing, char *out)
{
	char full[NAMES_FULL_MAX + 1];
	enum names_entry kind = names_classify(f->names, in_root, name);
	int ret;

	if (kind == NAMES_ENTRY_HIDDEN)
		return 1;
	if (kind == NAMES_ENTRY_LONG && names_side_read(dirfd, name, full) < 0) {
		fsck_report(f, FSCK_INTEGRITY, NULL, backing, "long-name", EIO,
			    "in %s: the side record of a long name is missing or malformed", dpath);
		return -EBADMSG;
	}
	ret = names_decode(f->names, dirid, in_root, name, kind == NAMES_ENTRY_LONG ? full : NULL,
			   out);
	if (ret == -EBADMSG)
		fsck_report(f, FSCK_INTEGRITY, NULL, backing, "name", EIO,
			    "in %s: the %s does not authenticate for this directory (damaged, "
			    "forged or moved from another directory)",
			    dpath, kind == NAMES_ENTRY_LONG ? "long name or its side record" : "name");
	return ret == -ENOENT ? 1 : ret;
}

static void walk_dir(struct fsck *f, int at, const char *name, const char *backing,
		     const char *path, bool in_root);

/*
 * note_link - if @name in @dirfd is a version-2 symlink, its ID is in use,
 * whatever its name: a store file is an orphan only when no link at all,
 * readable or not, temporary or not, names it.
 */
static void note_link(struct fsck *f, int dirfd, const char *name)
{
	char stored[NAMES_TARGET_MAX + 1];
	struct names_target t;
	ssize_t n;

	if (!names_encrypted(f->names))
		return;
	n = readlinkat(dirfd, name, stored, sizeof(stored) - 1);
	if (n < 0)
		return;
	stored[n] = '\0';
	if (names_target_parse(stored, &t) == 0 && t.form != NAMES_TARGET_V1)
		fsck_note_link_id(f, t.id);
}

/* One entry of a directory: decoded, then checked (files, links) or walked (directories). */
static void walk_entry(struct fsck *f, int dirfd, const uint8_t *dirid, bool in_root,
		       const char *name, const char *backing, const char *path)
{
	char plain[NAMES_MAX + 1], *child_backing = join(backing, name), *child_path = NULL;
	struct stat st;
	int ret;

	if (!child_backing)
		goto out;
	if (in_root && root_entry(f, dirfd, name, child_backing))
		goto out;
	note_link(f, dirfd, name);
	ret = decode_entry(f, dirfd, dirid, in_root, name, path, child_backing, plain);
	if (ret == 1 && names_encrypted(f->names))
		hidden_entry(f, dirfd, name, child_backing);
	if (ret != 0)
		goto out;
	child_path = join(path, plain);
	if (!child_path)
		goto out;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT) /* gone meanwhile (online): nothing to check */
			fsck_report(f, FSCK_IO, child_path, child_backing, "io", errno, "%s",
				    strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode))
		walk_dir(f, dirfd, name, child_backing, child_path, false);
	else if (S_ISREG(st.st_mode) || (S_ISLNK(st.st_mode) && names_encrypted(f->names))) {
		if (add_item(f, child_backing, child_path, plain, &st, dirid) < 0)
			f->walk_incomplete = true;
	}
out:
	free(child_backing);
	free(child_path);
}

/* scope_root - whether @dirid is the root of one of the volume's key scopes. */
static bool scope_root(const struct fsck *f, const uint8_t *dirid)
{
	for (size_t i = 0; i < f->n_scope_roots; i++)
		if (memcmp(f->scope_roots[i], dirid, NAMES_DIRID_LEN) == 0)
			return true;
	return false;
}

/*
 * walk_dir - the directory @name in @at, streamed: the walk holds one open
 * directory per level of the tree, whatever their sizes.
 */
static void walk_dir(struct fsck *f, int at, const char *name, const char *backing,
		     const char *path, bool in_root)
{
	uint8_t dirid[NAMES_DIRID_LEN] = { 0 };
	DIR *dp = dir_open(at, name);
	const char *entry;
	struct stat st;

	if (!dp) {
		f->walk_incomplete = true;
		fsck_report(f, FSCK_IO, path, backing, "io", errno,
			    "cannot open the directory: %s", strerror(errno));
		return;
	}
	f->dirs++;
	if (names_encrypted(f->names)) {
		if (names_dirid_read(dirfd(dp), dirid) < 0) {
			f->walk_incomplete = true;
			fsck_report(f, FSCK_INTEGRITY, path, backing, "dirid", EIO,
				    "the directory ID (%s) is missing or damaged: every lookup and "
				    "listing in it fails; its entries were not checked",
				    NAMES_DIRID_ENTRY);
			goto out;
		}
		if (scope_root(f, dirid)) {
			/* Its names, xattrs and keys are its KMS's; checking them is a later
			 * increment.  Its links' store files are unseen: no orphan is provable. */
			f->walk_incomplete = true;
			fprintf(stderr, "%s: a key scope, not checked (its keys are its own KMS's)\n",
				path);
			goto out;
		}
		/* The directory's own user xattrs are sealed to its ID. */
		if (fstat(dirfd(dp), &st) == 0 && add_item(f, backing, path, "", &st, dirid) < 0)
			f->walk_incomplete = true;
	}
	while ((entry = dir_next(dp)))
		walk_entry(f, dirfd(dp), names_encrypted(f->names) ? dirid : NULL, in_root, entry,
			   backing, path);
	if (errno) {
		f->walk_incomplete = true;
		fsck_report(f, FSCK_IO, path, backing, "io", errno, "cannot list the directory: %s",
			    strerror(errno));
	}
out:
	closedir(dp);
}

static int cmp_link_id(const void *a, const void *b)
{
	return memcmp(a, b, NAMES_LINK_ID_LEN);
}

/* Files of the link store that no symlink of the volume names. */
static void walk_link_store(struct fsck *f)
{
	char dir[4096 + sizeof(NAMES_LINK_STORE) + 1];
	DIR *dp = dir_open(f->root_fd, NAMES_LINK_STORE);
	const char *name;

	if (!dp)
		return;
	snprintf(dir, sizeof(dir), "%s/%s", f->backing, NAMES_LINK_STORE);
	if (f->n_link_ids)
		qsort(f->link_ids, f->n_link_ids, NAMES_LINK_ID_LEN, cmp_link_id);
	while ((name = dir_next(dp))) {
		uint8_t id[NAMES_LINK_ID_LEN];
		char *path = join(dir, name);

		if (!path)
			continue;
		if (strlen(name) != NAMES_LINK_ID_TEXT ||
		    names_b64_decode(name, id, sizeof(id)) != NAMES_LINK_ID_LEN)
			fsck_leftover(f, path, "unknown-entry", false, false,
				      "not a link-store file name: left alone");
		else if (!f->n_link_ids ||
			 !bsearch(id, f->link_ids, f->n_link_ids, NAMES_LINK_ID_LEN, cmp_link_id))
			fsck_leftover(f, path, "orphan-link-store", !f->online && !f->walk_incomplete,
				      false,
				      f->walk_incomplete
					      ? "no symlink found names it, but part of the volume "
						"could not be walked: kept"
					      : "no symlink of the volume names it (a crash between "
						"the store file and its link)");
		free(path);
	}
	closedir(dp);
}

void fsck_walk(struct fsck *f)
{
	walk_dir(f, f->root_fd, ".", f->backing, "/", true);
	fsck_links_flush(f);
}

void fsck_walk_link_store(struct fsck *f)
{
	if (names_encrypted(f->names))
		walk_link_store(f);
}
