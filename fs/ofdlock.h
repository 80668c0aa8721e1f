/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_OFDLOCK_H
#define ENVELOPEFS_FS_OFDLOCK_H

/*
 * Open-file-description byte-range locks on backing files: the way daemons
 * on several hosts of one shared volume exclude each other (shared.h), and
 * the way the tools and a mount tell a live re-key from a crashed one.
 *
 * The last bytes of every backing file's lock range are the daemons' own:
 * user POSIX locks, which the daemon takes on backing files in shared mode
 * (locks.c), end before LOCKS_RESERVED_START.
 *
 *   KEYLOCK_OFFSET  the key lock: exclusive for a re-key, shared for an
 *                   open for writing and a re-wrap (shared.h)
 *   FLOCK_OFFSET    flock(2) locks taken through the mount (locks.c)
 *   BINDLOCK_OFFSET the binding lock: exclusive from the record update of
 *                   a rename or a new link to its backing change
 *                   (bindops.h), so two hosts renaming one file cannot
 *                   leave a record that lists neither's result
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define KEYLOCK_OFFSET INT64_MAX
#define FLOCK_OFFSET (INT64_MAX - 1)
#define BINDLOCK_OFFSET (INT64_MAX - 2)
#define LOCKS_RESERVED_START BINDLOCK_OFFSET

/*
 * ofd_lock - set an OFD lock of @type (F_RDLCK, F_WRLCK, F_UNLCK) on
 * [@start, @start + @len) (@len 0: to the end) through @fd, waiting for
 * conflicting locks when @wait.  0, -EAGAIN when held elsewhere and not
 * @wait, or -errno.
 */
int ofd_lock(int fd, short type, off_t start, off_t len, bool wait);

/*
 * ofd_lock_held - 1 when another open file description holds a lock that
 * conflicts with a write lock on the range, 0 when none does, or -errno.
 * Takes nothing.
 */
int ofd_lock_held(int fd, off_t start, off_t len);

#endif
