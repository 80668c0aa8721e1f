/* SPDX-License-Identifier: MIT */
/*
 * envelopefsctl rotate: move every file's key record onto the KMS's current
 * master-key version, without rewriting data.
 *
 * Online (MOUNTPOINT): the running daemon does each file under its inode
 * lock through the ENVELOPEFS_IOC_REWRAP ioctl (fs/status.h); applications keep
 * using the volume.  Offline (--offline BACKING): this process does the same
 * with rewrap_file() on the backing files, refusing a mounted volume.
 *
 * Each file is re-wrapped atomically (two-slot records), so the run can be
 * interrupted at any point and simply run again: files already on the
 * current version are counted and left alone.
 *
 * --rekey gives every selected file a fresh DEK and re-encrypts its content
 * (fs/rekey.h; online through ENVELOPEFS_IOC_REKEY).  A re-key has no version to
 * compare, so the run remembers the new file IDs it made in a state file
 * (one hex ID per line, appended as files finish); run again, it skips the
 * files whose ID is listed, and a run with no failure deletes the file.  A
 * crash between a re-key and its line only means that file is re-keyed
 * twice.
 *
 * --to-kms CONFIG moves the volume to another KMS (ctl_migrate.h keeps the
 * state): the same walk, where a record is done once it names the new
 * provider's key, whatever its version.  A walk is followed by a check
 * walk that changes nothing, so a record a rename carried past the walk is
 * found; only when none is left under the old KMS does the run finish.
 *
 * --shard I/N splits a run across hosts serving one volume: every shard walks
 * every directory, but keeps only the entries whose inode number hashes to
 * it (in_shard()).  The inode number is what every host's mount shows alike
 * (the daemon passes the backing one through) and what a re-key keeps, and
 * both names of a hard link share it; a path or a file ID has neither
 * property.  The volume key, carried by no file of its own, goes to shard 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define ENVELOPEFS_SCOPE_OPS_TOOL_ONLY
#include "fs/scope_ops.h"
#include "crypto/secmem.h"
#include "fs/names.h"
#include "fs/rekey.h"
#include "fs/rewrap.h"
#include "fs/status.h"
#include "fs/volepoch.h"
#include "fs/volkey.h"
#include "crypto/hex.h"
#include "tools/ctl.h"
#include "tools/ctl_daemon.h"
#include "tools/ctl_migrate.h"
#include "tools/ctl_scope.h"
#include "tools/ctl_workq.h"

static const char rotate_usage[] =
	"Usage: envelopefsctl rotate [OPTIONS] MOUNTPOINT [PATH...]\n"
	"       envelopefsctl rotate --offline [OPTIONS] BACKING\n"
	"       envelopefsctl rotate --to-kms CONFIG [--offline] [OPTIONS] MOUNTPOINT|BACKING\n"
	"       envelopefsctl rotate --scope [--to-kms CONFIG] [OPTIONS] DIR\n"
	"\n"
	"Re-wrap every regular file's data key under the KMS's current master-key\n"
	"version (after `envelopefsctl keyring rotate`).  Data is not rewritten.  Online,\n"
	"the mounted daemon does the work while applications keep running; PATHs limit\n"
	"the walk to subtrees of the mount.  Interrupted, it can be run again: files\n"
	"already current are left alone.  Key scopes are left to their own KMS: with\n"
	"--scope, DIR (the root of a key scope in a mounted volume) and everything under\n"
	"it is rotated under the scope's KMS instead, the scope key included.\n"
	"\n"
	"Options:\n"
	"  --check         change nothing; count files per key version, exit 1 if any\n"
	"                  is below the current version\n"
	"  --dry-run       walk and report what would be re-wrapped, change nothing\n"
	"  --jobs N        parallel workers (default 4)\n"
	"  --max-rate R    at most R re-wraps (KMS calls) per second (default: no limit)\n"
	"  --json          print the summary as JSON on stdout\n"
	"  --offline       work on an unmounted BACKING directory directly\n"
	"  --keyring PATH  (--offline) the keyring, if not where the volume says\n"
	"  --rekey         give every file a fresh data key and re-encrypt its content\n"
	"                  (a suspected key exposure); inode numbers and hard links\n"
	"                  stay.  Resumable: done files are listed in the state file\n"
	"  --state FILE    (--rekey) the state file (default:\n"
	"                  $XDG_STATE_HOME/envelopefs/rekey-<volume uuid>.ids, with\n"
	"                  $XDG_STATE_HOME defaulting to $HOME/.local/state; with\n"
	"                  --shard, rekey-<volume uuid>.shard-I-of-N.ids)\n"
	"  --shard I/N     do only part I of N (1 <= I <= N <= 4096): the files whose\n"
	"                  inode number hashes to I.  Run part k on host k of N, then\n"
	"                  `rotate --check` from any host; not with --to-kms, nor with\n"
	"                  --offline --rekey\n"
	"  --to-kms CONFIG move the volume to the KMS described by CONFIG (an INI file\n"
	"                  with one [kms] section: provider and settings, no secret):\n"
	"                  every key is re-wrapped by the new KMS, the data stays.\n"
	"                  Resumable; the old KMS is not needed once it finishes\n"
	"  --scope         DIR is the root of a key scope: rotate it (with --check,\n"
	"                  --dry-run, --rekey, --jobs, --max-rate, --json, --state), or\n"
	"                  with --to-kms CONFIG move it to another KMS\n"
	"\n"
	"Progress goes to stderr: a live line on a terminal, a line every 5 s otherwise.\n"
	"Online use needs root (the daemon's interface is a trusted.* xattr).\n";

/* The most parts --shard splits a run into: far more hosts than share a volume. */
#define MAX_SHARDS 4096

enum outcome { DONE_REWRAPPED, DONE_CURRENT, DONE_EMPTY, DONE_GONE, DONE_FAILED };

/* One file of the walk, from the walk to a worker, which frees it. */
struct file_item {
	uint32_t version; /* --check: the version found */
	int outcome;
	int err;
	char path[]; /* one allocation */
};

/* A file that failed, kept for the report: the memory goes with the failures, not the tree. */
struct failure {
	char *path;
	int err;
};

/* How many files (rewrapped or current) sit under one key version, for --check. */
struct version_count {
	uint32_t version;
	size_t files;
};

/* The new file IDs of a --rekey run, sorted for lookup, and the file that keeps them. */
struct rekey_state {
	char path[PATH_MAX];
	uint8_t (*done)[16];
	size_t n_done;
	int fd; /* O_APPEND */
	pthread_mutex_t lock;
	struct dek_pool *pool; /* offline: where new DEKs come from */
	struct names *names;   /* offline: the name codec (user xattrs are re-sealed) */
	int root_fd;	       /* offline: the backing root */
};

struct rotation {
	bool offline, check, dry_run, json, rekey, quiet;
	bool scope; /* --scope: the walk's one root is a key scope's root */
	bool moving; /* --scope --to-kms: the scope moves to another KMS */
	unsigned shard, shards; /* --shard I/N: shard I (from 1) of N; N = 0: every file */
	struct ctl_migration *migration; /* --to-kms: the move under way, else NULL */
	char target_ref[KMS_MAX_REF + 1]; /* a done record names this key */
	const char *state_opt;
	struct rekey_state state;
	unsigned jobs;
	double max_rate;
	uint32_t target;
	/* offline */
	struct ctl_volume vol;
	char backing[PATH_MAX];
	/* the walk: what it found, and the queue to the workers (tools/ctl_workq.h) */
	struct ctl_workq *queue;
	size_t n_items;	   /* files handed to the workers (the walk's thread alone) */
	bool walking;	   /* the walk goes on: n_items is not the total yet */
	size_t skipped;	   /* not regular files */
	size_t unwalkable; /* directories or entries that could not be read */
	size_t vanished;   /* entries gone between readdir and stat */
	bool walk_failed;  /* out of memory: the walk stopped */
	atomic_size_t finished, outcomes[DONE_FAILED + 1];
	/* what the workers found, under tally_lock */
	pthread_mutex_t tally_lock;
	struct failure *failures;
	size_t n_failures, cap_failures;
	struct version_count *versions; /* ascending version */
	size_t n_versions;
	/* rate limiting: the earliest time the next re-wrap may start */
	pthread_mutex_t rate_lock;
	double next_slot;
	double started;
};

static struct rotation *walk_target; /* nftw() has no user pointer */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* add_item - hand @path to a worker, waiting while the queue is full. */
static int add_item(struct rotation *r, const char *path)
{
	size_t len = strlen(path) + 1;
	struct file_item *it = malloc(sizeof(*it) + len);

	if (!it) {
		r->walk_failed = true;
		return FTW_STOP;
	}
	*it = (struct file_item){0};
	memcpy(it->path, path, len);
	r->n_items++;
	ctl_workq_push(r->queue, it);
	return FTW_CONTINUE;
}

/* volume_key_item - is @path the volume key: the mount root online, BACKING/VOLKEY_NAME offline? */
static bool volume_key_item(const struct rotation *r, const char *path)
{
	size_t len = strlen(r->backing);
	struct stat st;

	if (!r->offline)
		return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
	return strncmp(path, r->backing, len) == 0 && path[len] == '/' &&
	       strcmp(path + len + 1, VOLKEY_NAME) == 0;
}

/*
 * record_layout - where the record of backing file @fd lives: the volume
 * key file (BACKING/VOLKEY_NAME, offline) is a bare two-slot header, every
 * other file follows the volume's layout.
 */
static int record_layout(struct rotation *r, const char *path, int fd, struct layout *l)
{
	if (volume_key_item(r, path))
		return volkey_layout(fd, l);
	*l = r->vol.layout;
	return 0;
}

/*
 * shard_hash - murmur3's 64-bit finalizer: inode numbers handed out in
 * sequence or with a stride still spread evenly over the shards.
 */
static uint64_t shard_hash(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* in_shard - is the entry with inode @ino (or the volume key's record) this run's to do? */
static bool in_shard(const struct rotation *r, bool volume_key, ino_t ino)
{
	if (!r->shards)
		return true;
	if (volume_key)
		return r->shard == 1;
	return shard_hash(ino) % r->shards == r->shard - 1;
}

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	struct rotation *r = walk_target;

	/* Other shards count what is theirs, skipped entries too, so the parts add
	 * up.  (Online, the volume key is the mount root: a directory.) */
	if ((type == FTW_F || type == FTW_SL || type == FTW_SLN) &&
	    !in_shard(r, r->offline && volume_key_item(r, path), st->st_ino))
		return 0;
	if (type == FTW_SL || type == FTW_SLN) {
		r->skipped++;
		return 0;
	}
	if (type == FTW_NS && lstat(path, &(struct stat){0}) < 0 && errno == ENOENT) {
		r->vanished++; /* deleted or renamed between readdir and stat */
		return 0;
	}
	if (type == FTW_DNR || type == FTW_NS) {
		/* Files in there cannot be seen, so cannot be said to be done. */
		fprintf(stderr, "envelopefsctl %s: cannot read %s\n", ctl_cmd, path);
		r->unwalkable++;
		return 0;
	}
	/* A mount root with encrypted names carries the volume key's record, a
	 * scope's root (--scope) its scope key's (fs/scope_ops.h). */
	if (type == FTW_D && ftw->level == 0 && !r->offline &&
	    getxattr(path, KEY_XATTR, NULL, 0) >= 0)
		return in_shard(r, true, 0) ? add_item(r, path) : 0;
	/* A key scope's files are under its own KMS, not the volume's: rotate --scope's. */
	if (type == FTW_D && !r->offline && !r->scope &&
	    getxattr(path, SCOPE_XATTR, NULL, 0) >= 0) {
		fprintf(stderr, "envelopefsctl %s: %s: a key scope, left to its own KMS "
				"(envelopefsctl rotate --scope %s)\n", ctl_cmd, path, path);
		return FTW_SKIP_SUBTREE;
	}
	/* The re-key journals and the link store are the volume's, not files of it. */
	if (r->offline && type == FTW_D && ftw->level == 1 &&
	    (strcmp(path + ftw->base, VOLUME_REKEY_DIR) == 0 ||
	     strcmp(path + ftw->base, NAMES_LINK_STORE) == 0))
		return FTW_SKIP_SUBTREE;
	if (type != FTW_F)
		return 0;
	if (!S_ISREG(st->st_mode)) {
		r->skipped++;
		return 0;
	}
	/* The volume's own configuration and epoch (and their replacements in the making) are
	 * not files of it. */
	if (r->offline && ftw->level == 1 &&
	    (strncmp(path + ftw->base, VOLUME_CONFIG_NAME, strlen(VOLUME_CONFIG_NAME)) == 0 ||
	     strncmp(path + ftw->base, VOLEPOCH_NAME, strlen(VOLEPOCH_NAME)) == 0))
		return 0;
	return add_item(r, path);
}

/*
 * The version, key reference (@ref: KMS_MAX_REF + 1 bytes) and file ID of a
 * file's key record; -ENODATA for an empty file.
 */
static int file_key(struct rotation *r, const char *path, uint32_t *version, char *ref,
		    uint8_t file_id[16])
{
	if (!r->offline) {
		char text[512], hex[33];
		ssize_t n = getxattr(path, KEY_XATTR, text, sizeof(text) - 1);
		if (n < 0)
			return -errno;
		text[n] = '\0';
		if (sscanf(text, "%u %255s %32s", version, ref, hex) != 3 ||
		    hex_decode(hex, file_id, 16) != 0)
			return -EBADMSG;
		return 0;
	}
	struct key_record *rec = malloc(sizeof(*rec));
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), ret;

	struct layout l;

	if (!rec || fd < 0) {
		ret = fd < 0 ? -errno : -ENOMEM;
	} else {
		ret = record_layout(r, path, fd, &l);
		if (ret == 0)
			ret = layout_read_record(&l, fd, rec, NULL);
		if (ret == 0) {
			*version = rec->key_version;
			snprintf(ref, KMS_MAX_REF + 1, "%s", rec->key_ref);
			memcpy(file_id, rec->file_id, 16);
		}
	}
	if (fd >= 0)
		close(fd);
	free(rec);
	return ret;
}

/* rewrap_path - re-wrap one file: 0, 1 when it was already current, or -errno. */
static int rewrap_path(struct rotation *r, const char *path)
{
	struct kms_pair keys = ctl_volume_keys(&r->vol);
	struct rewrap_result res;
	struct layout l;
	int fd, ret;

	if (!r->offline)
		return ctl_daemon_ioctl(path, ENVELOPEFS_IOC_REWRAP);
	if (volume_key_item(r, path)) {
		/* Its file may have to grow for the new KMS: volkey_rewrap() knows how. */
		fd = open(r->backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		ret = volkey_rewrap(fd, &r->vol.cfg, &keys, &res);
		close(fd);
		return ret;
	}
	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Two names of one file (hard links) may reach two workers at once: the
	 * second waits, then finds the record current (1). */
	ret = flock(fd, LOCK_EX) < 0 ? -errno : record_layout(r, path, fd, &l);
	if (ret == 0)
		ret = rewrap_file(&l, &keys, r->vol.cfg.uuid, fd, NULL, &res);
	close(fd);
	return ret;
}

/* rekey_env_of - what rekey_file() and rekey_recover() need, offline. */
static struct rekey_env rekey_env_of(struct rotation *r)
{
	return (struct rekey_env){ .layout = &r->vol.layout, .keys = ctl_volume_keys(&r->vol),
				   .pool = r->state.pool, .volume_uuid = r->vol.cfg.uuid,
				   .root_fd = r->state.root_fd, .names = r->state.names };
}

static int rekey_path(struct rotation *r, const char *path)
{
	struct rekey_env env = rekey_env_of(r);
	struct rekey_result res;
	uint8_t *dek;
	int fd, ret;

	if (!r->offline)
		return ctl_daemon_ioctl(path, ENVELOPEFS_IOC_REKEY);
	dek = secmem_alloc(KMS_DEK_LEN);
	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	ret = fd < 0 ? -errno : dek ? rekey_file(&env, fd, NULL, dek, &res) : -ENOMEM;
	if (fd >= 0)
		close(fd);
	secmem_free(dek, KMS_DEK_LEN);
	return ret;
}

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

static bool rekeyed_already(const struct rekey_state *st, const uint8_t file_id[16])
{
	return st->n_done && bsearch(file_id, st->done, st->n_done, 16, cmp_id) != NULL;
}

/* note_rekeyed - append @file_id to the state file (no sync: see the top). */
static void note_rekeyed(struct rekey_state *st, const uint8_t file_id[16])
{
	char line[34];

	hex_encode(file_id, 16, line);
	line[32] = '\n';
	pthread_mutex_lock(&st->lock);
	if (write(st->fd, line, 33) != 33)
		fprintf(stderr, "envelopefsctl rotate: cannot append to %s: %s\n", st->path,
			strerror(errno));
	pthread_mutex_unlock(&st->lock);
}

/* Wait for a slot under --max-rate. */
static void rate_wait(struct rotation *r)
{
	double wait;

	if (r->max_rate <= 0)
		return;
	pthread_mutex_lock(&r->rate_lock);
	double t = now();
	if (r->next_slot < t)
		r->next_slot = t;
	wait = r->next_slot - t;
	r->next_slot += 1.0 / r->max_rate;
	pthread_mutex_unlock(&r->rate_lock);
	if (wait > 0) {
		struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
		nanosleep(&ts, NULL);
	}
}

/*
 * rewrapped_already - is a record under @version of key @ref where the run
 * wants it?  Under the target's key, and for a rotation on its current
 * version too (a migration takes a record of the new KMS at any version).
 */
static bool rewrapped_already(const struct rotation *r, uint32_t version, const char *ref)
{
	return strcmp(ref, r->target_ref) == 0 && (r->migration || r->moving || version >= r->target);
}

static void process(struct rotation *r, struct file_item *it)
{
	/* The volume key is re-wrapped, never re-keyed: that would re-encrypt every name. */
	bool rekey = r->rekey && !volume_key_item(r, it->path);
	uint8_t before[16], after[16];
	char ref[KMS_MAX_REF + 1] = "";
	uint32_t version = 0;
	int ret = file_key(r, it->path, &version, ref, before);

	it->version = version;
	if (ret == -ENOENT) {
		it->outcome = DONE_GONE; /* deleted or renamed during the walk */
		return;
	}
	if (ret == -ENODATA) {
		it->outcome = DONE_EMPTY; /* no key yet: its first write uses the current one */
		return;
	}
	if (ret < 0) {
		it->outcome = DONE_FAILED;
		it->err = ret;
		return;
	}
	if (rekey ? rekeyed_already(&r->state, before) : rewrapped_already(r, version, ref)) {
		it->outcome = DONE_CURRENT;
		return;
	}
	if (r->check || r->dry_run) {
		it->outcome = DONE_REWRAPPED; /* would be */
		return;
	}
	rate_wait(r);
	ret = rekey ? rekey_path(r, it->path) : rewrap_path(r, it->path);
	if (ret == 1) {
		it->outcome = DONE_CURRENT; /* another name of the file got there first */
		return;
	}
	if (ret == 0)
		ret = file_key(r, it->path, &version, ref, after);
	if (ret == 0 && rekey && memcmp(before, after, 16) != 0)
		note_rekeyed(&r->state, after);
	if (ret == -ENOENT) {
		it->outcome = DONE_GONE;
	} else if (ret == -ENODATA) {
		it->outcome = DONE_EMPTY; /* emptied meanwhile: nothing left to re-key */
	} else if (ret < 0 || (!rekey && !rewrapped_already(r, version, ref)) ||
		   (rekey && !memcmp(before, after, 16))) {
		it->outcome = DONE_FAILED;
		it->err = ret < 0 ? ret : -EIO;
	} else {
		it->outcome = DONE_REWRAPPED;
		it->version = version;
	}
}

/* note_failure - keep @it's path and error for the report (lost only when out of memory). */
static void note_failure(struct rotation *r, const struct file_item *it)
{
	char *path = strdup(it->path);

	pthread_mutex_lock(&r->tally_lock);
	if (path && r->n_failures == r->cap_failures) {
		size_t cap = r->cap_failures ? 2 * r->cap_failures : 16;
		struct failure *grown = realloc(r->failures, cap * sizeof(*grown));

		if (grown) {
			r->failures = grown;
			r->cap_failures = cap;
		}
	}
	if (path && r->n_failures < r->cap_failures) {
		r->failures[r->n_failures++] = (struct failure){ .path = path, .err = it->err };
		path = NULL;
	}
	pthread_mutex_unlock(&r->tally_lock);
	free(path);
}

/* count_version - one more file under @version (a handful of versions: a sorted array). */
static void count_version(struct rotation *r, uint32_t version)
{
	size_t i;

	pthread_mutex_lock(&r->tally_lock);
	for (i = 0; i < r->n_versions && r->versions[i].version < version; i++)
		;
	if (i < r->n_versions && r->versions[i].version == version) {
		r->versions[i].files++;
	} else {
		struct version_count *grown = realloc(r->versions,
						      (r->n_versions + 1) * sizeof(*grown));

		if (grown) {
			memmove(grown + i + 1, grown + i, (r->n_versions - i) * sizeof(*grown));
			grown[i] = (struct version_count){ .version = version, .files = 1 };
			r->versions = grown;
			r->n_versions++;
		} else {
			/* Uncounted, a version would look unused to `keyring retire`:
			 * counted as a failure, which makes it refuse. */
			atomic_fetch_add(&r->outcomes[DONE_FAILED], 1);
		}
	}
	pthread_mutex_unlock(&r->tally_lock);
}

static void run_item(void *arg, void *item)
{
	struct rotation *r = arg;
	struct file_item *it = item;

	process(r, it);
	atomic_fetch_add(&r->outcomes[it->outcome], 1);
	if (it->outcome == DONE_FAILED)
		note_failure(r, it);
	else if (r->check && (it->outcome == DONE_REWRAPPED || it->outcome == DONE_CURRENT))
		count_version(r, it->version);
	free(it);
	atomic_fetch_add(&r->finished, 1);
}

/* What the run does to a file, as progress and the summary name it. */
static const char *outcome_label(const struct rotation *r, bool json)
{
	static const char *const labels[2][2][2] = {
		/* [rekey][changes nothing][json] */
		{ { "re-wrapped", "rewrapped" }, { "to re-wrap", "to_rewrap" } },
		{ { "re-keyed", "rekeyed" }, { "to re-key", "to_rekey" } },
	};

	return labels[r->rekey][r->check || r->dry_run][json];
}

/* The progress line: while the walk goes on, the total is what it has found so far. */
static void progress(struct rotation *r, bool tty, bool last)
{
	size_t done = atomic_load(&r->finished), total = r->n_items;
	double elapsed = now() - r->started, rate = elapsed > 0 ? done / elapsed : 0;
	char eta[32] = "walking";

	if (!r->walking)
		snprintf(eta, sizeof(eta), "ETA %.0f s", rate > 0 ? (double)(total - done) / rate : 0);
	fprintf(stderr, "%s%zu/%zu%s files, %zu %s, %zu failed, %.0f files/s, %s%s",
		tty ? "\r" : "", done, total, r->walking ? "+" : "",
		atomic_load(&r->outcomes[DONE_REWRAPPED]), outcome_label(r, false),
		atomic_load(&r->outcomes[DONE_FAILED]), rate, eta, tty && !last ? "   " : "\n");
	fflush(stderr);
}

static void tick(void *arg)
{
	progress(arg, isatty(STDERR_FILENO), false);
}

/* start_workers - the workers, fed by the walk's add_item().  A CTL_* code. */
static int start_workers(struct rotation *r)
{
	bool tty = isatty(STDERR_FILENO);
	struct ctl_workq_ops ops = { .run = run_item, .tick = r->quiet ? NULL : tick,
				     .tick_every = tty ? 0.2 : 5.0, .arg = r };

	r->started = now();
	r->walking = true;
	return ctl_workq_start(r->jobs, &ops, &r->queue) < 0 ? ctl_err(CTL_FAILED, "out of memory")
							     : CTL_OK;
}

/* finish_workers - wait until every file the walk found is done, end the workers. */
static void finish_workers(struct rotation *r)
{
	bool tty = isatty(STDERR_FILENO);

	ctl_workq_finish(r->queue);
	r->queue = NULL;
	if (!r->quiet && (tty || r->n_items > 0))
		progress(r, tty, true);
}

/* --check: how many files sit under each key version, ascending. */
static void print_versions(const struct rotation *r)
{
	printf(r->json ? ",\"versions\":{" : "files per key version:\n");
	for (size_t i = 0; i < r->n_versions; i++) {
		if (r->json)
			printf("%s\"%u\":%zu", i ? "," : "", r->versions[i].version,
			       r->versions[i].files);
		else
			printf("  version %u: %zu\n", r->versions[i].version, r->versions[i].files);
	}
	if (r->json)
		printf("}");
}

static int cmp_failure(const void *a, const void *b)
{
	return strcmp(((const struct failure *)a)->path, ((const struct failure *)b)->path);
}

/* Summary on stdout (text or JSON), failures with their paths on stderr. */
static int report(struct rotation *r)
{
	size_t count[DONE_FAILED + 1];
	bool below;

	for (int i = 0; i <= DONE_FAILED; i++)
		count[i] = atomic_load(&r->outcomes[i]);
	below = count[DONE_REWRAPPED] > 0 && (r->check || r->dry_run);
	if (r->n_failures)
		qsort(r->failures, r->n_failures, sizeof(*r->failures), cmp_failure);
	for (size_t i = 0; i < r->n_failures; i++)
		fprintf(stderr, "envelopefsctl rotate: %s: %s\n", r->failures[i].path,
			strerror(-r->failures[i].err));
	if (r->json) {
		printf("{");
		if (r->shards)
			printf("\"shard\":\"%u/%u\",", r->shard, r->shards);
		printf("\"target_version\":%u,\"target_key_ref\":\"%s\",\"files\":%zu,\"%s\":%zu,"
		       "\"already_current\":%zu,\"empty\":%zu,\"skipped\":%zu,\"failed\":%zu",
		       r->target, r->target_ref, r->n_items,
		       outcome_label(r, true),
		       count[DONE_REWRAPPED], count[DONE_CURRENT], count[DONE_EMPTY],
		       r->skipped + r->vanished + count[DONE_GONE], count[DONE_FAILED] + r->unwalkable);
	} else {
		if (r->shards)
			printf("shard:            %u/%u\n", r->shard, r->shards);
		if (r->migration)
			printf("target key:       %s\n", r->target_ref);
		printf("target version:   %u\n", r->target);
		printf("%s:%*s %zu\n", outcome_label(r, false),
		       (int)(16 - strlen(outcome_label(r, false))), "", count[DONE_REWRAPPED]);
		printf("%-17s %zu\n", r->rekey ? "already re-keyed:" : "already current:",
		       count[DONE_CURRENT]);
		printf("empty (no key):   %zu\n", count[DONE_EMPTY]);
		printf("skipped:          %zu (not regular files, or gone during the walk)\n",
		       r->skipped + r->vanished + count[DONE_GONE]);
		printf("failed:           %zu\n", count[DONE_FAILED] + r->unwalkable);
	}
	if (r->check)
		print_versions(r);
	if (r->json)
		printf("}\n");
	if (count[DONE_FAILED] || r->unwalkable)
		return CTL_FAILED;
	return r->check && below ? CTL_FAILED : CTL_OK;
}

/* json_string_at - the JSON string value after @key in @json into @out (@cap bytes); false if absent. */
static bool json_string_at(const char *json, const char *key, char *out, size_t cap)
{
	const char *p = strstr(json, key);
	size_t n = 0;

	if (!p)
		return false;
	for (p += strlen(key); *p && *p != '"' && n + 1 < cap; p++) {
		if (*p == '\\' && p[1])
			p++; /* the daemon escapes only quotes, backslashes and controls */
		out[n++] = *p;
	}
	out[n] = '\0';
	return *p == '"';
}

/*
 * The daemon's idea of the current version and key reference (into
 * r->target, r->target_ref), the volume's UUID and (@backing, PATH_MAX
 * bytes, may be NULL) its backing directory, from the mount root's status.
 */
static int online_target(const char *mountpoint, struct rotation *r, char uuid[37],
			 char *backing)
{
	uint32_t *target = &r->target;
	char buf[4096], *p;
	ssize_t n = getxattr(mountpoint, STATUS_XATTR, buf, sizeof(buf) - 1);

	if (n < 0) {
		if (errno == EPERM || errno == EACCES)
			return ctl_err(CTL_FAILED, "%s: online rotation needs root", mountpoint);
		return ctl_err(CTL_FAILED, "%s is not the root of a mounted envelopefs volume",
			       mountpoint);
	}
	buf[n] = '\0';
	p = strstr(buf, "\"current_version\":");
	if (!p || sscanf(p + strlen("\"current_version\":"), "%u", target) != 1 || *target == 0)
		return ctl_err(CTL_KEY, "%s: the daemon cannot tell the KMS's current version",
			       mountpoint);
	p = strstr(buf, "\"volume\":\"");
	if (!p || sscanf(p + strlen("\"volume\":\""), "%36[0-9a-f-]", uuid) != 1)
		return ctl_err(CTL_FAILED, "%s: the daemon's status names no volume", mountpoint);
	if (!json_string_at(buf, "\"key_ref\":\"", r->target_ref, sizeof(r->target_ref)) ||
	    (backing && !json_string_at(buf, "\"backing\":\"", backing, PATH_MAX)))
		return ctl_err(CTL_FAILED, "%s: the daemon's status names no KMS key or backing "
			       "directory", mountpoint);
	return CTL_OK;
}

/* parse_shard - --shard I/N into r->shard, r->shards.  A CTL_* code. */
static int parse_shard(const char *arg, struct rotation *r)
{
	unsigned long i, n;
	char *end;

	/* strtoul() would take a sign or blanks: only digits are an I or N. */
	if (*arg < '0' || *arg > '9')
		goto bad;
	i = strtoul(arg, &end, 10);
	if (*end != '/' || end[1] < '0' || end[1] > '9')
		goto bad;
	n = strtoul(end + 1, &end, 10);
	if (*end || i < 1 || i > n || n > MAX_SHARDS)
		goto bad;
	r->shard = (unsigned)i;
	r->shards = (unsigned)n;
	return CTL_OK;
bad:
	return ctl_err(CTL_USAGE, "--shard wants I/N with 1 <= I <= N <= %d, not '%s'", MAX_SHARDS,
		       arg);
}

static int parse_args(int argc, char **argv, struct rotation *r, const char **keyring,
		      const char **to_kms)
{
	static const struct option opts[] = {
		{"check", no_argument, NULL, 'c'},   {"dry-run", no_argument, NULL, 'n'},
		{"jobs", required_argument, NULL, 'j'}, {"max-rate", required_argument, NULL, 'r'},
		{"json", no_argument, NULL, 'J'},    {"offline", no_argument, NULL, 'o'},
		{"keyring", required_argument, NULL, 'k'}, {"help", no_argument, NULL, 'h'},
		{"rekey", no_argument, NULL, 'R'},   {"state", required_argument, NULL, 'S'},
		{"to-kms", required_argument, NULL, 'M'}, {"shard", required_argument, NULL, 's'},
		{"scope", no_argument, NULL, 'Z'}, {NULL, 0, NULL, 0},
	};
	char *end;
	int c;

	r->jobs = 4;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': r->check = true; break;
		case 'n': r->dry_run = true; break;
		case 'J': r->json = true; break;
		case 'o': r->offline = true; break;
		case 'k': *keyring = optarg; break;
		case 'R': r->rekey = true; break;
		case 'S': r->state_opt = optarg; break;
		case 'M': *to_kms = optarg; break;
		case 'Z': r->scope = true; break;
		case 's':
			if (parse_shard(optarg, r) != CTL_OK)
				return CTL_USAGE;
			break;
		case 'j':
			r->jobs = (unsigned)strtoul(optarg, &end, 10);
			if (*end || r->jobs == 0 || r->jobs > 256)
				return ctl_err(CTL_USAGE, "--jobs wants 1..256, not '%s'", optarg);
			break;
		case 'r':
			r->max_rate = strtod(optarg, &end);
			if (*end || !(r->max_rate > 0))
				return ctl_err(CTL_USAGE, "--max-rate wants a positive number, not '%s'",
					       optarg);
			break;
		default:
			return ctl_usage(rotate_usage, c == 'h') == CTL_OK ? -1 : CTL_USAGE;
		}
	}
	if (optind >= argc || (r->offline && optind != argc - 1))
		return ctl_usage(rotate_usage, false);
	if (r->state_opt && !r->rekey)
		return ctl_err(CTL_USAGE, "--state is for --rekey");
	if (*to_kms && (r->rekey || r->check || r->dry_run || optind != argc - 1))
		return ctl_err(CTL_USAGE, "--to-kms moves the whole volume: it takes neither "
			       "--rekey, --check, --dry-run nor PATHs");
	/* A migration holds the volume's lock throughout and ends the move once no
	 * record is left under the old KMS anywhere: a part can do neither. */
	if (*to_kms && r->shards)
		return ctl_err(CTL_USAGE, "--to-kms moves the whole volume in one run: it does "
			       "not take --shard");
	/* A scope's definition is authenticated by the volume key, which only the
	 * daemon holds; and the scope is one tree. */
	if (r->scope && (r->offline || r->shards || optind != argc - 1))
		return ctl_err(CTL_USAGE, "--scope rotates one mounted scope: it takes one DIR "
			       "and neither --offline nor --shard");
	/* An offline re-key first finishes every interrupted re-key of the volume,
	 * which would take another shard's journals from under it. */
	if (r->offline && r->rekey && r->shards)
		return ctl_err(CTL_USAGE, "an offline re-key cannot run beside another: "
			       "--offline --rekey does not take --shard");
	return CTL_OK;
}

/*
 * Walk @dirs[0..n) of @r and process every file (check mode: nothing
 * changes), each as the walk finds it: nftw() holds one directory stream
 * per level, the queue at most CTL_WORKQ_DEPTH paths.
 */
static int walk_and_run(struct rotation *r, char **dirs, int n)
{
	int code = start_workers(r);

	walk_target = r;
	for (int i = 0; code == CTL_OK && i < n; i++)
		if (nftw(dirs[i], collect, 64, FTW_PHYS | FTW_MOUNT | FTW_ACTIONRETVAL) != 0)
			code = ctl_err(CTL_FAILED, "cannot walk %s: %s", dirs[i],
				       r->walk_failed ? strerror(ENOMEM) : strerror(errno));
	r->walking = false;
	if (r->queue)
		finish_workers(r);
	return code;
}

/* forget_tally - what the workers found: failures and versions. */
static void forget_tally(struct rotation *r)
{
	for (size_t i = 0; i < r->n_failures; i++)
		free(r->failures[i].path);
	free(r->failures);
	r->failures = NULL;
	r->n_failures = r->cap_failures = 0;
	free(r->versions);
	r->versions = NULL;
	r->n_versions = 0;
}

static void rotation_free(struct rotation *r)
{
	forget_tally(r);
	if (r->state.fd >= 0)
		close(r->state.fd);
	free(r->state.done);
	dek_pool_destroy(r->state.pool);
	names_destroy(r->state.names);
	if (r->state.root_fd >= 0)
		close(r->state.root_fd);
	if (r->offline)
		ctl_volume_close(&r->vol);
}

/*
 * state_path - --state, or the default for the volume @uuid (its directory
 * made 0700): one per shard, so hosts sharing a home directory, or one
 * host running two shards, keep apart what each has done.
 */
static int state_path(struct rotation *r, const char *uuid)
{
	const char *base = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	char dir[PATH_MAX], shard[32] = "";
	int n;

	if (r->state_opt) {
		snprintf(r->state.path, sizeof(r->state.path), "%s", r->state_opt);
		return CTL_OK;
	}
	if (base && base[0] == '/')
		n = snprintf(dir, sizeof(dir), "%s/envelopefs", base);
	else if (home && home[0] == '/')
		n = snprintf(dir, sizeof(dir), "%s/.local/state/envelopefs", home);
	else
		return ctl_err(CTL_USAGE, "neither XDG_STATE_HOME nor HOME is set: give --state FILE");
	if (r->shards)
		snprintf(shard, sizeof(shard), ".shard-%u-of-%u", r->shard, r->shards);
	if (n < 0 || (size_t)n >= sizeof(dir) ||
	    (size_t)snprintf(r->state.path, sizeof(r->state.path), "%s/rekey-%s%s.ids", dir, uuid,
			     shard) >= sizeof(r->state.path))
		return ctl_err(CTL_USAGE, "state path too long: give --state FILE");
	/* Make every missing directory on the way (the last ones 0700). */
	for (char *slash = dir + 1; (slash = strchr(slash, '/')) != NULL; slash++) {
		*slash = '\0';
		mkdir(dir, 0700);
		*slash = '/';
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return ctl_err(CTL_FAILED, "cannot create %s: %s", dir, strerror(errno));
	return CTL_OK;
}

/*
 * state_open - load the file IDs a previous, interrupted --rekey run made
 * and open the state file for appending.  A CTL_* code.
 */
static int state_open(struct rotation *r, const char *uuid)
{
	struct rekey_state *st = &r->state;
	char line[64];
	FILE *f;
	int code = state_path(r, uuid);

	if (code != CTL_OK)
		return code;
	pthread_mutex_init(&st->lock, NULL);
	f = fopen(st->path, "re");
	while (f && fgets(line, sizeof(line), f)) {
		uint8_t (*grown)[16];

		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '\0')
			continue; /* a line cut short by a crash ends without one */
		grown = realloc(st->done, (st->n_done + 1) * sizeof(*grown));
		if (!grown) {
			fclose(f);
			return ctl_err(CTL_FAILED, "out of memory");
		}
		st->done = grown;
		if (hex_decode(line, st->done[st->n_done], 16) == 0)
			st->n_done++;
	}
	if (f)
		fclose(f);
	if (st->n_done)
		qsort(st->done, st->n_done, 16, cmp_id);
	if (r->check || r->dry_run)
		return CTL_OK;
	st->fd = open(st->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (st->fd < 0)
		return ctl_err(CTL_FAILED, "cannot open the re-key state file %s: %s", st->path,
			       strerror(errno));
	if (st->n_done)
		fprintf(stderr, "envelopefsctl rotate: resuming a re-key run: %zu files already "
				"done (%s)\n",
			st->n_done, st->path);
	return CTL_OK;
}

static void print_recovery_failure(const char *msg)
{
	fprintf(stderr, "envelopefsctl rotate: %s\n", msg);
}

/* offline_rekey_setup - finish interrupted re-keys, then what rekey_file() needs. */
static int offline_rekey_setup(struct rotation *r)
{
	struct rekey_recovery rec;
	struct rekey_env env;
	int ret;

	r->state.root_fd = open(r->backing, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (r->state.root_fd < 0)
		return ctl_err(CTL_FAILED, "%s: %s", r->backing, strerror(errno));
	if (dek_pool_create(r->vol.kms, r->vol.cfg.uuid, 0, &r->state.pool) < 0)
		return ctl_err(CTL_FAILED, "out of memory");
	ret = ctl_volume_names(&r->vol, r->backing, &r->state.names);
	if (ret != CTL_OK)
		return ret;
	env = rekey_env_of(r);
	ret = rekey_recover(&env, &rec, print_recovery_failure);
	if (ret < 0)
		return ctl_err(CTL_FAILED, "%s/%s: %s", r->backing, REKEY_DIR, strerror(-ret));
	if (rec.finished || rec.removed)
		fprintf(stderr, "envelopefsctl rotate: finished %u interrupted re-keys, removed %u "
				"stale journals\n",
			rec.finished, rec.removed);
	return rec.failed ? ctl_err(CTL_FAILED, "%u interrupted re-keys could not be finished",
				    rec.failed)
			  : CTL_OK;
}

int ctl_count_key_version(const char *dir, bool offline, uint32_t version, size_t *users,
			  size_t *unreadable)
{
	struct rotation r = {.rate_lock = PTHREAD_MUTEX_INITIALIZER,
			     .tally_lock = PTHREAD_MUTEX_INITIALIZER, .check = true, .jobs = 4,
			     .state = {.fd = -1, .root_fd = -1},
			     .offline = offline, .target = UINT32_MAX};
	char *dirs[] = {(char *)dir};
	int code = CTL_OK;

	*users = *unreadable = 0;
	if (offline && !realpath(dir, r.backing))
		return ctl_err(CTL_FAILED, "%s: %s", dir, strerror(errno));
	if (offline)
		code = ctl_volume_open(dir, NULL, NULL, false, &r.vol);
	if (code == CTL_OK)
		code = walk_and_run(&r, dirs, 1);
	/* A file that vanished from its path during the walk may live on
	 * under another name: it counts as not checked. */
	*unreadable = r.unwalkable + r.vanished;
	if (code == CTL_OK)
		*unreadable += atomic_load(&r.outcomes[DONE_FAILED]) +
			       atomic_load(&r.outcomes[DONE_GONE]);
	for (size_t i = 0; code == CTL_OK && i < r.n_versions; i++)
		if (r.versions[i].version == version)
			*users = r.versions[i].files;
	rotation_free(&r);
	return code;
}

/* reset_walk - forget a finished walk's work list, for another pass. */
static void reset_walk(struct rotation *r)
{
	forget_tally(r);
	r->n_items = 0;
	r->skipped = r->unwalkable = r->vanished = 0;
	atomic_store(&r->finished, 0);
	for (int i = 0; i <= DONE_FAILED; i++)
		atomic_store(&r->outcomes[i], 0);
}

/* Passes a migration makes at most while renames keep carrying records past its walk. */
#define MIGRATE_PASSES 3

/*
 * migrate_walk - the migration's walk, then check walks that change nothing
 * until one finds no record left under the old KMS (another pass moves
 * those it finds).  A CTL_* code; CTL_OK only when nothing is left.
 */
static int migrate_walk(struct rotation *r, char **dirs, int n)
{
	int code = walk_and_run(r, dirs, n), pass;

	if (code == CTL_OK)
		code = report(r);
	for (pass = 1; code == CTL_OK && pass <= MIGRATE_PASSES; pass++) {
		size_t left;

		reset_walk(r);
		r->check = r->quiet = true;
		code = walk_and_run(r, dirs, n);
		left = atomic_load(&r->outcomes[DONE_REWRAPPED]);
		if (code != CTL_OK || (left == 0 && atomic_load(&r->outcomes[DONE_FAILED]) == 0 &&
				       r->unwalkable == 0))
			return code;
		if (atomic_load(&r->outcomes[DONE_FAILED]) || r->unwalkable)
			return ctl_err(CTL_FAILED, "some files could not be checked: run again");
		fprintf(stderr, "envelopefsctl rotate: %zu records moved in during the walk; "
			"another pass\n", left);
		reset_walk(r);
		r->check = r->quiet = false;
		code = walk_and_run(r, dirs, n);
		if (code == CTL_OK && (atomic_load(&r->outcomes[DONE_FAILED]) || r->unwalkable))
			code = report(r);
	}
	return code == CTL_OK ? ctl_err(CTL_FAILED, "records keep arriving under the old KMS: "
					"run again") : code;
}

int cmd_rotate(int argc, char **argv)
{
	struct rotation r = {.rate_lock = PTHREAD_MUTEX_INITIALIZER,
			     .tally_lock = PTHREAD_MUTEX_INITIALIZER,
			     .state = {.fd = -1, .root_fd = -1}};
	const char *keyring = NULL, *to_kms = NULL;
	char uuid[37], backing[PATH_MAX];
	int code = parse_args(argc, argv, &r, &keyring, &to_kms);

	if (code == -1)
		return CTL_OK; /* --help */
	if (code != CTL_OK)
		return code;
	if (to_kms && keyring)
		return ctl_err(CTL_USAGE, "--keyring does not combine with --to-kms (the volume's "
			       "two KMS configurations name their own keyrings)");

	if (r.offline) {
		if (!realpath(argv[optind], r.backing))
			return ctl_err(CTL_FAILED, "%s: %s", argv[optind], strerror(errno));
		if (ctl_backing_mounted(r.backing))
			return ctl_err(CTL_FAILED,
				       "%s is mounted: rotate through the mount (envelopefsctl rotate "
				       "MOUNTPOINT) or unmount it first",
				       r.backing);
		if (to_kms) {
			code = ctl_migrate_start(to_kms, r.backing, NULL, NULL, &r.migration);
			if (code != CTL_OK || !r.migration)
				return code;
		}
		code = ctl_volume_open(r.backing, keyring, NULL, true, &r.vol);
		if (code != CTL_OK) {
			ctl_migrate_free(r.migration);
			return code;
		}
		if (kms_current_version(r.vol.kms, &r.target) < 0) {
			ctl_volume_close(&r.vol);
			ctl_migrate_free(r.migration);
			return ctl_err(CTL_KEY, "cannot tell the KMS's current version");
		}
		snprintf(r.target_ref, sizeof(r.target_ref), "%s", r.vol.kms->key_ref);
		uuid_format(r.vol.cfg.uuid, uuid);
		if (r.rekey && !r.check && !r.dry_run)
			code = offline_rekey_setup(&r);
	} else if (r.scope) {
		r.moving = to_kms != NULL;
		code = r.moving ? ctl_scope_move_start(argv[optind], to_kms) : CTL_OK;
		if (code == CTL_OK)
			code = ctl_scope_target(argv[optind], &r.target, r.target_ref,
						sizeof(r.target_ref), uuid);
	} else {
		struct stat mnt, sub;

		code = online_target(argv[optind], &r, uuid, backing);
		if (code != CTL_OK)
			return code;
		if (to_kms) {
			char real[PATH_MAX];

			if (!realpath(backing, real))
				return ctl_err(CTL_FAILED, "%s: %s", backing, strerror(errno));
			code = ctl_migrate_start(to_kms, real, argv[optind], r.target_ref,
						 &r.migration);
			if (code != CTL_OK || !r.migration)
				return code;
			/* The daemon now names the new KMS current. */
			code = online_target(argv[optind], &r, uuid, NULL);
			if (code == CTL_OK &&
			    strcmp(r.target_ref, ctl_migrate_target_ref(r.migration)) != 0)
				code = ctl_err(CTL_FAILED, "the daemon of %s still names %s, not %s",
					       argv[optind], r.target_ref,
					       ctl_migrate_target_ref(r.migration));
			if (code != CTL_OK) {
				ctl_migrate_free(r.migration);
				return code;
			}
		}
		if (stat(argv[optind], &mnt) < 0)
			return ctl_err(CTL_FAILED, "%s: %s", argv[optind], strerror(errno));
		for (int i = optind + 1; i < argc; i++)
			if (stat(argv[i], &sub) < 0 || sub.st_dev != mnt.st_dev)
				return ctl_err(CTL_USAGE, "%s is not inside the mounted volume %s",
					       argv[i], argv[optind]);
	}

	if (code == CTL_OK && r.rekey)
		code = state_open(&r, uuid);
	/* Online, PATHs after the mountpoint narrow the walk.  Offline it starts at BACKING's
	 * real path, which volume_key_item() knows the volume key by (not a relative one). */
	char *backing_root[] = { r.backing };
	int first = optind + (argc - optind > 1);
	char **dirs = r.offline ? backing_root : argv + first;
	int n_dirs = r.offline ? 1 : argc - first;
	if (code == CTL_OK && (r.migration || r.moving)) {
		code = migrate_walk(&r, dirs, n_dirs);
		if (code == CTL_OK)
			code = r.moving ? ctl_scope_move_end(argv[optind])
					: ctl_migrate_finish(r.migration);
	} else if (code == CTL_OK) {
		code = walk_and_run(&r, dirs, n_dirs);
		if (code == CTL_OK)
			code = report(&r);
	}
	/* A complete re-key run is over: the next one starts afresh. */
	if (code == CTL_OK && r.rekey && !r.check && !r.dry_run && unlink(r.state.path) < 0 &&
	    errno != ENOENT)
		fprintf(stderr, "envelopefsctl rotate: cannot remove %s: %s\n", r.state.path,
			strerror(errno));
	rotation_free(&r);
	ctl_migrate_free(r.migration);
	return code;
}
