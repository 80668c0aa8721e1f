/* SPDX-License-Identifier: MIT */
/* Finding a re-key's file by its record when its handle is stale: see rekey_find.h. */
#include "rekey_find.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "volume.h"

int rekey_file_has_id(const struct layout *l, int fd, const uint8_t old_id[16],
		      const uint8_t new_id[16])
{
	struct key_record *rec = malloc(sizeof(*rec));
	struct record_pos pos;
	int ret;

	if (!rec)
		return -ENOMEM;
	ret = layout_read_record(l, fd, rec, &pos);
	if (ret == 0)
		ret = memcmp(rec->file_id, old_id, 16) == 0 || memcmp(rec->file_id, new_id, 16) == 0;
	else if (ret == -ENODATA || ret == -EBADMSG)
		ret = 0; /* no record, or not one: not the file */
	free(rec);
	return ret;
}

/* find_below - rekey_find_file() in the directory @dfd (consumed); @top: it is the root. */
static int find_below(const struct layout *l, int dfd, int top, const uint8_t old_id[16],
		      const uint8_t new_id[16])
{
	DIR *dir = fdopendir(dfd);
	struct dirent *de;
	int ret = -ENOENT;

	if (!dir) {
		close(dfd);
		return -errno;
	}
	while (ret == -ENOENT && (de = readdir(dir)) != NULL) {
		struct stat st;
		int fd;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (top && !strcmp(de->d_name, VOLUME_REKEY_DIR)))
			continue;
		if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) /* else gone meanwhile */
				ret = -errno;
			continue;
		}
		/* A file that cannot be looked at may be the one: an error, not a miss. */
		if (S_ISDIR(st.st_mode)) {
			fd = openat(dirfd(dir), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0)
				ret = find_below(l, fd, 0, old_id, new_id);
			else if (errno != ENOENT)
				ret = -errno;
		} else if (S_ISREG(st.st_mode)) {
			fd = openat(dirfd(dir), de->d_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0) {
				if (errno != ENOENT)
					ret = -errno;
				continue;
			}
			ret = rekey_file_has_id(l, fd, old_id, new_id);
			if (ret == 1)
				ret = fd;
			else
				close(fd);
			if (ret == 0)
				ret = -ENOENT; /* go on */
		}
	}
	closedir(dir);
	return ret;
}

int rekey_find_file(const struct layout *l, int root_fd, const uint8_t old_id[16],
		    const uint8_t new_id[16])
{
	int dfd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd < 0)
		return -errno;
	return find_below(l, dfd, 1, old_id, new_id);
}
