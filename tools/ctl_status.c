/* SPDX-License-Identifier: MIT */
/*
 * envelopefsctl status [--json] MOUNTPOINT: the running daemon's status,
 * read from the root-only virtual xattr described in fs/status.h.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "fs/status.h"
#include "tools/ctl.h"

static const char status_usage[] =
	"Usage: envelopefsctl status [--json] MOUNTPOINT\n"
	"\n"
	"Show a mounted volume's run-time status: volume, KMS provider and call counts,\n"
	"DEK cache figures, integrity and key errors, uptime, the daemon's pid and\n"
	"version.  --json prints the daemon's JSON object as it is.  Needs root (the\n"
	"status is a trusted.* xattr).\n";

#define STATUS_MAX 8192
#define FIELDS_MAX 128
#define PATH_LEN 64
#define VALUE_LEN 512

/* The status object flattened into ("kms.unwrap", "3") pairs. */
struct fields {
	int n;
	char key[FIELDS_MAX][PATH_LEN];
	char value[FIELDS_MAX][VALUE_LEN];
};

struct parser {
	const char *p;
	struct fields *f;
};

static void skip_space(struct parser *ps)
{
	while (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\t' || *ps->p == '\r')
		ps->p++;
}

/* A JSON string with \" and \\ escapes (all the daemon emits). */
static int parse_string(struct parser *ps, char *out, size_t cap)
{
	size_t len = 0;

	if (*ps->p++ != '"')
		return -EBADMSG;
	while (*ps->p && *ps->p != '"') {
		if (*ps->p == '\\' && (ps->p[1] == '"' || ps->p[1] == '\\'))
			ps->p++;
		if (len + 1 >= cap)
			return -EBADMSG;
		out[len++] = *ps->p++;
	}
	if (*ps->p++ != '"')
		return -EBADMSG;
	out[len] = '\0';
	return 0;
}

static int parse_object(struct parser *ps, const char *prefix);

static int parse_member(struct parser *ps, const char *prefix)
{
	char name[PATH_LEN], path[PATH_LEN];
	struct fields *f = ps->f;
	int ret;

	skip_space(ps);
	if ((ret = parse_string(ps, name, sizeof(name))) < 0)
		return ret;
	if (snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", name) >=
	    (int)sizeof(path))
		return -EBADMSG;
	skip_space(ps);
	if (*ps->p++ != ':')
		return -EBADMSG;
	skip_space(ps);
	if (*ps->p == '{')
		return parse_object(ps, path);
	if (f->n == FIELDS_MAX)
		return -EBADMSG;
	snprintf(f->key[f->n], PATH_LEN, "%s", path);
	if (*ps->p == '"') {
		ret = parse_string(ps, f->value[f->n], VALUE_LEN);
	} else if (strncmp(ps->p, "true", 4) == 0 || strncmp(ps->p, "false", 5) == 0) {
		bool yes = *ps->p == 't';
		snprintf(f->value[f->n], VALUE_LEN, "%s", yes ? "true" : "false");
		ps->p += yes ? 4 : 5;
		ret = 0;
	} else {
		size_t len = strspn(ps->p, "-0123456789.");
		if (len == 0 || len >= VALUE_LEN)
			return -EBADMSG;
		memcpy(f->value[f->n], ps->p, len);
		f->value[f->n][len] = '\0';
		ps->p += len;
		ret = 0;
	}
	if (ret == 0)
		f->n++;
	return ret;
}

static int parse_object(struct parser *ps, const char *prefix)
{
	int ret;

	skip_space(ps);
	if (*ps->p++ != '{')
		return -EBADMSG;
	skip_space(ps);
	if (*ps->p == '}') {
		ps->p++;
		return 0;
	}
	for (;;) {
		if ((ret = parse_member(ps, prefix)) < 0)
			return ret;
		skip_space(ps);
		if (*ps->p == '}') {
			ps->p++;
			return 0;
		}
		if (*ps->p++ != ',')
			return -EBADMSG;
	}
}

static const char *field(const struct fields *f, const char *key)
{
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->key[i], key) == 0)
			return f->value[i];
	return "?";
}

/* "fs     glusterfs, shared mode on; lacks rename_noreplace, ..." from backing_fs.* */
static void print_backing_fs(const struct fields *f)
{
	static const char prefix[] = "backing_fs.";
	const size_t plen = sizeof(prefix) - 1;
	bool lacks = false;

	printf("fs         %s, shared mode %s", field(f, "backing_fs.fs"),
	       strcmp(field(f, "daemon.shared"), "true") == 0 ? "on" : "off");
	for (int i = 0; i < f->n; i++) {
		const char *name = f->key[i] + plen;

		if (strncmp(f->key[i], prefix, plen) != 0 || strcmp(f->value[i], "false") != 0 ||
		    strcmp(name, "shared") == 0)
			continue;
		printf("%s%s", lacks ? ", " : "; lacks ", name);
		lacks = true;
	}
	printf("%s\n", lacks ? " (fallbacks: envelopefsctl info)" : "");
}

static void print_human(const struct fields *f)
{
	long up = strtol(field(f, "uptime"), NULL, 10);

	printf("volume     %s\n", field(f, "volume"));
	printf("backing    %s\n", field(f, "backing"));
	print_backing_fs(f);
	printf("kms        %s, master key %s\n", field(f, "kms.provider"), field(f, "kms.key_ref"));
	if (strcmp(field(f, "kms.previous_key_ref"), "?") != 0)
		printf("migrating  from master key %s (envelopefsctl rotate --to-kms)\n",
		       field(f, "kms.previous_key_ref"));
	printf("kms calls  generate %s, wrap %s, unwrap %s, rewrap %s, failures %s\n",
	       field(f, "kms.generate"), field(f, "kms.wrap"), field(f, "kms.unwrap"),
	       field(f, "kms.rewrap"), field(f, "kms.failures"));
	if (strcmp(field(f, "kms.service.calls"), "?") != 0)
		printf("kms service calls %s, retries %s, failures %s, throttled %s, latency %s us in "
		       "all, breaker %s (opened %s times)\n",
		       field(f, "kms.service.calls"), field(f, "kms.service.retries"),
		       field(f, "kms.service.failures"), field(f, "kms.service.throttled"),
		       field(f, "kms.service.latency_us"),
		       field(f, "kms.service.breaker"), field(f, "kms.service.breaker_opens"));
	printf("dek cache  %s entries (%s in use by open files), limit %s entries / %s s idle\n",
	       field(f, "cache.entries"), field(f, "cache.pinned"), field(f, "cache.max_entries"),
	       field(f, "cache.max_age"));
	printf("           hits %s, misses %s, evictions %s\n", field(f, "cache.hits"),
	       field(f, "cache.misses"), field(f, "cache.evictions"));
	if (strcmp(field(f, "prefetch.enabled"), "true") == 0)
		printf("prefetch   %s files read ahead, %s DEKs unwrapped ahead in %s batches, "
		       "%s skipped, %s failed, %s directories not followed (all busy), "
		       "%s opens waited for a batch\n",
		       field(f, "prefetch.queued"), field(f, "prefetch.unwrapped"),
		       field(f, "prefetch.batches"), field(f, "prefetch.skipped"),
		       field(f, "prefetch.failed"), field(f, "prefetch.overflow"),
		       field(f, "prefetch.waited"));
	printf("errors     integrity %s, key %s\n", field(f, "errors.integrity"),
	       field(f, "errors.key"));
	printf("inodes     %s\n", field(f, "inodes"));
	printf("uptime     %ldd %02ldh %02ldm %02lds\n", up / 86400, up / 3600 % 24, up / 60 % 60,
	       up % 60);
	printf("daemon     pid %s, envelopefs %s, writeback cache %s\n", field(f, "daemon.pid"),
	       field(f, "daemon.version"),
	       strcmp(field(f, "daemon.writeback_cache"), "true") == 0 ? "on" : "off");
}

int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char *buf = NULL;
	struct fields *f = NULL;
	bool json = false;
	ssize_t len;
	int c, code = CTL_FAILED;

	ctl_cmd = "status";
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else
			return ctl_usage(status_usage, c == 'h');
	}
	if (optind != argc - 1)
		return ctl_usage(status_usage, false);

	buf = malloc(STATUS_MAX);
	f = malloc(sizeof(*f));
	if (!buf || !f) {
		code = ctl_err(CTL_FAILED, "out of memory");
		goto out;
	}
	len = getxattr(argv[optind], STATUS_XATTR, buf, STATUS_MAX - 1);
	if (len < 0) {
		if (errno == ENODATA || errno == ENOTSUP)
			code = ctl_err(CTL_FAILED, "%s is not the root of a mounted envelopefs volume",
				       argv[optind]);
		else if (errno == EPERM || errno == EACCES)
			code = ctl_err(CTL_FAILED, "%s: the status is readable by root only",
				       argv[optind]);
		else
			code = ctl_err(CTL_FAILED, "%s: %s", argv[optind], strerror(errno));
		goto out;
	}
	buf[len] = '\0';
	if (json) {
		fputs(buf, stdout);
		code = CTL_OK;
		goto out;
	}
	struct parser ps = {.p = buf, .f = f};
	f->n = 0;
	if (parse_object(&ps, "") < 0) {
		code = ctl_err(CTL_FAILED, "%s: the daemon's status is malformed", argv[optind]);
		goto out;
	}
	print_human(f);
	code = CTL_OK;
out:
	free(buf);
	free(f);
	return code;
}
