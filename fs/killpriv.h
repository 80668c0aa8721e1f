/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_KILLPRIV_H
#define ENVELOPEFS_FS_KILLPRIV_H

/*
 * FUSE_HANDLE_KILLPRIV_V2 with a libfuse (3.14) that does not know it.
 *
 * Without it, the kernel asks the daemon for security.capability before
 * every write(2) (file_remove_privs): one round trip per write, more than
 * the write itself costs when the writeback cache takes it.  With it, the
 * kernel marks the superblock SB_NOSEC and asks once per inode until its
 * attributes or security xattrs change, and in exchange leaves clearing
 * setuid/setgid on a write or truncate to the daemon: it flags such a
 * request (FUSE_WRITE_KILL_SUIDGID, FATTR_KILL_SUIDGID; the latter on every
 * chown too, whoever the caller).  An fallocate, which a local filesystem
 * treats as a write, comes unflagged: the daemon clears the bits itself
 * unless the caller holds CAP_FSETID.  The kernel still removes
 * security.capability itself, through REMOVEXATTR.
 *
 * libfuse neither negotiates the flag nor passes those request flags on, so
 * a thin I/O layer on the session's /dev/fuse fd (fuse_session_custom_io)
 * adds the flag to the INIT reply when the kernel offers it, and notes each
 * request's demand before libfuse dispatches it.  libfuse reads a request
 * and runs its handler on the same thread, so the demand is kept per
 * thread and the handler takes it.
 *
 * Invariant: once the flag is negotiated every request must pass through
 * killpriv's read, so splice reading (which bypasses it) must stay off.
 */

#include <stdbool.h>
#include <stdint.h>

#include "ops.h"

/*
 * killpriv_install - put the I/O layer on the mounted session @se, before
 * its loop reads the INIT request.  0 or -errno (the session then works
 * as before, without the flag).
 */
int killpriv_install(struct fuse_session *se);

/* killpriv_negotiated - whether the INIT reply carried the flag. */
bool killpriv_negotiated(void);

/*
 * killpriv_take - whether the request this thread is handling, on @nodeid,
 * asks the daemon to clear setuid/setgid.  The demand is consumed.
 */
bool killpriv_take(uint64_t nodeid);

/*
 * killpriv_cleared - tell the kernel that @nodeid's mode changed under a
 * WRITE: it keeps the attributes it had, setuid included, while a SETATTR
 * reply carries the new ones.  0 or -errno.
 */
int killpriv_cleared(uint64_t nodeid);

#endif
