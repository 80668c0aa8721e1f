// SPDX-License-Identifier: MIT
/*
 * The `vault` provider: HashiCorp Vault / OpenBao Transit (kms/vault.h).
 *
 *   generate         POST /v1/MOUNT/datakey/plaintext/KEY {"bits":256,"context":C}
 *   wrap             POST /v1/MOUNT/encrypt/KEY           {"plaintext":base64(DEK),"context":C}
 *   unwrap           POST /v1/MOUNT/decrypt/KEY           {"ciphertext":B,"context":C}
 *   rewrap           POST /v1/MOUNT/rewrap/KEY            {"ciphertext":B,"context":C}
 *                    (Transit's own re-wrap: the DEK never leaves Vault)
 *   current_version  GET  /v1/MOUNT/keys/KEY              data.latest_version
 *
 * C = base64(volume UUID || file ID).  Transit binds the context only for a
 * key created with derived=true (every version then encrypts under
 * HKDF-SHA256(version key, info = C)); for any other key Vault ignores the
 * context, so a blob would unwrap in another volume or file.  open() reads
 * the key and refuses one that is not derived.
 *
 * Settings, section [kms] (a setting wins over its environment variable):
 *   provider    = vault
 *   address     = https://vault.example:8200        else $VAULT_ADDR
 *   key         = NAME of the Transit key            (required)
 *   mount       = transit                            (default)
 *   namespace   = NS                                 else $VAULT_NAMESPACE
 *   token_file  = /path (one line: the token)        else $VAULT_TOKEN
 *   ca_file     = /path/ca.pem                       else $VAULT_CACERT
 *   ca_dir      = /path/certs/                       else $VAULT_CAPATH
 *   deadline_ms = 15000  (a whole operation: retries, waits for a batch and a resend
 *                         with a reloaded token included; kms calls never wait longer:
 *                         see send_items)
 *
 * The token file is read again when Vault answers 403 and the file changed
 * (a Vault Agent sink renews it in place); the call is then retried once.
 * The latest version is read from Vault whenever asked (rotation asks per
 * file); concurrent askers share reads (vault_current_version).
 */

#include "kms/vault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "crypto/base64.h"
#include "kms/config.h"
#include "kms/envsecret.h"
#include "kms/http.h"
#include "kms/json.h"
#include "kms/keyring.h"

#define TOKEN_HEADER "X-Vault-Token: "
#define MAX_TOKEN 4096
#define MAX_NAME 128
#define DEK_B64_LEN BASE64_ENCODED_LEN(KMS_DEK_LEN)
#define DEFAULT_DEADLINE_MS 15000
#define MAX_BATCH 64 /* items per batch_input request */
/* The longest a queued item waits before it is sent: a tenth of the deadline, at most this. */
#define MAX_QUEUE_WAIT_MS 500

struct item;

/*
 * An item_queue coalesces single items from many threads: while a request
 * of the queue's op is in flight, items that arrive wait, and the first
 * waiter to find nothing in flight sends every waiting item (up to
 * MAX_BATCH) as one request.  A waiter whose item has waited
 * vk->queue_wait_ms sends the queue itself, in flight or not, so a slow or
 * hung request ahead delays nobody past the deadline.  A lone caller waits
 * for nothing; N parallel callers share about one round trip.
 */
struct item_queue {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a request finished (CLOCK_MONOTONIC, for timed waits) */
	struct item *head, **tail;
	unsigned in_flight;  /* requests being sent */
};

struct vault_kms {
	struct http_client *http;
	char address[512];	/* scheme://host[:port], no trailing slash */
	char mount[MAX_NAME + 1];
	char key[MAX_NAME + 1];
	char ns_header[MAX_NAME + 32]; /* "X-Vault-Namespace: NS", or empty */
	char token_file[4096];	/* empty: the token came from $VAULT_TOKEN */
	char ca_file[4096];
	char ca_dir[4096];

	/* The token header lives in secmem; calls hold the read lock while they use it. */
	pthread_rwlock_t token_lock;
	char *token_header;
	struct timespec token_mtime;
	ino_t token_ino;
	uint64_t token_gen;	  /* bumped when token_header is replaced */
	int64_t token_checked_ms; /* last look at the file, at most one a second */

	/* Time (see send_items): the deadline D of an operation, the HTTP client's
	 * deadline for one call, the longest wait in a queue; W + call <= D. */
	long deadline_ms, call_ms, queue_wait_ms;

	/* Re-wraps waiting for or in a batch request (vault_rewrap). */
	struct item_queue rewrap_queue;

	/* Reads of the latest version, shared by concurrent askers (vault_current_version). */
	pthread_mutex_t version_lock; /* guards the fields below */
	pthread_cond_t version_cond;  /* a read finished (CLOCK_MONOTONIC) */
	unsigned reading;	      /* reads in flight */
	uint64_t read_started;	      /* reads begun (each read's sequence number) */
	uint64_t read_done;	      /* the latest-begun finished read */
	int read_rc;		      /* its outcome */
	uint32_t latest;	      /* its answer */
};

static const char *const known_settings[] = {
	"kms:provider", "kms:address", "kms:key",    "kms:mount",	"kms:namespace",
	"kms:token_file", "kms:ca_file", "kms:ca_dir", "kms:deadline_ms",
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vault_blob_parse_version(const uint8_t *blob, size_t len, uint32_t *version)
{
	static const char prefix[] = "vault:v";
	const size_t plen = sizeof(prefix) - 1;
	uint64_t v = 0;
	size_t i;

	if (len <= plen || memcmp(blob, prefix, plen) != 0)
		return -EBADMSG;
	for (i = plen; i < len && blob[i] >= '0' && blob[i] <= '9'; i++) {
		v = v * 10 + (blob[i] - '0');
		if (v > UINT32_MAX)
			return -EBADMSG;
	}
	/* Digits, no leading zero, version >= 1, then ':' and a body. */
	if (i == plen || blob[plen] == '0' || i + 1 >= len || blob[i] != ':')
		return -EBADMSG;
	for (i++; i < len; i++) {
		uint8_t c = blob[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/' || c == '='))
			return -EBADMSG;
	}
	*version = (uint32_t)v;
	return 0;
}

int vault_map_error(long status, const char *message)
{
	const char *m = message ? message : "";

	if (status == 401 || status == 403)
		return -EACCES;
	/* Vault answers a GCM tag failure (a wrong context, a tampered blob) with an
	 * internal error, 500 "cipher: message authentication failed". */
	if (status >= 500 && strstr(m, "message authentication failed"))
		return -EBADMSG;
	if (status == 412 || status == 429 || status >= 500)
		return -EAGAIN;
	if (status == 404)
		return -ENOENT;
	if (status != 400)
		return -EIO;
	/* Transit's 400s: the texts Vault and OpenBao use. */
	if (strstr(m, "disallowed by policy") || strstr(m, "version is too new") ||
	    strstr(m, "key not found") || strstr(m, "invalid key version"))
		return -ENOENT;
	if (strstr(m, "authentication failed") || strstr(m, "invalid ciphertext") ||
	    strstr(m, "base64-decode ciphertext") || strstr(m, "ciphertext"))
		return -EBADMSG;
	return -EIO;
}

/* ---- token ------------------------------------------------------------------------------------ */

/*
 * read_token - the token from @path (one line; a trailing newline dropped) into
 * a secmem header "X-Vault-Token: TOKEN".  The token never passes through an
 * unlocked buffer of ours.
 */
static int read_token_file(const char *path, char **header, struct stat *st, char *err,
			   size_t err_len)
{
	const size_t hlen = sizeof(TOKEN_HEADER) - 1;
	char *buf;
	ssize_t n;
	size_t len = 0;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return kms_errf(err, err_len, -errno, "cannot open token_file %s: %s", path,
				strerror(errno));
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		return kms_errf(err, err_len, -EINVAL, "token_file %s is not a regular file", path);
	}
	if (st->st_mode & 0077) {
		close(fd);
		return kms_errf(err, err_len, -EACCES,
				"token_file %s is readable by group or others: chmod 600 it", path);
	}
	buf = secmem_alloc(hlen + MAX_TOKEN + 2);
	if (!buf) {
		close(fd);
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	}
	memcpy(buf, TOKEN_HEADER, hlen);
	while ((n = read(fd, buf + hlen + len, MAX_TOKEN + 1 - len)) > 0)
		len += (size_t)n;
	if (n < 0)
		rc = kms_errf(err, err_len, -errno, "cannot read token_file %s: %s", path,
			      strerror(errno));
	close(fd);
	if (rc == 0 && len > 0 && buf[hlen + len - 1] == '\n')
		len--;
	if (rc == 0 && (len == 0 || len > MAX_TOKEN || memchr(buf + hlen, '\n', len) ||
			memchr(buf + hlen, '\r', len) || memchr(buf + hlen, '\0', len)))
		rc = kms_errf(err, err_len, -EINVAL,
			      "token_file %s must hold one token on one line", path);
	if (rc < 0) {
		secmem_free(buf, hlen + MAX_TOKEN + 2);
		return rc;
	}
	buf[hlen + len] = '\0';
	*header = buf;
	return 0;
}

static void free_token(char *header)
{
	secmem_free(header, sizeof(TOKEN_HEADER) - 1 + MAX_TOKEN + 2);
}

static int token_from_env(char **header, char *err, size_t err_len)
{
	const size_t hlen = sizeof(TOKEN_HEADER) - 1;
	char *buf = secmem_alloc(hlen + MAX_TOKEN + 2);
	size_t len = 0;
	int rc;

	if (!buf)
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	memcpy(buf, TOKEN_HEADER, hlen);
	rc = envsecret_copy("VAULT_TOKEN", buf + hlen, MAX_TOKEN + 1, &len);
	if (rc == -ENOENT)
		rc = kms_errf(err, err_len, -EINVAL,
			      "no Vault token: set kms:token_file (a file holding the token) or "
			      "$VAULT_TOKEN");
	else if (rc == -ENOMEM)
		rc = kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	else if (rc < 0 || strpbrk(buf + hlen, "\r\n"))
		rc = kms_errf(err, err_len, -EINVAL, "$VAULT_TOKEN is not a token");
	if (rc < 0) {
		free_token(buf);
		return rc;
	}
	*header = buf;
	return 0;
}

/*
 * maybe_reload_token - after a 403 to a call made with token generation
 * @used: true if the call is worth one more try, because another thread has
 * taken a new token since, or the token file was replaced or rewritten
 * (looked at no more than once a second) and holds another token now.
 */
static bool maybe_reload_token(struct vault_kms *vk, uint64_t used)
{
	int64_t now = now_ms();
	char *fresh = NULL;
	struct stat st;
	bool changed = false;

	if (!vk->token_file[0])
		return false;
	pthread_rwlock_wrlock(&vk->token_lock);
	if (vk->token_gen != used) {
		changed = true;
	} else if (now - vk->token_checked_ms >= 1000 && stat(vk->token_file, &st) == 0 &&
		   (st.st_ino != vk->token_ino || st.st_mtim.tv_sec != vk->token_mtime.tv_sec ||
		    st.st_mtim.tv_nsec != vk->token_mtime.tv_nsec)) {
		vk->token_checked_ms = now;
		if (read_token_file(vk->token_file, &fresh, &st, NULL, 0) == 0) {
			vk->token_ino = st.st_ino;
			vk->token_mtime = st.st_mtim;
			changed = strcmp(fresh, vk->token_header) != 0;
			if (changed) {
				free_token(vk->token_header);
				vk->token_header = fresh;
				vk->token_gen++;
			} else {
				free_token(fresh);
			}
		}
	}
	pthread_rwlock_unlock(&vk->token_lock);
	return changed;
}

/* ---- calls ------------------------------------------------------------------------------------ */

struct vault_answer {
	struct http_response resp;
	struct json_doc *doc; /* the parsed body of a 2xx answer */
};

static void answer_free(struct vault_answer *a)
{
	json_free(a->doc);
	a->doc = NULL;
	http_response_free(&a->resp);
}

/* first_error - errors[0] of an error body into @buf, or "". */
static void first_error(const struct http_response *resp, char *buf, size_t cap)
{
	struct json_doc *doc = NULL;

	buf[0] = '\0';
	if (resp->body && json_parse((const char *)resp->body, resp->len, &doc) == 0 &&
	    json_get_string(doc, "errors[0]", buf, cap, NULL) < 0)
		buf[0] = '\0';
	json_free(doc);
}

static bool is_batch_answer(const struct http_response *resp)
{
	struct json_doc *doc = NULL;
	enum json_type type;
	bool batch;

	batch = resp->body && json_parse((const char *)resp->body, resp->len, &doc) == 0 &&
		json_type_at(doc, "data.batch_results", &type) == 0 && type == JSON_ARRAY;
	json_free(doc);
	return batch;
}

/*
 * vault_classify - the HTTP client's classifier: what is worth another
 * attempt.  A 500 that reports a failed GCM tag is an answer about the blob,
 * not about Vault's health: retrying it would only delay the error and count
 * against the circuit breaker.  429 is a rate-limit quota: throttling, not an
 * outage.  412 (Enterprise: the node has not caught up yet) asks for a retry
 * as throttling does.
 */
static enum http_verdict vault_classify(void *arg, const struct http_response *resp)
{
	(void)arg;
	if (resp->status == 500 && resp->body &&
	    strstr((const char *)resp->body, "message authentication failed"))
		return HTTP_FINAL;
	if (resp->status == 429 || resp->status == 412)
		return HTTP_THROTTLED;
	if (resp->status == 500 || resp->status == 502 || resp->status == 503 ||
	    resp->status == 504)
		return HTTP_FAULT;
	return HTTP_FINAL;
}

/*
 * vault_call_until - one Transit request: @method on MOUNT/@op/KEY (@op may
 * be "keys" for the key itself), with JSON @body (NULL for GET), over by
 * @deadline (from http_deadline(); a resend with a reloaded token shares
 * it).  0 with the parsed 2xx answer in @a (free with answer_free()), or a
 * kms.h errno with Vault's message in @err.
 */
static int vault_call_until(struct vault_kms *vk, uint64_t deadline, const char *method,
			    const char *op, const char *body, size_t body_len,
			    struct vault_answer *a, char *err, size_t err_len)
{
	const char *headers[5];
	char url[1024], message[256], http_err[256], *token;
	uint64_t token_gen;
	size_t nh = 0, token_len;
	int rc, attempt;

	memset(a, 0, sizeof(*a));
	snprintf(url, sizeof(url), "%s/v1/%s/%s/%s", vk->address, vk->mount, op, vk->key);
	for (attempt = 0;; attempt++) {
		struct http_request req = {
			.method = method, .url = url, .headers = headers,
			.body = body, .body_len = body_len, .deadline_at_ms = deadline,
		};

		/* The token is copied out under the lock, which is not held across the
		 * call: a slow Vault must not keep a token reload (and, the lock
		 * preferring writers, every other call) waiting. */
		pthread_rwlock_rdlock(&vk->token_lock);
		token_gen = vk->token_gen;
		token_len = strlen(vk->token_header) + 1;
		token = secmem_alloc(token_len);
		if (token)
			memcpy(token, vk->token_header, token_len);
		pthread_rwlock_unlock(&vk->token_lock);
		if (!token) {
			rc = -ENOMEM;
			snprintf(http_err, sizeof(http_err), "out of locked memory");
			break;
		}
		nh = 0;
		headers[nh++] = token;
		headers[nh++] = "X-Vault-Request: true";
		if (body)
			headers[nh++] = "Content-Type: application/json";
		if (vk->ns_header[0])
			headers[nh++] = vk->ns_header;
		headers[nh] = NULL;
		http_err[0] = '\0';
		rc = http_request(vk->http, &req, &a->resp, http_err, sizeof(http_err));
		secmem_free(token, token_len);
		if (rc < 0)
			break;
		if (a->resp.status == 403 && attempt == 0 && maybe_reload_token(vk, token_gen)) {
			http_response_free(&a->resp);
			continue;
		}
		break;
	}
	if (rc < 0)
		http_response_free(&a->resp);
	if (rc == -EAGAIN)
		return kms_errf(err, err_len, -EAGAIN, "Vault at %s is unavailable: %s", vk->address,
				http_err);
	if (rc == -EPROTO)
		return kms_errf(err, err_len, -EIO,
				"TLS with %s failed: %s (set kms:ca_file or $VAULT_CACERT to the CA "
				"that signed Vault's certificate)",
				vk->address, http_err);
	if (rc < 0)
		return kms_errf(err, err_len, rc == -ENOMEM ? -ENOMEM : -EIO, "Vault at %s: %s",
				vk->address, http_err);
	/* A batch with failed items is a 400 (500 if every failure was internal)
	 * that still carries every item's result. */
	if ((a->resp.status >= 200 && a->resp.status < 300) ||
	    ((a->resp.status == 400 || a->resp.status == 500) && is_batch_answer(&a->resp))) {
		if (a->resp.status == 204)
			return 0; /* no content (a key deleted): a->doc stays NULL */
		if (!a->resp.body ||
		    json_parse((const char *)a->resp.body, a->resp.len, &a->doc) < 0) {
			http_response_free(&a->resp);
			return kms_errf(err, err_len, -EIO,
					"Vault at %s sent an answer that is not JSON (%s %s)",
					vk->address, method, op);
		}
		return 0;
	}
	first_error(&a->resp, message, sizeof(message));
	rc = vault_map_error(a->resp.status, message);
	kms_errf(err, err_len, rc, "Vault at %s, %s %s/%s/%s: HTTP %ld%s%s", vk->address, method,
		 vk->mount, op, vk->key, a->resp.status, message[0] ? ": " : "", message);
	http_response_free(&a->resp);
	return rc;
}

/* vault_call - vault_call_until() for an operation that is this one request. */
static int vault_call(struct vault_kms *vk, const char *method, const char *op, const char *body,
		      size_t body_len, struct vault_answer *a, char *err, size_t err_len)
{
	return vault_call_until(vk, http_deadline(vk->http), method, op, body, body_len, a, err,
				err_len);
}

void vault_context_b64(const struct kms_context *ctx, char out[VAULT_CONTEXT_B64_LEN + 1])
{
	uint8_t raw[32];

	memcpy(raw, ctx->volume_uuid, 16);
	memcpy(raw + 16, ctx->file_id, 16);
	base64_encode(raw, sizeof(raw), out, VAULT_CONTEXT_B64_LEN + 1);
}

/* generate_body - {"bits": 256, "context": C}. */
static int generate_body(const struct kms_context *ctx, char *buf, size_t cap, size_t *len)
{
	char context[VAULT_CONTEXT_B64_LEN + 1];
	struct json_writer w;

	vault_context_b64(ctx, context);
	json_writer_init(&w, buf, cap);
	json_write_object_begin(&w);
	json_write_key(&w, "bits");
	json_write_int(&w, 256);
	json_write_key(&w, "context");
	json_write_string(&w, context);
	json_write_object_end(&w);
	return json_writer_finish(&w, len);
}

/* take_blob - the ciphertext string at @path of @a as a blob in @out; its version in *@version. */
static int take_blob(const struct vault_answer *a, const char *path, uint8_t *out, size_t out_cap,
		     size_t *out_len, uint32_t *version)
{
	char buf[VAULT_MAX_BLOB + 1];
	size_t len;

	if (json_get_string(a->doc, path, buf, sizeof(buf), &len) < 0 || len > out_cap ||
	    vault_blob_parse_version((const uint8_t *)buf, len, version) < 0)
		return -EIO; /* not a Transit answer we can store */
	memcpy(out, buf, len);
	*out_len = len;
	return 0;
}

/* take_dek - the plaintext at @path of @a, base64 of exactly KMS_DEK_LEN bytes, into @dek. */
static int take_dek(const struct vault_answer *a, const char *path, uint8_t *dek)
{
	char *b64 = secmem_alloc(DEK_B64_LEN + 2);
	size_t len, n = 0;
	int rc = -ENOMEM;

	if (b64) {
		rc = json_get_string(a->doc, path, b64, DEK_B64_LEN + 2, &len);
		if (rc == 0)
			rc = base64_decode(b64, len, dek, KMS_DEK_LEN, &n);
		if (rc == 0 && n != KMS_DEK_LEN)
			rc = -EIO;
		rc = rc < 0 && rc != -ENOMEM ? -EIO : rc;
	}
	secmem_free(b64, DEK_B64_LEN + 2);
	if (rc < 0)
		secmem_wipe(dek, KMS_DEK_LEN);
	return rc;
}

static int vault_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek,
			  uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct vault_kms *vk = kms->priv;
	struct vault_answer a;
	char body[256];
	size_t len;
	int rc;

	rc = generate_body(ctx, body, sizeof(body), &len);
	if (rc < 0)
		return -EIO;
	rc = vault_call(vk, "POST", "datakey/plaintext", body, len, &a, NULL, 0);
	if (rc < 0)
		return rc;
	rc = take_dek(&a, "data.plaintext", dek);
	if (rc == 0)
		rc = take_blob(&a, "data.ciphertext", blob, blob_cap, blob_len, version);
	if (rc < 0)
		secmem_wipe(dek, KMS_DEK_LEN);
	answer_free(&a);
	return rc;
}

/* ---- encrypt, decrypt and rewrap: one item or a batch ---------------------------------------- */

/*
 * Transit's encrypt, decrypt and rewrap take one item, or many as
 * "batch_input", answered by data.batch_results in input order: each result
 * holds the single answer's fields or {"error": text}.  Vault answers a batch
 * with failed items 400 (500 when every failure was internal, such as a
 * failed GCM tag) and still lists every result; send_items() maps each
 * failed item as the single call's answer would be mapped.  One engine
 * serves the three operations:
 *   - wrap and unwrap send their one item alone (the single form);
 *   - wrap_many and unwrap_many send their items MAX_BATCH at a time;
 *   - rewrap, called for one item by many rotation threads at once,
 *     coalesces them through a queue (struct item_queue).
 *
 * Time: no operation outlives the configured deadline D.  The HTTP client
 * gets D - W (vk->call_ms) for a whole call, retries included, and a queued
 * item waits at most W (vk->queue_wait_ms) before it is sent, whatever the
 * batch ahead of it is doing.
 */
enum item_op { OP_DECRYPT, OP_ENCRYPT, OP_REWRAP };

static const char *const op_path[] = {
	[OP_DECRYPT] = "decrypt", [OP_ENCRYPT] = "encrypt", [OP_REWRAP] = "rewrap",
};

/* ITEM_JSON_MAX - bytes of one item's JSON object, for any op, with slack for the punctuation. */
#define ITEM_JSON_MAX (VAULT_MAX_BLOB + VAULT_CONTEXT_B64_LEN + 64)

struct item {
	const struct kms_context *ctx;
	const uint8_t *in; /* decrypt, rewrap: the blob; encrypt: the DEK (KMS_DEK_LEN) */
	size_t in_len;
	uint8_t *dek;	   /* decrypt: receives the DEK (secmem) */
	uint8_t *out;	   /* encrypt, rewrap: receive the blob and its version */
	size_t out_cap;
	size_t *out_len;
	uint32_t *version;
	int rc;
	/* In an item_queue (guarded by its lock): */
	int64_t queued_ms;
	bool taken, done;
	struct item *next; /* the queue, or the items of one request */
};

/*
 * write_item - one item's object: {"ciphertext": B, "context": C}, or for
 * encrypt {"plaintext": base64(DEK), "context": C} (@plain: DEK_B64_LEN + 1
 * bytes of secmem to encode it in).
 */
static void write_item(struct json_writer *w, enum item_op op, const struct item *it,
		       char *plain)
{
	char context[VAULT_CONTEXT_B64_LEN + 1];

	vault_context_b64(it->ctx, context);
	json_write_object_begin(w);
	if (op == OP_ENCRYPT) {
		base64_encode(it->in, KMS_DEK_LEN, plain, DEK_B64_LEN + 1);
		json_write_key(w, "plaintext");
		json_write_string(w, plain);
	} else {
		json_write_key(w, "ciphertext");
		json_write_string_n(w, (const char *)it->in, it->in_len);
	}
	json_write_key(w, "context");
	json_write_string(w, context);
	json_write_object_end(w);
}

/* items_body - @n items from @first: the single form for one, else {"batch_input": [...]}. */
static int items_body(enum item_op op, const struct item *first, size_t n, char *buf, size_t cap,
		      size_t *len)
{
	char *plain = secmem_alloc(DEK_B64_LEN + 1);
	const struct item *it = first;
	struct json_writer w;
	size_t i;
	int rc;

	if (!plain)
		return -ENOMEM;
	json_writer_init(&w, buf, cap);
	if (n == 1) {
		write_item(&w, op, it, plain);
	} else {
		json_write_object_begin(&w);
		json_write_key(&w, "batch_input");
		json_write_array_begin(&w);
		for (i = 0; i < n; i++, it = it->next)
			write_item(&w, op, it, plain);
		json_write_array_end(&w);
		json_write_object_end(&w);
	}
	rc = json_writer_finish(&w, len);
	secmem_free(plain, DEK_B64_LEN + 1);
	return rc < 0 ? -EIO : 0;
}

/* take_result - the item's answer at @prefix ("data." or "data.batch_results[i].") of @a. */
static int take_result(const struct vault_answer *a, const char *prefix, enum item_op op,
		       struct item *it)
{
	char path[64], msg[256];

	snprintf(path, sizeof(path), "%serror", prefix);
	if (json_get_string(a->doc, path, msg, sizeof(msg), NULL) == 0 && msg[0])
		return vault_map_error(400, msg);
	if (op == OP_DECRYPT) {
		snprintf(path, sizeof(path), "%splaintext", prefix);
		return take_dek(a, path, it->dek);
	}
	snprintf(path, sizeof(path), "%sciphertext", prefix);
	return take_blob(a, path, it->out, it->out_cap, it->out_len, it->version);
}

/*
 * send_items - @n (1..MAX_BATCH) items linked from @first as one request;
 * sets every item's rc.  The body of an encrypt holds DEKs, so it lives in
 * secmem (so does every answer: kms/http.h).
 */
static void send_items(struct vault_kms *vk, enum item_op op, struct item *first, size_t n)
{
	const size_t cap = 64 + n * ITEM_JSON_MAX;
	char *body = secmem_alloc(cap), prefix[48];
	struct vault_answer a;
	struct item *it;
	size_t len, count = 0, i;
	int rc;

	rc = body ? items_body(op, first, n, body, cap, &len) : -ENOMEM;
	if (rc == 0)
		rc = vault_call(vk, "POST", op_path[op], body, len, &a, NULL, 0);
	secmem_free(body, cap);
	if (rc == 0 && n > 1 &&
	    (json_array_len(a.doc, "data.batch_results", &count) < 0 || count != n)) {
		answer_free(&a);
		rc = -EIO; /* not an answer to this batch */
	}
	for (it = first, i = 0; i < n; it = it->next, i++) {
		if (rc < 0) {
			it->rc = rc;
			continue;
		}
		if (n == 1)
			snprintf(prefix, sizeof(prefix), "data.");
		else
			snprintf(prefix, sizeof(prefix), "data.batch_results[%zu].", i);
		it->rc = take_result(&a, prefix, op, it);
	}
	if (rc == 0)
		answer_free(&a);
}

/*
 * send_many - @n items in requests of up to MAX_BATCH.  A request is only
 * started while a whole call still fits in the deadline; items left over
 * then fail with -EAGAIN.
 */
static void send_many(struct vault_kms *vk, enum item_op op, struct item *items, size_t n)
{
	const int64_t deadline = now_ms() + vk->deadline_ms;
	size_t done, k, i;

	for (done = 0; done < n; done += k) {
		k = n - done < MAX_BATCH ? n - done : MAX_BATCH;
		if (done > 0 && now_ms() + vk->call_ms > deadline) {
			for (i = done; i < n; i++)
				items[i].rc = -EAGAIN;
			return;
		}
		for (i = done; i + 1 < done + k; i++)
			items[i].next = &items[i + 1];
		send_items(vk, op, &items[done], k);
	}
}

static void queue_init(struct item_queue *q)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &attr);
	pthread_condattr_destroy(&attr);
	pthread_mutex_init(&q->lock, NULL);
	q->head = NULL;
	q->tail = &q->head;
}

static void queue_destroy(struct item_queue *q)
{
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
}

/* queue_send - @item joins @q and returns once some thread (maybe this one) sent it: its rc. */
static int queue_send(struct vault_kms *vk, struct item_queue *q, enum item_op op,
		      struct item *item)
{
	struct timespec until;
	int64_t give_up;

	item->queued_ms = now_ms();
	give_up = item->queued_ms + vk->queue_wait_ms;
	pthread_mutex_lock(&q->lock);
	*q->tail = item;
	q->tail = &item->next;
	while (!item->done) {
		struct item *first, *it;
		size_t n = 0;

		if (item->taken) {
			/* Sent by another thread, in a call bounded by vk->call_ms. */
			pthread_cond_wait(&q->cond, &q->lock);
			continue;
		}
		if (q->in_flight > 0 && now_ms() < give_up) {
			until.tv_sec = give_up / 1000;
			until.tv_nsec = (give_up % 1000) * 1000000;
			pthread_cond_timedwait(&q->cond, &q->lock, &until);
			continue;
		}
		/* Take up to MAX_BATCH waiting items from the head (the oldest; ours among
		 * them or older than ours) and send them. */
		first = q->head;
		for (it = first; it && n < MAX_BATCH; it = it->next, n++)
			it->taken = true;
		q->head = it;
		if (!it)
			q->tail = &q->head;
		q->in_flight++;
		pthread_mutex_unlock(&q->lock);
		send_items(vk, op, first, n);
		pthread_mutex_lock(&q->lock);
		for (it = first; n--; it = it->next)
			it->done = true;
		q->in_flight--;
		pthread_cond_broadcast(&q->cond);
	}
	pthread_mutex_unlock(&q->lock);
	return item->rc;
}

/*
 * vault_wrap - Transit encrypt of the caller's DEK.  The blob is the same
 * "vault:vN:..." ciphertext datakey/plaintext returns (same key, same
 * derivation from the context), so unwrap and rewrap take it as they take a
 * generated one.
 */
static int vault_wrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek,
		      uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct item item = {
		.ctx = ctx, .in = dek, .in_len = KMS_DEK_LEN, .out = blob, .out_cap = blob_cap,
		.out_len = blob_len, .version = version,
	};

	send_items(kms->priv, OP_ENCRYPT, &item, 1);
	return item.rc;
}

static void vault_wrap_many(struct kms *kms, struct kms_wrap_item *items, size_t n)
{
	struct item *batch = calloc(n, sizeof(*batch));
	size_t i;

	if (!batch) {
		for (i = 0; i < n; i++)
			items[i].rc = -ENOMEM;
		return;
	}
	for (i = 0; i < n; i++)
		batch[i] = (struct item){
			.ctx = items[i].ctx, .in = items[i].dek, .in_len = KMS_DEK_LEN,
			.out = items[i].blob, .out_cap = items[i].blob_cap,
			.out_len = &items[i].blob_len, .version = &items[i].version,
		};
	send_many(kms->priv, OP_ENCRYPT, batch, n);
	for (i = 0; i < n; i++)
		items[i].rc = batch[i].rc;
	free(batch);
}

/* blob_ok - a Transit ciphertext of a size we store; anything else is not ours to send. */
static bool blob_ok(const uint8_t *blob, size_t blob_len)
{
	uint32_t version;

	return blob_len <= VAULT_MAX_BLOB && vault_blob_parse_version(blob, blob_len, &version) == 0;
}

static int vault_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
			size_t blob_len, uint8_t *dek)
{
	struct item item = { .ctx = ctx, .in = blob, .in_len = blob_len, .dek = dek };

	if (!blob_ok(blob, blob_len))
		return -EBADMSG;
	send_items(kms->priv, OP_DECRYPT, &item, 1);
	return item.rc;
}

static void vault_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n)
{
	struct item *batch = calloc(n, sizeof(*batch));
	size_t i, k = 0;

	for (i = 0; i < n; i++) {
		items[i].rc = blob_ok(items[i].blob, items[i].blob_len) ? 0 : -EBADMSG;
		if (items[i].rc == 0 && !batch)
			items[i].rc = -ENOMEM;
		if (items[i].rc == 0)
			batch[k++] = (struct item){
				.ctx = items[i].ctx, .in = items[i].blob,
				.in_len = items[i].blob_len, .dek = items[i].dek,
			};
	}
	if (k)
		send_many(kms->priv, OP_DECRYPT, batch, k);
	for (i = 0, k = 0; i < n; i++)
		if (items[i].rc == 0)
			items[i].rc = batch[k++].rc;
	free(batch);
}

static int vault_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
			size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
			uint32_t *version)
{
	struct vault_kms *vk = kms->priv;
	struct item item = {
		.ctx = ctx, .in = blob, .in_len = blob_len, .out = out, .out_cap = out_cap,
		.out_len = out_len, .version = version,
	};

	if (!blob_ok(blob, blob_len))
		return -EBADMSG;
	return queue_send(vk, &vk->rewrap_queue, OP_REWRAP, &item);
}

static int vault_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len,
			      uint32_t *version)
{
	(void)kms;
	return vault_blob_parse_version(blob, blob_len, version);
}

/*
 * read_key - GET the key, by @deadline: its latest version, refusing a key
 * Transit would not bind the context with.
 */
static int read_key(struct vault_kms *vk, uint64_t deadline, uint32_t *latest, char *err,
		    size_t err_len)
{
	struct vault_answer a;
	bool derived = false;
	int64_t v = 0;
	int rc;

	rc = vault_call_until(vk, deadline, "GET", "keys", NULL, 0, &a, err, err_len);
	if (rc < 0)
		return rc;
	if (json_get_int(a.doc, "data.latest_version", &v) < 0 || v < 1 || v > UINT32_MAX) {
		rc = kms_errf(err, err_len, -EIO, "Vault at %s: key %s/%s has no latest_version",
			      vk->address, vk->mount, vk->key);
	} else if (json_get_bool(a.doc, "data.derived", &derived) < 0 || !derived) {
		rc = kms_errf(err, err_len, -EINVAL,
			      "Transit key %s/%s at %s is not a derived key: Vault would ignore "
			      "each file's context, so a wrapped key could be moved to another "
			      "file or volume.  Use a key made with derived=true (vault write -f "
			      "%s/keys/NAME derived=true)",
			      vk->mount, vk->key, vk->address, vk->mount);
	} else {
		*latest = (uint32_t)v;
	}
	answer_free(&a);
	return rc;
}

/*
 * vault_current_version - the key's latest version as Vault says it now.
 * Never a cached answer from before the call: a rotation started right after
 * `vault write -f .../rotate` must target the new version.  Callers arriving
 * while a read is in flight wait for the next read, which starts after they
 * called, so N concurrent callers cost two GETs, not N.  A caller waits at
 * most vk->queue_wait_ms for a read ahead to end before it starts its own,
 * and its own read has only what is left of its deadline, so it is answered
 * within the deadline.
 */
static int vault_current_version(struct kms *kms, uint32_t *version)
{
	struct vault_kms *vk = kms->priv;
	const int64_t give_up = now_ms() + vk->queue_wait_ms;
	struct timespec until = { .tv_sec = give_up / 1000, .tv_nsec = give_up % 1000 * 1000000 };
	uint64_t deadline = http_deadline(vk->http), target, seq;
	uint32_t latest = 0;
	int rc;

	pthread_mutex_lock(&vk->version_lock);
	target = vk->read_started + 1;
	while (vk->read_done < target) {
		if (vk->reading > 0 && vk->read_started >= target) {
			/* A read that began after our call: its answer will do. */
			pthread_cond_wait(&vk->version_cond, &vk->version_lock);
			continue;
		}
		if (vk->reading > 0 && now_ms() < give_up) {
			pthread_cond_timedwait(&vk->version_cond, &vk->version_lock, &until);
			continue;
		}
		vk->reading++;
		seq = ++vk->read_started;
		pthread_mutex_unlock(&vk->version_lock);
		rc = read_key(vk, deadline, &latest, NULL, 0);
		pthread_mutex_lock(&vk->version_lock);
		/* Reads may end out of order: the latest-begun finished read is the answer. */
		if (seq > vk->read_done) {
			vk->read_rc = rc;
			if (rc == 0)
				vk->latest = latest;
			vk->read_done = seq;
		}
		vk->reading--;
		pthread_cond_broadcast(&vk->version_cond);
	}
	rc = vk->read_rc;
	if (rc == 0)
		*version = vk->latest;
	pthread_mutex_unlock(&vk->version_lock);
	return rc;
}

/*
 * vault_destroy - delete the Transit key, every version (Vault deletes only
 * a key configured with deletion_allowed: otherwise -EPERM, saying how).
 */
static int vault_destroy(struct kms *kms, char *err, size_t err_len)
{
	struct vault_kms *vk = kms->priv;
	struct vault_answer a;
	int rc = vault_call(vk, "DELETE", "keys", NULL, 0, &a, err, err_len);

	if (rc == 0)
		answer_free(&a);
	else if (err && strstr(err, "deletion is not allowed"))
		rc = kms_errf(err, err_len, -EPERM,
			      "Vault at %s refuses to delete key %s/%s: allow it first (vault write "
			      "%s/keys/%s/config deletion_allowed=true), then shred again",
			      vk->address, vk->mount, vk->key, vk->mount, vk->key);
	return rc;
}

/* The HTTP client's breaker changed state: Vault became unreachable or reachable again. */
static void breaker_edge(void *arg, bool up)
{
	kms_report_reachability(arg, up);
}

static void vault_remote_stats(struct kms *kms, struct kms_remote_stats *out)
{
	struct vault_kms *vk = kms->priv;

	http_client_kms_stats(vk->http, out);
}

static void vault_close(struct kms *kms)
{
	struct vault_kms *vk = kms->priv;

	if (!vk)
		return;
	http_client_free(vk->http);
	free_token(vk->token_header);
	pthread_rwlock_destroy(&vk->token_lock);
	pthread_mutex_destroy(&vk->version_lock);
	pthread_cond_destroy(&vk->version_cond);
	queue_destroy(&vk->rewrap_queue);
	free(vk);
	kms->priv = NULL;
}

/* ---- settings --------------------------------------------------------------------------------- */

/* setting - [kms] @name, else environment @env (may be NULL), else NULL; empty counts as unset. */
static const char *setting(const dictionary *ini, const char *name, const char *env)
{
	char key[64];
	const char *v;

	snprintf(key, sizeof(key), "kms:%s", name);
	v = iniparser_getstring(ini, key, NULL);
	if ((!v || !*v) && env)
		v = getenv(env);
	return v && *v ? v : NULL;
}

/* name_ok - a key, mount or namespace name: [A-Za-z0-9._-], '/' inside (mount, namespace) only. */
static bool name_ok(const char *s, bool slashes)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > MAX_NAME || s[0] == '/' || s[n - 1] == '/' || strstr(s, "//"))
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || (slashes && c == '/')))
			return false;
	}
	return !strstr(s, "..");
}

static int copy_path(char *dst, size_t cap, const char *value, const char *what, char *err,
		     size_t err_len)
{
	if (!value)
		return 0;
	if (value[0] != '/' || strlen(value) >= cap)
		return kms_errf(err, err_len, -EINVAL, "setting kms:%s must be an absolute path",
				what);
	strcpy(dst, value);
	return 0;
}

static int parse_settings(struct vault_kms *vk, const dictionary *ini, long *deadline_ms,
			  char *err, size_t err_len)
{
	const char *unknown = config_unknown_key(
		ini, "kms", known_settings, sizeof(known_settings) / sizeof(known_settings[0]));
	const char *address = setting(ini, "address", "VAULT_ADDR");
	const char *key = setting(ini, "key", NULL);
	const char *mount = setting(ini, "mount", NULL);
	const char *ns = setting(ini, "namespace", "VAULT_NAMESPACE");
	const char *deadline = setting(ini, "deadline_ms", NULL);
	size_t alen;
	char *end;
	int rc;

	if (unknown)
		return kms_errf(err, err_len, -EINVAL,
				"setting %s is not known to the vault provider (known: provider, "
				"address, key, mount, namespace, token_file, ca_file, ca_dir, "
				"deadline_ms)",
				unknown);
	if (!address || (strncmp(address, "https://", 8) != 0 &&
			 strncmp(address, "http://", 7) != 0))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:address (or $VAULT_ADDR) must be Vault's URL, "
				"https://HOST:PORT");
	if (!http_url_private(address))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:address (or $VAULT_ADDR) is plain http:// to another host: "
				"the token and plaintext DEKs would cross the network in the clear; use "
				"https://");
	alen = strlen(address);
	while (alen && address[alen - 1] == '/')
		alen--;
	if (alen >= sizeof(vk->address) || strpbrk(address, " \t\r\n\"?#"))
		return kms_errf(err, err_len, -EINVAL, "setting kms:address is not a usable URL");
	memcpy(vk->address, address, alen);
	vk->address[alen] = '\0';
	if (!key || !name_ok(key, false))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:key must name the Transit key (letters, digits, '.', "
				"'_', '-')");
	strcpy(vk->key, key);
	mount = mount ? mount : "transit";
	if (!name_ok(mount, true))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:mount must be the Transit mount path, e.g. transit");
	strcpy(vk->mount, mount);
	if (ns) {
		if (!name_ok(ns, true))
			return kms_errf(err, err_len, -EINVAL,
					"setting kms:namespace (or $VAULT_NAMESPACE) is not a "
					"namespace path");
		snprintf(vk->ns_header, sizeof(vk->ns_header), "X-Vault-Namespace: %s", ns);
	}
	rc = copy_path(vk->token_file, sizeof(vk->token_file), setting(ini, "token_file", NULL),
		       "token_file", err, err_len);
	if (rc == 0)
		rc = copy_path(vk->ca_file, sizeof(vk->ca_file),
			       setting(ini, "ca_file", "VAULT_CACERT"), "ca_file", err, err_len);
	if (rc == 0)
		rc = copy_path(vk->ca_dir, sizeof(vk->ca_dir), setting(ini, "ca_dir", "VAULT_CAPATH"),
			       "ca_dir", err, err_len);
	if (rc < 0)
		return rc;
	*deadline_ms = DEFAULT_DEADLINE_MS;
	if (deadline) {
		errno = 0;
		*deadline_ms = strtol(deadline, &end, 10);
		if (errno || *end || *deadline_ms < 100 || *deadline_ms > 600000)
			return kms_errf(err, err_len, -EINVAL,
					"setting kms:deadline_ms wants 100..600000 milliseconds");
	}
	return 0;
}

static int vault_open(struct kms *kms, const dictionary *ini, char *err, size_t err_len)
{
	struct http_settings hs = { .classify = vault_classify };
	pthread_rwlockattr_t attr;
	pthread_condattr_t cattr;
	struct vault_kms *vk;
	struct stat st;
	long deadline_ms = DEFAULT_DEADLINE_MS;
	uint32_t latest;
	int rc;

	vk = calloc(1, sizeof(*vk));
	if (!vk)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	/* Calls hold the read lock for a whole HTTP exchange: a token swap must not starve. */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&vk->token_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&vk->version_lock, NULL);
	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&vk->version_cond, &cattr);
	pthread_condattr_destroy(&cattr);
	queue_init(&vk->rewrap_queue);
	kms->priv = vk;
	rc = parse_settings(vk, ini, &deadline_ms, err, err_len);
	if (rc < 0)
		goto fail;
	if (vk->token_file[0]) {
		rc = read_token_file(vk->token_file, &vk->token_header, &st, err, err_len);
		if (rc == 0) {
			vk->token_ino = st.st_ino;
			vk->token_mtime = st.st_mtim;
		}
	} else {
		rc = token_from_env(&vk->token_header, err, err_len);
	}
	if (rc < 0)
		goto fail;
	hs.ca_file = vk->ca_file[0] ? vk->ca_file : NULL;
	hs.ca_dir = vk->ca_dir[0] ? vk->ca_dir : NULL;
	vk->deadline_ms = deadline_ms;
	vk->queue_wait_ms = deadline_ms / 10 < MAX_QUEUE_WAIT_MS ? deadline_ms / 10 : MAX_QUEUE_WAIT_MS;
	vk->call_ms = deadline_ms - vk->queue_wait_ms;
	hs.deadline_ms = vk->call_ms;
	hs.attempt_timeout_ms = vk->call_ms;
	hs.on_state = breaker_edge;
	hs.state_arg = kms;
	rc = http_client_new(&hs, &vk->http, err, err_len);
	if (rc < 0)
		goto fail;
	/* Address, TLS, token, namespace, key and its kind, all proven once here. */
	rc = read_key(vk, http_deadline(vk->http), &latest, err, err_len);
	if (rc == -ENOENT)
		kms_errf(err, err_len, -ENOENT,
			 "Vault at %s has no Transit key %s/%s%s%s: create it with 'vault write -f "
			 "%s/keys/%s derived=true'",
			 vk->address, vk->mount, vk->key, vk->ns_header[0] ? " in namespace " : "",
			 vk->ns_header[0] ? vk->ns_header + strlen("X-Vault-Namespace: ") : "",
			 vk->mount, vk->key);
	else if (rc == -EACCES)
		kms_errf(err, err_len, -EACCES,
			 "Vault at %s denied reading key %s/%s: check the token (%s%s) and its "
			 "policy",
			 vk->address, vk->mount, vk->key,
			 vk->token_file[0] ? "kms:token_file " : "$VAULT_TOKEN", vk->token_file);
	if (rc < 0)
		goto fail;
	/* The reference names the key wherever Vault lives: moving Vault to a
	 * new address keeps every record valid; another key or namespace does not. */
	if ((size_t)snprintf(kms->key_ref, sizeof(kms->key_ref), "%s%s%s%s/%s", VAULT_REF_PREFIX,
			     vk->ns_header[0] ? vk->ns_header + strlen("X-Vault-Namespace: ") : "",
			     vk->ns_header[0] ? "/" : "", vk->mount,
			     vk->key) >= sizeof(kms->key_ref)) {
		rc = kms_errf(err, err_len, -EINVAL,
			      "namespace, mount and key name together are too long (at most %d "
			      "characters)",
			      KMS_MAX_REF - (int)strlen(VAULT_REF_PREFIX) - 2);
		goto fail;
	}
	kms->max_blob_len = VAULT_MAX_BLOB;
	return 0;
fail:
	vault_close(kms);
	return rc;
}

const struct kms_ops kms_vault_ops = {
	.name = "vault",
	.open = vault_open,
	.generate = vault_generate,
	.unwrap = vault_unwrap,
	.wrap = vault_wrap,
	.unwrap_many = vault_unwrap_many,
	.wrap_many = vault_wrap_many,
	.rewrap = vault_rewrap,
	.blob_version = vault_blob_version,
	.current_version = vault_current_version,
	.close = vault_close,
	.remote_stats = vault_remote_stats,
	.destroy = vault_destroy,
};
