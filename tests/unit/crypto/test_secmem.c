// SPDX-License-Identifier: MIT
/* Unit tests for crypto/secmem.c. */

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#include "check.h"
#include "crypto/random.h"
#include "crypto/secmem.h"

#define CELL 64

static int all_zero(const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

static void test_zero_len_rejected(void)
{
	errno = 0;
	CHECK(secmem_alloc(0) == NULL);
	CHECK_EQ_INT(errno, EINVAL);
	secmem_free(NULL, 32); /* no-op */
}

static void test_small_alloc_zeroed_and_aligned(void)
{
	uint8_t *p[200];
	int i;

	for (i = 0; i < 200; i++) {
		p[i] = secmem_alloc(1 + (size_t)i % CELL);
		REQUIRE(p[i] != NULL);
		CHECK(((uintptr_t)p[i] % CELL) == 0);
		CHECK(all_zero(p[i], CELL));
		memset(p[i], 0xA5, CELL);
	}
	/* Cells never overlap. */
	for (i = 1; i < 200; i++)
		CHECK(p[i] != p[i - 1]);
	for (i = 0; i < 200; i++)
		secmem_free(p[i], 1 + (size_t)i % CELL);
}

/*
 * A freed cell is wiped: look at it right after secmem_free() (only the
 * free-list link in its first pointer-sized bytes may be non-zero), and
 * again when the LIFO free list hands the same cell back.
 */
static void test_small_wiped_on_free(void)
{
	uint8_t *p, *q;

	p = secmem_alloc(32);
	REQUIRE(p != NULL);
	memset(p, 0x5A, CELL);
	secmem_free(p, 32);
	CHECK(all_zero(p + sizeof(void *), CELL - sizeof(void *)));
	q = secmem_alloc(32);
	REQUIRE(q != NULL);
	CHECK(q == p);
	CHECK(all_zero(q, CELL));
	secmem_free(q, 32);
}

static void test_large_alloc(void)
{
	size_t sizes[] = { 65, 4095, 4096, 4097, 3 * 4096 + 5, 1 << 20 };
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint8_t *p = secmem_alloc(sizes[i]);

		REQUIRE(p != NULL);
		CHECK(all_zero(p, sizes[i]));
		memset(p, 0x77, sizes[i]);
		CHECK(p[sizes[i] - 1] == 0x77);
		secmem_free(p, sizes[i]);
	}
}

/*
 * The VmFlags of the mapping holding @p in /proc/self/smaps, into @flags.
 * Returns 0 when found.
 */
static int vm_flags_of(const void *p, char *flags, size_t cap)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int inside = 0, found = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
			size_t n = strlen(line + 8);

			if (n >= cap)
				n = cap - 1;
			memcpy(flags, line + 8, n);
			flags[n] = '\0';
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

/* Small and large allocations sit on locked (lo), no-dump (dd), wipe-on-fork (wf) pages. */
static void test_pages_locked_nodump_wipeonfork(void)
{
	size_t sizes[] = { 32, 64, 100, 3 * 4096 };
	char flags[256];
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		void *p = secmem_alloc(sizes[i]);

		REQUIRE(p != NULL);
		REQUIRE(vm_flags_of(p, flags, sizeof(flags)) == 0);
		CHECK(strstr(flags, " lo") != NULL);
		CHECK(strstr(flags, " dd") != NULL);
		CHECK(strstr(flags, " wf") != NULL);
		secmem_free(p, sizes[i]);
	}
}

static void test_wipe(void)
{
	uint8_t buf[48];

	memset(buf, 0xFF, sizeof(buf));
	secmem_wipe(buf, sizeof(buf));
	CHECK(all_zero(buf, sizeof(buf)));
	secmem_wipe(NULL, 10);
}

#define THREADS 8
#define PER_THREAD 2000

struct worker {
	int id;
	int failures;
};

/* Each thread keeps many cells live, stamps them, and checks no other thread scribbled on them. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint8_t **cells = calloc(PER_THREAD, sizeof(*cells));
	int round, i, j;

	if (!cells) {
		w->failures++;
		return NULL;
	}
	for (round = 0; round < 5; round++) {
		for (i = 0; i < PER_THREAD; i++) {
			cells[i] = secmem_alloc(CELL);
			if (!cells[i] || !all_zero(cells[i], CELL)) {
				w->failures++;
				goto out;
			}
			memset(cells[i], w->id + 1, CELL);
		}
		for (i = 0; i < PER_THREAD; i++) {
			for (j = 0; j < CELL; j++)
				if (cells[i][j] != (uint8_t)(w->id + 1))
					w->failures++;
			secmem_free(cells[i], CELL);
			cells[i] = NULL;
		}
	}
out:
	for (i = 0; i < PER_THREAD; i++)
		secmem_free(cells[i], CELL);
	free(cells);
	return NULL;
}

static void test_threads(void)
{
	pthread_t tid[THREADS];
	struct worker w[THREADS];
	int i;

	for (i = 0; i < THREADS; i++) {
		w[i].id = i;
		w[i].failures = 0;
		REQUIRE(pthread_create(&tid[i], NULL, worker_main, &w[i]) == 0);
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(tid[i], NULL);
		CHECK_EQ_INT(w[i].failures, 0);
	}
}

static void test_harden_process(void)
{
	struct rlimit rl;

	CHECK_EQ_INT(secmem_harden_process(), 0);
	REQUIRE(getrlimit(RLIMIT_CORE, &rl) == 0);
	CHECK(rl.rlim_cur == 0);
}

/* Drop CAP_IPC_LOCK from this (child) process so RLIMIT_MEMLOCK applies. */
static int drop_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data) != 0)
		return -1;
	data[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
	return syscall(SYS_capset, &hdr, data) == 0 ? 0 : -1;
}

/*
 * When mlock() fails, secmem must return NULL rather than unlocked memory.
 * Run in a child with RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK: large requests
 * fail at once; small ones fail as soon as the pool would have to grow.
 */
static void test_mlock_failure_is_null(void)
{
	pid_t pid;
	int status;

	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct rlimit none = { 0, 0 };
		int i, got_null = 0;

		if (drop_ipc_lock() != 0 || setrlimit(RLIMIT_MEMLOCK, &none) != 0)
			_exit(2);
		if (secmem_alloc(8192) != NULL)
			_exit(3);
		for (i = 0; i < 1000; i++) {
			if (!secmem_alloc(CELL)) {
				got_null = 1;
				break;
			}
		}
		_exit(got_null ? 0 : 4);
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status));
	CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

/* A forked child must not see the parent's secrets (MADV_WIPEONFORK). */
static void test_wiped_in_child(void)
{
	uint8_t *p;
	pid_t pid;
	int status;

	p = secmem_alloc(32);
	REQUIRE(p != NULL);
	memset(p, 0xC3, 32);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(all_zero(p, 32) ? 0 : 1);
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(p[0] == 0xC3); /* the parent keeps its copy */
	secmem_free(p, 32);
}

int main(void)
{
	RUN(test_zero_len_rejected);
	RUN(test_small_alloc_zeroed_and_aligned);
	RUN(test_small_wiped_on_free);
	RUN(test_large_alloc);
	RUN(test_pages_locked_nodump_wipeonfork);
	RUN(test_wipe);
	RUN(test_threads);
	RUN(test_mlock_failure_is_null);
	RUN(test_wiped_in_child);
	RUN(test_harden_process);
	return check_summary();
}
