// SPDX-License-Identifier: MIT
/*
 * Provider dispatch and the public kms_* wrappers: argument checks and
 * counters live here once, so providers only do their own work.
 */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms/keyring.h"
#include "kms/kms.h"

/*
 * The providers, one line each: a new provider is a kms/<name>.c defining
 * `const struct kms_ops kms_<name>_ops`, listed here and in kms/meson.build.
 */
#define KMS_PROVIDERS(X) X(local) X(pkcs11) X(aws) X(vault) \
	X(azure) X(gcp) X(kmip)

#define KMS_DECLARE(name) extern const struct kms_ops kms_##name##_ops;
#define KMS_ENTRY(name) &kms_##name##_ops,
KMS_PROVIDERS(KMS_DECLARE)
static const struct kms_ops *const providers[] = { KMS_PROVIDERS(KMS_ENTRY) };
#define N_PROVIDERS (sizeof(providers) / sizeof(providers[0]))

static void known_providers(char *buf, size_t len)
{
	size_t i, used = 0;

	buf[0] = '\0';
	for (i = 0; i < N_PROVIDERS && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "",
					 providers[i]->name);
}

int kms_open(const dictionary *ini, struct kms **out, char *err, size_t err_len)
{
	const struct kms_ops *ops = NULL;
	const char *name;
	struct kms *kms;
	char known[128];
	size_t i;
	int rc;

	if (!ini || !out)
		return kms_errf(err, err_len, -EINVAL, "kms_open: bad arguments");
	known_providers(known, sizeof(known));
	name = iniparser_getstring(ini, "kms:provider", NULL);
	if (!name || !*name)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:provider is missing (known providers: %s)", known);
	for (i = 0; i < N_PROVIDERS; i++)
		if (strcmp(providers[i]->name, name) == 0)
			ops = providers[i];
	if (!ops)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:provider = %s names no known provider (known "
				"providers: %s)",
				name, known);
	kms = calloc(1, sizeof(*kms));
	if (!kms)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	kms->ops = ops;
	rc = ops->open(kms, ini, err, err_len);
	if (rc < 0) {
		free(kms);
		return rc;
	}
	*out = kms;
	return 0;
}

void kms_close(struct kms *kms)
{
	if (!kms)
		return;
	kms->ops->close(kms);
	free(kms);
}

static void count(struct kms *kms, uint64_t *counter, int rc)
{
	__atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
	if (rc < 0)
		__atomic_fetch_add(&kms->counters.failures, 1, __ATOMIC_RELAXED);
}

static bool blob_ok(const uint8_t *blob, size_t len)
{
	return blob && len > 0 && len <= KMS_MAX_BLOB;
}

int kms_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek, uint8_t *blob,
		 size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	int rc;

	if (!kms || !ctx || !dek || !blob || !blob_len || !version || blob_cap < kms->max_blob_len)
		rc = -EINVAL;
	else
		rc = kms->ops->generate(kms, ctx, dek, blob, blob_cap, blob_len, version);
	if (kms)
		count(kms, &kms->counters.generate, rc);
	return rc;
}

int kms_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
	       size_t blob_len, uint8_t *dek)
{
	int rc;

	if (!kms || !ctx || !dek || !blob_ok(blob, blob_len))
		rc = -EINVAL;
	else
		rc = kms->ops->unwrap(kms, ctx, blob, blob_len, dek);
	if (kms)
		count(kms, &kms->counters.unwrap, rc);
	return rc;
}

int kms_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
	       size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len, uint32_t *version)
{
	int rc;

	if (!kms || !ctx || !blob_ok(blob, blob_len) || !out || !out_len || !version ||
	    out_cap < kms->max_blob_len)
		rc = -EINVAL;
	else
		rc = kms->ops->rewrap(kms, ctx, blob, blob_len, out, out_cap, out_len, version);
	if (kms)
		count(kms, &kms->counters.rewrap, rc);
	return rc;
}

static int wrap_args_ok(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek,
			const uint8_t *blob, size_t blob_cap, const size_t *blob_len,
			const uint32_t *version)
{
	return ctx && dek && blob && blob_len && version && blob_cap >= kms->max_blob_len;
}

int kms_wrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek, uint8_t *blob,
	     size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	int rc;

	if (!kms || !wrap_args_ok(kms, ctx, dek, blob, blob_cap, blob_len, version))
		rc = -EINVAL;
	else if (!kms->ops->wrap)
		rc = -EOPNOTSUPP;
	else
		rc = kms->ops->wrap(kms, ctx, dek, blob, blob_cap, blob_len, version);
	if (kms)
		count(kms, &kms->counters.wrap, rc);
	return rc;
}

/* note_item - count one batch item as one call; remember the first error. */
static void note_item(struct kms *kms, uint64_t *counter, int rc, int *first)
{
	count(kms, counter, rc);
	if (rc < 0 && *first == 0)
		*first = rc;
}

int kms_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n)
{
	size_t i, todo = 0;
	int first = 0;

	if (!kms || (n && !items))
		return -EINVAL;
	/* Bad items are answered here, so providers only see well-formed ones. */
	for (i = 0; i < n; i++) {
		items[i].rc = items[i].ctx && items[i].dek &&
					      blob_ok(items[i].blob, items[i].blob_len)
				      ? 0
				      : -EINVAL;
		todo += items[i].rc == 0;
	}
	if (todo == n && n && kms->ops->unwrap_many) {
		kms->ops->unwrap_many(kms, items, n);
	} else {
		for (i = 0; i < n; i++)
			if (items[i].rc == 0)
				items[i].rc = kms->ops->unwrap(kms, items[i].ctx, items[i].blob,
							       items[i].blob_len, items[i].dek);
	}
	for (i = 0; i < n; i++)
		note_item(kms, &kms->counters.unwrap, items[i].rc, &first);
	return first;
}

int kms_wrap_many(struct kms *kms, struct kms_wrap_item *items, size_t n)
{
	size_t i, todo = 0;
	int first = 0;

	if (!kms || (n && !items))
		return -EINVAL;
	for (i = 0; i < n; i++) {
		struct kms_wrap_item *it = &items[i];

		it->rc = wrap_args_ok(kms, it->ctx, it->dek, it->blob, it->blob_cap,
				      &it->blob_len, &it->version)
				 ? (kms->ops->wrap ? 0 : -EOPNOTSUPP)
				 : -EINVAL;
		todo += it->rc == 0;
	}
	if (todo == n && n && kms->ops->wrap_many) {
		kms->ops->wrap_many(kms, items, n);
	} else {
		for (i = 0; i < n; i++)
			if (items[i].rc == 0)
				items[i].rc = kms->ops->wrap(kms, items[i].ctx, items[i].dek,
							     items[i].blob, items[i].blob_cap,
							     &items[i].blob_len, &items[i].version);
	}
	for (i = 0; i < n; i++)
		note_item(kms, &kms->counters.wrap, items[i].rc, &first);
	return first;
}

int kms_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len, uint32_t *version)
{
	if (!kms || !blob_ok(blob, blob_len) || !version)
		return -EINVAL;
	return kms->ops->blob_version(kms, blob, blob_len, version);
}

int kms_current_version(struct kms *kms, uint32_t *version)
{
	if (!kms || !version)
		return -EINVAL;
	return kms->ops->current_version(kms, version);
}

int kms_destroy(struct kms *kms, char *err, size_t err_len)
{
	if (!kms)
		return -EINVAL;
	if (!kms->ops->destroy)
		return kms_errf(err, err_len, -EOPNOTSUPP, "the %s provider cannot destroy its "
				"master key: destroy it in the KMS itself", kms->ops->name);
	return kms->ops->destroy(kms, err, err_len);
}

void kms_remote_stats(struct kms *kms, struct kms_remote_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->breaker = "closed";
	if (kms && kms->ops->remote_stats)
		kms->ops->remote_stats(kms, out);
}

void kms_set_reachability_hook(struct kms *kms, kms_reachability_fn fn, void *arg)
{
	if (!kms)
		return;
	kms->reachability_arg = arg;
	__atomic_store_n(&kms->reachability, fn, __ATOMIC_RELEASE);
}

void kms_report_reachability(struct kms *kms, bool up)
{
	kms_reachability_fn fn = __atomic_load_n(&kms->reachability, __ATOMIC_ACQUIRE);

	if (fn)
		fn(kms->reachability_arg, kms->ops->name, up);
}

const char *kms_strerror(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return "success";
	case ENOENT:
		return "master key or key version not found";
	case EACCES:
		return "KMS denied the operation";
	case EBADMSG:
		return "bad ciphertext for this context";
	case EAGAIN:
		return "KMS unavailable, retry later";
	case EINVAL:
		return "invalid argument or setting";
	case ENOMEM:
		return "out of (locked) memory";
	default:
		return "KMS failure";
	}
}
