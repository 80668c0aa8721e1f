// SPDX-License-Identifier: MIT
/*
 * envelopefsctl scope create --convert - turn a non-empty directory of a
 * mounted volume into a key scope, online and resumably (fs/scope_convert.h,
 * docs/FORMAT.md "Converting a directory into a scope"):
 *
 *   check:   no hard link crosses DIR's boundary (a scope cannot span one:
 *            EXDEV, as a link across it would be), no symlink has hard links;
 *   start:   the daemon makes DIR a converting scope (or finds it one: resume);
 *   walk:    top down, each directory converted by the daemon (its names,
 *            symlink targets and own xattrs), then each of its regular files
 *            still keyed by the volume's KMS re-keyed (ENVELOPEFS_IOC_REKEY:
 *            a new DEK from the scope's KMS, its xattrs sealed anew);
 *   check:   a walk finds no directory with anything left to convert (a
 *            directory moved in after the walk had passed it) and no record
 *            under another key than the scope's (a second walk runs if it
 *            did), and no hard link across the boundary was made meanwhile;
 *   end:     the daemon stores the definition without its converting flag,
 *            unless something was renamed or linked inside the scope since
 *            the check began (EAGAIN: it may have hidden a directory from
 *            the check; the walks run again).
 *
 * Every step is atomic in the daemon, so the tool may die anywhere: the
 * same command resumes.  ENVELOPEFS_CONVERT_KILL_AFTER=N (tests) makes the
 * tool kill itself with SIGKILL once it has re-keyed N files (0: as soon as
 * the scope exists).
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define ENVELOPEFS_SCOPE_OPS_TOOL_ONLY
#include "fs/scope_convert.h"
#include "fs/status.h"
#include "tools/ctl.h"
#include "tools/ctl_scope.h"

#define KILL_AFTER_ENV "ENVELOPEFS_CONVERT_KILL_AFTER"
#define PASSES 3

/* A file with several links, and how many of them the walk met under DIR. */
struct linked {
	dev_t dev;
	ino_t ino;
	nlink_t nlink, seen;
	mode_t type;
	char *path;
};

static struct {
	struct linked *v;
	size_t n;
	int err;
	char *nested; /* a scope root found below DIR */
} links;

static int count_link(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	char id[SCOPE_ID_TEXT + 1];
	struct linked *l;
	size_t i;

	if (type == FTW_D && ftw->level > 0 && getxattr(path, SCOPE_XATTR, id, sizeof(id)) > 0) {
		links.nested = strdup(path);
		links.err = links.nested ? 0 : ENOMEM;
		return 1;
	}
	if (type == FTW_D || type == FTW_DP || st->st_nlink < 2)
		return 0;
	for (i = 0; i < links.n; i++)
		if (links.v[i].dev == st->st_dev && links.v[i].ino == st->st_ino)
			break;
	if (i == links.n) {
		l = realloc(links.v, (links.n + 1) * sizeof(*l));
		if (!l || !(path = strdup(path))) {
			links.v = l ? l : links.v;
			links.err = ENOMEM;
			return 1;
		}
		links.v = l;
		links.v[links.n++] = (struct linked){ st->st_dev, st->st_ino, st->st_nlink, 0,
						      st->st_mode & S_IFMT, (char *)path };
	}
	links.v[i].seen++;
	return 0;
}

/*
 * check_links - refuse a tree with a hard link across its boundary, a
 * hard-linked symlink (its target is sealed in the link itself, shared by
 * both names), or a scope root below its top (no nested scopes).  A CTL_*
 * code, reported.
 */
static int check_links(const char *dir)
{
	int code = CTL_OK;

	links.n = 0;
	links.err = 0;
	links.nested = NULL;
	if (nftw(dir, count_link, 16, FTW_PHYS | FTW_MOUNT) != 0)
		code = links.nested ? ctl_err(CTL_FAILED, "%s: a key scope already: nested scopes are "
							  "refused", links.nested)
				    : ctl_err(CTL_FAILED, "%s: %s", dir,
					      strerror(links.err ? links.err : errno));
	free(links.nested);
	for (size_t i = 0; i < links.n; i++) {
		if (code == CTL_OK && links.v[i].seen < links.v[i].nlink)
			code = ctl_err(CTL_FAILED, "%s: has a hard link outside %s, which a key "
						   "scope cannot span (EXDEV): remove or copy that "
						   "link first", links.v[i].path, dir);
		else if (code == CTL_OK && links.v[i].type == S_IFLNK)
			code = ctl_err(CTL_FAILED, "%s: a symlink with hard links cannot be "
						   "converted: make it a single link first",
				       links.v[i].path);
		free(links.v[i].path);
	}
	free(links.v);
	links.v = NULL;
	return code;
}

struct walk {
	char key_ref[512]; /* the scope's master key, which every record must name */
	unsigned long rekeyed, left;
	long kill_after;   /* < 0: never */
	bool check;	   /* the checking walk: count what it finds left (and converts) */
};

/* key_ref_of - the key reference the record of @path names, into @out; 0, or ENODATA/errno. */
static int key_ref_of(const char *path, char *out, size_t cap)
{
	char text[1024], ref[1024];
	ssize_t len = getxattr(path, KEY_XATTR, text, sizeof(text) - 1);

	if (len < 0)
		return errno;
	text[len] = '\0';
	if (sscanf(text, "%*u %1023s", ref) != 1 || strlen(ref) >= cap)
		return EBADMSG;
	memcpy(out, ref, strlen(ref) + 1);
	return 0;
}

/* convert_file - re-key regular file @path unless its record is the scope's already. */
static int convert_file(struct walk *w, const char *path)
{
	char ref[512];
	int err = key_ref_of(path, ref, sizeof(ref)), fd;

	if (err == ENODATA || (err == 0 && strcmp(ref, w->key_ref) == 0))
		return CTL_OK; /* no record yet (its first will be the scope's), or done */
	if (err)
		return ctl_err(CTL_FAILED, "%s: cannot read its key record: %s", path, strerror(err));
	if (w->check) {
		w->left++;
		return CTL_OK;
	}
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return ctl_err(CTL_FAILED, "%s: %s", path, strerror(errno));
	err = ioctl(fd, ENVELOPEFS_IOC_REKEY) < 0 ? errno : 0;
	close(fd);
	if (err && err != ENODATA)
		return ctl_err(err == EIO ? CTL_INTEGRITY : CTL_FAILED,
			       "%s: not re-keyed into the scope: %s%s", path, strerror(err),
			       err == EIO ? " (the daemon's log says why)" : "");
	if (!err && ++w->rekeyed == (unsigned long)w->kill_after)
		raise(SIGKILL); /* tests: a converter killed mid-way */
	return CTL_OK;
}

/*
 * convert_tree - directory @path (the daemon converts its names first), then
 * its entries in listing order: files re-keyed, subdirectories recursed.
 */
static int convert_tree(struct walk *w, const char *path)
{
	char child[PATH_MAX];
	struct dirent *de;
	struct stat st;
	int code = CTL_OK;
	DIR *dp;

	/* The check converts too, and says whether it had to (EINPROGRESS). */
	if (setxattr(path, SCOPE_CONVERT_XATTR, w->check ? SCOPE_CONVERT_CHECK : "",
		     w->check ? strlen(SCOPE_CONVERT_CHECK) : 0, 0) < 0) {
		if (!w->check || errno != EINPROGRESS)
			return ctl_scope_error(path, errno);
		w->left++;
	}
	dp = opendir(path);
	if (!dp)
		return ctl_err(CTL_FAILED, "%s: %s", path, strerror(errno));
	while (code == CTL_OK && (de = readdir(dp))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(child, sizeof(child), "%s/%s", path, de->d_name) >=
		    sizeof(child)) {
			code = ctl_err(CTL_FAILED, "%s/%s: path too long", path, de->d_name);
		} else if (fstatat(dirfd(dp), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) /* removed meanwhile: nothing to convert */
				code = ctl_err(CTL_FAILED, "%s: %s", child, strerror(errno));
		} else if (S_ISREG(st.st_mode)) {
			code = convert_file(w, child);
		} else if (S_ISDIR(st.st_mode)) {
			code = convert_tree(w, child);
		}
	}
	closedir(dp);
	return code;
}

/* scope_key_ref - the master key of the scope whose root is @dir.  A CTL_* code. */
static int scope_key_ref(const char *dir, char *out, size_t cap)
{
	int err = key_ref_of(dir, out, cap);

	return err ? ctl_err(CTL_FAILED, "%s: the daemon describes no scope key: %s", dir,
			     strerror(err))
		   : CTL_OK;
}

int ctl_scope_convert(const char *dir, int fd, const struct scope_create_arg *arg)
{
	const char *kill_after = getenv(KILL_AFTER_ENV);
	struct walk w = { .kill_after = kill_after ? atol(kill_after) : -1 };
	int code = check_links(dir), rc, pass;
	unsigned moved = 0;

	if (code != CTL_OK)
		return code;
	rc = ioctl(fd, ENVELOPEFS_IOC_SCOPE_CONVERT, arg);
	if (rc < 0 && errno == EBUSY)
		return ctl_err(CTL_FAILED, "%s: being converted into a scope on another KMS, or "
					   "the volume is moving to another KMS: finish that first",
			       dir);
	if (rc < 0)
		return ctl_scope_error(dir, errno);
	fprintf(stderr, "envelopefsctl scope: %s: %s\n", dir,
		rc == 1 ? "resuming its conversion into a key scope"
			: "now a key scope; converting what it holds");
	if (w.kill_after == 0)
		raise(SIGKILL); /* tests: killed before converting anything */
	code = scope_key_ref(dir, w.key_ref, sizeof(w.key_ref));
	/* Convert, then check with a walk that counts what it finds left, then
	 * end; again if the check found something, or the daemon saw a rename
	 * or a link inside the scope while it walked (EAGAIN). */
	for (pass = 0, rc = -1; code == CTL_OK && rc < 0 && pass < PASSES; pass++) {
		w.check = false;
		code = convert_tree(&w, dir);
		w.check = true;
		w.left = 0;
		if (code == CTL_OK)
			code = convert_tree(&w, dir);
		/* A link made from outside into a directory the walk had not reached yet. */
		if (code == CTL_OK && w.left == 0)
			code = check_links(dir);
		if (code != CTL_OK || w.left)
			continue;
		rc = ioctl(fd, ENVELOPEFS_IOC_SCOPE_CONVERT_END);
		if (rc < 0 && errno == EBUSY)
			return ctl_err(CTL_FAILED, "%s: every file is converted, but a re-key is "
						   "running or was interrupted on this volume: once it "
						   "is done (an interrupted one: remount with the "
						   "scope's KMS reachable), run the command again to end "
						   "the conversion", dir);
		if (rc < 0 && errno != EAGAIN)
			return ctl_scope_error(dir, errno);
		moved += rc < 0;
	}
	if (code == CTL_OK && w.left)
		code = ctl_err(CTL_FAILED, "%s: %lu files or directories were still the volume's "
					   "(moved in meanwhile): run the command again", dir, w.left);
	else if (code == CTL_OK && rc < 0)
		code = ctl_err(CTL_FAILED, "%s: entries were renamed inside it during each of %u "
					   "checking walks: run the command again when it is "
					   "quieter", dir, moved);
	if (code != CTL_OK)
		return code;
	printf("%s: converted into a key scope: %lu files re-keyed under its KMS\n", dir,
	       w.rekeyed);
	return CTL_OK;
}
