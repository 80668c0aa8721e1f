/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_SCOPEDEF_H
#define ENVELOPEFS_FS_SCOPEDEF_H

/*
 * Key-scope definitions (docs/FORMAT.md, "Key scopes"): the codec of one
 * definition, its scope key, and the registry BACKING/SCOPE_REGISTRY that
 * holds one definition per scope.  A definition names the scope's root
 * directory (by its directory ID), the scope's KMS settings, and the scope
 * key wrapped by that KMS; it is authenticated by a MAC under a key derived
 * from the volume key, so a storage host can neither point a scope at
 * another KMS nor move a definition onto another directory.
 *
 * Invariant: a decoded definition has passed its MAC; its settings are
 * canonical (KEY=VALUE lines, keys strictly ascending, `provider` among
 * them), so one scope has exactly one encoding.
 *
 * Nothing here knows about FUSE; the daemon and envelopefsctl share it.
 */

#include <iniparser.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/record.h"
#include "kms/kms.h"

#define SCOPE_ID_LEN 16
#define SCOPE_KEY_LEN 32
#define SCOPE_MAC_LEN 32
#define SCOPE_MAGIC "EFSC"
#define SCOPE_DEF_VERSION 1
#define SCOPE_SETTINGS_MAX 4096
#define SCOPE_RECORD_MAX 6500
/* magic, version, flags, ID, root ID, two lengths: 4 + 1 + 1 + 16 + 16 + 2 + 2 */
#define SCOPE_DEF_FIXED 42
/* Flag: the scope is moving to another KMS; the previous settings follow the record. */
#define SCOPE_FLAG_MOVING 0x01
/*
 * Flag: the scope's root was a non-empty directory being converted into the
 * scope (scope_convert.h); the previous settings, which follow the record as
 * for a move, are the volume's KMS, whose records and names under the root
 * still open until the conversion ends.  Never set together with MOVING.
 */
#define SCOPE_FLAG_CONVERTING 0x02
#define SCOPE_DEF_MAX \
	(SCOPE_DEF_FIXED + SCOPE_SETTINGS_MAX + SCOPE_RECORD_MAX + 2 + SCOPE_SETTINGS_MAX + \
	 SCOPE_MAC_LEN)
/* The registry directory in the backing root (its '.' keeps it hidden and reserved). */
#define SCOPE_REGISTRY "envelopefs.scopes"
/* base64url of a scope ID: a definition's file name in the registry. */
#define SCOPE_ID_TEXT 22

struct scope_def {
	uint8_t id[SCOPE_ID_LEN];
	uint8_t root_dirid[16];		      /* envelopefs.dirid of the scope's root */
	char settings[SCOPE_SETTINGS_MAX + 1]; /* canonical KEY=VALUE\n lines */
	struct key_record record;	      /* the scope key, wrapped by the scope's KMS */
	/* While the scope moves to the KMS of @settings (rotate --scope --to-kms):
	 * the settings of the KMS it moves from, whose records still open;
	 * "" otherwise (SCOPE_FLAG_MOVING clear). */
	char previous[SCOPE_SETTINGS_MAX + 1];
	/* SCOPE_FLAG_CONVERTING: @previous is the volume's KMS, not a move's
	 * (only with @previous set). */
	bool converting;
};

/*
 * scope_def_key - K_def (SCOPE_MAC_LEN bytes), which authenticates every
 * definition, from @volume_key (32 bytes) and @uuid.  0 or -EIO.  Every
 * @def_key below is this key.
 */
int scope_def_key(const uint8_t *volume_key, const uint8_t *uuid, uint8_t out[SCOPE_MAC_LEN]);

/*
 * scope_def_encode - @d, MAC included, into @out (@cap bytes); *@len its
 * length.  -EINVAL for settings that are not canonical or a record that does
 * not encode, -ENOSPC if @cap is short.
 */
int scope_def_encode(const struct scope_def *d, const uint8_t *def_key, uint8_t *out, size_t cap,
		     size_t *len);

/* scope_def_decode - strict parse and MAC check of exactly @len bytes.  0 or -EBADMSG. */
int scope_def_decode(const uint8_t *buf, size_t len, const uint8_t *def_key,
		     struct scope_def *d);

/*
 * scope_settings_canon - the canonical text of the provider settings in
 * section "kms" of @ini (`provider` required) into @out (@cap bytes).
 * 0, or -EINVAL with a message in @err (a value holding a newline, no
 * provider, too long).
 */
int scope_settings_canon(const dictionary *ini, char *out, size_t cap, char *err, size_t err_len);

/* scope_settings_ini - the canonical @settings as a dictionary with a [kms] section; NULL on -ENOMEM. */
dictionary *scope_settings_ini(const char *settings);

/*
 * scope_def_ini - @d's providers as a dictionary: [kms] from its settings,
 * and while it moves, [kms_previous] from its previous ones (what
 * kms_keeper_open() reads).  NULL on -ENOMEM.
 */
dictionary *scope_def_ini(const struct scope_def *d);

/*
 * scope_key_create - draw a scope key through @kms (its generate: the KMS
 * context is the volume @uuid and d->id) into @key (SCOPE_KEY_LEN bytes of
 * secmem) and fill d->record with it.  0 or a KMS error (kms.h).
 */
int scope_key_create(struct kms *kms, const uint8_t *uuid, struct scope_def *d, uint8_t *key);

/*
 * scope_key_open - unwrap the scope key of @d through @kms into @key
 * (SCOPE_KEY_LEN bytes of secmem) and authenticate its record.  -ENOKEY when
 * the record names another master key than @kms's, -EBADMSG when it does not
 * authenticate, else a KMS error (kms.h).
 */
int scope_key_open(struct kms *kms, const uint8_t *uuid, const struct scope_def *d, uint8_t *key);

/*
 * scope_key_rewrap - move d->record onto @kms's current master-key version
 * (*@current) through the KMS's own re-wrap; the scope key stays, the
 * record's MAC is sealed anew once the old record authenticated.  0 (d->record
 * replaced: the caller stores @d), 1 (already current: nothing changed),
 * -ENOKEY (the record names another master key), -EBADMSG, or a KMS error.
 * On an error d->record may be half-changed: the caller's stored copy is the
 * truth.
 */
int scope_key_rewrap(struct kms *kms, const uint8_t *uuid, struct scope_def *d, uint32_t *current);

/*
 * scope_key_wrap - make d->record the scope @key (SCOPE_KEY_LEN bytes)
 * wrapped by @kms (its wrap: a scope moving to another KMS), its MAC sealed
 * under @key.  0 or a KMS error (kms.h; -EOPNOTSUPP: @kms cannot wrap a key
 * it did not make).
 */
int scope_key_wrap(struct kms *kms, const uint8_t *uuid, struct scope_def *d, const uint8_t *key);

/*
 * scope_registry_write - store @d as BACKING/SCOPE_REGISTRY/b64(id), making
 * the registry if needed: written as NAME.tmp, fsynced, renamed, the
 * directory fsynced.  @backing_fd: the backing root.  0 or -errno.
 */
int scope_registry_write(int backing_fd, const struct scope_def *d, const uint8_t *def_key);

/* scope_registry_remove - remove the definition of scope @id (durably); a missing one is 0. */
int scope_registry_remove(int backing_fd, const uint8_t id[SCOPE_ID_LEN]);

/*
 * scope_registry_each - call @fn for every definition in the registry (none
 * when there is no registry), stopping at the first non-zero return, which
 * is returned.  A definition that does not decode is -EBADMSG, a
 * definition whose file name is not its ID too.  Other entries (a crash's
 * NAME.tmp) are skipped.
 */
typedef int (*scope_visit_fn)(void *arg, const struct scope_def *d);
int scope_registry_each(int backing_fd, const uint8_t *def_key, scope_visit_fn fn, void *arg);

#endif
