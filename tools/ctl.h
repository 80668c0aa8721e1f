/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TOOLS_CTL_H
#define ENVELOPEFS_TOOLS_CTL_H

/*
 * Shared pieces of envelopefsctl: exit codes, messages, opening a volume.
 * One file per command family: ctl_volume.c (init, info), ctl_keyring.c
 * (keyring create|rotate|list), ctl_data.c (encrypt, decrypt), ctl_status.c
 * (status of a mounted volume), ctl_rotate.c (re-wrapping a tree's keys),
 * ctl_migrate.c (the state of a move to another KMS, rotate --to-kms:
 * ctl_migrate.h), ctl_import.c (copying a plaintext tree into a volume).
 * ctl_daemon.c asks a mounted volume's daemon to act (ctl_daemon.h).
 * ctl_fsck*.c check a whole volume (ctl_fsck.h).  ctl_workq.c is the
 * bounded queue between a volume walk and its workers (fsck, rotate:
 * ctl_workq.h).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fs/layout.h"
#include "fs/names.h"
#include "fs/rewrap.h"
#include "fs/volume.h"
#include "kms/kms.h"

/* Exit codes: documented in every --help and in docs/envelopefsctl.md. */
enum {
	CTL_OK = 0,	   /* success */
	CTL_FAILED = 1,	   /* the operation failed: I/O, not a volume, not empty, exists */
	CTL_USAGE = 2,	   /* bad command line */
	CTL_INTEGRITY = 3, /* data, block or key record corrupt or tampered with */
	CTL_KEY = 4,	   /* keyring/KMS: missing, corrupt, wrong passphrase or keyring */
};

#define CTL_EXIT_CODES                                                                       \
	"Exit status:\n"                                                                     \
	"  0  success\n"                                                                     \
	"  1  the operation failed (I/O error, not a volume, directory not empty, file "    \
	"exists)\n"                                                                          \
	"  2  usage error (unknown option, missing or bad argument)\n"                       \
	"  3  integrity failure: a block or key record is corrupt, tampered with, or was "   \
	"copied\n"                                                                           \
	"     from another file or volume\n"                                                 \
	"  4  key failure: keyring missing, corrupt or readable by others, wrong "           \
	"passphrase,\n"                                                                      \
	"     wrong keyring, master-key version missing, KMS error\n"

#define CTL_PASSPHRASE_HELP                                                                  \
	"The passphrase of a protected keyring comes from --passphrase-file FILE, else the\n" \
	"file named by $ENVELOPEFS_PASSPHRASE_FILE, else $ENVELOPEFS_PASSPHRASE (never from\n" \
	"the command line; one trailing newline of a file is ignored).\n"

extern const char *ctl_cmd; /* "init", "keyring rotate", ... for messages */

/* ctl_err - "envelopefsctl CMD: message\n" on stderr; returns @code. */
int ctl_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ctl_usage - print @usage to stdout (help, returns CTL_OK) or stderr (CTL_USAGE). */
int ctl_usage(const char *usage, bool help);

/* ctl_read_full / ctl_write_full - loop over short transfers; 0 or -errno. */
int ctl_read_full(int fd, void *buf, size_t len, size_t *got);
int ctl_write_full(int fd, const void *buf, size_t len);

/* An opened volume: its configuration, layout and (optionally) KMS. */
struct ctl_volume {
	char conf[4096];
	struct volume_config cfg;
	struct layout layout;
	struct kms *kms;
	struct kms *previous; /* mid-migration: the provider of [kms_previous], else NULL */
};

/* ctl_volume_keys - the providers of @v, for picking one by a record's key reference. */
static inline struct kms_pair ctl_volume_keys(const struct ctl_volume *v)
{
	return (struct kms_pair){ .current = v->kms, .previous = v->previous };
}

/*
 * ctl_volume_open - load BACKING/envelopefs.conf; with @need_kms also open
 * its KMS (and, mid-migration, the previous one: records under either open).  @keyring and @pass_file (may be NULL) override kms:keyring and
 * kms:passphrase_file.  Returns a CTL_* exit code, having printed why.
 */
int ctl_volume_open(const char *backing, const char *keyring, const char *pass_file,
		    bool need_kms, struct ctl_volume *v);
void ctl_volume_close(struct ctl_volume *v);

/*
 * ctl_backing_mounted - is the backing directory @backing (a real path) the
 * source of a mounted envelopefs?  The daemon names its mount after the
 * backing path unless -o fsname= said otherwise.
 */
bool ctl_backing_mounted(const char *backing);

/*
 * ctl_list_mounts - the mountpoints of every mounted envelopefs, in mount
 * order, into a malloc'ed array of @n malloc'ed strings.  0 or -errno (errno
 * set too).
 */
int ctl_list_mounts(char ***mountpoints, int *n);

/*
 * ctl_secret_setting - does KMS setting @key name a secret itself rather
 * than where one is?  Settings land in the world-readable volume
 * configuration, so a token, PIN or password must come from a *_file or the
 * provider's environment variable instead.
 */
bool ctl_secret_setting(const char *key);

int cmd_init(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_keyring(int argc, char **argv);
int cmd_encrypt(int argc, char **argv);
int cmd_decrypt(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_rotate(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_pin(int argc, char **argv);
int cmd_scope(int argc, char **argv); /* ctl_scope.c */
int cmd_fsck(int argc, char **argv);

/*
 * ctl_config_seal - set cfg->mac (volume_config_sealed() volumes; others
 * are left alone) for the configuration about to be written from @cfg,
 * @kms and @previous (may be NULL): the volume key of @backing is unwrapped
 * through the providers those describe.  A CTL_* code, having printed why.
 */
int ctl_config_seal(const char *backing, struct volume_config *cfg, const dictionary *kms,
		    const dictionary *previous);

/*
 * ctl_pin_record - pin the configuration now in @backing (a real path) on
 * this host (fs/confpin.h); a failure is only a warning: the next mount
 * here pins what it finds.
 */
void ctl_pin_record(const char *backing);

/*
 * ctl_volume_names - the name codec of an opened volume (@v with its KMS;
 * encrypted names unwrap the volume key of @backing).  A CTL_* code.
 */
int ctl_volume_names(struct ctl_volume *v, const char *backing, struct names **out);

/*
 * ctl_resolve - the backing path (into @out) of plaintext @path inside the
 * volume @v in @backing, through its name codec *@names, which becomes a
 * key scope's when the path enters one (ctl_scope_offline.h): on return it
 * is the codec of the names in @path's last directory.  The last component
 * need not exist.  A CTL_* code, having printed why.
 */
int ctl_resolve(struct ctl_volume *v, struct names **names, const char *backing, const char *path,
		char *out, size_t cap);
int cmd_import(int argc, char **argv);

/*
 * ctl_count_key_version - walk a mounted volume (@offline false: DIR is its
 * mountpoint, through the daemon) or a backing directory and count the files
 * whose key record is wrapped under @version, and those whose record could
 * not be read.  Returns a CTL_* code, having printed why.
 */
int ctl_count_key_version(const char *dir, bool offline, uint32_t version, size_t *users,
			  size_t *unreadable);

#endif
