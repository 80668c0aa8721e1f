/* SPDX-License-Identifier: MIT */
/*
 * The status xattr's JSON document (status.h).
 */
#include "ops_i.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/hex.h"
#include "killpriv.h"
#include "scopes.h"
#include "status.h"

/* @in as a JSON string body: quotes, backslashes and control bytes escaped. */
static void json_escape(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	for (; *in && n + 7 < cap; in++) {
		unsigned char c = (unsigned char)*in;
		if (c == '"' || c == '\\')
			n += (size_t)snprintf(out + n, cap - n, "\\%c", c);
		else if (c < 0x20)
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
		else
			out[n++] = (char)c;
	}
	out[n] = '\0';
}

/* scope_provider - the provider name in canonical scope @settings into @out. */
static void scope_provider(const char *settings, char *out, size_t cap)
{
	const char *p = strstr(settings, "\nprovider=");
	const char *v = strncmp(settings, "provider=", 9) == 0 ? settings + 9 : p ? p + 10 : "";

	snprintf(out, cap, "%.*s", (int)strcspn(v, "\n"), v);
}

/* scopes_json - the "scopes" object (status.h) into @out; -ERANGE when it does not fit. */
static int scopes_json(struct envfs *fs, char *out, size_t cap)
{
	size_t n = 0, count = fs->scopes ? scope_set_count(fs->scopes) : 0, shown = 0;
	int w = snprintf(out, cap, "{");

	for (size_t i = 0; w >= 0 && (size_t)w < cap - n && i < count; i++) {
		struct scope *s = scope_set_at(fs->scopes, i);
		const struct scope_def *d = scope_def_of(s);
		char id[SCOPE_ID_TEXT + 1], provider[64], ref[6 * KMS_MAX_REF + 1], p[128];
		struct scope_stats st;

		n += (size_t)w;
		w = 0;
		if (scope_gone(s))
			continue;
		scope_get_stats(s, &st);
		names_b64_encode(d->id, SCOPE_ID_LEN, id);
		scope_provider(d->settings, p, sizeof(p));
		json_escape(p, provider, sizeof(provider));
		json_escape(d->record.key_ref, ref, sizeof(ref));
		w = snprintf(out + n, cap - n,
			     "%s\"%s\":{\"provider\":\"%s\",\"key_ref\":\"%s\","
			     "\"unlocked\":%s,\"converting\":%s,\"generate\":%" PRIu64
			     ",\"unwrap\":%" PRIu64 ",\"failures\":%" PRIu64 ",\"refusals\":%" PRIu64
			     ",\"locks\":%" PRIu64 "}",
			     shown++ ? "," : "", id, provider, ref, st.unlocked ? "true" : "false",
			     scope_converting(s) ? "true" : "false", st.generate, st.unwrap,
			     st.failures, st.refusals, st.locks);
	}
	if (w < 0 || (size_t)w >= cap - n)
		return -ERANGE;
	n += (size_t)w;
	w = snprintf(out + n, cap - n, "}");
	return w < 0 || (size_t)w >= cap - n ? -ERANGE : 0;
}

int status_json(struct envfs *fs, char *out, size_t cap)
{
	char scopes[8192];
	struct dekcache_stats cs;
	struct dek_pool_stats ps;
	struct prefetch_stats pf;
	char uuid[37], backing[3 * PATH_MAX];
	struct kms_remote_stats rs;
	char service[256] = "", previous[6 * KMS_MAX_REF + 32] = "", ref[6 * KMS_MAX_REF + 1];
	const struct kms_set *set = kms_keeper_get(fs->keys);
	struct kms *kms = set->keys.current;
	uint32_t current = 0;
	char caps[512];
	int n;

	if (backing_caps_json(&fs->caps, caps, sizeof(caps)) < 0)
		snprintf(caps, sizeof(caps), "null");
	if (scopes_json(fs, scopes, sizeof(scopes)) < 0)
		snprintf(scopes, sizeof(scopes), "null");
	dekcache_get_stats(fs->cache, &cs);
	dek_pool_get_stats(set->pool, &ps);
	prefetch_get_stats(fs->prefetch, &pf);
	kms_remote_stats(kms, &rs);
	if (set->keys.previous) {
		json_escape(set->keys.previous->key_ref, ref, sizeof(ref));
		snprintf(previous, sizeof(previous), ",\"previous_key_ref\":\"%s\"", ref);
	}
	if (rs.remote)
		snprintf(service, sizeof(service),
			 ",\"service\":{\"calls\":%" PRIu64 ",\"retries\":%" PRIu64
			 ",\"failures\":%" PRIu64 ",\"throttled\":%" PRIu64
			 ",\"latency_us\":%" PRIu64 ",\"breaker\":\"%s\",\"breaker_opens\":%" PRIu64
			 "}",
			 rs.calls, rs.retries, rs.failures, rs.throttled, rs.latency_us, rs.breaker,
			 rs.breaker_opens);
	json_escape(fs->backing, backing, sizeof(backing));
	if (kms_current_version(kms, &current) < 0)
		current = 0;
	else
		dek_pool_note_version(set->pool, current); /* rotate reads this first */
	uuid_format(fs->cfg.uuid, uuid);
	n = snprintf(out, cap,
		     "{\"volume\":\"%s\",\"backing\":\"%s\",\"kms\":{\"provider\":\"%s\","
		     "\"key_ref\":\"%s\"%s,\"current_version\":%u,\"generate\":%" PRIu64 ",\"unwrap\":%" PRIu64
		     ",\"rewrap\":%" PRIu64 ",\"wrap\":%" PRIu64 ",\"failures\":%" PRIu64 "%s},"
		     "\"cache\":{\"entries\":%" PRIu64 ",\"pinned\":%" PRIu64 ",\"hits\":%" PRIu64
		     ",\"misses\":%" PRIu64 ",\"evictions\":%" PRIu64 ",\"max_entries\":%u,"
		     "\"max_age\":%u},"
		     "\"pool\":{\"capacity\":%" PRIu64 ",\"entries\":%" PRIu64 ",\"hits\":%" PRIu64
		     ",\"misses\":%" PRIu64 ",\"dropped\":%" PRIu64 "},"
		     "\"prefetch\":{\"enabled\":%s,\"queued\":%" PRIu64 ",\"unwrapped\":%" PRIu64
		     ",\"skipped\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"overflow\":%" PRIu64
		     ",\"batches\":%" PRIu64 ",\"waited\":%" PRIu64 "},"
		     "\"errors\":{\"integrity\":%" PRIu64 ",\"key\":%" PRIu64 "},"
		     "\"inodes\":%" PRIu64 ",\"inode_fds\":%u,\"inode_fds_bounded\":%s,"
		     "\"inodes_peak\":%" PRIu64 ",\"inodes_max\":%u,\"inodes_bounded\":%s,"
		     "\"inodes_evict_mode\":\"%s\",\"inodes_evict_requested\":%" PRIu64 ","
		     "\"uptime\":%lld,"
		     "\"daemon\":{\"pid\":%d,\"version\":\"%s\",\"writeback_cache\":%s,"
		     "\"xattrs\":%s,\"handle_killpriv_v2\":%s,\"shared\":%s},\"backing_fs\":%s,\"scopes\":%s}\n",
		     uuid, backing, kms->ops->name, kms->key_ref, previous, current,
		     (uint64_t)kms->counters.generate, (uint64_t)kms->counters.unwrap,
		     (uint64_t)kms->counters.rewrap, (uint64_t)kms->counters.wrap,
		     (uint64_t)kms->counters.failures, service,
		     cs.entries, cs.pinned, cs.hits, cs.misses, cs.evictions,
		     fs->settings.cache_entries, fs->settings.cache_max_age,
		     ps.capacity, ps.entries, ps.hits, ps.misses, ps.dropped,
		     fs->prefetch ? "true" : "false", pf.queued, pf.unwrapped, pf.skipped, pf.failed,
		     pf.overflow, pf.batches, pf.waited,
		     (uint64_t)atomic_load(&fs->counters.integrity_errors),
		     (uint64_t)atomic_load(&fs->counters.key_errors), inode_count(fs->inodes),
		     inode_open_fds(fs->inodes), inode_fds_bounded(fs->inodes) ? "true" : "false",
		     inode_peak(fs->inodes), fs->settings.max_inodes,
		     inode_evict_applied(fs->evictor) ? "true" : "false",
		     inode_evict_mode(fs->evictor),
		     inode_evict_requested(fs->evictor),
		     (long long)(time(NULL) - fs->started), (int)getpid(), ENVELOPEFS_VERSION,
		     fs->settings.writeback_cache ? "true" : "false",
		     fs->settings.xattrs ? "true" : "false", killpriv_negotiated() ? "true" : "false", fs->shared ? "true" : "false",
		     caps, scopes);
	kms_keeper_put(fs->keys, set);
	return n < 0 || (size_t)n >= cap ? -ERANGE : n;
}
