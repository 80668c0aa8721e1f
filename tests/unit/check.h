/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TESTS_CHECK_H
#define ENVELOPEFS_TESTS_CHECK_H

/*
 * A minimal unit-test harness.  Each test file defines test functions and a
 * main() that calls RUN(test_fn) for each, then returns check_summary().
 * CHECK() records a failure with file:line and the expression and carries on;
 * REQUIRE() records it and returns from the current test.
 * The summary line is "N passed, N failed".
 */

#include <stdio.h>
#include <string.h>

static int check_failures_in_test;
static int check_tests_passed;
static int check_tests_failed;

#define CHECK(expr)                                                                    \
	do {                                                                           \
		if (!(expr)) {                                                         \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); \
			check_failures_in_test++;                                      \
		}                                                                      \
	} while (0)

#define REQUIRE(expr)                                                                  \
	do {                                                                           \
		if (!(expr)) {                                                         \
			fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #expr); \
			check_failures_in_test++;                                      \
			return;                                                        \
		}                                                                      \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                             \
	do {                                                                           \
		long long check_a_ = (long long)(a), check_b_ = (long long)(b);        \
		if (check_a_ != check_b_) {                                            \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", \
				__FILE__, __LINE__, #a, #b, check_a_, check_b_);       \
			check_failures_in_test++;                                      \
		}                                                                      \
	} while (0)

#define RUN(fn)                                                                        \
	do {                                                                           \
		check_failures_in_test = 0;                                            \
		fn();                                                                  \
		if (check_failures_in_test) {                                          \
			fprintf(stderr, "FAIL %s\n", #fn);                             \
			check_tests_failed++;                                          \
		} else {                                                               \
			printf("ok   %s\n", #fn);                                      \
			check_tests_passed++;                                          \
		}                                                                      \
	} while (0)

static inline int check_summary(void)
{
	printf("%d passed, %d failed\n", check_tests_passed, check_tests_failed);
	return check_tests_failed ? 1 : 0;
}

#endif
