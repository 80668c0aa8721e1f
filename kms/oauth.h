/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_OAUTH_H
#define ENVELOPEFS_KMS_OAUTH_H

/*
 * OAuth 2.0 bearer tokens for the cloud KMS providers (kms/azure.c,
 * kms/gcp.c): a token cache that refreshes before expiry, and the pieces
 * every token request shares (form bodies, the token answer, the token
 * endpoint's errors).
 *
 * The cache holds one token, as the header line "Authorization: Bearer T",
 * in secmem.  A token is used until OAUTH_EXPIRY_MARGIN_MS before it
 * expires; from its refresh time (its lifetime minus a fifth, at most 5
 * minutes before expiry) the next caller fetches a new one while the others
 * keep using the old.  A refresh that fails while the old token is still
 * good keeps the old one and is tried again OAUTH_RETRY_MS later, so a
 * token endpoint that is down for a while costs nothing until the token
 * really runs out.  One fetch runs at a time; callers without a usable token
 * wait for it (until their deadline).  A service that refuses a token (HTTP
 * 401) has it dropped with oauth_reject(), so the next call fetches anew.
 *
 * Nothing here logs; messages name endpoints and the OAuth error code,
 * never a token, a secret or an assertion.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kms/http.h"

/* An access token: Azure AD tokens run to a few kilobytes. */
#define OAUTH_MAX_TOKEN 8192
#define OAUTH_HEADER_PREFIX "Authorization: Bearer "
#define OAUTH_MAX_HEADER (sizeof(OAUTH_HEADER_PREFIX) + OAUTH_MAX_TOKEN)
/* A token this close to its expiry is not sent: the call could outlive it. */
#define OAUTH_EXPIRY_MARGIN_MS 30000
#define OAUTH_RETRY_MS 5000

/*
 * oauth_fetch_fn - get a new access token by @deadline (an http_deadline()
 * time): the token into @token (secmem, @cap bytes, NUL-terminated), its
 * lifetime in seconds into *@expires_in.  0 or a kms.h errno with a message
 * in @err.
 */
typedef int (*oauth_fetch_fn)(void *arg, uint64_t deadline, char *token, size_t cap,
			      int64_t *expires_in, char *err, size_t err_len);

struct oauth_cache {
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* a fetch ended (CLOCK_MONOTONIC, for timed waits) */
	oauth_fetch_fn fetch;
	void *arg;
	char *header;		/* secmem, OAUTH_MAX_HEADER; "" when there is no token */
	uint64_t expires_ms;	/* CLOCK_MONOTONIC ms when the token runs out */
	uint64_t refresh_ms;	/* from then on, the next caller fetches a new one */
	uint64_t gen;		/* bumped with every new token */
	bool fetching;
};

/* oauth_cache_init - an empty cache whose tokens come from @fetch(@arg, ...).  0 or -ENOMEM. */
int oauth_cache_init(struct oauth_cache *c, oauth_fetch_fn fetch, void *arg);
void oauth_cache_destroy(struct oauth_cache *c);

/*
 * oauth_header - a usable "Authorization: Bearer T" line copied into @out
 * (secmem, OAUTH_MAX_HEADER bytes) and its generation in *@gen, fetching a
 * token first if needed, by @deadline.  0, or the fetch's errno and message
 * (-EAGAIN when the deadline passed while another caller fetched).
 */
int oauth_header(struct oauth_cache *c, uint64_t deadline, char *out, uint64_t *gen, char *err,
		 size_t err_len);

/* oauth_reject - the service refused the token of generation @gen: drop it (if still current). */
void oauth_reject(struct oauth_cache *c, uint64_t gen);

/*
 * oauth_form_add - append "&@name=@value" (no '&' first) to the
 * application/x-www-form-urlencoded body @buf (@cap bytes, *@len used,
 * NUL-terminated), percent-encoding all but RFC 3986 unreserved
 * characters.  0 or -ENOSPC (sticky: a body that did not fit stays unusable).
 */
int oauth_form_add(char *buf, size_t cap, size_t *len, const char *name, const char *value);

/*
 * oauth_token_call - one token request: @method ("GET" or "POST" with the
 * form @body) to @url with extra @headers (NULL-terminated, may be NULL),
 * by @deadline.  On 0, the answer's access_token is in @token (secmem,
 * @cap) and its expires_in (a number or, as Azure's managed identity sends
 * it, a numeric string) in *@expires_in.  Errors: -EACCES when the endpoint
 * refused the credentials (400/401/403: invalid_client, invalid_grant, ...),
 * -EAGAIN when it is unreachable or throttling, -EIO for an answer that is
 * not a token; @err names @what (e.g. "Azure AD token endpoint"), @url's
 * host and the OAuth error code.
 */
int oauth_token_call(struct http_client *http, uint64_t deadline, const char *what,
		     const char *method, const char *url, const char *const *headers,
		     const char *body, size_t body_len, char *token, size_t cap,
		     int64_t *expires_in, char *err, size_t err_len);

/*
 * oauth_read_secret_file - the contents of @path (a regular file no group
 * or other may read) into a new secmem buffer *@buf of @cap bytes,
 * NUL-terminated, trailing newlines dropped; *@len its length.  Refuses an
 * empty file, one larger than @cap - 1, and one holding a NUL.  0 or -errno
 * with a message naming @what and @path.
 */
int oauth_read_secret_file(const char *path, const char *what, size_t cap, char **buf,
			   size_t *len, char *err, size_t err_len);

#endif
