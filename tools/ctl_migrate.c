// SPDX-License-Identifier: MIT
/*
 * envelopefsctl rotate --to-kms CONFIG: moving a volume to another KMS.
 *
 * The walk that moves the records is the caller's (ctl_rotate.c, through
 * ctl_migrate.h); this file owns the migration's state, which lives in the
 * volume configuration itself (docs/FORMAT.md, "Volume configuration"):
 *
 *   start:  CONFIG is checked (settings only, no secret; the provider opens,
 *           wraps and unwraps a probe key; its records fit the volume's
 *           header slots; its master key is not the volume's), then the
 *           configuration is replaced atomically by one whose [kms] is
 *           CONFIG's and whose [kms_previous] is the old [kms].  Online, the
 *           daemon is told (ENVELOPEFS_IOC_RELOAD_KMS): from then on new
 *           files get keys from the new KMS and records of both open.
 *   walk:   every record still under the previous KMS is re-wrapped into the
 *           new one (ENVELOPEFS_IOC_REWRAP, or rewrap_file() offline).
 *   finish: with no failure, [kms_previous] is dropped (atomic replacement
 *           again) and the daemon told once more; the old KMS is no longer
 *           needed.
 *
 * A crash at any point leaves a configuration that mounts, whose records
 * all open; running the same command again resumes.  A run with another
 * CONFIG while a migration is under way is refused.  A run holds an
 * exclusive lock on BACKING from its first look at the configuration to its
 * end, so two runs never both find no migration under way and start two.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "crypto/random.h"
#include "crypto/record.h"
#include "crypto/secmem.h"
#include "fs/status.h"
#include "tools/ctl.h"
#include "tools/ctl_daemon.h"
#include "tools/ctl_migrate.h"

/* A move under way: what ctl_migrate_start() was given, and what it holds. */
struct ctl_migration {
	const char *config;	/* CONFIG: the new provider's [kms] */
	char backing[PATH_MAX];
	const char *mountpoint; /* the mounted volume, or NULL offline */
	char conf[PATH_MAX + 32]; /* BACKING/envelopefs.conf */
	dictionary *target;	/* CONFIG, loaded */
	char target_ref[KMS_MAX_REF + 1];
	char current_ref[KMS_MAX_REF + 1]; /* the volume's key, as the daemon says, or "" */
	bool locked;	    /* lock_fd holds BACKING's lock: one migration at a time */
	int lock_fd;
};

/*
 * check_config_file - CONFIG holds one [kms] section of references only (and
 * a local keyring outside @backing, as init wants it).  A CTL_* code.
 */
static int check_config_file(const char *path, const char *backing, dictionary **out)
{
	size_t blen = strlen(backing);
	const char *keyring;
	dictionary *ini;
	const char **keys;
	const char *provider;
	int n, code = CTL_OK;

	if (access(path, R_OK) < 0)
		return ctl_err(CTL_USAGE, "--to-kms %s: %s", path, strerror(errno));
	ini = iniparser_load(path);
	if (!ini)
		return ctl_err(CTL_USAGE, "--to-kms %s: not a valid INI file", path);
	if (iniparser_getnsec(ini) != 1 || iniparser_find_entry(ini, "kms") == 0) {
		iniparser_freedict(ini);
		return ctl_err(CTL_USAGE, "--to-kms %s: wants exactly one section, [kms], with the "
			       "new provider's settings", path);
	}
	provider = iniparser_getstring(ini, "kms:provider", NULL);
	if (!provider || !*provider) {
		iniparser_freedict(ini);
		return ctl_err(CTL_USAGE, "--to-kms %s: [kms] provider is missing", path);
	}
	n = iniparser_getsecnkeys(ini, "kms");
	keys = n > 0 ? calloc((size_t)n, sizeof(*keys)) : NULL;
	if (keys)
		iniparser_getseckeys(ini, "kms", keys);
	for (int i = 0; keys && i < n && code == CTL_OK; i++)
		if (ctl_secret_setting(keys[i] + 4))
			code = ctl_err(CTL_USAGE,
				       "--to-kms %s: [kms] %s would put a secret in the volume "
				       "configuration: give its file (%s_file) or the provider's "
				       "environment variable instead",
				       path, keys[i] + 4, keys[i] + 4);
	free(keys);
	keyring = iniparser_getstring(ini, "kms:keyring", NULL);
	if (code == CTL_OK && strcmp(provider, "local") == 0 && keyring &&
	    (keyring[0] != '/' ||
	     (strncmp(keyring, backing, blen) == 0 && (keyring[blen] == '/' || !keyring[blen]))))
		code = ctl_err(CTL_USAGE, "--to-kms %s: the keyring %s must be an absolute path "
			       "outside the backing directory %s", path, keyring, backing);
	if (code != CTL_OK) {
		iniparser_freedict(ini);
		return code;
	}
	*out = ini;
	return CTL_OK;
}

/*
 * probe - the new KMS wraps a random key for this volume and gives it back,
 * and its records fit the volume's header slots (they were sized at init
 * for the old provider; growing them would mean rewriting every file —
 * the volume key's file, alone, grows: see volkey_rewrap()).  Every record
 * it may make must fit, not only the probe's: a blob may carry its master
 * key's version in decimal (Transit's "vault:vN:"), which grows by up to
 * VERSION_GROWTH bytes as the key is rotated, and a record that no longer
 * fits makes new files fail and rotations stop.  Never past the provider's
 * largest blob, the bound init sizes slots with.
 */
#define VERSION_GROWTH 9 /* a version of 1 digit becoming one of 10 (2^32 - 1) */
static int probe(struct ctl_migration *m, struct kms *kms, const struct volume_config *cfg)
{
	struct kms_context ctx;
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *back = secmem_alloc(KMS_DEK_LEN);
	uint8_t *blob = malloc(KMS_MAX_BLOB);
	size_t blob_len = 0, largest, need;
	uint32_t version;
	struct layout l;
	int rc = dek && back && blob ? 0 : -ENOMEM, code = CTL_OK;

	memcpy(ctx.volume_uuid, cfg->uuid, sizeof(ctx.volume_uuid));
	if (rc == 0)
		rc = crypto_random(ctx.file_id, sizeof(ctx.file_id));
	if (rc == 0)
		rc = crypto_random(dek, KMS_DEK_LEN);
	if (rc == 0)
		rc = kms_wrap(kms, &ctx, dek, blob, KMS_MAX_BLOB, &blob_len, &version);
	if (rc == 0)
		rc = kms_unwrap(kms, &ctx, blob, blob_len, back);
	if (rc == 0 && memcmp(dek, back, KMS_DEK_LEN) != 0)
		rc = -EIO;
	if (rc == -EOPNOTSUPP)
		code = ctl_err(CTL_USAGE, "--to-kms %s: provider %s cannot wrap a key it did not "
			       "make, so no volume can move to it", m->config, kms->ops->name);
	else if (rc < 0)
		code = ctl_err(CTL_KEY, "--to-kms %s: the new KMS failed a test wrap and unwrap: %s",
			       m->config, kms_strerror(rc));
	largest = blob_len + VERSION_GROWTH < kms->max_blob_len ? blob_len + VERSION_GROWTH
								 : kms->max_blob_len;
	layout_init(&l, cfg);
	need = slot_size_for_version(l.format_version, strlen(kms->key_ref), largest);
	if (code == CTL_OK && cfg->placement == PLACEMENT_HEADER && (need == 0 || need > l.slot_size))
		code = ctl_err(CTL_USAGE, "--to-kms %s: the key records of %s (key %s, blobs of up to "
			       "%zu bytes at any version) need a %zu-byte header slot, and this "
			       "volume's are %u bytes: it cannot move there without rewriting every file "
			       "(copy it into a new volume with envelopefsctl import instead)",
			       m->config, kms->ops->name, kms->key_ref, largest, need, l.slot_size);
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(back, KMS_DEK_LEN);
	free(blob);
	return code;
}

/*
 * current_ref - the key reference of the volume's [kms] provider: the
 * daemon's word online, else from opening it.  A CTL_* code.
 */
static int current_ref(const struct ctl_migration *m, const struct volume_config *cfg, char *out)
{
	dictionary *settings;
	struct kms *kms = NULL;
	char err[1024];
	int rc;

	if (m->current_ref[0]) {
		snprintf(out, KMS_MAX_REF + 1, "%s", m->current_ref);
		return CTL_OK;
	}
	settings = volume_kms_settings(cfg->ini, "kms");
	rc = settings ? kms_open(settings, &kms, err, sizeof(err)) : -ENOMEM;

	if (settings)
		iniparser_freedict(settings);
	if (rc < 0)
		return ctl_err(CTL_KEY, "%s: cannot open the volume's KMS: %s", m->backing,
			       rc == -ENOMEM ? "out of memory" : err);
	snprintf(out, KMS_MAX_REF + 1, "%s", kms->key_ref);
	kms_close(kms);
	return CTL_OK;
}

/* tell_daemon - have the mounted daemon re-read the configuration.  0 or -errno. */
static int tell_daemon(const struct ctl_migration *m)
{
	return m->mountpoint ? ctl_daemon_ioctl(m->mountpoint, ENVELOPEFS_IOC_RELOAD_KMS) : 0;
}

/* write_config - [kms] from @kms's "kms" section, [kms_previous] from @previous.  A CTL_* code. */
static int write_config(const struct ctl_migration *m, const struct volume_config *cfg,
			const dictionary *kms, const dictionary *previous)
{
	struct volume_config sealed = *cfg;
	int code = ctl_config_seal(m->backing, &sealed, kms, previous), rc;

	if (code != CTL_OK)
		return code;
	rc = volume_config_replace(m->conf, &sealed, kms, previous);
	if (rc < 0)
		return ctl_err(CTL_FAILED, "cannot replace %s: %s", m->conf, strerror(-rc));
	ctl_pin_record(m->backing); /* this host follows the move it makes */
	return CTL_OK;
}

/* begin - record the migration in the configuration and tell the daemon.  A CTL_* code. */
static int begin(struct ctl_migration *m, struct volume_config *cfg)
{
	dictionary *old = volume_kms_settings(cfg->ini, "kms");
	int code, rc;

	if (!old)
		return ctl_err(CTL_FAILED, "out of memory");
	code = write_config(m, cfg, m->target, old);
	if (code == CTL_OK) {
		rc = tell_daemon(m);
		if (rc < 0) {
			/* Nothing has moved yet: put the volume back as it was. */
			bool reverted = write_config(m, cfg, old, NULL) == CTL_OK;
			if (reverted)
				tell_daemon(m);
			code = ctl_err(CTL_KEY, "the daemon of %s cannot use the new KMS (%s; its "
				       "log says why: e.g. credentials missing from its environment); %s",
				       m->mountpoint, strerror(-rc),
				       reverted ? "nothing was changed"
						: "no record has moved, but the volume configuration still "
						  "names the new KMS (the old one as previous): run this "
						  "again once the daemon can use it");
		}
	}
	iniparser_freedict(old);
	return code;
}

/*
 * lock_backing - one migration of a volume at a time: otherwise two runs
 * with different CONFIGs could both find none under way, and the records
 * the first moves would go to a KMS the second's configuration no longer
 * names.  Held until ctl_migrate_free() (or exit).  A CTL_* code.
 */
static int lock_backing(struct ctl_migration *m)
{
	m->lock_fd = open(m->backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (m->lock_fd < 0)
		return ctl_err(CTL_FAILED, "%s: %s", m->backing, strerror(errno));
	if (flock(m->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;

		close(m->lock_fd);
		return e == EWOULDBLOCK
			       ? ctl_err(CTL_FAILED, "another envelopefsctl rotate --to-kms is running "
						     "on %s: run this again once it has ended",
					 m->backing)
			       : ctl_err(CTL_FAILED, "cannot lock %s: %s", m->backing, strerror(e));
	}
	m->locked = true;
	return CTL_OK;
}

/*
 * start - ctl_migrate_start() on @m, whose config, backing, mountpoint and
 * current_ref are filled in.  *@nothing_to_do when the volume already uses
 * CONFIG's KMS alone.  A CTL_* code.
 */
static int start(struct ctl_migration *m, bool *nothing_to_do)
{
	struct volume_config cfg;
	struct kms *kms = NULL;
	char err[1024], ref[KMS_MAX_REF + 1];
	bool migrating;
	int code, rc;

	snprintf(m->conf, sizeof(m->conf), "%s/%s", m->backing, VOLUME_CONFIG_NAME);
	code = lock_backing(m);
	if (code != CTL_OK)
		return code;
	code = check_config_file(m->config, m->backing, &m->target);
	if (code != CTL_OK)
		return code;
	rc = volume_config_load(m->conf, &cfg, err, sizeof(err));
	if (rc < 0)
		return ctl_err(CTL_FAILED, "%s", err);
	migrating = iniparser_find_entry(cfg.ini, VOLUME_KMS_PREVIOUS) != 0;
	if (volume_kms_same(cfg.ini, "kms", m->target, "kms") && !migrating) {
		fprintf(stderr, "envelopefsctl rotate: %s already uses the KMS of %s: nothing to "
			"move\n", m->backing, m->config);
		*nothing_to_do = true;
		volume_config_free(&cfg);
		return CTL_OK;
	}
	if (migrating && !volume_kms_same(cfg.ini, "kms", m->target, "kms")) {
		volume_config_free(&cfg);
		return ctl_err(CTL_USAGE, "%s is moving to another KMS (its [kms], with the old one "
			       "in [%s]): finish that first by running rotate --to-kms again with "
			       "the configuration it was started with", m->backing,
			       VOLUME_KMS_PREVIOUS);
	}
	rc = kms_open(m->target, &kms, err, sizeof(err));
	if (rc < 0) {
		volume_config_free(&cfg);
		return ctl_err(rc == -EINVAL ? CTL_USAGE : CTL_KEY, "--to-kms %s: %s", m->config,
			       err);
	}
	snprintf(m->target_ref, sizeof(m->target_ref), "%s", kms->key_ref);
	code = probe(m, kms, &cfg);
	kms_close(kms);
	if (code == CTL_OK && !migrating) {
		code = current_ref(m, &cfg, ref);
		if (code == CTL_OK && strcmp(ref, m->target_ref) == 0)
			code = ctl_err(CTL_USAGE, "--to-kms %s names the volume's own master key %s: "
				       "nothing would move (a new version of the same key is a "
				       "rotation: envelopefsctl rotate)", m->config, ref);
		if (code == CTL_OK)
			code = begin(m, &cfg);
	} else if (code == CTL_OK) {
		/* Resuming: the daemon may have been started before the migration was. */
		rc = tell_daemon(m);
		if (rc < 0)
			code = ctl_err(CTL_KEY, "the daemon of %s cannot use the KMS of %s: %s",
				       m->mountpoint, m->config, strerror(-rc));
		else
			fprintf(stderr, "envelopefsctl rotate: resuming the move of %s to %s\n",
				m->backing, m->target_ref);
	}
	volume_config_free(&cfg);
	return code;
}

int ctl_migrate_start(const char *config, const char *backing, const char *mountpoint,
		      const char *current_ref, struct ctl_migration **out)
{
	struct ctl_migration *m = calloc(1, sizeof(*m));
	bool nothing_to_do = false;
	int code;

	*out = NULL;
	if (!m)
		return ctl_err(CTL_FAILED, "out of memory");
	m->config = config;
	snprintf(m->backing, sizeof(m->backing), "%s", backing);
	m->mountpoint = mountpoint;
	snprintf(m->current_ref, sizeof(m->current_ref), "%s", current_ref ? current_ref : "");
	code = start(m, &nothing_to_do);
	if (code != CTL_OK || nothing_to_do) {
		ctl_migrate_free(m);
		return code;
	}
	*out = m;
	return CTL_OK;
}

const char *ctl_migrate_target_ref(const struct ctl_migration *m)
{
	return m->target_ref;
}

int ctl_migrate_finish(struct ctl_migration *m)
{
	struct volume_config cfg;
	dictionary *kms;
	char err[1024];
	int code, rc;

	rc = volume_config_load(m->conf, &cfg, err, sizeof(err));
	if (rc < 0)
		return ctl_err(CTL_FAILED, "%s", err);
	kms = volume_kms_settings(cfg.ini, "kms");
	code = kms ? write_config(m, &cfg, kms, NULL) : ctl_err(CTL_FAILED, "out of memory");
	if (kms)
		iniparser_freedict(kms);
	volume_config_free(&cfg);
	if (code != CTL_OK)
		return code;
	rc = tell_daemon(m);
	if (rc < 0)
		return ctl_err(CTL_FAILED, "every record is under %s, but the daemon of %s did not "
			       "reload its configuration (%s): remount it", m->target_ref,
			       m->mountpoint, strerror(-rc));
	fprintf(stderr, "envelopefsctl rotate: %s now uses only %s; the previous KMS is no "
		"longer needed by it\n", m->backing, m->target_ref);
	return CTL_OK;
}

void ctl_migrate_free(struct ctl_migration *m)
{
	if (!m)
		return;
	if (m->target)
		iniparser_freedict(m->target);
	if (m->locked)
		close(m->lock_fd); /* releases the lock */
	free(m);
}
