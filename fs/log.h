/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_LOG_H
#define ENVELOPEFS_FS_LOG_H

/*
 * Daemon logging: stderr in the foreground, syslog once daemonized.
 * Errors are logged once, at the edge that knows the context (the FUSE op),
 * never below it.  Nothing logged may contain key material or plaintext.
 * log_ratelimited() drops lines beyond a small budget per second, so a
 * damaged file read in a loop cannot flood the log.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

void log_set_level(int level); /* LOG_ERR .. LOG_DEBUG */
void log_to_syslog(const char *ident);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_ratelimited(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int log_level_parse(const char *name); /* "error".."debug" → LOG_*, -1 if unknown */

#endif
