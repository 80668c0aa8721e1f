// SPDX-License-Identifier: MIT
/*
 * Secrets from the environment, captured once into secmem and scrubbed from
 * the process: see kms/envsecret.h.
 */

#include "kms/envsecret.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/secmem.h"

/* More than the secret variables the providers read: a full table is a bug, not a user error. */
#define MAX_SECRETS 8
#define MAX_NAME 40

struct captured {
	char name[MAX_NAME];
	char *value;	/* secmem, NUL-terminated */
	size_t len;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct captured table[MAX_SECRETS]; /* under lock; name[0] == '\0': free */
static bool wipe_registered;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/*
 * fork() handlers.  The lock is held across fork(), so a child never
 * inherits it taken by a thread it does not have.  The child's copies read
 * as zeros (secmem is wiped on fork): it forgets them, cells included (they
 * are the child's secmem pool's to lose), so it answers -ENOENT, never the
 * wiped bytes as a secret.
 */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&lock);
}

static void atfork_child(void)
{
	memset(table, 0, sizeof(table));
	pthread_mutex_unlock(&lock);
}

/*
 * Registered after secmem's own handlers (an allocation registers them), so
 * that fork() takes our lock before secmem's pool lock: the order capture()
 * takes them in.
 */
static void atfork_register(void)
{
	secmem_free(secmem_alloc(1), 1);
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* wipe_all - at exit: no captured secret outlives the process in its memory. */
static void wipe_all(void)
{
	size_t i;

	pthread_mutex_lock(&lock);
	for (i = 0; i < MAX_SECRETS; i++) {
		secmem_free(table[i].value, table[i].len + 1);
		memset(&table[i], 0, sizeof(table[i]));
	}
	pthread_mutex_unlock(&lock);
}

static struct captured *find(const char *name)
{
	size_t i;

	for (i = 0; i < MAX_SECRETS; i++)
		if (table[i].name[0] && strcmp(table[i].name, name) == 0)
			return &table[i];
	return NULL;
}

/*
 * capture - take @value, the environment's copy of @name, into the table,
 * then overwrite it in place and unset the variable.  Caller holds the lock.
 */
static int capture(const char *name, char *value)
{
	struct captured *slot = find(name);
	size_t len = strlen(value), i;
	char *copy;

	for (i = 0; !slot && i < MAX_SECRETS; i++)
		if (!table[i].name[0])
			slot = &table[i];
	if (!slot)
		return -ENOMEM;
	copy = secmem_alloc(len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, value, len + 1);
	secmem_free(slot->value, slot->len + 1);
	strcpy(slot->name, name);
	slot->value = copy;
	slot->len = len;
	/* In place first: unsetenv() only drops the pointer, the bytes would stay. */
	secmem_wipe(value, len);
	unsetenv(name);
	if (!wipe_registered)
		wipe_registered = atexit(wipe_all) == 0;
	return 0;
}

int envsecret_copy(const char *name, char *buf, size_t cap, size_t *len)
{
	struct captured *c;
	char *value;
	int rc = 0;

	if (!name || strlen(name) >= MAX_NAME || strchr(name, '=') || !buf || !cap || !len)
		return -EINVAL;
	pthread_once(&atfork_once, atfork_register);
	pthread_mutex_lock(&lock);
	value = getenv(name);
	if (value)
		rc = capture(name, value);
	c = rc == 0 ? find(name) : NULL;
	if (rc == 0 && (!c || c->len == 0))
		rc = -ENOENT;
	else if (rc == 0 && c->len >= cap)
		rc = -E2BIG;
	if (rc == 0) {
		memcpy(buf, c->value, c->len + 1);
		*len = c->len;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}
