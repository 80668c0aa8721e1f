/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TOOLS_CTL_DAEMON_H
#define ENVELOPEFS_TOOLS_CTL_DAEMON_H

/*
 * Asking a mounted volume's daemon to act, through the ioctls of
 * fs/status.h.  Both rotate (ctl_rotate.c: re-wrap, re-key) and the move to
 * another KMS (ctl_migrate.c: reload the configuration) drive the daemon
 * this way; neither needs the other to do it.  The daemon answers root only.
 */

/*
 * ctl_daemon_ioctl - issue the daemon's ioctl @request (fs/status.h) on
 * @path in a mounted volume (a file, or the mount root).  What ioctl(2)
 * returned (0, or 1 for a re-wrap that found the record already current),
 * or -errno.
 */
int ctl_daemon_ioctl(const char *path, unsigned long request);

#endif
