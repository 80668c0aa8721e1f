/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TOOLS_CTL_MIGRATE_H
#define ENVELOPEFS_TOOLS_CTL_MIGRATE_H

/*
 * Moving a volume to another KMS: the state of the move (ctl_migrate.c),
 * for rotate --to-kms, which drives it:
 *
 *	ctl_migrate_start()	check CONFIG, name the new KMS in the volume
 *				configuration (the old one as previous)
 *	the caller's walk	re-wrap every record until all name
 *				ctl_migrate_target_ref()
 *	ctl_migrate_finish()	drop the old KMS from the configuration
 *	ctl_migrate_free()
 *
 * The migration knows nothing of the walk: it only keeps the configuration
 * and the mounted daemon (if any) in step with it.
 */

struct ctl_migration;

/*
 * ctl_migrate_start - check @config (an INI file whose one [kms] section
 * is the new provider) and begin, or resume, moving the volume in @backing
 * (a real path) to it: the volume configuration names the new KMS as [kms]
 * and the old as [kms_previous], and the daemon of @mountpoint (NULL
 * offline) has reloaded it.  Online, @current_ref is the key reference the
 * daemon names current; NULL or "" has the volume's KMS opened to tell.
 * @config and @mountpoint are kept, not copied.  Nothing changes when a
 * check fails.
 *
 * On CTL_OK, *@out is the migration under way, holding a lock on BACKING
 * (one migration of a volume at a time) until ctl_migrate_free(), or NULL
 * when the volume already uses @config's KMS alone: nothing to move.
 * A CTL_* code, having printed why.
 */
int ctl_migrate_start(const char *config, const char *backing, const char *mountpoint,
		      const char *current_ref, struct ctl_migration **out);

/*
 * ctl_migrate_target_ref - the new KMS's key reference: a record naming it
 * has moved, whatever its version.
 */
const char *ctl_migrate_target_ref(const struct ctl_migration *m);

/*
 * ctl_migrate_finish - every record has moved: drop [kms_previous] and tell
 * the daemon.  A CTL_* code, having printed why.
 */
int ctl_migrate_finish(struct ctl_migration *m);

/* ctl_migrate_free - release BACKING's lock and @m (may be NULL). */
void ctl_migrate_free(struct ctl_migration *m);

#endif
