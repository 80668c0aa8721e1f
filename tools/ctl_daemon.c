// SPDX-License-Identifier: MIT
/* Asking a mounted volume's daemon to act: see ctl_daemon.h. */
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "tools/ctl_daemon.h"

int ctl_daemon_ioctl(const char *path, unsigned long request)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	ret = ioctl(fd, request);
	if (ret < 0)
		ret = -errno;
	close(fd);
	return ret;
}
