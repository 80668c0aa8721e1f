/* SPDX-License-Identifier: MIT */
/* The name codec (identity version): see names.h. */
#include "names.h"

#include <errno.h>
#include <string.h>

#include "volume.h"

static bool reserved(bool parent_is_root, const char *name)
{
	return parent_is_root &&
	       (strcmp(name, VOLUME_CONFIG_NAME) == 0 || strcmp(name, VOLUME_REKEY_DIR) == 0);
}

int names_to_backing(bool parent_is_root, const char *name, char *out)
{
	size_t len = strlen(name);

	if (len > NAMES_MAX)
		return -ENAMETOOLONG;
	if (reserved(parent_is_root, name))
		return -EPERM;
	memcpy(out, name, len + 1);
	return 0;
}

int names_from_backing(bool parent_is_root, const char *backing, char *out)
{
	size_t len = strlen(backing);

	if (len > NAMES_MAX || reserved(parent_is_root, backing))
		return -ENOENT;
	memcpy(out, backing, len + 1);
	return 0;
}
