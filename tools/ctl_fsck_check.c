// SPDX-License-Identifier: MIT
/*
 * envelopefsctl fsck: authenticating the objects the walk collected
 * (ctl_fsck.h), in parallel.  A regular file's key record is unwrapped
 * through the volume's KMS and its MAC checked, then every block is read
 * through fs/content.h as the daemon reads it (GCM, and a version-2 record's
 * hole ranges); its user xattrs, and a directory's, are opened under their
 * owner ID; a symlink's target is opened as readlink would.
 *
 * Online, a file being written can be caught between two writes: an object
 * that fails is reported only once it fails unchanged (check_item).
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "crypto/hex.h"
#include "crypto/secmem.h"
#include "fs/content.h"
#include "fs/linkstore.h"
#include "fs/rekey.h"
#include "tools/ctl_fsck.h"

/* One check of one object: findings are reported only when @report; the count of problems. */
struct pass {
	struct fsck *f;
	const struct fsck_item *it;
	bool report;
	unsigned problems;
};

static void problem(struct pass *p, enum fsck_class cls, const char *kind, int err,
		    const char *what)
{
	p->problems++;
	if (p->report)
		fsck_report(p->f, cls, p->it->path, p->it->backing, kind, err, "%s", what);
}

/*
 * xattr_value_opens - the stored value of xattr @name of @fd opens for its
 * plaintext name @plain under @owner: 0, -EBADMSG, or -errno.
 */
static int xattr_value_opens(struct pass *p, int fd, const char *name, const char *plain,
			     const uint8_t *owner)
{
	ssize_t n = fgetxattr(fd, name, NULL, 0);
	uint8_t *stored = NULL, *value = NULL;
	int rc;

	if (n < 0)
		return -errno;
	if (n < NAMES_XATTR_OVERHEAD)
		return -EBADMSG;
	stored = malloc((size_t)n);
	value = malloc((size_t)n);
	if (!stored || !value)
		rc = -ENOMEM;
	else if ((n = fgetxattr(fd, name, stored, (size_t)n)) < 0)
		rc = -errno;
	else if (n < NAMES_XATTR_OVERHEAD)
		rc = -EBADMSG;
	else
		rc = names_xattr_value_open(p->f->names, owner, plain, stored, (size_t)n, value);
	if (value) /* plaintext */
		secmem_wipe(value, (size_t)n);
	free(value);
	free(stored);
	return rc < 0 && rc != -ENOMEM && rc != -ERANGE && rc != -ENODATA ? -EBADMSG : rc;
}

/*
 * check_xattrs - every user xattr of @fd opens under @owner, name and value,
 * as the daemon's listxattr and getxattr open them.
 */
static void check_xattrs(struct pass *p, int fd, const uint8_t *owner)
{
	char *list = NULL, plain[NAMES_XATTR_NAME_MAX + 1], what[NAMES_XATTR_NAME_MAX + 96];
	ssize_t len = flistxattr(fd, NULL, 0);

	if (len > 0 && (list = malloc((size_t)len)))
		len = flistxattr(fd, list, (size_t)len);
	for (ssize_t off = 0; list && len > 0 && off < len; off += (ssize_t)strlen(list + off) + 1) {
		const char *name = list + off;
		int rc;

		if (!names_xattr_is_user(p->f->names, name) || strcmp(name, VOLUME_XATTR_NAME) == 0)
			continue;
		atomic_fetch_add(&p->f->xattrs, 1);
		if (names_xattr_name_open(p->f->names, owner, name, plain) < 0) {
			problem(p, FSCK_INTEGRITY, "xattr-name", 0,
				"an xattr name does not authenticate for this file (damaged, forged "
				"or copied from another file): listxattr leaves it out");
			continue;
		}
		rc = xattr_value_opens(p, fd, name, plain, owner);
		snprintf(what, sizeof(what), "the value of xattr user.%s %s",
			 plain + (strncmp(plain, "user.", 5) == 0 ? 5 : 0),
			 rc == -EBADMSG ? "does not authenticate (damaged, forged or copied)"
					: strerror(-rc));
		if (rc == -EBADMSG)
			problem(p, FSCK_INTEGRITY, "xattr-value", EIO, what);
		else if (rc < 0)
			problem(p, FSCK_IO, "io", -rc, what);
	}
	free(list);
}

/*
 * unwrap - the DEK of @rec into @dek, authenticated by the record's MAC.
 * 0, or 1 with the problem reported.
 */
static int unwrap(struct pass *p, const struct key_record *rec, uint8_t *dek)
{
	struct kms_pair keys = ctl_volume_keys(&p->f->vol);
	struct kms *kms = kms_pair_for(&keys, rec->key_ref);
	struct kms_context ctx;
	uint32_t version;
	char what[256 + RECORD_MAX_KEY_REF];
	int rc;

	if (!kms) {
		snprintf(what, sizeof(what),
			 "the key record names master key '%s', not this volume's: copied from "
			 "another volume", rec->key_ref);
		problem(p, FSCK_INTEGRITY, "record-foreign", EIO, what);
		return 1;
	}
	rc = kms_blob_version(kms, rec->wrapped, rec->wrapped_len, &version);
	if (rc < 0 || version != rec->key_version) {
		problem(p, FSCK_INTEGRITY, "record-corrupt", EIO,
			"the key record's wrapped key does not match its key version");
		return 1;
	}
	memcpy(ctx.volume_uuid, p->f->vol.cfg.uuid, sizeof(ctx.volume_uuid));
	memcpy(ctx.file_id, rec->file_id, sizeof(ctx.file_id));
	rc = kms_unwrap(kms, &ctx, rec->wrapped, rec->wrapped_len, dek);
	if (rc == -EBADMSG) {
		problem(p, FSCK_INTEGRITY, "record-unwrap", EIO,
			"the key record does not unwrap for this volume and file: tampered with, "
			"or copied from another file or volume");
		return 1;
	}
	if (rc < 0) {
		snprintf(what, sizeof(what), "cannot unwrap the file key: %s", kms_strerror(rc));
		problem(p, FSCK_KEY, "kms", -rc, what);
		return 1;
	}
	if (record_check_mac(rec, dek, p->f->vol.cfg.uuid) != 0) {
		problem(p, FSCK_INTEGRITY, "record-mac", EIO,
			"the key record fails its MAC: its fields were edited");
		return 1;
	}
	return 0;
}

/* check_blocks - every block of the open file @cf, as the daemon's read opens it. */
static void check_blocks(struct pass *p, const struct content_file *cf, uint64_t size)
{
	const struct layout *l = cf->layout;
	uint8_t *buf = content_thread_buffer(), *raw = NULL;
	uint64_t off = 0;

	if (!buf) {
		problem(p, FSCK_IO, "io", ENOMEM, "out of memory");
		return;
	}
	while (off < size) {
		size_t want = size - off < CONTENT_MAX_IO ? (size_t)(size - off) : CONTENT_MAX_IO;
		size_t done = 0, got = 0;
		uint64_t bad = 0;
		int rc = content_read(cf, buf, want, off, &done, &bad);
		char what[256];

		if (rc == 0 && done == 0)
			break;
		if (rc == 0) {
			off += done;
			continue;
		}
		if (rc != -EIO) {
			snprintf(what, sizeof(what), "cannot read: %s", strerror(-rc));
			problem(p, FSCK_IO, "io", -rc, what);
			break;
		}
		/* Say whether the bad block was zeroed or altered, then go on after it. */
		if (!raw)
			raw = malloc(l->sealed_size);
		if (raw && layout_pread_upto(cf->fd, raw, l->sealed_size, layout_block_offset(l, bad),
					     &got) == 0 && got > 0 && layout_is_hole(raw, got)) {
			/* Online, a writer's gap past the old end is recorded only at its
			 * fsync or close (docs/FORMAT.md, "Holes"). */
			snprintf(what, sizeof(what),
				 "block %llu is all zeros where the file has no hole: it was zeroed%s",
				 (unsigned long long)bad,
				 p->f->online ? " (or the file is open for writing with a gap not "
						"yet recorded: check again once it is closed)"
					      : "");
			problem(p, FSCK_INTEGRITY, "block-zeroed", EIO, what);
		} else {
			snprintf(what, sizeof(what),
				 "block %llu fails authentication: damaged, tampered with or moved",
				 (unsigned long long)bad);
			problem(p, FSCK_INTEGRITY, "block", EIO, what);
		}
		off = (bad + 1) * l->block_size;
	}
	atomic_fetch_add(&p->f->blocks, (size + l->block_size - 1) / l->block_size);
	free(raw);
	/* The plaintext read: only the first min(size, CONTENT_MAX_IO) bytes were used. */
	secmem_wipe(buf, size < CONTENT_MAX_IO ? (size_t)size : CONTENT_MAX_IO);
}

/*
 * A record flagged mid re-key: the journal named by its (new) file ID
 * finishes it at the next mount, if there is a valid one.
 */
static void rekeying(struct pass *p, const struct key_record *rec)
{
	char journal[sizeof(VOLUME_REKEY_DIR) + 2 * RECORD_FILE_ID_LEN + 1];
	struct rekey_journal_header h;

	memcpy(journal, VOLUME_REKEY_DIR "/", sizeof(VOLUME_REKEY_DIR));
	hex_encode(rec->file_id, RECORD_FILE_ID_LEN, journal + sizeof(VOLUME_REKEY_DIR));
	if (fsck_read_journal(p->f->root_fd, journal, &h) == 0 &&
	    memcmp(h.new_file_id, rec->file_id, RECORD_FILE_ID_LEN) == 0) {
		if (p->report)
			fsck_leftover(p->f, p->it->backing, "rekey-in-progress", false, false,
				      "%s: interrupted mid re-key: the next mount finishes it from "
				      "its journal (EIO until then)", p->it->path);
		return;
	}
	problem(p, FSCK_INTEGRITY, "record-rekeying", EIO,
		"the key record is flagged mid re-key and no valid journal finishes it");
}

/*
 * check_binding - a format-3 record lists the entries its file may be
 * reached by (docs/FORMAT.md, "Entry bindings"): the one walked to must be
 * one of them, as the daemon's open checks.  A record that lists none binds
 * the file to no name.
 */
static void check_binding(struct pass *p, const struct key_record *rec)
{
	uint8_t id[RECORD_BINDING_LEN];

	if (rec->bindings.n == 0)
		return;
	if (record_binding_of(p->it->dirid, p->it->name, id) != 0 ||
	    !record_bindings_has(&rec->bindings, id))
		problem(p, FSCK_INTEGRITY, "entry-binding", EIO,
			"the key record binds the file to other names: moved or swapped here");
}

static void check_file(struct pass *p)
{
	struct fsck *f = p->f;
	const struct layout *l = &f->vol.layout;
	struct key_record *rec = malloc(sizeof(*rec));
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN);
	struct content_file cf;
	struct stat st;
	uint64_t rest;
	char what[320];
	int fd = open(p->it->backing, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), rc;

	if (!rec || !dek) {
		problem(p, FSCK_IO, "io", ENOMEM, "out of memory");
		goto out;
	}
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (errno != ENOENT) /* gone meanwhile (online) */
			problem(p, FSCK_IO, "io", errno, strerror(errno));
		goto out;
	}
	atomic_fetch_add(&f->files, 1);
	if (st.st_size == 0 && l->placement == PLACEMENT_HEADER)
		goto out; /* a new file: no record, no content */
	if ((uint64_t)st.st_size < l->data_offset) {
		problem(p, FSCK_INTEGRITY, "truncated", EIO,
			"the file is shorter than its key-record header");
		goto out;
	}
	rest = ((uint64_t)st.st_size - l->data_offset) % l->sealed_size;
	if (rest && rest <= BLOCK_OVERHEAD) {
		snprintf(what, sizeof(what),
			 "the last %llu bytes are too short to be a block: truncated or corrupt",
			 (unsigned long long)rest);
		problem(p, FSCK_INTEGRITY, "block-truncated", EIO, what);
	}
	rc = layout_read_record(l, fd, rec, NULL);
	if (rc == -ENODATA && st.st_size == 0)
		goto out; /* xattr placement: an empty file without a record */
	if (rc == -ENODATA || rc == -EBADMSG) {
		problem(p, FSCK_INTEGRITY, rc == -ENODATA ? "record-missing" : "record-corrupt",
			EIO, rc == -ENODATA ? "the key record is missing"
					    : "the key record is corrupt (no valid slot)");
		goto out;
	}
	if (rc < 0) {
		problem(p, FSCK_IO, "io", -rc, "cannot read the key record");
		goto out;
	}
	fsck_versions_note(f, rec->file_id);
	if (rec->flags & RECORD_FLAG_REKEYING) {
		rekeying(p, rec);
		goto out;
	}
	if (unwrap(p, rec, dek) != 0)
		goto out;
	check_binding(p, rec);
	if (fsck_version_rolled_back(f, fd, rec, dek, what, sizeof(what)))
		problem(p, FSCK_INTEGRITY, "rolled-back", EIO, what);
	cf = (struct content_file){ .fd = fd, .layout = l,
				    .owner = { .key = dek, .volume_uuid = f->vol.cfg.uuid,
					       .file_id = rec->file_id },
				    .holes = rec->version == 2 ? &rec->holes : NULL };
	check_blocks(p, &cf, layout_plain_size(l, (uint64_t)st.st_size));
	if (names_encrypted(f->names))
		check_xattrs(p, fd, rec->file_id);
out:
	if (fd >= 0)
		close(fd);
	secmem_free(dek, KMS_DEK_LEN);
	block_thread_wipe();
	free(rec);
}

/* check_symlink - the stored target opens, as readlink through the mount opens it. */
static void check_symlink(struct pass *p)
{
	char stored[NAMES_TARGET_MAX + 1], *target = malloc(NAMES_TARGET_MAX + 1);
	uint8_t *sealed = malloc(NAMES_TARGET_SEALED_MAX);
	ssize_t n = readlink(p->it->backing, stored, sizeof(stored) - 1);
	struct names_target t;
	int rc;

	atomic_fetch_add(&p->f->symlinks, 1);
	if (!target || !sealed) {
		problem(p, FSCK_IO, "io", ENOMEM, "out of memory");
		goto out;
	}
	if (n < 0) {
		if (errno != ENOENT)
			problem(p, FSCK_IO, "io", errno, strerror(errno));
		goto out;
	}
	stored[n] = '\0';
	rc = names_target_parse(stored, &t);
	if (rc == 0 && t.form == NAMES_TARGET_V1)
		rc = names_link_open(p->f->names, p->it->dirid, p->it->name, stored, target);
	else if (rc == 0 && t.form == NAMES_TARGET_EXTERNAL &&
		 linkstore_read(p->f->root_fd, &t, sealed) == -EBADMSG) {
		problem(p, FSCK_INTEGRITY, "link-store", EIO,
			"the symlink's target in the link store is missing or of the wrong length");
		goto out;
	} else if (rc == 0) {
		rc = names_target_open(p->f->names, &t, sealed, NAMES_TARGET_TAG + t.len, target);
	}
	if (rc < 0)
		problem(p, FSCK_INTEGRITY, "symlink", EIO,
			"the symlink target does not authenticate (damaged, forged, or a version-1 "
			"link moved or renamed in the backing)");
out:
	if (target)
		secmem_wipe(target, NAMES_TARGET_MAX + 1);
	free(target);
	free(sealed);
}

/* check_dir - a directory's user xattrs, sealed to its ID. */
static void check_dir(struct pass *p)
{
	int fd = open(p->it->backing, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return; /* the walk reported it, or it went meanwhile */
	check_xattrs(p, fd, p->it->dirid);
	close(fd);
}

static unsigned check_once(struct fsck *f, const struct fsck_item *it, bool report)
{
	struct pass p = { .f = f, .it = it, .report = report };

	if (it->type == S_IFREG)
		check_file(&p);
	else if (it->type == S_IFLNK)
		check_symlink(&p);
	else
		check_dir(&p);
	return p.problems;
}

/* The backing object of @it as it is now, to tell whether a writer changed it. */
static bool same_state(const struct fsck_item *it, struct stat *before)
{
	struct stat now;
	bool same = lstat(it->backing, &now) == 0 && now.st_size == before->st_size &&
		    now.st_mtim.tv_sec == before->st_mtim.tv_sec &&
		    now.st_mtim.tv_nsec == before->st_mtim.tv_nsec &&
		    now.st_ctim.tv_sec == before->st_ctim.tv_sec &&
		    now.st_ctim.tv_nsec == before->st_ctim.tv_nsec;

	*before = now;
	return same;
}

/*
 * check_item - offline, one check.  Online, the daemon may be writing the
 * object: a failure counts only once a check fails with the object
 * unchanged across it (or on the last of ONLINE_TRIES attempts), and is then
 * reported by one more check.
 */
#define ONLINE_TRIES 3
static void check_item(struct fsck *f, const struct fsck_item *it)
{
	struct timespec pause = { 0, 200 * 1000 * 1000 };
	struct stat st;

	if (!f->online) {
		check_once(f, it, true);
		return;
	}
	if (lstat(it->backing, &st) < 0)
		return; /* gone meanwhile */
	for (int i = 0; i < ONLINE_TRIES; i++) {
		if (check_once(f, it, false) == 0)
			return;
		if (same_state(it, &st))
			break;
		nanosleep(&pause, NULL); /* a writer is at work: let it get on */
	}
	check_once(f, it, true);
}

static void run_item(void *arg, void *item)
{
	struct fsck *f = arg;

	check_item(f, item);
	free(item);
	atomic_fetch_add(&f->finished, 1);
}

static void worker_exit(void *arg)
{
	(void)arg;
	block_thread_wipe();
}

/* The progress line: while the walk goes on, the total is what it has found so far. */
static void progress(struct fsck *f, bool last)
{
	size_t done = atomic_load(&f->finished), total = f->queued, found;
	double elapsed = fsck_now() - f->started, rate = elapsed > 0 ? done / elapsed : 0;
	char eta[32] = "walking";

	if (!f->walking)
		snprintf(eta, sizeof(eta), "ETA %.0f s", rate > 0 ? (double)(total - done) / rate : 0);
	pthread_mutex_lock(&f->lock);
	found = f->n_findings;
	pthread_mutex_unlock(&f->lock);
	fprintf(stderr, "\r%zu/%zu%s objects, %zu findings, %.0f objects/s, %s%s", done, total,
		f->walking ? "+" : "", found, rate, eta, last ? "\n" : "   ");
	fflush(stderr);
}

static void tick(void *arg)
{
	progress(arg, false);
}

static bool show_progress(const struct fsck *f)
{
	return isatty(STDERR_FILENO) && !f->json;
}

int fsck_check_start(struct fsck *f)
{
	struct ctl_workq_ops ops = { .run = run_item, .worker_exit = worker_exit,
				     .tick = show_progress(f) ? tick : NULL, .tick_every = 0.2,
				     .arg = f };

	f->walking = true;
	return ctl_workq_start(f->jobs, &ops, &f->queue);
}

void fsck_check(struct fsck *f, struct fsck_item *it)
{
	f->queued++;
	ctl_workq_push(f->queue, it);
}

void fsck_check_finish(struct fsck *f)
{
	f->walking = false;
	ctl_workq_finish(f->queue);
	f->queue = NULL;
	if (show_progress(f))
		progress(f, true);
}
