/* SPDX-License-Identifier: MIT */
/* OFD byte-range locks on backing files: see ofdlock.h. */
#include "ofdlock.h"

#include <errno.h>
#include <fcntl.h>

int ofd_lock(int fd, short type, off_t start, off_t len, bool wait)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};

	while (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) < 0) {
		if (errno != EINTR)
			return errno == EACCES ? -EAGAIN : -errno;
	}
	return 0;
}

int ofd_lock_held(int fd, off_t start, off_t len)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len};

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}
