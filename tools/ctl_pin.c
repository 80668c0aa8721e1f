// SPDX-License-Identifier: MIT
/*
 * The configuration's integrity, on the tools' side (fs/confmac.h,
 * fs/confpin.h): sealing a configuration about to be written, pinning it on
 * this host, and `envelopefsctl pin`, the deliberate acceptance of a changed
 * configuration.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "fs/confmac.h"
#include "fs/confpin.h"
#include "fs/hoststate.h"
#include "fs/volkey.h"
#include "tools/ctl.h"

/* unwrap_volume_key - through @keys, into @key (secmem).  A CTL_* code. */
static int unwrap_volume_key(const char *backing, const struct volume_config *cfg,
			     const struct kms_pair *keys, uint8_t *key)
{
	char err[1024];
	int fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;

	if (fd < 0)
		return ctl_err(CTL_FAILED, "%s: %s", backing, strerror(errno));
	rc = volkey_load(fd, cfg, keys, key, err, sizeof(err));
	close(fd);
	if (rc < 0)
		return ctl_err(rc == -EBADMSG ? CTL_INTEGRITY : CTL_KEY, "%s: %s", backing, err);
	return CTL_OK;
}

int ctl_config_seal(const char *backing, struct volume_config *cfg, const dictionary *kms,
		    const dictionary *previous)
{
	struct kms_pair keys = { 0 };
	struct kms *current = NULL, *prior = NULL;
	uint8_t *key = NULL;
	char err[1024];
	int rc, code;

	if (!volume_config_sealed(cfg))
		return CTL_OK;
	rc = kms_open(kms, &current, err, sizeof(err));
	if (rc == 0 && previous)
		rc = kms_open(previous, &prior, err, sizeof(err));
	if (rc < 0) {
		code = ctl_err(CTL_KEY, "%s: cannot open the KMS to seal the configuration: %s",
			       backing, err);
		goto out;
	}
	keys.current = current;
	keys.previous = prior;
	key = secmem_alloc(KMS_DEK_LEN);
	code = key ? unwrap_volume_key(backing, cfg, &keys, key)
		   : ctl_err(CTL_FAILED, "out of locked memory");
	if (code == CTL_OK) {
		rc = confmac_seal(cfg, kms, previous, key);
		if (rc < 0)
			code = ctl_err(CTL_FAILED, "cannot seal the configuration: %s",
				       strerror(-rc));
	}
out:
	secmem_free(key, KMS_DEK_LEN);
	kms_close(current);
	kms_close(prior);
	return code;
}

void ctl_pin_record(const char *backing)
{
	char root[PATH_MAX], conf[PATH_MAX + 32], err[1024];
	struct volume_config cfg;
	int rc = hoststate_root(NULL, root, sizeof(root));

	snprintf(conf, sizeof(conf), "%s/%s", backing, VOLUME_CONFIG_NAME);
	if (rc == 0)
		rc = volume_config_load(conf, &cfg, err, sizeof(err));
	if (rc == 0) {
		rc = confpin_record(root, backing, &cfg);
		volume_config_free(&cfg);
	}
	if (rc < 0)
		fprintf(stderr, "envelopefsctl %s: warning: cannot pin the configuration of %s on "
			"this host (%s): the next mount here pins what it finds\n",
			ctl_cmd, backing, strerror(-rc));
}

static const char pin_usage[] =
	"usage: envelopefsctl pin BACKING\n"
	"\n"
	"Accept the volume configuration BACKING/envelopefs.conf as it is now: after a\n"
	"deliberate edit, or when a mount refused it as changed.  On a volume with\n"
	"encrypted names (format 2) its MAC is recomputed under the volume key (the KMS\n"
	"must unwrap it), and this host's pin (the state directory: $ENVELOPEFS_STATE_DIR,\n"
	"else /var/lib/envelopefs for root) is replaced.  Other hosts that mounted the\n"
	"volume keep their pins: run it there too.\n";

/*
 * reseal - a sealed volume's MAC recomputed under its volume key, and the
 * file rewritten when it no longer matched.  A CTL_* code.
 */
static int reseal(const char *backing)
{
	dictionary *kms = NULL, *previous = NULL;
	uint8_t *key = secmem_alloc(KMS_DEK_LEN);
	struct kms_pair keys;
	struct ctl_volume v;
	int code = ctl_volume_open(backing, NULL, NULL, true, &v), rc;

	if (code != CTL_OK) {
		secmem_free(key, KMS_DEK_LEN);
		return code;
	}
	keys = ctl_volume_keys(&v);
	kms = volume_kms_settings(v.cfg.ini, "kms");
	if (iniparser_find_entry(v.cfg.ini, VOLUME_KMS_PREVIOUS) != 0)
		previous = volume_kms_settings(v.cfg.ini, VOLUME_KMS_PREVIOUS);
	code = key && kms ? unwrap_volume_key(backing, &v.cfg, &keys, key)
			  : ctl_err(CTL_FAILED, "out of memory");
	if (code == CTL_OK && confmac_verify(&v.cfg, key) == -EBADMSG) {
		rc = confmac_seal(&v.cfg, kms, previous, key);
		if (rc == 0)
			rc = volume_config_replace(v.conf, &v.cfg, kms, previous);
		code = rc < 0 ? ctl_err(CTL_FAILED, "cannot seal %s: %s", v.conf, strerror(-rc))
			      : CTL_OK;
		if (code == CTL_OK)
			printf("sealed %s again under its volume key\n", v.conf);
	}
	secmem_free(key, KMS_DEK_LEN);
	if (kms)
		iniparser_freedict(kms);
	if (previous)
		iniparser_freedict(previous);
	ctl_volume_close(&v);
	return code;
}

int cmd_pin(int argc, char **argv)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	char backing[PATH_MAX], root[PATH_MAX], err[1024];
	struct ctl_volume v;
	bool sealed;
	int c, rc, code;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1)
		return ctl_usage(pin_usage, c == 'h');
	if (argc - optind != 1)
		return ctl_usage(pin_usage, false);
	if (!realpath(argv[optind], backing))
		return ctl_err(CTL_FAILED, "%s: %s", argv[optind], strerror(errno));
	if (hoststate_root(NULL, root, sizeof(root)) < 0)
		return ctl_err(CTL_FAILED, "no state directory for this host: set %s",
			       HOSTSTATE_ENV);
	code = ctl_volume_open(backing, NULL, NULL, false, &v);
	if (code != CTL_OK)
		return code;
	err[0] = '\0';
	if (confpin_check(root, backing, &v.cfg, err, sizeof(err)) == -ESTALE)
		printf("accepting a changed configuration for %s: %s\n", backing, err);
	sealed = volume_config_sealed(&v.cfg);
	ctl_volume_close(&v);
	code = sealed ? reseal(backing) : CTL_OK;
	if (code != CTL_OK)
		return code;
	code = ctl_volume_open(backing, NULL, NULL, false, &v);
	if (code != CTL_OK)
		return code;
	rc = confpin_record(root, backing, &v.cfg);
	ctl_volume_close(&v);
	if (rc < 0)
		return ctl_err(CTL_FAILED, "cannot write the pin in %s: %s", root, strerror(-rc));
	printf("pinned the configuration of %s in %s\n", backing, root);
	return CTL_OK;
}
