// SPDX-License-Identifier: MIT
/*
 * The `pkcs11` provider: master keys are AES-256 secret-key objects on a
 * PKCS#11 token (an HSM, or SoftHSM2 in the tests) and never leave it.  A DEK
 * is wrapped by C_Encrypt with CKM_AES_GCM under the token's key, with the
 * volume UUID and the file ID in the AAD; it is unwrapped by C_Decrypt.
 *
 * Settings, section [kms]:
 *   provider    = pkcs11
 *   module      = /absolute/path/of/the/pkcs11-module.so
 *   token_label = the token's label (CKA_LABEL of the token, as C_GetTokenInfo shows it)
 *   key_label   = the master key's base label L: version N is the AES-256 secret
 *                 key labelled "L.N" (N decimal, 1 .. 4294967295, no leading zero)
 *   pin_file    = /path  (optional; else $ENVELOPEFS_PKCS11_PIN)
 *   sessions    = 1 .. 64 (optional, default 4)
 *
 * Why GCM and not CKM_AES_KEY_WRAP_PAD: RFC 5649 key wrap has no associated
 * data, so a wrapped DEK could not be bound to its volume and file (kms.h
 * demands it).  GCM gives that binding through its AAD, and C_Encrypt on a
 * key that is sensitive and never extractable keeps the master key inside
 * the token.  The DEK passes through the PKCS#11 call as data, which it also
 * would with C_WrapKey (the DEK has to become a token object first).
 *
 * Blob (docs/FORMAT.md, "PKCS#11 key wrapping"), P11_BLOB_LEN bytes:
 *   version (4, big-endian) || IV (12, random) || GCM ciphertext (32) || tag (16)
 * with AAD = P11_WRAP_LABEL || version (4) || volume UUID (16) || file ID (16).
 *
 * Concurrency: every kms op may be called from many daemon threads at once.
 * A PKCS#11 session carries at most one active operation (C_EncryptInit then
 * C_Encrypt), so two threads on one session would corrupt each other's
 * operation; the standard only lets one thread use a session at a time.  So
 * each op borrows a session of its own from a small pool (opened on demand up
 * to `sessions`, waiting when all are busy); the module is initialised with
 * CKF_OS_LOCKING_OK, which lets many threads call it on different sessions.
 *
 * Recovery: a session lost to a token reset, a removed token or a logout is
 * closed with every idle one (they share its fate) and the op retried once on
 * a fresh session, which logs in again.  That is why the PIN stays in secmem
 * until close, instead of being wiped right after the first login.
 *
 * Versions: the table of "L.N" keys is searched at open, at most once a
 * second before a wrap, whenever a blob names a version not in the table or a
 * handle has gone stale, and on every current_version() (asked by rotation
 * and status, never per block), so a key added with pkcs11-tool becomes
 * current without a remount.
 */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/random.h"
#include "crypto/secmem.h"
#include "kms/config.h"
#include "kms/keyring.h"

#define P11_WRAP_LABEL "envelopefs pkcs11 wrap v1"
#define P11_WRAP_LABEL_LEN (sizeof(P11_WRAP_LABEL) - 1)
#define P11_AAD_LEN (P11_WRAP_LABEL_LEN + 4 + 16 + 16)
#define P11_IV_LEN 12
#define P11_TAG_LEN 16
#define P11_BLOB_IV 4
#define P11_BLOB_CIPHER (P11_BLOB_IV + P11_IV_LEN)
#define P11_BLOB_LEN (P11_BLOB_CIPHER + KMS_DEK_LEN + P11_TAG_LEN)
#define P11_REF_PREFIX "pkcs11:"
#define P11_PIN_ENV "ENVELOPEFS_PKCS11_PIN"
#define P11_MAX_PIN 256
#define P11_MAX_SESSIONS 64
#define P11_DEFAULT_SESSIONS 4
/* "L.N" must fit a label buffer: L up to 100 bytes, "." and 10 digits. */
#define P11_MAX_KEY_LABEL 100
#define P11_LABEL_BUF (P11_MAX_KEY_LABEL + 12)

/*
 * One loaded module.  C_Initialize and C_Finalize are process-wide, so every
 * provider instance naming the same module (a migration opens two) shares
 * one entry, and the last one out finalises.
 */
struct p11_module {
	struct p11_module *next;
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	unsigned refs;
	bool finalize; /* we initialised it; someone else did when false */
};

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static struct p11_module *modules; /* guarded by modules_lock */

struct p11_key {
	uint32_t version;
	CK_OBJECT_HANDLE handle;
};

struct p11_kms {
	struct p11_module *mod;
	CK_FUNCTION_LIST_PTR f;
	char token_label[33];
	char key_label[P11_MAX_KEY_LABEL + 1];
	uint8_t *pin; /* secmem, P11_MAX_PIN + 1 bytes, wiped at close */
	size_t pin_len;

	/* The session pool: idle sessions, and how many exist in all. */
	pthread_mutex_t pool_lock;
	pthread_cond_t pool_freed;
	CK_SLOT_ID slot; /* may change when the token comes back: found again by label */
	CK_SESSION_HANDLE idle[P11_MAX_SESSIONS];
	unsigned n_idle, n_open, max_sessions;

	/* The master-key versions on the token, ascending; never empty after open. */
	pthread_rwlock_t keys_lock;
	struct p11_key *keys;
	size_t n_keys;
	int64_t last_search; /* CLOCK_MONOTONIC seconds of the last unforced search */
};

static const char *const known_settings[] = { "kms:provider",  "kms:module",
					      "kms:token_label", "kms:key_label",
					      "kms:pin_file", "kms:sessions" };

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* ckr_name - the CKR_ name of @rv for messages ("CKR_PIN_INCORRECT"), or its hex in @buf. */
static const char *ckr_name(CK_RV rv, char buf[24])
{
	static const struct {
		CK_RV rv;
		const char *name;
	} names[] = {
		{ CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR" },
		{ CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED" },
		{ CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR" },
		{ CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED" },
		{ CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT" },
		{ CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED" },
		{ CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT" },
		{ CKR_PIN_LOCKED, "CKR_PIN_LOCKED" },
		{ CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED" },
		{ CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE" },
		{ CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED" },
		{ CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN" },
		{ CKR_SESSION_COUNT, "CKR_SESSION_COUNT" },
		{ CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID" },
		{ CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED" },
		{ CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED" },
		{ CKR_HOST_MEMORY, "CKR_HOST_MEMORY" },
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].rv == rv)
			return names[i].name;
	snprintf(buf, 24, "CKR 0x%lx", (unsigned long)rv);
	return buf;
}

/*
 * ckr_errno - the kms.h errno for @rv.  Only C_Decrypt's result can mean a
 * bad blob, so CKR_ENCRYPTED_DATA_* are read as -EBADMSG wherever they come
 * from; SoftHSM2 reports a failed GCM tag as CKR_GENERAL_ERROR, which the
 * decrypt path maps itself.
 */
static int ckr_errno(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
		return 0;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_EXPIRED:
	case CKR_PIN_LOCKED:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_USER_PIN_NOT_INITIALIZED:
	case CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
	case CKR_USER_TOO_MANY_TYPES:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
		return -EACCES;
	case CKR_ENCRYPTED_DATA_INVALID:
	case CKR_ENCRYPTED_DATA_LEN_RANGE:
		return -EBADMSG;
	case CKR_KEY_HANDLE_INVALID:
	case CKR_OBJECT_HANDLE_INVALID:
		return -ENOENT;
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_DEVICE_REMOVED:
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_MEMORY:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_SESSION_COUNT:
	case CKR_SLOT_ID_INVALID:
		return -EAGAIN;
	case CKR_HOST_MEMORY:
		return -ENOMEM;
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_SIZE_RANGE:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/*
 * session_lost - @rv says the session (and, for a token event, every other
 * session of ours on the token) can no longer be used: close and replace.
 * CKR_BUFFER_TOO_SMALL is here because it leaves the operation active.
 */
static bool session_lost(CK_RV rv)
{
	switch (rv) {
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_REMOVED:
	case CKR_DEVICE_ERROR:
	case CKR_BUFFER_TOO_SMALL:
		return true;
	default:
		return false;
	}
}

/* ---- the module ---------------------------------------------------------- */

/* check_module_file - @path must be absolute and a regular file only its owner may change. */
static int check_module_file(const char *path, char *err, size_t err_len)
{
	struct stat sb;

	if (!path || path[0] != '/')
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:module must be the absolute path of the token's "
				"PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)");
	if (stat(path, &sb) < 0)
		return kms_errf(err, err_len, -errno, "PKCS#11 module %s: %s", path,
				strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return kms_errf(err, err_len, -EINVAL, "PKCS#11 module %s is not a regular file",
				path);
	/* The module runs inside the daemon, as root: whoever may change it owns the keys. */
	if (sb.st_mode & (S_IWGRP | S_IWOTH))
		return kms_errf(err, err_len, -EACCES,
				"PKCS#11 module %s is writable by group or others: chmod go-w %s",
				path, path);
	return 0;
}

static int module_get(const char *path, struct p11_module **out, char *err, size_t err_len)
{
	CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
	CK_C_GetFunctionList get_list;
	struct p11_module *m;
	char name[24];
	CK_RV rv;
	void *dl;
	int rc;

	rc = check_module_file(path, err, err_len);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&modules_lock);
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		rc = kms_errf(err, err_len, -EINVAL, "cannot load PKCS#11 module %s: %s", path,
			      dlerror());
		goto out;
	}
	/* dlopen hands out one handle per loaded object, whatever path named it. */
	for (m = modules; m; m = m->next)
		if (m->dl == dl)
			break;
	if (m) {
		dlclose(dl); /* the entry holds the library already */
		m->refs++;
		*out = m;
		goto out;
	}
	m = calloc(1, sizeof(*m));
	get_list = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
	if (!m || !get_list) {
		rc = kms_errf(err, err_len, m ? -EINVAL : -ENOMEM,
			      m ? "%s is not a PKCS#11 module (no C_GetFunctionList)"
				: "out of memory (%s)",
			      path);
		goto fail;
	}
	rv = get_list(&m->f);
	if (rv != CKR_OK || !m->f) {
		rc = kms_errf(err, err_len, -EIO, "PKCS#11 module %s: C_GetFunctionList: %s", path,
			      ckr_name(rv, name));
		goto fail;
	}
	rv = m->f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		rc = kms_errf(err, err_len, ckr_errno(rv) == -EAGAIN ? -EAGAIN : -EIO,
			      "PKCS#11 module %s: C_Initialize: %s", path, ckr_name(rv, name));
		goto fail;
	}
	/* Already initialised by another user in this process: it finalises, not us. */
	m->finalize = rv == CKR_OK;
	m->dl = dl;
	m->refs = 1;
	m->next = modules;
	modules = m;
	*out = m;
	goto out;
fail:
	free(m);
	dlclose(dl);
out:
	pthread_mutex_unlock(&modules_lock);
	return rc;
}

static void module_put(struct p11_module *m)
{
	struct p11_module **p;

	pthread_mutex_lock(&modules_lock);
	if (--m->refs == 0) {
		for (p = &modules; *p != m; p = &(*p)->next)
			;
		*p = m->next;
		if (m->finalize)
			m->f->C_Finalize(NULL);
		dlclose(m->dl);
		free(m);
	}
	pthread_mutex_unlock(&modules_lock);
}

/* ---- the token and its sessions ------------------------------------------ */

/* token_label_of - the blank-padded 32-byte label of @info, trimmed, in @out. */
static void token_label_of(const CK_TOKEN_INFO *info, char out[33])
{
	size_t n = sizeof(info->label);

	memcpy(out, info->label, n);
	while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\0'))
		n--;
	out[n] = '\0';
}

/*
 * find_slot - the slot holding the one token labelled pk->token_label.
 * -ENOENT when none is present (listing those that are, in @err), -EINVAL
 * when two are (the label does not say which).
 */
static int find_slot(struct p11_kms *pk, CK_SLOT_ID *slot, char *err, size_t err_len)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, i, found = 0;
	char seen[256] = "", label[33], name[24];
	size_t used = 0;
	CK_RV rv;
	int rc;

	/* The slot count can grow between the two calls: ask until it fits. */
	do {
		free(slots);
		slots = NULL;
		rv = pk->f->C_GetSlotList(CK_TRUE, NULL, &n);
		if (rv == CKR_OK && n) {
			slots = calloc(n, sizeof(*slots));
			if (!slots)
				return kms_errf(err, err_len, -ENOMEM, "out of memory");
			rv = pk->f->C_GetSlotList(CK_TRUE, slots, &n);
		}
	} while (rv == CKR_BUFFER_TOO_SMALL);
	if (rv != CKR_OK) {
		free(slots);
		return kms_errf(err, err_len, ckr_errno(rv) == -EAGAIN ? -EAGAIN : -EIO,
				"C_GetSlotList: %s", ckr_name(rv, name));
	}
	for (i = 0; i < n; i++) {
		CK_TOKEN_INFO info;

		if (pk->f->C_GetTokenInfo(slots[i], &info) != CKR_OK)
			continue; /* removed meanwhile, or unreadable: not ours either way */
		token_label_of(&info, label);
		if (strcmp(label, pk->token_label) == 0) {
			*slot = slots[i];
			found++;
		} else if (used < sizeof(seen)) {
			used += (size_t)snprintf(seen + used, sizeof(seen) - used, "%s'%s'",
						 used ? ", " : "", label);
		}
	}
	free(slots);
	if (found == 1)
		return 0;
	if (found > 1)
		rc = kms_errf(err, err_len, -EINVAL,
			      "%lu tokens are labelled '%s': give each token its own label",
			      (unsigned long)found, pk->token_label);
	else
		rc = kms_errf(err, err_len, -ENOENT,
			      "no token labelled '%s' is present (tokens seen: %s): check "
			      "kms:token_label and that the token is plugged in and initialised",
			      pk->token_label, used ? seen : "none");
	return rc;
}

/*
 * session_open - a new session on the token, logged in as the user.  Login
 * is per token and application, so once any session of ours is logged in
 * the others are too (CKR_USER_ALREADY_LOGGED_IN is success).  Returns the
 * CK_RV; on CKR_OK *@h is open.
 */
static CK_RV session_open(struct p11_kms *pk, CK_SESSION_HANDLE *h)
{
	CK_SLOT_ID slot;
	CK_RV rv;

	pthread_mutex_lock(&pk->pool_lock);
	slot = pk->slot;
	pthread_mutex_unlock(&pk->pool_lock);
	rv = pk->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, h);
	if (rv == CKR_SLOT_ID_INVALID || rv == CKR_TOKEN_NOT_PRESENT ||
	    rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_RECOGNIZED) {
		/* The token may be back in another slot (SoftHSM2 renumbers them). */
		if (find_slot(pk, &slot, NULL, 0) < 0)
			return rv;
		pthread_mutex_lock(&pk->pool_lock);
		pk->slot = slot;
		pthread_mutex_unlock(&pk->pool_lock);
		rv = pk->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, h);
	}
	if (rv != CKR_OK)
		return rv;
	rv = pk->f->C_Login(*h, CKU_USER, pk->pin, pk->pin_len);
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	if (rv != CKR_OK)
		pk->f->C_CloseSession(*h);
	return rv;
}

/* session_get - borrow a session, opening one if the pool is not full.  CK_RV. */
static CK_RV session_get(struct p11_kms *pk, CK_SESSION_HANDLE *h)
{
	CK_RV rv;

	pthread_mutex_lock(&pk->pool_lock);
	while (!pk->n_idle && pk->n_open == pk->max_sessions)
		pthread_cond_wait(&pk->pool_freed, &pk->pool_lock);
	if (pk->n_idle) {
		*h = pk->idle[--pk->n_idle];
		pthread_mutex_unlock(&pk->pool_lock);
		return CKR_OK;
	}
	pk->n_open++; /* reserved before the (slow) open, so the pool never overfills */
	pthread_mutex_unlock(&pk->pool_lock);
	rv = session_open(pk, h);
	if (rv != CKR_OK) {
		pthread_mutex_lock(&pk->pool_lock);
		pk->n_open--;
		pthread_cond_signal(&pk->pool_freed);
		pthread_mutex_unlock(&pk->pool_lock);
	}
	return rv;
}

/*
 * session_put - return @h after an op that ended with @rv.  A lost session
 * is closed together with every idle one: a token reset or logout takes them
 * all, and the next borrower then opens (and logs in) a fresh one.
 */
static void session_put(struct p11_kms *pk, CK_SESSION_HANDLE h, CK_RV rv)
{
	pthread_mutex_lock(&pk->pool_lock);
	if (session_lost(rv)) {
		pk->f->C_CloseSession(h);
		pk->n_open--;
		while (pk->n_idle) {
			pk->f->C_CloseSession(pk->idle[--pk->n_idle]);
			pk->n_open--;
		}
		pthread_cond_broadcast(&pk->pool_freed);
	} else {
		pk->idle[pk->n_idle++] = h;
		pthread_cond_signal(&pk->pool_freed);
	}
	pthread_mutex_unlock(&pk->pool_lock);
}

/* ---- master-key versions ------------------------------------------------- */

/* label_version - N if @label is "<key_label>.N" with N a canonical decimal in 1 .. 2^32-1, else 0. */
static uint32_t label_version(const struct p11_kms *pk, const char *label)
{
	size_t base = strlen(pk->key_label), i;
	const char *digits = label + base + 1;
	uint64_t v = 0;

	if (strncmp(label, pk->key_label, base) != 0 || label[base] != '.' || digits[0] == '0')
		return 0;
	for (i = 0; digits[i]; i++) {
		if (digits[i] < '0' || digits[i] > '9' || i == 10)
			return 0;
		v = v * 10 + (uint64_t)(digits[i] - '0');
	}
	return i && v <= UINT32_MAX ? (uint32_t)v : 0;
}

static int key_cmp(const void *a, const void *b)
{
	const struct p11_key *x = a, *y = b;

	return x->version < y->version ? -1 : x->version > y->version;
}

/*
 * search_keys_on - list the AES keys labelled "<key_label>.N" through session
 * @h, sorted by version, into a new array.  Returns the CK_RV; a label found
 * twice, or a key that is not 256 bits, is CKR_KEY_SIZE_RANGE / CKR_GENERAL_ERROR
 * with @why set, for the caller's message.
 */
static CK_RV search_keys_on(struct p11_kms *pk, CK_SESSION_HANDLE h, struct p11_key **out,
			    size_t *n_out, char *why, size_t why_len)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_ATTRIBUTE filter[] = { { CKA_CLASS, &cls, sizeof(cls) },
				  { CKA_KEY_TYPE, &type, sizeof(type) } };
	struct p11_key *keys = NULL, *grown;
	size_t n = 0, cap = 0, i;
	CK_OBJECT_HANDLE found[32];
	CK_ULONG got, k;
	CK_RV rv, fin;

	rv = pk->f->C_FindObjectsInit(h, filter, 2);
	if (rv != CKR_OK)
		return rv;
	do {
		rv = pk->f->C_FindObjects(h, found, 32, &got);
		for (k = 0; rv == CKR_OK && k < got; k++) {
			char label[P11_LABEL_BUF];
			CK_ULONG value_len = 0;
			CK_ATTRIBUTE attrs[] = { { CKA_LABEL, label, sizeof(label) - 1 },
						 { CKA_VALUE_LEN, &value_len, sizeof(value_len) } };
			uint32_t v;
			CK_RV arv = pk->f->C_GetAttributeValue(h, found[k], attrs, 2);

			/* A label too long for the buffer is longer than any of ours. */
			if ((arv != CKR_OK && arv != CKR_BUFFER_TOO_SMALL) ||
			    attrs[0].ulValueLen == CK_UNAVAILABLE_INFORMATION)
				continue;
			label[attrs[0].ulValueLen] = '\0';
			v = label_version(pk, label);
			if (!v)
				continue;
			if (attrs[1].ulValueLen == CK_UNAVAILABLE_INFORMATION || value_len != 32) {
				snprintf(why, why_len,
					 "key '%s' is not an AES-256 key: envelopefs wants "
					 "256-bit master keys (pkcs11-tool --keygen --key-type AES:32)",
					 label);
				rv = CKR_KEY_SIZE_RANGE;
				break;
			}
			if (n == cap) {
				cap = cap ? 2 * cap : 8;
				grown = realloc(keys, cap * sizeof(*keys));
				if (!grown) {
					rv = CKR_HOST_MEMORY;
					break;
				}
				keys = grown;
			}
			keys[n++] = (struct p11_key){ .version = v, .handle = found[k] };
		}
	} while (rv == CKR_OK && got == 32);
	fin = pk->f->C_FindObjectsFinal(h);
	if (rv == CKR_OK)
		rv = fin;
	if (rv == CKR_OK && n > 1) {
		qsort(keys, n, sizeof(*keys), key_cmp);
		for (i = 1; i < n; i++)
			if (keys[i].version == keys[i - 1].version) {
				snprintf(why, why_len,
					 "two keys are labelled '%s.%u': a version must name one key",
					 pk->key_label, keys[i].version);
				rv = CKR_GENERAL_ERROR;
				break;
			}
	}
	if (rv != CKR_OK) {
		free(keys);
		return rv;
	}
	*out = keys;
	*n_out = n;
	return CKR_OK;
}

/*
 * search_keys - replace the version table with what the token holds now.
 * A failed search keeps the old table (it still unwraps what it did); an
 * empty result is -ENOENT and also keeps it, so a key deleted by mistake
 * does not stop the files already open.  0 or -errno, message in @err.
 */
static int search_keys(struct p11_kms *pk, char *err, size_t err_len)
{
	struct p11_key *keys = NULL, *old;
	char why[256] = "", name[24];
	CK_SESSION_HANDLE h;
	size_t n = 0;
	CK_RV rv;
	int attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		rv = session_get(pk, &h);
		if (rv != CKR_OK)
			break;
		rv = search_keys_on(pk, h, &keys, &n, why, sizeof(why));
		session_put(pk, h, rv);
		if (!session_lost(rv))
			break;
	}
	if (rv != CKR_OK) {
		if (why[0])
			return kms_errf(err, err_len, -EINVAL, "token '%s': %s", pk->token_label,
					why);
		return kms_errf(err, err_len, ckr_errno(rv),
				"token '%s': cannot list its keys: %s", pk->token_label,
				ckr_name(rv, name));
	}
	if (!n) {
		free(keys);
		return kms_errf(err, err_len, -ENOENT,
				"token '%s' holds no AES key labelled '%s.N' (N = 1, 2, ...): "
				"create one, e.g. pkcs11-tool --module MODULE --token-label '%s' "
				"--login --keygen --key-type AES:32 --label '%s.1'",
				pk->token_label, pk->key_label, pk->token_label, pk->key_label);
	}
	pthread_rwlock_wrlock(&pk->keys_lock);
	old = pk->keys;
	pk->keys = keys;
	pk->n_keys = n;
	pthread_rwlock_unlock(&pk->keys_lock);
	free(old);
	return 0;
}

/* maybe_search - search_keys() unless one ran during this second. */
static void maybe_search(struct p11_kms *pk)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	if (__atomic_exchange_n(&pk->last_search, (int64_t)ts.tv_sec, __ATOMIC_RELAXED) ==
	    ts.tv_sec)
		return;
	search_keys(pk, NULL, 0);
}

/* current_key - the newest version on the token (the table is never empty). */
static uint32_t current_key(struct p11_kms *pk)
{
	uint32_t v;

	pthread_rwlock_rdlock(&pk->keys_lock);
	v = pk->keys[pk->n_keys - 1].version;
	pthread_rwlock_unlock(&pk->keys_lock);
	return v;
}

/* key_handle - the handle of @version's key, or false if the table has no such version. */
static bool key_handle(struct p11_kms *pk, uint32_t version, CK_OBJECT_HANDLE *handle)
{
	size_t lo = 0, hi;
	bool found = false;

	pthread_rwlock_rdlock(&pk->keys_lock);
	hi = pk->n_keys;
	while (!found && lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (pk->keys[mid].version == version) {
			*handle = pk->keys[mid].handle;
			found = true;
		} else if (pk->keys[mid].version < version) {
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	pthread_rwlock_unlock(&pk->keys_lock);
	return found;
}

/* ---- wrapping ------------------------------------------------------------ */

static void make_aad(uint8_t aad[P11_AAD_LEN], uint32_t version, const struct kms_context *ctx)
{
	memcpy(aad, P11_WRAP_LABEL, P11_WRAP_LABEL_LEN);
	put_be32(aad + P11_WRAP_LABEL_LEN, version);
	memcpy(aad + P11_WRAP_LABEL_LEN + 4, ctx->volume_uuid, 16);
	memcpy(aad + P11_WRAP_LABEL_LEN + 20, ctx->file_id, 16);
}

/* One GCM operation: encrypt @in into @out, or decrypt. */
struct gcm_op {
	bool decrypt;
	CK_OBJECT_HANDLE key;
	const uint8_t *iv;
	uint8_t aad[P11_AAD_LEN];
	const uint8_t *in;
	CK_ULONG in_len;
	uint8_t *out;
	CK_ULONG out_cap, out_len;
};

static CK_RV gcm_on(struct p11_kms *pk, CK_SESSION_HANDLE h, struct gcm_op *op)
{
	CK_GCM_PARAMS params = {
		.pIv = (CK_BYTE_PTR)op->iv,
		.ulIvLen = P11_IV_LEN,
		.ulIvBits = P11_IV_LEN * 8,
		.pAAD = op->aad,
		.ulAADLen = P11_AAD_LEN,
		.ulTagBits = P11_TAG_LEN * 8,
	};
	CK_MECHANISM mech = { CKM_AES_GCM, &params, sizeof(params) };
	CK_RV rv;

	op->out_len = op->out_cap;
	if (op->decrypt) {
		rv = pk->f->C_DecryptInit(h, &mech, op->key);
		if (rv == CKR_OK)
			rv = pk->f->C_Decrypt(h, (CK_BYTE_PTR)op->in, op->in_len, op->out,
					      &op->out_len);
	} else {
		rv = pk->f->C_EncryptInit(h, &mech, op->key);
		if (rv == CKR_OK)
			rv = pk->f->C_Encrypt(h, (CK_BYTE_PTR)op->in, op->in_len, op->out,
					      &op->out_len);
	}
	return rv;
}

/*
 * run_gcm - @op on a pooled session under key @version, retried once on a
 * fresh session when the session was lost and once after a new key search
 * when the key's handle went stale.  Returns 0 or a kms.h errno.
 */
static int run_gcm(struct p11_kms *pk, uint32_t version, struct gcm_op *op)
{
	bool searched = false, reopened = false;
	CK_SESSION_HANDLE h;
	CK_RV rv;

	for (;;) {
		if (!key_handle(pk, version, &op->key))
			return -ENOENT;
		rv = session_get(pk, &h);
		if (rv != CKR_OK)
			return ckr_errno(rv);
		rv = gcm_on(pk, h, op);
		session_put(pk, h, rv);
		if (session_lost(rv) && !reopened) {
			reopened = true;
			continue;
		}
		if ((rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID) &&
		    !searched) {
			searched = true;
			search_keys(pk, NULL, 0);
			continue;
		}
		break;
	}
	/* SoftHSM2 answers a failed GCM tag with CKR_GENERAL_ERROR. */
	if (op->decrypt && rv == CKR_GENERAL_ERROR)
		return -EBADMSG;
	return ckr_errno(rv);
}

/* wrap_current - wrap @dek under the current version into @blob. */
static int wrap_current(struct p11_kms *pk, const struct kms_context *ctx, const uint8_t *dek,
			uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct gcm_op op = { .decrypt = false };
	uint32_t v = current_key(pk);
	uint8_t *iv = blob + P11_BLOB_IV;
	int rc;

	if (blob_cap < P11_BLOB_LEN)
		return -EINVAL;
	if (crypto_random(iv, P11_IV_LEN) < 0)
		return -EIO;
	op.iv = iv;
	op.in = dek;
	op.in_len = KMS_DEK_LEN;
	op.out = blob + P11_BLOB_CIPHER;
	op.out_cap = KMS_DEK_LEN + P11_TAG_LEN;
	make_aad(op.aad, v, ctx);
	rc = run_gcm(pk, v, &op);
	if (rc == 0 && op.out_len != KMS_DEK_LEN + P11_TAG_LEN)
		rc = -EIO;
	if (rc < 0) {
		secmem_wipe(blob, P11_BLOB_LEN);
		return rc;
	}
	put_be32(blob, v);
	*blob_len = P11_BLOB_LEN;
	*version = v;
	return 0;
}

static int unwrap_blob(struct p11_kms *pk, const struct kms_context *ctx, const uint8_t *blob,
		       size_t blob_len, uint8_t *dek)
{
	struct gcm_op op = { .decrypt = true };
	CK_OBJECT_HANDLE handle;
	uint32_t version;
	uint8_t *plain;
	int rc;

	if (blob_len != P11_BLOB_LEN)
		return -EBADMSG;
	version = get_be32(blob);
	if (!version)
		return -EBADMSG;
	/* A version we do not know may have been added since the last search. */
	if (!key_handle(pk, version, &handle))
		search_keys(pk, NULL, 0);
	/* Some modules want room for the whole input even though the tag is not output. */
	plain = secmem_alloc(KMS_DEK_LEN + P11_TAG_LEN);
	if (!plain)
		return -ENOMEM;
	op.iv = blob + P11_BLOB_IV;
	op.in = blob + P11_BLOB_CIPHER;
	op.in_len = KMS_DEK_LEN + P11_TAG_LEN;
	op.out = plain;
	op.out_cap = KMS_DEK_LEN + P11_TAG_LEN;
	make_aad(op.aad, version, ctx);
	rc = run_gcm(pk, version, &op);
	if (rc == 0 && op.out_len != KMS_DEK_LEN)
		rc = -EBADMSG;
	if (rc == 0)
		memcpy(dek, plain, KMS_DEK_LEN);
	secmem_free(plain, KMS_DEK_LEN + P11_TAG_LEN);
	return rc;
}

/* ---- kms_ops ------------------------------------------------------------- */

static int p11_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek,
			uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct p11_kms *pk = kms->priv;
	int rc;

	maybe_search(pk);
	if (crypto_random(dek, KMS_DEK_LEN) < 0)
		return -EIO;
	rc = wrap_current(pk, ctx, dek, blob, blob_cap, blob_len, version);
	if (rc < 0)
		secmem_wipe(dek, KMS_DEK_LEN);
	return rc;
}

static int p11_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *dek)
{
	return unwrap_blob(kms->priv, ctx, blob, blob_len, dek);
}

static int p11_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
		      uint32_t *version)
{
	struct p11_kms *pk = kms->priv;
	uint8_t *dek;
	int rc;

	maybe_search(pk);
	dek = secmem_alloc(KMS_DEK_LEN);
	if (!dek)
		return -ENOMEM;
	rc = unwrap_blob(pk, ctx, blob, blob_len, dek);
	if (rc == 0)
		rc = wrap_current(pk, ctx, dek, out, out_cap, out_len, version);
	secmem_free(dek, KMS_DEK_LEN);
	return rc;
}

static int p11_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len,
			    uint32_t *version)
{
	(void)kms;
	if (blob_len != P11_BLOB_LEN || !get_be32(blob))
		return -EBADMSG;
	*version = get_be32(blob);
	return 0;
}

static int p11_current_version(struct kms *kms, uint32_t *version)
{
	struct p11_kms *pk = kms->priv;
	int rc;

	/* Rotation and status ask: look at the token, so a new key counts at once. */
	rc = search_keys(pk, NULL, 0);
	if (rc < 0 && rc != -ENOENT)
		return rc;
	*version = current_key(pk);
	return 0;
}

static void p11_free(struct p11_kms *pk)
{
	while (pk->n_idle)
		pk->f->C_CloseSession(pk->idle[--pk->n_idle]);
	if (pk->mod)
		module_put(pk->mod);
	secmem_free(pk->pin, P11_MAX_PIN + 1);
	free(pk->keys);
	pthread_rwlock_destroy(&pk->keys_lock);
	pthread_cond_destroy(&pk->pool_freed);
	pthread_mutex_destroy(&pk->pool_lock);
	free(pk);
}

static void p11_close(struct kms *kms)
{
	if (kms->priv)
		p11_free(kms->priv);
	kms->priv = NULL;
}

/* ---- open ---------------------------------------------------------------- */

/*
 * read_pin - the user PIN into secmem: from the file @pin_file (one trailing
 * newline dropped; the file must be closed to group and others), else from
 * $ENVELOPEFS_PKCS11_PIN.  Never from a setting or the command line.
 */
static int read_pin(struct p11_kms *pk, const char *pin_file, char *err, size_t err_len)
{
	const char *env = getenv(P11_PIN_ENV);
	size_t done = 0;
	struct stat sb;
	int fd, rc = 0;

	pk->pin = secmem_alloc(P11_MAX_PIN + 1);
	if (!pk->pin)
		return kms_errf(err, err_len, -ENOMEM, "no locked memory for the PIN");
	if (!pin_file) {
		if (!env || !*env)
			return kms_errf(err, err_len, -EINVAL,
					"no PIN for token '%s': set kms:pin_file to a file holding "
					"it, or the environment variable %s",
					pk->token_label, P11_PIN_ENV);
		done = strlen(env);
		if (done > P11_MAX_PIN)
			return kms_errf(err, err_len, -EINVAL, "%s is longer than %d bytes",
					P11_PIN_ENV, P11_MAX_PIN);
		memcpy(pk->pin, env, done);
		pk->pin_len = done;
		return 0;
	}
	if (pin_file[0] != '/')
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:pin_file must be an absolute path");
	fd = open(pin_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kms_errf(err, err_len, -errno, "cannot open PIN file %s: %s", pin_file,
				strerror(errno));
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		rc = kms_errf(err, err_len, -EINVAL, "PIN file %s is not a regular file",
			      pin_file);
	} else if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
		rc = kms_errf(err, err_len, -EACCES,
			      "PIN file %s may be read by group or others: chmod 600 %s",
			      pin_file, pin_file);
	}
	/* One byte more than a PIN and its newline may take shows an over-long file. */
	while (rc == 0 && done < P11_MAX_PIN + 1) {
		ssize_t n = read(fd, pk->pin + done, P11_MAX_PIN + 1 - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = kms_errf(err, err_len, -errno, "cannot read PIN file %s: %s",
				      pin_file, strerror(errno));
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	close(fd);
	if (rc < 0)
		return rc;
	if (done && pk->pin[done - 1] == '\n')
		done--;
	if (done > P11_MAX_PIN)
		return kms_errf(err, err_len, -EINVAL,
				"PIN file %s is longer than %d bytes: is it the right file?",
				pin_file, P11_MAX_PIN);
	if (!done)
		return kms_errf(err, err_len, -EINVAL, "PIN file %s is empty", pin_file);
	pk->pin_len = done;
	return 0;
}

/* parse_labels - token_label, key_label and sessions from @ini into @pk. */
static int parse_labels(struct p11_kms *pk, const dictionary *ini, char *err, size_t err_len)
{
	const char *token = iniparser_getstring(ini, "kms:token_label", NULL);
	const char *key = iniparser_getstring(ini, "kms:key_label", NULL);
	const char *sessions = iniparser_getstring(ini, "kms:sessions", NULL);
	char *end;
	long n;

	if (!token || !*token || strlen(token) > 32)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:token_label must be the token's label (1 to 32 "
				"bytes)");
	if (!key || !*key || strlen(key) > P11_MAX_KEY_LABEL)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:key_label must be the master key's base label (1 to "
				"%d bytes; version N is the key labelled '<key_label>.N')",
				P11_MAX_KEY_LABEL);
	snprintf(pk->token_label, sizeof(pk->token_label), "%s", token);
	snprintf(pk->key_label, sizeof(pk->key_label), "%s", key);
	pk->max_sessions = P11_DEFAULT_SESSIONS;
	if (sessions) {
		errno = 0;
		n = strtol(sessions, &end, 10);
		if (errno || end == sessions || *end || n < 1 || n > P11_MAX_SESSIONS)
			return kms_errf(err, err_len, -EINVAL,
					"setting kms:sessions must be a number from 1 to %d",
					P11_MAX_SESSIONS);
		pk->max_sessions = (unsigned)n;
	}
	return 0;
}

/* uri_encode - @s percent-encoded for a PKCS#11 URI (RFC 7512) path value, at @out. */
static size_t uri_encode(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t used = 0;

	for (; *s && used + 3 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			out[used++] = (char)c;
		} else {
			out[used++] = '%';
			out[used++] = hex[c >> 4];
			out[used++] = hex[c & 15];
		}
	}
	out[used] = '\0';
	return *s ? cap : used;
}

/*
 * set_key_ref - "pkcs11:token=T;object=L", the PKCS#11 URI of the master key
 * (RFC 7512, without the version), which every key record of the volume names.
 */
static int set_key_ref(struct kms *kms, const struct p11_kms *pk, char *err, size_t err_len)
{
	char token[3 * 32 + 1], object[3 * P11_MAX_KEY_LABEL + 1];
	int n;

	uri_encode(pk->token_label, token, sizeof(token));
	uri_encode(pk->key_label, object, sizeof(object));
	n = snprintf(kms->key_ref, sizeof(kms->key_ref), "%stoken=%s;object=%s", P11_REF_PREFIX,
		     token, object);
	if (n < 0 || (size_t)n >= sizeof(kms->key_ref))
		return kms_errf(err, err_len, -EINVAL,
				"the key reference %stoken=%s;object=%s is longer than %d bytes: "
				"choose a shorter kms:key_label",
				P11_REF_PREFIX, token, object, KMS_MAX_REF);
	return 0;
}

/* check_mechanism - the token must do AES-GCM encryption and decryption. */
static int check_mechanism(struct p11_kms *pk, char *err, size_t err_len)
{
	CK_MECHANISM_INFO info;
	char name[24];
	CK_RV rv;

	rv = pk->f->C_GetMechanismInfo(pk->slot, CKM_AES_GCM, &info);
	if (rv == CKR_OK && (info.flags & (CKF_ENCRYPT | CKF_DECRYPT)) ==
				    (CKF_ENCRYPT | CKF_DECRYPT))
		return 0;
	return kms_errf(err, err_len, rv == CKR_OK || rv == CKR_MECHANISM_INVALID ? -EINVAL
									       : ckr_errno(rv),
			"token '%s' does not offer AES-GCM encryption and decryption "
			"(CKM_AES_GCM: %s), which envelopefs wraps DEKs with",
			pk->token_label, rv == CKR_OK ? "no CKF_ENCRYPT|CKF_DECRYPT" : ckr_name(rv, name));
}

/* login - open the first session (logging in) to prove the PIN, then put it in the pool. */
static int login(struct p11_kms *pk, const char *pin_source, char *err, size_t err_len)
{
	CK_SESSION_HANDLE h;
	char name[24];
	CK_RV rv;
	int rc;

	rv = session_get(pk, &h);
	if (rv == CKR_OK) {
		session_put(pk, h, rv);
		return 0;
	}
	rc = ckr_errno(rv);
	if (rc == -EACCES)
		return kms_errf(err, err_len, rc,
				"token '%s' refused the PIN from %s (%s)%s", pk->token_label,
				pin_source, ckr_name(rv, name),
				rv == CKR_PIN_LOCKED ? ": the user PIN is locked, the token's "
						       "security officer must reset it"
						     : ": check the PIN");
	return kms_errf(err, err_len, rc, "cannot log in to token '%s': %s", pk->token_label,
			ckr_name(rv, name));
}

static int p11_open(struct kms *kms, const dictionary *ini, char *err, size_t err_len)
{
	const char *module = iniparser_getstring(ini, "kms:module", NULL);
	const char *pin_file = iniparser_getstring(ini, "kms:pin_file", NULL);
	char pin_source[PATH_MAX + 16];
	struct p11_kms *pk;
	int rc;

	rc = config_refuse_unknown(ini, "kms", known_settings,
				   sizeof(known_settings) / sizeof(known_settings[0]),
				   "the pkcs11 provider", err, err_len);
	if (rc < 0)
		return rc;
	pk = calloc(1, sizeof(*pk));
	if (!pk)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	pthread_mutex_init(&pk->pool_lock, NULL);
	pthread_cond_init(&pk->pool_freed, NULL);
	pthread_rwlock_init(&pk->keys_lock, NULL);
	if (pin_file && !*pin_file)
		pin_file = NULL;
	snprintf(pin_source, sizeof(pin_source), "%s%s", pin_file ? "PIN file " : "",
		 pin_file ? pin_file : P11_PIN_ENV);

	rc = parse_labels(pk, ini, err, err_len);
	if (rc == 0)
		rc = set_key_ref(kms, pk, err, err_len);
	if (rc == 0)
		rc = read_pin(pk, pin_file, err, err_len);
	if (rc == 0)
		rc = module_get(module, &pk->mod, err, err_len);
	if (rc == 0) {
		pk->f = pk->mod->f;
		rc = find_slot(pk, &pk->slot, err, err_len);
	}
	if (rc == 0)
		rc = check_mechanism(pk, err, err_len);
	if (rc == 0)
		rc = login(pk, pin_source, err, err_len);
	if (rc == 0)
		rc = search_keys(pk, err, err_len);
	if (rc < 0) {
		p11_free(pk);
		return rc;
	}
	kms->max_blob_len = P11_BLOB_LEN;
	kms->priv = pk;
	return 0;
}

const struct kms_ops kms_pkcs11_ops = {
	.name = "pkcs11",
	.open = p11_open,
	.generate = p11_generate,
	.unwrap = p11_unwrap,
	.rewrap = p11_rewrap,
	.blob_version = p11_blob_version,
	.current_version = p11_current_version,
	.close = p11_close,
};
