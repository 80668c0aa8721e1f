// SPDX-License-Identifier: MIT
/* A logged-in connection to one PKCS#11 token: see p11_token.h. */
#include "p11_token.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "kms/envsecret.h"
#include "kms/keyring.h"

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

/* Seconds an operation waits for a free session before it fails with -EAGAIN. */
#define P11_SESSION_WAIT 15

struct p11_token {
	struct p11_module *mod;
	CK_FUNCTION_LIST_PTR f;
	char label[P11_MAX_TOKEN_LABEL + 1];
	uint8_t *pin; /* secmem, P11_MAX_PIN + 1 bytes, wiped at close */
	size_t pin_len;
	bool pin_refused; /* atomic; set once the token said no: never offered again */
	/* One C_Login at a time, so that a PIN the token refuses is offered once,
	 * not by every thread that finds its session gone (a real HSM locks the
	 * PIN after a few tries). */
	pthread_mutex_t login_lock;

	/* The pool: idle sessions, and how many exist in all (idle or borrowed). */
	pthread_mutex_t pool_lock;
	pthread_cond_t pool_freed;
	CK_SLOT_ID slot; /* guarded by pool_lock */
	CK_SESSION_HANDLE idle[P11_MAX_SESSIONS];
	unsigned n_idle, n_open, max_sessions;
};

const char *p11_rv_name(CK_RV rv, char buf[24])
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
 * Only C_Decrypt's result can mean a bad blob, so CKR_ENCRYPTED_DATA_* are
 * read as -EBADMSG wherever they come from; SoftHSM2 reports a failed GCM tag
 * as CKR_GENERAL_ERROR, which the provider's decrypt path maps itself.  A
 * user not logged in after a fresh login is a refusal, not an outage.
 */
int p11_errno(CK_RV rv)
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

/* CKR_BUFFER_TOO_SMALL is here because it leaves the operation active on the session. */
bool p11_session_lost(CK_RV rv)
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

/*
 * trusted_module - resolve @path into @real (PATH_MAX bytes) and require the
 * file and every directory above it to belong to root or to us and to be
 * writable by no one else.  The module runs inside the daemon (as root), and
 * its path comes from envelopefs.conf, which lives in the backing directory:
 * whoever could write that directory, replace the file or a directory on its
 * way must not thereby get to run code with every key in reach.
 */
static int trusted_module(const char *path, char *real, char *err, size_t err_len)
{
	char part[PATH_MAX], *slash;
	struct stat sb;

	if (!path || path[0] != '/')
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:module must be the absolute path of the token's "
				"PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)");
	if (!realpath(path, real))
		return kms_errf(err, err_len, -errno, "PKCS#11 module %s: %s", path,
				strerror(errno));
	if (stat(real, &sb) < 0 || !S_ISREG(sb.st_mode))
		return kms_errf(err, err_len, -EINVAL, "PKCS#11 module %s is not a regular file",
				path);
	snprintf(part, sizeof(part), "%s", real);
	for (;;) {
		if (stat(part, &sb) < 0)
			return kms_errf(err, err_len, -errno, "PKCS#11 module %s: %s: %s", path,
					part, strerror(errno));
		if ((sb.st_uid != 0 && sb.st_uid != geteuid()) ||
		    (sb.st_mode & (S_IWGRP | S_IWOTH)))
			return kms_errf(err, err_len, -EACCES,
					"PKCS#11 module %s: %s may be changed by users other than "
					"root%s: the module runs inside the daemon, so it and every "
					"directory above it must be owned by root and writable by no "
					"one else",
					path, part, geteuid() ? " and the daemon's user" : "");
		if (strcmp(part, "/") == 0)
			return 0;
		slash = strrchr(part, '/');
		slash[slash == part ? 1 : 0] = '\0';
	}
}

static int module_get(const char *path, struct p11_module **out, char *err, size_t err_len)
{
	CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
	CK_C_GetFunctionList get_list;
	char name[24], real[PATH_MAX];
	struct p11_module *m;
	CK_RV rv;
	void *dl;
	int rc;

	rc = trusted_module(path, real, err, err_len);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&modules_lock);
	dl = dlopen(real, RTLD_NOW | RTLD_LOCAL);
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
	if (!m) {
		rc = kms_errf(err, err_len, -ENOMEM, "out of memory");
		goto fail;
	}
	get_list = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
	if (!get_list) {
		rc = kms_errf(err, err_len, -EINVAL, "%s is not a PKCS#11 module (no C_GetFunctionList)",
			      path);
		goto fail;
	}
	rv = get_list(&m->f);
	if (rv != CKR_OK || !m->f) {
		rc = kms_errf(err, err_len, -EIO, "PKCS#11 module %s: C_GetFunctionList: %s", path,
			      p11_rv_name(rv, name));
		goto fail;
	}
	rv = m->f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		rc = kms_errf(err, err_len, p11_errno(rv) == -EAGAIN ? -EAGAIN : -EIO,
			      "PKCS#11 module %s: C_Initialize: %s", path, p11_rv_name(rv, name));
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
 * find_slot - the slot holding the one token labelled tok->label.
 * -ENOENT when none is present (listing those that are, in @err), -EINVAL
 * when two are (the label does not say which).
 */
static int find_slot(struct p11_token *tok, CK_SLOT_ID *slot, char *err, size_t err_len)
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
		rv = tok->f->C_GetSlotList(CK_TRUE, NULL, &n);
		if (rv == CKR_OK && n) {
			slots = calloc(n, sizeof(*slots));
			if (!slots)
				return kms_errf(err, err_len, -ENOMEM, "out of memory");
			rv = tok->f->C_GetSlotList(CK_TRUE, slots, &n);
		}
	} while (rv == CKR_BUFFER_TOO_SMALL);
	if (rv != CKR_OK) {
		free(slots);
		return kms_errf(err, err_len, p11_errno(rv) == -EAGAIN ? -EAGAIN : -EIO,
				"C_GetSlotList: %s", p11_rv_name(rv, name));
	}
	for (i = 0; i < n; i++) {
		CK_TOKEN_INFO info;

		if (tok->f->C_GetTokenInfo(slots[i], &info) != CKR_OK)
			continue; /* removed meanwhile, or unreadable: not ours either way */
		token_label_of(&info, label);
		if (strcmp(label, tok->label) == 0) {
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
			      (unsigned long)found, tok->label);
	else
		rc = kms_errf(err, err_len, -ENOENT,
			      "no token labelled '%s' is present (tokens seen: %s): check "
			      "kms:token_label and that the token is plugged in and initialised",
			      tok->label, used ? seen : "none");
	return rc;
}

/*
 * session_open - a new session on the token, logged in as the user.  Login
 * is per token and application, so once any session of ours is logged in
 * the others are too (CKR_USER_ALREADY_LOGGED_IN is success).  Returns the
 * CK_RV; on CKR_OK *@h is open.
 */
static CK_RV session_open(struct p11_token *tok, CK_SESSION_HANDLE *h)
{
	CK_SLOT_ID slot;
	CK_RV rv;

	/* Offering a refused PIN again from every thread would lock it on a real token. */
	if (__atomic_load_n(&tok->pin_refused, __ATOMIC_RELAXED))
		return CKR_PIN_INCORRECT;

	pthread_mutex_lock(&tok->pool_lock);
	slot = tok->slot;
	pthread_mutex_unlock(&tok->pool_lock);
	rv = tok->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, h);
	if (rv == CKR_SLOT_ID_INVALID || rv == CKR_TOKEN_NOT_PRESENT ||
	    rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_RECOGNIZED) {
		/* The token may be back in another slot (SoftHSM2 renumbers them). */
		if (find_slot(tok, &slot, NULL, 0) < 0)
			return rv;
		pthread_mutex_lock(&tok->pool_lock);
		tok->slot = slot;
		pthread_mutex_unlock(&tok->pool_lock);
		rv = tok->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, h);
	}
	if (rv != CKR_OK)
		return rv;
	pthread_mutex_lock(&tok->login_lock);
	if (__atomic_load_n(&tok->pin_refused, __ATOMIC_RELAXED))
		rv = CKR_PIN_INCORRECT;
	else
		rv = tok->f->C_Login(*h, CKU_USER, tok->pin, tok->pin_len);
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE ||
	    rv == CKR_PIN_EXPIRED || rv == CKR_PIN_LOCKED)
		__atomic_store_n(&tok->pin_refused, true, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&tok->login_lock);
	if (rv != CKR_OK)
		tok->f->C_CloseSession(*h);
	return rv;
}

/* Opens a session only when none is idle and the pool is not full. */
CK_RV p11_session_get(struct p11_token *tok, CK_SESSION_HANDLE *h)
{
	struct timespec deadline;
	CK_RV rv;

	/* An operation stuck in a hung token holds its session: waiting for one
	 * is bounded like any KMS call, and then fails as "busy" (-EAGAIN). */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += P11_SESSION_WAIT;
	pthread_mutex_lock(&tok->pool_lock);
	while (!tok->n_idle && tok->n_open == tok->max_sessions)
		if (pthread_cond_timedwait(&tok->pool_freed, &tok->pool_lock, &deadline) ==
		    ETIMEDOUT) {
			pthread_mutex_unlock(&tok->pool_lock);
			return CKR_SESSION_COUNT;
		}
	if (tok->n_idle) {
		*h = tok->idle[--tok->n_idle];
		pthread_mutex_unlock(&tok->pool_lock);
		return CKR_OK;
	}
	tok->n_open++; /* reserved before the (slow) open, so the pool never overfills */
	pthread_mutex_unlock(&tok->pool_lock);
	rv = session_open(tok, h);
	if (rv != CKR_OK) {
		pthread_mutex_lock(&tok->pool_lock);
		tok->n_open--;
		pthread_cond_signal(&tok->pool_freed);
		pthread_mutex_unlock(&tok->pool_lock);
	}
	return rv;
}

/*
 * A lost session is closed together with every idle one: a token reset or
 * logout takes them all, and the next borrower opens (and logs in) afresh.
 */
void p11_session_put(struct p11_token *tok, CK_SESSION_HANDLE h, CK_RV rv)
{
	pthread_mutex_lock(&tok->pool_lock);
	if (p11_session_lost(rv)) {
		tok->f->C_CloseSession(h);
		tok->n_open--;
		while (tok->n_idle) {
			tok->f->C_CloseSession(tok->idle[--tok->n_idle]);
			tok->n_open--;
		}
		pthread_cond_broadcast(&tok->pool_freed);
	} else {
		tok->idle[tok->n_idle++] = h;
		pthread_cond_signal(&tok->pool_freed);
	}
	pthread_mutex_unlock(&tok->pool_lock);
}

/*
 * read_pin - the user PIN into secmem: from the file @pin_file (one trailing
 * newline dropped; the file must be closed to group and others), else from
 * $ENVELOPEFS_PKCS11_PIN.  Never from a setting or the command line.
 */
static int read_pin(struct p11_token *tok, const char *pin_file, char *err, size_t err_len)
{
	size_t done = 0;
	struct stat sb;
	int fd, rc = 0;

	tok->pin = secmem_alloc(P11_MAX_PIN + 1);
	if (!tok->pin)
		return kms_errf(err, err_len, -ENOMEM, "no locked memory for the PIN");
	if (!pin_file) {
		rc = envsecret_copy(P11_PIN_ENV, (char *)tok->pin, P11_MAX_PIN + 1, &done);
		if (rc == -ENOENT)
			return kms_errf(err, err_len, -EINVAL,
					"no PIN for token '%s': set kms:pin_file to a file holding "
					"it, or the environment variable %s",
					tok->label, P11_PIN_ENV);
		if (rc == -E2BIG)
			return kms_errf(err, err_len, -EINVAL, "%s is longer than %d bytes",
					P11_PIN_ENV, P11_MAX_PIN);
		if (rc < 0)
			return kms_errf(err, err_len, rc, "no locked memory for the PIN");
		tok->pin_len = done;
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
		ssize_t n = read(fd, tok->pin + done, P11_MAX_PIN + 1 - done);

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
	if (done && tok->pin[done - 1] == '\n')
		done--;
	if (done > P11_MAX_PIN)
		return kms_errf(err, err_len, -EINVAL,
				"PIN file %s is longer than %d bytes: is it the right file?",
				pin_file, P11_MAX_PIN);
	if (!done)
		return kms_errf(err, err_len, -EINVAL, "PIN file %s is empty", pin_file);
	tok->pin_len = done;
	return 0;
}

int p11_token_open(const char *module, const char *label, const char *pin_file,
		   unsigned sessions, struct p11_token **out, char *err, size_t err_len)
{
	char pin_source[PATH_MAX + 16], name[24];
	struct p11_token *tok;
	CK_SESSION_HANDLE h;
	CK_RV rv;
	int rc;

	if (!label || !*label || strlen(label) > P11_MAX_TOKEN_LABEL)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:token_label must be the token's label (1 to %d bytes)",
				P11_MAX_TOKEN_LABEL);
	if (sessions < 1 || sessions > P11_MAX_SESSIONS)
		return kms_errf(err, err_len, -EINVAL, "a token wants 1 to %d sessions",
				P11_MAX_SESSIONS);
	tok = calloc(1, sizeof(*tok));
	if (!tok)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	pthread_mutex_init(&tok->pool_lock, NULL);
	pthread_mutex_init(&tok->login_lock, NULL);
	pthread_cond_init(&tok->pool_freed, NULL);
	snprintf(tok->label, sizeof(tok->label), "%s", label);
	tok->max_sessions = sessions;
	snprintf(pin_source, sizeof(pin_source), "%s%s", pin_file ? "PIN file " : "",
		 pin_file ? pin_file : P11_PIN_ENV);

	rc = read_pin(tok, pin_file, err, err_len);
	if (rc == 0)
		rc = module_get(module, &tok->mod, err, err_len);
	if (rc == 0) {
		tok->f = tok->mod->f;
		rc = find_slot(tok, &tok->slot, err, err_len);
	}
	if (rc < 0) {
		p11_token_close(tok);
		return rc;
	}
	/* The first session proves the PIN now, rather than at the first file. */
	rv = p11_session_get(tok, &h);
	if (rv == CKR_OK) {
		p11_session_put(tok, h, rv);
		*out = tok;
		return 0;
	}
	rc = p11_errno(rv);
	if (rc == -EACCES)
		kms_errf(err, err_len, rc, "token '%s' refused the PIN from %s (%s)%s", label,
			 pin_source, p11_rv_name(rv, name),
			 rv == CKR_PIN_LOCKED ? ": the user PIN is locked, the token's security "
						"officer must reset it"
					      : ": check the PIN");
	else
		kms_errf(err, err_len, rc, "cannot log in to token '%s': %s", label,
			 p11_rv_name(rv, name));
	p11_token_close(tok);
	return rc;
}

void p11_token_close(struct p11_token *tok)
{
	if (!tok)
		return;
	/* Every op has returned its session by now: all are idle. */
	while (tok->n_idle)
		tok->f->C_CloseSession(tok->idle[--tok->n_idle]);
	if (tok->mod)
		module_put(tok->mod);
	secmem_free(tok->pin, P11_MAX_PIN + 1);
	pthread_cond_destroy(&tok->pool_freed);
	pthread_mutex_destroy(&tok->pool_lock);
	pthread_mutex_destroy(&tok->login_lock);
	free(tok);
}

CK_FUNCTION_LIST_PTR p11_token_functions(const struct p11_token *tok)
{
	return tok->f;
}

const char *p11_token_label(const struct p11_token *tok)
{
	return tok->label;
}

CK_SLOT_ID p11_token_slot(struct p11_token *tok)
{
	CK_SLOT_ID slot;

	pthread_mutex_lock(&tok->pool_lock);
	slot = tok->slot;
	pthread_mutex_unlock(&tok->pool_lock);
	return slot;
}
