/* SPDX-License-Identifier: MIT */
/*
 * envelopefsctl status --format prometheus: the daemon's status as metrics
 * in the Prometheus text exposition format, version 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/).
 *
 * The metrics are a table from status field to metric, so a new status
 * counter is one line here.  Every sample carries the labels mountpoint and
 * volume; envelopefs_info carries the descriptive strings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ctl_status.h"

/* One sample per mount: status field @path as metric @name{@label="@label_value"}. */
struct metric {
	const char *path;
	const char *name;
	const char *type;
	const char *help;
	const char *label; /* NULL, or a label telling the samples of one family apart */
	const char *label_value;
	double scale; /* 0: the value as the daemon wrote it; else a unit conversion */
};

/*
 * Samples of one family must come together, so the entries of one name are
 * adjacent.  Names follow Prometheus' conventions: base units, _total for
 * counters.
 */
static const struct metric metrics[] = {
	{"kms.generate", "envelopefs_kms_operations_total", "counter",
	 "KMS operations since mount, by operation.", "operation", "generate", 0},
	{"kms.wrap", "envelopefs_kms_operations_total", "counter", NULL, "operation", "wrap", 0},
	{"kms.unwrap", "envelopefs_kms_operations_total", "counter", NULL, "operation", "unwrap", 0},
	{"kms.rewrap", "envelopefs_kms_operations_total", "counter", NULL, "operation", "rewrap", 0},
	{"kms.failures", "envelopefs_kms_failures_total", "counter",
	 "KMS operations that failed since mount.", NULL, NULL, 0},
	{"kms.current_version", "envelopefs_kms_master_key_version", "gauge",
	 "The KMS's current master-key version (0: unknown).", NULL, NULL, 0},
	{"kms.service.calls", "envelopefs_kms_service_calls_total", "counter",
	 "Calls to a remote KMS service.", NULL, NULL, 0},
	{"kms.service.retries", "envelopefs_kms_service_retries_total", "counter",
	 "Calls to a remote KMS service that were retries.", NULL, NULL, 0},
	{"kms.service.failures", "envelopefs_kms_service_failures_total", "counter",
	 "Calls to a remote KMS service that failed.", NULL, NULL, 0},
	{"kms.service.throttled", "envelopefs_kms_service_throttled_total", "counter",
	 "Calls a remote KMS service answered by throttling.", NULL, NULL, 0},
	{"kms.service.latency_us", "envelopefs_kms_service_latency_seconds_total", "counter",
	 "Time spent in calls to a remote KMS service.", NULL, NULL, 1e-6},
	{"kms.service.breaker", "envelopefs_kms_breaker_state", "gauge",
	 "1 for the remote KMS circuit breaker's current state.", "state", "closed", 0},
	{"kms.service.breaker", "envelopefs_kms_breaker_state", "gauge", NULL, "state", "open", 0},
	{"kms.service.breaker", "envelopefs_kms_breaker_state", "gauge", NULL, "state", "half-open",
	 0},
	{"kms.service.breaker_opens", "envelopefs_kms_breaker_opens_total", "counter",
	 "Times the remote KMS circuit breaker opened.", NULL, NULL, 0},
	{"cache.entries", "envelopefs_dek_cache_entries", "gauge", "DEKs in the cache.", NULL,
	 NULL, 0},
	{"cache.pinned", "envelopefs_dek_cache_pinned", "gauge",
	 "DEKs in the cache in use by open files.", NULL, NULL, 0},
	{"cache.hits", "envelopefs_dek_cache_hits_total", "counter", "DEK cache hits.", NULL, NULL,
	 0},
	{"cache.misses", "envelopefs_dek_cache_misses_total", "counter",
	 "DEK cache misses (a KMS unwrap each).", NULL, NULL, 0},
	{"cache.evictions", "envelopefs_dek_cache_evictions_total", "counter",
	 "DEKs evicted from the cache.", NULL, NULL, 0},
	{"cache.max_entries", "envelopefs_dek_cache_max_entries", "gauge",
	 "The DEK cache's limit (cache_entries).", NULL, NULL, 0},
	{"cache.max_age", "envelopefs_dek_cache_max_age_seconds", "gauge",
	 "How long an idle DEK stays cached (cache_max_age).", NULL, NULL, 0},
	{"pool.capacity", "envelopefs_dek_pool_capacity", "gauge",
	 "New-file keys the pool makes ahead (dek_pool).", NULL, NULL, 0},
	{"pool.entries", "envelopefs_dek_pool_entries", "gauge", "New-file keys ready in the pool.",
	 NULL, NULL, 0},
	{"pool.hits", "envelopefs_dek_pool_hits_total", "counter",
	 "New files whose key came from the pool.", NULL, NULL, 0},
	{"pool.misses", "envelopefs_dek_pool_misses_total", "counter",
	 "New files that found the pool empty and waited for the KMS.", NULL, NULL, 0},
	{"pool.dropped", "envelopefs_dek_pool_dropped_total", "counter",
	 "Pooled keys dropped (master-key rotation, KMS change).", NULL, NULL, 0},
	{"prefetch.enabled", "envelopefs_prefetch_enabled", "gauge",
	 "1 if listing a directory unwraps its files' keys ahead.", NULL, NULL, 0},
	{"prefetch.queued", "envelopefs_prefetch_queued_total", "counter",
	 "Listed files queued for prefetch.", NULL, NULL, 0},
	{"prefetch.unwrapped", "envelopefs_prefetch_unwrapped_total", "counter",
	 "DEKs unwrapped ahead.", NULL, NULL, 0},
	{"prefetch.skipped", "envelopefs_prefetch_skipped_total", "counter",
	 "Queued files skipped (key already cached, or no key).", NULL, NULL, 0},
	{"prefetch.failed", "envelopefs_prefetch_failed_total", "counter",
	 "Prefetch unwraps that failed.", NULL, NULL, 0},
	{"prefetch.overflow", "envelopefs_prefetch_overflow_total", "counter",
	 "Listed files not queued: the queue was full.", NULL, NULL, 0},
	{"prefetch.batches", "envelopefs_prefetch_batches_total", "counter",
	 "Batches of prefetch unwraps sent to the KMS.", NULL, NULL, 0},
	{"prefetch.waited", "envelopefs_prefetch_waited_total", "counter",
	 "Opens that waited for a prefetch batch instead of calling the KMS.", NULL, NULL, 0},
	{"errors.integrity", "envelopefs_integrity_errors_total", "counter",
	 "Blocks or key records that failed authentication.", NULL, NULL, 0},
	{"errors.key", "envelopefs_key_errors_total", "counter",
	 "Files whose key could not be made or unwrapped.", NULL, NULL, 0},
	{"inodes", "envelopefs_inodes", "gauge", "Inodes the kernel holds.", NULL, NULL, 0},
	{"inode_fds", "envelopefs_inode_fds", "gauge",
	 "Descriptors open on backing inodes (at most max_fds when bounded).", NULL, NULL, 0},
	{"inode_fds_bounded", "envelopefs_inode_fds_bounded", "gauge",
	 "1 if inode descriptors are bounded (the backing has file handles).", NULL, NULL, 0},
	{"inodes_peak", "envelopefs_inodes_peak", "gauge", "The most inodes held since mount.",
	 NULL, NULL, 0},
	{"inodes_max", "envelopefs_inodes_max", "gauge", "The inode bound (max_inodes; 0: none).",
	 NULL, NULL, 0},
	{"inodes_bounded", "envelopefs_inodes_bounded", "gauge",
	 "1 if the kernel is asked to let go of inodes past max_inodes.", NULL, NULL, 0},
	{"inodes_evict_requested", "envelopefs_inodes_evict_requested_total", "counter",
	 "Inodes the kernel was asked to let go of (it keeps those in use).", NULL, NULL, 0},
	{"uptime", "envelopefs_uptime_seconds", "gauge", "Time since the volume was mounted.", NULL,
	 NULL, 0},
	{"daemon.writeback_cache", "envelopefs_writeback_cache", "gauge",
	 "1 if the kernel's writeback cache is on.", NULL, NULL, 0},
	{"daemon.xattrs", "envelopefs_xattrs", "gauge",
	 "1 if extended attributes are served (0: xattrs=false).", NULL, NULL, 0},
	{"daemon.handle_killpriv_v2", "envelopefs_handle_killpriv_v2", "gauge",
	 "1 if the kernel clears set-id bits itself (FUSE_HANDLE_KILLPRIV_V2).", NULL, NULL, 0},
	{"daemon.shared", "envelopefs_shared_mode", "gauge",
	 "1 if the volume is served in shared mode (several hosts).", NULL, NULL, 0},
	{"backing_fs.xattr_max", "envelopefs_backing_xattr_max_bytes", "gauge",
	 "Largest xattr value the backing file system takes.", NULL, NULL, 0},
};
#define N_METRICS (sizeof(metrics) / sizeof(metrics[0]))

/* Label values escape backslash, double quote and newline. */
static void print_label_value(const char *value)
{
	putchar('"');
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '"')
			printf("\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", stdout);
		else
			putchar(*p);
	}
	putchar('"');
}

static void print_label(const char *name, const char *value)
{
	printf(",%s=", name);
	print_label_value(value ? value : "");
}

/* {mountpoint="...",volume="..."}, without the closing brace. */
static void open_labels(const char *name, const struct status_mount *m)
{
	printf("%s{mountpoint=", name);
	print_label_value(m->mountpoint);
	print_label("volume", m->up ? status_field(&m->fields, "volume") : NULL);
}

static void print_header(const char *name, const char *type, const char *help)
{
	printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The sample of @m for @metric; false when the daemon does not report it. */
static bool print_sample(const struct metric *metric, const struct status_mount *m)
{
	const char *value = m->up ? status_field(&m->fields, metric->path) : NULL;

	if (!value)
		return false;
	open_labels(metric->name, m);
	if (metric->label)
		print_label(metric->label, metric->label_value);
	/* A string field (the breaker) is one sample per possible value. */
	if (metric->label && strcmp(metric->path, "kms.service.breaker") == 0)
		printf("} %d\n", strcmp(value, metric->label_value) == 0);
	else if (strcmp(value, "true") == 0 || strcmp(value, "false") == 0)
		printf("} %d\n", value[0] == 't');
	else if (metric->scale != 0)
		printf("} %.6f\n", strtod(value, NULL) * metric->scale);
	else
		printf("} %s\n", value); /* as written: 64-bit counters keep every digit */
	return true;
}

static bool reported(const char *path, const struct status_mount *mounts, int n)
{
	for (int i = 0; i < n; i++)
		if (mounts[i].up && status_field(&mounts[i].fields, path))
			return true;
	return false;
}

/* The backing file system's capabilities: backing_fs.* booleans, one sample each. */
static void print_backing_features(const struct status_mount *mounts, int n)
{
	static const char prefix[] = "backing_fs.";
	bool header = false;

	for (int i = 0; i < n; i++) {
		const struct status_fields *f = &mounts[i].fields;

		for (int k = 0; mounts[i].up && k < f->n; k++) {
			if (strncmp(f->key[k], prefix, sizeof(prefix) - 1) != 0 ||
			    (strcmp(f->value[k], "true") != 0 && strcmp(f->value[k], "false") != 0))
				continue;
			if (!header)
				print_header("envelopefs_backing_feature", "gauge",
					     "1 if the backing file system has the feature "
					     "(else a fallback is used).");
			header = true;
			open_labels("envelopefs_backing_feature", &mounts[i]);
			print_label("feature", f->key[k] + sizeof(prefix) - 1);
			printf("} %d\n", f->value[k][0] == 't');
		}
	}
}

/*
 * One family of per-scope samples: the status field scopes.ID.@stat of every
 * key scope, labelled scope="ID" (and @label="@label_value" when set).
 */
struct scope_metric {
	const char *stat;
	const char *name;
	const char *type;
	const char *help;
	const char *label;
	const char *label_value;
};

static const struct scope_metric scope_metrics[] = {
	{"generate", "envelopefs_scope_kms_operations_total", "counter",
	 "KMS operations of a key scope's KMS since mount, by operation.", "operation", "generate"},
	{"unwrap", "envelopefs_scope_kms_operations_total", "counter", NULL, "operation", "unwrap"},
	{"failures", "envelopefs_scope_kms_failures_total", "counter",
	 "A key scope's KMS operations that failed since mount.", NULL, NULL},
	{"refusals", "envelopefs_scope_refusals_total", "counter",
	 "Opens refused because a key scope's KMS refused (revoked).", NULL, NULL},
	{"locks", "envelopefs_scope_locks_total", "counter",
	 "Times a key scope was locked (envelopefsctl scope lock).", NULL, NULL},
	{"unlocked", "envelopefs_scope_unlocked", "gauge",
	 "1 if the key scope's keys are loaded.", NULL, NULL},
};
#define N_SCOPE_METRICS (sizeof(scope_metrics) / sizeof(scope_metrics[0]))

/* scope_field - for a status key scopes.ID.@stat, ID (its length in *@len); else NULL. */
static const char *scope_field(const char *key, const char *stat, size_t *len)
{
	static const char prefix[] = "scopes.";
	const char *id = key + sizeof(prefix) - 1, *dot;

	if (strncmp(key, prefix, sizeof(prefix) - 1) != 0 || !(dot = strchr(id, '.')) ||
	    strcmp(dot + 1, stat) != 0)
		return NULL;
	*len = (size_t)(dot - id);
	return id;
}

/* The key scopes' counters (status "scopes"): one family at a time, every mount's scopes in it. */
static void print_scopes(const struct status_mount *mounts, int n)
{
	for (size_t k = 0; k < N_SCOPE_METRICS; k++) {
		const struct scope_metric *sm = &scope_metrics[k];
		bool header = k > 0 && strcmp(scope_metrics[k - 1].name, sm->name) == 0;

		for (int i = 0; i < n; i++) {
			const struct status_fields *f = &mounts[i].fields;

			for (int j = 0; mounts[i].up && j < f->n; j++) {
				char id[128];
				size_t len;
				const char *at = scope_field(f->key[j], sm->stat, &len);

				if (!at || len >= sizeof(id))
					continue;
				if (!header)
					print_header(sm->name, sm->type, sm->help);
				header = true;
				memcpy(id, at, len);
				id[len] = '\0';
				open_labels(sm->name, &mounts[i]);
				print_label("scope", id);
				if (sm->label)
					print_label(sm->label, sm->label_value);
				if (strcmp(f->value[j], "true") == 0 || strcmp(f->value[j], "false") == 0)
					printf("} %d\n", f->value[j][0] == 't');
				else
					printf("} %s\n", f->value[j]);
			}
		}
	}
}

void status_print_prometheus(const struct status_mount *mounts, int n)
{
	static const char *const info_labels[][2] = {
		{"backing", "backing"},
		{"provider", "kms.provider"},
		{"key_ref", "kms.key_ref"},
		{"previous_key_ref", "kms.previous_key_ref"},
		{"backing_fs", "backing_fs.fs"},
		{"version", "daemon.version"},
		{"pid", "daemon.pid"},
		{"inodes_evict_mode", "inodes_evict_mode"},
	};

	print_header("envelopefs_up", "gauge",
		     "1 if the daemon of the mount answered with its status.");
	for (int i = 0; i < n; i++) {
		open_labels("envelopefs_up", &mounts[i]);
		printf("} %d\n", mounts[i].up);
	}
	if (reported("volume", mounts, n))
		print_header("envelopefs_info", "gauge",
			     "Always 1; the labels describe the mounted volume.");
	for (int i = 0; i < n; i++) {
		if (!mounts[i].up)
			continue;
		open_labels("envelopefs_info", &mounts[i]);
		for (size_t l = 0; l < sizeof(info_labels) / sizeof(info_labels[0]); l++)
			print_label(info_labels[l][0],
				    status_field(&mounts[i].fields, info_labels[l][1]));
		printf("} 1\n");
	}
	for (size_t first = 0, end; first < N_METRICS; first = end) {
		bool any = false;

		for (end = first; end < N_METRICS && strcmp(metrics[end].name,
							    metrics[first].name) == 0; end++)
			any = any || reported(metrics[end].path, mounts, n);
		if (!any)
			continue;
		print_header(metrics[first].name, metrics[first].type, metrics[first].help);
		for (int i = 0; i < n; i++)
			for (size_t k = first; k < end; k++)
				print_sample(&metrics[k], &mounts[i]);
	}
	print_backing_features(mounts, n);
	print_scopes(mounts, n);
}
