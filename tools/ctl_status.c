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
#include "tools/ctl_status.h"

static const char status_usage[] =
	"Usage: envelopefsctl status [--json] MOUNTPOINT\n"
	"       envelopefsctl status --format human|json|prometheus [MOUNTPOINT...]\n"
	"\n"
	"Show a mounted volume's run-time status: volume, KMS provider and call counts,\n"
	"DEK cache figures, integrity and key errors, uptime, the daemon's pid and\n"
	"version.  Needs root (the status is a trusted.* xattr).\n"
	"\n"
	"Options:\n"
	"  --json                  the daemon's JSON object as it is (--format json)\n"
	"  --format FORMAT         human (default), json, or prometheus: every counter\n"
	"                          in the Prometheus text format, labelled by mountpoint,\n"
	"                          for each MOUNTPOINT or, with none, every mounted\n"
	"                          envelopefs volume (node_exporter's textfile collector)\n"
	"  -h, --help              show this help\n";

#define STATUS_MAX 32768

struct parser {
	const char *p;
	struct status_fields *f;
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
	char name[STATUS_PATH_LEN], path[STATUS_PATH_LEN];
	struct status_fields *f = ps->f;
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
	if (f->n == STATUS_FIELDS_MAX)
		return -EBADMSG;
	snprintf(f->key[f->n], STATUS_PATH_LEN, "%s", path);
	if (*ps->p == '"') {
		ret = parse_string(ps, f->value[f->n], STATUS_VALUE_LEN);
	} else if (strncmp(ps->p, "true", 4) == 0 || strncmp(ps->p, "false", 5) == 0) {
		bool yes = *ps->p == 't';
		snprintf(f->value[f->n], STATUS_VALUE_LEN, "%s", yes ? "true" : "false");
		ps->p += yes ? 4 : 5;
		ret = 0;
	} else {
		size_t len = strspn(ps->p, "-0123456789.");
		if (len == 0 || len >= STATUS_VALUE_LEN)
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

const char *status_field(const struct status_fields *f, const char *key)
{
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->key[i], key) == 0)
			return f->value[i];
	return NULL;
}

/* field - as status_field(), "?" for a field the daemon did not report. */
static const char *field(const struct status_fields *f, const char *key)
{
	const char *value = status_field(f, key);

	return value ? value : "?";
}

/* "fs     glusterfs, shared mode on; lacks rename_noreplace, ..." from backing_fs.* */
static void print_backing_fs(const struct status_fields *f)
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

/* "scope      ID local, master key local:..., unlocked; generate 3, unwrap 4, ..." per key scope */
static void print_scopes(const struct status_fields *f)
{
	static const char prefix[] = "scopes.";
	const size_t plen = sizeof(prefix) - 1;

	for (int i = 0; i < f->n; i++) {
		const char *id = f->key[i] + plen, *dot = strchr(id, '.');
		char key[STATUS_PATH_LEN];
		int id_len;

		/* One line per scope, at its first field. */
		if (strncmp(f->key[i], prefix, plen) != 0 || !dot || strcmp(dot, ".provider") != 0)
			continue;
		id_len = (int)(dot - id);
#define SCOPE_FIELD(name) (snprintf(key, sizeof(key), "scopes.%.*s." name, id_len, id), \
			   field(f, key))
		printf("scope      %.*s %s, master key %s, %s\n", id_len, id,
		       SCOPE_FIELD("provider"), SCOPE_FIELD("key_ref"),
		       strcmp(SCOPE_FIELD("unlocked"), "true") == 0 ? "unlocked" : "locked");
		printf("           generate %s, unwrap %s, failures %s, refused %s, locked %s times\n",
		       SCOPE_FIELD("generate"), SCOPE_FIELD("unwrap"), SCOPE_FIELD("failures"),
		       SCOPE_FIELD("refusals"), SCOPE_FIELD("locks"));
#undef SCOPE_FIELD
	}
}

static void print_human(const struct status_fields *f)
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
	print_scopes(f);
	printf("errors     integrity %s, key %s\n", field(f, "errors.integrity"),
	       field(f, "errors.key"));
	printf("inodes     %s, %s descriptors open (%s)\n", field(f, "inodes"),
	       field(f, "inode_fds"),
	       strcmp(field(f, "inode_fds_bounded"), "true") == 0
		       ? "by file handle, at most max_fds"
		       : "one per inode: the backing has no file handles");
	printf("           at most %s so far; %s\n", field(f, "inodes_peak"),
	       strcmp(field(f, "inodes_evict_mode"), "inval_entry") == 0
		       ? "kept near max_inodes by invalidating entries (kernel before 6.18), "
			 "beside directories and open files"
	       : strcmp(field(f, "inodes_bounded"), "true") == 0
		       ? "kept near max_inodes, beside those in use"
	       : strcmp(field(f, "inodes_max"), "0") == 0
		       ? "no bound (max_inodes 0)"
		       : "no bound: the kernel cannot be asked to let go (Linux 6.18)");
	printf("uptime     %ldd %02ldh %02ldm %02lds\n", up / 86400, up / 3600 % 24, up / 60 % 60,
	       up % 60);
	printf("daemon     pid %s, envelopefs %s, writeback cache %s%s\n", field(f, "daemon.pid"),
	       field(f, "daemon.version"),
	       strcmp(field(f, "daemon.writeback_cache"), "true") == 0 ? "on" : "off",
	       strcmp(field(f, "daemon.xattrs"), "false") == 0 ? ", no xattrs (xattrs=false)" : "");
}

/* read_status - the status JSON of @mountpoint into @buf (STATUS_MAX bytes).  A CTL_* code. */
static int read_status(const char *mountpoint, char *buf)
{
	ssize_t len = getxattr(mountpoint, STATUS_XATTR, buf, STATUS_MAX - 1);

	if (len >= 0) {
		buf[len] = '\0';
		return CTL_OK;
	}
	if (errno == ENODATA || errno == ENOTSUP)
		return ctl_err(CTL_FAILED, "%s is not the root of a mounted envelopefs volume",
			       mountpoint);
	if (errno == EPERM || errno == EACCES)
		return ctl_err(CTL_FAILED, "%s: the status is readable by root only", mountpoint);
	return ctl_err(CTL_FAILED, "%s: %s", mountpoint, strerror(errno));
}

static int parse_status(const char *buf, struct status_fields *f)
{
	struct parser ps = {.p = buf, .f = f};

	f->n = 0;
	return parse_object(&ps, "");
}

/*
 * prometheus - the status of @n mountpoints, or with none of every mounted
 * envelopefs volume, as metrics.  A mount whose status cannot be read is
 * envelopefs_up 0 and its reason goes to stderr; a named one also makes the
 * exit status 1, a listed one does not (its daemon died or it went away: a
 * metric to alert on, not a failure of this run).
 */
static int prometheus(char **mountpoints, int n)
{
	struct status_mount *mounts = NULL;
	char **listed = NULL, *buf = malloc(STATUS_MAX);
	int count = 0, code = CTL_OK;

	if (!buf)
		return ctl_err(CTL_FAILED, "out of memory");
	if (n == 0 && ctl_list_mounts(&listed, &n) < 0) {
		free(buf);
		return ctl_err(CTL_FAILED, "cannot read /proc/self/mounts: %s", strerror(errno));
	}
	mounts = calloc(n > 0 ? (size_t)n : 1, sizeof(*mounts));
	if (!mounts) {
		code = ctl_err(CTL_FAILED, "out of memory");
		goto out;
	}
	for (count = 0; count < n; count++) {
		struct status_mount *m = &mounts[count];

		m->mountpoint = listed ? listed[count] : mountpoints[count];
		m->up = read_status(m->mountpoint, buf) == CTL_OK;
		if (m->up && parse_status(buf, &m->fields) < 0) {
			ctl_err(CTL_FAILED, "%s: the daemon's status is malformed", m->mountpoint);
			m->up = false;
		}
		if (!m->up && !listed)
			code = CTL_FAILED;
	}
	status_print_prometheus(mounts, count);
	if (fflush(stdout) != 0)
		code = ctl_err(CTL_FAILED, "stdout: %s", strerror(errno));
out:
	for (int i = 0; listed && i < n; i++)
		free(listed[i]);
	free(listed);
	free(mounts);
	free(buf);
	return code;
}

int cmd_status(int argc, char **argv)
{
	enum { FORMAT_HUMAN, FORMAT_JSON, FORMAT_PROMETHEUS } format = FORMAT_HUMAN;
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"format", required_argument, NULL, 'F'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char *buf = NULL;
	struct status_fields *f = NULL;
	int c, code = CTL_FAILED;

	ctl_cmd = "status";
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'j')
			format = FORMAT_JSON;
		else if (c == 'F' && strcmp(optarg, "human") == 0)
			format = FORMAT_HUMAN;
		else if (c == 'F' && strcmp(optarg, "json") == 0)
			format = FORMAT_JSON;
		else if (c == 'F' && strcmp(optarg, "prometheus") == 0)
			format = FORMAT_PROMETHEUS;
		else
			return ctl_usage(status_usage, c == 'h');
	}
	if (format == FORMAT_PROMETHEUS)
		return prometheus(argv + optind, argc - optind);
	if (optind != argc - 1)
		return ctl_usage(status_usage, false);

	buf = malloc(STATUS_MAX);
	f = malloc(sizeof(*f));
	if (!buf || !f) {
		code = ctl_err(CTL_FAILED, "out of memory");
		goto out;
	}
	code = read_status(argv[optind], buf);
	if (code != CTL_OK)
		goto out;
	if (format == FORMAT_JSON) {
		fputs(buf, stdout);
		goto out;
	}
	if (parse_status(buf, f) < 0) {
		code = ctl_err(CTL_FAILED, "%s: the daemon's status is malformed", argv[optind]);
		goto out;
	}
	print_human(f);
out:
	free(buf);
	free(f);
	return code;
}
