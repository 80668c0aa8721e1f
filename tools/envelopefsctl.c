// SPDX-License-Identifier: MIT
/*
 * envelopefsctl - offline administration of envelopefs volumes: the command
 * table and what the commands share.  See docs/envelopefsctl.md.
 */

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "tools/ctl.h"

const char *ctl_cmd = "";

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{ "init", cmd_init, "create a new volume in an empty backing directory" },
	{ "info", cmd_info, "show a volume's format parameters and KMS reference" },
	{ "keyring", cmd_keyring, "create, rotate or list a local keyring" },
	{ "encrypt", cmd_encrypt, "encrypt stdin into a new backing file (offline)" },
	{ "decrypt", cmd_decrypt, "decrypt a backing file to stdout (offline)" },
	{ "status", cmd_status, "show a mounted volume's cache, KMS and error counters" },
	{ "rotate", cmd_rotate, "re-wrap every file's key under the current master key" },
	{ "ls", cmd_ls, "list a volume directory by its plaintext names (offline)" },
	{ "import", cmd_import, "copy a plaintext tree into a volume, encrypted, and verify it" },
	{ "pin", cmd_pin, "accept a volume's configuration as it is now, on this host" },
	{ "scope", cmd_scope, "create, list or lock a mounted volume's key scopes" },
	{ "fsck", cmd_fsck, "authenticate a whole volume, find and --repair leftovers" },
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

int ctl_err(int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "envelopefsctl%s%s: ", *ctl_cmd ? " " : "", ctl_cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

int ctl_usage(const char *usage, bool help)
{
	fputs(usage, help ? stdout : stderr);
	if (!help)
		return CTL_USAGE;
	fputs("\n" CTL_EXIT_CODES, stdout);
	return CTL_OK;
}

int ctl_read_full(int fd, void *buf, size_t len, size_t *got)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = read(fd, (char *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

int ctl_write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

int ctl_volume_open(const char *backing, const char *keyring, const char *pass_file,
		    bool need_kms, struct ctl_volume *v)
{
	char err[1024], abs[PATH_MAX];
	int rc;

	memset(v, 0, sizeof(*v));
	if ((size_t)snprintf(v->conf, sizeof(v->conf), "%s/%s", backing, VOLUME_CONFIG_NAME) >=
	    sizeof(v->conf))
		return ctl_err(CTL_USAGE, "%s: path too long", backing);
	rc = volume_config_load(v->conf, &v->cfg, err, sizeof(err));
	if (rc < 0)
		return ctl_err(CTL_FAILED, "%s", err);
	layout_init(&v->layout, &v->cfg);
	if (!need_kms)
		return CTL_OK;
	if (keyring) {
		if (!realpath(keyring, abs)) {
			ctl_volume_close(v);
			return ctl_err(CTL_KEY, "keyring %s: %s: check --keyring", keyring,
				       strerror(errno));
		}
		iniparser_set(v->cfg.ini, "kms:keyring", abs);
	}
	if (pass_file)
		iniparser_set(v->cfg.ini, "kms:passphrase_file", pass_file);
	rc = kms_open(v->cfg.ini, &v->kms, err, sizeof(err));
	if (rc < 0) {
		ctl_volume_close(v);
		return ctl_err(CTL_KEY, "volume %s: %s", backing, err);
	}
	if (iniparser_find_entry(v->cfg.ini, VOLUME_KMS_PREVIOUS) != 0) {
		dictionary *previous = volume_kms_settings(v->cfg.ini, VOLUME_KMS_PREVIOUS);

		rc = previous ? kms_open(previous, &v->previous, err, sizeof(err)) : -ENOMEM;
		if (previous)
			iniparser_freedict(previous);
		if (rc < 0) {
			ctl_volume_close(v);
			return ctl_err(CTL_KEY, "volume %s: the previous KMS ([%s]): %s", backing,
				       VOLUME_KMS_PREVIOUS, rc == -ENOMEM ? "out of memory" : err);
		}
	}
	return CTL_OK;
}

void ctl_volume_close(struct ctl_volume *v)
{
	kms_close(v->previous);
	v->previous = NULL;
	kms_close(v->kms);
	v->kms = NULL;
	volume_config_free(&v->cfg);
}

/* Undo the octal escapes (\\040 for a space ...) of a /proc/self/mounts field. */
static void unescape_mount_field(char *field)
{
	char *out = field;

	for (const char *p = field; *p; out++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			*out = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 4;
		} else {
			*out = *p++;
		}
	}
	*out = '\0';
}

bool ctl_backing_mounted(const char *backing)
{
	char line[8192];
	bool found = false;
	FILE *f = fopen("/proc/self/mounts", "re");

	while (f && !found && fgets(line, sizeof(line), f)) {
		char src[PATH_MAX], dir[PATH_MAX], type[64];
		if (sscanf(line, "%4095s %4095s %63s", src, dir, type) != 3 ||
		    strcmp(type, "fuse.envelopefs") != 0)
			continue;
		unescape_mount_field(src);
		found = strcmp(src, backing) == 0;
	}
	if (f)
		fclose(f);
	return found;
}

int ctl_list_mounts(char ***mountpoints, int *n)
{
	char line[8192], **list = NULL;
	int count = 0, ret = 0;
	FILE *f = fopen("/proc/self/mounts", "re");

	if (!f)
		return -errno;
	while (ret == 0 && fgets(line, sizeof(line), f)) {
		char dir[PATH_MAX], type[64], **grown;

		if (sscanf(line, "%*s %4095s %63s", dir, type) != 2 ||
		    strcmp(type, "fuse.envelopefs") != 0)
			continue;
		unescape_mount_field(dir);
		grown = realloc(list, (size_t)(count + 1) * sizeof(*list));
		if (!grown || !(grown[count] = strdup(dir))) {
			list = grown ? grown : list;
			ret = -ENOMEM;
			break;
		}
		list = grown;
		count++;
	}
	fclose(f);
	if (ret < 0) {
		for (int i = 0; i < count; i++)
			free(list[i]);
		free(list);
		errno = -ret;
		return ret;
	}
	*mountpoints = list;
	*n = count;
	return 0;
}

static int usage(bool help)
{
	size_t i;
	FILE *f = help ? stdout : stderr;

	fprintf(f, "Usage: envelopefsctl COMMAND [OPTIONS] ARGS...\n"
		   "       envelopefsctl COMMAND --help\n\nCommands:\n");
	for (i = 0; i < N_COMMANDS; i++)
		fprintf(f, "  %-8s  %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nNo command prints a key, a passphrase or plaintext other than decrypt's "
		   "output.\n");
	return ctl_usage("", help);
}

int main(int argc, char **argv)
{
	size_t i;

	/* A closed stdout must be an error we report, not a silent death. */
	signal(SIGPIPE, SIG_IGN);
	secmem_harden_process();
	if (argc < 2)
		return usage(false);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0)
		return usage(true);
	for (i = 0; i < N_COMMANDS; i++) {
		if (strcmp(argv[1], commands[i].name) == 0) {
			ctl_cmd = commands[i].name;
			return commands[i].fn(argc - 1, argv + 1);
		}
	}
	fprintf(stderr, "envelopefsctl: unknown command '%s'\n", argv[1]);
	return usage(false);
}
