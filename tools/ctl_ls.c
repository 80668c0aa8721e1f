// SPDX-License-Identifier: MIT
/*
 * envelopefsctl ls: list a directory of a volume by its plaintext names,
 * offline, through the same name codec the daemon uses (fs/names.h); and
 * the path resolution that lets decrypt find a file by its plaintext path.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "fs/volkey.h"
#include "tools/ctl.h"
#include "tools/ctl_scope_offline.h"

static const char ls_usage[] =
	"Usage: envelopefsctl ls [OPTIONS] BACKING [DIR]\n"
	"\n"
	"List the directory DIR (a plaintext path inside the volume; default: its\n"
	"root) of the volume in BACKING without mounting it: one line per entry, its\n"
	"type (f file, d directory, l symlink, o other) and plaintext name.  Encrypted\n"
	"names are decrypted with the volume key (which needs the KMS); an entry whose\n"
	"name does not authenticate is reported on stderr and makes the exit status 3.\n"
	"\n"
	"Options:\n"
	"  --backing               also show each entry's backing path, after a tab\n"
	"  --keyring PATH          use this keyring instead of the volume's kms:keyring\n"
	"  --passphrase-file FILE  read the keyring passphrase from FILE\n"
	"  -h, --help              show this help\n"
	"\n" CTL_PASSPHRASE_HELP "\n" CTL_EXIT_CODES;

int ctl_volume_names(struct ctl_volume *v, const char *backing, struct names **out)
{
	uint8_t *key = NULL;
	char err[1024];
	int fd, rc;

	if (v->cfg.names_encrypted) {
		key = secmem_alloc(KMS_DEK_LEN);
		if (!key)
			return ctl_err(CTL_FAILED, "no locked memory for the volume key");
		fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct kms_pair keys = ctl_volume_keys(v);

		rc = fd < 0 ? -errno : volkey_load(fd, &v->cfg, &keys, key, err, sizeof(err));
		if (fd < 0)
			snprintf(err, sizeof(err), "%s", strerror(-rc));
		else
			close(fd);
		if (rc < 0) {
			secmem_free(key, KMS_DEK_LEN);
			return ctl_err(rc == -ENOENT || rc == -EBADMSG ? CTL_INTEGRITY : CTL_KEY,
				       "%s: %s", backing, err);
		}
	}
	rc = names_create(v->cfg.names_encrypted, key, v->cfg.uuid, out);
	secmem_free(key, KMS_DEK_LEN);
	return rc < 0 ? ctl_err(CTL_FAILED, "cannot derive the name keys: %s", strerror(-rc))
		      : CTL_OK;
}

/*
 * resolve_step - the backing entry of plaintext @name in the backing
 * directory @dirfd into @b.  A CTL_* code, having printed why.
 */
static int resolve_step(struct names *names, int dirfd, bool in_root, const char *name,
			struct backing_name *b)
{
	uint8_t id[NAMES_DIRID_LEN];
	char side[NAMES_FULL_MAX + 1];
	int rc = 0;

	if (names_encrypted(names))
		rc = names_dirid_read(dirfd, id);
	if (rc < 0)
		return ctl_err(CTL_INTEGRITY, "the directory holding '%s' has no valid ID (%s)",
			       name, NAMES_DIRID_ENTRY);
	rc = names_encode(names, id, in_root, name, b);
	if (rc < 0)
		return ctl_err(CTL_FAILED, "'%s': %s", name,
			       rc == -EPERM ? "reserved by the volume" : strerror(-rc));
	if (backing_name_is_long(b) &&
	    (names_side_read(dirfd, b->entry, side) < 0 || strcmp(side, b->full) != 0) &&
	    faccessat(dirfd, b->entry, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return ctl_err(CTL_INTEGRITY, "'%s': the side record of its long name is missing "
			       "or damaged", name);
	return CTL_OK;
}

int ctl_resolve(struct ctl_volume *v, struct names **names, const char *backing, const char *path,
		char *out, size_t cap)
{
	char *copy = strdup(path), *save = NULL, *part;
	size_t len;
	int dirfd, rc = CTL_OK;
	bool in_root = true;

	if (!copy)
		return ctl_err(CTL_FAILED, "out of memory");
	len = (size_t)snprintf(out, cap, "%s", backing);
	dirfd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		rc = ctl_err(CTL_FAILED, "%s: %s", backing, strerror(errno));
	for (part = strtok_r(copy, "/", &save); rc == CTL_OK && part;
	     part = strtok_r(NULL, "/", &save)) {
		struct backing_name b;
		int next;

		if (strcmp(part, ".") == 0)
			continue;
		if (strcmp(part, "..") == 0) {
			rc = ctl_err(CTL_USAGE, "%s: '..' is not allowed in a volume path", path);
			break;
		}
		rc = resolve_step(*names, dirfd, in_root, part, &b);
		if (rc != CTL_OK)
			break;
		len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "/%s", b.entry);
		if (len >= cap) {
			rc = ctl_err(CTL_FAILED, "%s: backing path too long", path);
			break;
		}
		next = openat(dirfd, b.entry, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(dirfd);
		dirfd = next;
		in_root = false;
		/* The last component need not be a directory. */
		if (next < 0 && (errno == ENOTDIR || errno == ELOOP) && !strtok_r(NULL, "/", &save))
			break;
		if (next < 0)
			rc = ctl_err(CTL_FAILED, "%s: no such directory in the volume (at '%s': %s)",
				     path, part, strerror(errno));
		else
			rc = ctl_scope_enter(v, next, path, names); /* a key scope's names below */
	}
	if (dirfd >= 0)
		close(dirfd);
	free(copy);
	return rc;
}

static char type_of(int dirfd, const char *entry)
{
	struct stat st;

	if (fstatat(dirfd, entry, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return '?';
	return S_ISREG(st.st_mode) ? 'f' : S_ISDIR(st.st_mode) ? 'd' : S_ISLNK(st.st_mode) ? 'l'
											 : 'o';
}

static int list_dir(struct names *names, const char *dirpath, bool in_root, bool show_backing)
{
	uint8_t id[NAMES_DIRID_LEN];
	char full[NAMES_FULL_MAX + 1], name[NAMES_MAX + 1];
	struct dirent *de;
	int rc = CTL_OK, fd;
	DIR *dp = opendir(dirpath);

	if (!dp)
		return ctl_err(CTL_FAILED, "%s: %s", dirpath, strerror(errno));
	fd = dirfd(dp);
	if (names_encrypted(names) && names_dirid_read(fd, id) < 0) {
		closedir(dp);
		return ctl_err(CTL_INTEGRITY, "%s: the directory ID (%s) is missing or damaged",
			       dirpath, NAMES_DIRID_ENTRY);
	}
	while ((de = readdir(dp))) {
		enum names_entry kind = names_classify(names, in_root, de->d_name);
		int ret;

		if (kind == NAMES_ENTRY_HIDDEN)
			continue;
		ret = kind == NAMES_ENTRY_LONG ? names_side_read(fd, de->d_name, full) : 0;
		if (ret == 0)
			ret = names_decode(names, id, in_root, de->d_name,
					   kind == NAMES_ENTRY_LONG ? full : NULL, name);
		if (ret < 0) {
			rc = ctl_err(CTL_INTEGRITY, "%s/%s: the name (or its side record) is "
				     "damaged or forged: skipped", dirpath, de->d_name);
			continue;
		}
		if (show_backing)
			printf("%c %s\t%s/%s\n", type_of(fd, de->d_name), name, dirpath,
			       de->d_name);
		else
			printf("%c %s\n", type_of(fd, de->d_name), name);
	}
	closedir(dp);
	return rc;
}

int cmd_ls(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "backing", no_argument, NULL, 'b' },
		{ "keyring", required_argument, NULL, 'k' },
		{ "passphrase-file", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *keyring = NULL, *pass_file = NULL, *dir = "/";
	char backing[PATH_MAX], path[PATH_MAX];
	struct names *names = NULL;
	struct ctl_volume v;
	bool show_backing = false;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			show_backing = true;
			break;
		case 'k':
			keyring = optarg;
			break;
		case 'p':
			pass_file = optarg;
			break;
		case 'h':
			return ctl_usage(ls_usage, true);
		default:
			return ctl_usage(ls_usage, false);
		}
	}
	if (argc - optind != 1 && argc - optind != 2)
		return ctl_usage(ls_usage, false);
	if (argc - optind == 2)
		dir = argv[optind + 1];
	if (!realpath(argv[optind], backing))
		return ctl_err(CTL_FAILED, "%s: %s", argv[optind], strerror(errno));
	rc = ctl_volume_open(backing, keyring, pass_file, true, &v);
	if (rc != CTL_OK)
		return rc;
	rc = ctl_volume_names(&v, backing, &names);
	if (rc == CTL_OK)
		rc = ctl_resolve(&v, &names, backing, dir, path, sizeof(path));
	if (rc == CTL_OK)
		rc = list_dir(names, path, strcmp(path, backing) == 0, show_backing);
	names_destroy(names);
	ctl_volume_close(&v);
	return rc;
}
