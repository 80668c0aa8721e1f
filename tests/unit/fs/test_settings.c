/* SPDX-License-Identifier: MIT */
/*
 * The daemon settings table (fs/settings.c): the defaults, one setting set
 * by name, unknown names and bad values refused naming them, and the INI
 * reader going through the same table.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "check.h"
#include "envfs.h"
#include "shared.h"

/* Every field at a garbage value first: a default the table fails to parse would show. */
static void defaults(struct envfs_settings *s)
{
	memset(s, 0xa5, sizeof(*s));
	envfs_settings_defaults(s);
}

static void test_defaults(void)
{
	struct envfs_settings s;

	defaults(&s);
	CHECK_EQ_INT(s.cache_entries, 4096);
	CHECK_EQ_INT(s.cache_max_age, 600);
	CHECK(s.attr_timeout == 1.0 && s.entry_timeout == 1.0);
	CHECK(s.writeback_cache);
	CHECK_EQ_INT(s.read_ahead_kb, 4096);
	CHECK_EQ_INT(s.log_level, LOG_INFO);
	CHECK_EQ_INT(s.dek_pool, -1);
	CHECK_EQ_INT(s.prefetch, -1);
	CHECK_EQ_INT(s.shared, SHARED_AUTO);
}

static void test_set_by_name(void)
{
	struct envfs_settings s;
	char err[512];

	defaults(&s);
	CHECK_EQ_INT(envfs_setting_set(&s, "dek_pool", "12", err, sizeof(err)), 0);
	CHECK_EQ_INT(s.dek_pool, 12);
	CHECK_EQ_INT(envfs_setting_set(&s, "prefetch", "no", err, sizeof(err)), 0);
	CHECK_EQ_INT(s.prefetch, 0);
	CHECK_EQ_INT(envfs_setting_set(&s, "shared", "true", err, sizeof(err)), 0);
	CHECK_EQ_INT(s.shared, SHARED_ON);
	CHECK_EQ_INT(envfs_setting_set(&s, "log_level", "debug", err, sizeof(err)), 0);
	CHECK_EQ_INT(s.log_level, LOG_DEBUG);
	CHECK_EQ_INT(envfs_setting_set(&s, "attr_timeout", "0.25", err, sizeof(err)), 0);
	CHECK(s.attr_timeout == 0.25);
	CHECK(envfs_setting_known("cache_max_age") && !envfs_setting_known("cache"));
}

static void test_refused_naming_it(void)
{
	struct envfs_settings s, before;
	char err[512];

	defaults(&s);
	memcpy(&before, &s, sizeof(s)); /* padding too: compared bytewise below */
	CHECK_EQ_INT(envfs_setting_set(&s, "cache", "1", err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "'cache'") && strstr(err, "cache_entries") && strstr(err, "shared"));
	CHECK_EQ_INT(envfs_setting_set(&s, "dek_pool", "4097", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "dek_pool") && strstr(err, "auto|N"));
	CHECK_EQ_INT(envfs_setting_set(&s, "cache_entries", "-1", err, sizeof(err)), -EINVAL);
	CHECK_EQ_INT(envfs_setting_set(&s, "attr_timeout", "86401", err, sizeof(err)), -EINVAL);
	CHECK_EQ_INT(envfs_setting_set(&s, "writeback_cache", "maybe", err, sizeof(err)), -EINVAL);
	CHECK(memcmp(&s, &before, sizeof(s)) == 0); /* nothing changed */
}

static void test_ini_file(void)
{
	char path[] = "/tmp/envfs-settings-XXXXXX", err[512];
	struct envfs_settings s;
	int fd = mkstemp(path);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	REQUIRE(f);
	fputs("[daemon]\ncache_entries = 7\nprefetch = true\n", f);
	fclose(f);
	defaults(&s);
	CHECK_EQ_INT(envfs_settings_load(path, &s, err, sizeof(err)), 0);
	CHECK_EQ_INT(s.cache_entries, 7);
	CHECK_EQ_INT(s.prefetch, 1);

	f = fopen(path, "w");
	REQUIRE(f);
	fputs("[daemon]\ncache_entries = 7\ncache_entires = 8\n", f);
	fclose(f);
	CHECK_EQ_INT(envfs_settings_load(path, &s, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, path) && strstr(err, "'cache_entires'"));
	unlink(path);
}

int main(void)
{
	RUN(test_defaults);
	RUN(test_set_by_name);
	RUN(test_refused_naming_it);
	RUN(test_ini_file);
	return check_summary();
}
