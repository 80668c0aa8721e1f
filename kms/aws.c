// SPDX-License-Identifier: MIT
/*
 * The `aws` provider: AWS KMS over its JSON 1.1 protocol, SigV4-signed by
 * libcurl (CURLOPT_AWS_SIGV4), through the shared client of kms/http.h.
 *
 * Settings, section [kms] (references only; credentials never go here):
 *   provider            = aws
 *   key_id              = key ID, key ARN, alias/NAME or alias ARN (required)
 *   region              = us-east-1 (default: $AWS_REGION, $AWS_DEFAULT_REGION)
 *   endpoint            = https://kms.REGION.amazonaws.com (override, e.g. a VPC endpoint)
 *   profile             = credentials profile (default: $AWS_PROFILE, "default")
 *   credentials_file    = path (default: $AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials)
 *   ca_file, ca_dir     = CA store for the endpoint's TLS certificate
 *   insecure_skip_verify = true: no TLS verification (tests only)
 *   connect_timeout_ms, timeout_ms, deadline_ms, max_attempts,
 *   breaker_threshold, breaker_cooldown_ms = the kms/http.h settings
 *
 * Credentials follow the AWS conventions: $AWS_ACCESS_KEY_ID,
 * $AWS_SECRET_ACCESS_KEY and $AWS_SESSION_TOKEN if set, else the profile's
 * aws_access_key_id, aws_secret_access_key and aws_session_token in the
 * credentials file, which is re-read when it changes (refreshed session
 * tokens) and refused if group or others may read it.  They are kept in
 * secmem.
 *
 * The key named by key_id is resolved once, at open, to its ARN
 * (DescribeKey); every call names that ARN, so a blob of another key is
 * refused by KMS.  Versions: see kms/aws.h and docs/FORMAT.md.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/base64.h"
#include "crypto/bigendian.h"
#include "crypto/secmem.h"
#include "kms/aws.h"
#include "kms/config.h"
#include "kms/envsecret.h"
#include "kms/http.h"
#include "kms/json.h"
#include "kms/keyring.h"
#include "kms/fanout.h"

#define CTX_VOLUME "envelopefs:volume"
#define CTX_FILE "envelopefs:file"
#define MAX_ID 128		/* access key ID */
#define MAX_SECRET 128		/* secret access key */
#define MAX_TOKEN 4096		/* session token */
#define MAX_ARN 256
#define MAX_BODY 4096		/* request bodies: a ciphertext in base64 and names */
#define B64_DEK_MAX 64		/* base64 of a 32-byte DEK is 44 characters */
/* current_version() re-reads ListKeyRotations at most this often; generate() at most every VERSION_TTL_MS. */
#define VERSION_CHECK_MS 1000
#define VERSION_TTL_MS 60000
/* Decrypt calls of one unwrap_many in flight at once (KMS has no batch call);
 * the HTTP client keeps as many connections (kms/http.h max_idle_handles). */
#define UNWRAP_PARALLEL 16

/* Credentials, in secmem: what a call needs, as curl wants it. */
struct aws_creds {
	char userpwd[MAX_ID + 1 + MAX_SECRET + 1]; /* "AKID:SECRET" */
	char token_header[sizeof("X-Amz-Security-Token: ") + MAX_TOKEN];
	bool has_token;
};

/* The shortest waiting period ScheduleKeyDeletion accepts. */
#define AWS_MIN_DELETION_DAYS 7

struct aws_kms {
	struct kms *kms;
	struct http_client *http;
	char url[512];
	char sigv4[96];
	char key_id[KMS_MAX_REF + 1];
	char key_arn[MAX_ARN];

	pthread_mutex_t lock; /* guards everything below */
	struct aws_creds *creds;
	bool creds_from_env;
	char cred_file[PATH_MAX];
	char profile[128];
	struct stat cred_stat; /* of the file the credentials came from */
	uint32_t version;
	uint64_t version_at_ms; /* 0: never read */
};

static const char *const known_settings[] = {
	"kms:provider", "kms:key_id", "kms:region", "kms:endpoint", "kms:profile",
	"kms:credentials_file", "kms:ca_file", "kms:ca_dir", "kms:insecure_skip_verify",
	"kms:connect_timeout_ms", "kms:timeout_ms", "kms:deadline_ms", "kms:max_attempts",
	"kms:breaker_threshold", "kms:breaker_cooldown_ms",
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- blob and context (pure; checked against docs/FORMAT.md) ---- */

int aws_blob_frame(uint32_t version, const uint8_t *ct, size_t ct_len, uint8_t *out, size_t cap,
		   size_t *out_len)
{
	if (!ct || ct_len == 0 || ct_len > AWS_MAX_CIPHERTEXT || !out || !out_len)
		return -EINVAL;
	if (cap < AWS_BLOB_HEADER + ct_len)
		return -ENOSPC;
	out[0] = AWS_BLOB_FORMAT;
	put_be32(out + 1, version);
	memcpy(out + AWS_BLOB_HEADER, ct, ct_len);
	*out_len = AWS_BLOB_HEADER + ct_len;
	return 0;
}

int aws_blob_parse(const uint8_t *blob, size_t len, uint32_t *version, const uint8_t **ct,
		   size_t *ct_len)
{
	if (!blob || len <= AWS_BLOB_HEADER || len > AWS_MAX_BLOB || blob[0] != AWS_BLOB_FORMAT)
		return -EBADMSG;
	*version = get_be32(blob + 1);
	if (*version == 0)
		return -EBADMSG; /* versions count from 1 */
	*ct = blob + AWS_BLOB_HEADER;
	*ct_len = len - AWS_BLOB_HEADER;
	return 0;
}

static void hex16(const uint8_t in[16], char out[33])
{
	static const char digits[] = "0123456789abcdef";
	int i;

	for (i = 0; i < 16; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[32] = '\0';
}

/* write_context - the EncryptionContext object; names in sorted order, as KMS canonicalises. */
static void write_context(struct json_writer *w, const struct kms_context *ctx)
{
	char hex[33];

	json_write_object_begin(w);
	hex16(ctx->file_id, hex);
	json_write_key(w, CTX_FILE);
	json_write_string(w, hex);
	hex16(ctx->volume_uuid, hex);
	json_write_key(w, CTX_VOLUME);
	json_write_string(w, hex);
	json_write_object_end(w);
}

int aws_context_json(const struct kms_context *ctx, char *out, size_t cap)
{
	struct json_writer w;

	json_writer_init(&w, out, cap);
	write_context(&w, ctx);
	return json_writer_finish(&w, NULL);
}

/* ---- credentials ---- */

static const char *default_cred_file(char *buf, size_t cap)
{
	const char *env = getenv("AWS_SHARED_CREDENTIALS_FILE");
	const char *home = getenv("HOME");

	if (env && *env)
		return env;
	if (!home || !*home)
		return NULL;
	snprintf(buf, cap, "%s/.aws/credentials", home);
	return buf;
}

static int fill_creds(struct aws_creds *c, const char *id, const char *secret, const char *token,
		      char *err, size_t err_len)
{
	if (!id || !*id || !secret || !*secret)
		return kms_errf(err, err_len, -EACCES, "incomplete AWS credentials");
	if (strlen(id) > MAX_ID || strlen(secret) > MAX_SECRET || (token && strlen(token) > MAX_TOKEN) ||
	    strchr(id, ':') || strpbrk(id, "\r\n") || (token && strpbrk(token, "\r\n")))
		return kms_errf(err, err_len, -EINVAL, "malformed AWS credentials");
	snprintf(c->userpwd, sizeof(c->userpwd), "%s:%s", id, secret);
	c->has_token = token && *token;
	if (c->has_token)
		snprintf(c->token_header, sizeof(c->token_header), "X-Amz-Security-Token: %s", token);
	return 0;
}

#define MAX_CRED_FILE (64 * 1024)

/* trim - @s without leading and trailing blanks, in place. */
static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/*
 * read_profile - the three credentials of [@profile] in the AWS shared
 * credentials file @path (INI: "[name]" sections, "key = value" lines, '#'
 * and ';' comments).  Our own reader rather than iniparser, which echoes a
 * malformed line (a secret) to stderr.  The file is read into secmem.
 */
static int read_profile(const char *path, const char *profile, struct aws_creds *c, char *err,
			size_t err_len)
{
	const char *id = NULL, *secret = NULL, *token = NULL;
	char *buf, *line, *next;
	bool in_profile = false;
	struct stat sb;
	ssize_t n;
	size_t len = 0;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kms_errf(err, err_len, -EACCES, "cannot read AWS credentials file %s: %s", path,
				strerror(errno));
	/* The rule of the PIN, token and keyring files: a secret others may read is refused. */
	rc = 0;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))
		rc = kms_errf(err, err_len, -EINVAL, "AWS credentials file %s is not a regular file",
			      path);
	else if (sb.st_mode & (S_IRWXG | S_IRWXO))
		rc = kms_errf(err, err_len, -EACCES,
			      "AWS credentials file %s may be read by group or others: chmod 600 %s",
			      path, path);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	buf = secmem_alloc(MAX_CRED_FILE + 1);
	if (!buf) {
		close(fd);
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	}
	while (len < MAX_CRED_FILE && (n = read(fd, buf + len, MAX_CRED_FILE - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
	for (line = buf; line; line = next) {
		char *eq, *key;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		line = trim(line);
		if (*line == '[') {
			char *close_br = strchr(line, ']');

			if (close_br)
				*close_br = '\0';
			in_profile = close_br && strcmp(trim(line + 1), profile) == 0;
			continue;
		}
		eq = strchr(line, '=');
		if (!in_profile || *line == '#' || *line == ';' || !eq)
			continue;
		*eq = '\0';
		key = trim(line);
		if (strcasecmp(key, "aws_access_key_id") == 0)
			id = trim(eq + 1);
		else if (strcasecmp(key, "aws_secret_access_key") == 0)
			secret = trim(eq + 1);
		else if (strcasecmp(key, "aws_session_token") == 0)
			token = trim(eq + 1);
	}
	if (!id)
		rc = kms_errf(err, err_len, -EACCES,
			      "AWS credentials file %s has no profile [%s] with aws_access_key_id", path,
			      profile);
	else
		rc = fill_creds(c, id, secret, token, err, err_len);
	secmem_free(buf, MAX_CRED_FILE + 1);
	return rc;
}

/*
 * creds_from_env - $AWS_ACCESS_KEY_ID (an identifier, left in the
 * environment), and the secrets $AWS_SECRET_ACCESS_KEY and, if set,
 * $AWS_SESSION_TOKEN, taken out of it (kms/envsecret.h).
 */
static int creds_from_env(struct aws_creds *c, char *err, size_t err_len)
{
	struct env_secrets {
		char secret[MAX_SECRET + 1];
		char token[MAX_TOKEN + 1];
	} *e = secmem_alloc(sizeof(*e));
	size_t len;
	int rc, token_rc;

	if (!e)
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	rc = envsecret_copy("AWS_SECRET_ACCESS_KEY", e->secret, sizeof(e->secret), &len);
	token_rc = envsecret_copy("AWS_SESSION_TOKEN", e->token, sizeof(e->token), &len);
	if (rc == -ENOMEM || token_rc == -ENOMEM)
		rc = kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	else if (rc == -E2BIG || token_rc == -E2BIG)
		rc = kms_errf(err, err_len, -EINVAL, "malformed AWS credentials");
	else
		rc = fill_creds(c, getenv("AWS_ACCESS_KEY_ID"), rc == 0 ? e->secret : NULL,
				token_rc == 0 ? e->token : NULL, err, err_len);
	secmem_free(e, sizeof(*e));
	return rc;
}

/*
 * load_creds - (re)load credentials into a fresh secmem struct and swap it
 * in.  Caller holds ak->lock (or is open(), alone).
 */
static int load_creds(struct aws_kms *ak, char *err, size_t err_len)
{
	struct aws_creds *c = secmem_alloc(sizeof(*c));
	struct stat st;
	int rc;

	if (!c)
		return kms_errf(err, err_len, -ENOMEM, "out of locked memory");
	memset(&st, 0, sizeof(st));
	if (ak->creds_from_env)
		rc = creds_from_env(c, err, err_len);
	else if (!ak->cred_file[0] || stat(ak->cred_file, &st) < 0)
		rc = kms_errf(err, err_len, -EACCES,
			      "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
			      "or give profile %s in %s",
			      ak->profile, ak->cred_file[0] ? ak->cred_file : "~/.aws/credentials");
	else
		rc = read_profile(ak->cred_file, ak->profile, c, err, err_len);
	if (rc < 0) {
		secmem_free(c, sizeof(*c));
		return rc;
	}
	secmem_free(ak->creds, sizeof(*ak->creds));
	ak->creds = c;
	ak->cred_stat = st;
	return 0;
}

/* creds_copy - a private secmem copy of the current credentials for one call. */
static struct aws_creds *creds_copy(struct aws_kms *ak)
{
	struct aws_creds *c = secmem_alloc(sizeof(*c));
	struct stat st;

	if (!c)
		return NULL;
	pthread_mutex_lock(&ak->lock);
	/* A replaced credentials file (a refreshed session token) is picked up here. */
	if (!ak->creds_from_env && stat(ak->cred_file, &st) == 0 &&
	    (st.st_ino != ak->cred_stat.st_ino || st.st_mtim.tv_sec != ak->cred_stat.st_mtim.tv_sec ||
	     st.st_mtim.tv_nsec != ak->cred_stat.st_mtim.tv_nsec || st.st_size != ak->cred_stat.st_size))
		load_creds(ak, NULL, 0); /* on failure the old credentials stay */
	memcpy(c, ak->creds, sizeof(*c));
	pthread_mutex_unlock(&ak->lock);
	return c;
}

/* ---- calls ---- */

/*
 * error_type - the AWS error name of an answer: "__type" with any
 * "namespace#" prefix removed.  Empty if the body is not an AWS JSON error.
 */
static void error_type(const struct http_response *resp, char *out, size_t cap)
{
	struct json_doc *doc = NULL;
	char *hash;

	out[0] = '\0';
	if (!resp->body || json_parse((const char *)resp->body, resp->len, &doc) < 0)
		return;
	if (json_get_string(doc, "__type", out, cap, NULL) < 0)
		out[0] = '\0';
	json_free(doc);
	hash = strrchr(out, '#');
	if (hash)
		memmove(out, hash + 1, strlen(hash + 1) + 1);
}

/* The AWS error names that mean "slow down" (the SDKs' throttling list, as KMS uses it). */
static const char *const throttle_types[] = { "ThrottlingException", "Throttling",
					      "RequestLimitExceeded", "TooManyRequestsException" };

/* is_throttle_type - is @type one of throttle_types? */
static bool is_throttle_type(const char *type)
{
	size_t i;

	for (i = 0; i < sizeof(throttle_types) / sizeof(throttle_types[0]); i++)
		if (strcmp(type, throttle_types[i]) == 0)
			return true;
	return false;
}

static enum http_verdict aws_classify(void *arg, const struct http_response *resp)
{
	static const char *const fault_types[] = { "KMSInternalException",
						   "DependencyTimeoutException",
						   "KeyUnavailableException" };
	char type[128];
	size_t i;

	(void)arg;
	if (resp->status < 400)
		return HTTP_FINAL;
	/* Throttling comes as HTTP 400 with its name in the body. */
	error_type(resp, type, sizeof(type));
	if (resp->status == 429 || is_throttle_type(type))
		return HTTP_THROTTLED;
	if (resp->status == 500 || resp->status == 502 || resp->status == 503 ||
	    resp->status == 504)
		return HTTP_FAULT;
	for (i = 0; i < sizeof(fault_types) / sizeof(fault_types[0]); i++)
		if (strcmp(type, fault_types[i]) == 0)
			return HTTP_FAULT;
	return HTTP_FINAL;
}

/* map_error - the kms errno for an AWS error answer. */
static int map_error(const struct http_response *resp)
{
	static const struct {
		const char *type;
		int err;
	} map[] = {
		{ "InvalidCiphertextException", -EBADMSG },
		{ "IncorrectKeyException", -EBADMSG },
		{ "NotFoundException", -ENOENT },
		{ "AccessDeniedException", -EACCES },
		{ "DisabledException", -EACCES },
		{ "KMSInvalidStateException", -EACCES },
		{ "UnrecognizedClientException", -EACCES },
		{ "InvalidSignatureException", -EACCES },
		{ "IncompleteSignature", -EACCES },
		{ "MissingAuthenticationToken", -EACCES },
		{ "ExpiredTokenException", -EACCES },
		{ "InvalidClientTokenId", -EACCES },
		{ "InvalidGrantTokenException", -EACCES },
		{ "RequestExpired", -EACCES },	/* a signature too old: this host's clock */
		{ "SignatureDoesNotMatch", -EACCES },
		{ "InvalidArnException", -EINVAL },	/* kms:key_id is not a usable ARN */
		{ "UnsupportedOperationException", -EINVAL }, /* e.g. a key in a custom key store */
		{ "ValidationException", -EINVAL },
		{ "InvalidKeyUsageException", -EINVAL },
		{ "KMSInternalException", -EAGAIN },
		{ "DependencyTimeoutException", -EAGAIN },
		{ "KeyUnavailableException", -EAGAIN },
	};
	char type[128];
	size_t i;

	error_type(resp, type, sizeof(type));
	if (is_throttle_type(type))
		return -EAGAIN;
	for (i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(type, map[i].type) == 0)
			return map[i].err;
	/* Not an AWS JSON error (e.g. a signature failure answered in XML): go by the status. */
	if (resp->status == 401 || resp->status == 403)
		return -EACCES;
	if (resp->status == 404)
		return -ENOENT;
	if (resp->status == 429 || resp->status >= 500)
		return -EAGAIN;
	return -EIO;
}

/*
 * aws_call_until - POST @body to TrentService.@op, done by @deadline (from
 * http_deadline(): the operation's, when it makes several calls).  On 0,
 * *@doc is the parsed answer over @resp's body (free both).  Errors are kms
 * errnos.
 */
static int aws_call_until(struct aws_kms *ak, uint64_t deadline, const char *op, const char *body,
			  size_t body_len, struct http_response *resp, struct json_doc **doc)
{
	char target[96], err[512];
	const char *headers[4];
	struct http_request req = { .method = "POST", .url = ak->url, .headers = headers,
				    .body = body, .body_len = body_len, .aws_sigv4 = ak->sigv4,
				    .deadline_at_ms = deadline };
	struct aws_creds *creds;
	int rc, n = 0;

	*doc = NULL;
	memset(resp, 0, sizeof(*resp));
	creds = creds_copy(ak);
	if (!creds)
		return -ENOMEM;
	snprintf(target, sizeof(target), "X-Amz-Target: TrentService.%s", op);
	headers[n++] = "Content-Type: application/x-amz-json-1.1";
	headers[n++] = target;
	/* curl copies these into its own (unwiped) heap; ours are wiped below. */
	if (creds->has_token)
		headers[n++] = creds->token_header;
	headers[n] = NULL;
	req.userpwd = creds->userpwd;
	rc = http_request(ak->http, &req, resp, err, sizeof(err));
	secmem_free(creds, sizeof(*creds));
	if (rc == -EAGAIN)
		return -EAGAIN;
	if (rc < 0)
		return rc == -ENOMEM ? -ENOMEM : -EIO;
	if (resp->status != 200)
		return map_error(resp);
	if (!resp->body || json_parse((const char *)resp->body, resp->len, doc) < 0)
		return -EIO;
	return 0;
}

/* aws_call - aws_call_until() for an operation that is this one call. */
static int aws_call(struct aws_kms *ak, const char *op, const char *body, size_t body_len,
		    struct http_response *resp, struct json_doc **doc)
{
	return aws_call_until(ak, http_deadline(ak->http), op, body, body_len, resp, doc);
}

/* get_b64 - decode base64 string field @path of @doc into @out (exactly @want bytes if nonzero). */
static int get_b64(const struct json_doc *doc, const char *path, uint8_t *out, size_t cap,
		   size_t want, size_t *out_len)
{
	size_t scratch_len = 4 * ((cap + 2) / 3) + 8, len, n = 0;
	char *scratch;
	int rc;

	/* Plaintext DEKs pass through here: the base64 text lives in secmem too. */
	scratch = secmem_alloc(scratch_len);
	if (!scratch)
		return -ENOMEM;
	rc = json_get_string(doc, path, scratch, scratch_len, &len);
	if (rc == 0)
		rc = base64_decode(scratch, len, out, cap, &n);
	secmem_free(scratch, scratch_len);
	if (rc < 0 || (want && n != want)) {
		/* KMS sent something other than what the API promises; leave no partial key. */
		secmem_wipe(out, cap);
		return rc == -ENOMEM ? -ENOMEM : -EIO;
	}
	if (out_len)
		*out_len = n;
	return 0;
}

/* ---- versions ---- */

/* read_rotations - 1 + the number of rotations ListKeyRotations reports (all pages), by @deadline. */
static int read_rotations(struct aws_kms *ak, uint64_t deadline, uint32_t *version)
{
	char body[MAX_BODY], marker[1024] = "";
	uint64_t count = 0;
	bool truncated = true;
	int rc = 0;

	while (truncated && rc == 0) {
		struct json_writer w;
		struct http_response resp;
		struct json_doc *doc;
		size_t len, n = 0;

		json_writer_init(&w, body, sizeof(body));
		json_write_object_begin(&w);
		json_write_key(&w, "KeyId");
		json_write_string(&w, ak->key_arn);
		json_write_key(&w, "Limit");
		json_write_int(&w, 1000);
		if (marker[0]) {
			json_write_key(&w, "Marker");
			json_write_string(&w, marker);
		}
		json_write_object_end(&w);
		if (json_writer_finish(&w, &len) < 0)
			return -EIO;
		rc = aws_call_until(ak, deadline, "ListKeyRotations", body, len, &resp, &doc);
		if (rc == 0) {
			truncated = false;
			if (json_array_len(doc, "Rotations", &n) < 0)
				rc = -EIO;
			json_get_bool(doc, "Truncated", &truncated);
			if (truncated &&
			    json_get_string(doc, "NextMarker", marker, sizeof(marker), NULL) < 0)
				rc = -EIO;
			count += n;
		}
		json_free(doc);
		http_response_free(&resp);
	}
	if (rc < 0)
		return rc;
	if (count >= UINT32_MAX)
		return -EIO;
	*version = (uint32_t)count + 1;
	return 0;
}

/*
 * version_now - the current version, re-read (by @deadline) if older than
 * @max_age_ms.  Every caller reads it before its KMS call, so a blob never
 * claims a newer version than the key material that made it.
 */
static int version_now(struct aws_kms *ak, uint64_t max_age_ms, uint64_t deadline,
		       uint32_t *version)
{
	uint64_t at;
	uint32_t v;
	int rc;

	pthread_mutex_lock(&ak->lock);
	at = ak->version_at_ms;
	v = ak->version;
	pthread_mutex_unlock(&ak->lock);
	if (at && now_ms() - at < max_age_ms) {
		*version = v;
		return 0;
	}
	rc = read_rotations(ak, deadline, &v);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&ak->lock);
	/* Rotations are never undone: keep the larger of two racing reads. */
	if (v > ak->version || !ak->version_at_ms)
		ak->version = v;
	ak->version_at_ms = now_ms();
	*version = ak->version;
	pthread_mutex_unlock(&ak->lock);
	return 0;
}

/* ---- operations ---- */

/* framed_answer - the answer's CiphertextBlob framed with version @v into @blob (kms errnos). */
static int framed_answer(const struct json_doc *doc, uint32_t v, uint8_t *blob, size_t blob_cap,
			 size_t *blob_len)
{
	uint8_t ct[AWS_MAX_CIPHERTEXT];
	size_t ct_len;
	int rc = get_b64(doc, "CiphertextBlob", ct, sizeof(ct), 0, &ct_len);

	if (rc == 0)
		rc = aws_blob_frame(v, ct, ct_len, blob, blob_cap, blob_len) < 0 ? -EIO : 0;
	return rc;
}

static int aws_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek,
			uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct aws_kms *ak = kms->priv;
	uint64_t deadline = http_deadline(ak->http); /* for both calls: version, then the key */
	struct http_response resp;
	struct json_doc *doc;
	struct json_writer w;
	char body[MAX_BODY];
	size_t len;
	uint32_t v;
	int rc;

	rc = version_now(ak, VERSION_TTL_MS, deadline, &v);
	if (rc < 0)
		return rc;
	json_writer_init(&w, body, sizeof(body));
	json_write_object_begin(&w);
	json_write_key(&w, "KeyId");
	json_write_string(&w, ak->key_arn);
	json_write_key(&w, "KeySpec");
	json_write_string(&w, "AES_256");
	json_write_key(&w, "EncryptionContext");
	write_context(&w, ctx);
	json_write_object_end(&w);
	if (json_writer_finish(&w, &len) < 0)
		return -EIO;
	rc = aws_call_until(ak, deadline, "GenerateDataKey", body, len, &resp, &doc);
	if (rc == 0)
		rc = get_b64(doc, "Plaintext", dek, KMS_DEK_LEN, KMS_DEK_LEN, NULL);
	if (rc == 0)
		rc = framed_answer(doc, v, blob, blob_cap, blob_len);
	if (rc == 0)
		*version = v;
	else
		secmem_wipe(dek, KMS_DEK_LEN);
	json_free(doc);
	http_response_free(&resp);
	return rc;
}

/*
 * aws_wrap - Encrypt the caller's DEK under the key, with the same context
 * and blob framing as generate: a volume moving here from another KMS.  The
 * request body carries the DEK (base64), so it lives in secmem and is wiped.
 */
static int aws_wrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek,
		    uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct aws_kms *ak = kms->priv;
	uint64_t deadline = http_deadline(ak->http); /* for both calls: version, then Encrypt */
	struct http_response resp;
	struct json_doc *doc = NULL;
	struct json_writer w;
	char *body = secmem_alloc(MAX_BODY), *b64 = secmem_alloc(B64_DEK_MAX);
	size_t len;
	uint32_t v;
	int rc = body && b64 ? version_now(ak, VERSION_TTL_MS, deadline, &v) : -ENOMEM;

	memset(&resp, 0, sizeof(resp));
	if (rc == 0 && base64_encode(dek, KMS_DEK_LEN, b64, B64_DEK_MAX) < 0)
		rc = -EIO;
	if (rc == 0) {
		json_writer_init(&w, body, MAX_BODY);
		json_write_object_begin(&w);
		json_write_key(&w, "KeyId");
		json_write_string(&w, ak->key_arn);
		json_write_key(&w, "Plaintext");
		json_write_string(&w, b64);
		json_write_key(&w, "EncryptionContext");
		write_context(&w, ctx);
		json_write_object_end(&w);
		rc = json_writer_finish(&w, &len) < 0 ? -EIO : 0;
	}
	if (rc == 0)
		rc = aws_call_until(ak, deadline, "Encrypt", body, len, &resp, &doc);
	if (rc == 0)
		rc = framed_answer(doc, v, blob, blob_cap, blob_len);
	if (rc == 0)
		*version = v;
	json_free(doc);
	http_response_free(&resp);
	secmem_free(b64, B64_DEK_MAX);
	secmem_free(body, MAX_BODY);
	return rc;
}

/*
 * call_on_blob - Decrypt (@reencrypt false) or ReEncrypt onto the same key
 * and context (@reencrypt true) the AWS ciphertext inside @blob.  Same
 * contract as aws_call; -EBADMSG for a blob that is not ours.
 */
static int call_on_blob(struct aws_kms *ak, uint64_t deadline, bool reencrypt,
			const struct kms_context *ctx, const uint8_t *blob, size_t blob_len,
			struct http_response *resp, struct json_doc **doc)
{
	char body[MAX_BODY], b64[4 * ((AWS_MAX_CIPHERTEXT + 2) / 3) + 1];
	struct json_writer w;
	const uint8_t *ct;
	size_t ct_len, len;
	uint32_t v;

	*doc = NULL;
	memset(resp, 0, sizeof(*resp));
	if (aws_blob_parse(blob, blob_len, &v, &ct, &ct_len) < 0)
		return -EBADMSG;
	base64_encode(ct, ct_len, b64, sizeof(b64));
	json_writer_init(&w, body, sizeof(body));
	json_write_object_begin(&w);
	json_write_key(&w, "CiphertextBlob");
	json_write_string(&w, b64);
	json_write_key(&w, reencrypt ? "SourceKeyId" : "KeyId");
	json_write_string(&w, ak->key_arn);
	json_write_key(&w, reencrypt ? "SourceEncryptionContext" : "EncryptionContext");
	write_context(&w, ctx);
	if (reencrypt) {
		json_write_key(&w, "DestinationKeyId");
		json_write_string(&w, ak->key_arn);
		json_write_key(&w, "DestinationEncryptionContext");
		write_context(&w, ctx);
	}
	json_write_object_end(&w);
	if (json_writer_finish(&w, &len) < 0)
		return -EIO;
	return aws_call_until(ak, deadline, reencrypt ? "ReEncrypt" : "Decrypt", body, len, resp,
			      doc);
}

static int aws_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *dek)
{
	struct http_response resp;
	struct json_doc *doc;
	int rc;

	struct aws_kms *ak = kms->priv;

	rc = call_on_blob(ak, http_deadline(ak->http), false, ctx, blob, blob_len, &resp, &doc);
	if (rc == 0)
		rc = get_b64(doc, "Plaintext", dek, KMS_DEK_LEN, KMS_DEK_LEN, NULL);
	json_free(doc);
	http_response_free(&resp);
	return rc;
}

static void aws_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n)
{
	fanout_unwrap(kms, items, n, UNWRAP_PARALLEL);
}

static int aws_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
		      uint32_t *version)
{
	struct aws_kms *ak = kms->priv;
	uint64_t deadline = http_deadline(ak->http); /* for both calls: version, then ReEncrypt */
	struct http_response resp;
	struct json_doc *doc = NULL;
	uint32_t v;
	int rc;

	/* Rotation asks right after a rotation: a fresh look, not the file-creation cache. */
	rc = version_now(ak, VERSION_CHECK_MS, deadline, &v);
	if (rc < 0)
		return rc;
	/* ReEncrypt: the DEK is decrypted and re-encrypted inside KMS, never sent to us. */
	rc = call_on_blob(ak, deadline, true, ctx, blob, blob_len, &resp, &doc);
	if (rc == 0)
		rc = framed_answer(doc, v, out, out_cap, out_len);
	if (rc == 0)
		*version = v;
	json_free(doc);
	http_response_free(&resp);
	return rc;
}

static int aws_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len,
			    uint32_t *version)
{
	const uint8_t *ct;
	size_t ct_len;

	(void)kms;
	return aws_blob_parse(blob, blob_len, version, &ct, &ct_len);
}

static int aws_current_version(struct kms *kms, uint32_t *version)
{
	struct aws_kms *ak = kms->priv;

	return version_now(ak, VERSION_CHECK_MS, http_deadline(ak->http), version);
}

static void aws_remote_stats(struct kms *kms, struct kms_remote_stats *out)
{
	struct aws_kms *ak = kms->priv;

	http_client_kms_stats(ak->http, out);
}

static void on_breaker(void *arg, bool up)
{
	struct aws_kms *ak = arg;

	kms_report_reachability(ak->kms, up);
}

/* ---- open / close ---- */

static void aws_close(struct kms *kms)
{
	struct aws_kms *ak = kms->priv;

	if (!ak)
		return;
	http_client_free(ak->http);
	secmem_free(ak->creds, sizeof(*ak->creds));
	pthread_mutex_destroy(&ak->lock);
	free(ak);
	kms->priv = NULL;
}

static int get_long(const dictionary *ini, const char *key, long *out, char *err, size_t err_len)
{
	const char *s = iniparser_getstring(ini, key, NULL);
	char *end;
	long v;

	if (!s)
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v <= 0 || v > 3600L * 1000)
		return kms_errf(err, err_len, -EINVAL, "setting %s = %s is not a positive number",
				key, s);
	*out = v;
	return 0;
}

static int parse_settings(struct aws_kms *ak, const dictionary *ini, struct http_settings *hs,
			  char *region, size_t region_cap, char *err, size_t err_len)
{
	const char *key_id = iniparser_getstring(ini, "kms:key_id", NULL);
	const char *reg = iniparser_getstring(ini, "kms:region", NULL);
	const char *endpoint = iniparser_getstring(ini, "kms:endpoint", NULL);
	const char *profile = iniparser_getstring(ini, "kms:profile", NULL);
	const char *cred_file = iniparser_getstring(ini, "kms:credentials_file", NULL);
	const char *unknown;
	char buf[PATH_MAX];
	long v;
	int rc;

	unknown = config_unknown_key(ini, "kms", known_settings,
				     sizeof(known_settings) / sizeof(known_settings[0]));
	if (unknown)
		return kms_errf(err, err_len, -EINVAL, "unknown setting %s for provider aws", unknown);
	if (!key_id || !*key_id || strlen(key_id) >= MAX_ARN)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:key_id is missing (a key ID, key ARN or alias/NAME)");
	snprintf(ak->key_id, sizeof(ak->key_id), "%s", key_id);
	if (!reg || !*reg)
		reg = getenv("AWS_REGION");
	if (!reg || !*reg)
		reg = getenv("AWS_DEFAULT_REGION");
	if (!reg || !*reg || strlen(reg) >= region_cap || strpbrk(reg, ":/ \t"))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:region is missing or malformed (e.g. us-east-1)");
	snprintf(region, region_cap, "%s", reg);
	if (endpoint && *endpoint)
		rc = snprintf(ak->url, sizeof(ak->url), "%s", endpoint);
	else
		rc = snprintf(ak->url, sizeof(ak->url), "https://kms.%s.amazonaws.com/", reg);
	if (rc < 0 || (size_t)rc >= sizeof(ak->url))
		return kms_errf(err, err_len, -EINVAL, "setting kms:endpoint is too long");
	if (!http_url_private(ak->url))
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:endpoint is plain http:// to another host: plaintext DEKs "
				"would cross the network in the clear; use https://");
	/* Region and service are explicit: curl cannot guess them from 127.0.0.1 or a VPC endpoint. */
	snprintf(ak->sigv4, sizeof(ak->sigv4), "aws:amz:%s:kms", reg);

	if (!profile || !*profile)
		profile = getenv("AWS_PROFILE");
	snprintf(ak->profile, sizeof(ak->profile), "%s", profile && *profile ? profile : "default");
	if (!cred_file || !*cred_file)
		cred_file = default_cred_file(buf, sizeof(buf));
	snprintf(ak->cred_file, sizeof(ak->cred_file), "%s", cred_file ? cred_file : "");
	/* The environment wins, as in the AWS SDKs, unless the volume names a profile or file. */
	ak->creds_from_env = getenv("AWS_ACCESS_KEY_ID") && !iniparser_getstring(ini, "kms:profile", NULL) &&
			     !iniparser_getstring(ini, "kms:credentials_file", NULL);

	hs->ca_file = iniparser_getstring(ini, "kms:ca_file", NULL);
	hs->ca_dir = iniparser_getstring(ini, "kms:ca_dir", NULL);
	hs->insecure = iniparser_getboolean(ini, "kms:insecure_skip_verify", 0) == 1;
	if ((rc = get_long(ini, "kms:connect_timeout_ms", &hs->connect_timeout_ms, err, err_len)) ||
	    (rc = get_long(ini, "kms:timeout_ms", &hs->attempt_timeout_ms, err, err_len)) ||
	    (rc = get_long(ini, "kms:deadline_ms", &hs->deadline_ms, err, err_len)) ||
	    (rc = get_long(ini, "kms:breaker_cooldown_ms", &hs->breaker_cooldown_ms, err, err_len)))
		return rc;
	v = 0;
	if ((rc = get_long(ini, "kms:max_attempts", &v, err, err_len)))
		return rc;
	hs->max_attempts = (unsigned)v;
	v = 0;
	if ((rc = get_long(ini, "kms:breaker_threshold", &v, err, err_len)))
		return rc;
	hs->breaker_threshold = (unsigned)v;
	return 0;
}

/* resolve_key - DescribeKey: the ARN of key_id, which must be an enabled symmetric key. */
static int resolve_key(struct aws_kms *ak, char *err, size_t err_len)
{
	struct http_response resp;
	struct json_doc *doc;
	struct json_writer w;
	char body[MAX_BODY], state[64];
	size_t len;
	int rc;

	json_writer_init(&w, body, sizeof(body));
	json_write_object_begin(&w);
	json_write_key(&w, "KeyId");
	json_write_string(&w, ak->key_id);
	json_write_object_end(&w);
	if (json_writer_finish(&w, &len) < 0)
		return kms_errf(err, err_len, -EINVAL, "setting kms:key_id is not valid text");
	rc = aws_call(ak, "DescribeKey", body, len, &resp, &doc);
	if (rc == 0 && (json_get_string(doc, "KeyMetadata.Arn", ak->key_arn, sizeof(ak->key_arn),
					NULL) < 0 ||
			json_get_string(doc, "KeyMetadata.KeyState", state, sizeof(state), NULL) < 0))
		rc = -EIO;
	if (rc == 0 && strcmp(state, "Enabled") != 0)
		rc = kms_errf(err, err_len, -EACCES, "AWS KMS key %s is %s, not Enabled", ak->key_id,
			      state);
	else if (rc < 0)
		kms_errf(err, err_len, rc, "AWS KMS at %s: cannot describe key %s: %s", ak->url,
			 ak->key_id,
			 rc == -EACCES ? "access denied (check the credentials and the key policy)"
				       : kms_strerror(rc));
	json_free(doc);
	http_response_free(&resp);
	return rc;
}

/* key_call - TrentService.@op on the key, with "PendingWindowInDays" @days if non-zero. */
static int key_call(struct aws_kms *ak, const char *op, int days)
{
	struct http_response resp;
	struct json_doc *doc;
	struct json_writer w;
	char body[MAX_BODY];
	size_t len;
	int rc;

	json_writer_init(&w, body, sizeof(body));
	json_write_object_begin(&w);
	json_write_key(&w, "KeyId");
	/* The key's own ID (the ARN's tail): what these calls take everywhere, aliases never. */
	json_write_string(&w, strrchr(ak->key_arn, '/') ? strrchr(ak->key_arn, '/') + 1
							 : ak->key_arn);
	if (days) {
		json_write_key(&w, "PendingWindowInDays");
		json_write_int(&w, days);
	}
	json_write_object_end(&w);
	if (json_writer_finish(&w, &len) < 0)
		return -EIO;
	rc = aws_call(ak, op, body, len, &resp, &doc);
	json_free(doc);
	http_response_free(&resp);
	return rc;
}

/*
 * aws_destroy - AWS KMS deletes a key only after a waiting period: disable
 * it now (every unwrap refused at once), then schedule its deletion at the
 * shortest window AWS allows (7 days).
 */
static int aws_destroy(struct kms *kms, char *err, size_t err_len)
{
	struct aws_kms *ak = kms->priv;
	int rc = key_call(ak, "DisableKey", 0);

	if (rc == 0)
		rc = key_call(ak, "ScheduleKeyDeletion", AWS_MIN_DELETION_DAYS);
	if (rc == 0)
		kms_errf(err, err_len, 0, "AWS KMS at %s: key %s is disabled, and deleted for good in "
			 "%d days (cancelling the deletion in that time brings it back)", ak->url,
			 ak->key_arn, AWS_MIN_DELETION_DAYS);
	if (rc < 0)
		kms_errf(err, err_len, rc, "AWS KMS at %s: cannot disable and schedule the deletion "
			 "of key %s: %s", ak->url, ak->key_arn,
			 rc == -EACCES ? "access denied (the key policy must allow kms:DisableKey "
					 "and kms:ScheduleKeyDeletion)"
				       : kms_strerror(rc));
	return rc;
}

static int aws_open(struct kms *kms, const dictionary *ini, char *err, size_t err_len)
{
	struct http_settings hs = { .classify = aws_classify };
	struct aws_kms *ak;
	char region[64];
	int rc;

	ak = calloc(1, sizeof(*ak));
	if (!ak)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	pthread_mutex_init(&ak->lock, NULL);
	ak->kms = kms;
	kms->priv = ak;
	rc = parse_settings(ak, ini, &hs, region, sizeof(region), err, err_len);
	if (rc == 0)
		rc = load_creds(ak, err, err_len);
	if (rc == 0) {
		hs.on_state = on_breaker;
		hs.state_arg = ak;
		rc = http_client_new(&hs, &ak->http, err, err_len);
	}
	if (rc == 0)
		rc = resolve_key(ak, err, err_len);
	if (rc < 0) {
		aws_close(kms);
		return rc;
	}
	rc = snprintf(kms->key_ref, sizeof(kms->key_ref), "aws:%s:%s", region, ak->key_id);
	if (rc < 0 || (size_t)rc >= sizeof(kms->key_ref)) {
		aws_close(kms);
		return kms_errf(err, err_len, -EINVAL, "setting kms:key_id is too long");
	}
	kms->max_blob_len = AWS_MAX_BLOB;
	return 0;
}

const struct kms_ops kms_aws_ops = {
	.name = "aws",
	.open = aws_open,
	.generate = aws_generate,
	.wrap = aws_wrap,
	.unwrap = aws_unwrap,
	.unwrap_many = aws_unwrap_many,
	.rewrap = aws_rewrap,
	.blob_version = aws_blob_version,
	.current_version = aws_current_version,
	.close = aws_close,
	.remote_stats = aws_remote_stats,
	.destroy = aws_destroy,
};
