/* SPDX-License-Identifier: MIT */
/* The mounted volume's KMS providers: see kmsset.h. */
#include "kmsset.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "volume.h"

/* One opened provider, shared by every set that names it. */
struct provider {
	struct kms *kms;
	struct dek_pool *pool; /* while some live set has it current */
	dictionary *settings;  /* its section, as "kms", to recognise it in a reload */
	unsigned refs;	       /* live sets naming it */
	unsigned current_refs; /* live sets naming it current */
};

struct set {
	struct kms_set pub; /* first: what callers see */
	struct provider *cur, *prev;
	unsigned users; /* operations holding it */
};

struct kms_keeper {
	pthread_mutex_t lock; /* guards now, stale and every refs/users count */
	pthread_cond_t drained;
	struct set *now;
	unsigned stale;		     /* replaced sets still held by someone */
	pthread_mutex_t reload_lock; /* one reload at a time */
	uint8_t volume_uuid[16];
	int pool_capacity; /* -1: by provider */
	kms_reachability_fn hook;
	void *hook_arg;
};

static void provider_close(struct provider *p)
{
	if (!p)
		return;
	dek_pool_destroy(p->pool); /* before its KMS: the refill threads use it */
	kms_close(p->kms);	   /* wipes the master keys */
	if (p->settings)
		iniparser_freedict(p->settings);
	free(p);
}

/* provider_open - open the provider of @ini's @section.  0 or -errno + @err. */
static int provider_open(struct kms_keeper *k, const dictionary *ini, const char *section,
			 struct provider **out, char *err, size_t err_len)
{
	struct provider *p = calloc(1, sizeof(*p));
	int ret;

	if (!p || !(p->settings = volume_kms_settings(ini, section))) {
		free(p);
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	ret = kms_open(p->settings, &p->kms, err, err_len);
	if (ret < 0) {
		provider_close(p);
		return ret;
	}
	if (k->hook)
		kms_set_reachability_hook(p->kms, k->hook, k->hook_arg);
	*out = p;
	return 0;
}

/* find - the provider of the live set @s opened from exactly @ini's @section, or NULL. */
static struct provider *find(struct set *s, const dictionary *ini, const char *section)
{
	if (s && s->cur && volume_kms_same(s->cur->settings, "kms", ini, section))
		return s->cur;
	if (s && s->prev && volume_kms_same(s->prev->settings, "kms", ini, section))
		return s->prev;
	return NULL;
}

/* A remote KMS call costs milliseconds: new-file keys are made ahead there. */
static unsigned pool_size_for(const struct kms_keeper *k, const struct kms *kms)
{
	if (k->pool_capacity >= 0)
		return (unsigned)k->pool_capacity;
	return strcmp(kms->ops->name, "local") == 0 ? 0 : DEK_POOL_AUTO_REMOTE;
}

/*
 * release - @s is no longer live: drop its references.  Providers (or
 * pools) nothing names any more are moved to @closing[0..2], for the caller
 * to close outside the lock.  Keeper lock held.
 */
static void release(struct set *s, struct provider **closing, struct dek_pool **pools)
{
	struct provider *cur = s->cur, *prev = s->prev;

	if (--cur->current_refs == 0) {
		*pools = cur->pool;
		cur->pool = NULL;
	}
	if (--cur->refs == 0)
		closing[0] = cur;
	if (prev && --prev->refs == 0)
		closing[1] = prev;
	free(s);
}

static void close_released(struct provider **closing, struct dek_pool *pool)
{
	dek_pool_destroy(pool);
	provider_close(closing[0]);
	provider_close(closing[1]);
}

/*
 * build - a set of the providers @ini names, reusing those of @old (the live
 * set; NULL at mount).  New providers are in @fresh[0..2] until published.
 * Keeper lock not held: opening may talk to a service.
 */
static int build(struct kms_keeper *k, struct set *old, const dictionary *ini,
		 struct set **out, struct provider **fresh, char *err, size_t err_len)
{
	struct set *s = calloc(1, sizeof(*s));
	bool migrating = iniparser_find_entry(ini, VOLUME_KMS_PREVIOUS) != 0;
	int ret = 0;

	if (!s)
		return -ENOMEM;
	s->cur = find(old, ini, "kms");
	if (!s->cur)
		ret = provider_open(k, ini, "kms", &fresh[0], err, err_len);
	if (ret == 0 && !s->cur)
		s->cur = fresh[0];
	if (ret == 0 && migrating) {
		s->prev = find(old, ini, VOLUME_KMS_PREVIOUS);
		if (!s->prev) {
			char why[512];

			ret = provider_open(k, ini, VOLUME_KMS_PREVIOUS, &fresh[1], why,
					    sizeof(why));
			if (ret < 0)
				snprintf(err, err_len, "the previous KMS ([%s]): %s",
					 VOLUME_KMS_PREVIOUS, why);
			else
				s->prev = fresh[1];
		}
	}
	if (ret == 0 && s->prev && strcmp(s->cur->kms->key_ref, s->prev->kms->key_ref) == 0) {
		ret = -EINVAL;
		snprintf(err, err_len, "[kms] and [%s] name the same master key %s",
			 VOLUME_KMS_PREVIOUS, s->cur->kms->key_ref);
	}
	if (ret == 0 && !s->cur->pool &&
	    dek_pool_create(s->cur->kms, k->volume_uuid, pool_size_for(k, s->cur->kms),
			    &s->cur->pool) < 0) {
		ret = -ENOMEM;
		snprintf(err, err_len, "cannot start the data-key pool");
	}
	if (ret < 0) {
		/* A pool made for a carried-over provider stays with it. */
		free(s);
		provider_close(fresh[0]);
		provider_close(fresh[1]);
		fresh[0] = fresh[1] = NULL;
		return ret;
	}
	s->pub.keys.current = s->cur->kms;
	s->pub.keys.previous = s->prev ? s->prev->kms : NULL;
	s->pub.pool = s->cur->pool;
	s->cur->refs++;
	s->cur->current_refs++;
	if (s->prev)
		s->prev->refs++;
	*out = s;
	return 0;
}

int kms_keeper_open(const dictionary *ini, const uint8_t volume_uuid[16], int pool_capacity,
		    kms_reachability_fn hook, void *hook_arg, struct kms_keeper **out, char *err,
		    size_t err_len)
{
	struct kms_keeper *k = calloc(1, sizeof(*k));
	struct provider *fresh[2] = { NULL, NULL };
	int ret;

	if (!k) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->drained, NULL);
	pthread_mutex_init(&k->reload_lock, NULL);
	memcpy(k->volume_uuid, volume_uuid, 16);
	k->pool_capacity = pool_capacity;
	k->hook = hook;
	k->hook_arg = hook_arg;
	ret = build(k, NULL, ini, &k->now, fresh, err, err_len);
	if (ret < 0) {
		kms_keeper_close(k);
		return ret;
	}
	*out = k;
	return 0;
}

void kms_keeper_close(struct kms_keeper *k)
{
	struct provider *closing[2] = { NULL, NULL };
	struct dek_pool *pool = NULL;

	if (!k)
		return;
	if (k->now)
		release(k->now, closing, &pool);
	close_released(closing, pool);
	pthread_mutex_destroy(&k->lock);
	pthread_cond_destroy(&k->drained);
	pthread_mutex_destroy(&k->reload_lock);
	free(k);
}

const struct kms_set *kms_keeper_get(struct kms_keeper *k)
{
	struct set *s;

	pthread_mutex_lock(&k->lock);
	s = k->now;
	s->users++;
	pthread_mutex_unlock(&k->lock);
	return &s->pub;
}

void kms_keeper_put(struct kms_keeper *k, const struct kms_set *set)
{
	struct set *s = (struct set *)set;
	struct provider *closing[2] = { NULL, NULL };
	struct dek_pool *pool = NULL;

	if (!s)
		return;
	pthread_mutex_lock(&k->lock);
	if (--s->users == 0 && s != k->now) {
		release(s, closing, &pool);
		if (--k->stale == 0)
			pthread_cond_broadcast(&k->drained);
	}
	pthread_mutex_unlock(&k->lock);
	close_released(closing, pool);
}

int kms_keeper_reload(struct kms_keeper *k, const dictionary *ini, char *err, size_t err_len)
{
	struct provider *fresh[2] = { NULL, NULL }, *closing[2] = { NULL, NULL };
	struct dek_pool *pool = NULL;
	struct set *s, *old;
	int ret;

	pthread_mutex_lock(&k->reload_lock);
	/*
	 * Only reloads change k->now, serialised, and each returns only once no
	 * stale set is left: while build() runs, the one live set is k->now,
	 * which no put releases, so it may read k->now and the providers' counts
	 * without the lock.
	 */
	ret = build(k, k->now, ini, &s, fresh, err, err_len);
	if (ret < 0) {
		pthread_mutex_unlock(&k->reload_lock);
		return ret;
	}
	pthread_mutex_lock(&k->lock);
	old = k->now;
	k->now = s;
	if (old->users == 0)
		release(old, closing, &pool);
	else
		k->stale++;
	/* Operations that took the old set finish with it; then none is left. */
	while (k->stale > 0)
		pthread_cond_wait(&k->drained, &k->lock);
	pthread_mutex_unlock(&k->lock);
	close_released(closing, pool);
	pthread_mutex_unlock(&k->reload_lock);
	return 0;
}
