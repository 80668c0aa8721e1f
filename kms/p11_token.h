/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_P11_TOKEN_H
#define ENVELOPEFS_KMS_P11_TOKEN_H

/*
 * A logged-in connection to one PKCS#11 token, for the pkcs11 provider
 * (kms/pkcs11.c): the module loaded and initialised once per process, the
 * token's slot found by its label, the user PIN, and a pool of sessions.
 *
 * Why a pool: every kms op may be called from many daemon threads at once,
 * and a PKCS#11 session carries at most one active operation (C_EncryptInit
 * then C_Encrypt), so two threads on one session would corrupt each other's
 * operation; the standard lets one thread use a session at a time.  So each
 * op borrows a session of its own (opened on demand up to the pool size,
 * waiting while all are busy), and the module is initialised with
 * CKF_OS_LOCKING_OK, which lets threads call it on different sessions at once.
 *
 * Recovery: a session lost to a token reset, a removed token or a logout is
 * closed together with every idle one (they share its fate); the next borrow
 * opens a fresh session, finds the token again by label if its slot is gone
 * (SoftHSM2 renumbers slots), and logs in again.  That is why the PIN stays
 * in secmem until p11_token_close(), instead of being wiped after the first
 * login.  A PIN the token refuses is never offered again (retries from every
 * thread would lock it on a real HSM): every later borrow fails with
 * CKR_PIN_INCORRECT until the volume is mounted again.  Nothing here logs,
 * and no message contains the PIN.
 */

#include <p11-kit/pkcs11.h>
#include <stdbool.h>
#include <stddef.h>

#define P11_PIN_ENV "ENVELOPEFS_PKCS11_PIN"
#define P11_MAX_PIN 256
#define P11_MAX_SESSIONS 64
#define P11_MAX_TOKEN_LABEL 32

struct p11_token;

/*
 * p11_token_open - load @module (an absolute path; refused unless it and the
 * directories above it are root's (or ours) and writable by no one else: it
 * runs inside the daemon), find the one token labelled @label, read the user
 * PIN from @pin_file (NULL: from $ENVELOPEFS_PKCS11_PIN), log in, and keep up
 * to @sessions (1 .. P11_MAX_SESSIONS) sessions.  Returns 0 and *@out, or a kms.h errno with a
 * message in @err: -EACCES for a refused PIN or an unsafe file, -ENOENT for
 * no such token, -EINVAL for bad settings, -EAGAIN for a token not ready.
 */
int p11_token_open(const char *module, const char *label, const char *pin_file,
		   unsigned sessions, struct p11_token **out, char *err, size_t err_len);

/* p11_token_close - close every session, release the module, wipe the PIN (NULL is a no-op). */
void p11_token_close(struct p11_token *tok);

/* p11_token_functions - the module's function list, for the caller's own calls on borrowed sessions. */
CK_FUNCTION_LIST_PTR p11_token_functions(const struct p11_token *tok);

/* p11_token_label - the token's label, as configured. */
const char *p11_token_label(const struct p11_token *tok);

/* p11_token_slot - the token's slot now (it may change when the token comes back). */
CK_SLOT_ID p11_token_slot(struct p11_token *tok);

/*
 * p11_session_get - borrow a logged-in session for one thread's use; waits
 * while all are busy.  Returns CKR_OK and *@h, or why no session could be
 * opened.  Every session got must be put back with p11_session_put().
 */
CK_RV p11_session_get(struct p11_token *tok, CK_SESSION_HANDLE *h);

/* p11_session_put - give @h back after an operation that ended with @rv (see p11_session_lost). */
void p11_session_put(struct p11_token *tok, CK_SESSION_HANDLE h, CK_RV rv);

/*
 * p11_session_lost - @rv says the session can no longer be used (and, for a
 * token event, neither can our others): it is closed, not pooled again, and
 * the operation is worth one retry on a fresh session.
 */
bool p11_session_lost(CK_RV rv);

/* p11_errno - the kms.h errno for @rv (-EACCES, -EBADMSG, -ENOENT, -EAGAIN, -EINVAL, -EIO). */
int p11_errno(CK_RV rv);

/* p11_rv_name - "CKR_PIN_INCORRECT" and the like for messages, or "CKR 0x..." in @buf. */
const char *p11_rv_name(CK_RV rv, char buf[24]);

#endif
