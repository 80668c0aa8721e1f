// SPDX-License-Identifier: MIT
/*
 * The shared KMS HTTP client: a pool of libcurl easy handles that keep their
 * connections alive, retries with full-jitter backoff inside a deadline, and
 * a circuit breaker.  See kms/http.h for the contract.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "crypto/random.h"
#include "crypto/secmem.h"
#include "kms/http.h"
#include "kms/keyring.h"
#include "kms/kms.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 2000
#define DEFAULT_ATTEMPT_TIMEOUT_MS 10000
#define DEFAULT_DEADLINE_MS 15000
#define DEFAULT_MAX_ATTEMPTS 4
#define DEFAULT_BACKOFF_BASE_MS 50
#define DEFAULT_BACKOFF_MAX_MS 2000
#define DEFAULT_BREAKER_THRESHOLD 3
#define DEFAULT_BREAKER_COOLDOWN_MS 5000
#define DEFAULT_MAX_RESPONSE (1u << 20)
#define DEFAULT_MAX_IDLE_HANDLES 16
#define FIRST_BODY_CAP 1024

struct http_client {
	struct http_settings set;

	/*
	 * DNS and TLS-session caches shared by all handles, one lock per kind of
	 * data.  Not the connection cache: libcurl does not support sharing
	 * connections between concurrent threads.  Each pooled handle keeps its
	 * own connection alive instead.
	 */
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

	/*
	 * Idle easy handles, used last-in first-out: a call takes the handle
	 * the previous call returned, whose connection is still open.
	 */
	pthread_mutex_t pool_lock;
	CURL **idle;
	unsigned n_idle;

	/* Breaker state, all under breaker_lock. */
	pthread_mutex_t breaker_lock;
	enum http_breaker_state state;
	unsigned consecutive_failures;
	uint64_t opened_at_ms;
	bool reported_down; /* on_state(false) was called and on_state(true) not yet */

	struct http_stats stats; /* counters updated with relaxed atomics */
};

/* What a finished call says about the service, for the breaker. */
enum call_outcome {
	OUTCOME_UP,	 /* an answer arrived (final, or throttled: the service is there) */
	OUTCOME_DOWN,	 /* the last attempt met a fault: unreachable or failing */
	OUTCOME_NEUTRAL, /* a local or TLS failure: says nothing about the service */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void stat_add(uint64_t *counter, uint64_t n)
{
	__atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

static void share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *userp)
{
	struct http_client *c = userp;

	(void)handle;
	(void)access;
	pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *userp)
{
	struct http_client *c = userp;

	(void)handle;
	pthread_mutex_unlock(&c->share_locks[data]);
}

static void apply_defaults(struct http_settings *s)
{
	if (s->connect_timeout_ms <= 0)
		s->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
	if (s->attempt_timeout_ms <= 0)
		s->attempt_timeout_ms = DEFAULT_ATTEMPT_TIMEOUT_MS;
	if (s->deadline_ms <= 0)
		s->deadline_ms = DEFAULT_DEADLINE_MS;
	if (s->max_attempts == 0)
		s->max_attempts = DEFAULT_MAX_ATTEMPTS;
	if (s->backoff_base_ms <= 0)
		s->backoff_base_ms = DEFAULT_BACKOFF_BASE_MS;
	if (s->backoff_max_ms <= 0)
		s->backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
	if (s->breaker_threshold == 0)
		s->breaker_threshold = DEFAULT_BREAKER_THRESHOLD;
	if (s->breaker_cooldown_ms <= 0)
		s->breaker_cooldown_ms = DEFAULT_BREAKER_COOLDOWN_MS;
	if (s->max_response == 0)
		s->max_response = DEFAULT_MAX_RESPONSE;
	if (s->max_idle_handles == 0)
		s->max_idle_handles = DEFAULT_MAX_IDLE_HANDLES;
}

int http_client_new(const struct http_settings *settings, struct http_client **out, char *err,
		    size_t err_len)
{
	struct http_client *c;
	int i;

	if (!settings || !out)
		return kms_errf(err, err_len, -EINVAL, "http_client_new: bad arguments");
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK)
		return kms_errf(err, err_len, -EIO, "libcurl initialisation failed: %s",
			    curl_easy_strerror(curl_init_rc));
	c = calloc(1, sizeof(*c));
	if (!c)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	c->set = *settings;
	apply_defaults(&c->set);
	c->idle = calloc(c->set.max_idle_handles, sizeof(*c->idle));
	c->share = curl_share_init();
	if (!c->idle || !c->share) {
		free(c->idle);
		if (c->share)
			curl_share_cleanup(c->share);
		free(c);
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	}
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
	pthread_mutex_init(&c->breaker_lock, NULL);
	curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	*out = c;
	return 0;
}

void http_client_free(struct http_client *c)
{
	unsigned i;
	int k;

	if (!c)
		return;
	for (i = 0; i < c->n_idle; i++)
		curl_easy_cleanup(c->idle[i]);
	free(c->idle);
	curl_share_cleanup(c->share);
	for (k = 0; k < CURL_LOCK_DATA_LAST; k++)
		pthread_mutex_destroy(&c->share_locks[k]);
	pthread_mutex_destroy(&c->pool_lock);
	pthread_mutex_destroy(&c->breaker_lock);
	free(c);
}

/* ---- easy-handle pool ---- */

static CURL *handle_get(struct http_client *c)
{
	CURL *h = NULL;

	pthread_mutex_lock(&c->pool_lock);
	if (c->n_idle)
		h = c->idle[--c->n_idle];
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		return h;
	h = curl_easy_init();
	if (h && curl_easy_setopt(h, CURLOPT_SHARE, c->share) != CURLE_OK) {
		curl_easy_cleanup(h);
		h = NULL;
	}
	return h;
}

static void handle_put(struct http_client *c, CURL *h)
{
	/* Reset drops our options (headers, credentials) but keeps the handle's live connection. */
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_SHARE, c->share);
	pthread_mutex_lock(&c->pool_lock);
	if (c->n_idle < c->set.max_idle_handles) {
		c->idle[c->n_idle++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		curl_easy_cleanup(h);
}

/* ---- response body in secmem ---- */

struct body_sink {
	struct http_response *resp;
	size_t max;
	bool too_big;
	bool no_memory;
};

void http_response_free(struct http_response *resp)
{
	if (!resp)
		return;
	secmem_free(resp->body, resp->cap);
	resp->body = NULL;
	resp->len = 0;
	resp->cap = 0;
}

static size_t body_write(char *data, size_t size, size_t nmemb, void *userp)
{
	struct body_sink *sink = userp;
	struct http_response *r = sink->resp;
	size_t n = size * nmemb;

	if (n > sink->max || r->len + n > sink->max) {
		sink->too_big = true;
		return 0;
	}
	if (r->len + n + 1 > r->cap) {
		size_t ncap = r->cap ? r->cap : FIRST_BODY_CAP;
		uint8_t *nb;

		while (ncap < r->len + n + 1)
			ncap *= 2;
		/* Grow by copy: the old buffer is wiped by secmem_free, never left behind by realloc. */
		nb = secmem_alloc(ncap);
		if (!nb) {
			sink->no_memory = true;
			return 0;
		}
		if (r->len)
			memcpy(nb, r->body, r->len);
		secmem_free(r->body, r->cap);
		r->body = nb;
		r->cap = ncap;
	}
	memcpy(r->body + r->len, data, n);
	r->len += n;
	r->body[r->len] = '\0';
	return n;
}

/* ---- breaker ---- */

/* breaker_admit - may a call start?  *@probe is set for the one call let through after a cool-down. */
static bool breaker_admit(struct http_client *c, bool *probe)
{
	bool ok = true;

	*probe = false;
	pthread_mutex_lock(&c->breaker_lock);
	if (c->state == HTTP_BREAKER_OPEN) {
		if (now_ms() - c->opened_at_ms >= (uint64_t)c->set.breaker_cooldown_ms) {
			c->state = HTTP_BREAKER_HALF_OPEN;
			*probe = true;
		} else {
			ok = false;
		}
	} else if (c->state == HTTP_BREAKER_HALF_OPEN) {
		ok = false; /* the probe decides; everyone else fails fast meanwhile */
	}
	pthread_mutex_unlock(&c->breaker_lock);
	return ok;
}

static void breaker_record(struct http_client *c, bool probe, enum call_outcome outcome)
{
	pthread_mutex_lock(&c->breaker_lock);
	if (outcome == OUTCOME_UP) {
		c->consecutive_failures = 0;
		c->state = HTTP_BREAKER_CLOSED;
		if (c->reported_down) {
			c->reported_down = false;
			if (c->set.on_state)
				c->set.on_state(c->set.state_arg, true);
		}
	} else if (probe && c->state == HTTP_BREAKER_HALF_OPEN) {
		/* The probe failed (or proved nothing): another full cool-down. */
		c->state = HTTP_BREAKER_OPEN;
		c->opened_at_ms = now_ms();
	} else if (outcome == OUTCOME_DOWN) {
		c->consecutive_failures++;
		if (c->state == HTTP_BREAKER_CLOSED &&
		    c->consecutive_failures >= c->set.breaker_threshold) {
			c->state = HTTP_BREAKER_OPEN;
			c->opened_at_ms = now_ms();
			stat_add(&c->stats.breaker_opens, 1);
			if (!c->reported_down) {
				c->reported_down = true;
				if (c->set.on_state)
					c->set.on_state(c->set.state_arg, false);
			}
		}
	}
	pthread_mutex_unlock(&c->breaker_lock);
}

/* ---- one attempt ---- */

static enum http_verdict default_classify(void *arg, const struct http_response *resp)
{
	(void)arg;
	if (resp->status == 429)
		return HTTP_THROTTLED;
	if (resp->status == 500 || resp->status == 502 || resp->status == 503 ||
	    resp->status == 504)
		return HTTP_FAULT;
	return HTTP_FINAL;
}

/* Network faults that another attempt may not meet. */
static bool curl_retryable(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static bool curl_tls_verify_failure(CURLcode cc)
{
	return cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE ||
	       cc == CURLE_SSL_CERTPROBLEM || cc == CURLE_SSL_ISSUER_ERROR ||
	       cc == CURLE_SSL_PINNEDPUBKEYNOTMATCH || cc == CURLE_SSL_CRL_BADFILE;
}

static CURLcode setup_attempt(struct http_client *c, CURL *h, const struct http_request *req,
			      struct curl_slist *headers, struct body_sink *sink, char *curl_err,
			      long timeout_ms)
{
	const struct http_settings *s = &c->set;
	long connect_ms = s->connect_timeout_ms < timeout_ms ? s->connect_timeout_ms : timeout_ms;
	CURLcode cc = CURLE_OK;

#define SET(opt, val)                                          \
	do {                                                   \
		if (cc == CURLE_OK)                            \
			cc = curl_easy_setopt(h, opt, val);    \
	} while (0)
	SET(CURLOPT_URL, req->url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS timeouts */
	SET(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	SET(CURLOPT_TIMEOUT_MS, timeout_ms);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_SSL_VERIFYPEER, s->insecure ? 0L : 1L);
	SET(CURLOPT_SSL_VERIFYHOST, s->insecure ? 0L : 2L);
	if (s->ca_file)
		SET(CURLOPT_CAINFO, s->ca_file);
	if (s->ca_dir)
		SET(CURLOPT_CAPATH, s->ca_dir);
	if (headers)
		SET(CURLOPT_HTTPHEADER, headers);
	if (strcmp(req->method, "GET") == 0) {
		SET(CURLOPT_HTTPGET, 1L);
	} else {
		if (strcmp(req->method, "POST") != 0)
			SET(CURLOPT_CUSTOMREQUEST, req->method);
		/* POSTFIELDS, not a read callback: SigV4 must hash the real body. */
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		SET(CURLOPT_POSTFIELDS, req->body ? (const char *)req->body : "");
	}
	if (req->aws_sigv4)
		SET(CURLOPT_AWS_SIGV4, req->aws_sigv4);
	if (req->userpwd)
		SET(CURLOPT_USERPWD, req->userpwd);
	SET(CURLOPT_WRITEFUNCTION, body_write);
	SET(CURLOPT_WRITEDATA, sink);
	SET(CURLOPT_ERRORBUFFER, curl_err);
#undef SET
	return cc;
}

/*
 * free_headers - wipe, then free, our copy of the request headers: they may
 * hold a token (X-Vault-Token, X-Amz-Security-Token), and curl_slist_append()
 * copied them onto the ordinary heap.
 */
static void free_headers(struct curl_slist *list)
{
	struct curl_slist *n;

	for (n = list; n; n = n->next)
		secmem_wipe(n->data, strlen(n->data));
	curl_slist_free_all(list);
}

static struct curl_slist *build_headers(const char *const *lines, bool *failed)
{
	struct curl_slist *list = NULL, *n;

	*failed = false;
	for (; lines && *lines; lines++) {
		n = curl_slist_append(list, *lines);
		if (!n) {
			free_headers(list);
			*failed = true;
			return NULL;
		}
		list = n;
	}
	return list;
}

/*
 * retry_after - the wait a retryable answer on @h asks for (Retry-After, in
 * seconds or as an HTTP date; RFC 9110 section 10.2.3), in ms; 0 for none.
 * A day at most: any wait that long ends the call at its deadline anyway.
 */
static uint64_t retry_after(CURL *h)
{
	curl_off_t seconds = 0;

	if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &seconds) != CURLE_OK || seconds <= 0)
		return 0;
	return (uint64_t)(seconds < 86400 ? seconds : 86400) * 1000;
}

/* backoff_ms - full jitter: uniform in [0, min(max, base * 2^(attempt-1))]. */
static uint64_t backoff_ms(const struct http_settings *s, unsigned attempt)
{
	uint64_t cap = (uint64_t)s->backoff_base_ms;
	uint32_t r = 0;
	unsigned i;

	for (i = 1; i < attempt && cap < (uint64_t)s->backoff_max_ms; i++)
		cap *= 2;
	if (cap > (uint64_t)s->backoff_max_ms)
		cap = (uint64_t)s->backoff_max_ms;
	if (crypto_random(&r, sizeof(r)) < 0)
		return cap / 2;
	return (uint64_t)r % (cap + 1);
}

int http_request(struct http_client *c, const struct http_request *req,
		 struct http_response *resp, char *err, size_t err_len)
{
	const struct http_settings *s;
	uint64_t start_us = now_us(), start = now_ms(), deadline;
	char curl_err[CURL_ERROR_SIZE];
	enum call_outcome outcome = OUTCOME_NEUTRAL;
	struct curl_slist *headers;
	struct body_sink sink;
	unsigned attempt, faults = 0;
	bool probe, failed;
	/* The operation's earlier calls left this one less than its own deadline. */
	bool shared_cut = false;
	CURL *h;
	int rc = -EIO;

	if (!c || !req || !req->url || !req->method || !resp)
		return kms_errf(err, err_len, -EINVAL, "http_request: bad arguments");
	s = &c->set;
	resp->status = 0;
	resp->body = NULL;
	resp->len = 0;
	resp->cap = 0;
	stat_add(&c->stats.calls, 1);
	deadline = start + (uint64_t)s->deadline_ms;
	if (req->deadline_at_ms && req->deadline_at_ms < deadline) {
		deadline = req->deadline_at_ms;
		shared_cut = true;
	}
	/* The operation's earlier calls used up its time: nothing was asked, nothing learnt. */
	if (deadline <= start) {
		stat_add(&c->stats.failures, 1);
		return kms_errf(err, err_len, -EAGAIN, "%s %s: the operation's deadline has passed",
				req->method, req->url);
	}
	if (!breaker_admit(c, &probe)) {
		stat_add(&c->stats.fast_fails, 1);
		stat_add(&c->stats.failures, 1);
		return kms_errf(err, err_len, -EAGAIN,
			    "%s %s: service marked unreachable, not trying until the cool-down ends",
			    req->method, req->url);
	}
	headers = build_headers(req->headers, &failed);
	h = failed ? NULL : handle_get(c);
	if (!h) {
		free_headers(headers);
		breaker_record(c, probe, OUTCOME_NEUTRAL);
		stat_add(&c->stats.failures, 1);
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	}
	for (attempt = 1;; attempt++) {
		uint64_t now = now_ms();
		long remaining = now < deadline ? (long)(deadline - now) : 0;
		long timeout = s->attempt_timeout_ms < remaining ? s->attempt_timeout_ms : remaining;
		bool throttled = false;
		uint64_t retry_after_ms = 0;
		CURLcode cc;

		http_response_free(resp);
		resp->status = 0;
		memset(&sink, 0, sizeof(sink));
		sink.resp = resp;
		sink.max = s->max_response;
		curl_err[0] = '\0';
		stat_add(&c->stats.attempts, 1);
		if (attempt > 1)
			stat_add(&c->stats.retries, 1);
		cc = setup_attempt(c, h, req, headers, &sink, curl_err, timeout > 0 ? timeout : 1);
		if (cc == CURLE_OK)
			cc = curl_easy_perform(h);
		if (cc == CURLE_OK) {
			enum http_verdict verdict;

			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
			verdict = (s->classify ? s->classify : default_classify)(s->classify_arg,
										   resp);
			if (verdict == HTTP_FINAL) {
				outcome = OUTCOME_UP;
				rc = 0;
				break;
			}
			throttled = verdict == HTTP_THROTTLED;
			if (throttled)
				stat_add(&c->stats.throttled, 1);
			retry_after_ms = retry_after(h);
			rc = kms_errf(err, err_len, -EAGAIN, "%s %s: HTTP %ld (%s) after %u attempt%s",
				  req->method, req->url, resp->status,
				  throttled ? "throttled" : "retryable", attempt, attempt > 1 ? "s" : "");
		} else if (sink.too_big) {
			outcome = OUTCOME_UP;
			rc = kms_errf(err, err_len, -EMSGSIZE, "%s %s: response larger than %zu bytes",
				  req->method, req->url, s->max_response);
			break;
		} else if (sink.no_memory) {
			rc = kms_errf(err, err_len, -ENOMEM, "%s %s: out of locked memory for the response",
				  req->method, req->url);
			break;
		} else if (curl_tls_verify_failure(cc)) {
			rc = kms_errf(err, err_len, -EPROTO,
				  "%s %s: TLS verification failed: %s (set a CA file that signs the "
				  "server's certificate)",
				  req->method, req->url, curl_err[0] ? curl_err : curl_easy_strerror(cc));
			break;
		} else if (cc == CURLE_OPERATION_TIMEDOUT && timeout < s->attempt_timeout_ms &&
			   (attempt > 1 || shared_cut)) {
			/*
			 * The deadline cut this attempt short: it says nothing new about
			 * the service.  The call ends with what the attempt before met
			 * (rc and outcome are still its), so a throttled call stays
			 * throttling and is not taken for an outage.  A first attempt
			 * cut short by the time the operation's earlier calls took
			 * leaves the breaker as it was.  (A first attempt cut by the
			 * call's own deadline, set below the attempt timeout, is a
			 * fault: otherwise a service that never answers would never
			 * open the breaker.)
			 */
			if (attempt == 1)
				rc = kms_errf(err, err_len, -EAGAIN,
					      "%s %s: no answer before the operation's deadline",
					      req->method, req->url);
			http_response_free(resp);
			resp->status = 0;
			break;
		} else if (curl_retryable(cc)) {
			rc = kms_errf(err, err_len, -EAGAIN, "%s %s: %s after %u attempt%s", req->method,
				  req->url, curl_err[0] ? curl_err : curl_easy_strerror(cc), attempt,
				  attempt > 1 ? "s" : "");
		} else {
			rc = kms_errf(err, err_len,
				  cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL ? -EINVAL
												 : -EIO,
				  "%s %s: %s", req->method, req->url,
				  curl_err[0] ? curl_err : curl_easy_strerror(cc));
			break;
		}
		/*
		 * Retryable.  A throttled answer proves the service up, so it never
		 * counts toward the breaker nor toward max_attempts: only the
		 * deadline ends a throttled call.  A probe makes one attempt; others
		 * back off within the deadline.
		 */
		outcome = throttled ? OUTCOME_UP : OUTCOME_DOWN;
		faults += !throttled;
		if (probe || faults >= s->max_attempts)
			break;
		{
			/* A service that says when to come back is not asked before; the
			 * jitter on top keeps its clients from all coming back at once. */
			uint64_t wait = retry_after_ms + backoff_ms(s, attempt);

			now = now_ms();
			if (now + wait >= deadline) {
				if (retry_after_ms)
					rc = kms_errf(err, err_len, -EAGAIN,
						      "%s %s: HTTP %ld, and the service asks to be "
						      "retried in %llu s, past the deadline",
						      req->method, req->url, resp->status,
						      (unsigned long long)(retry_after_ms / 1000));
				break;
			}
			sleep_ms(wait);
		}
	}
	handle_put(c, h);
	free_headers(headers);
	breaker_record(c, probe, outcome);
	if (rc < 0 || resp->status >= 400)
		stat_add(&c->stats.failures, 1);
	stat_add(&c->stats.latency_us, now_us() - start_us);
	return rc;
}

uint64_t http_deadline(const struct http_client *c)
{
	return now_ms() + (uint64_t)c->set.deadline_ms;
}

void http_client_stats(struct http_client *c, struct http_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!c)
		return;
	st->calls = __atomic_load_n(&c->stats.calls, __ATOMIC_RELAXED);
	st->attempts = __atomic_load_n(&c->stats.attempts, __ATOMIC_RELAXED);
	st->retries = __atomic_load_n(&c->stats.retries, __ATOMIC_RELAXED);
	st->failures = __atomic_load_n(&c->stats.failures, __ATOMIC_RELAXED);
	st->throttled = __atomic_load_n(&c->stats.throttled, __ATOMIC_RELAXED);
	st->fast_fails = __atomic_load_n(&c->stats.fast_fails, __ATOMIC_RELAXED);
	st->latency_us = __atomic_load_n(&c->stats.latency_us, __ATOMIC_RELAXED);
	st->breaker_opens = __atomic_load_n(&c->stats.breaker_opens, __ATOMIC_RELAXED);
	pthread_mutex_lock(&c->breaker_lock);
	st->breaker = c->state;
	pthread_mutex_unlock(&c->breaker_lock);
}

void http_client_kms_stats(struct http_client *c, struct kms_remote_stats *out)
{
	struct http_stats st;

	http_client_stats(c, &st);
	out->remote = true;
	out->calls = st.calls;
	out->retries = st.retries;
	out->failures = st.failures;
	out->throttled = st.throttled;
	out->latency_us = st.latency_us;
	out->breaker_opens = st.breaker_opens;
	out->breaker = http_breaker_state_name(st.breaker);
}

bool http_url_private(const char *url)
{
	char host[64];
	struct in_addr v4;
	size_t n;

	if (strncasecmp(url, "https://", 8) == 0)
		return true;
	if (strncasecmp(url, "http://", 7) != 0)
		return false;
	url += 7;
	n = url[0] == '[' ? strcspn(url, "]") + 1 : strcspn(url, ":/");
	if (n >= sizeof(host) || (url[0] == '[' && url[n - 1] != ']'))
		return false;
	memcpy(host, url, n);
	host[n] = '\0';
	if (url[n] != '\0' && url[n] != ':' && url[n] != '/')
		return false;
	if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0)
		return true;
	return inet_pton(AF_INET, host, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

const char *http_breaker_state_name(enum http_breaker_state state)
{
	switch (state) {
	case HTTP_BREAKER_CLOSED:
		return "closed";
	case HTTP_BREAKER_OPEN:
		return "open";
	case HTTP_BREAKER_HALF_OPEN:
		return "half-open";
	}
	return "unknown";
}
