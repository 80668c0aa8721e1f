/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_ENVSECRET_H
#define ENVELOPEFS_KMS_ENVSECRET_H

/*
 * Secrets given in the environment ($VAULT_TOKEN, $AWS_SECRET_ACCESS_KEY,
 * $AWS_SESSION_TOKEN, $ENVELOPEFS_PKCS11_PIN, $ENVELOPEFS_PASSPHRASE): the
 * code reads them here, never with getenv().
 *
 * The first read of a variable captures its value into secmem and scrubs it
 * from the process: the value's bytes in the environment are overwritten in
 * place, so /proc/PID/environ no longer shows them (to root: the daemon is
 * not dumpable), and the variable is unset, so no child inherits it.  The
 * captured copy lives as long as the process, so a process that opens a KMS
 * again (a tool working on several volumes) still finds the secret; it is
 * wiped at exit.  A variable set again later (setenv(), even to "") is the
 * process saying what it wants now: it replaces the copy.
 *
 * Limits: a forked child has no copy (secmem is wiped on fork) and no
 * variable, so a process that needs the secret in a child must read it
 * there.  The bytes scrubbed are the ones the environment points at: a
 * variable that was already replaced with setenv() before the first read
 * leaves its original value in the initial environment block, where nothing
 * here can find it.
 */

#include <stddef.h>

/*
 * envsecret_copy - the secret in environment variable @name into @buf
 * (@cap bytes, NUL-terminated, its length in *@len; @buf should be secmem).
 * Returns 0, or
 *   -ENOENT   neither set nor captured, or set to ""
 *   -E2BIG    the secret does not fit in @cap - 1 bytes (nothing copied)
 *   -ENOMEM   no locked memory to capture it (the variable is left as it was)
 * Thread-safe.
 */
int envsecret_copy(const char *name, char *buf, size_t cap, size_t *len);

#endif
