/*
 * The idempotency records in Redis. Each transition is one Lua script, so
 * two nodes racing on a token can never both see it fresh.
 */
#include <sys/queue.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "config.h"
#include "idem.h"
#include "log.h"
#include "redis.h"
#include "util.h"

/*
 * KEYS[1] record. ARGV: fingerprint, upstream token, owner, lease_ms,
 * ttl_ms, attempt. Returns {kind, ...}: fresh/takeover with the new epoch,
 * mismatch, replay with status and body, in_flight with ms left.
 */
static const char claim_script[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local r = redis.call('HMGET', KEYS[1], 'state', 'fp', 'lease_until',"
    " 'epoch', 'status', 'body')\n"
    "if not r[1] then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'in_flight', 'fp', ARGV[1],"
    " 'utoken', ARGV[2], 'owner', ARGV[3], 'attempt', ARGV[6], 'epoch', 1,"
    " 'lease_until', now + ARGV[4], 'created_at', now, 'updated_at', now)\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[5])\n"
    "  return {'fresh', 1}\n"
    "end\n"
    "if r[2] ~= ARGV[1] then return {'mismatch'} end\n"
    "if r[1] ~= 'in_flight' then return {'replay', r[5], r[6]} end\n"
    "local left = tonumber(r[3]) - now\n"
    "if left > 0 then return {'in_flight', left} end\n"
    "local epoch = tonumber(r[4]) + 1\n"
    "redis.call('HSET', KEYS[1], 'owner', ARGV[3], 'attempt', ARGV[6],"
    " 'epoch', epoch,"
    " 'lease_until', now + ARGV[4], 'updated_at', now)\n"
    "return {'takeover', epoch}\n";

/*
 * KEYS[1] record. ARGV: state, status, body, fingerprint, upstream token,
 * owner, ttl_ms, channel. A final result already there wins: the vendor
 * answers every resend of the upstream token with the same order, so the
 * first stored answer is as good as any. A record lost with Redis's data
 * is written back whole.
 */
static const char complete_script[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local r = redis.call('HMGET', KEYS[1], 'state', 'fp')\n"
    "if r[1] and (r[1] ~= 'in_flight' or r[2] ~= ARGV[4]) then\n"
    "  return 0\n"
    "end\n"
    "if not r[1] then\n"
    "  redis.call('HSET', KEYS[1], 'created_at', now, 'epoch', 1,"
    " 'owner', ARGV[6])\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'state', ARGV[1], 'status', ARGV[2],"
    " 'body', ARGV[3], 'fp', ARGV[4], 'utoken', ARGV[5],"
    " 'lease_until', 0, 'updated_at', now)\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[7])\n"
    "redis.call('PUBLISH', ARGV[8], KEYS[1])\n"
    "return 1\n";

/*
 * KEYS[1] record. ARGV: attempt, channel. Undoes a claim whose reply never
 * reached us, if no one has moved the record since: nothing was sent
 * upstream under it. A fresh record goes; a taken-over one just frees its
 * lease, since an earlier attempt may have reached the vendor. Returns 1
 * when undone, 0 when the record has moved on, -1 when there is none (yet:
 * the claim may still wait in a dropped connection's bytes).
 */
static const char abandon_script[] =
    "local r = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'epoch')\n"
    "if not r[1] then return -1 end\n"
    "if r[1] ~= 'in_flight' or r[2] ~= ARGV[1] then return 0 end\n"
    "if tonumber(r[3]) == 1 then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'lease_until', 0)\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[2], KEYS[1])\n"
    "return 1\n";

/* KEYS[1] record. ARGV: epoch, channel. Only the lease holder releases. */
static const char release_script[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local r = redis.call('HMGET', KEYS[1], 'state', 'epoch')\n"
    "if r[1] ~= 'in_flight' or tonumber(r[2]) ~= tonumber(ARGV[1]) then\n"
    "  return 0\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'lease_until', 0, 'updated_at', now)\n"
    "redis.call('PUBLISH', ARGV[2], KEYS[1])\n"
    "return 1\n";

TAILQ_HEAD(idem_waitq, idem_wait);
TAILQ_HEAD(idem_callq, idem_call);

struct idem_wait {
	struct idem		*idem;
	/* The queue holding this wait: idem->waits, or a batch being woken. */
	struct idem_waitq	*queue;
	char			*record_key;
	struct event		 timer;
	idem_wake_cb		*cb;
	void			*arg;
	TAILQ_ENTRY(idem_wait)	 link;
};

/*
 * A claim to undo once a stalled Redis has had time to run it. Tried
 * again (ABANDON_TRIES in all, never past the claim's lease) while Redis
 * gives no answer or has no record yet; on idem->abandons until done,
 * also while its command is out.
 */
struct idem_abandon {
	struct idem		*idem;
	char			*record_key;
	char			*attempt;
	int64_t			 give_up_ms;	/* monotonic */
	int			 tries_left;
	struct event		 timer;
	TAILQ_ENTRY(idem_abandon) link;
};

struct idem {
	struct event_base	*base;
	const struct config	*cfg;
	char			*owner;
	char			*channel;
	struct redis		*redis;
	struct redis		*subscriber;
	struct idem_waitq	 waits;
	/* Claims sent and not yet answered, for on_announcement. */
	struct idem_callq	 claims;
	TAILQ_HEAD(, idem_abandon) abandons;
};

/* How long after a claim's lost reply the claim is undone. */
#define ABANDON_DELAY_MS	1000
/*
 * Undo tries, a delay apart: enough to outlast a stall of several
 * seconds, few enough that an outage (where every claim is lost) does
 * not pile up undo traffic. After that the lease ends the claim.
 */
#define ABANDON_TRIES		6

/* One pending Redis call: the caller's callback and what it needs. */
struct idem_call {
	struct idem		*idem;
	union {
		idem_claim_cb	*claim;
		idem_done_cb	*done;
		idem_record_cb	*record;
	} cb;
	void			*arg;
	char			*client_token;	/* lookup only */
	char			*record_key;	/* claim only */
	char			*attempt;	/* claim only */
	/* Claim only: on idem->claims until the reply; whether the key was
	 * announced meanwhile. */
	bool			 is_announced;
	TAILQ_ENTRY(idem_call)	 link;
};

static char *
record_key(const struct idem *idem, const char *tenant, const char *token)
{
	/*
	 * Tenant names are [a-z0-9_-] (config.c), so the first ':' after
	 * the prefix separates tenant from token unambiguously.
	 */
	return xasprintf("%sidem:%s:%s", idem->cfg->redis_key_prefix, tenant,
	    token);
}

static void	on_announcement(const char *payload, size_t len, void *arg);

struct idem *
idem_new(struct event_base *base, const struct config *cfg,
    const char *owner)
{
	struct idem		*idem;
	struct redis_options	 opts = {
		.host = cfg->redis_host,
		.port = cfg->redis_port,
		.connect_timeout_ms = cfg->redis_connect_timeout_ms,
		.command_timeout_ms = cfg->redis_command_timeout_ms,
	};

	idem = xcalloc(1, sizeof(*idem));
	idem->base = base;
	idem->cfg = cfg;
	idem->owner = xstrdup(owner);
	idem->channel = xasprintf("%sidem:done", cfg->redis_key_prefix);
	TAILQ_INIT(&idem->waits);
	TAILQ_INIT(&idem->claims);
	TAILQ_INIT(&idem->abandons);
	idem->redis = redis_new(base, &opts);
	idem->subscriber = redis_new_subscriber(base, &opts, idem->channel,
	    on_announcement, idem);
	return idem;
}

static void
abandon_free(struct idem_abandon *abandon)
{
	evtimer_del(&abandon->timer);
	TAILQ_REMOVE(&abandon->idem->abandons, abandon, link);
	free(abandon->record_key);
	free(abandon->attempt);
	free(abandon);
}

void
idem_free(struct idem *idem)
{
	struct idem_wait	*wait;
	struct idem_abandon	*abandon;

	if (idem == NULL)
		return;
	while ((wait = TAILQ_FIRST(&idem->waits)) != NULL)
		idem_wait_cancel(wait);
	/* Claims still out are answered NULL here and schedule abandons. */
	redis_free(idem->subscriber);
	redis_free(idem->redis);
	while ((abandon = TAILQ_FIRST(&idem->abandons)) != NULL)
		abandon_free(abandon);
	free(idem->channel);
	free(idem->owner);
	free(idem);
}

bool
idem_is_ready(const struct idem *idem)
{
	return redis_is_connected(idem->redis);
}

static struct idem_call *
call_new(struct idem *idem, void *arg)
{
	struct idem_call	*call = xcalloc(1, sizeof(*call));

	call->idem = idem;
	call->arg = arg;
	return call;
}

static void
call_free(struct idem_call *call)
{
	free(call->client_token);
	free(call->record_key);
	free(call->attempt);
	free(call);
}

/* Runs a script with one key; argv holds the script's ARGV. */
static void
eval(struct idem *idem, const char *script, const char *key, int argc,
    const char **argv, redis_reply_cb *cb, void *arg)
{
	const char	*args[16];
	size_t		 lens[16];
	int		 i, n = 0;

	args[n++] = "EVAL";
	args[n++] = script;
	args[n++] = "1";
	args[n++] = key;
	for (i = 0; i < argc && n < 16; i++)
		args[n++] = argv[i];
	for (i = 0; i < n; i++)
		lens[i] = strlen(args[i]);
	redis_command(idem->redis, cb, arg, n, args, lens);
}

static bool
reply_kind_is(const redisReply *reply, const char *kind)
{
	const redisReply	*first = reply->element[0];

	return first->type == REDIS_REPLY_STRING && strcmp(first->str, kind)
	    == 0;
}

static int64_t
reply_int(const redisReply *reply)
{
	if (reply->type == REDIS_REPLY_INTEGER)
		return reply->integer;
	if (reply->type == REDIS_REPLY_STRING)
		return strtoll(reply->str, NULL, 10);
	return 0;
}

/* Turns the claim script's reply into a struct idem_claim. */
static void
parse_claim(const redisReply *reply, struct idem_claim *claim)
{
	claim->outcome = IDEM_UNAVAILABLE;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements < 1)
		return;

	if (reply_kind_is(reply, "fresh") && reply->elements == 2) {
		claim->outcome = IDEM_FRESH;
		claim->epoch = reply_int(reply->element[1]);
	} else if (reply_kind_is(reply, "takeover") && reply->elements == 2) {
		claim->outcome = IDEM_TAKEOVER;
		claim->epoch = reply_int(reply->element[1]);
	} else if (reply_kind_is(reply, "mismatch")) {
		claim->outcome = IDEM_MISMATCH;
	} else if (reply_kind_is(reply, "in_flight") &&
	    reply->elements == 2) {
		claim->outcome = IDEM_IN_FLIGHT;
		claim->lease_left_ms = reply_int(reply->element[1]);
	} else if (reply_kind_is(reply, "replay") && reply->elements == 3 &&
	    reply->element[2]->type == REDIS_REPLY_STRING) {
		claim->outcome = IDEM_REPLAYED;
		claim->status = (int)reply_int(reply->element[1]);
		claim->body = reply->element[2]->str;
		claim->body_len = reply->element[2]->len;
	}
}

static void
set_abandon_timer(struct idem_abandon *abandon)
{
	struct timeval	tv = { ABANDON_DELAY_MS / 1000,
			    (ABANDON_DELAY_MS % 1000) * 1000 };

	evtimer_add(&abandon->timer, &tv);
}

/*
 * Tried again later when Redis gave no answer (still stalled or away), or
 * found no record: after a stall Redis may run this undo, sent on a new
 * connection, before the claim still waiting in the dropped one's bytes.
 */
static void
on_abandon_reply(redisReply *reply, void *arg)
{
	struct idem_abandon	*abandon = arg;
	bool			 is_again;

	is_again = reply == NULL || (reply->type == REDIS_REPLY_INTEGER &&
	    reply->integer == -1);
	if (is_again && --abandon->tries_left > 0 &&
	    util_mono_ms() + ABANDON_DELAY_MS < abandon->give_up_ms) {
		set_abandon_timer(abandon);
		return;
	}
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
	    reply->integer == 1)
		log_pack(LOG_INFO, "idem", "claim_undone", "{}");
	abandon_free(abandon);
}

static void
on_abandon_timer(evutil_socket_t fd, short what, void *arg)
{
	struct idem_abandon	*abandon = arg;
	struct idem		*idem = abandon->idem;
	const char		*argv[2] = { abandon->attempt, idem->channel };

	(void)fd;
	(void)what;
	eval(idem, abandon_script, abandon->record_key, 2, argv,
	    on_abandon_reply, abandon);
}

/*
 * The claim's reply never came: Redis may still run it when it wakes, and
 * then hold a lease for an attempt that has already answered 503. Undo it
 * a little later; takes ownership of the call's key and attempt.
 */
static void
schedule_abandon(struct idem_call *call)
{
	struct idem		*idem = call->idem;
	struct idem_abandon	*abandon;

	abandon = xcalloc(1, sizeof(*abandon));
	abandon->idem = idem;
	abandon->record_key = call->record_key;
	abandon->attempt = call->attempt;
	abandon->give_up_ms = util_mono_ms() + idem->cfg->idem_lease_ms;
	abandon->tries_left = ABANDON_TRIES;
	call->record_key = NULL;
	call->attempt = NULL;
	evtimer_assign(&abandon->timer, idem->base, on_abandon_timer,
	    abandon);
	set_abandon_timer(abandon);
	TAILQ_INSERT_TAIL(&idem->abandons, abandon, link);
}

static void
on_claim_reply(redisReply *reply, void *arg)
{
	struct idem_call	*call = arg;
	struct idem_claim	 claim = { 0 };

	TAILQ_REMOVE(&call->idem->claims, call, link);
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		log_pack(LOG_ERROR, "idem", "redis_script_error", "{s:s}",
		    "error", reply->str);
	if (reply == NULL)
		schedule_abandon(call);
	parse_claim(reply, &claim);
	claim.is_stale = claim.outcome == IDEM_IN_FLIGHT && call->is_announced;
	call->cb.claim(&claim, call->arg);
	call_free(call);
}

void
idem_claim(struct idem *idem, const struct idem_key *key, idem_claim_cb *cb,
    void *arg)
{
	struct idem_call	*call = call_new(idem, arg);
	char			*rkey = record_key(idem, key->tenant,
				    key->client_token);
	char			 lease[24], ttl[24];
	const char		*argv[6];

	(void)snprintf(lease, sizeof(lease), "%d", idem->cfg->idem_lease_ms);
	(void)snprintf(ttl, sizeof(ttl), "%" PRId64,
	    idem->cfg->idem_ttl_s * 1000);
	argv[0] = key->fingerprint;
	argv[1] = key->upstream_token;
	argv[2] = idem->owner;
	argv[3] = lease;
	argv[4] = ttl;
	argv[5] = key->attempt != NULL ? key->attempt : "";
	call->cb.claim = cb;
	call->record_key = rkey;
	call->attempt = xstrdup(argv[5]);
	TAILQ_INSERT_TAIL(&idem->claims, call, link);
	eval(idem, claim_script, rkey, 6, argv, on_claim_reply, call);
}

static void
on_done_reply(redisReply *reply, void *arg)
{
	struct idem_call	*call = arg;
	bool			 is_stored;

	is_stored = reply != NULL && reply->type == REDIS_REPLY_INTEGER;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		log_pack(LOG_ERROR, "idem", "redis_script_error", "{s:s}",
		    "error", reply->str);
	call->cb.done(is_stored, call->arg);
	call_free(call);
}

void
idem_complete(struct idem *idem, const struct idem_key *key,
    bool is_final_failure, int status, const char *body, idem_done_cb *cb,
    void *arg)
{
	struct idem_call	*call = call_new(idem, arg);
	char			*rkey = record_key(idem, key->tenant,
				    key->client_token);
	char			 status_text[16], ttl[24];
	const char		*argv[8];

	(void)snprintf(status_text, sizeof(status_text), "%d", status);
	(void)snprintf(ttl, sizeof(ttl), "%" PRId64,
	    idem->cfg->idem_ttl_s * 1000);
	argv[0] = is_final_failure ? "failed_final" : "completed";
	argv[1] = status_text;
	argv[2] = body;
	argv[3] = key->fingerprint;
	argv[4] = key->upstream_token;
	argv[5] = idem->owner;
	argv[6] = ttl;
	argv[7] = idem->channel;
	call->cb.done = cb;
	eval(idem, complete_script, rkey, 8, argv, on_done_reply, call);
	free(rkey);
}

void
idem_release(struct idem *idem, const struct idem_key *key, int64_t epoch,
    idem_done_cb *cb, void *arg)
{
	struct idem_call	*call = call_new(idem, arg);
	char			*rkey = record_key(idem, key->tenant,
				    key->client_token);
	char			 epoch_text[24];
	const char		*argv[2];

	(void)snprintf(epoch_text, sizeof(epoch_text), "%" PRId64, epoch);
	argv[0] = epoch_text;
	argv[1] = idem->channel;
	call->cb.done = cb;
	eval(idem, release_script, rkey, 2, argv, on_done_reply, call);
	free(rkey);
}

/* Milliseconds since the epoch as RFC 3339 UTC with milliseconds. */
static json_t *
json_time(const char *ms_text)
{
	long long	ms = strtoll(ms_text, NULL, 10);
	time_t		secs = (time_t)(ms / 1000);
	struct tm	tm;
	char		date[32], text[40];

	gmtime_r(&secs, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
	(void)snprintf(text, sizeof(text), "%.20s.%03dZ", date,
	    (int)(ms % 1000));
	return json_string(text);
}

static const char *
hash_field(const redisReply *reply, const char *name)
{
	size_t	i;

	for (i = 0; i + 1 < reply->elements; i += 2) {
		if (reply->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(reply->element[i]->str, name) == 0 &&
		    reply->element[i + 1]->type == REDIS_REPLY_STRING)
			return reply->element[i + 1]->str;
	}
	return NULL;
}

/* The client's view of a record: no fingerprint, owner or lease. */
static json_t *
record_json(const redisReply *reply, const char *client_token)
{
	const char	*state, *created, *updated, *status, *body;
	json_t		*record, *result = json_null(), *parsed;

	state = hash_field(reply, "state");
	created = hash_field(reply, "created_at");
	updated = hash_field(reply, "updated_at");
	status = hash_field(reply, "status");
	body = hash_field(reply, "body");
	if (state == NULL || created == NULL || updated == NULL)
		return NULL;

	if (status != NULL && body != NULL) {
		parsed = json_loads(body, 0, NULL);
		result = json_pack("{s:i, s:o}", "status", atoi(status),
		    "body", parsed != NULL ? parsed : json_string(body));
	}
	record = json_pack("{s:s, s:s, s:o, s:o, s:o}",
	    "client_token", client_token, "state", state,
	    "created_at", json_time(created), "updated_at", json_time(updated),
	    "result", result);
	return record;
}

static void
on_lookup_reply(redisReply *reply, void *arg)
{
	struct idem_call	*call = arg;
	json_t			*record = NULL;

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
		call->cb.record(NULL, false, call->arg);
		call_free(call);
		return;
	}
	if (reply->elements > 0)
		record = record_json(reply, call->client_token);
	call->cb.record(record, true, call->arg);
	json_decref(record);
	call_free(call);
}

void
idem_lookup(struct idem *idem, const char *tenant, const char *client_token,
    idem_record_cb *cb, void *arg)
{
	struct idem_call	*call = call_new(idem, arg);
	char			*rkey = record_key(idem, tenant, client_token);
	const char		*argv[2] = { "HGETALL", rkey };
	size_t			 lens[2] = { 7, strlen(rkey) };

	call->cb.record = cb;
	call->client_token = xstrdup(client_token);
	redis_command(idem->redis, on_lookup_reply, call, 2, argv, lens);
	free(rkey);
}

static void
wait_fire(struct idem_wait *wait)
{
	idem_wake_cb	*cb = wait->cb;
	void		*arg = wait->arg;

	idem_wait_cancel(wait);
	cb(arg);
}

static void
on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	wait_fire(arg);
}

static bool
is_key(const char *key, const char *payload, size_t len)
{
	return strlen(key) == len && memcmp(key, payload, len) == 0;
}

/*
 * A completion or release was published. Claims on that key still out are
 * marked first: the announcement comes on the subscriber connection and
 * may overtake the reply of a claim Redis ran before it, whose "in flight"
 * is then stale, and its caller would wait for an announcement already
 * gone. Then wake every waiter on that key that was waiting when it
 * arrived. They are moved to a batch first: a callback may wait again on
 * the same key, and that new wait is for the next announcement, not this
 * one; a callback may also cancel another wait in the batch, which
 * idem_wait_cancel handles through wait->queue.
 */
static void
on_announcement(const char *payload, size_t len, void *arg)
{
	struct idem		*idem = arg;
	struct idem_waitq	 woken;
	struct idem_wait	*wait, *next;
	struct idem_call	*call;

	TAILQ_FOREACH(call, &idem->claims, link) {
		if (is_key(call->record_key, payload, len))
			call->is_announced = true;
	}
	TAILQ_INIT(&woken);
	for (wait = TAILQ_FIRST(&idem->waits); wait != NULL; wait = next) {
		next = TAILQ_NEXT(wait, link);
		if (!is_key(wait->record_key, payload, len))
			continue;
		TAILQ_REMOVE(&idem->waits, wait, link);
		TAILQ_INSERT_TAIL(&woken, wait, link);
		wait->queue = &woken;
	}
	while ((wait = TAILQ_FIRST(&woken)) != NULL)
		wait_fire(wait);
}

struct idem_wait *
idem_wait(struct idem *idem, const struct idem_key *key, int64_t timeout_ms,
    idem_wake_cb *cb, void *arg)
{
	struct idem_wait	*wait;
	struct timeval		 tv;

	if (timeout_ms < 0)
		timeout_ms = 0;
	wait = xcalloc(1, sizeof(*wait));
	wait->idem = idem;
	wait->record_key = record_key(idem, key->tenant, key->client_token);
	wait->cb = cb;
	wait->arg = arg;
	evtimer_assign(&wait->timer, idem->base, on_wait_timer, wait);
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(&wait->timer, &tv);
	TAILQ_INSERT_TAIL(&idem->waits, wait, link);
	wait->queue = &idem->waits;
	return wait;
}

void
idem_wait_cancel(struct idem_wait *wait)
{
	if (wait == NULL)
		return;
	evtimer_del(&wait->timer);
	TAILQ_REMOVE(wait->queue, wait, link);
	free(wait->record_key);
	free(wait);
}
