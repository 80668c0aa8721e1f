/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_ENVFS_H
#define ENVELOPEFS_FS_ENVFS_H

/*
 * The daemon's state: one struct envfs for the mounted volume, shared by
 * every FUSE worker thread.  Everything in it is either immutable after
 * mount, internally locked (inode table, DEK cache, KMS) or an atomic
 * counter.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "dekcache.h"
#include "kms/dekpool.h"
#include "inode.h"
#include "inode_evict.h"
#include "kms/kms.h"
#include "kmsset.h"
#include "layout.h"
#include "names.h"
#include "prefetch.h"
#include "backing.h"
#include "volume.h"
#include "xattr_absent.h"

/*
 * Daemon settings: `-o config=FILE` (INI [daemon] section) and the same
 * names as `-o NAME=VALUE`; the table in settings.c lists them all.
 */
struct envfs_settings {
	unsigned cache_entries;	  /* cache_entries: DEKs kept after close */
	unsigned cache_max_age;	  /* cache_max_age: seconds an idle DEK is kept */
	double attr_timeout;	  /* attr_timeout: kernel attribute cache, s */
	double entry_timeout;	  /* entry_timeout: kernel name cache, s */
	bool writeback_cache;	  /* writeback_cache: kernel buffers and merges writes */
	bool xattrs;		  /* xattrs: extended attributes served (false: EOPNOTSUPP) */
	unsigned read_ahead_kb;	  /* read_ahead_kb: kernel read-ahead window, 0 = kernel's */
	int log_level;		  /* log_level: error|warning|notice|info|debug */
	int dek_pool;		  /* dek_pool: new-file keys made ahead; -1 = auto */
	int prefetch;		  /* prefetch: unwrap listed files' DEKs ahead; -1 = auto, 0, 1 */
	int shared;		  /* shared: auto|true|false, enum shared_setting (shared.h) */
	unsigned max_fds;	  /* max_fds: inode fds kept open; 0 = from RLIMIT_NOFILE */
	unsigned max_inodes;	  /* max_inodes: the inode table's bound (inode_evict.h); 0 = none */
	unsigned rollback_sync_interval; /* rollback_sync_interval: s between syncfs (rollback.h) */
};

/* Run-time counters reported by the status xattr. */
struct envfs_counters {
	atomic_uint_fast64_t key_errors;       /* files whose key could not be made or unwrapped */
	atomic_uint_fast64_t integrity_errors; /* blocks or records failing authentication */
	atomic_uint_fast64_t io_errors;
};

/* An open file or directory handle, listed so that teardown can close
 * those whose RELEASE the kernel never sent (unmounted while in flight). */
struct handle {
	struct handle *prev, *next;
	bool is_dir;
};

struct fuse_session;
struct rollback;
struct volepoch;

struct envfs {
	char *backing;
	struct fuse_session *session; /* for notifications to the kernel (shared mode) */
	struct volume_config cfg;
	struct layout layout;
	struct kms_keeper *keys; /* the KMS providers and new-file keys (kmsset.h) */
	struct prefetch *prefetch; /* DEKs of listed files unwrapped ahead; NULL when off */
	struct dekcache *cache;
	struct names *names; /* name, symlink and xattr codec */
	struct scope_set *scopes; /* the key scopes (scopes.h) */
	struct rollback *rollback; /* format 3: the file versions this host saw (rollback.h); else NULL */
	struct volepoch *epoch;	   /* format 3 with a volume key: its epoch (volepoch.h); else NULL */
	struct inode_table *inodes;
	struct inode_evictor *evictor; /* keeps inodes near max_inodes; NULL when none */
	struct envfs_settings settings;
	struct backing_caps caps; /* what the backing can do, probed at mount */
	bool shared;		  /* shared mode (shared.h), resolved at mount */
	bool shared_locks;	  /* shared mode on a backing with OFD locks (locks.c, key lock) */
	struct envfs_counters counters;
	struct xattr_absent_volume xattr_absent;
	time_t started;
	pthread_mutex_t handles_lock;
	struct handle handles; /* list head */
};

/* envfs_settings_defaults - every setting at its default. */
void envfs_settings_defaults(struct envfs_settings *s);

/* envfs_setting_known - is @name a daemon setting? */
bool envfs_setting_known(const char *name);

/*
 * envfs_setting_set - set @name to @value.  0, -ENOENT for an unknown name
 * (@err lists the known ones), -EINVAL for a bad value (@err says which
 * values are accepted); @s is unchanged on error.
 */
int envfs_setting_set(struct envfs_settings *s, const char *name, const char *value, char *err,
		      size_t err_len);

/* envfs_settings_help - one line per setting: NAME=VALUES, meaning, default. */
void envfs_settings_help(FILE *out);

/*
 * envfs_settings_load - read the [daemon] section of @path into @s.
 * Unknown keys and bad values are errors (message in @err).  0 or -errno.
 */
int envfs_settings_load(const char *path, struct envfs_settings *s, char *err, size_t err_len);

#endif
