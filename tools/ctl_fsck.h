/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TOOLS_CTL_FSCK_H
#define ENVELOPEFS_TOOLS_CTL_FSCK_H

/*
 * envelopefsctl fsck: what its files share.  ctl_fsck.c runs the command
 * (volume-wide checks, repair, upgrade, the report), ctl_fsck_walk.c walks
 * the backing tree (names, directory IDs, side records, leftovers) and
 * hands each object to authenticate to ctl_fsck_check.c, whose workers
 * authenticate it (key records, blocks, symlink targets, xattrs) while the
 * walk goes on; ctl_fsck_links.c has a hard-linked file checked once.
 *
 * Memory is bounded by the queue between the walk and the workers
 * (tools/ctl_workq.h), not by the tree: across the whole tree fsck keeps
 * only what it cannot do without, compactly (fsck_links, the link IDs, the
 * findings).
 *
 * Every decoding goes through the code the daemon uses: crypto/record.h,
 * crypto/block.h, fs/layout.h, fs/content.h, fs/names.h, fs/linkstore.h.
 *
 * Invariant: the check changes nothing in the backing; only repair (offline,
 * after the walk) removes, and only what fsck_leftover() marked removable.
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "fs/names.h"
#include "tools/ctl.h"
#include "tools/ctl_workq.h"

/* What a finding is: an integrity problem (exit 3), a key failure (exit 4), an
 * I/O failure (exit 1), or a leftover (reported; --repair may remove it). */
enum fsck_class { FSCK_INTEGRITY, FSCK_KEY, FSCK_IO, FSCK_LEFTOVER };

struct fsck_finding {
	enum fsck_class cls;
	char *path;    /* plaintext path when known, else NULL */
	char *backing; /* backing path */
	const char *kind;
	int err;       /* the errno the daemon answers with (0: none, e.g. a hidden entry) */
	char *detail;
	bool removable; /* leftovers: provably orphaned, --repair removes it */
	bool recursive; /* removable: a directory to remove with what it holds */
	bool removed;
};

/* One object the workers authenticate: one allocation, its strings after it (fsck_item_new()). */
struct fsck_item {
	char *backing;		      /* backing path */
	char *path;		      /* plaintext path */
	char *name;		      /* plaintext name (version-1 symlinks are bound to it) */
	mode_t type;		      /* S_IFREG, S_IFLNK, S_IFDIR */
	uint8_t dirid[NAMES_DIRID_LEN]; /* its directory's ID (links); a directory's own (dirs) */
	dev_t dev;
	ino_t ino;
	nlink_t nlink;
};

struct fsck_versions;
struct key_record;

/*
 * The hard-linked files the walk has met (st_nlink > 1), by inode: a file
 * is checked once, under its first plaintext path (in strcmp order) among
 * its names.  Open addressing, at most half full.
 */
struct fsck_link_slot {
	dev_t dev;
	ino_t ino;		  /* 0: a free slot */
	nlink_t seen;		  /* names walked so far */
	struct fsck_item *first; /* the first path yet; NULL once handed to a worker */
};

struct fsck_links {
	struct fsck_link_slot *slot;
	size_t cap, used; /* cap a power of two (or 0), used <= cap / 2 */
};

struct fsck {
	/* settings */
	bool online, repair, upgrade, json;
	unsigned jobs;
	unsigned upgrade_to; /* --upgrade: the format version (fsck_upgrade_target()) */
	const char *state_dir; /* --state-dir, NULL: the default (fs/hoststate.h) */
	/* format 3: this host's table of file versions (fs/rollback.h), NULL: none */
	struct fsck_versions *versions;
	char backing[4096];
	struct ctl_volume vol;
	struct names *names;
	int root_fd;
	/* the walk, and the workers it feeds */
	struct ctl_workq *queue;
	size_t queued; /* objects handed to the workers (the walk's thread alone) */
	bool walking;  /* the walk goes on: queued is not the total yet */
	struct fsck_links links;
	bool walk_incomplete; /* a directory could not be read: no orphan is provable */
	/* the root directory IDs of the volume's key scopes (fs/scopedef.h), whose trees are
	 * under their own KMS: not checked here */
	uint8_t (*scope_roots)[NAMES_DIRID_LEN];
	size_t n_scope_roots;
	/* link IDs every symlink of the volume carries (orphan link-store files); the walk's */
	uint8_t (*link_ids)[NAMES_LINK_ID_LEN];
	size_t n_link_ids, cap_link_ids;
	/* findings, appended by any thread */
	struct fsck_finding *findings;
	size_t n_findings, cap_findings;
	pthread_mutex_t lock;
	/* counters */
	size_t dirs;
	atomic_size_t finished, files, symlinks, blocks, xattrs;
	double started;
};

/*
 * fsck_report - record a finding: @path may be NULL (not known), @fmt says
 * what is wrong.  Thread-safe.
 */
void fsck_report(struct fsck *f, enum fsck_class cls, const char *path, const char *backing,
		 const char *kind, int err, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

/* fsck_leftover - record a leftover; @removable: --repair may remove @backing. */
void fsck_leftover(struct fsck *f, const char *backing, const char *kind, bool removable,
		   bool recursive, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* fsck_note_link_id - a symlink carrying link ID @id exists (its store file is not an orphan). */
void fsck_note_link_id(struct fsck *f, const uint8_t *id);

/*
 * fsck_walk - walk the backing tree of @f: check every directory ID, name
 * and side record, find leftovers, note every link ID, and hand every
 * file, symlink and directory to authenticate to fsck_check() (a
 * hard-linked file once, through fsck_links_*).  Between
 * fsck_check_start() and fsck_check_finish().
 */
void fsck_walk(struct fsck *f);

/* fsck_walk_link_store - after fsck_walk(): the link store's files no symlink names. */
void fsck_walk_link_store(struct fsck *f);

struct rekey_journal_header;

/*
 * fsck_read_journal - the header of the re-key journal @path (relative to
 * @dirfd) into @h: 0, or -EBADMSG when it is not a journal the daemon's
 * recovery would act on (it leaves such a one for a human), or -errno.
 */
int fsck_read_journal(int dirfd, const char *path, struct rekey_journal_header *h);

/*
 * fsck_item_new - an item for the object @backing (plaintext @path, @name)
 * of status @st in the directory of ID @dirid (NULL: none), in one
 * allocation; NULL when out of memory.
 */
struct fsck_item *fsck_item_new(const char *backing, const char *path, const char *name,
				const struct stat *st, const uint8_t *dirid);

/* fsck_check_start - start f->jobs workers, progress on a tty.  0 or -ENOMEM. */
int fsck_check_start(struct fsck *f);

/* fsck_check - hand @it to a worker, which frees it; waits while the queue is full. */
void fsck_check(struct fsck *f, struct fsck_item *it);

/* fsck_check_finish - wait until every object handed over is checked, end the workers. */
void fsck_check_finish(struct fsck *f);

/*
 * fsck_links_walked - the walk met @it, a name of a file with st_nlink > 1:
 * hand the file to fsck_check() once all its names are walked, under the
 * first path of them; until then keep that first path.  Takes @it.
 */
void fsck_links_walked(struct fsck *f, struct fsck_item *it);

/*
 * fsck_links_flush - after the walk: the hard-linked files some of whose
 * names were not walked (in a key scope, removed meanwhile) go to
 * fsck_check() under the first path walked.
 */
void fsck_links_flush(struct fsck *f);

/* fsck_links_free - the table, and any item still in it. */
void fsck_links_free(struct fsck_links *l);

/*
 * ctl_fsck_versions.c.  fsck_versions_open - on a format-3 volume, this
 * host's table of file versions under state root @state_root into
 * f->versions (a lag only when it cannot be named).
 */
void fsck_versions_open(struct fsck *f, const char *state_root);

/*
 * fsck_version_rolled_back - is the authentic record @rec (of the open
 * backing file @fd, whose DEK is @dek) older than this host saw?  Then
 * true, with what to report in @what.
 */
bool fsck_version_rolled_back(struct fsck *f, int fd, const struct key_record *rec,
			      const uint8_t *dek, char *what, size_t what_len);

/* fsck_versions_note - a record of file ID @file_id exists (its entry is no stale one). */
void fsck_versions_note(struct fsck *f, const uint8_t *file_id);

/*
 * fsck_versions_tidy - after the check, offline: the entries of this
 * host's table whose file ID no record of the volume has (deleted files)
 * are a leftover; --repair removes them.  Only after a check that read
 * every record: a walk that missed a directory, a record it could not
 * read, a key scope's tree (not walked here) or a re-key under way could
 * hide a file that exists, and dropping its entry would forget its
 * rollback.
 */
void fsck_versions_tidy(struct fsck *f);

/* fsck_versions_close - release f->versions. */
void fsck_versions_close(struct fsck *f);

/*
 * ctl_fsck_upgrade.c.  fsck_upgrade_target - the format --upgrade raises
 * the volume to into @target: 3 where its header slots have room for
 * format 3's items, else 2.  CTL_OK, or an error printed (nothing to raise).
 */
int fsck_upgrade_target(struct fsck *f, unsigned *target);

/*
 * fsck_upgrade_epoch - after an upgrade to format 3 with a volume key: the
 * volume epoch file, noted on this host (a warning when it cannot be made:
 * the next mount makes it).
 */
void fsck_upgrade_epoch(struct fsck *f);

/* fsck_now - a monotonic clock in seconds. */
double fsck_now(void);

#endif
