// SPDX-License-Identifier: MIT
/*
 * envelopefsctl fsck: this host's table of file versions (format 3;
 * docs/FORMAT.md, "File versions"; fs/rollback.h).
 *
 * A file put back to an older version is found as the daemon finds it at
 * open: its authentic record's version is below what the table holds for
 * its file ID.  Online the daemon may raise a file's version, make it
 * durable and learn it between our read of the record and our read of the
 * table: the table is then ahead of the record we read, not of the file.
 * So a record found behind is read once more after the table, authenticated,
 * and only a record still behind is reported.  By rule R (fs/rollback.h) the
 * table never holds more than a record written before it was read: no false
 * finding, online or off.
 *
 * Offline, the entries of files no longer in the volume are found, and
 * removed with --repair (fsck_versions_tidy()).
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/rollback.h"
#include "tools/ctl_fsck.h"

struct fsck_versions {
	struct rollback_table table;
	/* the file ID of every record read, sorted by fsck_versions_tidy() */
	pthread_mutex_t lock;
	uint8_t (*ids)[RECORD_FILE_ID_LEN];
	size_t n_ids, cap_ids;
	bool ids_incomplete; /* one could not be kept: no entry is provably stale */
};

void fsck_versions_open(struct fsck *f, const char *state_root)
{
	struct fsck_versions *v;

	if (!record_tags_v3(&f->vol.cfg) || !state_root)
		return;
	v = calloc(1, sizeof(*v));
	if (v && rollback_table_at(state_root, f->vol.cfg.uuid, &v->table) == 0) {
		pthread_mutex_init(&v->lock, NULL);
		f->versions = v;
		return;
	}
	free(v);
	fprintf(stderr, "envelopefsctl fsck: cannot name this host's file versions under %s: "
		"files put back to older versions are not looked for\n", state_root);
}

void fsck_versions_close(struct fsck *f)
{
	if (!f->versions)
		return;
	pthread_mutex_destroy(&f->versions->lock);
	free(f->versions->ids);
	free(f->versions);
	f->versions = NULL;
}

/* still_behind - @fd's record now, authentic under @dek, of @rec's file, is below @seen. */
static bool still_behind(struct fsck *f, int fd, const struct key_record *rec,
			 const uint8_t *dek, uint64_t seen)
{
	struct key_record *now = malloc(sizeof(*now));
	bool behind = true;

	if (now && layout_read_record(&f->vol.layout, fd, now, NULL) == 0 &&
	    memcmp(now->file_id, rec->file_id, RECORD_FILE_ID_LEN) == 0 &&
	    record_check_mac(now, dek, f->vol.cfg.uuid) == 0)
		behind = now->file_version < seen;
	free(now);
	return behind;
}

bool fsck_version_rolled_back(struct fsck *f, int fd, const struct key_record *rec,
			      const uint8_t *dek, char *what, size_t what_len)
{
	uint64_t seen;

	if (!f->versions || !rollback_table_rolled_back(&f->versions->table, rec, &seen) ||
	    !still_behind(f, fd, rec, dek, seen))
		return false;
	snprintf(what, what_len,
		 "the file is at version %llu and this host saw version %llu: the storage put an "
		 "older copy back; the daemon answers EIO until it is restored or the volume is "
		 "mounted with -o accept_rollback",
		 (unsigned long long)rec->file_version, (unsigned long long)seen);
	return true;
}

void fsck_versions_note(struct fsck *f, const uint8_t *file_id)
{
	struct fsck_versions *v = f->versions;

	if (!v || f->online)
		return;
	pthread_mutex_lock(&v->lock);
	if (v->n_ids == v->cap_ids) {
		size_t cap = v->cap_ids ? 2 * v->cap_ids : 1024;
		void *grown = realloc(v->ids, cap * RECORD_FILE_ID_LEN);

		if (grown) {
			v->ids = grown;
			v->cap_ids = cap;
		}
	}
	if (v->n_ids < v->cap_ids)
		memcpy(v->ids[v->n_ids++], file_id, RECORD_FILE_ID_LEN);
	else
		v->ids_incomplete = true;
	pthread_mutex_unlock(&v->lock);
}

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, RECORD_FILE_ID_LEN);
}

/* Every record was read: no problem found, nothing mid re-key, no scope's tree left out. */
static bool every_record_read(const struct fsck *f)
{
	if (f->walk_incomplete || f->versions->ids_incomplete || f->n_scope_roots > 0)
		return false;
	for (size_t i = 0; i < f->n_findings; i++)
		if (f->findings[i].cls != FSCK_LEFTOVER ||
		    strncmp(f->findings[i].kind, "rekey", 5) == 0)
			return false;
	return true;
}

struct stale {
	struct fsck_versions *v;
	bool repair;
	size_t found, removed;
	int err;
};

static int stale_entry(void *arg, const uint8_t file_id[RECORD_FILE_ID_LEN])
{
	struct stale *s = arg;
	int rc;

	if (bsearch(file_id, s->v->ids, s->v->n_ids, RECORD_FILE_ID_LEN, cmp_id))
		return 0;
	s->found++;
	if (!s->repair)
		return 0;
	rc = rollback_table_remove(&s->v->table, file_id);
	if (rc == 0)
		s->removed++;
	else
		s->err = -rc;
	return 0;
}

void fsck_versions_tidy(struct fsck *f)
{
	struct fsck_versions *v = f->versions;
	struct stale s = { .v = v, .repair = f->repair };
	size_t n;
	int rc;

	if (!v || f->online || !every_record_read(f))
		return;
	if (v->n_ids)
		qsort(v->ids, v->n_ids, RECORD_FILE_ID_LEN, cmp_id);
	rc = rollback_table_each(&v->table, stale_entry, &s);
	if (rc < 0)
		fprintf(stderr, "envelopefsctl fsck: cannot read %s: %s\n", v->table.dir,
			strerror(-rc));
	if (s.found == 0)
		return;
	if (s.err)
		fprintf(stderr, "envelopefsctl fsck: cannot remove an entry of %s: %s\n",
			v->table.dir, strerror(s.err));
	/* After repair(): it is removed here, entry by entry, not by path. */
	n = f->n_findings;
	fsck_leftover(f, v->table.dir, "stale-versions", true, false,
		      "%zu entries of this host's file versions name files no longer in the "
		      "volume (deleted)", s.found);
	if (f->n_findings > n)
		f->findings[n].removed = f->repair && s.removed == s.found;
}
