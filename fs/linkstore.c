// SPDX-License-Identifier: MIT
/* Reading the link store: see linkstore.h. */

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout.h"
#include "linkstore.h"

void linkstore_path(const uint8_t *id, char out[LINKSTORE_PATH_LEN])
{
	memcpy(out, NAMES_LINK_STORE "/", sizeof(NAMES_LINK_STORE));
	names_link_store_name(id, out + sizeof(NAMES_LINK_STORE));
}

int linkstore_read(int root_fd, const struct names_target *t, uint8_t *sealed)
{
	char path[LINKSTORE_PATH_LEN];
	struct stat st;
	int fd, ret;

	linkstore_path(t->id, path);
	fd = openat(root_fd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ELOOP ? -EBADMSG : -errno;
	if (fstat(fd, &st) < 0)
		ret = -errno;
	else if (!S_ISREG(st.st_mode) || (size_t)st.st_size != NAMES_TARGET_TAG + t->len)
		ret = -EBADMSG; /* a link and its store file always agree on the length */
	else
		ret = layout_pread_full(fd, sealed, NAMES_TARGET_TAG + t->len, 0);
	close(fd);
	return ret == -ENODATA ? -EBADMSG : ret;
}
