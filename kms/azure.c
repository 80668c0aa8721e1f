// SPDX-License-Identifier: MIT
/*
 * The `azure` provider: Azure Key Vault and Managed HSM keys over the REST
 * API (api-version 7.4), through the shared client of kms/http.h.
 *
 *   wrap, generate   POST VAULT/keys/KEY/VERSION/wrapkey   {"alg":A,"value":b64url(inner)}
 *   unwrap           POST VAULT/keys/KEY/VERSION/unwrapkey {"alg":A,"value":b64url(wrapped)}
 *   rewrap           unwrap under the blob's version, wrap under the latest
 *                    (Key Vault has no re-wrap: the DEK passes through us, in secmem)
 *   current_version  GET  VAULT/keys/KEY                   key.kid ends in the latest version
 *   version numbers  GET  VAULT/keys/KEY/versions          (all pages, nextLink)
 *
 * A = RSA-OAEP-256 for RSA keys, A256KW for oct-HSM keys (kms:algorithm
 * overrides).  The inner value and the blob: kms/azure.h, docs/FORMAT.md.
 * generate draws the DEK here (crypto_random) and wraps it.
 *
 * Settings, section [kms] (references only; secrets never go here):
 *   provider                = azure
 *   vault_url               = https://NAME.vault.azure.net (or .managedhsm.azure.net)
 *   key                     = the key's name
 *   algorithm               = RSA-OAEP-256 | A256KW (default: by the key's type)
 *   tenant_id, client_id    = else $AZURE_TENANT_ID, $AZURE_CLIENT_ID
 *   client_secret_file      = file holding the client secret, else $AZURE_CLIENT_SECRET
 *   client_certificate_file = PEM with the certificate and its private key,
 *                             else $AZURE_CLIENT_CERTIFICATE_PATH
 *   federated_token_file    = else $AZURE_FEDERATED_TOKEN_FILE (workload identity)
 *   authority_host          = https://login.microsoftonline.com, else $AZURE_AUTHORITY_HOST
 *   managed_identity        = true: the managed identity endpoint (also the
 *                             default when no tenant and client are given)
 *   identity_endpoint       = http://169.254.169.254/metadata/identity/oauth2/token (IMDS)
 *   plus the kms/httpcfg.h settings.
 * Credentials are tried as Azure's EnvironmentCredential does: a client
 * secret, else a client certificate, else a federated token, else the
 * managed identity.  Tokens: kms/oauth.h (cached, refreshed before expiry,
 * dropped and fetched again on a 401).
 */

#include "kms/azure.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/base64.h"
#include "crypto/bigendian.h"
#include "crypto/kdf.h"
#include "crypto/random.h"
#include "crypto/secmem.h"
#include "kms/config.h"
#include "kms/envsecret.h"
#include "kms/fanout.h"
#include "kms/http.h"
#include "kms/httpcfg.h"
#include "kms/json.h"
#include "kms/jwt.h"
#include "kms/keyring.h"
#include "kms/oauth.h"

#define API "api-version=7.4"
#define MAX_URL 1024
#define MAX_NAME 127
#define MAX_SECRET 1024
#define MAX_PEM (64 * 1024)
#define MAX_ASSERTION 16384
#define MAX_FORM (MAX_ASSERTION + 4 * MAX_SECRET + 2048)
#define MAX_BODY 2048
#define DEFAULT_AUTHORITY "https://login.microsoftonline.com"
#define DEFAULT_IMDS "http://169.254.169.254/metadata/identity/oauth2/token"
/* current_version() asks Key Vault at most this often; new files use a version up to VERSION_TTL_MS old. */
#define VERSION_CHECK_MS 1000
#define VERSION_TTL_MS 60000
#define MAX_VERSIONS 4096

enum azure_cred { CRED_SECRET, CRED_CERTIFICATE, CRED_FEDERATED, CRED_MANAGED };

struct key_version {
	char id[AZURE_MAX_VERSION_ID + 1];
	int64_t created;
};

struct azure_kms {
	struct kms *kms;
	struct http_client *http;
	struct oauth_cache tokens;
	char vault_url[512]; /* no trailing slash */
	char key[MAX_NAME + 1];
	char alg[16];
	char resource[64];   /* https://vault.azure.net or https://managedhsm.azure.net */
	enum azure_cred cred;
	char tenant[MAX_NAME + 1], client_id[MAX_NAME + 1];
	char token_url[MAX_URL];   /* AAD token endpoint, or the identity endpoint */
	char secret_file[4096];    /* empty: $AZURE_CLIENT_SECRET */
	char cert_file[4096];
	char federated_file[4096];

	pthread_mutex_t lock; /* guards the version state below */
	struct key_version *versions; /* ordered by creation: versions[i] is number i + 1 */
	size_t n_versions;
	uint32_t latest;	 /* number of the latest version; 0: never read */
	uint64_t latest_at_ms;
};

static const char *const known_settings[] = {
	"kms:provider", "kms:vault_url", "kms:key", "kms:algorithm", "kms:tenant_id",
	"kms:client_id", "kms:client_secret_file", "kms:client_certificate_file",
	"kms:federated_token_file", "kms:authority_host", "kms:managed_identity",
	"kms:identity_endpoint", HTTPCFG_KEYS,
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- inner value, blob, errors (pure; checked against docs/FORMAT.md) ---- */

static int context_tag(const struct kms_context *ctx, const uint8_t *dek,
		       uint8_t tag[SHA256_LEN])
{
	uint8_t msg[sizeof(AZURE_CONTEXT_LABEL) - 1 + 32];
	const size_t label = sizeof(AZURE_CONTEXT_LABEL) - 1;

	memcpy(msg, AZURE_CONTEXT_LABEL, label);
	memcpy(msg + label, ctx->volume_uuid, 16);
	memcpy(msg + label + 16, ctx->file_id, 16);
	return crypto_hmac_sha256(dek, KMS_DEK_LEN, msg, sizeof(msg), tag);
}

int azure_inner_make(const struct kms_context *ctx, const uint8_t *dek,
		     uint8_t inner[AZURE_INNER_LEN])
{
	uint8_t tag[SHA256_LEN];

	if (context_tag(ctx, dek, tag) < 0)
		return -EIO;
	memcpy(inner, dek, KMS_DEK_LEN);
	memcpy(inner + KMS_DEK_LEN, tag, AZURE_TAG_LEN);
	return 0;
}

int azure_inner_open(const struct kms_context *ctx, const uint8_t *inner, size_t len,
		     uint8_t *dek)
{
	uint8_t tag[SHA256_LEN];

	if (len != AZURE_INNER_LEN || context_tag(ctx, inner, tag) < 0 ||
	    !crypto_memeq(tag, inner + KMS_DEK_LEN, AZURE_TAG_LEN))
		return -EBADMSG;
	memcpy(dek, inner, KMS_DEK_LEN);
	return 0;
}

/* version_id_ok - a Key Vault version ID: 1..64 ASCII letters and digits. */
static bool version_id_ok(const char *id, size_t n)
{
	size_t i;

	if (n == 0 || n > AZURE_MAX_VERSION_ID)
		return false;
	for (i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z') ||
		      (id[i] >= 'A' && id[i] <= 'Z')))
			return false;
	return true;
}

int azure_blob_frame(uint32_t version, const char *version_id, const uint8_t *wrapped,
		     size_t wrapped_len, uint8_t *out, size_t cap, size_t *out_len)
{
	size_t n = version_id ? strlen(version_id) : 0;

	if (version == 0 || !version_id_ok(version_id, n) || !wrapped || wrapped_len == 0 ||
	    wrapped_len > AZURE_MAX_WRAPPED || !out || !out_len)
		return -EINVAL;
	if (cap < 6 + n + wrapped_len)
		return -ENOSPC;
	out[0] = AZURE_BLOB_FORMAT;
	put_be32(out + 1, version);
	out[5] = (uint8_t)n;
	memcpy(out + 6, version_id, n);
	memcpy(out + 6 + n, wrapped, wrapped_len);
	*out_len = 6 + n + wrapped_len;
	return 0;
}

int azure_blob_parse(const uint8_t *blob, size_t len, uint32_t *version,
		     char version_id[AZURE_MAX_VERSION_ID + 1], const uint8_t **wrapped,
		     size_t *wrapped_len)
{
	size_t n;

	if (!blob || len < 7 || len > AZURE_MAX_BLOB || blob[0] != AZURE_BLOB_FORMAT)
		return -EBADMSG;
	n = blob[5];
	if (get_be32(blob + 1) == 0 || len <= 6 + n || len - 6 - n > AZURE_MAX_WRAPPED ||
	    !version_id_ok((const char *)blob + 6, n))
		return -EBADMSG;
	*version = get_be32(blob + 1);
	memcpy(version_id, blob + 6, n);
	version_id[n] = '\0';
	*wrapped = blob + 6 + n;
	*wrapped_len = len - 6 - n;
	return 0;
}

int azure_map_error(long status, const char *code, int unwrap)
{
	(void)code; /* the status says it all; the code goes into messages */
	if (status == 401 || status == 403)
		return -EACCES;
	if (status == 404)
		return -ENOENT;
	if (status == 400)
		return unwrap ? -EBADMSG : -EINVAL;
	if (status == 429 || status >= 500)
		return -EAGAIN;
	return -EIO;
}

/* ---- tokens ---- */

/* client_secret - the secret from kms:client_secret_file or $AZURE_CLIENT_SECRET, in secmem. */
static int client_secret(struct azure_kms *ak, char **secret, size_t *cap, char *err,
			 size_t err_len)
{
	size_t len;
	int rc;

	*cap = MAX_SECRET + 1;
	if (ak->secret_file[0])
		return oauth_read_secret_file(ak->secret_file, "client_secret_file", *cap, secret,
					      &len, err, err_len);
	*secret = secmem_alloc(*cap);
	if (!*secret)
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	rc = envsecret_copy("AZURE_CLIENT_SECRET", *secret, *cap, &len);
	if (rc < 0) {
		secmem_free(*secret, *cap);
		return kms_errf(err, err_len, rc == -ENOMEM ? -ENOMEM : -EACCES,
				"no Azure client secret: $AZURE_CLIENT_SECRET is %s",
				rc == -ENOENT ? "not set" : "too long");
	}
	return 0;
}

/*
 * certificate_assertion - the client_assertion of a certificate credential:
 * an RS256 JWT for the token endpoint, signed with the certificate's key,
 * naming the certificate by its thumbprints (x5t, x5t#S256).
 */
static int certificate_assertion(struct azure_kms *ak, char *out, size_t cap, char *err,
				 size_t err_len)
{
	char x5t[JWT_X5T_LEN + 1], x5t256[JWT_X5T_S256_LEN + 1], header[160], claims[2048];
	uint8_t jti[16];
	char *pem = NULL, jti_hex[33];
	time_t now = time(NULL);
	size_t pem_len, i;
	int rc;

	rc = oauth_read_secret_file(ak->cert_file, "client_certificate_file", MAX_PEM, &pem,
				    &pem_len, err, err_len);
	if (rc < 0)
		return rc;
	rc = jwt_cert_thumbprints(pem, pem_len, x5t, x5t256);
	if (rc == 0)
		rc = crypto_random(jti, sizeof(jti));
	if (rc == 0) {
		for (i = 0; i < sizeof(jti); i++)
			snprintf(jti_hex + 2 * i, 3, "%02x", jti[i]);
		snprintf(header, sizeof(header),
			 "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x5t\":\"%s\",\"x5t#S256\":\"%s\"}", x5t,
			 x5t256);
		snprintf(claims, sizeof(claims),
			 "{\"aud\":\"%s\",\"iss\":\"%s\",\"sub\":\"%s\",\"jti\":\"%s\",\"nbf\":%lld,"
			 "\"iat\":%lld,\"exp\":%lld}",
			 ak->token_url, ak->client_id, ak->client_id, jti_hex, (long long)now,
			 (long long)now, (long long)now + 600);
		rc = jwt_sign_rs256(pem, pem_len, header, claims, out, cap);
	}
	secmem_free(pem, MAX_PEM);
	if (rc < 0)
		return kms_errf(err, err_len, rc == -ENOMEM ? -ENOMEM : -EINVAL,
				"client_certificate_file %s must hold a PEM certificate and its "
				"unencrypted RSA private key",
				ak->cert_file);
	return 0;
}

/* The oauth_fetch_fn: one token for Key Vault, by the configured credential. */
static int azure_fetch(void *arg, uint64_t deadline, char *token, size_t cap,
		       int64_t *expires_in, char *err, size_t err_len)
{
	struct azure_kms *ak = arg;
	char scope[96], url[MAX_URL + 256], *secret = NULL, *form = NULL;
	size_t secret_cap = 0, secret_len, len = 0;
	int rc = 0;

	if (ak->cred == CRED_MANAGED) {
		static const char *const metadata[] = { "Metadata: true", NULL };
		char query[512] = "";

		oauth_form_add(query, sizeof(query), &len, "resource", ak->resource);
		if (ak->client_id[0])
			oauth_form_add(query, sizeof(query), &len, "client_id", ak->client_id);
		snprintf(url, sizeof(url), "%s?api-version=2018-02-01&%s", ak->token_url, query);
		return oauth_token_call(ak->http, deadline, "Azure managed identity endpoint", "GET",
					url, metadata, NULL, 0, token, cap, expires_in, err,
					err_len);
	}
	form = secmem_alloc(MAX_FORM);
	if (!form)
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	form[0] = '\0';
	snprintf(scope, sizeof(scope), "%s/.default", ak->resource);
	oauth_form_add(form, MAX_FORM, &len, "grant_type", "client_credentials");
	oauth_form_add(form, MAX_FORM, &len, "client_id", ak->client_id);
	oauth_form_add(form, MAX_FORM, &len, "scope", scope);
	if (ak->cred == CRED_SECRET) {
		rc = client_secret(ak, &secret, &secret_cap, err, err_len);
		if (rc == 0)
			oauth_form_add(form, MAX_FORM, &len, "client_secret", secret);
	} else {
		secret_cap = MAX_ASSERTION;
		if (ak->cred == CRED_CERTIFICATE) {
			secret = secmem_alloc(secret_cap);
			rc = secret ? certificate_assertion(ak, secret, secret_cap, err, err_len)
				    : kms_errf(err, err_len, -ENOMEM, "out of locked memory");
		} else {
			/* Re-read every time: the platform replaces the file before it expires. */
			rc = oauth_read_secret_file(ak->federated_file, "federated_token_file",
						    secret_cap, &secret, &secret_len, err, err_len);
		}
		if (rc == 0) {
			oauth_form_add(form, MAX_FORM, &len, "client_assertion_type",
				       "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
			oauth_form_add(form, MAX_FORM, &len, "client_assertion", secret);
		}
	}
	if (rc == 0 && len >= MAX_FORM)
		rc = kms_errf(err, err_len, -EINVAL, "Azure credentials too long");
	if (rc == 0)
		rc = oauth_token_call(ak->http, deadline, "Azure AD token endpoint", "POST",
				      ak->token_url, NULL, form, len, token, cap, expires_in, err,
				      err_len);
	if (secret)
		secmem_free(secret, secret_cap);
	secmem_free(form, MAX_FORM);
	return rc;
}

/* ---- calls ---- */

/* error_field - the string at @path ("error.code", "error.message") of a Key Vault error body, or "". */
static void error_field(const struct http_response *resp, const char *path, char *out, size_t cap)
{
	struct json_doc *doc = NULL;

	out[0] = '\0';
	if (resp->body && json_parse((const char *)resp->body, resp->len, &doc) == 0 &&
	    json_get_string(doc, path, out, cap, NULL) < 0)
		out[0] = '\0';
	json_free(doc);
}

/*
 * kv_call - @method on VAULT/@path (with the api-version appended; @path
 * may be a full nextLink URL) with JSON @body, by @deadline.  A 401 drops
 * the token and tries once more with a fresh one.  0 and the parsed 200
 * answer in *@doc over @resp (free both; a 204, which a purge answers, has
 * no body and leaves *@doc NULL), or a kms.h errno with Key Vault's error
 * code in @err (@resp holds the error body).
 */
static int kv_call(struct azure_kms *ak, uint64_t deadline, const char *method, const char *path,
		   const char *body, size_t body_len, bool unwrap, struct http_response *resp,
		   struct json_doc **doc, char *err, size_t err_len)
{
	char url[MAX_URL * 2], http_err[256], code[96], *auth;
	const char *headers[4];
	uint64_t gen;
	int rc, attempt;

	*doc = NULL;
	memset(resp, 0, sizeof(*resp));
	if (strncmp(path, "https://", 8) == 0 || strncmp(path, "http://", 7) == 0) {
		/* A nextLink: it must point into our vault, carrying our token nowhere else. */
		if (strncmp(path, ak->vault_url, strlen(ak->vault_url)) != 0 ||
		    path[strlen(ak->vault_url)] != '/')
			return kms_errf(err, err_len, -EIO, "Key Vault sent a nextLink to another host");
		snprintf(url, sizeof(url), "%s", path);
	} else {
		snprintf(url, sizeof(url), "%s/%s%s" API, ak->vault_url, path,
			 strchr(path, '?') ? "&" : "?");
	}
	auth = secmem_alloc(OAUTH_MAX_HEADER);
	if (!auth)
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	for (attempt = 0;; attempt++) {
		struct http_request req = { .method = method, .url = url, .headers = headers,
					    .body = body, .body_len = body_len,
					    .deadline_at_ms = deadline };
		size_t n = 0;

		rc = oauth_header(&ak->tokens, deadline, auth, &gen, err, err_len);
		if (rc < 0)
			break;
		headers[n++] = auth;
		headers[n++] = "Accept: application/json";
		if (body)
			headers[n++] = "Content-Type: application/json";
		headers[n] = NULL;
		rc = http_request(ak->http, &req, resp, http_err, sizeof(http_err));
		if (rc < 0) {
			rc = kms_errf(err, err_len, rc == -EAGAIN ? -EAGAIN : -EIO,
				      "Azure Key Vault %s: %s", ak->vault_url, http_err);
			break;
		}
		if (resp->status == 401 && attempt == 0) {
			oauth_reject(&ak->tokens, gen);
			http_response_free(resp);
			continue;
		}
		if (resp->status == 204)
			break;
		if (resp->status != 200) {
			error_field(resp, "error.code", code, sizeof(code));
			rc = kms_errf(err, err_len, azure_map_error(resp->status, code, unwrap),
				      "Azure Key Vault %s answered HTTP %ld (%s)", ak->vault_url,
				      resp->status, code[0] ? code : "no error code");
			break;
		}
		if (!resp->body || json_parse((const char *)resp->body, resp->len, doc) < 0)
			rc = kms_errf(err, err_len, -EIO, "Azure Key Vault %s sent no JSON",
				      ak->vault_url);
		break;
	}
	secmem_free(auth, OAUTH_MAX_HEADER);
	return rc;
}

/* kid_version - the version ID at the end of the kid at @path of @doc. */
static int kid_version(const struct json_doc *doc, const char *path,
		       char out[AZURE_MAX_VERSION_ID + 1])
{
	char kid[MAX_URL];
	const char *slash;

	if (json_get_string(doc, path, kid, sizeof(kid), NULL) < 0)
		return -EIO;
	slash = strrchr(kid, '/');
	if (!slash || !version_id_ok(slash + 1, strlen(slash + 1)))
		return -EIO;
	strcpy(out, slash + 1);
	return 0;
}

/* ---- versions ---- */

static int by_creation(const void *a, const void *b)
{
	const struct key_version *x = a, *y = b;

	if (x->created != y->created)
		return x->created < y->created ? -1 : 1;
	return strcmp(x->id, y->id);
}

/*
 * list_versions - every version of the key, ordered by creation time (then
 * ID, for versions made in the same second), installed as the numbering.
 * Key Vault never deletes a single version (only the whole key), so a
 * version's place, once it is listed, does not change.
 */
static int list_versions(struct azure_kms *ak, uint64_t deadline, char *err, size_t err_len)
{
	char path[MAX_URL * 2];
	struct key_version *all = NULL;
	size_t n = 0, i, count;
	int rc = 0;

	snprintf(path, sizeof(path), "keys/%s/versions?maxresults=25", ak->key);
	while (path[0] && rc == 0) {
		struct http_response resp;
		struct json_doc *doc;
		struct key_version *grown;
		enum json_type type;

		rc = kv_call(ak, deadline, "GET", path, NULL, 0, false, &resp, &doc, err, err_len);
		if (rc == 0 && json_array_len(doc, "value", &count) < 0)
			rc = kms_errf(err, err_len, -EIO, "Key Vault sent a version list without value");
		if (rc == 0 && n + count > MAX_VERSIONS)
			rc = kms_errf(err, err_len, -EIO, "key %s has too many versions", ak->key);
		grown = rc == 0 ? realloc(all, (n + count + 1) * sizeof(*all)) : NULL;
		if (rc == 0 && !grown)
			rc = -ENOMEM;
		if (grown)
			all = grown;
		for (i = 0; rc == 0 && i < count; i++) {
			char p[64];

			snprintf(p, sizeof(p), "value[%zu].kid", i);
			rc = kid_version(doc, p, all[n].id);
			snprintf(p, sizeof(p), "value[%zu].attributes.created", i);
			if (rc == 0 && json_get_int(doc, p, &all[n].created) < 0)
				rc = -EIO;
			if (rc < 0)
				kms_errf(err, err_len, -EIO, "Key Vault sent a malformed version list");
			n++;
		}
		path[0] = '\0';
		if (rc == 0 && json_type_at(doc, "nextLink", &type) == 0 && type == JSON_STRING &&
		    json_get_string(doc, "nextLink", path, sizeof(path), NULL) < 0)
			rc = kms_errf(err, err_len, -EIO, "Key Vault sent an overlong nextLink");
		json_free(doc);
		http_response_free(&resp);
	}
	if (rc == 0 && n == 0)
		rc = kms_errf(err, err_len, -ENOENT, "key %s has no versions", ak->key);
	if (rc < 0) {
		free(all);
		return rc;
	}
	qsort(all, n, sizeof(*all), by_creation);
	pthread_mutex_lock(&ak->lock);
	free(ak->versions);
	ak->versions = all;
	ak->n_versions = n;
	pthread_mutex_unlock(&ak->lock);
	return 0;
}

/* number_of - the number of version @id, or 0 if it is not listed (lock held). */
static uint32_t number_of(const struct azure_kms *ak, const char *id)
{
	size_t i;

	for (i = 0; i < ak->n_versions; i++)
		if (strcmp(ak->versions[i].id, id) == 0)
			return (uint32_t)(i + 1);
	return 0;
}

/*
 * latest_version - the key's latest version (its number and ID), asked of
 * Key Vault if our answer is older than @max_age_ms; a version we have not
 * numbered yet (the key was rotated) has the list read again.
 */
static int latest_version(struct azure_kms *ak, uint64_t max_age_ms, uint64_t deadline,
			  uint32_t *number, char id[AZURE_MAX_VERSION_ID + 1], char *err,
			  size_t err_len)
{
	struct http_response resp;
	struct json_doc *doc;
	char path[MAX_NAME + 8], latest[AZURE_MAX_VERSION_ID + 1];
	bool enabled = true;
	uint32_t v;
	int rc;

	pthread_mutex_lock(&ak->lock);
	if (ak->latest && now_ms() - ak->latest_at_ms < max_age_ms) {
		*number = ak->latest;
		strcpy(id, ak->versions[ak->latest - 1].id);
		pthread_mutex_unlock(&ak->lock);
		return 0;
	}
	pthread_mutex_unlock(&ak->lock);
	snprintf(path, sizeof(path), "keys/%s", ak->key);
	rc = kv_call(ak, deadline, "GET", path, NULL, 0, false, &resp, &doc, err, err_len);
	if (rc == 0 && kid_version(doc, "key.kid", latest) < 0)
		rc = kms_errf(err, err_len, -EIO, "Key Vault sent a key without kid");
	if (rc == 0)
		json_get_bool(doc, "attributes.enabled", &enabled);
	if (rc == 0 && !enabled)
		rc = kms_errf(err, err_len, -EACCES, "Azure key %s: its latest version is disabled",
			      ak->key);
	json_free(doc);
	http_response_free(&resp);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&ak->lock);
	v = number_of(ak, latest);
	pthread_mutex_unlock(&ak->lock);
	if (v == 0) {
		rc = list_versions(ak, deadline, err, err_len);
		pthread_mutex_lock(&ak->lock);
		v = rc == 0 ? number_of(ak, latest) : 0;
		pthread_mutex_unlock(&ak->lock);
		if (rc == 0 && v == 0)
			rc = kms_errf(err, err_len, -EIO,
				      "Key Vault does not list the key's latest version");
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&ak->lock);
	/* Versions only ever get added: keep the newer of two racing answers. */
	if (v > ak->latest)
		ak->latest = v;
	ak->latest_at_ms = now_ms();
	*number = ak->latest;
	strcpy(id, ak->versions[ak->latest - 1].id);
	pthread_mutex_unlock(&ak->lock);
	return 0;
}

/* ---- operations ---- */

/* wrap_under - wrapKey of @dek's inner value for @ctx under the latest version, framed. */
static int wrap_under(struct azure_kms *ak, uint64_t max_age_ms, const struct kms_context *ctx,
		      const uint8_t *dek, uint8_t *blob, size_t blob_cap, size_t *blob_len,
		      uint32_t *version)
{
	const uint64_t deadline = http_deadline(ak->http); /* version lookup, then wrapKey */
	char id[AZURE_MAX_VERSION_ID + 1], path[MAX_NAME + 96], body[MAX_BODY],
		answer_id[AZURE_MAX_VERSION_ID + 1], value[BASE64URL_ENCODED_LEN(AZURE_MAX_WRAPPED) + 8];
	uint8_t *inner = secmem_alloc(AZURE_INNER_LEN), wrapped[AZURE_MAX_WRAPPED];
	char *inner_b64 = secmem_alloc(BASE64URL_ENCODED_LEN(AZURE_INNER_LEN) + 1);
	struct http_response resp = { 0 };
	struct json_doc *doc = NULL;
	struct json_writer w;
	size_t len, wrapped_len = 0;
	uint32_t v;
	int rc = inner && inner_b64 ? 0 : -ENOMEM;

	if (rc == 0)
		rc = latest_version(ak, max_age_ms, deadline, &v, id, NULL, 0);
	if (rc == 0)
		rc = azure_inner_make(ctx, dek, inner);
	if (rc == 0) {
		inner_b64[base64url_encode(inner, AZURE_INNER_LEN, inner_b64)] = '\0';
		json_writer_init(&w, body, sizeof(body));
		json_write_object_begin(&w);
		json_write_key(&w, "alg");
		json_write_string(&w, ak->alg);
		json_write_key(&w, "value");
		json_write_string(&w, inner_b64);
		json_write_object_end(&w);
		rc = json_writer_finish(&w, &len) < 0 ? -EIO : 0;
	}
	if (rc == 0) {
		snprintf(path, sizeof(path), "keys/%s/%s/wrapkey", ak->key, id);
		rc = kv_call(ak, deadline, "POST", path, body, len, false, &resp, &doc, NULL, 0);
	}
	/* The answer names the version that wrapped: it must be the one we asked for. */
	if (rc == 0 && (kid_version(doc, "kid", answer_id) < 0 || strcmp(answer_id, id) != 0 ||
			json_get_string(doc, "value", value, sizeof(value), &len) < 0 ||
			base64url_decode(value, len, wrapped, sizeof(wrapped), &wrapped_len) < 0))
		rc = -EIO;
	if (rc == 0)
		rc = azure_blob_frame(v, id, wrapped, wrapped_len, blob, blob_cap, blob_len) < 0
			     ? -EIO
			     : 0;
	if (rc == 0)
		*version = v;
	json_free(doc);
	http_response_free(&resp);
	secmem_wipe(body, sizeof(body));
	if (inner)
		secmem_free(inner, AZURE_INNER_LEN);
	if (inner_b64)
		secmem_free(inner_b64, BASE64URL_ENCODED_LEN(AZURE_INNER_LEN) + 1);
	return rc;
}

static int azure_wrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek,
		      uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	return wrap_under(kms->priv, VERSION_TTL_MS, ctx, dek, blob, blob_cap, blob_len, version);
}

static int azure_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek,
			  uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	int rc = crypto_random(dek, KMS_DEK_LEN);

	if (rc == 0)
		rc = wrap_under(kms->priv, VERSION_TTL_MS, ctx, dek, blob, blob_cap, blob_len,
				version);
	if (rc < 0)
		secmem_wipe(dek, KMS_DEK_LEN);
	return rc;
}

static int azure_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
			size_t blob_len, uint8_t *dek)
{
	struct azure_kms *ak = kms->priv;
	char id[AZURE_MAX_VERSION_ID + 1], path[MAX_NAME + 96], body[MAX_BODY];
	char *value = secmem_alloc(MAX_BODY);
	uint8_t *inner = secmem_alloc(MAX_BODY);
	struct http_response resp = { 0 };
	struct json_doc *doc = NULL;
	struct json_writer w;
	const uint8_t *wrapped;
	size_t wrapped_len, len, inner_len = 0;
	uint32_t v;
	int rc = value && inner ? 0 : -ENOMEM;

	if (rc == 0 && azure_blob_parse(blob, blob_len, &v, id, &wrapped, &wrapped_len) < 0)
		rc = -EBADMSG;
	if (rc == 0) {
		base64url_encode(wrapped, wrapped_len, value);
		value[BASE64URL_ENCODED_LEN(wrapped_len)] = '\0';
		json_writer_init(&w, body, sizeof(body));
		json_write_object_begin(&w);
		json_write_key(&w, "alg");
		json_write_string(&w, ak->alg);
		json_write_key(&w, "value");
		json_write_string(&w, value);
		json_write_object_end(&w);
		rc = json_writer_finish(&w, &len) < 0 ? -EIO : 0;
	}
	if (rc == 0) {
		snprintf(path, sizeof(path), "keys/%s/%s/unwrapkey", ak->key, id);
		rc = kv_call(ak, http_deadline(ak->http), "POST", path, body, len, true, &resp, &doc,
			     NULL, 0);
	}
	if (rc == 0 && (json_get_string(doc, "value", value, MAX_BODY, &len) < 0 ||
			base64url_decode(value, len, inner, MAX_BODY, &inner_len) < 0))
		rc = -EIO;
	if (rc == 0)
		rc = azure_inner_open(ctx, inner, inner_len, dek);
	json_free(doc);
	http_response_free(&resp);
	if (value)
		secmem_free(value, MAX_BODY);
	if (inner)
		secmem_free(inner, MAX_BODY);
	return rc;
}

/* azure_rewrap - Key Vault has no re-wrap: unwrap, then wrap under the latest version. */
static int azure_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
			size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
			uint32_t *version)
{
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN);
	int rc = dek ? azure_unwrap(kms, ctx, blob, blob_len, dek) : -ENOMEM;

	/* Rotation asks right after a rotation: a fresh look, not the file-creation cache. */
	if (rc == 0)
		rc = wrap_under(kms->priv, VERSION_CHECK_MS, ctx, dek, out, out_cap, out_len,
				version);
	if (dek)
		secmem_free(dek, KMS_DEK_LEN);
	return rc;
}

static int azure_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len,
			      uint32_t *version)
{
	char id[AZURE_MAX_VERSION_ID + 1];
	const uint8_t *wrapped;
	size_t wrapped_len;

	(void)kms;
	return azure_blob_parse(blob, blob_len, version, id, &wrapped, &wrapped_len);
}

static int azure_current_version(struct kms *kms, uint32_t *version)
{
	struct azure_kms *ak = kms->priv;
	char id[AZURE_MAX_VERSION_ID + 1];

	return latest_version(ak, VERSION_CHECK_MS, http_deadline(ak->http), version, id, NULL, 0);
}

/* ---- shred ---- */

/* disable_versions - every listed version of the key disabled (Update Key: attributes.enabled). */
static int disable_versions(struct azure_kms *ak, uint64_t deadline, char *err, size_t err_len)
{
	static const char body[] = "{\"attributes\":{\"enabled\":false}}";
	char path[MAX_NAME + AZURE_MAX_VERSION_ID + 8], id[AZURE_MAX_VERSION_ID + 1];
	size_t i;
	int rc;

	rc = list_versions(ak, deadline, err, err_len);
	for (i = 0; rc == 0; i++) {
		struct http_response resp;
		struct json_doc *doc;

		/* The table only grows (list_versions), so index i names the same version throughout. */
		pthread_mutex_lock(&ak->lock);
		if (i < ak->n_versions)
			strcpy(id, ak->versions[i].id);
		else
			id[0] = '\0';
		pthread_mutex_unlock(&ak->lock);
		if (!id[0])
			break;
		snprintf(path, sizeof(path), "keys/%s/%s", ak->key, id);
		rc = kv_call(ak, deadline, "PATCH", path, body, sizeof(body) - 1, false, &resp, &doc,
			     err, err_len);
		json_free(doc);
		http_response_free(&resp);
	}
	return rc;
}

/*
 * purge_date - the scheduledPurgeDate of the deleted key (Get Deleted Key)
 * as a UTC date in @out, or "the end of the vault's retention period".
 */
static void purge_date(struct azure_kms *ak, uint64_t deadline, char *out, size_t cap)
{
	struct http_response resp;
	struct json_doc *doc;
	char path[MAX_NAME + 16];
	int64_t when = 0;
	struct tm tm;
	time_t t;

	snprintf(out, cap, "the end of the vault's retention period");
	snprintf(path, sizeof(path), "deletedkeys/%s", ak->key);
	if (kv_call(ak, deadline, "GET", path, NULL, 0, false, &resp, &doc, NULL, 0) == 0 &&
	    json_get_int(doc, "scheduledPurgeDate", &when) == 0 && when > 0) {
		t = (time_t)when;
		if (gmtime_r(&t, &tm))
			strftime(out, cap, "%Y-%m-%d %H:%M UTC", &tm);
	}
	json_free(doc);
	http_response_free(&resp);
}

/*
 * purge - Purge Deleted Key.  0 once the key is gone for good (purged now,
 * or already), or under purge protection (Key Vault purges it at the end
 * of its retention: when, in @err); -EPERM when the caller may not purge,
 * with what to do in @err.
 */
static int purge(struct azure_kms *ak, uint64_t deadline, char *err, size_t err_len)
{
	struct http_response resp;
	struct json_doc *doc;
	char path[MAX_NAME + 16], message[256], when[64];
	int rc;

	snprintf(path, sizeof(path), "deletedkeys/%s", ak->key);
	rc = kv_call(ak, deadline, "DELETE", path, NULL, 0, false, &resp, &doc, err, err_len);
	error_field(&resp, "error.message", message, sizeof(message));
	json_free(doc);
	http_response_free(&resp);
	if (rc == -ENOENT)
		return 0; /* purged already, or a vault without soft delete deleted it for good */
	if (rc == -EACCES && strstr(message, "purge protection")) {
		/* The service only schedules it, as AWS KMS does: done, with a note. */
		purge_date(ak, deadline, when, sizeof(when));
		kms_errf(err, err_len, 0, "Azure Key Vault %s has purge protection: key %s is "
			 "disabled and deleted, so nothing unwraps, but the vault's administrators "
			 "can recover it until Key Vault purges it at %s (nothing can purge it "
			 "sooner)", ak->vault_url, ak->key, when);
		return 0;
	}
	if (rc == -EACCES)
		return kms_errf(err, err_len, -EPERM, "Azure Key Vault %s refuses to purge deleted key "
				"%s (%s): it is disabled and deleted, but recoverable until purged; "
				"grant the caller the purge permission (Key Vault Crypto Officer), "
				"then shred again", ak->vault_url, ak->key,
				message[0] ? message : "Forbidden");
	return rc;
}

/*
 * azure_destroy - disable every version (unwraps refused at once), delete
 * the key (on a soft-delete vault it is kept, recoverable, as a deleted
 * key), then purge the deleted key: gone for good.  A key deleted by an
 * earlier run (KeyNotFound) goes straight to the purge, so a run cut short
 * can be made again.  Under purge protection the key is left disabled and
 * deleted, which Key Vault purges at the end of its retention: 0, with the
 * date in @err (purge()).
 */
static int azure_destroy(struct kms *kms, char *err, size_t err_len)
{
	struct azure_kms *ak = kms->priv;
	const uint64_t deadline = http_deadline(ak->http);
	char path[MAX_NAME + 8];
	int rc = disable_versions(ak, deadline, err, err_len);

	if (rc == 0) {
		struct http_response resp;
		struct json_doc *doc;

		snprintf(path, sizeof(path), "keys/%s", ak->key);
		rc = kv_call(ak, deadline, "DELETE", path, NULL, 0, false, &resp, &doc, err,
			     err_len);
		json_free(doc);
		http_response_free(&resp);
	}
	if (rc == 0 || rc == -ENOENT)
		rc = purge(ak, deadline, err, err_len);
	else if (rc == -EACCES)
		rc = kms_errf(err, err_len, -EPERM, "Azure Key Vault %s refuses to disable and delete "
			      "key %s: grant the caller the update, delete and purge permissions "
			      "(Key Vault Crypto Officer), then shred again", ak->vault_url,
			      ak->key);
	return rc;
}

static void azure_remote_stats(struct kms *kms, struct kms_remote_stats *out)
{
	struct azure_kms *ak = kms->priv;

	http_client_kms_stats(ak->http, out);
}

static void on_breaker(void *arg, bool up)
{
	struct azure_kms *ak = arg;

	kms_report_reachability(ak->kms, up);
}

/* ---- open / close ---- */

static void azure_close(struct kms *kms)
{
	struct azure_kms *ak = kms->priv;

	if (!ak)
		return;
	http_client_free(ak->http);
	oauth_cache_destroy(&ak->tokens);
	pthread_mutex_destroy(&ak->lock);
	free(ak->versions);
	free(ak);
	kms->priv = NULL;
}

/* name_ok - a key name, tenant or client ID: letters, digits, '-', '.', '_'. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s), i;

	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.' || s[i] == '_'))
			return false;
	return n > 0 && n <= MAX_NAME;
}

static int copy_setting(char *dst, size_t cap, const char *value, const char *what, char *err,
			size_t err_len)
{
	if (!value)
		return 0;
	if (strlen(value) >= cap)
		return kms_errf(err, err_len, -EINVAL, "setting kms:%s is too long", what);
	strcpy(dst, value);
	return 0;
}

/* choose_credential - the first credential configured, in EnvironmentCredential's order. */
static int choose_credential(struct azure_kms *ak, const dictionary *ini, char *err,
			     size_t err_len)
{
	const char *tenant = httpcfg_setting(ini, "tenant_id", "AZURE_TENANT_ID");
	const char *client = httpcfg_setting(ini, "client_id", "AZURE_CLIENT_ID");
	const char *authority = httpcfg_setting(ini, "authority_host", "AZURE_AUTHORITY_HOST");
	const char *endpoint = httpcfg_setting(ini, "identity_endpoint", NULL);
	char probe[8];
	size_t len;
	int rc = 0, env_secret;

	if (client && !name_ok(client))
		return kms_errf(err, err_len, -EINVAL, "kms:client_id / $AZURE_CLIENT_ID is not an ID");
	if (client)
		strcpy(ak->client_id, client);
	rc = copy_setting(ak->secret_file, sizeof(ak->secret_file),
			  httpcfg_setting(ini, "client_secret_file", NULL), "client_secret_file", err, err_len);
	if (rc == 0)
		rc = copy_setting(ak->cert_file, sizeof(ak->cert_file),
				  httpcfg_setting(ini, "client_certificate_file", "AZURE_CLIENT_CERTIFICATE_PATH"),
				  "client_certificate_file", err, err_len);
	if (rc == 0)
		rc = copy_setting(ak->federated_file, sizeof(ak->federated_file),
				  httpcfg_setting(ini, "federated_token_file", "AZURE_FEDERATED_TOKEN_FILE"),
				  "federated_token_file", err, err_len);
	if (rc < 0)
		return rc;
	/* Present, whatever its length: a secret too long for us is reported when used. */
	env_secret = envsecret_copy("AZURE_CLIENT_SECRET", probe, sizeof(probe), &len);
	secmem_wipe(probe, sizeof(probe));
	if (iniparser_getboolean(ini, "kms:managed_identity", 0) == 1 || (!tenant && !client))
		ak->cred = CRED_MANAGED;
	else if (ak->secret_file[0] || env_secret != -ENOENT)
		ak->cred = CRED_SECRET;
	else if (ak->cert_file[0])
		ak->cred = CRED_CERTIFICATE;
	else if (ak->federated_file[0])
		ak->cred = CRED_FEDERATED;
	else
		return kms_errf(err, err_len, -EACCES,
				"no Azure credential for client %s: set $AZURE_CLIENT_SECRET or "
				"kms:client_secret_file, kms:client_certificate_file, "
				"kms:federated_token_file, or kms:managed_identity = true",
				client ? client : "(none)");
	if (ak->cred == CRED_MANAGED) {
		endpoint = endpoint ? endpoint : DEFAULT_IMDS;
		if (!httpcfg_metadata_url_ok(endpoint) || strpbrk(endpoint, "?# \t\r\n"))
			return kms_errf(err, err_len, -EINVAL,
					"setting kms:identity_endpoint must be https://, the "
					"link-local IMDS address or a local URL, without a query");
		return copy_setting(ak->token_url, sizeof(ak->token_url), endpoint,
				    "identity_endpoint", err, err_len);
	}
	if (!tenant || !client || !name_ok(tenant))
		return kms_errf(err, err_len, -EINVAL,
				"Azure credentials need the tenant and client IDs: kms:tenant_id "
				"and kms:client_id, or $AZURE_TENANT_ID and $AZURE_CLIENT_ID");
	authority = authority ? authority : DEFAULT_AUTHORITY;
	if (!http_url_private(authority) || strpbrk(authority, "?# \t\r\n\""))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:authority_host (or $AZURE_AUTHORITY_HOST) must be an "
				"https:// URL");
	len = strlen(authority);
	while (len && authority[len - 1] == '/')
		len--;
	strcpy(ak->tenant, tenant);
	if ((size_t)snprintf(ak->token_url, sizeof(ak->token_url), "%.*s/%s/oauth2/v2.0/token",
			     (int)len, authority, tenant) >= sizeof(ak->token_url))
		return kms_errf(err, err_len, -EINVAL, "setting kms:authority_host is too long");
	return 0;
}

static int parse_settings(struct azure_kms *ak, const dictionary *ini, struct http_settings *hs,
			  char *err, size_t err_len)
{
	const char *url = httpcfg_setting(ini, "vault_url", NULL);
	const char *key = httpcfg_setting(ini, "key", NULL);
	const char *alg = httpcfg_setting(ini, "algorithm", NULL);
	size_t n;
	int rc;

	rc = config_refuse_unknown(ini, "kms", known_settings,
				   sizeof(known_settings) / sizeof(known_settings[0]),
				   "the azure provider", err, err_len);
	if (rc < 0)
		return rc;
	if (!url || !http_url_private(url) || strpbrk(url, "?# \t\r\n\"") ||
	    strlen(url) >= sizeof(ak->vault_url))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:vault_url must be the vault's https:// URL, e.g. "
				"https://NAME.vault.azure.net");
	n = strlen(url);
	while (n && url[n - 1] == '/')
		n--;
	memcpy(ak->vault_url, url, n);
	ak->vault_url[n] = '\0';
	snprintf(ak->resource, sizeof(ak->resource), "%s",
		 strstr(url, ".managedhsm.") ? "https://managedhsm.azure.net"
					      : "https://vault.azure.net");
	if (!key || !name_ok(key) || strchr(key, '.') || strchr(key, '_'))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:key must name the Key Vault key (letters, digits, '-')");
	strcpy(ak->key, key);
	if (alg && strcmp(alg, "RSA-OAEP-256") != 0 && strcmp(alg, "A256KW") != 0)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:algorithm must be RSA-OAEP-256 or A256KW");
	snprintf(ak->alg, sizeof(ak->alg), "%s", alg ? alg : "");
	rc = httpcfg_read(ini, hs, err, err_len);
	if (rc == 0)
		rc = choose_credential(ak, ini, err, err_len);
	return rc;
}

/* read_key - the key exists, is enabled, and its type fixes the algorithm. */
static int read_key(struct azure_kms *ak, char *err, size_t err_len)
{
	struct http_response resp;
	struct json_doc *doc;
	char path[MAX_NAME + 8], kty[16] = "";
	bool enabled = true;
	int rc;

	snprintf(path, sizeof(path), "keys/%s", ak->key);
	rc = kv_call(ak, http_deadline(ak->http), "GET", path, NULL, 0, false, &resp, &doc, err,
		     err_len);
	if (rc == 0 && json_get_string(doc, "key.kty", kty, sizeof(kty), NULL) < 0)
		rc = kms_errf(err, err_len, -EIO, "Key Vault sent a key without kty");
	if (rc == 0)
		json_get_bool(doc, "attributes.enabled", &enabled);
	json_free(doc);
	http_response_free(&resp);
	if (rc == -ENOENT)
		return kms_errf(err, err_len, -ENOENT, "Azure Key Vault %s has no key %s",
				ak->vault_url, ak->key);
	if (rc < 0)
		return rc;
	if (!enabled)
		return kms_errf(err, err_len, -EACCES, "Azure key %s is disabled", ak->key);
	if (!ak->alg[0]) {
		if (strncmp(kty, "RSA", 3) == 0)
			strcpy(ak->alg, "RSA-OAEP-256");
		else if (strncmp(kty, "oct", 3) == 0)
			strcpy(ak->alg, "A256KW");
		else
			return kms_errf(err, err_len, -EINVAL,
					"Azure key %s is of type %s: wrapKey needs an RSA or "
					"oct-HSM key",
					ak->key, kty);
	}
	return 0;
}

static int azure_open(struct kms *kms, const dictionary *ini, char *err, size_t err_len)
{
	struct http_settings hs = { 0 };
	char id[AZURE_MAX_VERSION_ID + 1];
	struct azure_kms *ak;
	uint32_t v;
	int rc;

	ak = calloc(1, sizeof(*ak));
	if (!ak)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	pthread_mutex_init(&ak->lock, NULL);
	ak->kms = kms;
	kms->priv = ak;
	rc = oauth_cache_init(&ak->tokens, azure_fetch, ak);
	if (rc < 0)
		kms_errf(err, err_len, rc, "out of locked memory");
	if (rc == 0)
		rc = parse_settings(ak, ini, &hs, err, err_len);
	if (rc == 0) {
		hs.on_state = on_breaker;
		hs.state_arg = ak;
		rc = http_client_new(&hs, &ak->http, err, err_len);
	}
	/* Credentials, vault, key and its versions, all proven once here. */
	if (rc == 0)
		rc = read_key(ak, err, err_len);
	if (rc == 0)
		rc = latest_version(ak, 0, http_deadline(ak->http), &v, id, err, err_len);
	if (rc == 0 && (size_t)snprintf(kms->key_ref, sizeof(kms->key_ref), "azure:%s/keys/%s",
					ak->vault_url, ak->key) >= sizeof(kms->key_ref))
		rc = kms_errf(err, err_len, -EINVAL, "vault_url and key name are too long");
	if (rc < 0) {
		azure_close(kms);
		return rc;
	}
	kms->max_blob_len = AZURE_MAX_BLOB;
	return 0;
}

const struct kms_ops kms_azure_ops = {
	.name = "azure",
	.open = azure_open,
	.generate = azure_generate,
	.wrap = azure_wrap,
	.unwrap = azure_unwrap,
	/* No batch call in the API: batches go out as parallel single calls. */
	.unwrap_many = fanout_unwrap_many,
	.wrap_many = fanout_wrap_many,
	.rewrap = azure_rewrap,
	.blob_version = azure_blob_version,
	.current_version = azure_current_version,
	.close = azure_close,
	.remote_stats = azure_remote_stats,
	.destroy = azure_destroy,
};
