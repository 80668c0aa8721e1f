/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TESTS_DEKPOOL_UTIL_H
#define ENVELOPEFS_TESTS_DEKPOOL_UTIL_H

/* Waiting on a DEK pool's refill threads, for the tests of kms/dekpool.c over any provider. */

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "kms/dekpool.h"

/* wait_for_entries - poll the pool until it holds @n keys (or 10 s pass). */
__attribute__((unused)) static bool wait_for_entries(struct dek_pool *pool, uint64_t n)
{
	struct timespec pause = { 0, 5 * 1000 * 1000 };
	struct dek_pool_stats st;
	int i;

	for (i = 0; i < 2000; i++) {
		dek_pool_get_stats(pool, &st);
		if (st.entries == n)
			return true;
		nanosleep(&pause, NULL);
	}
	return false;
}

#endif
