// SPDX-License-Identifier: MIT
/*
 * envelopefsctl fsck: the walk of the backing tree (ctl_fsck.h).  Names,
 * directory IDs and side records are checked here, as the daemon's lookup
 * and readdir check them (fs/names.h); the objects behind the names are
 * collected for the workers (ctl_fsck_check.c).  The volume's own entries
 * are sorted into what a reader needs and leftovers.
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

/* A directory's entries, read whole first: side records are matched against them. */
struct entries {
	char **name;
	size_t n, cap;
};

static void entries_free(struct entries *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->name[i]);
	free(e->name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* entries_read - every entry of @dirfd but "." and "..", sorted.  0 or -errno. */
static int entries_read(int dirfd, struct entries *e)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *dp;

	memset(e, 0, sizeof(*e));
	if (fd < 0)
		return -errno;
	dp = fdopendir(fd);
	if (!dp) {
		close(fd);
		return -ENOMEM;
	}
	while ((de = readdir(dp))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (e->n == e->cap) {
			size_t cap = e->cap ? 2 * e->cap : 64;
			char **grown = realloc(e->name, cap * sizeof(*grown));
			if (!grown)
				break;
			e->name = grown;
			e->cap = cap;
		}
		if (!(e->name[e->n] = strdup(de->d_name)))
			break;
		e->n++;
	}
	closedir(dp);
	if (de) {
		entries_free(e);
		return -ENOMEM;
	}
	if (e->n) /* qsort() and bsearch() want a base even for no elements */
		qsort(e->name, e->n, sizeof(*e->name), cmp_str);
	return 0;
}

static bool entries_has(const struct entries *e, const char *name)
{
	return e->n && bsearch(&name, e->name, e->n, sizeof(*e->name), cmp_str) != NULL;
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

static int add_item(struct fsck *f, const char *backing, const char *path, const char *name,
		    const struct stat *st, const uint8_t *dirid)
{
	struct fsck_item *it;

	if (f->n_items == f->cap_items) {
		size_t cap = f->cap_items ? 2 * f->cap_items : 1024;
		struct fsck_item *grown = realloc(f->items, cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		f->items = grown;
		f->cap_items = cap;
	}
	it = &f->items[f->n_items];
	*it = (struct fsck_item){ .backing = strdup(backing), .path = strdup(path),
				  .name = strdup(name), .type = st->st_mode & S_IFMT,
				  .dev = st->st_dev, .ino = st->st_ino, .nlink = st->st_nlink };
	if (dirid)
		memcpy(it->dirid, dirid, NAMES_DIRID_LEN);
	if (!it->backing || !it->path || !it->name) {
		free(it->backing);
		free(it->path);
		free(it->name);
		return -ENOMEM;
	}
	f->n_items++;
	return 0;
}

/*
 * holds_user_entries - does the backing directory @fd hold, at any depth
 * below the volume's own hidden entries, an entry a listing would show?
 * A temporary directory (a crashed mkdir, rmdir or rename) never does.
 * Unreadable counts as yes: what cannot be seen is not provably orphaned.
 */
static bool holds_user_entries(struct fsck *f, int fd)
{
	struct entries e;
	bool found = false;

	if (entries_read(fd, &e) < 0)
		return true;
	for (size_t i = 0; i < e.n && !found; i++) {
		struct stat st;
		int sub;

		if (names_classify(f->names, false, e.name[i]) != NAMES_ENTRY_HIDDEN) {
			found = true;
		} else if (fstatat(fd, e.name[i], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			   S_ISDIR(st.st_mode)) {
			sub = openat(fd, e.name[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			found = sub < 0 || holds_user_entries(f, sub);
			if (sub >= 0)
				close(sub);
		} else if (!S_ISLNK(st.st_mode)) {
			found = true; /* the volume's hidden entries in a directory are links */
		}
	}
	entries_free(&e);
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

/* open_entries - the entries of the volume's own directory @name in @root_fd: its fd, or -1. */
static int open_entries(int root_fd, const char *name, struct entries *e)
{
	int fd = openat(root_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd >= 0 && entries_read(fd, e) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* The re-key journals: a complete one is finished by the next mount, a ".tmp" one is debris. */
static void walk_rekey_dir(struct fsck *f, int root_fd, const char *backing)
{
	struct rekey_journal_header h;
	struct entries e;
	int fd = open_entries(root_fd, VOLUME_REKEY_DIR, &e);

	if (fd < 0)
		return;
	for (size_t i = 0; i < e.n; i++) {
		char *path = join(backing, e.name[i]);

		if (!path)
			continue;
		if (has_suffix(e.name[i], ".tmp"))
			fsck_leftover(f, path, "rekey-journal-tmp", !f->online, false,
				      "the journal of a re-key that crashed before it was complete: "
				      "nothing needs it");
		else if (fsck_read_journal(fd, e.name[i], &h) == -EBADMSG)
			fsck_leftover(f, path, "rekey-journal-damaged", false, false,
				      "not a valid re-key journal: the daemon's recovery leaves it "
				      "alone, and so does fsck");
		else
			fsck_leftover(f, path, "rekey-journal", false, false,
				      "an interrupted re-key: the next mount (or `envelopefsctl "
				      "rotate --offline`) finishes it; never removed by fsck");
		free(path);
	}
	entries_free(&e);
	close(fd);
}

/* envelopefs.probe holds nothing between probes: whatever is in it was left by a crash. */
static void walk_probe_dir(struct fsck *f, int root_fd, const char *backing)
{
	struct entries e;
	int fd = open_entries(root_fd, VOLUME_PROBE_DIR, &e);

	if (fd < 0)
		return;
	for (size_t i = 0; i < e.n; i++) {
		char *path = join(backing, e.name[i]);

		if (path)
			fsck_leftover(f, path, "stale-probe", !f->online, true,
				      "a backing probe's scratch directory left by a crash");
		free(path);
	}
	entries_free(&e);
	close(fd);
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
static void hidden_entry(struct fsck *f, int dirfd, const struct entries *e, const char *name,
			 const char *backing)
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
			if (entries_has(e, entry))
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

		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			user = sub < 0 || holds_user_entries(f, sub);
			if (sub >= 0)
				close(sub);
		}
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

static void walk_dir(struct fsck *f, int dirfd, const char *backing, const char *path,
		     bool in_root);

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
static void walk_entry(struct fsck *f, int dirfd, const struct entries *e, const uint8_t *dirid,
		       bool in_root, const char *name, const char *backing, const char *path)
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
		hidden_entry(f, dirfd, e, name, child_backing);
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
	if (S_ISDIR(st.st_mode)) {
		int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (sub < 0) {
			f->walk_incomplete = true;
			fsck_report(f, FSCK_IO, child_path, child_backing, "io", errno,
				    "cannot open the directory: %s", strerror(errno));
			goto out;
		}
		walk_dir(f, sub, child_backing, child_path, false);
		close(sub);
	} else if (S_ISREG(st.st_mode) || (S_ISLNK(st.st_mode) && names_encrypted(f->names))) {
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

static void walk_dir(struct fsck *f, int dirfd, const char *backing, const char *path,
		     bool in_root)
{
	uint8_t dirid[NAMES_DIRID_LEN] = { 0 };
	struct entries e;
	struct stat st;
	int ret;

	f->dirs++;
	if (names_encrypted(f->names)) {
		if (names_dirid_read(dirfd, dirid) < 0) {
			f->walk_incomplete = true;
			fsck_report(f, FSCK_INTEGRITY, path, backing, "dirid", EIO,
				    "the directory ID (%s) is missing or damaged: every lookup and "
				    "listing in it fails; its entries were not checked",
				    NAMES_DIRID_ENTRY);
			return;
		}
		if (scope_root(f, dirid)) {
			/* Its names, xattrs and keys are its KMS's; checking them is a later
			 * increment.  Its links' store files are unseen: no orphan is provable. */
			f->walk_incomplete = true;
			fprintf(stderr, "%s: a key scope, not checked (its keys are its own KMS's)\n",
				path);
			return;
		}
		/* The directory's own user xattrs are sealed to its ID. */
		if (fstat(dirfd, &st) == 0 && add_item(f, backing, path, "", &st, dirid) < 0)
			f->walk_incomplete = true;
	}
	ret = entries_read(dirfd, &e);
	if (ret < 0) {
		f->walk_incomplete = true;
		fsck_report(f, FSCK_IO, path, backing, "io", -ret, "cannot list the directory: %s",
			    strerror(-ret));
		return;
	}
	for (size_t i = 0; i < e.n; i++)
		walk_entry(f, dirfd, &e, names_encrypted(f->names) ? dirid : NULL, in_root,
			   e.name[i], backing, path);
	entries_free(&e);
}

static int cmp_link_id(const void *a, const void *b)
{
	return memcmp(a, b, NAMES_LINK_ID_LEN);
}

/* Files of the link store that no symlink of the volume names. */
static void walk_link_store(struct fsck *f)
{
	char dir[4096 + sizeof(NAMES_LINK_STORE) + 1];
	struct entries e;
	int fd = open_entries(f->root_fd, NAMES_LINK_STORE, &e);

	if (fd < 0)
		return;
	snprintf(dir, sizeof(dir), "%s/%s", f->backing, NAMES_LINK_STORE);
	if (f->n_link_ids)
		qsort(f->link_ids, f->n_link_ids, NAMES_LINK_ID_LEN, cmp_link_id);
	for (size_t i = 0; i < e.n; i++) {
		uint8_t id[NAMES_LINK_ID_LEN];
		char *path = join(dir, e.name[i]);

		if (!path)
			continue;
		if (strlen(e.name[i]) != NAMES_LINK_ID_TEXT ||
		    names_b64_decode(e.name[i], id, sizeof(id)) != NAMES_LINK_ID_LEN)
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
	entries_free(&e);
	close(fd);
}

static int cmp_inode(const void *a, const void *b)
{
	const struct fsck_item *x = *(const struct fsck_item *const *)a;
	const struct fsck_item *y = *(const struct fsck_item *const *)b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return (x->ino > y->ino) - (x->ino < y->ino);
}

static int cmp_inode_path(const void *a, const void *b)
{
	int c = cmp_inode(a, b);

	return c ? c : strcmp((*(const struct fsck_item *const *)a)->path,
			      (*(const struct fsck_item *const *)b)->path);
}

/* Hard links: every name of a file is walked, its content is checked once, under its first path. */
static int mark_aliases(struct fsck *f)
{
	struct fsck_item **linked = malloc((f->n_items + 1) * sizeof(*linked));
	size_t n = 0;

	if (!linked)
		return -ENOMEM;
	for (size_t i = 0; i < f->n_items; i++)
		if (f->items[i].nlink > 1 && f->items[i].type != S_IFDIR)
			linked[n++] = &f->items[i];
	qsort(linked, n, sizeof(*linked), cmp_inode_path);
	for (size_t i = 1; i < n; i++)
		linked[i]->alias = cmp_inode(&linked[i - 1], &linked[i]) == 0;
	free(linked);
	return 0;
}

int fsck_walk(struct fsck *f)
{
	int fd = openat(f->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0) {
		fsck_report(f, FSCK_IO, "/", f->backing, "io", errno, "cannot open: %s",
			    strerror(errno));
		return 0;
	}
	walk_dir(f, fd, f->backing, "/", true);
	close(fd);
	return mark_aliases(f);
}

void fsck_walk_link_store(struct fsck *f)
{
	if (names_encrypted(f->names))
		walk_link_store(f);
}
