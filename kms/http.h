/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_HTTP_H
#define ENVELOPEFS_KMS_HTTP_H

/*
 * The HTTP client shared by the remote KMS providers (libcurl underneath).
 *
 * One struct http_client per provider instance.  It is thread-safe: any
 * number of threads may call http_request() at once.
 *
 * Transport:
 *  - TLS peer and host verification are always on unless the caller sets
 *    @insecure explicitly; @ca_file / @ca_dir replace the system CA store.
 *  - Connections are kept alive and reused across calls and threads: every
 *    request runs on an easy handle taken from a last-in first-out pool, and
 *    each handle keeps its connection open for the next call that takes it
 *    (so N concurrent callers use at most N connections).  The handles share
 *    a DNS cache and a TLS session cache (a curl share handle, locked per
 *    data kind); libcurl does not support a connection cache shared between
 *    threads.
 *  - Each attempt is bounded by @connect_timeout_ms and @attempt_timeout_ms,
 *    and the whole call (all attempts and waits) by @deadline_ms: a call never
 *    takes much longer than its deadline, whatever the peer does.  An
 *    operation made of several calls gives them all one deadline
 *    (http_request.deadline_at_ms), so it too ends within @deadline_ms.
 *
 * Retries: an attempt that got no HTTP response because of a network fault
 * (refused, reset, timed out, DNS) is retried; an attempt that got a response
 * is retried only if @classify says so (the default: 429 is throttling; 500,
 * 502, 503 and 504 are service faults; AWS signals throttling with HTTP 400,
 * so its provider passes its own).  TLS verification failures and bad URLs
 * are never retried.  Waits are exponential backoff with full jitter:
 * random(0, min(@backoff_max_ms, @backoff_base_ms << (attempt-1))),
 * cut short by the deadline.  An answer with Retry-After (seconds or an HTTP
 * date) is not retried before that wait has passed (the jitter comes on
 * top); when the wait would pass the deadline the call ends at once.
 * Faults get at most @max_attempts attempts;
 * throttled answers are retried until the deadline (a service asking us to
 * slow down is up, and the backoff slows us down), and counted in
 * http_stats.throttled.
 *
 * Circuit breaker: a call whose last attempt met a fault (service down or
 * failing) is a breaker failure; any other outcome, including a 4xx or a
 * throttled answer, proves the service up and is a success.  A call whose
 * first attempt the operation's shared deadline cut short learnt nothing
 * and is neither.  After
 * @breaker_threshold consecutive failures the breaker opens: calls fail at
 * once with -EAGAIN for @breaker_cooldown_ms, then exactly one call (the
 * probe, one attempt, no retries) goes through while others keep failing
 * fast; its success closes the breaker, its failure re-opens it for another
 * cool-down.  @on_state is called once when the breaker opens ("KMS
 * unreachable") and once when it closes again ("KMS reachable again"), never
 * for the probe's intermediate state, so the daemon logs each edge exactly
 * once.  It runs in the calling thread under the breaker's lock: it must be
 * quick and must not call back into this client.
 *
 * Secrets: response bodies may hold a plaintext DEK, so they are kept in
 * secmem (locked, wiped with OPENSSL_cleanse when grown or freed).  The list
 * of request headers we hand to curl (it may hold a token) is wiped before it
 * is freed.  libcurl's own receive buffers, and its internal copies of the
 * request and of @userpwd, live on the ordinary heap and are not wiped by
 * curl; we cannot control them (this is why the daemon process is made
 * non-dumpable).  Nothing in
 * this module logs; error messages name the URL's host and the failure,
 * never headers, bodies, tokens or keys.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum http_breaker_state {
	HTTP_BREAKER_CLOSED,	/* service believed up */
	HTTP_BREAKER_OPEN,	/* failing fast until the cool-down ends */
	HTTP_BREAKER_HALF_OPEN, /* one probe in flight */
};

struct http_response {
	long status;	/* HTTP status of the last attempt; 0 if none arrived */
	uint8_t *body;	/* NUL-terminated (not counted in @len); secmem; NULL when empty */
	size_t len;
	size_t cap;	/* allocation size of @body, for secmem_free */
};

/* What an answered attempt means (the classifier's verdict). */
enum http_verdict {
	HTTP_FINAL,	/* the answer stands, whatever its status */
	HTTP_FAULT,	/* the service failed (5xx): retry, and count it against the breaker */
	HTTP_THROTTLED,	/* the service asks us to slow down: retry, never an outage */
};

/*
 * http_classify_fn - the verdict on the response in @resp (a complete HTTP
 * answer, body included).  Called for every answered attempt.
 */
typedef enum http_verdict (*http_classify_fn)(void *arg, const struct http_response *resp);

/* http_state_fn - the breaker opened (@up false) or closed again (@up true). */
typedef void (*http_state_fn)(void *arg, bool up);

/* Settings; zero means "default" for every number (see http_client_new). */
struct http_settings {
	const char *ca_file;	/* PEM bundle replacing the system store; NULL: system */
	const char *ca_dir;	/* hashed CA directory; NULL: system */
	bool insecure;		/* skip TLS verification: only when explicitly configured */
	long connect_timeout_ms;	/* default 2000 */
	long attempt_timeout_ms;	/* default 10000 */
	long deadline_ms;		/* default 15000: the whole call */
	unsigned max_attempts;		/* default 4 */
	long backoff_base_ms;		/* default 50 */
	long backoff_max_ms;		/* default 2000 */
	unsigned breaker_threshold;	/* default 3 consecutive failed calls */
	long breaker_cooldown_ms;	/* default 5000 */
	size_t max_response;		/* default 1 MiB; larger bodies fail the call with -EMSGSIZE */
	unsigned max_idle_handles;	/* default 16 pooled easy handles */
	http_classify_fn classify;	/* NULL: 429 throttled; 500, 502, 503, 504 faults */
	void *classify_arg;
	http_state_fn on_state;		/* NULL: none */
	void *state_arg;
};

struct http_request {
	const char *method;	/* "GET" or "POST" */
	const char *url;
	const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
	/*
	 * POST body, sent with CURLOPT_POSTFIELDS (so SigV4 hashes it; a read
	 * callback would be signed as an empty body).  May be NULL for GET.
	 */
	const void *body;
	size_t body_len;
	/* SigV4 by libcurl: e.g. "aws:amz:us-east-1:kms"; NULL for none. */
	const char *aws_sigv4;
	/* "ACCESS_KEY_ID:SECRET" for SigV4; NULL for none.  Never logged. */
	const char *userpwd;
	/*
	 * When the call must be over at the latest: a CLOCK_MONOTONIC time in
	 * milliseconds from http_deadline(), shared by every call of one
	 * operation that needs several (a version lookup, then the call), so the
	 * operation as a whole keeps the deadline.  0: @deadline_ms from now.
	 */
	uint64_t deadline_at_ms;
};

/* Counters, monotonic except @breaker. */
struct http_stats {
	uint64_t calls;		/* http_request() calls */
	uint64_t attempts;	/* HTTP exchanges started (calls + retries + probes) */
	uint64_t retries;	/* attempts after the first within a call */
	uint64_t failures;	/* calls that returned an error or an HTTP status >= 400 */
	uint64_t throttled;	/* attempts answered with throttling */
	uint64_t fast_fails;	/* calls refused at once by the open breaker */
	uint64_t latency_us;	/* total wall time of all calls */
	uint64_t breaker_opens;	/* times the breaker opened from closed */
	enum http_breaker_state breaker;
};

struct http_client;

/*
 * http_client_new - a client with @settings (copied; strings must outlive
 * the client).  Returns 0 and *@out or -errno (-ENOMEM, -EINVAL for
 * unusable settings, with a message in @err).
 */
int http_client_new(const struct http_settings *settings, struct http_client **out, char *err,
		    size_t err_len);

/* http_client_free - close connections and free (NULL is a no-op); no call may be running. */
void http_client_free(struct http_client *client);

/*
 * http_request - perform @req with retries, deadline and breaker.
 * Returns 0 when a final HTTP answer arrived (any status: check
 * @resp->status), with the body in @resp (free it with
 * http_response_free even on error); or
 *   -EAGAIN     service unavailable or throttling: breaker open, retries or
 *               deadline exhausted on retryable faults or throttled answers
 *               (@resp holds the last answer, if any)
 *   -EMSGSIZE   the body was larger than max_response
 *   -EPROTO     TLS or certificate verification failed
 *   -EINVAL     bad request (method, URL)
 *   -ENOMEM, -EIO
 * with a message in @err (no secrets).
 */
int http_request(struct http_client *client, const struct http_request *req,
		 struct http_response *resp, char *err, size_t err_len);

/*
 * http_deadline - the deadline_at_ms of an operation starting now: the
 * client's @deadline_ms from now.
 */
uint64_t http_deadline(const struct http_client *client);

/* http_response_free - wipe and free the body; @resp can be reused. */
void http_response_free(struct http_response *resp);

/* http_client_stats - a snapshot of the counters. */
void http_client_stats(struct http_client *client, struct http_stats *stats);

/* http_client_kms_stats - the counters as struct kms_remote_stats, for a provider's remote_stats op. */
struct kms_remote_stats;
void http_client_kms_stats(struct http_client *client, struct kms_remote_stats *out);

/*
 * http_url_private - may @url carry secrets: https://, or plain http:// to
 * this host only (127.0.0.0/8, [::1], localhost: test servers, a local
 * agent)?  A KMS answer holds a plaintext DEK and the request a token, so a
 * provider refuses cleartext HTTP across a network.
 */
bool http_url_private(const char *url);

/* http_breaker_state_name - "closed", "open", "half-open". */
const char *http_breaker_state_name(enum http_breaker_state state);

#endif
