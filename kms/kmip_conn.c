// SPDX-License-Identifier: MIT
/*
 * KMIP over mutually authenticated TLS on a pool of connections (contract
 * in kms/kmip_conn.h).  Sockets are non-blocking; every wait is a poll()
 * bounded by the exchange's deadline.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "kms/config.h"
#include "kms/kmip_conn.h"
#include "kms/ttlv.h"

#define MAX_KEY_FILE (64 * 1024)
#define MAX_HOST 255

struct conn {
	int fd;
	SSL *ssl;
};

struct kmip_pool {
	SSL_CTX *ctx;
	char host[MAX_HOST + 1];
	char port[16];
	bool host_is_ip;
	long connect_timeout_ms;
	unsigned max_idle;

	pthread_mutex_t lock; /* guards idle, n_idle and stats */
	struct conn *idle;    /* most recently returned last */
	unsigned n_idle;
	struct kmip_conn_stats stats;
};

uint64_t kmip_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- set-up ---- */

/*
 * load_key - the client key from @path into the context.  The file must be
 * a regular file no one but its owner may read; its bytes pass through
 * secmem only.
 */
static int load_key(SSL_CTX *ctx, const char *path, char *err, size_t err_len)
{
	struct stat sb;
	char *buf;
	size_t len = 0;
	ssize_t n;
	EVP_PKEY *key = NULL;
	BIO *bio;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kms_errf(err, err_len, -EACCES, "cannot read KMIP client key %s: %s", path,
				strerror(errno));
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))
		rc = kms_errf(err, err_len, -EINVAL, "KMIP client key %s is not a regular file", path);
	else if (sb.st_mode & (S_IRWXG | S_IRWXO))
		rc = kms_errf(err, err_len, -EACCES,
			      "KMIP client key %s may be read by group or others: chmod 600 %s", path,
			      path);
	buf = rc == 0 ? secmem_alloc(MAX_KEY_FILE) : NULL;
	if (rc == 0 && !buf)
		rc = kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	while (rc == 0 && len < MAX_KEY_FILE && (n = read(fd, buf + len, MAX_KEY_FILE - len)) > 0)
		len += (size_t)n;
	close(fd);
	if (rc < 0)
		return rc;
	bio = BIO_new_mem_buf(buf, (int)len);
	if (bio)
		key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	secmem_free(buf, MAX_KEY_FILE);
	if (!key) {
		ERR_clear_error();
		return kms_errf(err, err_len, -EINVAL,
				"KMIP client key %s is not an unencrypted PEM private key", path);
	}
	if (SSL_CTX_use_PrivateKey(ctx, key) != 1)
		rc = kms_errf(err, err_len, -EINVAL, "KMIP client key %s cannot be used", path);
	EVP_PKEY_free(key);
	if (rc == 0 && SSL_CTX_check_private_key(ctx) != 1)
		rc = kms_errf(err, err_len, -EINVAL,
			      "KMIP client key %s does not belong to the client certificate", path);
	ERR_clear_error();
	return rc;
}

static int make_ctx(struct kmip_pool *p, const struct kmip_conn_settings *s, char *err,
		    size_t err_len)
{
	p->ctx = SSL_CTX_new(TLS_client_method());
	if (!p->ctx)
		return kms_errf(err, err_len, -ENOMEM, "cannot create a TLS context");
	SSL_CTX_set_min_proto_version(p->ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
	/* A session is per connection here: no tickets to keep. */
	SSL_CTX_set_session_cache_mode(p->ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_load_verify_locations(p->ctx, s->ca_file, NULL) != 1) {
		ERR_clear_error();
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:ca_file: cannot load CA certificates from %s", s->ca_file);
	}
	if (SSL_CTX_use_certificate_chain_file(p->ctx, s->cert_file) != 1) {
		ERR_clear_error();
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:cert_file: cannot load a PEM certificate from %s",
				s->cert_file);
	}
	return load_key(p->ctx, s->key_file, err, err_len);
}

int kmip_pool_new(const struct kmip_conn_settings *s, struct kmip_pool **out, char *err,
		  size_t err_len)
{
	struct kmip_pool *p;
	struct in6_addr addr;
	int rc;

	if (!s->host || !*s->host || strlen(s->host) > MAX_HOST || !s->port ||
	    strlen(s->port) >= sizeof(p->port) || !s->max_idle || s->connect_timeout_ms <= 0)
		return kms_errf(err, err_len, -EINVAL, "bad KMIP connection settings");
	p = calloc(1, sizeof(*p));
	if (!p)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	pthread_mutex_init(&p->lock, NULL);
	snprintf(p->host, sizeof(p->host), "%s", s->host);
	snprintf(p->port, sizeof(p->port), "%s", s->port);
	p->host_is_ip = inet_pton(AF_INET, s->host, &addr) == 1 ||
			inet_pton(AF_INET6, s->host, &addr) == 1;
	p->connect_timeout_ms = s->connect_timeout_ms;
	p->max_idle = s->max_idle;
	p->idle = calloc(s->max_idle, sizeof(*p->idle));
	rc = p->idle ? make_ctx(p, s, err, err_len) : kms_errf(err, err_len, -ENOMEM, "out of memory");
	if (rc < 0) {
		kmip_pool_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

static void conn_close(struct conn *c)
{
	if (c->ssl) {
		/* No close_notify: the peer may be gone, and waiting for it would block. */
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
}

void kmip_pool_free(struct kmip_pool *pool)
{
	unsigned i;

	if (!pool)
		return;
	for (i = 0; i < pool->n_idle; i++)
		conn_close(&pool->idle[i]);
	free(pool->idle);
	SSL_CTX_free(pool->ctx);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}

/* ---- waiting ---- */

/* wait_fd - poll @fd for @events until @deadline; 0, or -EAGAIN when the time is up. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	uint64_t now;
	int n;

	for (;;) {
		now = kmip_now_ms();
		if (now >= deadline)
			return -EAGAIN;
		n = poll(&pfd, 1, (int)(deadline - now > 60000 ? 60000 : deadline - now));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -EIO;
	}
}

/*
 * tls_error - the kms errno and message for a failed TLS call that returned
 * @ret.  A TLS alert or a certificate that did not verify is a refusal
 * (-EACCES); anything else is a transport failure (-EAGAIN).
 */
static int tls_error(struct kmip_pool *p, SSL *ssl, int ret, const char *what, char *err,
		     size_t err_len)
{
	unsigned long e = ERR_peek_error();
	long verify = SSL_get_verify_result(ssl);
	int kind = SSL_get_error(ssl, ret);
	char reason[160] = "connection closed";
	int rc = -EAGAIN;

	if (verify != X509_V_OK) {
		snprintf(reason, sizeof(reason), "server certificate not accepted: %s",
			 X509_verify_cert_error_string(verify));
		rc = -EACCES;
	} else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL) {
		ERR_error_string_n(e, reason, sizeof(reason));
		/* Alerts (e.g. the server refusing our certificate) are the peer saying no. */
		if (ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET)
			rc = -EACCES;
	} else if (kind == SSL_ERROR_SYSCALL && errno) {
		snprintf(reason, sizeof(reason), "%s", strerror(errno));
	}
	ERR_clear_error();
	return kms_errf(err, err_len, rc, "KMIP server %s:%s: %s failed: %s", p->host, p->port,
			what, reason);
}

/*
 * tls_io - run @op (SSL_connect, or one SSL_read/SSL_write through @fn)
 * until it makes progress or the deadline passes.  Returns its positive
 * result, or a kms errno.
 */
enum tls_op { TLS_HANDSHAKE, TLS_READ, TLS_WRITE };

static int tls_io(struct kmip_pool *p, struct conn *c, enum tls_op op, void *buf, size_t len,
		  uint64_t deadline, char *err, size_t err_len)
{
	static const char *const names[] = { "TLS handshake", "read", "write" };
	size_t done = 0;
	int ret, kind, rc;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		if (op == TLS_HANDSHAKE)
			ret = SSL_connect(c->ssl);
		else if (op == TLS_READ)
			ret = SSL_read_ex(c->ssl, buf, len, &done) == 1 ? 1 : 0;
		else
			ret = SSL_write_ex(c->ssl, buf, len, &done) == 1 ? 1 : 0;
		if (ret == 1)
			return op == TLS_HANDSHAKE ? 1 : (int)done;
		kind = SSL_get_error(c->ssl, ret);
		if (kind == SSL_ERROR_WANT_READ || kind == SSL_ERROR_WANT_WRITE) {
			rc = wait_fd(c->fd, kind == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
			if (rc == -EAGAIN)
				return kms_errf(err, err_len, -EAGAIN,
						"KMIP server %s:%s: no answer in time (%s)", p->host,
						p->port, names[op]);
			if (rc < 0)
				return kms_errf(err, err_len, rc, "KMIP server %s:%s: poll failed",
						p->host, p->port);
			continue;
		}
		return tls_error(p, c->ssl, ret, names[op], err, err_len);
	}
}

/* ---- connections ---- */

static int tcp_connect(struct kmip_pool *p, uint64_t deadline, char *err, size_t err_len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	int fd = -1, gai, soerr, fail = ECONNREFUSED, one = 1;
	socklen_t sl = sizeof(soerr);

	gai = getaddrinfo(p->host, p->port, &hints, &res);
	if (gai)
		return kms_errf(err, err_len, -EAGAIN, "KMIP server %s:%s: %s", p->host, p->port,
				gai_strerror(gai));
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0)
			continue;
		soerr = 0;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno != EINPROGRESS)
			fail = errno;
		else if (wait_fd(fd, POLLOUT, deadline) < 0)
			fail = ETIMEDOUT;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			fail = errno;
		else if (soerr)
			fail = soerr;
		else
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return kms_errf(err, err_len, -EAGAIN, "KMIP server %s:%s: cannot connect: %s",
				p->host, p->port, strerror(fail));
	/* Requests are small and answered at once: do not let Nagle hold them back. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int conn_open(struct kmip_pool *p, struct conn *c, uint64_t deadline, char *err,
		     size_t err_len)
{
	uint64_t connect_by = kmip_now_ms() + (uint64_t)p->connect_timeout_ms;
	int rc;

	if (connect_by > deadline)
		connect_by = deadline;
	c->ssl = NULL;
	c->fd = tcp_connect(p, connect_by, err, err_len);
	if (c->fd < 0)
		return c->fd;
	c->ssl = SSL_new(p->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
		conn_close(c);
		return kms_errf(err, err_len, -ENOMEM, "cannot create a TLS connection");
	}
	if (p->host_is_ip) {
		rc = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), p->host);
	} else {
		SSL_set_tlsext_host_name(c->ssl, p->host);
		rc = SSL_set1_host(c->ssl, p->host);
	}
	if (rc != 1) {
		conn_close(c);
		return kms_errf(err, err_len, -EINVAL, "KMIP server name %s is not usable", p->host);
	}
	rc = tls_io(p, c, TLS_HANDSHAKE, NULL, 0, connect_by, err, err_len);
	if (rc < 0) {
		conn_close(c);
		return rc;
	}
	pthread_mutex_lock(&p->lock);
	p->stats.connects++;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/*
 * still_open - an idle connection the server has not closed: its socket
 * has nothing to read (a KMIP server speaks only when asked).
 */
static bool still_open(const struct conn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 0;
}

/* take_idle - the most recently returned idle connection that is still open; false if none. */
static bool take_idle(struct kmip_pool *p, struct conn *c)
{
	bool found = false;

	pthread_mutex_lock(&p->lock);
	while (!found && p->n_idle) {
		*c = p->idle[--p->n_idle];
		found = still_open(c);
		if (!found)
			conn_close(c);
	}
	pthread_mutex_unlock(&p->lock);
	return found;
}

static void give_back(struct kmip_pool *p, struct conn *c)
{
	pthread_mutex_lock(&p->lock);
	if (p->n_idle < p->max_idle) {
		p->idle[p->n_idle++] = *c;
		c->ssl = NULL;
		c->fd = -1;
	}
	pthread_mutex_unlock(&p->lock);
	conn_close(c);
}

/* read_full - exactly @len bytes into @buf.  *@got counts what arrived, for the caller's retry rule. */
static int read_full(struct kmip_pool *p, struct conn *c, uint8_t *buf, size_t len, size_t *got,
		     uint64_t deadline, char *err, size_t err_len)
{
	size_t off = 0;
	int n;

	while (off < len) {
		n = tls_io(p, c, TLS_READ, buf + off, len - off, deadline, err, err_len);
		if (n < 0)
			return n;
		off += (size_t)n;
		*got += (size_t)n;
	}
	return 0;
}

/*
 * exchange_on - one request and its answer on @c.  *@got is the number of
 * answer bytes that arrived (0 means the server may never have seen the
 * request, so it may be sent again).
 */
static int exchange_on(struct kmip_pool *p, struct conn *c, const uint8_t *req, size_t req_len,
		       uint8_t *resp, size_t cap, size_t *resp_len, size_t *got,
		       uint64_t deadline, char *err, size_t err_len)
{
	size_t off = 0, total;
	int n, rc;

	*got = 0;
	while (off < req_len) {
		n = tls_io(p, c, TLS_WRITE, (void *)(req + off), req_len - off, deadline, err,
			   err_len);
		if (n < 0)
			return n;
		off += (size_t)n;
	}
	if (cap < TTLV_HEADER)
		return kms_errf(err, err_len, -EINVAL, "KMIP answer buffer too small");
	rc = read_full(p, c, resp, TTLV_HEADER, got, deadline, err, err_len);
	if (rc < 0)
		return rc;
	if (ttlv_message_len(resp, cap, &total) < 0)
		return kms_errf(err, err_len, -EBADMSG,
				"KMIP server %s:%s: the answer is not a KMIP message of at most %zu "
				"bytes",
				p->host, p->port, cap);
	rc = read_full(p, c, resp + TTLV_HEADER, total - TTLV_HEADER, got, deadline, err, err_len);
	if (rc == 0)
		*resp_len = total;
	return rc;
}

/*
 * A write to a connection the server has closed raises SIGPIPE, which would
 * kill a process that has not ignored it (OpenSSL writes with write(), not
 * send(MSG_NOSIGNAL)).  The guard blocks it in this thread for the exchange
 * and takes back any it caused, so the write fails with EPIPE instead; a
 * SIGPIPE already pending for another reason is left alone.
 */
struct sigpipe_guard {
	sigset_t pipe, old;
	bool blocked;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t pending;

	sigemptyset(&g->pipe);
	sigaddset(&g->pipe, SIGPIPE);
	sigpending(&pending);
	g->blocked = !sigismember(&pending, SIGPIPE) &&
		     pthread_sigmask(SIG_BLOCK, &g->pipe, &g->old) == 0;
}

static void sigpipe_restore(struct sigpipe_guard *g)
{
	const struct timespec zero = { 0, 0 };

	if (!g->blocked)
		return;
	while (sigtimedwait(&g->pipe, NULL, &zero) == SIGPIPE)
		;
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

int kmip_pool_exchange(struct kmip_pool *pool, const uint8_t *req, size_t req_len, uint8_t *resp,
		       size_t cap, size_t *resp_len, uint64_t deadline_at_ms, char *err,
		       size_t err_len)
{
	uint64_t start = kmip_now_ms();
	bool reused, retried = false;
	struct conn c = { .fd = -1 };
	struct sigpipe_guard guard;
	size_t got = 0;
	int rc;

	sigpipe_block(&guard);
	for (;;) {
		reused = take_idle(pool, &c);
		rc = reused ? 0 : conn_open(pool, &c, deadline_at_ms, err, err_len);
		if (rc == 0)
			rc = exchange_on(pool, &c, req, req_len, resp, cap, resp_len, &got,
					 deadline_at_ms, err, err_len);
		if (rc == 0) {
			give_back(pool, &c);
			break;
		}
		conn_close(&c);
		/* A kept-alive connection the server dropped: once more on a new one. */
		if (!reused || got || retried || rc != -EAGAIN || kmip_now_ms() >= deadline_at_ms)
			break;
		retried = true;
	}
	sigpipe_restore(&guard);
	pthread_mutex_lock(&pool->lock);
	pool->stats.exchanges++;
	pool->stats.retries += retried;
	pool->stats.failures += rc < 0;
	pool->stats.latency_us += (kmip_now_ms() - start) * 1000u;
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

void kmip_pool_stats(struct kmip_pool *pool, struct kmip_conn_stats *out)
{
	pthread_mutex_lock(&pool->lock);
	*out = pool->stats;
	pthread_mutex_unlock(&pool->lock);
}
