/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_SCOPES_H
#define ENVELOPEFS_FS_SCOPES_H

/*
 * The mounted volume's key scopes (docs/FORMAT.md, "Key scopes"): every
 * definition of the registry (scopedef.h), read at mount, each with its own
 * KMS provider and name codec, both loaded lazily.
 *
 * A scope is **locked** (no provider open, codec without keys) after the
 * mount and after scope_lock(); the first operation that needs it opens its
 * provider from the definition's settings (secrets come from files or the
 * environment, as for the volume's), unwraps the scope key there and gives
 * the codec its keys.  If the KMS refuses, that operation fails with
 * -EACCES and the scope stays locked, so the next one asks the KMS again: a
 * key enabled again works without a remount.
 *
 * Invariants:
 *  - a scope's provider is used only between scope_enter() and
 *    scope_leave(), which hold it shared; scope_lock() takes it exclusively,
 *    so it never closes a provider in use;
 *  - the scope set only grows while mounted (scope_set_create); a struct
 *    scope lives until scope_set_close(), so inodes may point at one, even
 *    once its root is removed (scope_gone).
 */

#include <stdbool.h>
#include <stdint.h>

#include "kmsset.h"
#include "layout.h"
#include "names.h"
#include "scopedef.h"

struct scope;
struct scope_set;

/* Counters of one scope since mount (across locks), for status. */
struct scope_stats {
	bool unlocked;
	uint64_t generate, unwrap, failures; /* KMS calls of its provider */
	uint64_t refusals;		     /* unlocks the KMS refused (-EACCES given) */
	uint64_t locks;			     /* scope_lock() calls */
};

/*
 * scope_set_open - the scopes of the volume whose volume key is
 * @volume_key (NULL: a volume without one, which has no scopes), reading
 * the registry of the backing root @backing_fd.  @pool_capacity as for
 * kms_keeper_open().  0, or -errno with a message in @err (a definition
 * that does not authenticate: -EBADMSG).
 */
int scope_set_open(int backing_fd, const uint8_t *volume_key, const uint8_t *uuid,
		   int pool_capacity, struct scope_set **out, char *err, size_t err_len);
void scope_set_close(struct scope_set *set);

/* scope_set_count - how many scopes; scope_set_at - the @i-th (0 <= @i < count). */
size_t scope_set_count(struct scope_set *set);
struct scope *scope_set_at(struct scope_set *set, size_t i);

/* scope_by_root - the scope whose root directory has ID @dirid, or NULL. */
struct scope *scope_by_root(struct scope_set *set, const uint8_t *dirid);

/*
 * scope_set_create - make the directory with ID @dirid the root of a new
 * scope with the provider settings @settings (canonical, scopedef.h):
 * opens the provider, draws the scope key, writes the definition and adds
 * the scope (unlocked).  @converting_from: NULL for an empty directory; for
 * one to convert (scope_convert.h), the volume's KMS settings (canonical),
 * stored as the definition's previous ones with SCOPE_FLAG_CONVERTING.  Refuses (-EEXIST) a directory that is a root
 * already and (-EINVAL) a key reference the volume (@volume_refs, NULL
 * terminated) or another scope uses, or a provider whose records need more
 * room than the header slots of @layout hold (the rule `init` sizes the
 * slots by: a re-wrap must always fit in place).  0 or -errno, message in
 * @err.
 */
int scope_set_create(struct scope_set *set, int backing_fd, const uint8_t *dirid,
		     const char *settings, const char *converting_from,
		     const char *const *volume_refs, const struct layout *layout, char *err,
		     size_t err_len);

/*
 * While a scope is converting (SCOPE_FLAG_CONVERTING), its provider set
 * holds the volume's KMS as the previous one and its codec falls back to
 * the volume's (names.h).  scope_converting - whether @s is;
 * scope_converting_to - whether it is, to the KMS of canonical @settings.
 * scope_convert_end - the definition without the flag stored, @s locked
 * (reopened with its own KMS and keys alone): 0, 1 (not converting), or
 * -errno + @err.  The caller made sure nothing under the root is left
 * under the volume's keys; -EAGAIN when an entry was renamed or linked
 * inside the scope since the checking walk that made sure began (or one is
 * being), or no such walk began since mount.  A converting scope neither
 * moves nor ends a move (-EBUSY).
 */
bool scope_converting(struct scope *s);
bool scope_converting_to(struct scope *s, const char *settings);
int scope_convert_end(struct scope *s, int backing_fd, char *err, size_t err_len);

/*
 * A conversion's checking walk passes each directory once; a rename or a
 * link inside the scope meanwhile can put what it has not seen where it
 * has passed.  So every rename and link inside a scope runs between
 * scope_moves_begin() and scope_moves_end() (@moved: it changed the
 * tree), the walk's start calls scope_check_begins(), and
 * scope_convert_end() refuses if any ran since.
 */
void scope_moves_begin(struct scope *s);
void scope_moves_end(struct scope *s, bool moved);
void scope_check_begins(struct scope *s);

/*
 * scope_move_start - begin moving @s to the KMS of the canonical @settings
 * (rotate --scope --to-kms; docs/FORMAT.md, "Moving a scope to another
 * KMS"): the new provider's key checked as scope_set_create() checks it,
 * the scope key wrapped by it, and a definition with @s's settings as the
 * previous ones stored in the registry of @backing_fd before @s uses it (@s
 * is locked: the next use opens both providers).  0 (started), 1 (moving
 * to @settings already: resume), -EBUSY (moving elsewhere), -EACCES (the
 * scope's KMS refuses), -EINVAL, or -errno; a message in @err.
 */
int scope_move_start(struct scope *s, int backing_fd, const char *settings,
		     const char *const *volume_refs, const struct layout *layout, char *err,
		     size_t err_len);

/*
 * scope_move_end - end @s's move: the definition without previous
 * settings stored, @s locked (reopened with its new KMS alone).  The caller
 * made sure no record is left under the old KMS.  0, 1 (not moving), or
 * -errno + @err.
 */
int scope_move_end(struct scope *s, int backing_fd, char *err, size_t err_len);

/*
 * scope_set_forget_root - the scope's root @dirid was removed: drop its
 * definition from the registry (the struct stays, locked, until unmount).
 */
void scope_set_forget_root(struct scope_set *set, int backing_fd, const uint8_t *dirid);

/*
 * scope_enter - hold @s's keys for one operation, unlocking it first if it
 * is locked; *@set (may be NULL) is its KMS set.  0, or -EACCES when the
 * scope cannot be unlocked (the cause logged, rate-limited).
 */
int scope_enter(struct scope *s, const struct kms_set **set);
void scope_leave(struct scope *s, const struct kms_set *set);

/*
 * scope_keys_get / scope_keys_put - the KMS set for a file in scope @s:
 * scope_enter()'s, or with @s NULL the volume's from @volume.  0 or -EACCES.
 */
int scope_keys_get(struct scope *s, struct kms_keeper *volume, const struct kms_set **set);
void scope_keys_put(struct scope *s, struct kms_keeper *volume, const struct kms_set *set);

/* scope_names - @s's codec (keys present only while unlocked, names.h). */
struct names *scope_names(struct scope *s);

/*
 * scope_lock - wipe @s's name keys and close its provider (its master keys
 * wiped), waiting for operations that hold it.  The caller drops the
 * scope's cached DEKs.
 */
void scope_lock(struct scope *s);

/*
 * scope_current_version - the current master-key version of @s's KMS
 * (unlocking @s first if need be).  0, -EACCES (locked by its KMS), or a
 * KMS error.
 */
int scope_current_version(struct scope *s, uint32_t *version);

/*
 * scope_rewrap_key - move @s's scope-key record onto its KMS's current
 * version *@version, storing the new definition in the registry of backing
 * root @backing_fd (crash-safely, scopedef.h) before @s uses it.  0 (re-wrapped),
 * 1 (already current), or -errno (logged).
 */
int scope_rewrap_key(struct scope *s, int backing_fd, uint32_t *version);

/*
 * scope_shred - destroy @s's master key in its KMS (kms_destroy(), opening
 * the provider if need be), then lock @s as scope_lock() does.  Nothing
 * under the scope unwraps again.  0, or -errno with a message in @err:
 * -EACCES (its KMS refuses already), -EOPNOTSUPP, -EPERM (kms.h).  The
 * caller drops the scope's cached DEKs.
 */
int scope_shred(struct scope *s, char *err, size_t err_len);

/* scope_record_of - a copy of @s's scope-key record (a re-wrap replaces it). */
void scope_record_of(struct scope *s, struct key_record *out);

const struct scope_def *scope_def_of(const struct scope *s);

/* scope_gone - whether @s's root was removed (it is then listed nowhere). */
bool scope_gone(struct scope *s);
void scope_get_stats(struct scope *s, struct scope_stats *out);

#endif
