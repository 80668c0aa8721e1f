/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TOOLS_CTL_STATUS_H
#define ENVELOPEFS_TOOLS_CTL_STATUS_H

/*
 * The daemon's status object (fs/status.h) as flat ("kms.unwrap", "3")
 * pairs, for `envelopefsctl status`: ctl_status.c reads and parses it and
 * prints it for people, ctl_status_prom.c for Prometheus.
 */

#include <stdbool.h>

#define STATUS_FIELDS_MAX 512 /* 8 more per key scope */
#define STATUS_PATH_LEN 64
#define STATUS_VALUE_LEN 512

struct status_fields {
	int n;
	char key[STATUS_FIELDS_MAX][STATUS_PATH_LEN];
	char value[STATUS_FIELDS_MAX][STATUS_VALUE_LEN]; /* booleans as "true"/"false" */
};

/* status_field - the value of @key, or NULL when the daemon did not report it. */
const char *status_field(const struct status_fields *f, const char *key);

/* One mounted volume's status, as read for the Prometheus output. */
struct status_mount {
	const char *mountpoint;
	bool up; /* the status was read and parsed; @fields is valid */
	struct status_fields fields;
};

/*
 * status_print_prometheus - every counter and gauge of @n mounts in the
 * Prometheus text exposition format (version 0.0.4) on stdout: one HELP and
 * TYPE line per metric family, then one sample per mount, labelled with its
 * mountpoint (and volume in envelopefs_info).  No secret is in the status,
 * so none can be here.
 */
void status_print_prometheus(const struct status_mount *mounts, int n);

#endif
