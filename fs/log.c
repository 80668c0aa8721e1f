/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int log_level = LOG_INFO;
static bool use_syslog;

/* Rate limit: at most LOG_BURST lines per second through log_ratelimited(). */
#define LOG_BURST 10
static pthread_mutex_t rate_lock = PTHREAD_MUTEX_INITIALIZER;
static time_t rate_second;
static unsigned rate_count;
static unsigned rate_dropped;

void log_set_level(int level)
{
	log_level = level;
}

void log_to_syslog(const char *ident)
{
	openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	use_syslog = true;
}

int log_level_parse(const char *name)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {
		{"error", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
		{"info", LOG_INFO}, {"debug", LOG_DEBUG},
	};
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(name, levels[i].name) == 0)
			return levels[i].level;
	return -1;
}

static void log_emit(int level, const char *fmt, va_list ap)
{
	if (use_syslog) {
		vsyslog(level, fmt, ap);
		return;
	}
	char line[1024];
	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(stderr, "envelopefs: %s\n", line);
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	log_emit(level, fmt, ap);
	va_end(ap);
}

void log_ratelimited(int level, const char *fmt, ...)
{
	va_list ap;
	unsigned dropped = 0;
	bool emit;
	time_t now = time(NULL);

	if (level > log_level)
		return;
	pthread_mutex_lock(&rate_lock);
	if (now != rate_second) {
		dropped = rate_dropped;
		rate_second = now;
		rate_count = 0;
		rate_dropped = 0;
	}
	emit = rate_count++ < LOG_BURST;
	if (!emit)
		rate_dropped++;
	pthread_mutex_unlock(&rate_lock);

	if (dropped)
		log_msg(LOG_WARNING, "%u log lines suppressed", dropped);
	if (!emit)
		return;
	va_start(ap, fmt);
	log_emit(level, fmt, ap);
	va_end(ap);
}
