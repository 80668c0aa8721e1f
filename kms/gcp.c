// SPDX-License-Identifier: MIT
/*
 * The `gcp` provider: Google Cloud KMS symmetric keys over the REST API
 * (v1), through the shared client of kms/http.h.
 *
 *   wrap, generate   POST ENDPOINT/v1/KEY:encrypt   (kms/gcp.h: the body; the DEK is drawn here)
 *   unwrap           POST ENDPOINT/v1/KEY:decrypt   {ciphertext, ciphertextCrc32c, AAD, its CRC32C}
 *   rewrap           decrypt, then encrypt (Cloud KMS has no re-encrypt: the DEK passes through us)
 *   current_version  GET  ENDPOINT/v1/KEY           primary.name ends in the primary version
 *
 * Integrity, as "Verifying end-to-end data integrity" in Cloud KMS's
 * documentation asks: an encrypt answer must say verifiedPlaintextCrc32c
 * and verifiedAdditionalAuthenticatedDataCrc32c, and its ciphertext must
 * match ciphertextCrc32c; a decrypt answer's plaintext must match
 * plaintextCrc32c.  A mismatch (corruption on the way) is retried once, then
 * the call fails with -EIO.
 *
 * Settings, section [kms] (references only; credentials never go here):
 *   provider          = gcp
 *   key               = projects/P/locations/L/keyRings/R/cryptoKeys/K (required)
 *   endpoint          = https://cloudkms.googleapis.com (override: a regional or private endpoint)
 *   credentials_file  = a service-account key file (JSON), else $GOOGLE_APPLICATION_CREDENTIALS;
 *                       neither: the metadata server's default service account
 *   metadata_url      = the metadata server's token URL (else http://$GCE_METADATA_HOST/...,
 *                       else http://metadata.google.internal/...)
 *   plus the kms/httpcfg.h settings.
 * Tokens: kms/oauth.h.  A service-account key is read again for every token
 * (once an hour) and its private key used only to sign that token's JWT.
 */

#include "kms/gcp.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/base64.h"
#include "crypto/bigendian.h"
#include "crypto/random.h"
#include "crypto/secmem.h"
#include "kms/config.h"
#include "kms/crc32c.h"
#include "kms/fanout.h"
#include "kms/http.h"
#include "kms/httpcfg.h"
#include "kms/json.h"
#include "kms/jwt.h"
#include "kms/keyring.h"
#include "kms/oauth.h"

#define DEFAULT_ENDPOINT "https://cloudkms.googleapis.com"
#define METADATA_PATH "/computeMetadata/v1/instance/service-accounts/default/token"
#define SCOPE "https://www.googleapis.com/auth/cloudkms"
#define MAX_KEY 400
#define MAX_URL 1024
#define MAX_SA_FILE (64 * 1024)
#define MAX_PEM 8192
#define MAX_ASSERTION 8192
#define MAX_FORM (MAX_ASSERTION + 256)
#define MAX_ANSWER_FIELD 1024 /* base64 of a ciphertext or plaintext, names */
/* current_version() asks Cloud KMS at most this often; new files use a version up to VERSION_TTL_MS old. */
#define VERSION_CHECK_MS 1000
#define VERSION_TTL_MS 60000

struct gcp_kms {
	struct kms *kms;
	struct http_client *http;
	struct oauth_cache tokens;
	char endpoint[512];
	char key[MAX_KEY + 1];
	char sa_file[4096];	/* empty: the metadata server */
	char metadata_url[MAX_URL];

	pthread_mutex_t lock; /* guards the version below */
	uint32_t primary;
	uint64_t primary_at_ms; /* 0: never read */
};

static const char *const known_settings[] = {
	"kms:provider", "kms:key", "kms:endpoint", "kms:credentials_file", "kms:metadata_url",
	HTTPCFG_KEYS,
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- blob, request, errors (pure; checked against docs/FORMAT.md) ---- */

int gcp_blob_frame(uint32_t version, const uint8_t *ct, size_t ct_len, uint8_t *out, size_t cap,
		   size_t *out_len)
{
	if (version == 0 || !ct || ct_len == 0 || ct_len > GCP_MAX_CIPHERTEXT || !out || !out_len)
		return -EINVAL;
	if (cap < GCP_BLOB_HEADER + ct_len)
		return -ENOSPC;
	out[0] = GCP_BLOB_FORMAT;
	put_be32(out + 1, version);
	memcpy(out + GCP_BLOB_HEADER, ct, ct_len);
	*out_len = GCP_BLOB_HEADER + ct_len;
	return 0;
}

int gcp_blob_parse(const uint8_t *blob, size_t len, uint32_t *version, const uint8_t **ct,
		   size_t *ct_len)
{
	if (!blob || len <= GCP_BLOB_HEADER || len > GCP_MAX_BLOB || blob[0] != GCP_BLOB_FORMAT ||
	    get_be32(blob + 1) == 0)
		return -EBADMSG;
	*version = get_be32(blob + 1);
	*ct = blob + GCP_BLOB_HEADER;
	*ct_len = len - GCP_BLOB_HEADER;
	return 0;
}

static void context_aad(const struct kms_context *ctx, uint8_t aad[GCP_AAD_LEN])
{
	memcpy(aad, ctx->volume_uuid, 16);
	memcpy(aad + 16, ctx->file_id, 16);
}

/* write_b64_field - "@name": base64(@data), "@name"Crc32c: "crc32c(@data)". */
static void write_b64_field(struct json_writer *w, const char *name, const uint8_t *data,
			    size_t len, char *b64, size_t b64_cap)
{
	char crc_name[64], crc[16];

	if (base64_encode(data, len, b64, b64_cap) < 0) {
		w->err = w->err ? w->err : -ENOSPC;
		return;
	}
	json_write_key(w, name);
	json_write_string(w, b64);
	snprintf(crc_name, sizeof(crc_name), "%sCrc32c", name);
	snprintf(crc, sizeof(crc), "%u", crc32c(data, len));
	json_write_key(w, crc_name);
	json_write_string(w, crc);
}

int gcp_encrypt_request(const struct kms_context *ctx, const uint8_t *dek, char *out, size_t cap,
			size_t *len)
{
	char b64[BASE64_ENCODED_LEN(GCP_AAD_LEN) + 1];
	uint8_t aad[GCP_AAD_LEN];
	struct json_writer w;
	int rc;

	context_aad(ctx, aad);
	json_writer_init(&w, out, cap);
	json_write_object_begin(&w);
	write_b64_field(&w, "plaintext", dek, KMS_DEK_LEN, b64, sizeof(b64));
	write_b64_field(&w, "additionalAuthenticatedData", aad, sizeof(aad), b64, sizeof(b64));
	json_write_object_end(&w);
	rc = json_writer_finish(&w, len);
	secmem_wipe(b64, sizeof(b64));
	return rc < 0 ? -ENOSPC : 0;
}

int gcp_map_error(long status, const char *code, const char *message, int decrypt)
{
	if (status == 401 || status == 403)
		return -EACCES;
	if (status == 404)
		return -ENOENT;
	if (status == 429 || status >= 500)
		return -EAGAIN;
	if (status == 400 && strcmp(code, "FAILED_PRECONDITION") == 0)
		return strstr(message, "DESTROY") ? -ENOENT : -EACCES;
	if (status == 400)
		return decrypt ? -EBADMSG : -EINVAL;
	return -EIO;
}

/* ---- tokens ---- */

/*
 * service_account_token - the jwt-bearer grant of a service-account key
 * file: an RS256 JWT (iss = client_email, scope = cloudkms, aud =
 * token_uri) signed with the file's private key, traded at token_uri.
 */
static int service_account_token(struct gcp_kms *gk, uint64_t deadline, char *token, size_t cap,
				 int64_t *expires_in, char *err, size_t err_len)
{
	struct sa {
		char email[256], key_id[128], token_uri[MAX_URL], type[32];
		char pem[MAX_PEM];
		char header[256], claims[2048];
		char jwt[MAX_ASSERTION];
		char form[MAX_FORM];
	} *sa = secmem_alloc(sizeof(*sa));
	struct json_doc *doc = NULL;
	char *file = NULL;
	size_t file_len = 0, pem_len = 0, form_len = 0;
	time_t now = time(NULL);
	int rc;

	if (!sa)
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	rc = oauth_read_secret_file(gk->sa_file, "credentials_file", MAX_SA_FILE, &file, &file_len,
				    err, err_len);
	if (rc == 0 && (json_parse(file, file_len, &doc) < 0 ||
			json_get_string(doc, "type", sa->type, sizeof(sa->type), NULL) < 0 ||
			strcmp(sa->type, "service_account") != 0 ||
			json_get_string(doc, "client_email", sa->email, sizeof(sa->email), NULL) < 0 ||
			json_get_string(doc, "private_key", sa->pem, sizeof(sa->pem), &pem_len) < 0 ||
			json_get_string(doc, "token_uri", sa->token_uri, sizeof(sa->token_uri), NULL) <
				0))
		rc = kms_errf(err, err_len, -EINVAL,
			      "credentials_file %s is not a service-account key (type "
			      "service_account with client_email, private_key and token_uri)",
			      gk->sa_file);
	if (rc == 0 && (!http_url_private(sa->token_uri) || strpbrk(sa->email, "\"\\") ||
			strpbrk(sa->token_uri, "\"\\")))
		rc = kms_errf(err, err_len, -EINVAL,
			      "credentials_file %s: token_uri must be https:// (and names plain)",
			      gk->sa_file);
	if (rc == 0) {
		if (json_get_string(doc, "private_key_id", sa->key_id, sizeof(sa->key_id), NULL) < 0 ||
		    strpbrk(sa->key_id, "\"\\"))
			sa->key_id[0] = '\0';
		snprintf(sa->header, sizeof(sa->header), "{\"alg\":\"RS256\",\"typ\":\"JWT\"%s%s%s}",
			 sa->key_id[0] ? ",\"kid\":\"" : "", sa->key_id, sa->key_id[0] ? "\"" : "");
		snprintf(sa->claims, sizeof(sa->claims),
			 "{\"iss\":\"%s\",\"scope\":\"" SCOPE "\",\"aud\":\"%s\",\"iat\":%lld,"
			 "\"exp\":%lld}",
			 sa->email, sa->token_uri, (long long)now, (long long)now + 3600);
		rc = jwt_sign_rs256(sa->pem, pem_len, sa->header, sa->claims, sa->jwt,
				    sizeof(sa->jwt));
		if (rc < 0)
			rc = kms_errf(err, err_len, rc == -ENOMEM ? -ENOMEM : -EINVAL,
				      "credentials_file %s: cannot sign with its private_key",
				      gk->sa_file);
	}
	if (rc == 0) {
		sa->form[0] = '\0';
		oauth_form_add(sa->form, sizeof(sa->form), &form_len, "grant_type",
			       "urn:ietf:params:oauth:grant-type:jwt-bearer");
		if (oauth_form_add(sa->form, sizeof(sa->form), &form_len, "assertion", sa->jwt) < 0)
			rc = kms_errf(err, err_len, -EINVAL, "service-account assertion too long");
	}
	if (rc == 0)
		rc = oauth_token_call(gk->http, deadline, "Google token endpoint", "POST",
				      sa->token_uri, NULL, sa->form, form_len, token, cap,
				      expires_in, err, err_len);
	json_free(doc);
	if (file)
		secmem_free(file, MAX_SA_FILE);
	secmem_free(sa, sizeof(*sa));
	return rc;
}

/* The oauth_fetch_fn: a service-account key's token, or the metadata server's. */
static int gcp_fetch(void *arg, uint64_t deadline, char *token, size_t cap, int64_t *expires_in,
		     char *err, size_t err_len)
{
	static const char *const flavor[] = { "Metadata-Flavor: Google", NULL };
	struct gcp_kms *gk = arg;

	if (gk->sa_file[0])
		return service_account_token(gk, deadline, token, cap, expires_in, err, err_len);
	return oauth_token_call(gk->http, deadline, "GCE metadata server", "GET", gk->metadata_url,
				flavor, NULL, 0, token, cap, expires_in, err, err_len);
}

/* ---- calls ---- */

/* error_fields - error.status and error.message of a Cloud KMS error body, or "". */
static void error_fields(const struct http_response *resp, char *code, size_t code_cap,
			 char *message, size_t message_cap)
{
	struct json_doc *doc = NULL;

	code[0] = message[0] = '\0';
	if (!resp->body || json_parse((const char *)resp->body, resp->len, &doc) < 0)
		return;
	if (json_get_string(doc, "error.status", code, code_cap, NULL) < 0)
		code[0] = '\0';
	if (json_get_string(doc, "error.message", message, message_cap, NULL) < 0)
		message[0] = '\0';
	json_free(doc);
}

/*
 * kms_call - @method on ENDPOINT/v1/KEY@suffix with JSON @body, by
 * @deadline.  A 401 drops the token and tries once more.  0 and the parsed
 * 200 answer in *@doc over @resp (free both), or a kms.h errno with the
 * API's error status in @err.
 */
static int kms_call(struct gcp_kms *gk, uint64_t deadline, const char *method, const char *suffix,
		    const char *body, size_t body_len, bool decrypt, struct http_response *resp,
		    struct json_doc **doc, char *err, size_t err_len)
{
	char url[MAX_URL], http_err[256], code[48], message[256], *auth;
	const char *headers[4];
	uint64_t gen;
	int rc, attempt;

	*doc = NULL;
	memset(resp, 0, sizeof(*resp));
	snprintf(url, sizeof(url), "%s/v1/%s%s", gk->endpoint, gk->key, suffix);
	auth = secmem_alloc(OAUTH_MAX_HEADER);
	if (!auth)
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	for (attempt = 0;; attempt++) {
		struct http_request req = { .method = method, .url = url, .headers = headers,
					    .body = body, .body_len = body_len,
					    .deadline_at_ms = deadline };
		size_t n = 0;

		rc = oauth_header(&gk->tokens, deadline, auth, &gen, err, err_len);
		if (rc < 0)
			break;
		headers[n++] = auth;
		if (body)
			headers[n++] = "Content-Type: application/json";
		headers[n] = NULL;
		rc = http_request(gk->http, &req, resp, http_err, sizeof(http_err));
		if (rc < 0) {
			rc = kms_errf(err, err_len, rc == -EAGAIN ? -EAGAIN : -EIO, "Cloud KMS %s: %s",
				      gk->endpoint, http_err);
			break;
		}
		if (resp->status == 401 && attempt == 0) {
			oauth_reject(&gk->tokens, gen);
			http_response_free(resp);
			continue;
		}
		if (resp->status != 200) {
			error_fields(resp, code, sizeof(code), message, sizeof(message));
			rc = kms_errf(err, err_len,
				      gcp_map_error(resp->status, code, message, decrypt),
				      "Cloud KMS %s answered HTTP %ld (%s) for %s", gk->endpoint,
				      resp->status, code[0] ? code : "no status", gk->key);
			break;
		}
		if (!resp->body || json_parse((const char *)resp->body, resp->len, doc) < 0)
			rc = kms_errf(err, err_len, -EIO, "Cloud KMS %s sent no JSON", gk->endpoint);
		break;
	}
	secmem_free(auth, OAUTH_MAX_HEADER);
	return rc;
}

/* version_of - N of "@key/cryptoKeyVersions/N" at @path of @doc; 0 if it names another key. */
static uint32_t version_of(const struct gcp_kms *gk, const struct json_doc *doc, const char *path)
{
	static const char mid[] = "/cryptoKeyVersions/";
	char name[MAX_KEY + 64], *end;
	size_t klen = strlen(gk->key);
	unsigned long v;

	if (json_get_string(doc, path, name, sizeof(name), NULL) < 0 ||
	    strncmp(name, gk->key, klen) != 0 || strncmp(name + klen, mid, sizeof(mid) - 1) != 0)
		return 0;
	errno = 0;
	v = strtoul(name + klen + sizeof(mid) - 1, &end, 10);
	return errno || *end || v == 0 || v > UINT32_MAX ? 0 : (uint32_t)v;
}

/* crc_matches - the decimal-string CRC32C at @path of @doc is crc32c(@data). */
static bool crc_matches(const struct json_doc *doc, const char *path, const uint8_t *data,
			size_t len)
{
	char text[16], *end;
	unsigned long v;

	if (json_get_string(doc, path, text, sizeof(text), NULL) < 0)
		return false;
	errno = 0;
	v = strtoul(text, &end, 10);
	return !errno && end != text && !*end && v == crc32c(data, len);
}

/* get_b64 - the base64 field @path of @doc decoded into @out (secmem scratch). */
static int get_b64(const struct json_doc *doc, const char *path, uint8_t *out, size_t cap,
		   size_t *out_len)
{
	char *text = secmem_alloc(MAX_ANSWER_FIELD);
	size_t len;
	int rc;

	if (!text)
		return -ENOMEM;
	rc = json_get_string(doc, path, text, MAX_ANSWER_FIELD, &len);
	if (rc == 0)
		rc = base64_decode(text, len, out, cap, out_len);
	secmem_free(text, MAX_ANSWER_FIELD);
	return rc < 0 ? (rc == -ENOMEM ? -ENOMEM : -EIO) : 0;
}

/* ---- versions ---- */

/* primary_version - the key's primary version, asked of Cloud KMS if our answer is older than @max_age_ms. */
static int primary_version(struct gcp_kms *gk, uint64_t max_age_ms, uint64_t deadline,
			   uint32_t *version, char *err, size_t err_len)
{
	struct http_response resp;
	struct json_doc *doc;
	char purpose[32] = "", state[32];
	uint32_t v = 0;
	int rc;

	pthread_mutex_lock(&gk->lock);
	if (gk->primary_at_ms && now_ms() - gk->primary_at_ms < max_age_ms) {
		*version = gk->primary;
		pthread_mutex_unlock(&gk->lock);
		return 0;
	}
	pthread_mutex_unlock(&gk->lock);
	rc = kms_call(gk, deadline, "GET", "", NULL, 0, false, &resp, &doc, err, err_len);
	if (rc == 0 && (json_get_string(doc, "purpose", purpose, sizeof(purpose), NULL) < 0 ||
			strcmp(purpose, "ENCRYPT_DECRYPT") != 0))
		rc = kms_errf(err, err_len, -EINVAL,
			      "Cloud KMS key %s is not a symmetric ENCRYPT_DECRYPT key", gk->key);
	if (rc == 0 && (v = version_of(gk, doc, "primary.name")) == 0)
		rc = kms_errf(err, err_len, -EACCES, "Cloud KMS key %s has no primary version",
			      gk->key);
	/* A primary scheduled for destruction (a shredded key) is a refusal, not a version gone. */
	if (rc == 0 && json_get_string(doc, "primary.state", state, sizeof(state), NULL) == 0 &&
	    strncmp(state, "DESTROY", 7) == 0)
		rc = kms_errf(err, err_len, -EACCES, "Cloud KMS key %s: its primary version %u is %s "
			      "(the key was shredded, or its versions destroyed)", gk->key, v, state);
	json_free(doc);
	http_response_free(&resp);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&gk->lock);
	gk->primary = v;
	gk->primary_at_ms = now_ms();
	pthread_mutex_unlock(&gk->lock);
	*version = v;
	return 0;
}

/* ---- operations ---- */

/*
 * encrypt_dek - :encrypt @dek for @ctx, checked end to end, framed with the
 * version the answer names: Cloud KMS encrypts with the primary version and
 * says which, so a blob's version is always the truth (the primary we read
 * only tells rotation what to aim for).
 */
static int encrypt_dek(struct gcp_kms *gk, const struct kms_context *ctx, const uint8_t *dek,
		       uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	const uint64_t deadline = http_deadline(gk->http);
	char *body = secmem_alloc(GCP_MAX_REQUEST);
	uint8_t ct[GCP_MAX_CIPHERTEXT];
	size_t len = 0, ct_len = 0;
	uint32_t v = 0;
	int rc = body ? gcp_encrypt_request(ctx, dek, body, GCP_MAX_REQUEST, &len) : -ENOMEM;
	int attempt;

	for (attempt = 0; rc == 0 && attempt < 2; attempt++) {
		struct http_response resp;
		struct json_doc *doc;
		bool plain_ok = false, aad_ok = false;

		rc = kms_call(gk, deadline, "POST", ":encrypt", body, len, false, &resp, &doc, NULL,
			      0);
		if (rc == 0) {
			json_get_bool(doc, "verifiedPlaintextCrc32c", &plain_ok);
			json_get_bool(doc, "verifiedAdditionalAuthenticatedDataCrc32c", &aad_ok);
			v = version_of(gk, doc, "name");
			rc = get_b64(doc, "ciphertext", ct, sizeof(ct), &ct_len);
			/* Corrupted on the way, either way: try once more, then give up. */
			if (rc == 0 && (!plain_ok || !aad_ok ||
					!crc_matches(doc, "ciphertextCrc32c", ct, ct_len)))
				rc = -EILSEQ;
			if (rc == 0 && v == 0)
				rc = -EIO;
		}
		json_free(doc);
		http_response_free(&resp);
		if (rc != -EILSEQ)
			break;
		rc = attempt == 0 ? 0 : -EIO;
	}
	if (rc == 0)
		rc = gcp_blob_frame(v, ct, ct_len, blob, blob_cap, blob_len) < 0 ? -EIO : 0;
	if (rc == 0)
		*version = v;
	if (body)
		secmem_free(body, GCP_MAX_REQUEST);
	return rc;
}

static int gcp_wrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek,
		    uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	return encrypt_dek(kms->priv, ctx, dek, blob, blob_cap, blob_len, version);
}

static int gcp_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek,
			uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	int rc = crypto_random(dek, KMS_DEK_LEN);

	if (rc == 0)
		rc = encrypt_dek(kms->priv, ctx, dek, blob, blob_cap, blob_len, version);
	if (rc < 0)
		secmem_wipe(dek, KMS_DEK_LEN);
	return rc;
}

static int gcp_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *dek)
{
	struct gcp_kms *gk = kms->priv;
	const uint64_t deadline = http_deadline(gk->http);
	char body[GCP_MAX_REQUEST], b64[BASE64_ENCODED_LEN(GCP_MAX_CIPHERTEXT) + 1];
	uint8_t *plain = secmem_alloc(MAX_ANSWER_FIELD), aad[GCP_AAD_LEN];
	struct json_writer w;
	const uint8_t *ct;
	size_t ct_len, len = 0, plain_len = 0;
	uint32_t v;
	int rc = plain ? 0 : -ENOMEM, attempt;

	if (rc == 0 && gcp_blob_parse(blob, blob_len, &v, &ct, &ct_len) < 0)
		rc = -EBADMSG;
	if (rc == 0) {
		context_aad(ctx, aad);
		json_writer_init(&w, body, sizeof(body));
		json_write_object_begin(&w);
		write_b64_field(&w, "ciphertext", ct, ct_len, b64, sizeof(b64));
		write_b64_field(&w, "additionalAuthenticatedData", aad, sizeof(aad), b64,
				sizeof(b64));
		json_write_object_end(&w);
		rc = json_writer_finish(&w, &len) < 0 ? -EIO : 0;
	}
	for (attempt = 0; rc == 0 && attempt < 2; attempt++) {
		struct http_response resp;
		struct json_doc *doc;

		rc = kms_call(gk, deadline, "POST", ":decrypt", body, len, true, &resp, &doc, NULL,
			      0);
		if (rc == 0)
			rc = get_b64(doc, "plaintext", plain, MAX_ANSWER_FIELD, &plain_len);
		if (rc == 0 && !crc_matches(doc, "plaintextCrc32c", plain, plain_len))
			rc = -EILSEQ;
		if (rc == 0 && plain_len != KMS_DEK_LEN)
			rc = -EBADMSG; /* a ciphertext of something else under this key */
		json_free(doc);
		http_response_free(&resp);
		if (rc != -EILSEQ)
			break;
		rc = attempt == 0 ? 0 : -EIO;
	}
	if (rc == 0)
		memcpy(dek, plain, KMS_DEK_LEN);
	if (plain)
		secmem_free(plain, MAX_ANSWER_FIELD);
	return rc;
}

/* gcp_rewrap - Cloud KMS has no re-encrypt: decrypt, then encrypt under the primary version. */
static int gcp_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
		      uint32_t *version)
{
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN);
	int rc = dek ? gcp_unwrap(kms, ctx, blob, blob_len, dek) : -ENOMEM;

	if (rc == 0)
		rc = encrypt_dek(kms->priv, ctx, dek, out, out_cap, out_len, version);
	if (dek)
		secmem_free(dek, KMS_DEK_LEN);
	return rc;
}

static int gcp_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len,
			    uint32_t *version)
{
	const uint8_t *ct;
	size_t ct_len;

	(void)kms;
	return gcp_blob_parse(blob, blob_len, version, &ct, &ct_len);
}

static int gcp_current_version(struct kms *kms, uint32_t *version)
{
	struct gcp_kms *gk = kms->priv;

	return primary_version(gk, VERSION_CHECK_MS, http_deadline(gk->http), version, NULL, 0);
}

/* ---- shred ---- */

/*
 * destroy_version - :destroy version @v (Cloud KMS schedules it: state
 * DESTROY_SCHEDULED, every use refused at once, the material gone at the
 * answer's destroyTime, kept in @when).
 */
static int destroy_version(struct gcp_kms *gk, uint64_t deadline, uint32_t v, char *when,
			   size_t when_cap, char *err, size_t err_len)
{
	struct http_response resp;
	struct json_doc *doc;
	char suffix[64];
	int rc;

	snprintf(suffix, sizeof(suffix), "/cryptoKeyVersions/%u:destroy", v);
	rc = kms_call(gk, deadline, "POST", suffix, "{}", 2, false, &resp, &doc, err, err_len);
	if (rc == 0 && json_get_string(doc, "destroyTime", when, when_cap, NULL) < 0)
		when[0] = '\0';
	json_free(doc);
	http_response_free(&resp);
	return rc;
}

/* holds_material - whether a version in @state has key material left to destroy. */
static bool holds_material(const char *state)
{
	static const char *const none[] = { "DESTROYED", "DESTROY_SCHEDULED", "IMPORT_FAILED",
					    "GENERATION_FAILED" };
	size_t i;

	for (i = 0; i < sizeof(none) / sizeof(none[0]); i++)
		if (strcmp(state, none[i]) == 0)
			return false;
	return true;
}

/*
 * destroy_listed - :destroy every version of @doc's cryptoKeyVersions that
 * holds_material(); *@count gets how many were scheduled.
 */
static int destroy_listed(struct gcp_kms *gk, uint64_t deadline, const struct json_doc *doc,
			  unsigned *count, char *when, size_t when_cap, char *err, size_t err_len)
{
	char path[64], state[32];
	size_t n = 0, i;
	int rc = 0;

	if (json_array_len(doc, "cryptoKeyVersions", &n) < 0)
		n = 0; /* a key without versions lists none, and no field */
	for (i = 0; rc == 0 && i < n; i++) {
		uint32_t v;

		snprintf(path, sizeof(path), "cryptoKeyVersions[%zu].name", i);
		v = version_of(gk, doc, path);
		snprintf(path, sizeof(path), "cryptoKeyVersions[%zu].state", i);
		if (v == 0 || json_get_string(doc, path, state, sizeof(state), NULL) < 0)
			return kms_errf(err, err_len, -EIO, "Cloud KMS %s listed a version of %s "
					"without a name or state", gk->endpoint, gk->key);
		if (!holds_material(state))
			continue;
		rc = destroy_version(gk, deadline, v, when, when_cap, err, err_len);
		if (rc == 0)
			(*count)++;
		else if (rc == -ENOENT)
			rc = 0; /* scheduled or gone since the listing (FAILED_PRECONDITION, NOT_FOUND) */
	}
	return rc;
}

/*
 * gcp_destroy - Cloud KMS never destroys key material at once: each live
 * version is scheduled (DESTROY_SCHEDULED: refused from now on, destroyed
 * for good after the key's destroyScheduledDuration, 24 hours by default).
 * The listing is read page by page.  On success @err says when the
 * material goes for good.
 */
static int gcp_destroy(struct kms *kms, char *err, size_t err_len)
{
	struct gcp_kms *gk = kms->priv;
	const uint64_t deadline = http_deadline(gk->http);
	char form[MAX_ANSWER_FIELD + 64], suffix[sizeof(form) + 32], token[MAX_ANSWER_FIELD] = "";
	char when[64] = "", why[384] = "";
	unsigned count = 0;
	int rc;

	do {
		struct http_response resp;
		struct json_doc *doc;
		size_t len = 0;

		form[0] = '\0';
		rc = oauth_form_add(form, sizeof(form), &len, "pageSize", "1000");
		if (rc == 0 && token[0])
			rc = oauth_form_add(form, sizeof(form), &len, "pageToken", token);
		if (rc < 0)
			return kms_errf(err, err_len, -EIO, "Cloud KMS %s: page token too long",
					gk->endpoint);
		snprintf(suffix, sizeof(suffix), "/cryptoKeyVersions?%s", form);
		rc = kms_call(gk, deadline, "GET", suffix, NULL, 0, false, &resp, &doc, why,
			      sizeof(why));
		if (rc == 0)
			rc = destroy_listed(gk, deadline, doc, &count, when, sizeof(when), why,
					    sizeof(why));
		if (rc == 0 && json_get_string(doc, "nextPageToken", token, sizeof(token), NULL) < 0)
			token[0] = '\0';
		json_free(doc);
		http_response_free(&resp);
	} while (rc == 0 && token[0]);
	if (rc == -EACCES)
		return kms_errf(err, err_len, -EPERM, "%s: Cloud KMS refuses to list or destroy the "
				"versions of %s: grant the caller cloudkms.cryptoKeyVersions.list and "
				".destroy (e.g. roles/cloudkms.admin), then shred again", why, gk->key);
	if (rc < 0)
		return kms_errf(err, err_len, rc, "%s", why);
	kms_errf(err, err_len, 0, "Cloud KMS key %s: %u version(s) scheduled for destruction, "
		 "unusable from now on; the material goes for good at %s", gk->key, count,
		 when[0] ? when : "the end of the key's destroyScheduledDuration");
	return 0;
}

static void gcp_remote_stats(struct kms *kms, struct kms_remote_stats *out)
{
	struct gcp_kms *gk = kms->priv;

	http_client_kms_stats(gk->http, out);
}

static void on_breaker(void *arg, bool up)
{
	struct gcp_kms *gk = arg;

	kms_report_reachability(gk->kms, up);
}

/* ---- open / close ---- */

static void gcp_close(struct kms *kms)
{
	struct gcp_kms *gk = kms->priv;

	if (!gk)
		return;
	http_client_free(gk->http);
	oauth_cache_destroy(&gk->tokens);
	pthread_mutex_destroy(&gk->lock);
	free(gk);
	kms->priv = NULL;
}

/* key_ok - projects/P/locations/L/keyRings/R/cryptoKeys/K, each name of [A-Za-z0-9_-]. */
static bool key_ok(const char *key)
{
	static const char *const parts[] = { "projects", "locations", "keyRings", "cryptoKeys" };
	const char *p = key;
	size_t i, n;

	if (strlen(key) > MAX_KEY)
		return false;
	for (i = 0; i < 4; i++) {
		n = strlen(parts[i]);
		if (strncmp(p, parts[i], n) != 0 || p[n] != '/')
			return false;
		p += n + 1;
		n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
		if (n == 0 || (p[n] != '/' && p[n] != '\0') || (i < 3) != (p[n] == '/'))
			return false;
		p += n + (i < 3);
	}
	return true;
}

static int parse_settings(struct gcp_kms *gk, const dictionary *ini, struct http_settings *hs,
			  char *err, size_t err_len)
{
	const char *key = httpcfg_setting(ini, "key", NULL);
	const char *endpoint = httpcfg_setting(ini, "endpoint", NULL);
	const char *sa = httpcfg_setting(ini, "credentials_file", "GOOGLE_APPLICATION_CREDENTIALS");
	const char *metadata = httpcfg_setting(ini, "metadata_url", NULL);
	const char *metadata_host = getenv("GCE_METADATA_HOST");
	size_t n;
	int rc;

	rc = config_refuse_unknown(ini, "kms", known_settings,
				   sizeof(known_settings) / sizeof(known_settings[0]),
				   "the gcp provider", err, err_len);
	if (rc < 0)
		return rc;
	if (!key || !key_ok(key))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:key must be the key's resource name, "
				"projects/P/locations/L/keyRings/R/cryptoKeys/K");
	strcpy(gk->key, key);
	endpoint = endpoint ? endpoint : DEFAULT_ENDPOINT;
	n = strlen(endpoint);
	while (n && endpoint[n - 1] == '/')
		n--;
	if (!http_url_private(endpoint) || strpbrk(endpoint, "?# \t\r\n\"") ||
	    n >= sizeof(gk->endpoint))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:endpoint must be an https:// URL (plain http:// only "
				"to this host)");
	memcpy(gk->endpoint, endpoint, n);
	gk->endpoint[n] = '\0';
	if (sa && (sa[0] != '/' || strlen(sa) >= sizeof(gk->sa_file)))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:credentials_file (or $GOOGLE_APPLICATION_CREDENTIALS) "
				"must be an absolute path");
	if (sa)
		strcpy(gk->sa_file, sa);
	if (metadata)
		rc = snprintf(gk->metadata_url, sizeof(gk->metadata_url), "%s", metadata);
	else
		rc = snprintf(gk->metadata_url, sizeof(gk->metadata_url), "http://%s" METADATA_PATH,
			      metadata_host && *metadata_host ? metadata_host
							      : "metadata.google.internal");
	if (rc < 0 || (size_t)rc >= sizeof(gk->metadata_url) ||
	    !httpcfg_metadata_url_ok(gk->metadata_url) ||
	    strpbrk(gk->metadata_url, " \t\r\n\""))
		return kms_errf(err, err_len, -EINVAL,
				"the metadata server's URL (kms:metadata_url or $GCE_METADATA_HOST) "
				"must be the link-local metadata server, a local URL or https://");
	return httpcfg_read(ini, hs, err, err_len);
}

static int gcp_open(struct kms *kms, const dictionary *ini, char *err, size_t err_len)
{
	struct http_settings hs = { 0 };
	struct gcp_kms *gk;
	uint32_t v;
	int rc;

	gk = calloc(1, sizeof(*gk));
	if (!gk)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	pthread_mutex_init(&gk->lock, NULL);
	gk->kms = kms;
	kms->priv = gk;
	rc = oauth_cache_init(&gk->tokens, gcp_fetch, gk);
	if (rc < 0)
		kms_errf(err, err_len, rc, "out of locked memory");
	if (rc == 0)
		rc = parse_settings(gk, ini, &hs, err, err_len);
	if (rc == 0) {
		hs.on_state = on_breaker;
		hs.state_arg = gk;
		rc = http_client_new(&hs, &gk->http, err, err_len);
	}
	/* Credentials, endpoint, the key, its purpose and primary version, proven once here. */
	if (rc == 0)
		rc = primary_version(gk, 0, http_deadline(gk->http), &v, err, err_len);
	if (rc == 0 && (size_t)snprintf(kms->key_ref, sizeof(kms->key_ref), "gcp:%s", gk->key) >=
			       sizeof(kms->key_ref))
		rc = kms_errf(err, err_len, -EINVAL, "setting kms:key is too long");
	if (rc < 0) {
		gcp_close(kms);
		return rc;
	}
	kms->max_blob_len = GCP_MAX_BLOB;
	return 0;
}

const struct kms_ops kms_gcp_ops = {
	.name = "gcp",
	.open = gcp_open,
	.generate = gcp_generate,
	.wrap = gcp_wrap,
	.unwrap = gcp_unwrap,
	/* No batch call in the API: batches go out as parallel single calls. */
	.unwrap_many = fanout_unwrap_many,
	.wrap_many = fanout_wrap_many,
	.rewrap = gcp_rewrap,
	.blob_version = gcp_blob_version,
	.current_version = gcp_current_version,
	.close = gcp_close,
	.remote_stats = gcp_remote_stats,
	.destroy = gcp_destroy,
};
