// SPDX-License-Identifier: MIT
/* OAuth 2.0 bearer tokens for the cloud KMS providers (kms/oauth.h). */

#include "kms/oauth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "kms/config.h"
#include "kms/json.h"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int oauth_cache_init(struct oauth_cache *c, oauth_fetch_fn fetch, void *arg)
{
	pthread_condattr_t attr;

	memset(c, 0, sizeof(*c));
	c->header = secmem_alloc(OAUTH_MAX_HEADER);
	if (!c->header)
		return -ENOMEM;
	c->header[0] = '\0';
	c->fetch = fetch;
	c->arg = arg;
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &attr);
	pthread_condattr_destroy(&attr);
	return 0;
}

void oauth_cache_destroy(struct oauth_cache *c)
{
	if (!c->header)
		return;
	secmem_free(c->header, OAUTH_MAX_HEADER);
	c->header = NULL;
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
}

/* usable - the cached token may be sent now (caller holds the lock). */
static bool usable(const struct oauth_cache *c, uint64_t now)
{
	return c->header[0] && now + OAUTH_EXPIRY_MARGIN_MS < c->expires_ms;
}

/* install - @token becomes the cached token, valid @expires_in seconds from @now (lock held). */
static void install(struct oauth_cache *c, const char *token, int64_t expires_in, uint64_t now)
{
	uint64_t life = (uint64_t)(expires_in > 0 ? expires_in : 0) * 1000u;
	uint64_t early = life / 5 < 300000 ? life / 5 : 300000;

	snprintf(c->header, OAUTH_MAX_HEADER, "%s%s", OAUTH_HEADER_PREFIX, token);
	c->expires_ms = now + life;
	c->refresh_ms = c->expires_ms - early;
	c->gen++;
}

int oauth_header(struct oauth_cache *c, uint64_t deadline, char *out, uint64_t *gen, char *err,
		 size_t err_len)
{
	char *token = NULL;
	int64_t expires_in = 0;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		uint64_t now = now_ms();

		if (usable(c, now) && (now < c->refresh_ms || c->fetching))
			break;
		if (c->fetching) {
			/* No usable token: wait for the fetch in flight. */
			struct timespec until = { .tv_sec = (time_t)(deadline / 1000),
						  .tv_nsec = (long)(deadline % 1000) * 1000000 };

			if (now >= deadline) {
				rc = kms_errf(err, err_len, -EAGAIN,
					      "no access token before the deadline");
				break;
			}
			pthread_cond_timedwait(&c->cond, &c->lock, &until);
			continue;
		}
		c->fetching = true;
		pthread_mutex_unlock(&c->lock);
		if (!token)
			token = secmem_alloc(OAUTH_MAX_TOKEN + 1);
		rc = token ? c->fetch(c->arg, deadline, token, OAUTH_MAX_TOKEN + 1, &expires_in, err,
				      err_len)
			   : kms_errf(err, err_len, -ENOMEM, "out of locked memory");
		pthread_mutex_lock(&c->lock);
		c->fetching = false;
		pthread_cond_broadcast(&c->cond);
		now = now_ms();
		if (rc == 0) {
			install(c, token, expires_in, now);
			continue;
		}
		if (!usable(c, now))
			break;
		/* The old token still works: use it, and let the endpoint rest a while. */
		c->refresh_ms = now + OAUTH_RETRY_MS;
		rc = 0;
	}
	if (rc == 0) {
		memcpy(out, c->header, strlen(c->header) + 1);
		*gen = c->gen;
	}
	pthread_mutex_unlock(&c->lock);
	if (token)
		secmem_free(token, OAUTH_MAX_TOKEN + 1);
	return rc;
}

void oauth_reject(struct oauth_cache *c, uint64_t gen)
{
	pthread_mutex_lock(&c->lock);
	if (c->gen == gen)
		secmem_wipe(c->header, OAUTH_MAX_HEADER);
	pthread_mutex_unlock(&c->lock);
}

/* ---- token requests ---- */

static bool unreserved(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

int oauth_form_add(char *buf, size_t cap, size_t *len, const char *name, const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *parts[2] = { name, value };
	size_t n = *len;
	int i;

	if (n >= cap)
		return -ENOSPC;
	if (n > 0 && n + 1 < cap)
		buf[n++] = '&';
	for (i = 0; i < 2; i++) {
		const unsigned char *p;

		for (p = (const unsigned char *)parts[i]; *p && n + 3 < cap; p++) {
			if (unreserved(*p)) {
				buf[n++] = (char)*p;
			} else {
				buf[n++] = '%';
				buf[n++] = hex[*p >> 4];
				buf[n++] = hex[*p & 15];
			}
		}
		if (*p || n + 1 >= cap) {
			*len = cap; /* sticky: nothing more may be added */
			return -ENOSPC;
		}
		if (i == 0)
			buf[n++] = '=';
	}
	buf[n] = '\0';
	*len = n;
	return 0;
}

/* host_of - scheme://HOST[:port] of @url into @out, for messages. */
static void host_of(const char *url, char *out, size_t cap)
{
	const char *start = strstr(url, "://");
	size_t n;

	start = start ? start + 3 : url;
	n = strcspn(start, "/?#");
	snprintf(out, cap, "%.*s", (int)n, start);
}

/* token_ok - an access token we may put in a header line: visible ASCII, no spaces. */
static bool token_ok(const char *t, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (t[i] < 0x21 || t[i] > 0x7e)
			return false;
	return len > 0;
}

/* expires_in_of - expires_in as a number, or as the numeric string Azure IMDS sends. */
static int expires_in_of(const struct json_doc *doc, int64_t *out)
{
	char text[24], *end;
	long long v;

	if (json_get_int(doc, "expires_in", out) == 0)
		return *out > 0 ? 0 : -EPROTO;
	if (json_get_string(doc, "expires_in", text, sizeof(text), NULL) < 0)
		return -EPROTO;
	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno || end == text || *end || v <= 0)
		return -EPROTO;
	*out = v;
	return 0;
}

int oauth_token_call(struct http_client *http, uint64_t deadline, const char *what,
		     const char *method, const char *url, const char *const *headers,
		     const char *body, size_t body_len, char *token, size_t cap,
		     int64_t *expires_in, char *err, size_t err_len)
{
	const char *all[8];
	struct http_request req = { .method = method, .url = url, .headers = all, .body = body,
				    .body_len = body_len, .deadline_at_ms = deadline };
	struct http_response resp = { 0 };
	struct json_doc *doc = NULL;
	char host[256], code[64] = "", http_err[256];
	size_t n = 0, len = 0;
	int rc;

	host_of(url, host, sizeof(host));
	if (body)
		all[n++] = "Content-Type: application/x-www-form-urlencoded";
	all[n++] = "Accept: application/json";
	while (headers && *headers && n < sizeof(all) / sizeof(all[0]) - 1)
		all[n++] = *headers++;
	all[n] = NULL;
	rc = http_request(http, &req, &resp, http_err, sizeof(http_err));
	if (rc < 0) {
		rc = kms_errf(err, err_len, rc == -EAGAIN ? -EAGAIN : -EIO, "%s at %s: %s", what, host,
			      http_err);
		goto out;
	}
	if (resp.body && json_parse((const char *)resp.body, resp.len, &doc) < 0)
		doc = NULL;
	if (resp.status != 200) {
		if (!doc || json_get_string(doc, "error", code, sizeof(code), NULL) < 0)
			snprintf(code, sizeof(code), "no OAuth error code");
		if (resp.status == 400 || resp.status == 401 || resp.status == 403)
			rc = kms_errf(err, err_len, -EACCES,
				      "%s at %s refused the credentials (HTTP %ld, %s)", what, host,
				      resp.status, code);
		else
			rc = kms_errf(err, err_len,
				      resp.status == 429 || resp.status >= 500 ? -EAGAIN : -EIO,
				      "%s at %s answered HTTP %ld (%s)", what, host, resp.status, code);
		goto out;
	}
	if (!doc || json_get_string(doc, "access_token", token, cap, &len) < 0 ||
	    !token_ok(token, len) || expires_in_of(doc, expires_in) < 0) {
		secmem_wipe(token, cap);
		rc = kms_errf(err, err_len, -EIO, "%s at %s sent no usable access_token/expires_in",
			      what, host);
	}
out:
	json_free(doc);
	http_response_free(&resp);
	return rc;
}

int oauth_read_secret_file(const char *path, const char *what, size_t cap, char **buf,
			   size_t *len, char *err, size_t err_len)
{
	struct stat st;
	char *b;
	ssize_t got = 0;
	size_t n = 0;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return kms_errf(err, err_len, -EACCES, "cannot open %s %s: %s", what, path,
				strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		rc = kms_errf(err, err_len, -EINVAL, "%s %s is not a regular file", what, path);
	else if (st.st_mode & 0077)
		rc = kms_errf(err, err_len, -EACCES,
			      "%s %s is readable by group or others: chmod 600 it", what, path);
	b = rc == 0 ? secmem_alloc(cap) : NULL;
	if (rc == 0 && !b)
		rc = kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	while (rc == 0 && (got = read(fd, b + n, cap - n)) > 0)
		n += (size_t)got;
	if (rc == 0 && got < 0)
		rc = kms_errf(err, err_len, -errno, "cannot read %s %s: %s", what, path,
			      strerror(errno));
	close(fd);
	while (rc == 0 && n > 0 && n < cap && (b[n - 1] == '\n' || b[n - 1] == '\r'))
		n--;
	if (rc == 0 && (n == 0 || n >= cap || memchr(b, '\0', n)))
		rc = kms_errf(err, err_len, -EINVAL, "%s %s is empty, too large or not text", what,
			      path);
	if (rc < 0) {
		if (b)
			secmem_free(b, cap);
		return rc;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}
