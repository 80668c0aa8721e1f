/* SPDX-License-Identifier: MIT */
/*
 * envelopefsctl rotate: move every file's key record onto the KMS's current
 * master-key version, without rewriting data.
 *
 * Online (MOUNTPOINT): the running daemon does each file under its inode
 * lock through the REWRAP_XATTR interface (fs/status.h); applications keep
 * using the volume.  Offline (--offline BACKING): this process does the same
 * with rewrap_file() on the backing files, refusing a mounted volume.
 *
 * Each file is re-wrapped atomically (two-slot records), so the run can be
 * interrupted at any point and simply run again: files already on the
 * current version are counted and left alone.
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
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs/rewrap.h"
#include "fs/status.h"
#include "tools/ctl.h"

static const char rotate_usage[] =
	"Usage: envelopefsctl rotate [OPTIONS] MOUNTPOINT [PATH...]\n"
	"       envelopefsctl rotate --offline [OPTIONS] BACKING\n"
	"\n"
	"Re-wrap every regular file's data key under the KMS's current master-key\n"
	"version (after `envelopefsctl keyring rotate`).  Data is not rewritten.  Online,\n"
	"the mounted daemon does the work while applications keep running; PATHs limit\n"
	"the walk to subtrees of the mount.  Interrupted, it can be run again: files\n"
	"already current are left alone.\n"
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
	"\n"
	"Progress goes to stderr: a live line on a terminal, a line every 5 s otherwise.\n"
	"Online use needs root (the daemon's interface is a trusted.* xattr).\n";

enum outcome { DONE_REWRAPPED, DONE_CURRENT, DONE_EMPTY, DONE_GONE, DONE_FAILED };

struct file_item {
	char *path;
	uint32_t version; /* --check: the version found */
	int outcome;
	int err;
};

struct rotation {
	bool offline, check, dry_run, json;
	unsigned jobs;
	double max_rate;
	uint32_t target;
	/* offline */
	struct ctl_volume vol;
	char backing[PATH_MAX];
	/* the work list */
	struct file_item *items;
	size_t n_items, cap_items;
	size_t skipped;	   /* not regular files */
	size_t unwalkable; /* directories or entries that could not be read */
	size_t vanished;   /* entries gone between readdir and stat */
	atomic_size_t next, finished, rewrapped, failed;
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

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	struct rotation *r = walk_target;

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
	if (type != FTW_F)
		return 0;
	if (!S_ISREG(st->st_mode)) {
		r->skipped++;
		return 0;
	}
	/* The volume's own configuration is not a file of the volume. */
	if (r->offline && ftw->level == 1 && strcmp(path + ftw->base, VOLUME_CONFIG_NAME) == 0)
		return 0;
	if (r->n_items == r->cap_items) {
		size_t cap = r->cap_items ? 2 * r->cap_items : 1024;
		struct file_item *grown = realloc(r->items, cap * sizeof(*grown));
		if (!grown)
			return -1;
		r->items = grown;
		r->cap_items = cap;
	}
	r->items[r->n_items] = (struct file_item){.path = strdup(path)};
	if (!r->items[r->n_items].path)
		return -1;
	r->n_items++;
	return 0;
}

/* The version of a file's key record: 0 and -ENODATA for an empty file. */
static int file_version(struct rotation *r, const char *path, uint32_t *version)
{
	if (!r->offline) {
		char text[512];
		ssize_t n = getxattr(path, KEY_XATTR, text, sizeof(text) - 1);
		if (n < 0)
			return -errno;
		text[n] = '\0';
		return sscanf(text, "%u", version) == 1 ? 0 : -EBADMSG;
	}
	struct key_record *rec = malloc(sizeof(*rec));
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), ret;

	if (!rec || fd < 0) {
		ret = fd < 0 ? -errno : -ENOMEM;
	} else {
		ret = layout_read_record(&r->vol.layout, fd, rec, NULL);
		if (ret == 0)
			*version = rec->key_version;
	}
	if (fd >= 0)
		close(fd);
	free(rec);
	return ret;
}

static int rewrap_path(struct rotation *r, const char *path)
{
	struct rewrap_result res;
	int fd, ret;

	if (!r->offline)
		return setxattr(path, REWRAP_XATTR, "", 0, 0) < 0 ? -errno : 0;
	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = rewrap_file(&r->vol.layout, r->vol.kms, r->vol.cfg.uuid, fd, NULL, &res);
	close(fd);
	return ret < 0 ? ret : 0;
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

static void process(struct rotation *r, struct file_item *it)
{
	uint32_t version = 0;
	int ret = file_version(r, it->path, &version);

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
	if (version >= r->target) {
		it->outcome = DONE_CURRENT;
		return;
	}
	if (r->check || r->dry_run) {
		it->outcome = DONE_REWRAPPED; /* would be */
		return;
	}
	rate_wait(r);
	ret = rewrap_path(r, it->path);
	if (ret == 0)
		ret = file_version(r, it->path, &version);
	if (ret == -ENOENT) {
		it->outcome = DONE_GONE;
	} else if (ret < 0 || version < r->target) {
		it->outcome = DONE_FAILED;
		it->err = ret < 0 ? ret : -EIO;
	} else {
		it->outcome = DONE_REWRAPPED;
		it->version = version;
	}
}

static void *worker(void *arg)
{
	struct rotation *r = arg;
	size_t i;

	while ((i = atomic_fetch_add(&r->next, 1)) < r->n_items) {
		process(r, &r->items[i]);
		if (r->items[i].outcome == DONE_REWRAPPED)
			atomic_fetch_add(&r->rewrapped, 1);
		if (r->items[i].outcome == DONE_FAILED)
			atomic_fetch_add(&r->failed, 1);
		atomic_fetch_add(&r->finished, 1);
	}
	return NULL;
}

static void progress(struct rotation *r, bool tty, bool last)
{
	size_t done = atomic_load(&r->finished), total = r->n_items;
	double elapsed = now() - r->started, rate = elapsed > 0 ? done / elapsed : 0;
	double eta = rate > 0 ? (double)(total - done) / rate : 0;

	fprintf(stderr, "%s%zu/%zu files, %zu %s, %zu failed, %.0f files/s, ETA %.0f s%s",
		tty ? "\r" : "", done, total, atomic_load(&r->rewrapped),
		r->check || r->dry_run ? "to re-wrap" : "re-wrapped", atomic_load(&r->failed), rate,
		eta, tty && !last ? "   " : "\n");
	fflush(stderr);
}

static void run_workers(struct rotation *r)
{
	pthread_t *threads = calloc(r->jobs, sizeof(*threads));
	bool tty = isatty(STDERR_FILENO);
	double last_line = now();
	unsigned started = 0;

	r->started = now();
	for (unsigned j = 0; threads && j < r->jobs; j++)
		if (pthread_create(&threads[j], NULL, worker, r) == 0)
			started++;
	if (started == 0) {
		worker(r); /* no threads to be had: do it here */
	} else {
		while (atomic_load(&r->finished) < r->n_items) {
			struct timespec tick = {0, 20 * 1000 * 1000};
			nanosleep(&tick, NULL);
			if (now() - last_line >= (tty ? 0.2 : 5.0)) {
				progress(r, tty, false);
				last_line = now();
			}
		}
		for (unsigned j = 0; j < started; j++)
			pthread_join(threads[j], NULL);
	}
	free(threads);
	if (tty || r->n_items > 0)
		progress(r, tty, true);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* --check: how many files sit under each key version, ascending. */
static void print_versions(const struct rotation *r)
{
	uint32_t *found = malloc((r->n_items + 1) * sizeof(*found));
	size_t n = 0;

	if (!found)
		return;
	for (size_t i = 0; i < r->n_items; i++)
		if (r->items[i].outcome == DONE_REWRAPPED || r->items[i].outcome == DONE_CURRENT)
			found[n++] = r->items[i].version;
	qsort(found, n, sizeof(*found), cmp_u32);
	printf(r->json ? ",\"versions\":{" : "files per key version:\n");
	for (size_t i = 0, run; i < n; i += run) {
		for (run = 1; i + run < n && found[i + run] == found[i]; run++)
			;
		if (r->json)
			printf("%s\"%u\":%zu", i ? "," : "", found[i], run);
		else
			printf("  version %u: %zu\n", found[i], run);
	}
	if (r->json)
		printf("}");
	free(found);
}

/* Summary on stdout (text or JSON), failures with their paths on stderr. */
static int report(struct rotation *r)
{
	size_t count[DONE_FAILED + 1] = {0};
	bool below = false;

	for (size_t i = 0; i < r->n_items; i++) {
		count[r->items[i].outcome]++;
		if (r->items[i].outcome == DONE_FAILED)
			fprintf(stderr, "envelopefsctl rotate: %s: %s\n", r->items[i].path,
				strerror(-r->items[i].err));
		if (r->items[i].outcome == DONE_REWRAPPED && (r->check || r->dry_run))
			below = true;
	}
	if (r->json) {
		printf("{\"target_version\":%u,\"files\":%zu,\"%s\":%zu,\"already_current\":%zu,"
		       "\"empty\":%zu,\"skipped\":%zu,\"failed\":%zu",
		       r->target, r->n_items, r->check || r->dry_run ? "to_rewrap" : "rewrapped",
		       count[DONE_REWRAPPED], count[DONE_CURRENT], count[DONE_EMPTY],
		       r->skipped + r->vanished + count[DONE_GONE], count[DONE_FAILED] + r->unwalkable);
	} else {
		printf("target version:   %u\n", r->target);
		printf("%-17s %zu\n", r->check || r->dry_run ? "to re-wrap:" : "re-wrapped:",
		       count[DONE_REWRAPPED]);
		printf("already current:  %zu\n", count[DONE_CURRENT]);
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

/* The daemon's idea of the current version, from the mount root's status. */
static int online_target(const char *mountpoint, uint32_t *target)
{
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
	return CTL_OK;
}

static int parse_args(int argc, char **argv, struct rotation *r, const char **keyring)
{
	static const struct option opts[] = {
		{"check", no_argument, NULL, 'c'},   {"dry-run", no_argument, NULL, 'n'},
		{"jobs", required_argument, NULL, 'j'}, {"max-rate", required_argument, NULL, 'r'},
		{"json", no_argument, NULL, 'J'},    {"offline", no_argument, NULL, 'o'},
		{"keyring", required_argument, NULL, 'k'}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
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
	return CTL_OK;
}

/* Walk @dirs[0..n) of @r and process every file (check mode: nothing changes). */
static int walk_and_run(struct rotation *r, char **dirs, int n)
{
	walk_target = r;
	for (int i = 0; i < n; i++)
		if (nftw(dirs[i], collect, 64, FTW_PHYS | FTW_MOUNT) != 0)
			return ctl_err(CTL_FAILED, "cannot walk %s: %s", dirs[i], strerror(errno));
	run_workers(r);
	return CTL_OK;
}

static void rotation_free(struct rotation *r)
{
	for (size_t i = 0; i < r->n_items; i++)
		free(r->items[i].path);
	free(r->items);
	if (r->offline)
		ctl_volume_close(&r->vol);
}

int ctl_count_key_version(const char *dir, bool offline, uint32_t version, size_t *users,
			  size_t *unreadable)
{
	struct rotation r = {.rate_lock = PTHREAD_MUTEX_INITIALIZER, .check = true, .jobs = 4,
			     .offline = offline, .target = UINT32_MAX};
	char *dirs[] = {(char *)dir};
	int code = CTL_OK;

	*users = *unreadable = 0;
	if (offline)
		code = ctl_volume_open(dir, NULL, NULL, false, &r.vol);
	if (code == CTL_OK)
		code = walk_and_run(&r, dirs, 1);
	/* A file that vanished from its path during the walk may live on
	 * under another name: it counts as not checked. */
	*unreadable = r.unwalkable + r.vanished;
	for (size_t i = 0; code == CTL_OK && i < r.n_items; i++) {
		if (r.items[i].outcome == DONE_FAILED || r.items[i].outcome == DONE_GONE)
			(*unreadable)++;
		else if (r.items[i].outcome != DONE_EMPTY && r.items[i].version == version)
			(*users)++;
	}
	rotation_free(&r);
	return code;
}

int cmd_rotate(int argc, char **argv)
{
	struct rotation r = {.rate_lock = PTHREAD_MUTEX_INITIALIZER};
	const char *keyring = NULL;
	int code = parse_args(argc, argv, &r, &keyring);

	if (code == -1)
		return CTL_OK; /* --help */
	if (code != CTL_OK)
		return code;

	if (r.offline) {
		if (!realpath(argv[optind], r.backing))
			return ctl_err(CTL_FAILED, "%s: %s", argv[optind], strerror(errno));
		if (ctl_backing_mounted(r.backing))
			return ctl_err(CTL_FAILED,
				       "%s is mounted: rotate through the mount (envelopefsctl rotate "
				       "MOUNTPOINT) or unmount it first",
				       r.backing);
		code = ctl_volume_open(r.backing, keyring, NULL, true, &r.vol);
		if (code != CTL_OK)
			return code;
		if (kms_current_version(r.vol.kms, &r.target) < 0) {
			ctl_volume_close(&r.vol);
			return ctl_err(CTL_KEY, "cannot tell the KMS's current version");
		}
	} else {
		struct stat mnt, sub;

		code = online_target(argv[optind], &r.target);
		if (code != CTL_OK)
			return code;
		if (stat(argv[optind], &mnt) < 0)
			return ctl_err(CTL_FAILED, "%s: %s", argv[optind], strerror(errno));
		for (int i = optind + 1; i < argc; i++)
			if (stat(argv[i], &sub) < 0 || sub.st_dev != mnt.st_dev)
				return ctl_err(CTL_USAGE, "%s is not inside the mounted volume %s",
					       argv[i], argv[optind]);
	}

	/* Online, PATHs after the mountpoint narrow the walk. */
	int first = r.offline ? optind : optind + (argc - optind > 1);
	code = walk_and_run(&r, argv + first, argc - first);
	if (code == CTL_OK)
		code = report(&r);
	rotation_free(&r);
	return code;
}
