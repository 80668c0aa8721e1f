/* SPDX-License-Identifier: MIT */
/* The mounted volume's key scopes: see scopes.h. */
#include "scopes.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/random.h"
#include "crypto/secmem.h"
#include "log.h"

struct scope {
	struct scope_def def;
	/* Shared by every operation using the provider, exclusive to open or
	 * close it.  keeper is non-NULL exactly while the scope is unlocked. */
	pthread_rwlock_t use;
	struct kms_keeper *keeper;
	struct names *names;
	const struct scope_set *set;
	/* Its root was removed (scope_set_forget_root): it names no directory and
	 * is listed nowhere, but lives on (inodes may point at it) until unmount. */
	atomic_bool gone;
	/* Counters of providers closed by a lock, so that status counts since mount. */
	atomic_uint_fast64_t generate, unwrap, failures, refusals, locks;
	/* Renames and links inside it: running, done, and done when the
	 * conversion's checking walk began (UINT64_MAX: no walk began yet). */
	atomic_uint_fast64_t moving, moves, moves_at_check;
};

struct scope_set {
	pthread_mutex_t lock; /* guards v and n (the set only grows) */
	struct scope **v;
	size_t n;
	uint8_t *def_key; /* secmem: K_def */
	/* The volume's own codec: a converting scope's fallback (names.h). */
	struct names *volume_names;
	uint8_t uuid[16];
	int pool_capacity;
};

static void scope_free(struct scope *s)
{
	if (!s)
		return;
	if (s->keeper)
		kms_keeper_close(s->keeper);
	names_destroy(s->names);
	pthread_rwlock_destroy(&s->use);
	free(s);
}

/* scope_new - a locked scope for @d.  NULL on -ENOMEM. */
static struct scope *scope_new(const struct scope_set *set, const struct scope_def *d)
{
	struct scope *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->def = *d;
	s->set = set;
	atomic_init(&s->moves_at_check, UINT64_MAX);
	pthread_rwlock_init(&s->use, NULL);
	if (names_create(true, NULL, NULL, &s->names) < 0) {
		scope_free(s);
		return NULL;
	}
	return s;
}

static int set_append(struct scope_set *set, struct scope *s)
{
	struct scope **v;

	pthread_mutex_lock(&set->lock);
	v = realloc(set->v, (set->n + 1) * sizeof(*v));
	if (v) {
		v[set->n] = s;
		set->v = v;
		set->n++;
	}
	pthread_mutex_unlock(&set->lock);
	return v ? 0 : -ENOMEM;
}

static int add_visit(void *arg, const struct scope_def *d)
{
	struct scope_set *set = arg;
	struct scope *s = scope_new(set, d);

	if (!s || set_append(set, s) < 0) {
		scope_free(s);
		return -ENOMEM;
	}
	return 0;
}

int scope_set_open(int backing_fd, const uint8_t *volume_key, const uint8_t *uuid,
		   int pool_capacity, struct scope_set **out, char *err, size_t err_len)
{
	struct scope_set *set = calloc(1, sizeof(*set));
	int ret = 0;

	if (!set || !(set->def_key = secmem_alloc(SCOPE_MAC_LEN))) {
		free(set);
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&set->lock, NULL);
	memcpy(set->uuid, uuid, 16);
	set->pool_capacity = pool_capacity;
	/* Without a volume key there is nothing to authenticate a definition
	 * with, and so no scope (FORMAT.md: scopes need encrypted names). */
	if (volume_key) {
		ret = scope_def_key(volume_key, uuid, set->def_key);
		if (ret == 0)
			ret = names_create(true, volume_key, uuid, &set->volume_names);
		if (ret == 0)
			ret = scope_registry_each(backing_fd, set->def_key, add_visit, set);
	}
	if (ret < 0) {
		snprintf(err, err_len, "%s/: %s", SCOPE_REGISTRY,
			 ret == -EBADMSG ? "a scope definition is damaged or forged"
					 : strerror(-ret));
		scope_set_close(set);
		return ret;
	}
	*out = set;
	return 0;
}

void scope_set_close(struct scope_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++)
		scope_free(set->v[i]);
	free(set->v);
	names_destroy(set->volume_names);
	secmem_free(set->def_key, SCOPE_MAC_LEN);
	pthread_mutex_destroy(&set->lock);
	free(set);
}

size_t scope_set_count(struct scope_set *set)
{
	size_t n;

	pthread_mutex_lock(&set->lock);
	n = set->n;
	pthread_mutex_unlock(&set->lock);
	return n;
}

struct scope *scope_set_at(struct scope_set *set, size_t i)
{
	struct scope *s;

	pthread_mutex_lock(&set->lock);
	s = i < set->n ? set->v[i] : NULL;
	pthread_mutex_unlock(&set->lock);
	return s;
}

struct scope *scope_by_root(struct scope_set *set, const uint8_t *dirid)
{
	struct scope *found = NULL;

	pthread_mutex_lock(&set->lock);
	for (size_t i = 0; i < set->n && !found; i++)
		if (!atomic_load(&set->v[i]->gone) &&
		    memcmp(set->v[i]->def.root_dirid, dirid, 16) == 0)
			found = set->v[i];
	pthread_mutex_unlock(&set->lock);
	return found;
}

/*
 * open_keeper - the providers of @d (its KMS, and while it moves the one it
 * moves from), opened.  0 or -errno + @err.
 */
static int open_keeper(const struct scope_set *set, const struct scope_def *d,
		       struct kms_keeper **out, char *err, size_t err_len)
{
	dictionary *ini = scope_def_ini(d);
	int ret;

	if (!ini) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	ret = kms_keeper_open(ini, set->uuid, set->pool_capacity, NULL, NULL, out, err, err_len);
	iniparser_freedict(ini);
	return ret;
}

/*
 * give_keys - @s's codec gets the scope @key's name keys and, while @s is
 * converting, the volume's codec as its fallback.  0 or -EIO.
 */
static int give_keys(struct scope *s, const uint8_t *key)
{
	int ret = names_set_key(s->names, key, s->set->uuid);

	names_set_fallback(s->names, s->def.converting ? s->set->volume_names : NULL);
	return ret;
}

/*
 * unlock - open @s's provider, unwrap its scope key there and give the codec
 * its keys.  @s->use held exclusively, @s locked.  0 or -errno + @err.
 */
static int unlock(struct scope *s, char *err, size_t err_len)
{
	uint8_t *key = secmem_alloc(SCOPE_KEY_LEN);
	const struct kms_set *ks;
	int ret;

	if (!key) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	ret = open_keeper(s->set, &s->def, &s->keeper, err, err_len);
	if (ret == 0) {
		ks = kms_keeper_get(s->keeper);
		ret = scope_key_open(ks->keys.current, s->set->uuid, &s->def, key);
		kms_keeper_put(s->keeper, ks);
		if (ret < 0)
			snprintf(err, err_len, "cannot unwrap the scope key: %s",
				 ret == -ENOKEY ? "its record names another master key"
						: kms_strerror(ret));
	}
	if (ret == 0)
		ret = give_keys(s, key);
	secmem_free(key, SCOPE_KEY_LEN);
	if (ret < 0 && s->keeper) {
		kms_keeper_close(s->keeper);
		s->keeper = NULL;
	}
	return ret;
}

static void scope_id_text(const struct scope *s, char *out)
{
	names_b64_encode(s->def.id, SCOPE_ID_LEN, out);
}

int scope_enter(struct scope *s, const struct kms_set **set)
{
	char err[512], id[SCOPE_ID_TEXT + 1];
	int ret = 0;

	pthread_rwlock_rdlock(&s->use);
	while (!s->keeper) {
		pthread_rwlock_unlock(&s->use);
		pthread_rwlock_wrlock(&s->use);
		if (!s->keeper)
			ret = unlock(s, err, sizeof(err));
		pthread_rwlock_unlock(&s->use);
		if (ret < 0) {
			atomic_fetch_add(&s->refusals, 1);
			scope_id_text(s, id);
			log_ratelimited(LOG_ERR, "key scope %s stays locked: %s; returning EACCES",
					id, err);
			return -EACCES;
		}
		pthread_rwlock_rdlock(&s->use);
	}
	if (set)
		*set = kms_keeper_get(s->keeper);
	return 0;
}

void scope_leave(struct scope *s, const struct kms_set *set)
{
	if (set)
		kms_keeper_put(s->keeper, set);
	pthread_rwlock_unlock(&s->use);
}

int scope_keys_get(struct scope *s, struct kms_keeper *volume, const struct kms_set **set)
{
	if (s)
		return scope_enter(s, set);
	*set = kms_keeper_get(volume);
	return 0;
}

void scope_keys_put(struct scope *s, struct kms_keeper *volume, const struct kms_set *set)
{
	if (s)
		scope_leave(s, set);
	else
		kms_keeper_put(volume, set);
}

struct names *scope_names(struct scope *s)
{
	return s->names;
}

/* keep_counters - add the counters of @s's provider, about to close, to its totals. */
static void keep_counters(struct scope *s)
{
	const struct kms_set *ks = kms_keeper_get(s->keeper);
	const struct kms_counters *c = &ks->keys.current->counters;

	atomic_fetch_add(&s->generate, __atomic_load_n(&c->generate, __ATOMIC_RELAXED));
	atomic_fetch_add(&s->unwrap, __atomic_load_n(&c->unwrap, __ATOMIC_RELAXED));
	atomic_fetch_add(&s->failures, __atomic_load_n(&c->failures, __ATOMIC_RELAXED));
	kms_keeper_put(s->keeper, ks);
}

void scope_lock(struct scope *s)
{
	pthread_rwlock_wrlock(&s->use);
	names_forget_keys(s->names);
	if (s->keeper) {
		keep_counters(s);
		kms_keeper_close(s->keeper); /* wipes its master keys */
		s->keeper = NULL;
	}
	atomic_fetch_add(&s->locks, 1);
	pthread_rwlock_unlock(&s->use);
}

/*
 * held_unlocked - unlock @s if it is locked, s->use held exclusively.  0, or
 * -EACCES (counted as a refusal, as scope_enter() does) with why in @err.
 */
static int held_unlocked(struct scope *s, char *err, size_t err_len)
{
	if (s->keeper || unlock(s, err, err_len) == 0)
		return 0;
	atomic_fetch_add(&s->refusals, 1);
	return -EACCES;
}

int scope_current_version(struct scope *s, uint32_t *version)
{
	const struct kms_set *ks;
	int ret = scope_enter(s, &ks);

	if (ret < 0)
		return ret;
	ret = kms_current_version(ks->keys.current, version);
	scope_leave(s, ks);
	return ret;
}

int scope_rewrap_key(struct scope *s, int backing_fd, uint32_t *version)
{
	struct scope_def *d = malloc(sizeof(*d));
	char err[512] = "";
	int ret = 0;

	if (!d)
		return -ENOMEM;
	/* Exclusive: unlock() reads s->def.record, which this replaces. */
	pthread_rwlock_wrlock(&s->use);
	ret = held_unlocked(s, err, sizeof(err));
	if (ret == 0) {
		const struct kms_set *ks = kms_keeper_get(s->keeper);

		*d = s->def;
		ret = scope_key_rewrap(ks->keys.current, s->set->uuid, d, version);
		kms_keeper_put(s->keeper, ks);
		if (ret < 0)
			snprintf(err, sizeof(err), "cannot re-wrap the scope key: %s",
				 ret == -ENOKEY ? "its record names another master key"
						: kms_strerror(ret));
	}
	/* The definition on disk changes first: a crash leaves the old or the new one whole. */
	if (ret == 0 && (ret = scope_registry_write(backing_fd, d, s->set->def_key)) < 0)
		snprintf(err, sizeof(err), "cannot write %s/: %s", SCOPE_REGISTRY, strerror(-ret));
	if (ret == 0)
		s->def.record = d->record;
	pthread_rwlock_unlock(&s->use);
	free(d);
	if (ret < 0) {
		char id[SCOPE_ID_TEXT + 1];

		scope_id_text(s, id);
		log_msg(LOG_ERR, "key scope %s: %s", id, err);
	}
	return ret;
}

int scope_shred(struct scope *s, char *err, size_t err_len)
{
	const struct kms_set *ks;
	int ret;

	pthread_rwlock_wrlock(&s->use);
	ret = held_unlocked(s, err, err_len); /* a KMS that refuses: nothing to destroy through */
	if (ret == 0) {
		ks = kms_keeper_get(s->keeper);
		ret = kms_destroy(ks->keys.current, err, err_len);
		kms_keeper_put(s->keeper, ks);
	}
	if (ret == 0) {
		/* As scope_lock(): the keys this daemon still holds go too. */
		names_forget_keys(s->names);
		keep_counters(s);
		kms_keeper_close(s->keeper);
		s->keeper = NULL;
		atomic_fetch_add(&s->locks, 1);
	}
	pthread_rwlock_unlock(&s->use);
	return ret;
}

bool scope_gone(struct scope *s)
{
	return atomic_load(&s->gone);
}

void scope_record_of(struct scope *s, struct key_record *out)
{
	pthread_rwlock_rdlock(&s->use);
	*out = s->def.record;
	pthread_rwlock_unlock(&s->use);
}

const struct scope_def *scope_def_of(const struct scope *s)
{
	return &s->def;
}

void scope_get_stats(struct scope *s, struct scope_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_rwlock_rdlock(&s->use);
	if (s->keeper) {
		const struct kms_set *ks = kms_keeper_get(s->keeper);
		const struct kms_counters *c = &ks->keys.current->counters;

		out->unlocked = true;
		out->generate = __atomic_load_n(&c->generate, __ATOMIC_RELAXED);
		out->unwrap = __atomic_load_n(&c->unwrap, __ATOMIC_RELAXED);
		out->failures = __atomic_load_n(&c->failures, __ATOMIC_RELAXED);
		kms_keeper_put(s->keeper, ks);
	}
	pthread_rwlock_unlock(&s->use);
	out->generate += atomic_load(&s->generate);
	out->unwrap += atomic_load(&s->unwrap);
	out->failures += atomic_load(&s->failures);
	out->refusals = atomic_load(&s->refusals);
	out->locks = atomic_load(&s->locks);
}

/* ref_taken - whether @ref is a key reference of the volume or of a scope of @set. */
static bool ref_taken(struct scope_set *set, const char *ref, const char *const *volume_refs)
{
	bool taken = false;

	for (size_t i = 0; volume_refs[i]; i++)
		taken |= strcmp(volume_refs[i], ref) == 0;
	pthread_mutex_lock(&set->lock);
	for (size_t i = 0; i < set->n; i++)
		taken |= !atomic_load(&set->v[i]->gone) &&
			 strcmp(set->v[i]->def.record.key_ref, ref) == 0;
	pthread_mutex_unlock(&set->lock);
	return taken;
}

/* records_fit - whether every record @kms makes fits a header slot of @l, re-wrapped or not. */
static bool records_fit(const struct layout *l, const struct kms *kms, size_t *need)
{
	*need = slot_size_for_version(l->format_version, strlen(kms->key_ref), kms->max_blob_len);
	return l->placement != PLACEMENT_HEADER || (*need && *need <= l->slot_size);
}

int scope_set_create(struct scope_set *set, int backing_fd, const uint8_t *dirid,
		     const char *settings, const char *converting_from,
		     const char *const *volume_refs, const struct layout *layout, char *err,
		     size_t err_len)
{
	size_t need;
	uint8_t *key = secmem_alloc(SCOPE_KEY_LEN);
	struct scope_def *d = calloc(1, sizeof(*d));
	struct kms_keeper *keeper = NULL;
	const struct kms_set *ks;
	struct scope *s = NULL;
	int ret;

	if (!key || !d) {
		ret = -ENOMEM;
		snprintf(err, err_len, "out of memory");
		goto out;
	}
	if (scope_by_root(set, dirid)) {
		ret = -EEXIST;
		snprintf(err, err_len, "the directory is a key scope already");
		goto out;
	}
	if (strlen(settings) > SCOPE_SETTINGS_MAX ||
	    (converting_from && strlen(converting_from) > SCOPE_SETTINGS_MAX)) {
		ret = -EINVAL;
		snprintf(err, err_len, "the settings are too long");
		goto out;
	}
	memcpy(d->root_dirid, dirid, 16);
	strcpy(d->settings, settings);
	if (converting_from) {
		/* The volume's KMS, whose records under the root still open. */
		strcpy(d->previous, converting_from);
		d->converting = true;
	}
	ret = crypto_random(d->id, SCOPE_ID_LEN);
	if (ret == 0)
		ret = open_keeper(set, d, &keeper, err, err_len);
	if (ret < 0)
		goto out;
	ks = kms_keeper_get(keeper);
	if (ref_taken(set, ks->keys.current->key_ref, volume_refs)) {
		ret = -EINVAL;
		snprintf(err, err_len, "master key %s is the volume's or another scope's: a scope "
				       "needs a key of its own", ks->keys.current->key_ref);
	} else if (!records_fit(layout, ks->keys.current, &need)) {
		ret = -EINVAL;
		snprintf(err, err_len, "the key records of %s need header slots of %zu bytes, this "
				       "volume's hold %u: a scope on this KMS needs a volume with "
				       "key_records = xattr (init --header xattr)",
			 ks->keys.current->key_ref, need, (unsigned)layout->slot_size);
	} else {
		ret = scope_key_create(ks->keys.current, set->uuid, d, key);
		if (ret < 0)
			snprintf(err, err_len, "cannot make the scope key: %s", kms_strerror(ret));
	}
	kms_keeper_put(keeper, ks);
	if (ret == 0 && !(s = scope_new(set, d))) {
		ret = -ENOMEM;
		snprintf(err, err_len, "out of memory");
	}
	if (ret == 0 && (ret = give_keys(s, key)) < 0)
		snprintf(err, err_len, "cannot derive the scope's name keys");
	if (ret == 0 && (ret = scope_registry_write(backing_fd, d, set->def_key)) < 0)
		snprintf(err, err_len, "cannot write %s/: %s", SCOPE_REGISTRY, strerror(-ret));
	if (ret == 0 && (ret = set_append(set, s)) < 0) {
		scope_registry_remove(backing_fd, d->id);
		snprintf(err, err_len, "out of memory");
	}
	if (ret == 0) {
		s->keeper = keeper; /* the new scope starts unlocked */
		keeper = NULL;
		s = NULL;
	}
out:
	scope_free(s);
	if (keeper)
		kms_keeper_close(keeper);
	secmem_free(key, SCOPE_KEY_LEN);
	free(d);
	return ret;
}

/*
 * new_key_record - into @d (a copy of @s's definition), the scope key of @s
 * (unlocked, s->use held exclusively) wrapped by the provider of
 * @d->settings, after checking that provider's key as scope_set_create()
 * does.  0 or -errno + @err.
 */
static int new_key_record(struct scope *s, struct scope_def *d, const char *const *volume_refs,
			  const struct layout *layout, char *err, size_t err_len)
{
	struct scope_set *set = (struct scope_set *)s->set;
	uint8_t *key = secmem_alloc(SCOPE_KEY_LEN);
	const struct kms_set *old, *ks;
	struct kms_keeper *to = NULL;
	struct scope_def *target = calloc(1, sizeof(*target));
	size_t need;
	int ret = key && target ? 0 : -ENOMEM;

	if (ret == 0) {
		strcpy(target->settings, d->settings);
		ret = open_keeper(set, target, &to, err, err_len);
	}
	if (ret == 0) {
		ks = kms_keeper_get(to);
		old = kms_keeper_get(s->keeper);
		if (ref_taken(set, ks->keys.current->key_ref, volume_refs)) {
			ret = -EINVAL;
			snprintf(err, err_len, "master key %s is the volume's or a scope's already",
				 ks->keys.current->key_ref);
		} else if (!records_fit(layout, ks->keys.current, &need)) {
			ret = -EINVAL;
			snprintf(err, err_len, "the key records of %s need header slots of %zu bytes, "
					       "this volume's hold %u", ks->keys.current->key_ref,
				 need, (unsigned)layout->slot_size);
		} else if ((ret = scope_key_open(old->keys.current, set->uuid, &s->def, key)) < 0 ||
			   (ret = scope_key_wrap(ks->keys.current, set->uuid, d, key)) < 0) {
			snprintf(err, err_len, "cannot move the scope key: %s", kms_strerror(ret));
		}
		kms_keeper_put(s->keeper, old);
		kms_keeper_put(to, ks);
	}
	if (to)
		kms_keeper_close(to);
	secmem_free(key, SCOPE_KEY_LEN);
	free(target);
	return ret;
}

/*
 * replace_def - store @d in the registry, then make it @s's; @s is locked
 * (its providers closed, reopened from @d at the next use).  s->use held
 * exclusively.  0 or -errno + @err.
 */
static int replace_def(struct scope *s, int backing_fd, const struct scope_def *d, char *err,
		       size_t err_len)
{
	int ret = scope_registry_write(backing_fd, d, s->set->def_key);

	if (ret < 0) {
		snprintf(err, err_len, "cannot write %s/: %s", SCOPE_REGISTRY, strerror(-ret));
		return ret;
	}
	names_forget_keys(s->names); /* locked: the next use unlocks it from @d */
	if (s->keeper) {
		keep_counters(s);
		kms_keeper_close(s->keeper);
		s->keeper = NULL;
	}
	s->def = *d;
	return 0;
}

int scope_move_start(struct scope *s, int backing_fd, const char *settings,
		     const char *const *volume_refs, const struct layout *layout, char *err,
		     size_t err_len)
{
	struct scope_def *d = malloc(sizeof(*d));
	int ret = d ? 0 : -ENOMEM;

	pthread_rwlock_wrlock(&s->use);
	if (ret < 0) {
		snprintf(err, err_len, "out of memory");
	} else if (s->def.converting) {
		ret = -EBUSY;
		snprintf(err, err_len, "the scope is being converted: finish that first");
	} else if (s->def.previous[0]) {
		/* Moving already: to these settings, the run resumes; to others, not yet. */
		ret = strcmp(s->def.settings, settings) == 0 ? 1 : -EBUSY;
		if (ret < 0)
			snprintf(err, err_len, "the scope is moving to another KMS already: finish "
					       "that move first");
	} else if (strcmp(s->def.settings, settings) == 0 || strlen(settings) > SCOPE_SETTINGS_MAX) {
		ret = -EINVAL;
		snprintf(err, err_len, "the scope is on that KMS already, or the settings are too "
				       "long");
	} else {
		ret = held_unlocked(s, err, err_len);
	}
	if (ret == 0) {
		*d = s->def;
		strcpy(d->previous, s->def.settings);
		strcpy(d->settings, settings);
		ret = new_key_record(s, d, volume_refs, layout, err, err_len);
	}
	if (ret == 0)
		ret = replace_def(s, backing_fd, d, err, err_len);
	pthread_rwlock_unlock(&s->use);
	free(d);
	return ret;
}

int scope_move_end(struct scope *s, int backing_fd, char *err, size_t err_len)
{
	struct scope_def *d = malloc(sizeof(*d));
	int ret = d ? 0 : -ENOMEM;

	pthread_rwlock_wrlock(&s->use);
	if (ret == 0 && s->def.converting) {
		ret = -EBUSY;
		snprintf(err, err_len, "the scope is being converted, not moved");
	} else if (ret == 0 && !s->def.previous[0]) {
		ret = 1; /* ended already */
	} else if (ret == 0) {
		*d = s->def;
		d->previous[0] = '\0';
		ret = replace_def(s, backing_fd, d, err, err_len);
	}
	pthread_rwlock_unlock(&s->use);
	free(d);
	return ret;
}

bool scope_converting(struct scope *s)
{
	bool converting;

	pthread_rwlock_rdlock(&s->use);
	converting = s->def.converting;
	pthread_rwlock_unlock(&s->use);
	return converting;
}

bool scope_converting_to(struct scope *s, const char *settings)
{
	bool same;

	pthread_rwlock_rdlock(&s->use);
	same = s->def.converting && strcmp(s->def.settings, settings) == 0;
	pthread_rwlock_unlock(&s->use);
	return same;
}

int scope_convert_end(struct scope *s, int backing_fd, char *err, size_t err_len)
{
	struct scope_def *d = malloc(sizeof(*d));
	int ret = d ? 0 : -ENOMEM;

	pthread_rwlock_wrlock(&s->use);
	if (ret == 0 && !s->def.converting) {
		ret = 1; /* ended already */
	} else if (ret == 0 && (atomic_load(&s->moving) != 0 ||
				atomic_load(&s->moves) != atomic_load(&s->moves_at_check))) {
		/* In this order: a move that is not running any more has counted
		 * itself done (scope_moves_end). */
		snprintf(err, err_len, "entries were renamed or linked inside it since its checking "
				       "walk began: walk it again");
		ret = -EAGAIN;
	} else if (ret == 0) {
		*d = s->def;
		d->previous[0] = '\0';
		d->converting = false;
		/* Locked: the next use opens the scope's KMS alone, without fallback. */
		ret = replace_def(s, backing_fd, d, err, err_len);
	}
	pthread_rwlock_unlock(&s->use);
	free(d);
	return ret;
}

void scope_moves_begin(struct scope *s)
{
	atomic_fetch_add(&s->moving, 1);
}

void scope_moves_end(struct scope *s, bool moved)
{
	if (moved)
		atomic_fetch_add(&s->moves, 1);
	atomic_fetch_sub(&s->moving, 1);
}

void scope_check_begins(struct scope *s)
{
	atomic_store(&s->moves_at_check, atomic_load(&s->moves));
}

void scope_set_forget_root(struct scope_set *set, int backing_fd, const uint8_t *dirid)
{
	struct scope *s = scope_by_root(set, dirid);
	char id[SCOPE_ID_TEXT + 1];
	int ret;

	if (!s)
		return;
	scope_lock(s);
	atomic_store(&s->gone, true);
	ret = scope_registry_remove(backing_fd, s->def.id);
	scope_id_text(s, id);
	if (ret < 0)
		log_msg(LOG_WARNING, "key scope %s: its root is gone but its definition stays: %s",
			id, strerror(-ret));
	else
		log_msg(LOG_NOTICE, "key scope %s: its root directory was removed", id);
}
