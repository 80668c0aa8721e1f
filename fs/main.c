/* SPDX-License-Identifier: MIT */
/*
 * envelopefs - mount an envelopefs volume.
 *
 *   envelopefs [-f] [-d] [-o OPTIONS] BACKING MOUNTPOINT
 *
 * Start-up runs in a child process from the beginning, so that keys are only
 * ever loaded in the process that serves the mount; the parent waits on a
 * pipe and exits 0 only once the mount is live, or with the child's failure
 * code (its reason already printed to stderr).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "confmac.h"
#include "confpin.h"
#include "crypto/secmem.h"
#include "envfs.h"
#include "hoststate.h"
#include "filekey.h"
#include "killpriv.h"
#include "log.h"
#include "rollback.h"
#include "ops.h"
#include "scope_convert.h"
#include "scope_ops.h"
#include "scopes.h"
#include "shared.h"
#include "volepoch.h"
#include "volkey.h"

/* Exit codes (documented in --help and README). */
enum {
	EXIT_OK = 0,
	EXIT_MOUNT = 1,	 /* mounting or serving failed */
	EXIT_USAGE = 2,	 /* bad command line or daemon settings */
	EXIT_VOLUME = 3, /* BACKING is not a usable volume */
	EXIT_KEYS = 4,	 /* keyring/KMS unusable or the wrong one */
};

struct cmdline {
	const char *backing;
	char *config;
	int allow_other;
	int default_permissions;
	int no_default_permissions;
	int fsname;
	int show_help;
	int show_version;
	int shared;   /* -o shared */
	int noshared; /* -o noshared */
	/* "-o NAME=VALUE" of daemon settings, in order: applied after
	 * config=FILE, whatever their place on the command line. */
	struct fuse_args settings;
	char *state_dir; /* -o state_dir=DIR: this host's state (hoststate.h) */
	int accept_rollback; /* -o accept_rollback: forget the versions this host saw */
};

/* Options we only note, leaving them for FUSE too. */
enum { KEY_ALLOW_OTHER = 100, KEY_DEFAULT_PERMISSIONS, KEY_FSNAME };

static const struct fuse_opt cmdline_spec[] = {
	{"config=%s", offsetof(struct cmdline, config), 0},
	{"state_dir=%s", offsetof(struct cmdline, state_dir), 0},
	{"no_default_permissions", offsetof(struct cmdline, no_default_permissions), 1},
	{"shared", offsetof(struct cmdline, shared), 1},
	{"noshared", offsetof(struct cmdline, noshared), 1},
	{"accept_rollback", offsetof(struct cmdline, accept_rollback), 1},
	FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
	FUSE_OPT_KEY("default_permissions", KEY_DEFAULT_PERMISSIONS),
	FUSE_OPT_KEY("fsname=", KEY_FSNAME),
	FUSE_OPT_END,
};

static int cmdline_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct cmdline *cl = data;

	(void)arg;
	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (cl->backing)
			return 1; /* the mountpoint, for fuse_parse_cmdline() */
		cl->backing = arg;
		return 0;
	case KEY_ALLOW_OTHER:
		cl->allow_other = 1;
		return 1;
	case KEY_DEFAULT_PERMISSIONS:
		cl->default_permissions = 1;
		return 1;
	case KEY_FSNAME:
		cl->fsname = 1;
		return 1;
	case FUSE_OPT_KEY_OPT: {
		/* A daemon setting is ours; anything else goes to FUSE, whose
		 * parser refuses, naming it, an option nobody knows. */
		size_t name_len = strcspn(arg, "=");
		char name[64];

		if (name_len >= sizeof(name))
			return 1;
		memcpy(name, arg, name_len);
		name[name_len] = '\0';
		if (!envfs_setting_known(name))
			return 1;
		return fuse_opt_add_arg(&cl->settings, arg) == 0 ? 0 : -1;
	}
	default:
		return 1;
	}
}

/* Apply the -o NAME=VALUE settings over those of config=FILE. */
static int apply_setting_opts(const struct cmdline *cl, struct envfs_settings *s)
{
	char err[512];

	for (int i = 0; i < cl->settings.argc; i++) {
		const char *opt = cl->settings.argv[i], *eq = strchr(opt, '=');
		char name[64];

		if (!eq) {
			fprintf(stderr, "envelopefs: -o %s needs a value: -o %s=VALUE (see --help)\n",
				opt, opt);
			return -EINVAL;
		}
		snprintf(name, sizeof(name), "%.*s", (int)(eq - opt), opt);
		if (envfs_setting_set(s, name, eq + 1, err, sizeof(err)) < 0) {
			fprintf(stderr, "envelopefs: -o %s\n", err);
			return -EINVAL;
		}
	}
	return 0;
}

static void usage(const char *prog)
{
	printf("usage: %s [-f] [-d] [-o OPTIONS] BACKING MOUNTPOINT\n"
	       "\n"
	       "Mount the envelopefs volume in BACKING (made by `envelopefsctl init`) on\n"
	       "MOUNTPOINT.  Runs in the background once the mount is live, logging to\n"
	       "syslog; -f stays in the foreground and logs to stderr, -d adds FUSE debug.\n"
	       "\n"
	       "envelopefs options (-o):\n"
	       "    config=FILE             daemon settings from the [daemon] section of an INI\n"
	       "                            file (envelopefs.conf(5)); each is also -o NAME=VALUE,\n"
	       "                            which wins over the file:\n",
	       prog);
	envfs_settings_help(stdout);
	printf("    shared, noshared        shared=true, shared=false\n"
	       "    state_dir=DIR           this host's record of its volumes (the pinned\n"
	       "                            configuration); default $ENVELOPEFS_STATE_DIR,\n"
	       "                            else /var/lib/envelopefs (root) or\n"
	       "                            $XDG_STATE_HOME/envelopefs\n"
	       "    accept_rollback         format 3: this mount accepts the volume and its\n"
	       "                            files as they are now, older than this host saw\n"
	       "                            (restored from a snapshot): forgets what it saw\n"
	       "    allow_other             let other users in (implies default_permissions)\n"
	       "    no_default_permissions  do not add default_permissions (refused with\n"
	       "                            allow_other when running as root)\n"
	       "\n"
	       "Secrets are never command-line arguments: a passphrase-protected keyring\n"
	       "reads ENVELOPEFS_PASSPHRASE or the file named by ENVELOPEFS_PASSPHRASE_FILE.\n"
	       "\n"
	       "Exit status: 0 mounted; 1 mount failed; 2 usage or settings error;\n"
	       "3 not a usable volume; 4 keyring/KMS unusable or not this volume's.\n"
	       "\n"
	       "FUSE options:\n");
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

/*
 * "-ofsname=PATH" with the commas that FUSE's option parser would split
 * escaped, as libfuse itself escapes them.
 */
static char *fuse_mnt_fsname_opt(const char *backing)
{
	size_t len = strlen(backing);
	char *opt = malloc(strlen("-ofsname=") + 2 * len + 1), *p;

	if (!opt)
		return NULL;
	p = opt + sprintf(opt, "-ofsname=");
	for (size_t i = 0; i < len; i++) {
		if (backing[i] == ',' || backing[i] == '\\')
			*p++ = '\\';
		*p++ = backing[i];
	}
	*p = '\0';
	return opt;
}

/* A mountpoint that is already the root of a mount is busy. */
static int check_mountpoint(const char *mountpoint)
{
	struct statx stx;

	if (statx(AT_FDCWD, mountpoint, 0, STATX_TYPE, &stx) < 0) {
		fprintf(stderr, "envelopefs: mountpoint %s: %s\n", mountpoint, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(stx.stx_mode)) {
		fprintf(stderr, "envelopefs: mountpoint %s is not a directory\n", mountpoint);
		return -ENOTDIR;
	}
	if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	    (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
		fprintf(stderr,
			"envelopefs: mountpoint %s is busy: something is already mounted there "
			"(unmount it with `fusermount3 -u %s`)\n",
			mountpoint, mountpoint);
		return -EBUSY;
	}
	return 0;
}

/*
 * The name codec; with encrypted names the volume key is unwrapped here,
 * once per mount, the configuration's MAC checked with it (confmac.h), and
 * only the keys derived from it are kept (format 3: the epoch's too,
 * volepoch.h, for this host's state under @state_root).
 */
static int open_names(struct envfs *fs, int root_fd, const char *state_root)
{
	uint8_t *key = NULL;
	char err[512];
	int ret;

	if (fs->cfg.names_encrypted) {
		key = secmem_alloc(KMS_DEK_LEN);
		if (!key) {
			fprintf(stderr, "envelopefs: out of locked memory for the volume key\n");
			return EXIT_MOUNT;
		}
		const struct kms_set *set = kms_keeper_get(fs->keys);

		ret = volkey_load(root_fd, &fs->cfg, &set->keys, key, err, sizeof(err));
		kms_keeper_put(fs->keys, set);
		if (ret < 0) {
			secmem_free(key, KMS_DEK_LEN);
			fprintf(stderr, "envelopefs: %s: %s\n", fs->backing, err);
			return EXIT_KEYS;
		}
		ret = volume_config_sealed(&fs->cfg) ? confmac_verify(&fs->cfg, key) : 0;
		if (ret < 0) {
			secmem_free(key, KMS_DEK_LEN);
			fprintf(stderr, "envelopefs: %s/%s: %s\n", fs->backing, VOLUME_CONFIG_NAME,
				ret == -EBADMSG ? "[volume] mac does not match the configuration: a "
						  "setting was changed outside envelopefsctl (if you "
						  "changed it deliberately, accept it with "
						  "`envelopefsctl pin BACKING`)"
						: strerror(-ret));
			return ret == -EBADMSG ? EXIT_VOLUME : EXIT_MOUNT;
		}
		ret = record_tags_v3(&fs->cfg) ? volepoch_open(fs->backing, fs->cfg.uuid, key,
							       state_root, fs->shared_locks,
							       &fs->epoch)
					       : 0;
		if (ret < 0) {
			secmem_free(key, KMS_DEK_LEN);
			fprintf(stderr, "envelopefs: the volume epoch: %s\n", strerror(-ret));
			return EXIT_MOUNT;
		}
	}
	ret = names_create(fs->cfg.names_encrypted, key, fs->cfg.uuid, &fs->names);
	if (ret < 0) {
		secmem_free(key, KMS_DEK_LEN);
		fprintf(stderr, "envelopefs: cannot derive the name keys: %s\n", strerror(-ret));
		return EXIT_KEYS;
	}
	ret = scopes_mount(fs, root_fd, key);
	secmem_free(key, KMS_DEK_LEN);
	return ret == 0 ? EXIT_OK : ret == -EBADMSG ? EXIT_VOLUME : EXIT_MOUNT;
}

/*
 * check_pin - before the configuration's KMS is used: is it the one this
 * host pinned (confpin.h)?  Sets *@first for a volume new to this host or
 * path, to be pinned once the mount is up.  Returns an exit code.
 */
static int check_pin(struct envfs *fs, const char *state_root, bool *first)
{
	char err[1024];
	int ret = confpin_check(state_root, fs->backing, &fs->cfg, err, sizeof(err));

	*first = ret == 1;
	if (ret >= 0)
		return EXIT_OK;
	if (ret == -ESTALE)
		fprintf(stderr, "envelopefs: %s: %s. If this change was deliberate, accept it "
			"with `envelopefsctl pin %s`\n", fs->backing, err, fs->backing);
	else
		fprintf(stderr, "envelopefs: %s: %s\n", fs->backing,
			*err ? err : "cannot read this host's pin");
	return EXIT_VOLUME;
}

/* record_pin - a first mount pins what it found (a warning when it cannot). */
static void record_pin(struct envfs *fs, const char *state_root)
{
	int ret = confpin_record(state_root, fs->backing, &fs->cfg);

	if (ret < 0)
		log_msg(LOG_WARNING, "cannot pin the configuration of %s in %s: %s; a changed "
				     "configuration will not be noticed on this host",
			fs->backing, state_root, strerror(-ret));
	else
		log_msg(LOG_NOTICE, "first mount of %s on this host: its configuration is pinned "
				    "in %s", fs->backing, state_root);
}

/* probe_backing - find what the backing can do (backing.h) and settle shared mode. */
static int probe_backing(struct envfs *fs, int root_fd)
{
	int ret = backing_probe(root_fd, &fs->caps);

	/* A backing this daemon may not write to (a read-only mount) is
	 * served with every feature taken as missing: the fallbacks are safe. */
	if (ret < 0 && ret != -EROFS && ret != -EACCES && ret != -EPERM) {
		fprintf(stderr, "envelopefs: cannot probe the backing file system of %s: %s\n",
			fs->backing, strerror(-ret));
		return EXIT_VOLUME;
	}
	fs->shared = shared_mode_on(fs->settings.shared, fs->caps.shared);
	/* The kernel's writeback cache trusts its own sizes and times over
	 * the backing's: another host's writes would never show. */
	if (fs->shared)
		fs->settings.writeback_cache = false;
	fs->shared_locks = fs->shared && fs->caps.ofd_locks;
	return EXIT_OK;
}

/* log_backing - once mounted: the backing, shared mode, and each fallback in use. */
static void log_backing(const struct envfs *fs)
{
	char fallbacks[1024];

	log_msg(LOG_INFO, "backing %s: %s, shared mode %s", fs->backing, fs->caps.fs_name,
		fs->shared ? "on" : "off");
	if (backing_fallbacks(&fs->caps, fallbacks, sizeof(fallbacks)) > 0)
		log_msg(LOG_INFO, "backing %s lacks features; fallbacks:\n%s", fs->backing,
			fallbacks);
	if (fs->shared && !fs->shared_locks)
		log_msg(LOG_WARNING, "backing %s has no OFD locks: file locks exclude only on this "
				     "host, and a re-key does not wait for other hosts' writers",
			fs->backing);
}

static void log_rekey_failure(const char *msg)
{
	log_msg(LOG_ERR, "%s", msg);
}

/*
 * finish_rekeys - complete the re-keys a crash interrupted, before the
 * kernel can ask for any file: such a file is unreadable until then.
 */
static void finish_rekeys(struct envfs *fs)
{
	const struct kms_set *set = kms_keeper_get(fs->keys);
	struct rekey_recovery rec;
	struct rekey_env env;
	int ret;

	filekey_rekey_env(fs, set, &env);
	ret = rekey_recover(&env, &rec, log_rekey_failure);
	kms_keeper_put(fs->keys, set);
	if (ret < 0)
		log_msg(LOG_ERR, "cannot read the re-key journals in %s/%s: %s", fs->backing,
			REKEY_DIR, strerror(-ret));
	else if (rec.finished || rec.removed || rec.failed)
		log_msg(LOG_NOTICE, "interrupted re-keys: %u finished, %u journals removed, %u "
				    "left for the next mount",
			rec.finished, rec.removed, rec.failed);
}

/*
 * log_reachability - the KMS's service went down or came back: one line per
 * edge (the provider's breaker reports each edge once), never per call.
 */
static void log_reachability(void *arg, const char *provider, bool up)
{
	struct envfs *fs = arg;

	if (up)
		log_msg(LOG_NOTICE, "KMS (%s) reachable again for %s", provider, fs->backing);
	else
		log_msg(LOG_WARNING,
			"KMS (%s) unreachable for %s: files whose keys are cached keep working, "
			"others fail with EIO until it is back",
			provider, fs->backing);
}

/*
 * start_prefetch - reading a directory unwraps its files' DEKs ahead when
 * the KMS is remote (auto) or the settings ask.  The window is a quarter of
 * the DEK cache: a DEK unwrapped ahead must outlive, in the cache's LRU, the
 * window's worth of DEKs the reader uses before it and as many unwrapped
 * after it.
 */
static int start_prefetch(struct envfs *fs)
{
	const struct kms_set *set = kms_keeper_get(fs->keys);
	bool on = fs->settings.prefetch >= 0 ? fs->settings.prefetch
					     : strcmp(set->keys.current->ops->name, "local") != 0;
	unsigned ahead = fs->settings.cache_entries / 4 < PREFETCH_AHEAD_MAX
				 ? fs->settings.cache_entries / 4
				 : PREFETCH_AHEAD_MAX;

	kms_keeper_put(fs->keys, set);

	if (!on || ahead == 0)
		return 0;
	return prefetch_create(fs, ahead, &fs->prefetch);
}

/*
 * check_epoch - a volume put back from an older copy is refused, unless
 * @accept; then its epoch is raised (volepoch.h).  Returns an exit code.
 */
static int check_epoch(struct envfs *fs, bool accept)
{
	char err[512];
	int ret;

	if (!fs->epoch)
		return EXIT_OK;
	ret = volepoch_raise(fs->epoch, accept ? VOLEPOCH_ACCEPT : VOLEPOCH_MOUNT, err,
			     sizeof(err));
	if (ret == -ESTALE) {
		fprintf(stderr, "envelopefs: %s: the volume looks restored from an older snapshot "
			"(%s): files may be older than this host saw.  If that is deliberate, "
			"mount it once with -o accept_rollback\n", fs->backing, err);
		return EXIT_VOLUME;
	}
	/* Checked, not raised: a read-only backing keeps its epoch. */
	if (ret == -EROFS) {
		log_msg(LOG_WARNING, "%s: %s", fs->backing, err);
		return EXIT_OK;
	}
	if (ret < 0) {
		fprintf(stderr, "envelopefs: %s: %s\n", fs->backing, err);
		return EXIT_MOUNT;
	}
	return EXIT_OK;
}

/*
 * open_versions - format 3: the file versions this host saw (rollback.h),
 * forgotten first with -o accept_rollback.  The periodic syncfs is off on
 * a network or FUSE backing, shared mode or not: there syncfs may return
 * without reaching the servers (a FUSE server need not implement it), and
 * a record it did not make durable must never count as durable.  Returns
 * an exit code.
 */
static int open_versions(struct envfs *fs, const char *state_root, bool accept)
{
	bool may_sync = !fs->caps.shared;
	int sync_fd = -1, ret;

	if (!record_tags_v3(&fs->cfg))
		return EXIT_OK;
	ret = accept ? rollback_forget(state_root, fs->cfg.uuid) : 0;
	if (ret < 0) {
		fprintf(stderr, "envelopefs: -o accept_rollback: cannot forget the file versions "
			"under %s: %s\n", state_root, strerror(-ret));
		return EXIT_MOUNT;
	}
	if (may_sync)
		sync_fd = open(fs->backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ret = rollback_open(state_root, fs->cfg.uuid, sync_fd,
			    fs->settings.rollback_sync_interval, &fs->rollback);
	if (ret < 0) {
		fprintf(stderr, "envelopefs: cannot keep file versions under %s: %s; give "
			"-o state_dir=DIR\n", state_root, strerror(-ret));
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

/* Load the volume and its keys.  Returns an exit code. */
static int open_volume(struct envfs *fs, const char *backing, const char *state_dir,
		       bool accept_rollback)
{
	char path[PATH_MAX], err[512], state_root[PATH_MAX];
	bool first_mount = false;
	int root_fd, ret;

	fs->backing = realpath(backing, NULL);
	if (!fs->backing) {
		fprintf(stderr, "envelopefs: backing directory %s: %s\n", backing, strerror(errno));
		return EXIT_VOLUME;
	}
	snprintf(path, sizeof(path), "%s/%s", fs->backing, VOLUME_CONFIG_NAME);
	ret = volume_config_load(path, &fs->cfg, err, sizeof(err));
	if (ret == -ENOENT) {
		fprintf(stderr,
			"envelopefs: %s is not an envelopefs volume (no %s); create one with "
			"`envelopefsctl init %s`\n",
			fs->backing, VOLUME_CONFIG_NAME, fs->backing);
		return EXIT_VOLUME;
	}
	if (ret < 0) {
		fprintf(stderr, "envelopefs: %s\n", err);
		return EXIT_VOLUME;
	}
	layout_init(&fs->layout, &fs->cfg);
	ret = hoststate_root(state_dir, state_root, sizeof(state_root));
	if (ret < 0) {
		fprintf(stderr, "envelopefs: no state directory for this host (%s): give "
			"-o state_dir=DIR\n", strerror(-ret));
		return EXIT_USAGE;
	}
	ret = check_pin(fs, state_root, &first_mount);
	if (ret != EXIT_OK)
		return ret;

	/* Mid-migration, the configuration names two providers: both open. */
	ret = kms_keeper_open(fs->cfg.ini, fs->cfg.uuid, fs->settings.dek_pool, log_reachability,
			      fs, &fs->keys, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "envelopefs: %s\n", err);
		return ret == -ENOMEM ? EXIT_MOUNT : EXIT_KEYS;
	}
	if (dekcache_create(fs->settings.cache_entries, fs->settings.cache_max_age, &fs->cache) <
	    0) {
		fprintf(stderr, "envelopefs: out of memory\n");
		return EXIT_MOUNT;
	}
	root_fd = open(fs->backing, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0 || inode_table_create(root_fd, fs->settings.max_fds, &fs->inodes) < 0) {
		fprintf(stderr, "envelopefs: cannot open %s: %s\n", fs->backing, strerror(errno));
		return EXIT_VOLUME;
	}
	ret = probe_backing(fs, root_fd);
	if (ret == EXIT_OK)
		ret = open_names(fs, root_fd, state_root);
	if (ret == EXIT_OK)
		ret = check_epoch(fs, accept_rollback);
	if (ret == EXIT_OK)
		ret = open_versions(fs, state_root, accept_rollback);
	if (ret == EXIT_OK)
		scope_finish_rekeys(fs); /* first: those only a converting scope's KMS opens */
	if (ret == EXIT_OK)
		finish_rekeys(fs); /* with the name codec: user xattrs follow a re-key */
	if (ret == EXIT_OK && start_prefetch(fs) < 0) {
		fprintf(stderr, "envelopefs: cannot start the prefetch workers\n");
		return EXIT_MOUNT;
	}
	if (ret == EXIT_OK && first_mount)
		record_pin(fs, state_root);
	return ret;
}

static void close_volume(struct envfs *fs)
{
	prefetch_destroy(fs->prefetch); /* its queue holds inode references */
	inode_table_destroy(fs->inodes);
	names_destroy(fs->names); /* wipes the name keys */
	rollback_close(fs->rollback, false); /* a failed mount: nothing was written */
	volepoch_close(fs->epoch);
	scope_set_close(fs->scopes); /* wipes the scopes' keys */
	dekcache_destroy(fs->cache); /* wipes every DEK */
	kms_keeper_close(fs->keys);  /* wipes the keys made ahead and the master keys */
	volume_config_free(&fs->cfg);
	free(fs->backing);
}

/*
 * The soft open-file limit up to the hard one: the inode descriptors stay
 * under max_fds (fdcache.h), but open files and directories each take one
 * more, as many as the kernel's users hold open.
 */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		log_msg(LOG_WARNING, "cannot raise the open-file limit: %s", strerror(errno));
}

/*
 * The kernel reads ahead on a FUSE mount in steps of at most the smaller of
 * the mount's backing_dev_info window (128 KiB by default) and the
 * max_readahead of the INIT reply: too little to keep both the backing disk
 * and the decryption busy on a sequential read.  So the window is raised in
 * sysfs after mounting and before INIT is answered (the INIT reply then
 * takes max_readahead, see envfs_init).  The device number comes from
 * mountinfo: a stat of the mountpoint would wait for this very daemon.
 */
static void set_read_ahead(const char *mountpoint, unsigned kib)
{
	char *real = realpath(mountpoint, NULL), line[8192], dev[32] = "";
	FILE *f = fopen("/proc/self/mountinfo", "re");

	while (real && f && fgets(line, sizeof(line), f)) {
		char majmin[32], field[PATH_MAX], mnt[PATH_MAX];
		size_t n = 0;

		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...", the mountpoint with
		 * octal escapes; the last match is the newest mount: ours. */
		if (sscanf(line, "%*s %*s %31s %*s %4095s", majmin, field) != 2)
			continue;
		for (const char *p = field; *p && n < sizeof(mnt) - 1; n++) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
				mnt[n] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
				p += 4;
			} else {
				mnt[n] = *p++;
			}
		}
		mnt[n] = '\0';
		if (strcmp(mnt, real) == 0)
			snprintf(dev, sizeof(dev), "%s", majmin);
	}
	if (f)
		fclose(f);
	free(real);
	if (*dev) {
		char path[96];
		snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
		f = fopen(path, "we");
		if (f) {
			fprintf(f, "%u\n", kib);
			if (fclose(f) == 0)
				return;
		}
	}
	log_msg(LOG_NOTICE, "could not set the read-ahead of %s to %u KiB", mountpoint, kib);
}

/* Idle DEKs leave memory at their age limit even when nothing else happens. */
static pthread_mutex_t expiry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t expiry_cond = PTHREAD_COND_INITIALIZER;
static bool expiry_stop;

static void *expiry_thread(void *arg)
{
	struct envfs *fs = arg;
	struct timespec deadline;

	pthread_mutex_lock(&expiry_lock);
	while (!expiry_stop) {
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += 1;
		pthread_cond_timedwait(&expiry_cond, &expiry_lock, &deadline);
		dekcache_expire(fs->cache);
	}
	pthread_mutex_unlock(&expiry_lock);
	return NULL;
}

static void notify_parent(int fd, int code)
{
	unsigned char c = (unsigned char)code;

	if (fd < 0)
		return;
	if (write(fd, &c, 1) != 1)
		log_msg(LOG_WARNING, "could not report start-up status to the parent");
	close(fd);
}

static void detach_stdio(void)
{
	int null = open("/dev/null", O_RDWR);

	if (null < 0)
		return;
	dup2(null, STDIN_FILENO);
	dup2(null, STDOUT_FILENO);
	dup2(null, STDERR_FILENO);
	if (null > STDERR_FILENO)
		close(null);
}

/* Fork; the parent returns only to exit with the child's start-up code. */
static int fork_daemon(int *notify_fd)
{
	int pipefd[2];
	pid_t pid;
	unsigned char code = EXIT_MOUNT;

	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		perror("envelopefs: pipe");
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		perror("envelopefs: fork");
		return -1;
	}
	if (pid > 0) {
		close(pipefd[1]);
		if (read(pipefd[0], &code, 1) != 1) {
			int status;
			/* The child died before reporting: take its exit status. */
			code = waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
					       WEXITSTATUS(status) != 0
				       ? (unsigned char)WEXITSTATUS(status)
				       : EXIT_MOUNT;
		}
		_exit(code);
	}
	close(pipefd[0]);
	setsid();
	*notify_fd = pipefd[1];
	return 0;
}

static int serve(struct envfs *fs, struct fuse_args *args, struct fuse_cmdline_opts *opts,
		 int notify_fd)
{
	struct fuse_session *se;
	struct fuse_loop_config *loop;
	pthread_t expiry;
	int ret;

	envfs_handles_init(fs);
	se = fuse_session_new(args, &envfs_ops, sizeof(envfs_ops), fs);
	if (!se)
		return EXIT_USAGE;
	fs->session = se;
	if (fuse_set_signal_handlers(se) != 0) {
		fuse_session_destroy(se);
		return EXIT_MOUNT;
	}
	if (fuse_session_mount(se, opts->mountpoint) != 0) {
		fuse_remove_signal_handlers(se);
		fuse_session_destroy(se);
		return EXIT_MOUNT;
	}
	if (fs->settings.read_ahead_kb)
		set_read_ahead(opts->mountpoint, fs->settings.read_ahead_kb);
	/* Before the loop reads INIT, whose reply it may add a flag to. */
	if (killpriv_install(se) < 0)
		log_msg(LOG_NOTICE, "no FUSE_HANDLE_KILLPRIV_V2: every write(2) costs a "
				    "security.capability lookup");
	if (inode_evict_start(fs->inodes, fuse_session_fd(se), fs->settings.max_inodes,
			      &fs->evictor) < 0)
		log_msg(LOG_WARNING, "no inode evictor thread: max_inodes not applied");
	bool expiring = pthread_create(&expiry, NULL, expiry_thread, fs) == 0;
	if (!expiring)
		log_msg(LOG_WARNING, "no DEK expiry thread: idle keys leave only by LRU and unmount");
	fs->started = time(NULL);
	if (!opts->foreground) {
		log_to_syslog("envelopefs");
		if (chdir("/") != 0)
			log_msg(LOG_WARNING, "chdir /: %s", strerror(errno));
		detach_stdio();
	}
	log_msg(LOG_INFO, "mounted %s on %s", fs->backing, opts->mountpoint);
	log_backing(fs);
	notify_parent(notify_fd, EXIT_OK);

	if (opts->singlethread) {
		ret = fuse_session_loop(se);
	} else {
		loop = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(loop, opts->clone_fd);
		fuse_loop_cfg_set_max_threads(loop, opts->max_threads);
		/* fuse_parse_cmdline() leaves UINT_MAX for "-o max_idle_threads
		 * not given": passing that on makes libfuse warn on every start
		 * (and keep its own default, as not passing it does). */
		if (opts->max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(loop, opts->max_idle_threads);
		ret = fuse_session_loop_mt(se, loop);
		fuse_loop_cfg_destroy(loop);
	}

	pthread_mutex_lock(&expiry_lock);
	expiry_stop = true;
	pthread_cond_signal(&expiry_cond);
	pthread_mutex_unlock(&expiry_lock);
	if (expiring)
		pthread_join(expiry, NULL);
	inode_evict_stop(fs->evictor); /* before the session's fd closes */
	fs->evictor = NULL;

	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	envfs_close_handles(fs); /* the kernel's last RELEASEs may not have come */
	/* A clean unmount: the backing synced, this daemon's versions learnt. */
	rollback_close(fs->rollback, true);
	fs->rollback = NULL;
	if (fs->epoch) {
		char err[512];

		if (volepoch_raise(fs->epoch, VOLEPOCH_UNMOUNT, err, sizeof(err)) < 0)
			log_msg(LOG_WARNING, "%s: %s", fs->backing, err);
	}
	log_msg(LOG_INFO, "unmounted %s; keys wiped", opts->mountpoint);
	/* libfuse reports the signal that ended the loop: a requested stop. */
	return ret == 0 || ret == SIGTERM || ret == SIGINT || ret == SIGHUP ? EXIT_OK : EXIT_MOUNT;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts = {0};
	struct cmdline cl = {0};
	struct envfs fs = {0};
	char err[512];
	int notify_fd = -1, code = EXIT_USAGE;

	if (fuse_opt_parse(&args, &cl, cmdline_spec, cmdline_proc) != 0 ||
	    fuse_parse_cmdline(&args, &opts) != 0)
		goto out;
	if (opts.show_help || opts.show_version) {
		if (opts.show_help)
			usage(argv[0]);
		else
			printf("envelopefs %s, libfuse %s\n", ENVELOPEFS_VERSION, fuse_pkgversion());
		code = EXIT_OK;
		goto out;
	}
	if (!cl.backing || !opts.mountpoint) {
		fprintf(stderr, "usage: %s [-f] [-d] [-o OPTIONS] BACKING MOUNTPOINT (see --help)\n",
			argv[0]);
		goto out;
	}
	if (cl.allow_other && cl.no_default_permissions && geteuid() == 0) {
		/* The daemon checks no permission itself: as root it would open
		 * every file for every user. */
		fprintf(stderr, "envelopefs: allow_other with no_default_permissions would let every "
				"user read and write every file; drop one of them\n");
		goto out;
	}
	if (cl.allow_other && !cl.default_permissions && !cl.no_default_permissions)
		fuse_opt_add_arg(&args, "-odefault_permissions");
	if (!cl.fsname) {
		/* `mount` and `df` show the backing directory as the source. */
		char *opt = fuse_mnt_fsname_opt(cl.backing);
		if (opt) {
			fuse_opt_add_arg(&args, opt);
			free(opt);
		}
	}

	envfs_settings_defaults(&fs.settings);
	if (cl.config && envfs_settings_load(cl.config, &fs.settings, err, sizeof(err)) < 0) {
		fprintf(stderr, "envelopefs: %s\n", err);
		goto out;
	}
	if (apply_setting_opts(&cl, &fs.settings) < 0)
		goto out;
	if (cl.shared && cl.noshared) {
		fprintf(stderr, "envelopefs: -o shared and -o noshared contradict each other\n");
		code = EXIT_USAGE;
		goto out;
	}
	if (cl.shared || cl.noshared)
		fs.settings.shared = cl.shared ? SHARED_ON : SHARED_OFF;
	log_set_level(fs.settings.log_level);
	code = EXIT_MOUNT;
	if (check_mountpoint(opts.mountpoint) < 0)
		goto out;
	if (!opts.foreground && fork_daemon(&notify_fd) < 0)
		goto out;
	/* Keys are about to be loaded: keep them out of core dumps and away
	 * from other processes of this user. */
	if (secmem_harden_process() < 0)
		log_msg(LOG_WARNING, "could not disable core dumps");
	umask(0); /* the kernel already applied the caller's umask */
	raise_fd_limit();

	code = open_volume(&fs, cl.backing, cl.state_dir, cl.accept_rollback);
	if (code == EXIT_OK)
		code = serve(&fs, &args, &opts, notify_fd);
	else
		notify_parent(notify_fd, code);
	close_volume(&fs);
out:
	free(opts.mountpoint);
	free(cl.config);
	fuse_opt_free_args(&cl.settings);
	free(cl.state_dir);
	fuse_opt_free_args(&args);
	return code;
}
