// SPDX-License-Identifier: MIT
/*
 * The `kmip` provider: master keys are AES-256 symmetric keys on a KMIP
 * server (Fortanix DSM, Thales CipherTrust, Entrust KeyControl, Vault's KMIP
 * engine; PyKMIP's server in the tests) and never leave it.  A DEK is drawn
 * here and wrapped by the server's Encrypt with AES-GCM, our random 96-bit
 * IV and the volume UUID and file ID in the authenticated additional data;
 * it is unwrapped by Decrypt (KMIP 1.4 fields Authenticated Encryption
 * Additional Data and Tag).  Blob and AAD: kms/kmip.h, docs/FORMAT.md.
 *
 * Settings, section [kms]:
 *   provider    = kmip
 *   host        = the server's DNS name or IP address (what its certificate names)
 *   port        = 5696 (default)
 *   ca_file     = PEM file of the CA(s) the server's certificate must chain to
 *   cert_file   = PEM file of our client certificate (and its chain)
 *   key_file    = PEM file of its private key, unencrypted, mode 0600
 *   key_name    = the master key's base name L: version N is the key named "L.N"
 *   connections = 1 .. 64 kept-alive TLS connections (default 4)
 *   connect_timeout_ms = 1 .. 600000 (default 2000), timeout_ms = 1 .. 600000
 *                 (default 10000: one operation, all its exchanges)
 *
 * Versions: the table "N -> unique identifier" is read whole at open and by
 * current_version() (asked by rotation and status; at most once a second),
 * by a Locate of the symmetric keys and a batch of Get Attributes; every
 * current_version(), and every wrap at most once a second, also Locates
 * "L.(current+1)", so a new key counts at once and without a remount; a blob
 * naming a version not in the table Locates "L.N".  kms_unwrap_many() sends
 * up to UNWRAP_BATCH Decrypts in one request message.  Messages: KMIP 1.4 request/response (kms/ttlv.h) over
 * kms/kmip_conn.h.
 */

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/bigendian.h"
#include "crypto/random.h"
#include "crypto/secmem.h"
#include "kms/config.h"
#include "kms/kmip.h"
#include "kms/kmip_conn.h"
#include "kms/ttlv.h"

/* KMIP tags (KMIP 1.4 section 9.1.3.1) and enumeration values the provider uses. */
enum {
	T_ATTRIBUTE = 0x420008,
	T_ATTRIBUTE_NAME = 0x42000A,
	T_ATTRIBUTE_VALUE = 0x42000B,
	T_BATCH_COUNT = 0x42000D,
	T_BATCH_ERROR_CONTINUATION = 0x42000E,
	T_BATCH_ITEM = 0x42000F,
	T_BLOCK_CIPHER_MODE = 0x420011,
	T_CRYPTO_LENGTH = 0x42002A,
	T_CRYPTO_ALGORITHM = 0x420028,
	T_CRYPTO_PARAMETERS = 0x42002B,
	T_IV_COUNTER_NONCE = 0x42003D,
	T_MAXIMUM_ITEMS = 0x42004F,
	T_NAME_TYPE = 0x420054,
	T_NAME_VALUE = 0x420055,
	T_OBJECT_TYPE = 0x420057,
	T_OPERATION = 0x42005C,
	T_PROTOCOL_VERSION = 0x420069,
	T_PROTOCOL_MAJOR = 0x42006A,
	T_PROTOCOL_MINOR = 0x42006B,
	T_REQUEST_HEADER = 0x420077,
	T_REQUEST_MESSAGE = 0x420078,
	T_REQUEST_PAYLOAD = 0x420079,
	T_RESPONSE_HEADER = 0x42007A,
	T_RESPONSE_MESSAGE = 0x42007B,
	T_RESPONSE_PAYLOAD = 0x42007C,
	T_RESULT_MESSAGE = 0x42007D,
	T_RESULT_REASON = 0x42007E,
	T_RESULT_STATUS = 0x42007F,
	T_REVOCATION_REASON = 0x420081,
	T_REVOCATION_REASON_CODE = 0x420082,
	T_UNIQUE_BATCH_ITEM_ID = 0x420093,
	T_UNIQUE_IDENTIFIER = 0x420094,
	T_DATA = 0x4200C2,
	T_TAG_LENGTH = 0x4200CE,
	T_OFFSET_ITEMS = 0x4200D4,
	T_AE_ADDITIONAL_DATA = 0x4200FE,
	T_AE_TAG = 0x4200FF,

	OP_LOCATE = 0x08,
	OP_GET_ATTRIBUTES = 0x0B,
	OP_REVOKE = 0x13,
	OP_DESTROY = 0x14,
	OP_ENCRYPT = 0x1F,
	OP_DECRYPT = 0x20,

	ALG_AES = 3,
	MODE_GCM = 9,
	OBJECT_SYMMETRIC_KEY = 2,
	NAME_TEXT = 1,
	/* States (KMIP 1.4 section 9.1.3.2.3); Active, Deactivated and Compromised keys still decrypt. */
	STATE_PRE_ACTIVE = 1,
	STATE_ACTIVE = 2,
	STATE_DEACTIVATED = 3,
	STATE_COMPROMISED = 4,
	/* Revocation Reason Code (section 9.1.3.2.19): the key is retired, not compromised. */
	REVOKE_CESSATION_OF_OPERATION = 6,

	STATUS_SUCCESS = 0,
	BATCH_CONTINUE = 1, /* Batch Error Continuation Option: Continue (Stop is 2) */

	/* Result Reasons, KMIP 1.4 section 9.1.3.2.29 */
	R_ITEM_NOT_FOUND = 0x01,
	R_AUTHENTICATION = 0x03,
	R_INVALID_MESSAGE = 0x04,
	R_OPERATION_NOT_SUPPORTED = 0x05,
	R_MISSING_DATA = 0x06,
	R_INVALID_FIELD = 0x07,
	R_FEATURE_NOT_SUPPORTED = 0x08,
	R_CRYPTOGRAPHIC_FAILURE = 0x0A,
	R_ILLEGAL_OPERATION = 0x0B,
	R_PERMISSION_DENIED = 0x0C,
	R_OBJECT_ARCHIVED = 0x0D,
	R_GENERAL_FAILURE = 0x100,
};

/* KMIP 1.4: the first version with the AE additional data and tag fields. */
#define PROTOCOL_MAJOR 1
#define PROTOCOL_MINOR 4
#define KMIP_PORT "5696"
#define DEFAULT_CONNECTIONS 4
#define MAX_CONNECTIONS 64
#define DEFAULT_CONNECT_MS 2000
#define DEFAULT_TIMEOUT_MS 10000
#define MAX_UID 128
#define MAX_KEY_NAME 100
#define NAME_BUF (MAX_KEY_NAME + 12) /* "L.N": L, '.', 10 digits, NUL */
/* Requests carrying a key, and their answers, are small; listings are not. */
#define CRYPTO_MSG_CAP 4096
#define LIST_MSG_CAP (1024 * 1024)
/* Keys listed per Locate page, described per Get Attributes batch; DEKs per Decrypt batch. */
#define LOCATE_PAGE 256
#define DESCRIBE_BATCH 32
#define UNWRAP_BATCH 32
/* A Decrypt item is under 400 bytes with a 128-byte identifier, its answer under 250. */
#define BATCH_REQ_CAP (256 + UNWRAP_BATCH * 512)
#define BATCH_RESP_CAP (256 + UNWRAP_BATCH * 384)
#define REFRESH_MS 1000

struct kmip_key {
	uint32_t version;
	uint32_t state; /* when listed */
	char uid[MAX_UID];
};

struct kmip_kms {
	struct kms *kms;
	struct kmip_pool *pool;
	char key_name[MAX_KEY_NAME + 1];
	char where[300]; /* "host:port", for messages */
	long timeout_ms;
	bool unreachable; /* last exchange failed in transport (atomic) */

	/* The versions on the server, ascending; never empty after open. */
	pthread_rwlock_t keys_lock;
	struct kmip_key *keys;
	size_t n_keys;
	uint64_t listed_at_ms;	/* last full listing (atomic) */
	uint64_t probed_at_ms;	/* last look for a newer version (atomic) */
};

static const char *const known_settings[] = {
	"kms:provider", "kms:host", "kms:port", "kms:ca_file", "kms:cert_file", "kms:key_file",
	"kms:key_name", "kms:connections", "kms:connect_timeout_ms", "kms:timeout_ms",
};

/* ---- pure pieces (kms/kmip.h) ---- */

void kmip_wrap_aad(uint8_t aad[KMIP_AAD_LEN], uint32_t version, const struct kms_context *ctx)
{
	memcpy(aad, KMIP_WRAP_LABEL, KMIP_WRAP_LABEL_LEN);
	put_be32(aad + KMIP_WRAP_LABEL_LEN, version);
	memcpy(aad + KMIP_WRAP_LABEL_LEN + 4, ctx->volume_uuid, 16);
	memcpy(aad + KMIP_WRAP_LABEL_LEN + 20, ctx->file_id, 16);
}

int kmip_blob_version(const uint8_t *blob, size_t len, uint32_t *version)
{
	if (!blob || len != KMIP_BLOB_LEN || get_be32(blob) == 0)
		return -EBADMSG;
	*version = get_be32(blob);
	return 0;
}

uint32_t kmip_name_version(const char *base, const char *name)
{
	size_t n = strlen(base), i;
	const char *digits;
	uint64_t v = 0;

	if (strncmp(name, base, n) != 0 || name[n] != '.')
		return 0;
	digits = name + n + 1;
	if (digits[0] == '0')
		return 0;
	for (i = 0; digits[i]; i++) {
		if (digits[i] < '0' || digits[i] > '9' || i == 10)
			return 0;
		v = v * 10 + (uint64_t)(digits[i] - '0');
	}
	return i && v <= UINT32_MAX ? (uint32_t)v : 0;
}

/* ---- messages ---- */

/*
 * request_begin - the Request Message and its header, for @count batch
 * items.  Items of a batch are independent (one file's failure is not its
 * neighbour's), so a batch asks the server to go on after a failed item
 * (Batch Error Continuation Option Continue; the default, Stop, would leave
 * the rest undone).
 */
static void request_begin(struct ttlv_writer *w, int32_t count)
{
	ttlv_begin(w, T_REQUEST_MESSAGE);
	ttlv_begin(w, T_REQUEST_HEADER);
	ttlv_begin(w, T_PROTOCOL_VERSION);
	ttlv_put_int(w, T_PROTOCOL_MAJOR, PROTOCOL_MAJOR);
	ttlv_put_int(w, T_PROTOCOL_MINOR, PROTOCOL_MINOR);
	ttlv_end(w);
	if (count > 1)
		ttlv_put_enum(w, T_BATCH_ERROR_CONTINUATION, BATCH_CONTINUE);
	ttlv_put_int(w, T_BATCH_COUNT, count);
	ttlv_end(w);
}

/*
 * item_begin - batch item @index of @op; its payload follows, closed by
 * item_end().  Every item carries its index as Unique Batch Item ID (4
 * bytes, big-endian), which KMIP requires when a message has several and
 * the answer echoes.
 */
static void item_begin(struct ttlv_writer *w, uint32_t op, uint32_t index)
{
	uint8_t id[4];

	put_be32(id, index);
	ttlv_begin(w, T_BATCH_ITEM);
	ttlv_put_enum(w, T_OPERATION, op);
	ttlv_put_bytes(w, T_UNIQUE_BATCH_ITEM_ID, id, sizeof(id));
	ttlv_begin(w, T_REQUEST_PAYLOAD);
}

static void item_end(struct ttlv_writer *w)
{
	ttlv_end(w); /* payload */
	ttlv_end(w); /* batch item */
}

/* reason_errno - the kms errno for a failed item's Result Reason, in operation @op. */
static int reason_errno(uint32_t op, uint32_t reason)
{
	switch (reason) {
	case R_ITEM_NOT_FOUND:
	case R_OBJECT_ARCHIVED:
		return -ENOENT;
	case R_AUTHENTICATION:
	case R_PERMISSION_DENIED:
	case R_ILLEGAL_OPERATION: /* e.g. a key not in the Active state */
		return -EACCES;
	case R_CRYPTOGRAPHIC_FAILURE:
	/* PyKMIP answers a failed GCM tag with General Failure. */
	case R_GENERAL_FAILURE:
		return op == OP_DECRYPT ? -EBADMSG : -EIO;
	case R_INVALID_MESSAGE:
	case R_OPERATION_NOT_SUPPORTED:
	case R_MISSING_DATA:
	case R_INVALID_FIELD:
	case R_FEATURE_NOT_SUPPORTED:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* A parsed answer: the response message, which lives in the caller's buffer. */
struct answer {
	struct ttlv_item msg;
};

/*
 * answer_item - the payload of batch item @i of @a, which must answer @op.
 * 0, or the item's error as a kms errno with the server's message in @err.
 */
static int answer_item(const struct kmip_kms *kp, const struct answer *a, size_t i, uint32_t op,
		       struct ttlv_item *payload, char *err, size_t err_len)
{
	struct ttlv_item item;
	uint32_t status, reason = 0, got_op;
	char message[256] = "";
	const uint8_t *id;
	size_t id_len;
	int rc;

	/* The i-th answer must be to the i-th request: same operation, and our ID if echoed. */
	if (ttlv_child(&a->msg, T_BATCH_ITEM, i, &item) < 0 ||
	    ttlv_get_enum(&item, T_OPERATION, &got_op) < 0 || got_op != op ||
	    (ttlv_get_bytes(&item, T_UNIQUE_BATCH_ITEM_ID, &id, &id_len) == 0 &&
	     (id_len != 4 || get_be32(id) != i)) ||
	    ttlv_get_enum(&item, T_RESULT_STATUS, &status) < 0)
		return kms_errf(err, err_len, -EIO, "KMIP server %s: malformed answer", kp->where);
	if (status != STATUS_SUCCESS) {
		ttlv_get_enum(&item, T_RESULT_REASON, &reason);
		if (ttlv_get_text(&item, T_RESULT_MESSAGE, message, sizeof(message)) < 0)
			message[0] = '\0';
		rc = reason_errno(op, reason);
		return kms_errf(err, err_len, rc, "KMIP server %s: %s (result reason 0x%x%s%s)",
				kp->where, kms_strerror(rc), reason, message[0] ? ": " : "", message);
	}
	if (ttlv_child(&item, T_RESPONSE_PAYLOAD, 0, payload) < 0)
		return kms_errf(err, err_len, -EIO, "KMIP server %s: answer without payload",
				kp->where);
	return 0;
}

/* note_reachability - report the edges of "the server answers" to the kms hook. */
static void note_reachability(struct kmip_kms *kp, int rc)
{
	bool down = rc == -EAGAIN;

	if (__atomic_exchange_n(&kp->unreachable, down, __ATOMIC_RELAXED) != down)
		kms_report_reachability(kp->kms, !down);
}

/*
 * call - send the request in @req (@req_len bytes) and parse the answer,
 * read into @resp (@cap bytes), by @deadline.  It must hold @count batch
 * items.  0 or a kms errno (message in @err).
 */
static int call(struct kmip_kms *kp, const uint8_t *req, size_t req_len, uint8_t *resp, size_t cap,
		size_t count, uint64_t deadline, struct answer *a, char *err, size_t err_len)
{
	struct ttlv_item hdr;
	size_t len;
	int32_t n;
	int rc;

	rc = kmip_pool_exchange(kp->pool, req, req_len, resp, cap, &len, deadline, err, err_len);
	note_reachability(kp, rc);
	if (rc == -EBADMSG)
		return -EIO;
	if (rc < 0)
		return rc;
	/* One answer per request item, and a header that counts them so. */
	if (ttlv_parse(resp, len, &a->msg) < 0 || a->msg.tag != T_RESPONSE_MESSAGE ||
	    ttlv_count(&a->msg, T_BATCH_ITEM) != count ||
	    ttlv_child(&a->msg, T_RESPONSE_HEADER, 0, &hdr) < 0 ||
	    ttlv_get_int(&hdr, T_BATCH_COUNT, &n) < 0 || n < 0 || (size_t)n != count)
		return kms_errf(err, err_len, -EIO, "KMIP server %s: malformed answer", kp->where);
	return 0;
}

static uint64_t op_deadline(const struct kmip_kms *kp)
{
	return kmip_now_ms() + (uint64_t)kp->timeout_ms;
}

/* ---- versions ---- */

/* put_name_attribute - a Locate filter: Name = @name (text string). */
static void put_name_attribute(struct ttlv_writer *w, const char *name)
{
	ttlv_begin(w, T_ATTRIBUTE);
	ttlv_put_text(w, T_ATTRIBUTE_NAME, "Name");
	ttlv_begin(w, T_ATTRIBUTE_VALUE);
	ttlv_put_text(w, T_NAME_VALUE, name);
	ttlv_put_enum(w, T_NAME_TYPE, NAME_TEXT);
	ttlv_end(w);
	ttlv_end(w);
}

static void put_symmetric_key_filter(struct ttlv_writer *w)
{
	ttlv_begin(w, T_ATTRIBUTE);
	ttlv_put_text(w, T_ATTRIBUTE_NAME, "Object Type");
	ttlv_put_enum(w, T_ATTRIBUTE_VALUE, OBJECT_SYMMETRIC_KEY);
	ttlv_end(w);
}

/* A list of unique identifiers a Locate found. */
struct uid_list {
	char (*uid)[MAX_UID];
	size_t n, cap;
};

static int uid_add(struct uid_list *l, const struct ttlv_item *it)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		char(*grown)[MAX_UID] = realloc(l->uid, cap * sizeof(*l->uid));

		if (!grown)
			return -ENOMEM;
		l->uid = grown;
		l->cap = cap;
	}
	if (ttlv_item_text(it, l->uid[l->n], MAX_UID) < 0)
		return -EIO;
	l->n++;
	return 0;
}

/*
 * locate - the unique identifiers of the symmetric keys named @name (all
 * symmetric keys if NULL), every page of them, into @l.
 */
static int locate(struct kmip_kms *kp, const char *name, uint64_t deadline, struct uid_list *l,
		  char *err, size_t err_len)
{
	uint8_t req[1024], *resp = malloc(LIST_MSG_CAP);
	size_t req_len, n, i, offset = 0;
	struct ttlv_writer w;
	struct ttlv_item payload, it;
	struct answer a;
	int rc = resp ? 0 : -ENOMEM;

	while (rc == 0) {
		ttlv_writer_init(&w, req, sizeof(req));
		request_begin(&w, 1);
		item_begin(&w, OP_LOCATE, 0);
		ttlv_put_int(&w, T_MAXIMUM_ITEMS, LOCATE_PAGE);
		if (offset)
			ttlv_put_int(&w, T_OFFSET_ITEMS, (int32_t)offset);
		put_symmetric_key_filter(&w);
		if (name)
			put_name_attribute(&w, name);
		item_end(&w);
		ttlv_end(&w);
		if (ttlv_finish(&w, &req_len) < 0) {
			rc = kms_errf(err, err_len, -EINVAL, "KMIP Locate request too large");
			break;
		}
		rc = call(kp, req, req_len, resp, LIST_MSG_CAP, 1, deadline, &a, err, err_len);
		if (rc == 0)
			rc = answer_item(kp, &a, 0, OP_LOCATE, &payload, err, err_len);
		if (rc < 0)
			break;
		n = ttlv_count(&payload, T_UNIQUE_IDENTIFIER);
		for (i = 0; i < n && rc == 0; i++) {
			ttlv_child(&payload, T_UNIQUE_IDENTIFIER, i, &it);
			rc = uid_add(l, &it);
		}
		/* A short page is the last; a name names few keys, so one page is all. */
		if (n < LOCATE_PAGE || name)
			break;
		offset += n;
	}
	free(resp);
	return rc;
}

/*
 * key_version_in - from a Get Attributes answer: the version its Name gives
 * under our base name (0 if none), whether it is an AES-256 key, and its
 * state.
 */
static uint32_t key_version_in(const struct kmip_kms *kp, const struct ttlv_item *payload,
			       bool *aes256, uint32_t *state_out)
{
	struct ttlv_item attr, value;
	char aname[64], name[NAME_BUF];
	uint32_t version = 0, alg = 0, state = 0;
	int32_t bits = 0;
	size_t i;

	for (i = 0; ttlv_child(payload, T_ATTRIBUTE, i, &attr) == 0; i++) {
		if (ttlv_get_text(&attr, T_ATTRIBUTE_NAME, aname, sizeof(aname)) < 0)
			continue;
		if (strcmp(aname, "Name") == 0 &&
		    ttlv_child(&attr, T_ATTRIBUTE_VALUE, 0, &value) == 0 &&
		    ttlv_get_text(&value, T_NAME_VALUE, name, sizeof(name)) == 0 && !version)
			version = kmip_name_version(kp->key_name, name);
		else if (strcmp(aname, "Cryptographic Algorithm") == 0)
			ttlv_get_enum(&attr, T_ATTRIBUTE_VALUE, &alg);
		else if (strcmp(aname, "Cryptographic Length") == 0)
			ttlv_get_int(&attr, T_ATTRIBUTE_VALUE, &bits);
		else if (strcmp(aname, "State") == 0)
			ttlv_get_enum(&attr, T_ATTRIBUTE_VALUE, &state);
	}
	*aes256 = alg == ALG_AES && bits == 256;
	*state_out = state;
	return version;
}

/*
 * state_counts - whether a key in @state is a version: one that decrypts
 * (Pre-Active keys count once activated, destroyed ones never), or with
 * @pre_active, one that will (shred destroys those too).
 */
static bool state_counts(uint32_t state, bool pre_active)
{
	return state == STATE_ACTIVE || state == STATE_DEACTIVATED || state == STATE_COMPROMISED ||
	       (pre_active && state == STATE_PRE_ACTIVE);
}

static int key_cmp(const void *a, const void *b)
{
	const struct kmip_key *x = a, *y = b;

	return x->version < y->version ? -1 : x->version > y->version;
}

/*
 * describe - Get Attributes (Name, algorithm, length, state) of the keys @uids[0..n),
 * in batches; append those named "L.N" in a state_counts() to @keys (@n_keys, @cap).
 * A key so named that is not AES-256 is refused (-EINVAL), as is a version
 * named twice (checked by the caller after sorting).
 */
static int describe(struct kmip_kms *kp, char (*uids)[MAX_UID], size_t n, bool pre_active,
		    uint64_t deadline, struct kmip_key **keys, size_t *n_keys, size_t *cap,
		    char *err, size_t err_len)
{
	static const char *const wanted[] = { "Name", "Cryptographic Algorithm",
					      "Cryptographic Length", "State" };
	size_t req_cap = 512 + DESCRIBE_BATCH * (MAX_UID + 256), req_len, start, i, k;
	uint8_t *req = malloc(req_cap), *resp = malloc(LIST_MSG_CAP);
	struct ttlv_writer w;
	struct ttlv_item payload;
	struct answer a;
	int rc = req && resp ? 0 : -ENOMEM;

	for (start = 0; rc == 0 && start < n; start += DESCRIBE_BATCH) {
		size_t count = n - start < DESCRIBE_BATCH ? n - start : DESCRIBE_BATCH;

		ttlv_writer_init(&w, req, req_cap);
		request_begin(&w, (int32_t)count);
		for (i = 0; i < count; i++) {
			item_begin(&w, OP_GET_ATTRIBUTES, (uint32_t)i);
			ttlv_put_text(&w, T_UNIQUE_IDENTIFIER, uids[start + i]);
			for (k = 0; k < sizeof(wanted) / sizeof(wanted[0]); k++)
				ttlv_put_text(&w, T_ATTRIBUTE_NAME, wanted[k]);
			item_end(&w);
		}
		ttlv_end(&w);
		rc = ttlv_finish(&w, &req_len) < 0 ? -EIO : 0;
		if (rc == 0)
			rc = call(kp, req, req_len, resp, LIST_MSG_CAP, count, deadline, &a, err,
				  err_len);
		for (i = 0; rc == 0 && i < count; i++) {
			bool aes256;
			uint32_t v, state;
			int item_rc = answer_item(kp, &a, i, OP_GET_ATTRIBUTES, &payload, err, err_len);

			/* A key deleted since the Locate, or one we may not read, is not ours. */
			if (item_rc == -ENOENT || item_rc == -EACCES)
				continue;
			if (item_rc < 0) {
				rc = item_rc;
				break;
			}
			v = key_version_in(kp, &payload, &aes256, &state);
			if (!v || !state_counts(state, pre_active))
				continue;
			if (!aes256) {
				rc = kms_errf(err, err_len, -EINVAL,
					      "KMIP server %s: key '%s.%u' (%s) is not an AES-256 key: "
					      "envelopefs wants 256-bit AES master keys",
					      kp->where, kp->key_name, v, uids[start + i]);
				break;
			}
			if (*n_keys == *cap) {
				size_t c = *cap ? 2 * *cap : 8;
				struct kmip_key *grown = realloc(*keys, c * sizeof(**keys));

				if (!grown) {
					rc = -ENOMEM;
					break;
				}
				*keys = grown;
				*cap = c;
			}
			(*keys)[*n_keys].version = v;
			(*keys)[*n_keys].state = state;
			snprintf((*keys)[*n_keys].uid, MAX_UID, "%s", uids[start + i]);
			(*n_keys)++;
		}
	}
	free(req);
	free(resp);
	return rc;
}

/*
 * find_keys - the versions among the keys named @name (every symmetric key
 * if NULL; Pre-Active ones too if @pre_active), sorted, into a new array
 * *@out.  0 or a kms errno.
 */
static int find_keys(struct kmip_kms *kp, const char *name, bool pre_active, uint64_t deadline,
		     struct kmip_key **out, size_t *n_out, char *err, size_t err_len)
{
	struct uid_list l = { 0 };
	struct kmip_key *keys = NULL;
	size_t n = 0, cap = 0, i;
	int rc;

	rc = locate(kp, name, deadline, &l, err, err_len);
	if (rc == 0)
		rc = describe(kp, l.uid, l.n, pre_active, deadline, &keys, &n, &cap, err, err_len);
	free(l.uid);
	if (rc == 0 && n > 1) {
		qsort(keys, n, sizeof(*keys), key_cmp);
		for (i = 1; i < n && rc == 0; i++)
			if (keys[i].version == keys[i - 1].version)
				rc = kms_errf(err, err_len, -EINVAL,
					      "KMIP server %s: two keys are named '%s.%u' (%s and "
					      "%s): a version must name one key",
					      kp->where, kp->key_name, keys[i].version, keys[i - 1].uid,
					      keys[i].uid);
	}
	if (rc < 0) {
		free(keys);
		return rc;
	}
	*out = keys;
	*n_out = n;
	return 0;
}

/*
 * list_keys - replace the version table with every "L.N" key on the server.
 * A failed listing keeps the old table; an empty one is -ENOENT and keeps
 * it too, so a key deleted by mistake does not stop files already open.
 */
static int list_keys(struct kmip_kms *kp, uint64_t deadline, char *err, size_t err_len)
{
	struct kmip_key *keys, *old;
	size_t n;
	int rc;

	__atomic_store_n(&kp->listed_at_ms, kmip_now_ms(), __ATOMIC_RELAXED);
	rc = find_keys(kp, NULL, false, deadline, &keys, &n, err, err_len);
	if (rc < 0)
		return rc;
	if (!n) {
		free(keys);
		return kms_errf(err, err_len, -ENOENT,
				"KMIP server %s holds no AES-256 key named '%s.N' (N = 1, 2, ...) "
				"that this client may use: create one (Create, Name '%s.1', usage "
				"Encrypt|Decrypt)",
				kp->where, kp->key_name, kp->key_name);
	}
	pthread_rwlock_wrlock(&kp->keys_lock);
	old = kp->keys;
	kp->keys = keys;
	kp->n_keys = n;
	pthread_rwlock_unlock(&kp->keys_lock);
	free(old);
	return 0;
}

/* add_key - put @k into the table (replacing the entry of its version). */
static int add_key(struct kmip_kms *kp, const struct kmip_key *k)
{
	struct kmip_key *grown;
	size_t i;
	int rc = 0;

	pthread_rwlock_wrlock(&kp->keys_lock);
	for (i = 0; i < kp->n_keys && kp->keys[i].version != k->version; i++)
		;
	if (i < kp->n_keys) {
		kp->keys[i] = *k;
	} else if ((grown = realloc(kp->keys, (kp->n_keys + 1) * sizeof(*grown)))) {
		kp->keys = grown;
		kp->keys[kp->n_keys++] = *k;
		qsort(kp->keys, kp->n_keys, sizeof(*kp->keys), key_cmp);
	} else {
		rc = -ENOMEM;
	}
	pthread_rwlock_unlock(&kp->keys_lock);
	return rc;
}

/* find_version - Locate "L.@version" and add it to the table.  0, -ENOENT or another errno. */
static int find_version(struct kmip_kms *kp, uint32_t version, uint64_t deadline)
{
	char name[NAME_BUF];
	struct kmip_key *keys = NULL;
	size_t n = 0;
	int rc;

	snprintf(name, sizeof(name), "%s.%u", kp->key_name, version);
	rc = find_keys(kp, name, false, deadline, &keys, &n, NULL, 0);
	if (rc == 0)
		rc = n == 1 ? add_key(kp, &keys[0]) : -ENOENT;
	free(keys);
	return rc;
}

static uint32_t current_key(struct kmip_kms *kp)
{
	uint32_t v;

	pthread_rwlock_rdlock(&kp->keys_lock);
	v = kp->keys[kp->n_keys - 1].version;
	pthread_rwlock_unlock(&kp->keys_lock);
	return v;
}

/* key_uid - the unique identifier of @version into @uid; false if the table lacks it. */
static bool key_uid(struct kmip_kms *kp, uint32_t version, char uid[MAX_UID])
{
	struct kmip_key want = { .version = version }, *k;
	bool found = false;

	pthread_rwlock_rdlock(&kp->keys_lock);
	k = bsearch(&want, kp->keys, kp->n_keys, sizeof(*kp->keys), key_cmp);
	if (k) {
		memcpy(uid, k->uid, MAX_UID);
		found = true;
	}
	pthread_rwlock_unlock(&kp->keys_lock);
	return found;
}

/* probe - look for "L.(current+1)", and on.  0, or the error of the last look if not -ENOENT. */
static int probe(struct kmip_kms *kp, uint64_t deadline)
{
	int rc;

	while ((rc = find_version(kp, current_key(kp) + 1, deadline)) == 0)
		;
	return rc == -ENOENT ? 0 : rc;
}

/*
 * maybe_probe - probe() at most once a second (one thread of many arriving
 * at once), so a key added on the server becomes current for new DEKs
 * without a remount.  Failures leave the table as it is.
 */
static void maybe_probe(struct kmip_kms *kp, uint64_t deadline)
{
	uint64_t now = kmip_now_ms(), last = __atomic_load_n(&kp->probed_at_ms, __ATOMIC_RELAXED);

	if (now - last < REFRESH_MS ||
	    !__atomic_compare_exchange_n(&kp->probed_at_ms, &last, now, false, __ATOMIC_RELAXED,
					 __ATOMIC_RELAXED))
		return;
	probe(kp, deadline);
}

/* ---- wrapping ---- */

static void put_gcm_parameters(struct ttlv_writer *w)
{
	ttlv_begin(w, T_CRYPTO_PARAMETERS);
	ttlv_put_enum(w, T_BLOCK_CIPHER_MODE, MODE_GCM);
	ttlv_put_enum(w, T_CRYPTO_ALGORITHM, ALG_AES);
	ttlv_put_int(w, T_TAG_LENGTH, KMIP_TAG_LEN);
	ttlv_end(w);
}

/* A request and answer buffer pair in secmem: both may carry a DEK. */
struct crypto_bufs {
	uint8_t req[CRYPTO_MSG_CAP];
	uint8_t resp[CRYPTO_MSG_CAP];
};

/* put_decrypt_item - batch item @index: Decrypt @blob (version @version, key @uid) for @ctx. */
static void put_decrypt_item(struct ttlv_writer *w, uint32_t index, const char *uid,
			     uint32_t version, const struct kms_context *ctx, const uint8_t *blob)
{
	uint8_t aad[KMIP_AAD_LEN];

	kmip_wrap_aad(aad, version, ctx);
	item_begin(w, OP_DECRYPT, index);
	ttlv_put_text(w, T_UNIQUE_IDENTIFIER, uid);
	put_gcm_parameters(w);
	ttlv_put_bytes(w, T_DATA, blob + KMIP_BLOB_CIPHER, KMS_DEK_LEN);
	ttlv_put_bytes(w, T_IV_COUNTER_NONCE, blob + KMIP_BLOB_IV, KMIP_IV_LEN);
	ttlv_put_bytes(w, T_AE_ADDITIONAL_DATA, aad, sizeof(aad));
	ttlv_put_bytes(w, T_AE_TAG, blob + KMIP_BLOB_TAG, KMIP_TAG_LEN);
	item_end(w);
}

/* decrypt_answer - the DEK answered to batch item @i of @a into @dek.  0 or a kms errno. */
static int decrypt_answer(const struct kmip_kms *kp, const struct answer *a, size_t i,
			  uint8_t *dek)
{
	struct ttlv_item payload;
	const uint8_t *data;
	size_t len;
	int rc = answer_item(kp, a, i, OP_DECRYPT, &payload, NULL, 0);

	if (rc < 0)
		return rc;
	if (ttlv_get_bytes(&payload, T_DATA, &data, &len) < 0 || len != KMS_DEK_LEN)
		return -EBADMSG;
	memcpy(dek, data, KMS_DEK_LEN);
	return 0;
}

/* put_encrypt_item - Encrypt @dek under key @uid (version @version) for @ctx, with the IV in @blob. */
static void put_encrypt_item(struct ttlv_writer *w, const char *uid, uint32_t version,
			     const struct kms_context *ctx, const uint8_t *dek, const uint8_t *blob)
{
	uint8_t aad[KMIP_AAD_LEN];

	kmip_wrap_aad(aad, version, ctx);
	item_begin(w, OP_ENCRYPT, 0);
	ttlv_put_text(w, T_UNIQUE_IDENTIFIER, uid);
	put_gcm_parameters(w);
	ttlv_put_bytes(w, T_DATA, dek, KMS_DEK_LEN);
	ttlv_put_bytes(w, T_IV_COUNTER_NONCE, blob + KMIP_BLOB_IV, KMIP_IV_LEN);
	ttlv_put_bytes(w, T_AE_ADDITIONAL_DATA, aad, sizeof(aad));
	item_end(w);
}

/* encrypt_answer - ciphertext and tag of the Encrypt answer into @blob.  0 or a kms errno. */
static int encrypt_answer(const struct kmip_kms *kp, const struct answer *a, uint8_t *blob)
{
	struct ttlv_item payload;
	const uint8_t *data, *tag, *iv;
	size_t len, tag_len, iv_len;
	int rc = answer_item(kp, a, 0, OP_ENCRYPT, &payload, NULL, 0);

	if (rc < 0)
		return rc;
	/* We chose the IV: an answer that used another, or has no tag, is not ours to store. */
	if (ttlv_get_bytes(&payload, T_DATA, &data, &len) < 0 || len != KMS_DEK_LEN ||
	    (ttlv_get_bytes(&payload, T_IV_COUNTER_NONCE, &iv, &iv_len) == 0 &&
	     (iv_len != KMIP_IV_LEN || memcmp(iv, blob + KMIP_BLOB_IV, KMIP_IV_LEN))) ||
	    ttlv_get_bytes(&payload, T_AE_TAG, &tag, &tag_len) < 0 || tag_len != KMIP_TAG_LEN)
		return -EIO;
	memcpy(blob + KMIP_BLOB_CIPHER, data, KMS_DEK_LEN);
	memcpy(blob + KMIP_BLOB_TAG, tag, KMIP_TAG_LEN);
	return 0;
}

/*
 * gcm_call - Encrypt (@decrypt false: @in is the DEK, @out the blob with
 * its IV set, which gets ciphertext and tag) or Decrypt (@in is the blob,
 * @out gets the DEK) under the key @uid of @version.  0 or a kms errno.
 */
static int gcm_call(struct kmip_kms *kp, bool decrypt, const char *uid, uint32_t version,
		    const struct kms_context *ctx, const uint8_t *in, uint8_t *out, uint64_t deadline)
{
	struct crypto_bufs *b = secmem_alloc(sizeof(*b));
	struct ttlv_writer w;
	struct answer a;
	size_t req_len;
	int rc;

	if (!b)
		return -ENOMEM;
	ttlv_writer_init(&w, b->req, sizeof(b->req));
	request_begin(&w, 1);
	if (decrypt)
		put_decrypt_item(&w, 0, uid, version, ctx, in);
	else
		put_encrypt_item(&w, uid, version, ctx, in, out);
	ttlv_end(&w);
	rc = ttlv_finish(&w, &req_len) < 0 ? -EIO : 0;
	if (rc == 0)
		rc = call(kp, b->req, req_len, b->resp, sizeof(b->resp), 1, deadline, &a, NULL, 0);
	if (rc == 0)
		rc = decrypt ? decrypt_answer(kp, &a, 0, out) : encrypt_answer(kp, &a, out);
	secmem_free(b, sizeof(*b));
	return rc;
}

/*
 * run_gcm - gcm_call() under @version's key, looking the key up again once
 * when the server no longer knows its identifier (re-created under the
 * same name).
 */
static int run_gcm(struct kmip_kms *kp, bool decrypt, uint32_t version,
		   const struct kms_context *ctx, const uint8_t *in, uint8_t *out, uint64_t deadline)
{
	char uid[MAX_UID];
	int rc;

	if (!key_uid(kp, version, uid))
		return -ENOENT;
	rc = gcm_call(kp, decrypt, uid, version, ctx, in, out, deadline);
	if (rc == -ENOENT && find_version(kp, version, deadline) == 0 && key_uid(kp, version, uid))
		rc = gcm_call(kp, decrypt, uid, version, ctx, in, out, deadline);
	return rc;
}

static int wrap_current(struct kmip_kms *kp, const struct kms_context *ctx, const uint8_t *dek,
			uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version,
			uint64_t deadline)
{
	uint32_t v = current_key(kp);
	int rc;

	if (blob_cap < KMIP_BLOB_LEN)
		return -EINVAL;
	if (crypto_random(blob + KMIP_BLOB_IV, KMIP_IV_LEN) < 0)
		return -EIO;
	rc = run_gcm(kp, false, v, ctx, dek, blob, deadline);
	if (rc < 0) {
		secmem_wipe(blob, KMIP_BLOB_LEN);
		return rc;
	}
	put_be32(blob, v);
	*blob_len = KMIP_BLOB_LEN;
	*version = v;
	return 0;
}

static int unwrap_blob(struct kmip_kms *kp, const struct kms_context *ctx, const uint8_t *blob,
		       size_t blob_len, uint8_t *dek, uint64_t deadline)
{
	char uid[MAX_UID];
	uint32_t version;
	int rc;

	if (kmip_blob_version(blob, blob_len, &version) < 0)
		return -EBADMSG;
	/* A version we do not know may have been added since the last look. */
	if (!key_uid(kp, version, uid)) {
		rc = find_version(kp, version, deadline);
		if (rc < 0)
			return rc;
	}
	rc = run_gcm(kp, true, version, ctx, blob, dek, deadline);
	if (rc < 0)
		secmem_wipe(dek, KMS_DEK_LEN);
	return rc;
}

/* ---- kms_ops ---- */

static int kmip_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek,
			 uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct kmip_kms *kp = kms->priv;
	uint64_t deadline = op_deadline(kp);
	int rc;

	maybe_probe(kp, deadline);
	if (crypto_random(dek, KMS_DEK_LEN) < 0)
		return -EIO;
	rc = wrap_current(kp, ctx, dek, blob, blob_cap, blob_len, version, deadline);
	if (rc < 0)
		secmem_wipe(dek, KMS_DEK_LEN);
	return rc;
}

static int kmip_wrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek,
		     uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct kmip_kms *kp = kms->priv;
	uint64_t deadline = op_deadline(kp);

	maybe_probe(kp, deadline);
	return wrap_current(kp, ctx, dek, blob, blob_cap, blob_len, version, deadline);
}

static int kmip_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		       size_t blob_len, uint8_t *dek)
{
	struct kmip_kms *kp = kms->priv;

	return unwrap_blob(kp, ctx, blob, blob_len, dek, op_deadline(kp));
}

/* Request and answer of a Decrypt batch, in secmem (the answer holds DEKs). */
struct batch_bufs {
	uint8_t req[BATCH_REQ_CAP];
	uint8_t resp[BATCH_RESP_CAP];
};

/*
 * unwrap_batch - @n (at most UNWRAP_BATCH) items in one request message.
 * Items whose blob is malformed or whose version cannot be found get their
 * error without being sent; an item the server answers "not found" (a key
 * re-created under its name) is tried once more alone, through unwrap_blob().
 */
static void unwrap_batch(struct kmip_kms *kp, struct kms_unwrap_item *items, size_t n,
			 struct batch_bufs *b, uint64_t deadline)
{
	size_t sent[UNWRAP_BATCH], count = 0, req_len, i;
	char uids[UNWRAP_BATCH][MAX_UID];
	uint32_t versions[UNWRAP_BATCH];
	struct ttlv_writer w;
	struct answer a;
	int rc;

	for (i = 0; i < n; i++) {
		struct kms_unwrap_item *it = &items[i];

		it->rc = kmip_blob_version(it->blob, it->blob_len, &versions[count]);
		if (it->rc == 0 && !key_uid(kp, versions[count], uids[count])) {
			it->rc = find_version(kp, versions[count], deadline);
			if (it->rc == 0 && !key_uid(kp, versions[count], uids[count]))
				it->rc = -ENOENT;
		}
		if (it->rc == 0)
			sent[count++] = i;
	}
	if (!count)
		return;
	ttlv_writer_init(&w, b->req, sizeof(b->req));
	request_begin(&w, (int32_t)count);
	for (i = 0; i < count; i++)
		put_decrypt_item(&w, (uint32_t)i, uids[i], versions[i], items[sent[i]].ctx,
				 items[sent[i]].blob);
	ttlv_end(&w);
	rc = ttlv_finish(&w, &req_len) < 0 ? -EIO : 0;
	if (rc == 0)
		rc = call(kp, b->req, req_len, b->resp, sizeof(b->resp), count, deadline, &a, NULL, 0);
	for (i = 0; i < count; i++) {
		struct kms_unwrap_item *it = &items[sent[i]];

		it->rc = rc < 0 ? rc : decrypt_answer(kp, &a, i, it->dek);
		if (it->rc == -ENOENT)
			it->rc = unwrap_blob(kp, it->ctx, it->blob, it->blob_len, it->dek, deadline);
		if (it->rc < 0)
			secmem_wipe(it->dek, KMS_DEK_LEN);
	}
}

/* kmip_unwrap_many - Decrypt batches of UNWRAP_BATCH items, one round trip each. */
static void kmip_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n)
{
	struct kmip_kms *kp = kms->priv;
	uint64_t deadline = op_deadline(kp);
	struct batch_bufs *b = secmem_alloc(sizeof(*b));
	size_t i;

	for (i = 0; i < n; i += UNWRAP_BATCH) {
		size_t k, chunk = n - i < UNWRAP_BATCH ? n - i : UNWRAP_BATCH;

		if (b) {
			unwrap_batch(kp, items + i, chunk, b, deadline);
			continue;
		}
		for (k = 0; k < chunk; k++)
			items[i + k].rc = -ENOMEM;
	}
	secmem_free(b, sizeof(*b));
}

static int kmip_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		       size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
		       uint32_t *version)
{
	struct kmip_kms *kp = kms->priv;
	uint64_t deadline = op_deadline(kp);
	uint8_t *dek;
	int rc;

	maybe_probe(kp, deadline);
	dek = secmem_alloc(KMS_DEK_LEN);
	if (!dek)
		return -ENOMEM;
	rc = unwrap_blob(kp, ctx, blob, blob_len, dek, deadline);
	if (rc == 0)
		rc = wrap_current(kp, ctx, dek, out, out_cap, out_len, version, deadline);
	secmem_free(dek, KMS_DEK_LEN);
	return rc;
}

static int kmip_blob_version_op(struct kms *kms, const uint8_t *blob, size_t blob_len,
				uint32_t *version)
{
	(void)kms;
	return kmip_blob_version(blob, blob_len, version);
}

static int kmip_current_version(struct kms *kms, uint32_t *version)
{
	struct kmip_kms *kp = kms->priv;
	uint64_t last = __atomic_load_n(&kp->listed_at_ms, __ATOMIC_RELAXED);
	uint64_t deadline = op_deadline(kp);
	int rc = 0;

	/*
	 * Rotation asks once per file, right after an operator made L.(N+1):
	 * that key is always looked for (one Locate); the whole listing, which
	 * also finds a version above a gap, is redone at most once a second.
	 */
	if (kmip_now_ms() - last >= REFRESH_MS) {
		rc = list_keys(kp, deadline, NULL, 0);
		if (rc == -ENOENT)
			rc = 0;
	}
	if (rc == 0)
		rc = probe(kp, deadline);
	if (rc < 0)
		return rc;
	*version = current_key(kp);
	return 0;
}

/* ---- shred ---- */

/*
 * key_op - Revoke (reason Cessation of Operation) or Destroy, @op, of the
 * key @uid.  0 or a kms errno with the server's answer in @err.
 */
static int key_op(struct kmip_kms *kp, uint32_t op, const char *uid, uint64_t deadline, char *err,
		  size_t err_len)
{
	uint8_t req[512], resp[1024];
	struct ttlv_writer w;
	struct ttlv_item payload;
	struct answer a;
	size_t req_len;
	int rc;

	ttlv_writer_init(&w, req, sizeof(req));
	request_begin(&w, 1);
	item_begin(&w, op, 0);
	ttlv_put_text(&w, T_UNIQUE_IDENTIFIER, uid);
	if (op == OP_REVOKE) {
		ttlv_begin(&w, T_REVOCATION_REASON);
		ttlv_put_enum(&w, T_REVOCATION_REASON_CODE, REVOKE_CESSATION_OF_OPERATION);
		ttlv_end(&w);
	}
	item_end(&w);
	ttlv_end(&w);
	if (ttlv_finish(&w, &req_len) < 0)
		return kms_errf(err, err_len, -EIO, "KMIP request too large");
	rc = call(kp, req, req_len, resp, sizeof(resp), 1, deadline, &a, err, err_len);
	if (rc == 0)
		rc = answer_item(kp, &a, 0, op, &payload, err, err_len);
	return rc;
}

/*
 * kmip_destroy - every version "L.N" (Pre-Active ones too) destroyed on the
 * server.  KMIP 1.x destroys no Active object: the Active ones are revoked
 * first (Cessation of Operation: Deactivated), all of them before any
 * Destroy, so a Destroy the server refuses leaves no version able to
 * encrypt.  A key gone meanwhile counts as destroyed; a refusal (the key's
 * operation policy) is -EPERM naming the key.
 */
static int kmip_destroy(struct kms *kms, char *err, size_t err_len)
{
	static const uint32_t steps[] = { OP_REVOKE, OP_DESTROY };
	struct kmip_kms *kp = kms->priv;
	uint64_t deadline = op_deadline(kp);
	const struct kmip_key *at = NULL; /* the key of the step that failed */
	struct kmip_key *keys = NULL;
	uint32_t op = OP_REVOKE;
	char why[384] = "";
	size_t n = 0, i, step;
	int rc;

	rc = find_keys(kp, NULL, true, deadline, &keys, &n, err, err_len);
	for (step = 0; rc == 0 && step < sizeof(steps) / sizeof(steps[0]); step++) {
		op = steps[step];
		for (i = 0; rc == 0 && i < n; i++) {
			if (op == OP_REVOKE && keys[i].state != STATE_ACTIVE)
				continue;
			at = &keys[i];
			rc = key_op(kp, op, at->uid, deadline, why, sizeof(why));
			if (rc == -ENOENT)
				rc = 0;
		}
	}
	if (rc == -EACCES && at)
		rc = kms_errf(err, err_len, -EPERM, "KMIP server %s refuses to %s key '%s.%u' (%s): "
			      "%s; its operation policy must let this client revoke and destroy it "
			      "(or destroy it on the server), then shred again", kp->where,
			      op == OP_REVOKE ? "revoke" : "destroy", kp->key_name, at->version,
			      at->uid, why);
	else if (rc < 0 && at)
		kms_errf(err, err_len, rc, "KMIP server %s: cannot %s key '%s.%u' (%s): %s", kp->where,
			 op == OP_REVOKE ? "revoke" : "destroy", kp->key_name, at->version, at->uid,
			 why);
	free(keys);
	return rc;
}

static void kmip_remote_stats(struct kms *kms, struct kms_remote_stats *out)
{
	struct kmip_kms *kp = kms->priv;
	struct kmip_conn_stats s;

	kmip_pool_stats(kp->pool, &s);
	out->remote = true;
	out->calls = s.exchanges;
	out->retries = s.retries;
	out->failures = s.failures;
	out->latency_us = s.latency_us;
	/* No circuit breaker: a down server is asked again on every call. */
	out->breaker = "closed";
}

static void kmip_free(struct kmip_kms *kp)
{
	kmip_pool_free(kp->pool);
	free(kp->keys);
	pthread_rwlock_destroy(&kp->keys_lock);
	free(kp);
}

static void kmip_close(struct kms *kms)
{
	if (kms->priv)
		kmip_free(kms->priv);
	kms->priv = NULL;
}

/* ---- open ---- */

/* get_number - optional integer setting @key in [@lo, @hi] into *@out (left as is if absent). */
static int get_number(const dictionary *ini, const char *key, long lo, long hi, long *out,
		      char *err, size_t err_len)
{
	const char *s = iniparser_getstring(ini, key, NULL);
	char *end;
	long v;

	if (!s)
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return kms_errf(err, err_len, -EINVAL, "setting %s must be a number from %ld to %ld",
				key, lo, hi);
	*out = v;
	return 0;
}

/* required_path - the absolute path in setting @key. */
static int required_path(const dictionary *ini, const char *key, const char *what,
			 const char **out, char *err, size_t err_len)
{
	const char *s = iniparser_getstring(ini, key, NULL);

	if (!s || s[0] != '/')
		return kms_errf(err, err_len, -EINVAL, "setting %s must be the absolute path of %s",
				key, what);
	*out = s;
	return 0;
}

static int parse_settings(struct kmip_kms *kp, const dictionary *ini, struct kmip_conn_settings *cs,
			  char *err, size_t err_len)
{
	const char *name = iniparser_getstring(ini, "kms:key_name", NULL);
	long connections = DEFAULT_CONNECTIONS, connect_ms = DEFAULT_CONNECT_MS;
	long port;
	int rc;

	cs->host = iniparser_getstring(ini, "kms:host", NULL);
	cs->port = iniparser_getstring(ini, "kms:port", KMIP_PORT);
	if (!cs->host || !*cs->host || strlen(cs->host) > 255)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:host must name the KMIP server (DNS name or IP address)");
	port = 0;
	rc = get_number(ini, "kms:port", 1, 65535, &port, err, err_len);
	if (rc < 0)
		return rc;
	if (!name || !*name || strlen(name) > MAX_KEY_NAME)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:key_name must be the master key's base name (1 to %d "
				"bytes; version N is the key named '<key_name>.N')",
				MAX_KEY_NAME);
	snprintf(kp->key_name, sizeof(kp->key_name), "%s", name);
	if ((rc = required_path(ini, "kms:ca_file", "the CA certificates of the KMIP server",
				&cs->ca_file, err, err_len)) ||
	    (rc = required_path(ini, "kms:cert_file", "the client certificate", &cs->cert_file, err,
				err_len)) ||
	    (rc = required_path(ini, "kms:key_file", "the client certificate's private key",
				&cs->key_file, err, err_len)))
		return rc;
	kp->timeout_ms = DEFAULT_TIMEOUT_MS;
	if ((rc = get_number(ini, "kms:connections", 1, MAX_CONNECTIONS, &connections, err,
			     err_len)) ||
	    (rc = get_number(ini, "kms:connect_timeout_ms", 1, 600000, &connect_ms, err, err_len)) ||
	    (rc = get_number(ini, "kms:timeout_ms", 1, 600000, &kp->timeout_ms, err, err_len)))
		return rc;
	cs->max_idle = (unsigned)connections;
	cs->connect_timeout_ms = connect_ms;
	snprintf(kp->where, sizeof(kp->where), "%s:%s", cs->host, cs->port);
	return 0;
}

static int kmip_open(struct kms *kms, const dictionary *ini, char *err, size_t err_len)
{
	struct kmip_conn_settings cs = { 0 };
	struct kmip_kms *kp;
	int rc, n;

	rc = config_refuse_unknown(ini, "kms", known_settings,
				   sizeof(known_settings) / sizeof(known_settings[0]),
				   "the kmip provider", err, err_len);
	if (rc < 0)
		return rc;
	kp = calloc(1, sizeof(*kp));
	if (!kp)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	kp->kms = kms;
	pthread_rwlock_init(&kp->keys_lock, NULL);
	rc = parse_settings(kp, ini, &cs, err, err_len);
	if (rc == 0)
		rc = kmip_pool_new(&cs, &kp->pool, err, err_len);
	if (rc == 0) {
		n = snprintf(kms->key_ref, sizeof(kms->key_ref), "kmip:%s", kp->key_name);
		if (n < 0 || (size_t)n >= sizeof(kms->key_ref))
			rc = kms_errf(err, err_len, -EINVAL, "setting kms:key_name is too long");
	}
	if (rc == 0)
		rc = list_keys(kp, op_deadline(kp), err, err_len);
	if (rc < 0) {
		kmip_free(kp);
		return rc;
	}
	kms->max_blob_len = KMIP_BLOB_LEN;
	kms->priv = kp;
	return 0;
}

const struct kms_ops kms_kmip_ops = {
	.name = "kmip",
	.open = kmip_open,
	.generate = kmip_generate,
	.wrap = kmip_wrap,
	.unwrap = kmip_unwrap,
	.unwrap_many = kmip_unwrap_many,
	.rewrap = kmip_rewrap,
	.blob_version = kmip_blob_version_op,
	.current_version = kmip_current_version,
	.close = kmip_close,
	.remote_stats = kmip_remote_stats,
	.destroy = kmip_destroy,
};
