// SPDX-License-Identifier: MIT
/*
 * envelopefsctl fsck: authenticate a whole volume, find what crashes left
 * behind, optionally remove it, optionally upgrade an older volume
 * (ctl_fsck.h: the walk and the checks live in their own files).
 *
 * Online (a MOUNTPOINT, or the BACKING of a mounted volume) fsck reads the
 * backing only and changes nothing: the daemon keeps serving.  Offline,
 * --repair removes the leftovers the walk proved orphaned (never a name a
 * listing shows, never a journal a mount still needs) and --upgrade turns a
 * clean version-1 or -2 volume into a version-3 one (ctl_fsck_upgrade.c).
 */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs/scopedef.h"
#include "crypto/secmem.h"
#include "fs/confmac.h"
#include "fs/confpin.h"
#include "fs/hoststate.h"
#include "fs/status.h"
#include "fs/volepoch.h"
#include "fs/volkey.h"
#include "tools/ctl_fsck.h"

static const char fsck_usage[] =
	"Usage: envelopefsctl fsck [OPTIONS] BACKING|MOUNTPOINT\n"
	"\n"
	"Authenticate every key record, block, name, long-name side record, directory\n"
	"ID, symlink target and xattr of a volume, and its configuration's MAC; report\n"
	"each problem with its plaintext path (else its backing path), a kind and the\n"
	"errno the daemon answers with; find what crashes left behind (interrupted\n"
	"re-keys, temporary entries, orphaned side records and link-store files, stale\n"
	"probe directories).  On a mounted volume (its MOUNTPOINT or BACKING) it only\n"
	"reads the backing, while the daemon serves.\n"
	"\n"
	"Options:\n"
	"  --repair                (unmounted) remove the leftovers that are provably\n"
	"                          orphaned; never user data, never a re-key journal\n"
	"  --upgrade               (unmounted) after a clean check, make a version-1\n"
	"                          or -2 volume version 3 (file versions, entry\n"
	"                          bindings, volume epoch), or version 2 where its\n"
	"                          header slots have no room for format 3\n"
	"  -j, --jobs N            parallel workers (default 4)\n"
	"  --json                  print the report as JSON on stdout\n"
	"  --keyring PATH          use this keyring instead of the volume's kms:keyring\n"
	"  --passphrase-file FILE  read the keyring passphrase from FILE\n"
	"  --state-dir DIR         this host's state (its pin, volume epoch and file\n"
	"                          versions), the daemon's state_dir option\n"
	"  -h, --help              show this help\n"
	"\n"
	"Progress goes to stderr on a terminal.  Leftovers alone leave the exit status 0.\n"
	"\n" CTL_PASSPHRASE_HELP;

double fsck_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct fsck_finding *new_finding(struct fsck *f)
{
	if (f->n_findings == f->cap_findings) {
		size_t cap = f->cap_findings ? 2 * f->cap_findings : 64;
		struct fsck_finding *grown = realloc(f->findings, cap * sizeof(*grown));
		if (!grown)
			return NULL;
		f->findings = grown;
		f->cap_findings = cap;
	}
	return &f->findings[f->n_findings++];
}

static void add_finding(struct fsck *f, const struct fsck_finding *tmpl, const char *path,
			const char *backing, const char *fmt, va_list ap)
{
	struct fsck_finding *n;
	char *detail = NULL;

	if (vasprintf(&detail, fmt, ap) < 0)
		detail = NULL;
	pthread_mutex_lock(&f->lock);
	n = new_finding(f);
	if (n) {
		*n = *tmpl;
		n->path = path ? strdup(path) : NULL;
		n->backing = strdup(backing);
		n->detail = detail;
		detail = NULL;
	}
	pthread_mutex_unlock(&f->lock);
	free(detail);
}

void fsck_report(struct fsck *f, enum fsck_class cls, const char *path, const char *backing,
		 const char *kind, int err, const char *fmt, ...)
{
	struct fsck_finding t = { .cls = cls, .kind = kind, .err = err };
	va_list ap;

	va_start(ap, fmt);
	add_finding(f, &t, path, backing, fmt, ap);
	va_end(ap);
}

void fsck_leftover(struct fsck *f, const char *backing, const char *kind, bool removable,
		   bool recursive, const char *fmt, ...)
{
	struct fsck_finding t = { .cls = FSCK_LEFTOVER, .kind = kind, .removable = removable,
				  .recursive = recursive };
	va_list ap;

	va_start(ap, fmt);
	add_finding(f, &t, NULL, backing, fmt, ap);
	va_end(ap);
}

void fsck_note_link_id(struct fsck *f, const uint8_t *id)
{
	if (f->n_link_ids == f->cap_link_ids) {
		size_t cap = f->cap_link_ids ? 2 * f->cap_link_ids : 256;
		void *grown = realloc(f->link_ids, cap * NAMES_LINK_ID_LEN);
		if (!grown) {
			f->walk_incomplete = true; /* an ID not kept: no orphan is provable */
			return;
		}
		f->link_ids = grown;
		f->cap_link_ids = cap;
	}
	memcpy(f->link_ids[f->n_link_ids++], id, NAMES_LINK_ID_LEN);
}

static int note_scope_root(void *arg, const struct scope_def *d)
{
	struct fsck *f = arg;
	uint8_t (*roots)[NAMES_DIRID_LEN] = realloc(f->scope_roots,
						    (f->n_scope_roots + 1) * sizeof(*roots));

	if (!roots)
		return -ENOMEM;
	memcpy(roots[f->n_scope_roots++], d->root_dirid, NAMES_DIRID_LEN);
	f->scope_roots = roots;
	return 0;
}

/*
 * load_scopes - the key scopes' roots, from the registry (authenticated under
 * @volume_key): the walk leaves their trees to their own KMS.
 */
static void load_scopes(struct fsck *f, const uint8_t *volume_key, const char *conf)
{
	uint8_t *def_key = secmem_alloc(SCOPE_MAC_LEN);
	int rc = def_key ? scope_def_key(volume_key, f->vol.cfg.uuid, def_key) : -ENOMEM;

	if (rc == 0)
		rc = scope_registry_each(f->root_fd, def_key, note_scope_root, f);
	secmem_free(def_key, SCOPE_MAC_LEN);
	if (rc == -EBADMSG)
		fsck_report(f, FSCK_INTEGRITY, NULL, conf, "scope", EIO,
			    "a key scope's definition (%s/) is damaged or forged: the mount is "
			    "refused (exit 3)", SCOPE_REGISTRY);
	else if (rc < 0)
		f->walk_incomplete = true;
}

/*
 * check_epoch - the volume epoch (fs/volepoch.h) is authentic, and not below
 * what this host (state root @state, NULL: none) saw.  A missing one is a
 * finding only where this host saw one: volumes made before it have none.
 */
static void check_epoch(struct fsck *f, const uint8_t *volume_key, const char *state)
{
	char path[sizeof(f->backing) + sizeof(VOLEPOCH_NAME) + 1];
	uint8_t *k = secmem_alloc(32);
	uint64_t epoch = 0, seen = 0;
	int rc = k ? volepoch_key(volume_key, f->vol.cfg.uuid, k) : -ENOMEM;
	bool saw = state && volepoch_host_seen(state, f->vol.cfg.uuid, &seen) == 0;

	snprintf(path, sizeof(path), "%s/%s", f->backing, VOLEPOCH_NAME);
	if (rc == 0)
		rc = volepoch_read(f->root_fd, k, &epoch);
	secmem_free(k, 32);
	if (rc == -EBADMSG)
		fsck_report(f, FSCK_INTEGRITY, NULL, path, "volume-epoch", 0,
			    "the volume epoch is not authentic: the mount is refused (exit 3)%s",
			    saw ? "" : " on a host that saw the volume");
	else if (rc == -ENOENT && saw)
		fsck_report(f, FSCK_INTEGRITY, NULL, path, "volume-epoch", 0,
			    "the volume epoch is missing, and this host saw epoch %llu: the mount is "
			    "refused (exit 3)", (unsigned long long)seen);
	else if (rc == 0 && saw && epoch < seen)
		fsck_report(f, FSCK_INTEGRITY, NULL, path, "volume-epoch", 0,
			    "the volume epoch is %llu and this host saw %llu: restored from an older "
			    "copy; the mount is refused (exit 3)", (unsigned long long)epoch,
			    (unsigned long long)seen);
	else if (rc < 0 && rc != -ENOENT)
		fsck_report(f, FSCK_IO, NULL, path, "volume-epoch", -rc, "cannot read it: %s",
			    strerror(-rc));
}

/* The whole volume's keys: the volume key opens, and the configuration's MAC holds. */
static int check_volume(struct fsck *f)
{
	struct kms_pair keys = ctl_volume_keys(&f->vol);
	uint8_t *key = NULL;
	char err[1024], conf[sizeof(f->backing) + sizeof(VOLUME_CONFIG_NAME) + 1], state[PATH_MAX];
	int rc = 0;

	*state = '\0';
	snprintf(conf, sizeof(conf), "%s/%s", f->backing, VOLUME_CONFIG_NAME);
	if (f->vol.cfg.names_encrypted) {
		key = secmem_alloc(KMS_DEK_LEN);
		if (!key)
			return ctl_err(CTL_FAILED, "no locked memory for the volume key");
		rc = volkey_load(f->root_fd, &f->vol.cfg, &keys, key, err, sizeof(err));
		if (rc == -ENOENT || rc == -EBADMSG) {
			fsck_report(f, FSCK_INTEGRITY, NULL, conf, "volume-key", 0,
				    "%s: the mount is refused (exit 4)", err);
			secmem_free(key, KMS_DEK_LEN);
			return CTL_INTEGRITY;
		}
		if (rc < 0) {
			secmem_free(key, KMS_DEK_LEN);
			return ctl_err(CTL_KEY, "%s: %s", f->backing, err);
		}
	}
	/* The host's pin is the root of trust of a plain-names volume, and catches a
	 * configuration swapped for another volume's on a sealed one. */
	if (hoststate_root(f->state_dir, state, sizeof(state)) == 0 &&
	    confpin_check(state, f->backing, &f->vol.cfg, err, sizeof(err)) == -ESTALE)
		fsck_report(f, FSCK_INTEGRITY, NULL, conf, "config-pin", 0,
			    "the configuration is not the one this host accepted (%s): the mount "
			    "is refused (exit 3) until `envelopefsctl pin`", err);
	if (volume_config_sealed(&f->vol.cfg) && confmac_verify(&f->vol.cfg, key) != 0)
		fsck_report(f, FSCK_INTEGRITY, NULL, conf, "config-mac", 0,
			    "the configuration does not match its MAC (edited without `envelopefsctl "
			    "pin`): the mount is refused (exit 3)");
	if (key && record_tags_v3(&f->vol.cfg))
		check_epoch(f, key, *state ? state : NULL);
	fsck_versions_open(f, *state ? state : NULL);
	rc = names_create(f->vol.cfg.names_encrypted, key, f->vol.cfg.uuid, &f->names);
	if (rc == 0 && key)
		load_scopes(f, key, conf);
	secmem_free(key, KMS_DEK_LEN);
	return rc < 0 ? ctl_err(CTL_FAILED, "cannot derive the name keys: %s", strerror(-rc))
		      : CTL_OK;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return (type == FTW_DP ? rmdir(path) : unlink(path)) < 0 ? -1 : 0;
}

/* --repair: every leftover the walk marked removable, and only those. */
static void repair(struct fsck *f)
{
	for (size_t i = 0; i < f->n_findings; i++) {
		struct fsck_finding *n = &f->findings[i];
		int rc;

		if (n->cls != FSCK_LEFTOVER || !n->removable)
			continue;
		if (n->recursive)
			rc = nftw(n->backing, remove_one, 16, FTW_DEPTH | FTW_PHYS);
		else
			rc = unlink(n->backing);
		n->removed = rc == 0 || errno == ENOENT;
		if (!n->removed)
			fprintf(stderr, "envelopefsctl fsck: cannot remove %s: %s\n", n->backing,
				strerror(errno));
	}
}

static const char *const class_name[] = { "integrity", "key", "io", "leftover" };

static void json_string(const char *s)
{
	putchar('"');
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static const char *errno_name(int err)
{
	switch (err) {
	case 0: return NULL;
	case EIO: return "EIO";
	case EACCES: return "EACCES";
	case EAGAIN: return "EAGAIN";
	case ENOENT: return "ENOENT";
	case ENOMEM: return "ENOMEM";
	default: return strerror(err);
	}
}

static int cmp_finding(const void *a, const void *b)
{
	const struct fsck_finding *x = a, *y = b;
	int c = strcmp(x->path ? x->path : x->backing, y->path ? y->path : y->backing);

	return c ? c : strcmp(x->kind, y->kind);
}

/* The report, and the exit status: 3 for integrity, else 4 for keys, else 1 for I/O. */
static int report(struct fsck *f, double elapsed)
{
	size_t count[FSCK_LEFTOVER + 1] = { 0 };
	bool first = true;

	if (f->n_findings)
		qsort(f->findings, f->n_findings, sizeof(*f->findings), cmp_finding);
	for (size_t i = 0; i < f->n_findings; i++)
		count[f->findings[i].cls]++;
	if (f->json) {
		printf("{\"backing\":");
		json_string(f->backing);
		printf(",\"online\":%s,\"format_version\":%u,\"directories\":%zu,\"files\":%zu,"
		       "\"symlinks\":%zu,\"blocks\":%zu,\"xattrs\":%zu,\"seconds\":%.3f,"
		       "\"problems\":%zu,\"leftovers\":%zu,\"findings\":[",
		       f->online ? "true" : "false", f->vol.cfg.format_version, f->dirs,
		       atomic_load(&f->files), atomic_load(&f->symlinks), atomic_load(&f->blocks),
		       atomic_load(&f->xattrs), elapsed, f->n_findings - count[FSCK_LEFTOVER],
		       count[FSCK_LEFTOVER]);
		for (size_t i = 0; i < f->n_findings; i++, first = false) {
			const struct fsck_finding *n = &f->findings[i];

			printf("%s{\"class\":\"%s\",\"kind\":\"%s\",\"path\":", first ? "" : ",",
			       class_name[n->cls], n->kind);
			if (n->path)
				json_string(n->path);
			else
				printf("null");
			printf(",\"backing\":");
			json_string(n->backing);
			printf(",\"errno\":");
			if (errno_name(n->err))
				json_string(errno_name(n->err));
			else
				printf("null");
			printf(",\"detail\":");
			json_string(n->detail);
			printf(",\"removable\":%s,\"removed\":%s}", n->removable ? "true" : "false",
			       n->removed ? "true" : "false");
		}
		printf("]}\n");
	} else {
		for (size_t i = 0; i < f->n_findings; i++) {
			const struct fsck_finding *n = &f->findings[i];

			printf("%s: %s: %s", n->path ? n->path : n->backing, n->kind, n->detail);
			if (n->err)
				printf(" (%s)", errno_name(n->err));
			if (n->path)
				printf(" [backing %s]", n->backing);
			if (n->cls == FSCK_LEFTOVER)
				printf(n->removed ? " [removed]" : n->removable ? " [--repair removes it]" : "");
			putchar('\n');
		}
		printf("checked %zu directories, %zu files (%zu blocks), %zu symlinks, %zu xattrs "
		       "in %.1f s: %zu problems, %zu leftovers\n",
		       f->dirs, atomic_load(&f->files), atomic_load(&f->blocks),
		       atomic_load(&f->symlinks), atomic_load(&f->xattrs), elapsed,
		       f->n_findings - count[FSCK_LEFTOVER], count[FSCK_LEFTOVER]);
	}
	if (count[FSCK_INTEGRITY])
		return CTL_INTEGRITY;
	if (count[FSCK_KEY])
		return CTL_KEY;
	return count[FSCK_IO] ? CTL_FAILED : CTL_OK;
}

/*
 * upgrade - a checked volume becomes version f->upgrade_to (2 or 3): the
 * configuration says so (with its MAC, under encrypted names) and is pinned
 * here; format 3 with a volume key gets its epoch.  Its records and
 * symlinks stay: readers of the new version accept them (docs/FORMAT.md,
 * "Upgrading").
 */
static int upgrade(struct fsck *f)
{
	struct volume_config *cfg = &f->vol.cfg;
	dictionary *kms = volume_kms_settings(cfg->ini, "kms"), *previous = NULL;
	int code = CTL_OK, rc;

	if (iniparser_find_entry(cfg->ini, VOLUME_KMS_PREVIOUS) != 0)
		previous = volume_kms_settings(cfg->ini, VOLUME_KMS_PREVIOUS);
	if (!kms) {
		code = ctl_err(CTL_FAILED, "out of memory");
		goto out;
	}
	cfg->format_version = f->upgrade_to;
	code = ctl_config_seal(f->backing, cfg, kms, previous);
	if (code != CTL_OK)
		goto out;
	rc = volume_config_replace(f->vol.conf, cfg, kms, previous);
	if (rc < 0) {
		code = ctl_err(CTL_FAILED, "cannot write %s: %s", f->vol.conf, strerror(-rc));
		goto out;
	}
	ctl_pin_record(f->backing);
	fsck_upgrade_epoch(f);
	if (!f->json)
		printf("upgraded %s to format version %u\n", f->backing, f->upgrade_to);
out:
	if (kms)
		iniparser_freedict(kms);
	if (previous)
		iniparser_freedict(previous);
	return code;
}

struct fsck_args {
	const char *keyring, *pass_file, *target;
};

static int parse_args(int argc, char **argv, struct fsck *f, struct fsck_args *a)
{
	static const struct option opts[] = {
		{ "repair", no_argument, NULL, 'R' },	{ "upgrade", no_argument, NULL, 'U' },
		{ "jobs", required_argument, NULL, 'j' }, { "json", no_argument, NULL, 'J' },
		{ "keyring", required_argument, NULL, 'k' },
		{ "passphrase-file", required_argument, NULL, 'p' },
		{ "state-dir", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },	{ NULL, 0, NULL, 0 }
	};
	char *end;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "hj:", opts, NULL)) != -1) {
		switch (c) {
		case 'R': f->repair = true; break;
		case 'U': f->upgrade = true; break;
		case 'J': f->json = true; break;
		case 'k': a->keyring = optarg; break;
		case 'p': a->pass_file = optarg; break;
		case 'S': f->state_dir = optarg; break;
		case 'j':
			f->jobs = (unsigned)strtoul(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || *end || f->jobs == 0 || f->jobs > 256)
				return ctl_err(CTL_USAGE, "--jobs wants 1..256, not '%s'", optarg);
			break;
		case 'h': ctl_usage(fsck_usage, true); return -1;
		default: return ctl_usage(fsck_usage, false);
		}
	}
	if (argc - optind != 1)
		return ctl_usage(fsck_usage, false);
	a->target = argv[optind];
	return CTL_OK;
}

/*
 * status_backing - the backing directory the daemon mounted on @mountpoint
 * serves, from its status (fs/status.h), into @out (PATH_MAX): false when
 * @mountpoint is not the root of a mounted volume (or we are not root).
 */
static bool status_backing(const char *mountpoint, char *out)
{
	static const char key[] = "\"backing\":\"";
	char status[4096], *p, *q;
	ssize_t n = getxattr(mountpoint, STATUS_XATTR, status, sizeof(status) - 1);

	if (n <= 0)
		return false;
	status[n] = '\0';
	p = strstr(status, key);
	q = p ? strchr(p + strlen(key), '"') : NULL;
	if (!q)
		return false;
	*q = '\0';
	return realpath(p + strlen(key), out) != NULL;
}

/*
 * find_backing - the backing directory of @target into f->backing: a
 * mount's root names it in its status (online), else @target is one,
 * online if a mounted volume serves it.  A CTL_* code.
 */
static int find_backing(struct fsck *f, const char *target)
{
	char **mounts = NULL, served[PATH_MAX];
	bool mountpoint = false;
	int n = 0;

	if (status_backing(target, f->backing)) {
		f->online = true;
		return CTL_OK;
	}
	if (!realpath(target, f->backing))
		return ctl_err(CTL_FAILED, "%s: %s", target, strerror(errno));
	f->online = ctl_backing_mounted(f->backing);
	if (ctl_list_mounts(&mounts, &n) < 0)
		n = 0;
	for (int i = 0; i < n; i++) {
		if (strcmp(mounts[i], f->backing) == 0)
			mountpoint = true;
		else if (!f->online && status_backing(mounts[i], served))
			f->online = strcmp(served, f->backing) == 0;
		free(mounts[i]);
	}
	free(mounts);
	if (mountpoint)
		return ctl_err(CTL_FAILED, "%s is a mounted volume whose status cannot be read: "
			       "checking it online needs root (or give its BACKING)", target);
	return CTL_OK;
}

static void fsck_free(struct fsck *f)
{
	fsck_links_free(&f->links);
	for (size_t i = 0; i < f->n_findings; i++) {
		free(f->findings[i].path);
		free(f->findings[i].backing);
		free(f->findings[i].detail);
	}
	free(f->findings);
	free(f->link_ids);
	names_destroy(f->names);
	free(f->scope_roots);
	fsck_versions_close(f);
	if (f->root_fd >= 0)
		close(f->root_fd);
	ctl_volume_close(&f->vol);
}

int cmd_fsck(int argc, char **argv)
{
	struct fsck f = { .jobs = 4, .root_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };
	struct fsck_args a = { 0 };
	int code = parse_args(argc, argv, &f, &a), result;

	if (code != CTL_OK)
		return code < 0 ? CTL_OK : code;
	code = find_backing(&f, a.target);
	if (code != CTL_OK)
		return code;
	if (f.online && (f.repair || f.upgrade))
		return ctl_err(CTL_FAILED, "%s is mounted: --repair and --upgrade need it unmounted "
			       "(a check alone runs online)", f.backing);
	code = ctl_volume_open(f.backing, a.keyring, a.pass_file, true, &f.vol);
	if (code != CTL_OK)
		return code;
	if (f.upgrade && fsck_upgrade_target(&f, &f.upgrade_to) != CTL_OK) {
		ctl_volume_close(&f.vol);
		return CTL_FAILED;
	}
	f.root_fd = open(f.backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f.root_fd < 0) {
		code = ctl_err(CTL_FAILED, "%s: %s", f.backing, strerror(errno));
		goto out;
	}
	f.started = fsck_now();
	code = check_volume(&f);
	if (code == CTL_OK && fsck_check_start(&f) < 0)
		code = ctl_err(CTL_FAILED, "out of memory");
	if (code == CTL_OK) {
		fsck_walk(&f);
		fsck_check_finish(&f);
		fsck_walk_link_store(&f);
		if (f.repair)
			repair(&f);
		fsck_versions_tidy(&f);
	}
	if (code == CTL_OK || code == CTL_INTEGRITY) {
		result = report(&f, fsck_now() - f.started);
		code = code == CTL_OK ? result : code;
	}
	if (code == CTL_OK && f.upgrade)
		code = upgrade(&f);
	else if (f.upgrade)
		fprintf(stderr, "envelopefsctl fsck: not upgraded: the check found problems\n");
out:
	fsck_free(&f);
	return code;
}
