// SPDX-License-Identifier: MIT
/*
 * kms/envsecret.c: a secret variable is captured once, overwritten in the
 * process's environment block (checked in /proc/self/environ, which shows
 * that block as the kernel set it up at exec) and unset; the captured copy
 * serves later reads; setting the variable again replaces it; a forked
 * child has no copy.
 *
 * The test re-executes itself with the secret in its initial environment, as
 * a daemon gets $VAULT_TOKEN: a variable set with setenv() lives on the heap,
 * not in the block /proc shows.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "crypto/secmem.h"
#include "kms/envsecret.h"

#define VAR "ENVSECRET_TEST_TOKEN"
#define SECRET "s.envsecret-unit-test-4f7c2a"
#define CHILD_MARK "ENVSECRET_TEST_CHILD"

/* environ_has - does /proc/self/environ contain @needle anywhere? */
static bool environ_has(const char *needle)
{
	static char buf[1 << 16];
	size_t len = 0, n = strlen(needle), i;
	ssize_t r;
	int fd = open("/proc/self/environ", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return true; /* cannot tell: count as still there */
	while (len < sizeof(buf) && (r = read(fd, buf + len, sizeof(buf) - len)) > 0)
		len += (size_t)r;
	close(fd);
	for (i = 0; i + n <= len; i++)
		if (memcmp(buf + i, needle, n) == 0)
			return true;
	return false;
}

static void test_captured_and_scrubbed(void)
{
	char *buf = secmem_alloc(128);
	size_t len = 0;

	REQUIRE(buf);
	REQUIRE(environ_has(SECRET));
	CHECK_EQ_INT(envsecret_copy(VAR, buf, 128, &len), 0);
	CHECK(strcmp(buf, SECRET) == 0);
	CHECK_EQ_INT(len, strlen(SECRET));
	/* Gone from the environment, and from the block /proc/PID/environ shows. */
	CHECK(getenv(VAR) == NULL);
	CHECK(!environ_has(SECRET));
	/* A second open in the same process still gets it. */
	memset(buf, 0, 128);
	CHECK_EQ_INT(envsecret_copy(VAR, buf, 128, &len), 0);
	CHECK(strcmp(buf, SECRET) == 0);
	/* Too small a buffer: refused whole, never cut. */
	memset(buf, 0, 128);
	CHECK_EQ_INT(envsecret_copy(VAR, buf, strlen(SECRET), &len), -E2BIG);
	CHECK(buf[0] == '\0');
	CHECK_EQ_INT(envsecret_copy(VAR, buf, strlen(SECRET) + 1, &len), 0);
	secmem_free(buf, 128);
}

static void test_set_again_replaces(void)
{
	char buf[64];
	size_t len = 0;

	setenv(VAR, "second", 1);
	CHECK_EQ_INT(envsecret_copy(VAR, buf, sizeof(buf), &len), 0);
	CHECK(strcmp(buf, "second") == 0 && len == 6);
	CHECK(getenv(VAR) == NULL);
	/* Set to "": the process says there is no secret now. */
	setenv(VAR, "", 1);
	CHECK_EQ_INT(envsecret_copy(VAR, buf, sizeof(buf), &len), -ENOENT);
	CHECK_EQ_INT(envsecret_copy(VAR, buf, sizeof(buf), &len), -ENOENT);
	CHECK_EQ_INT(envsecret_copy("ENVSECRET_TEST_NEVER_SET", buf, sizeof(buf), &len), -ENOENT);
	CHECK_EQ_INT(envsecret_copy("A=B", buf, sizeof(buf), &len), -EINVAL);
}

/*
 * A forked child inherits no copy (secmem is wiped on fork) and no variable:
 * it is told the secret is not there, never handed the wiped bytes as one.
 */
static void test_forked_child_has_none(void)
{
	char buf[64];
	size_t len = 0;
	int status;
	pid_t pid;

	setenv(VAR, "third", 1);
	CHECK_EQ_INT(envsecret_copy(VAR, buf, sizeof(buf), &len), 0);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		memset(buf, 'x', sizeof(buf));
		len = 99;
		_exit(envsecret_copy(VAR, buf, sizeof(buf), &len) == -ENOENT && len == 99 &&
			      buf[0] == 'x'
		      ? 0
		      : 1);
	}
	REQUIRE(pid > 0);
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* The parent keeps its copy. */
	CHECK_EQ_INT(envsecret_copy(VAR, buf, sizeof(buf), &len), 0);
	CHECK(strcmp(buf, "third") == 0);
}

int main(int argc, char **argv)
{
	char *env[] = { CHILD_MARK "=1", VAR "=" SECRET, NULL };
	int status;
	pid_t pid;

	(void)argc;
	if (getenv(CHILD_MARK)) {
		RUN(test_captured_and_scrubbed);
		RUN(test_set_again_replaces);
		RUN(test_forked_child_has_none);
		return check_summary();
	}
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		execve("/proc/self/exe", argv, env);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
		fprintf(stderr, "cannot run the test in a fresh process\n");
		return 1;
	}
	return WEXITSTATUS(status);
}
