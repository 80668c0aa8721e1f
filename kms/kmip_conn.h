/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_KMIP_CONN_H
#define ENVELOPEFS_KMS_KMIP_CONN_H

/*
 * The transport of the kmip provider: KMIP request/response messages over
 * mutually authenticated TLS (OpenSSL), on a small pool of kept-alive
 * connections.  Knows nothing of what the messages say, only where one ends
 * (kms/ttlv.h framing).
 *
 * TLS: version 1.2 or later; the server's certificate must chain to
 * @ca_file and name @host (DNS name, or IP address when @host is one); we
 * present the client certificate @cert_file with its key @key_file (PEM,
 * unencrypted).  The key file is a secret: it must be a regular file that
 * group and others cannot read, and is read into locked memory to be
 * parsed (OpenSSL keeps the parsed key on its own heap while the pool
 * lives).
 *
 * Pool: thread-safe.  An exchange takes the most recently returned idle
 * connection (or opens a new one), and gives it back afterwards, keeping at
 * most @max_idle of them; concurrent callers beyond that open connections of
 * their own, closed after use.  A reused connection the server has closed in
 * the meantime is noticed (the socket reads end-of-file, or the exchange
 * fails before an answer arrives) and the exchange is made once more on a
 * fresh connection; every KMIP operation the provider sends may be repeated
 * safely.
 *
 * Time: each exchange ends by @deadline_at_ms (CLOCK_MONOTONIC ms), whatever
 * the server does: connect, handshake, write and read all wait with poll()
 * against it.  Name resolution (getaddrinfo) is the one wait not bounded.
 *
 * Nothing here logs; messages name the server and the failure, never bytes
 * of a message.
 */

#include <stddef.h>
#include <stdint.h>

struct kmip_conn_settings {
	const char *host;
	const char *port;	/* decimal; KMIP's registered port is 5696 */
	const char *ca_file;
	const char *cert_file;
	const char *key_file;
	unsigned max_idle;	/* connections kept open between exchanges, >= 1 */
	long connect_timeout_ms; /* one connection attempt (TCP and TLS handshake) */
};

struct kmip_conn_stats {
	uint64_t exchanges;	/* kmip_pool_exchange() calls */
	uint64_t retries;	/* exchanges made again on a fresh connection */
	uint64_t failures;	/* exchanges that returned an error */
	uint64_t connects;	/* connections opened (TLS handshakes done) */
	uint64_t latency_us;	/* total wall time of all exchanges */
};

struct kmip_pool;

/*
 * kmip_pool_new - check the settings and load the certificates and the key
 * (no connection is made yet).  0 and *@out, or -EINVAL / -EACCES / -ENOMEM
 * with a message naming the file or setting in @err.
 */
int kmip_pool_new(const struct kmip_conn_settings *s, struct kmip_pool **out, char *err,
		  size_t err_len);
void kmip_pool_free(struct kmip_pool *pool);

/*
 * kmip_pool_exchange - send the @req_len bytes of @req (one TTLV message)
 * and read one TTLV message of at most @cap bytes into @resp (secmem when
 * the answer may hold a key), its length in *@resp_len.  Returns 0 or
 *   -EAGAIN   the server cannot be reached, closed the connection, or did
 *             not answer by the deadline
 *   -EACCES   the TLS handshake failed: a certificate was refused (ours by
 *             the server, or the server's by us)
 *   -EBADMSG  the answer is not a TTLV message of at most @cap bytes
 *   -ENOMEM, -EIO
 * with a message in @err.
 */
int kmip_pool_exchange(struct kmip_pool *pool, const uint8_t *req, size_t req_len, uint8_t *resp,
		       size_t cap, size_t *resp_len, uint64_t deadline_at_ms, char *err,
		       size_t err_len);

void kmip_pool_stats(struct kmip_pool *pool, struct kmip_conn_stats *out);

/* kmip_now_ms - CLOCK_MONOTONIC in milliseconds, the clock of every deadline here. */
uint64_t kmip_now_ms(void);

#endif
