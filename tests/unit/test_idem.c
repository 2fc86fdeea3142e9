/*
 * idem.c through its header, on a real libevent loop against a real
 * redis-server that each case starts. Redis's state is read back with a
 * blocking client to check what the scripts wrote.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>

#include "config.h"
#include "idem.h"
#include "redis_fixture.h"
#include "util.h"

#define WAIT_MS			5000
#define LEASE_MS		30000
#define SHORT_LEASE_MS		1000	/* the smallest the config allows */
#define TTL_S			3600
/*
 * libevent 2.1 times events with CLOCK_MONOTONIC_COARSE (a 4 ms tick
 * here), so a timer may fire that much before our own clock says it is due.
 */
#define CLOCK_SLACK_MS		10
/* Waits: one that should end by announcement, one by its own timer. */
#define LONG_WAIT_MS		10000
#define WAKE_WITHIN_MS		2000
#define SHORT_WAIT_MS		300
#define SHORT_WAIT_SLACK_MS	500
/* How long after Redis ran a script its reply may reach the callback. */
#define REPLY_SLACK_MS		50
#define PREFIX			"acrgw-test:"
/* The record's key as idem.c builds it; read here to inspect Redis. */
#define RECORD_KEY(tenant, token)	PREFIX "idem:" tenant ":" token
#define CHANNEL			PREFIX "idem:done"
#define FP_A \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define FP_B \
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define UPSTREAM_TOKEN		"acrgw-upstream-token-1"
#define BODY_CREATED		"{\"InstanceId\":\"cri-test-1\"}"
#define BODY_OTHER		"{\"InstanceId\":\"cri-test-2\"}"
#define BODY_REJECTED		"{\"code\":\"InvalidParameter\"}"

struct test_state {
	struct redis_fixture	*rf;
	struct event_base	*base;
	struct config		 cfg;
	char			 host[16];
	char			 prefix[32];
	struct idem		*idem;		/* node-a */
	struct idem		*other;		/* node-b, for some cases */
};

struct claim_box {
	int			 calls;
	struct idem_claim	 claim;
	char			*body;		/* copy of claim.body */
};

struct done_box {
	int	calls;
	bool	is_stored;
};

struct record_box {
	int	calls;
	bool	is_available;
	json_t	*record;		/* deep copy */
};

struct wake_box {
	int	calls;
	int64_t	woken_ms;
};

static const struct idem_key key_a = {
	.tenant = "team-a",
	.client_token = "tok-1",
	.fingerprint = FP_A,
	.upstream_token = UPSTREAM_TOKEN,
};

static struct idem_key
key_with_fingerprint(const char *fingerprint)
{
	struct idem_key	key = key_a;

	key.fingerprint = fingerprint;
	return key;
}

static bool
is_called(void *arg)
{
	const int	*calls = arg;

	return *calls > 0;
}

static void
wait_called(struct test_state *st, int *calls)
{
	assert_int_equal(redis_fixture_run_until(st->base, is_called, calls,
	    WAIT_MS), 0);
	assert_int_equal(*calls, 1);
}

static void
on_claim(const struct idem_claim *claim, void *arg)
{
	struct claim_box	*box = arg;

	box->calls++;
	box->claim = *claim;
	if (claim->body != NULL)
		box->body = xstrndup(claim->body, claim->body_len);
	box->claim.body = NULL;
}

static void
on_done(bool is_stored, void *arg)
{
	struct done_box	*box = arg;

	box->calls++;
	box->is_stored = is_stored;
}

static void
on_record(json_t *record, bool is_available, void *arg)
{
	struct record_box	*box = arg;

	box->calls++;
	box->is_available = is_available;
	box->record = record != NULL ? json_deep_copy(record) : NULL;
}

static void
on_wake(void *arg)
{
	struct wake_box	*box = arg;

	box->calls++;
	box->woken_ms = util_mono_ms();
}

/* Claims and returns the outcome; *box keeps the rest, body to free. */
static enum idem_outcome
claim_by(struct test_state *st, struct idem *idem, const struct idem_key *key,
    struct claim_box *box)
{
	memset(box, 0, sizeof(*box));
	idem_claim(idem, key, on_claim, box);
	assert_int_equal(box->calls, 0);
	wait_called(st, &box->calls);
	return box->claim.outcome;
}

/* Claims by node-a and forgets all but the outcome and epoch. */
static enum idem_outcome
claim(struct test_state *st, const struct idem_key *key, int64_t *epoch)
{
	struct claim_box	box;
	enum idem_outcome	outcome;

	outcome = claim_by(st, st->idem, key, &box);
	if (epoch != NULL)
		*epoch = box.claim.epoch;
	free(box.body);
	return outcome;
}

static bool
complete_by(struct test_state *st, struct idem *idem,
    const struct idem_key *key, bool is_final_failure, int status,
    const char *body)
{
	struct done_box	box = { 0 };

	idem_complete(idem, key, is_final_failure, status, body, on_done,
	    &box);
	assert_int_equal(box.calls, 0);
	wait_called(st, &box.calls);
	return box.is_stored;
}

static bool
release(struct test_state *st, const struct idem_key *key, int64_t epoch)
{
	struct done_box	box = { 0 };

	idem_release(st->idem, key, epoch, on_done, &box);
	assert_int_equal(box.calls, 0);
	wait_called(st, &box.calls);
	return box.is_stored;
}

/* A deep copy of the record, or NULL; *is_available as the callback saw. */
static json_t *
lookup(struct test_state *st, const char *tenant, const char *token,
    bool *is_available)
{
	struct record_box	box = { 0 };

	idem_lookup(st->idem, tenant, token, on_record, &box);
	assert_int_equal(box.calls, 0);
	wait_called(st, &box.calls);
	*is_available = box.is_available;
	return box.record;
}

/* One field of a record as Redis holds it: new string, or NULL. */
static char *
hget(struct test_state *st, const char *key, const char *field)
{
	redisReply	*reply;
	char		*value = NULL;

	reply = redis_fixture_command(st->rf, "HGET %s %s", key, field);
	assert_non_null(reply);
	if (reply->type == REDIS_REPLY_STRING)
		value = xstrndup(reply->str, reply->len);
	freeReplyObject(reply);
	return value;
}

static void
assert_field(struct test_state *st, const char *key, const char *field,
    const char *want)
{
	char	*value = hget(st, key, field);

	assert_non_null(value);
	assert_string_equal(value, want);
	free(value);
}

/* A field that holds an integer, such as a time in ms; -1 if absent. */
static long long
hget_integer(struct test_state *st, const char *key, const char *field)
{
	char		*value = hget(st, key, field), *end;
	long long	 n;

	if (value == NULL)
		return -1;
	n = strtoll(value, &end, 10);
	assert_true(end != value && *end == '\0');
	free(value);
	return n;
}

/* The whole record as "field=value;..." in Redis's order, to compare. */
static char *
snapshot(struct test_state *st, const char *key)
{
	redisReply	*reply;
	char		*text = xstrdup(""), *next;
	size_t		 i;

	reply = redis_fixture_command(st->rf, "HGETALL %s", key);
	assert_non_null(reply);
	assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
	for (i = 0; i + 1 < reply->elements; i += 2) {
		next = xasprintf("%s%s=%s;", text, reply->element[i]->str,
		    reply->element[i + 1]->str);
		free(text);
		text = next;
	}
	freeReplyObject(reply);
	return text;
}

struct subscriber_wait {
	struct redis_fixture	*rf;
	long long		 want;
};

static bool
has_subscribers(void *arg)
{
	struct subscriber_wait	*w = arg;
	redisReply		*reply;
	bool			 is_enough;

	reply = redis_fixture_command(w->rf, "PUBSUB NUMSUB %s", CHANNEL);
	is_enough = reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
	    reply->elements == 2 &&
	    reply->element[1]->type == REDIS_REPLY_INTEGER &&
	    reply->element[1]->integer >= w->want;
	freeReplyObject(reply);
	return is_enough;
}

static bool
is_ready(void *arg)
{
	return idem_is_ready(arg);
}

static bool
is_not_ready(void *arg)
{
	return !idem_is_ready(arg);
}

/* New idem for node owner, its command connection up and subscribed. */
static struct idem *
open_node(struct test_state *st, const char *owner, long long subscribers)
{
	struct idem		*idem;
	struct subscriber_wait	 w = { st->rf, subscribers };

	idem = idem_new(st->base, &st->cfg, owner);
	assert_non_null(idem);
	assert_int_equal(redis_fixture_run_until(st->base, is_ready, idem,
	    WAIT_MS), 0);
	assert_int_equal(redis_fixture_run_until(st->base, has_subscribers, &w,
	    WAIT_MS), 0);
	return idem;
}

static void
open_other_node(struct test_state *st)
{
	st->other = open_node(st, "node-b", 2);
}

/* Reopens node-a with another lease; the config is borrowed by idem. */
static void
reopen_with_lease(struct test_state *st, int lease_ms)
{
	idem_free(st->idem);
	st->idem = NULL;
	st->cfg.idem_lease_ms = lease_ms;
	st->idem = open_node(st, "node-a", 1);
}

/* Runs the loop for ms; only used to let a lease Redis reported run out. */
static void
run_for(struct test_state *st, int64_t ms)
{
	redis_fixture_run_for(st->base, (int)ms);
}

static int
setup(void **state)
{
	struct test_state	*st;

	st = xcalloc(1, sizeof(*st));
	*state = st;
	st->rf = redis_fixture_start();
	st->base = event_base_new();
	if (st->rf == NULL || st->base == NULL)
		return -1;

	(void)strcpy(st->host, "127.0.0.1");
	(void)strcpy(st->prefix, PREFIX);
	st->cfg.redis_host = st->host;
	st->cfg.redis_port = redis_fixture_port(st->rf);
	st->cfg.redis_connect_timeout_ms = 1000;
	/* Far above what a script takes, so only a dead Redis fails. */
	st->cfg.redis_command_timeout_ms = 1000;
	st->cfg.redis_key_prefix = st->prefix;
	st->cfg.idem_ttl_s = TTL_S;
	st->cfg.idem_lease_ms = LEASE_MS;
	st->cfg.idem_wait_max_s = 10;
	st->cfg.idem_retry_after_s = 1;
	st->cfg.upstream_timeout_ms = 500;
	st->idem = open_node(st, "node-a", 1);
	return 0;
}

static int
teardown(void **state)
{
	struct test_state	*st = *state;

	idem_free(st->other);
	idem_free(st->idem);
	if (st->base != NULL)
		event_base_free(st->base);
	redis_fixture_free(st->rf);
	free(st);
	return 0;
}

static void
fresh_token_is_claimed_with_epoch_1(void **state)
{
	struct test_state	*st = *state;
	const char		*key = RECORD_KEY("team-a", "tok-1");
	long long		 created_ms;
	int64_t			 epoch = 0;

	assert_int_equal(claim(st, &key_a, &epoch), IDEM_FRESH);
	assert_int_equal(epoch, 1);

	assert_field(st, key, "state", "in_flight");
	assert_field(st, key, "epoch", "1");
	assert_field(st, key, "owner", "node-a");
	assert_field(st, key, "fp", FP_A);
	assert_field(st, key, "utoken", UPSTREAM_TOKEN);

	/* Times are Redis's clock in ms, the lease measured from the claim. */
	created_ms = hget_integer(st, key, "created_at");
	assert_true(llabs(created_ms - (long long)util_now_ms()) < WAIT_MS);
	assert_int_equal(hget_integer(st, key, "updated_at"), created_ms);
	assert_int_equal(hget_integer(st, key, "lease_until"),
	    created_ms + LEASE_MS);
}

static void
second_claim_is_in_flight_with_lease_left(void **state)
{
	struct test_state	*st = *state;
	struct claim_box	 box;

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
	assert_int_equal(claim_by(st, st->idem, &key_a, &box), IDEM_IN_FLIGHT);
	assert_true(box.claim.lease_left_ms > LEASE_MS - WAIT_MS);
	assert_true(box.claim.lease_left_ms <= LEASE_MS);
	assert_false(box.claim.is_stale);
	assert_null(box.body);
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "epoch", "1");
}

/*
 * Claims node-a while an announcement of announced_key is already on its
 * way to node-a's subscriber, so it arrives before the claim's reply.
 */
static enum idem_outcome
claim_overtaken_by(struct test_state *st, const char *announced_key,
    struct claim_box *box)
{
	memset(box, 0, sizeof(*box));
	idem_claim(st->idem, &key_a, on_claim, box);
	assert_int_equal(redis_fixture_integer(st->rf, "PUBLISH %s %s",
	    CHANNEL, announced_key), 1);
	wait_called(st, &box->calls);
	free(box->body);
	return box->claim.outcome;
}

/*
 * The announcement comes on the subscriber connection and may overtake
 * the reply of a claim Redis ran before it: that "in flight" is stale,
 * and a caller waiting on it would wait for an announcement already gone.
 */
static void
in_flight_claim_overtaken_by_its_announcement_is_stale(void **state)
{
	struct test_state	*st = *state;
	struct claim_box	 box;

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);

	assert_int_equal(claim_overtaken_by(st, RECORD_KEY("team-a", "tok-2"),
	    &box), IDEM_IN_FLIGHT);
	assert_false(box.claim.is_stale);

	assert_int_equal(claim_overtaken_by(st, RECORD_KEY("team-a", "tok-1"),
	    &box), IDEM_IN_FLIGHT);
	assert_true(box.claim.is_stale);

	/* Only the claim that was out when it came. */
	assert_int_equal(claim_by(st, st->idem, &key_a, &box), IDEM_IN_FLIGHT);
	assert_false(box.claim.is_stale);
}

static void
claim_with_other_fingerprint_is_mismatch(void **state)
{
	struct test_state	*st = *state;
	struct idem_key		 other = key_with_fingerprint(FP_B);

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);

	/* While the first request is in flight. */
	assert_int_equal(claim(st, &other, NULL), IDEM_MISMATCH);
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "fp", FP_A);
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "state", "in_flight");

	/* And once it has its result. */
	assert_true(complete_by(st, st->idem, &key_a, false, 200,
	    BODY_CREATED));
	assert_int_equal(claim(st, &other, NULL), IDEM_MISMATCH);
}

static void
complete_then_claim_is_replayed_with_status_and_body(void **state)
{
	struct test_state	*st = *state;
	struct claim_box	 box;

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
	assert_true(complete_by(st, st->idem, &key_a, false, 200,
	    BODY_CREATED));

	assert_int_equal(claim_by(st, st->idem, &key_a, &box), IDEM_REPLAYED);
	assert_int_equal(box.claim.status, 200);
	assert_int_equal(box.claim.body_len, strlen(BODY_CREATED));
	assert_string_equal(box.body, BODY_CREATED);
	free(box.body);
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "state", "completed");
}

static void
failed_final_is_replayed(void **state)
{
	struct test_state	*st = *state;
	struct claim_box	 box;

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
	assert_true(complete_by(st, st->idem, &key_a, true, 400,
	    BODY_REJECTED));
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "state",
	    "failed_final");

	assert_int_equal(claim_by(st, st->idem, &key_a, &box), IDEM_REPLAYED);
	assert_int_equal(box.claim.status, 400);
	assert_string_equal(box.body, BODY_REJECTED);
	free(box.body);
}

static void
claim_after_lease_expiry_is_takeover_with_epoch_2(void **state)
{
	struct test_state	*st = *state;
	struct claim_box	 box;
	int64_t			 claimed_ms, epoch = 0;
	int			 polls = 0;

	reopen_with_lease(st, SHORT_LEASE_MS);
	open_other_node(st);
	assert_int_equal(claim(st, &key_a, &epoch), IDEM_FRESH);
	claimed_ms = util_mono_ms();
	assert_int_equal(epoch, 1);

	/* Wait as long as Redis says the lease still runs, then claim. */
	while (claim_by(st, st->other, &key_a, &box) == IDEM_IN_FLIGHT) {
		assert_true(box.claim.lease_left_ms <= SHORT_LEASE_MS);
		assert_true(++polls < 10);
		run_for(st, box.claim.lease_left_ms + 1);
	}
	assert_true(polls >= 1);
	assert_int_equal(box.claim.outcome, IDEM_TAKEOVER);
	assert_int_equal(box.claim.epoch, 2);
	assert_true(util_mono_ms() - claimed_ms >=
	    SHORT_LEASE_MS - REPLY_SLACK_MS);

	assert_field(st, RECORD_KEY("team-a", "tok-1"), "epoch", "2");
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "owner", "node-b");
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "state", "in_flight");

	/* The new holder has a whole lease again. */
	assert_int_equal(claim_by(st, st->idem, &key_a, &box), IDEM_IN_FLIGHT);
	assert_true(box.claim.lease_left_ms > SHORT_LEASE_MS / 2);
}

static void
release_by_current_epoch_lets_next_claim_take_over_at_once(void **state)
{
	struct test_state	*st = *state;
	int64_t			 epoch = 0;

	assert_int_equal(claim(st, &key_a, &epoch), IDEM_FRESH);
	assert_true(release(st, &key_a, epoch));
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "lease_until", "0");
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "state", "in_flight");

	assert_int_equal(claim(st, &key_a, &epoch), IDEM_TAKEOVER);
	assert_int_equal(epoch, 2);
}

static void
release_by_stale_epoch_changes_nothing(void **state)
{
	struct test_state	*st = *state;
	const char		*key = RECORD_KEY("team-a", "tok-1");
	struct claim_box	 box;
	char			*before, *after;
	int64_t			 epoch = 0;

	assert_int_equal(claim(st, &key_a, &epoch), IDEM_FRESH);
	assert_true(release(st, &key_a, epoch));
	assert_int_equal(claim(st, &key_a, &epoch), IDEM_TAKEOVER);
	assert_int_equal(epoch, 2);

	/* The first attempt gives up late: epoch 2 keeps its lease. */
	before = snapshot(st, key);
	assert_true(release(st, &key_a, 1));
	after = snapshot(st, key);
	assert_string_equal(after, before);
	free(before);
	free(after);

	assert_int_equal(claim_by(st, st->idem, &key_a, &box), IDEM_IN_FLIGHT);
	assert_true(box.claim.lease_left_ms > LEASE_MS - WAIT_MS);
}

static void
complete_keeps_the_first_final_result(void **state)
{
	struct test_state	*st = *state;
	struct claim_box	 box;

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
	assert_true(complete_by(st, st->idem, &key_a, false, 201,
	    BODY_CREATED));
	/* Reached Redis, had nothing to do. */
	assert_true(complete_by(st, st->idem, &key_a, true, 500,
	    BODY_OTHER));

	assert_int_equal(claim_by(st, st->idem, &key_a, &box), IDEM_REPLAYED);
	assert_int_equal(box.claim.status, 201);
	assert_string_equal(box.body, BODY_CREATED);
	free(box.body);
	assert_field(st, RECORD_KEY("team-a", "tok-1"), "state", "completed");
}

static void
complete_recreates_a_record_lost_with_flushall(void **state)
{
	struct test_state	*st = *state;
	const char		*key = RECORD_KEY("team-a", "tok-1");
	struct claim_box	 box;
	redisReply		*reply;
	char			*created;

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
	reply = redis_fixture_command(st->rf, "FLUSHALL");
	assert_non_null(reply);
	freeReplyObject(reply);
	assert_int_equal(redis_fixture_integer(st->rf, "EXISTS %s", key), 0);

	assert_true(complete_by(st, st->idem, &key_a, false, 201,
	    BODY_CREATED));
	assert_field(st, key, "state", "completed");
	assert_field(st, key, "fp", FP_A);
	assert_field(st, key, "utoken", UPSTREAM_TOKEN);
	assert_field(st, key, "owner", "node-a");
	assert_field(st, key, "epoch", "1");
	created = hget(st, key, "created_at");
	assert_non_null(created);
	free(created);
	assert_true(redis_fixture_integer(st->rf, "PTTL %s", key) > 0);

	assert_int_equal(claim_by(st, st->idem, &key_a, &box), IDEM_REPLAYED);
	assert_int_equal(box.claim.status, 201);
	assert_string_equal(box.body, BODY_CREATED);
	free(box.body);
}

static void
assert_ttl_is_whole(struct test_state *st, const char *key)
{
	long long	pttl = redis_fixture_integer(st->rf, "PTTL %s", key);

	assert_true(pttl <= (long long)TTL_S * 1000);
	assert_true(pttl > (long long)TTL_S * 1000 - WAIT_MS);
}

static void
record_expires_after_ttl(void **state)
{
	struct test_state	*st = *state;
	const char		*key = RECORD_KEY("team-a", "tok-1");

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
	assert_ttl_is_whole(st, key);

	/* The result is kept for the whole TTL from when it was stored. */
	assert_int_equal(redis_fixture_integer(st->rf, "PEXPIRE %s %d", key,
	    TTL_S * 1000 / 2), 1);
	assert_true(complete_by(st, st->idem, &key_a, false, 201,
	    BODY_CREATED));
	assert_ttl_is_whole(st, key);
}

/*
 * A time the lookup shows: the record's field (ms since the epoch) as
 * "YYYY-MM-DDTHH:MM:SS.mmmZ".
 */
static void
assert_shown_time(struct test_state *st, const json_t *record,
    const char *name)
{
	const char	*key = RECORD_KEY("team-a", "tok-1");
	const char	*shown;
	long long	 ms = hget_integer(st, key, name);
	time_t		 secs = (time_t)(ms / 1000);
	struct tm	 tm;
	char		 date[32], want[40];

	assert_true(ms > 0);
	assert_non_null(gmtime_r(&secs, &tm));
	assert_int_not_equal(strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S",
	    &tm), 0);
	assert_true((size_t)snprintf(want, sizeof(want), "%s.%03dZ", date,
	    (int)(ms % 1000)) < sizeof(want));
	shown = json_string_value(json_object_get(record, name));
	assert_non_null(shown);
	assert_string_equal(shown, want);
}

static void
assert_no_internals(const json_t *record)
{
	char	*text = json_dumps(record, JSON_COMPACT);

	assert_non_null(text);
	assert_null(strstr(text, FP_A));
	assert_null(strstr(text, "node-a"));
	assert_null(strstr(text, UPSTREAM_TOKEN));
	assert_null(strstr(text, "lease"));
	assert_null(strstr(text, "epoch"));
	free(text);
}

static void
lookup_returns_client_view_without_fingerprint_or_owner(void **state)
{
	struct test_state	*st = *state;
	json_t			*record, *result;
	bool			 is_available = false;

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
	record = lookup(st, "team-a", "tok-1", &is_available);
	assert_true(is_available);
	assert_non_null(record);
	assert_int_equal(json_object_size(record), 5);
	assert_string_equal(json_string_value(json_object_get(record,
	    "client_token")), "tok-1");
	assert_string_equal(json_string_value(json_object_get(record,
	    "state")), "in_flight");
	assert_shown_time(st, record, "created_at");
	assert_shown_time(st, record, "updated_at");
	assert_true(json_is_null(json_object_get(record, "result")));
	assert_no_internals(record);
	json_decref(record);

	assert_true(complete_by(st, st->idem, &key_a, false, 201,
	    BODY_CREATED));
	record = lookup(st, "team-a", "tok-1", &is_available);
	assert_non_null(record);
	assert_int_equal(json_object_size(record), 5);
	assert_string_equal(json_string_value(json_object_get(record,
	    "state")), "completed");
	assert_shown_time(st, record, "updated_at");
	result = json_object_get(record, "result");
	assert_true(json_is_object(result));
	assert_int_equal(json_integer_value(json_object_get(result,
	    "status")), 201);
	/* The stored body is JSON, so it comes back as an object. */
	assert_string_equal(json_string_value(json_object_get(
	    json_object_get(result, "body"), "InstanceId")), "cri-test-1");
	assert_no_internals(record);
	json_decref(record);
}

static void
lookup_of_unknown_token_is_null(void **state)
{
	struct test_state	*st = *state;
	json_t			*record;
	bool			 is_available = false;

	record = lookup(st, "team-a", "never-used", &is_available);
	assert_true(is_available);
	assert_null(record);
}

static void
wait_wakes_on_complete_announcement(void **state)
{
	struct test_state	*st = *state;
	struct idem_key		 unrelated = key_a;
	struct wake_box		 woken = { 0 }, bystander = { 0 };
	struct idem_wait	*wait, *bystander_wait;
	int64_t			 waited_ms;

	open_other_node(st);
	unrelated.client_token = "tok-2";
	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);

	waited_ms = util_mono_ms();
	wait = idem_wait(st->idem, &key_a, LONG_WAIT_MS, on_wake, &woken);
	bystander_wait = idem_wait(st->idem, &unrelated, LONG_WAIT_MS, on_wake,
	    &bystander);
	assert_non_null(wait);
	assert_int_equal(woken.calls, 0);

	/* Node b stores the result; node a hears of it through Redis. */
	assert_true(complete_by(st, st->other, &key_a, false, 201,
	    BODY_CREATED));
	wait_called(st, &woken.calls);
	assert_true(woken.woken_ms - waited_ms < WAKE_WITHIN_MS);
	assert_int_equal(bystander.calls, 0);
	idem_wait_cancel(bystander_wait);
}

static void
wait_wakes_on_release_announcement(void **state)
{
	struct test_state	*st = *state;
	struct wake_box		 woken = { 0 };
	int64_t			 epoch = 0, waited_ms;

	open_other_node(st);
	assert_int_equal(claim(st, &key_a, &epoch), IDEM_FRESH);

	waited_ms = util_mono_ms();
	(void)idem_wait(st->other, &key_a, LONG_WAIT_MS, on_wake, &woken);
	assert_true(release(st, &key_a, epoch));
	wait_called(st, &woken.calls);
	assert_true(woken.woken_ms - waited_ms < WAKE_WITHIN_MS);
}

/*
 * A caller that waits again from its wake callback, as the header allows.
 * The cap stops a waker that keeps re-arming from spinning the test
 * forever if the same announcement is delivered to its own new wait.
 */
#define REWAIT_CAP		100

struct rewait {
	struct test_state	*st;
	int			 calls;
	struct idem_wait	*wait;		/* the one still pending */
};

static void
on_wake_then_wait_again(void *arg)
{
	struct rewait	*rw = arg;

	rw->calls++;
	rw->wait = NULL;
	if (rw->calls < REWAIT_CAP)
		rw->wait = idem_wait(rw->st->idem, &key_a, LONG_WAIT_MS,
		    on_wake_then_wait_again, rw);
}

static void
wait_from_a_wake_callback_waits_for_the_next_announcement(void **state)
{
	struct test_state	*st = *state;
	struct rewait		 rw = { st, 0, NULL };
	int64_t			 epoch = 0;

	assert_int_equal(claim(st, &key_a, &epoch), IDEM_FRESH);
	rw.wait = idem_wait(st->idem, &key_a, LONG_WAIT_MS,
	    on_wake_then_wait_again, &rw);
	assert_true(release(st, &key_a, epoch));
	assert_int_equal(redis_fixture_run_until(st->base, is_called,
	    &rw.calls, WAIT_MS), 0);

	/* One announcement, one wake; the new wait is for the next one. */
	assert_int_equal(rw.calls, 1);
	assert_non_null(rw.wait);
	idem_wait_cancel(rw.wait);
}

static void
wait_times_out_without_announcement(void **state)
{
	struct test_state	*st = *state;
	struct wake_box		 woken = { 0 };
	int64_t			 waited_ms;

	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
	waited_ms = util_mono_ms();
	(void)idem_wait(st->idem, &key_a, SHORT_WAIT_MS, on_wake, &woken);
	wait_called(st, &woken.calls);
	assert_true(woken.woken_ms - waited_ms >=
	    SHORT_WAIT_MS - CLOCK_SLACK_MS);
	assert_true(woken.woken_ms - waited_ms <
	    SHORT_WAIT_MS + SHORT_WAIT_SLACK_MS);
}

static void
claim_is_unavailable_when_redis_is_down(void **state)
{
	struct test_state	*st = *state;
	json_t			*record;
	bool			 is_available = true;

	assert_int_equal(redis_fixture_stop(st->rf), 0);
	assert_int_equal(redis_fixture_run_until(st->base, is_not_ready,
	    st->idem, WAIT_MS), 0);

	assert_int_equal(claim(st, &key_a, NULL), IDEM_UNAVAILABLE);
	assert_false(complete_by(st, st->idem, &key_a, false, 201,
	    BODY_CREATED));
	assert_false(release(st, &key_a, 1));
	record = lookup(st, "team-a", "tok-1", &is_available);
	assert_false(is_available);
	assert_null(record);
}

struct key_gone {
	struct redis_fixture	*rf;
	const char		*key;
};

static bool
is_key_gone(void *arg)
{
	const struct key_gone	*w = arg;

	return redis_fixture_integer(w->rf, "EXISTS %s", w->key) == 0;
}

static void
claim_lost_to_a_long_stall_is_undone_once_redis_answers(void **state)
{
	struct test_state	*st = *state;
	struct key_gone		 gone = { st->rf, RECORD_KEY("team-a", "tok-1") };

	/*
	 * Redis takes the claim but answers nothing for longer than the
	 * first undo's wait and budget together: the undo must be tried
	 * again, not given up, or the token stays held for its lease.
	 */
	assert_int_equal(redis_fixture_pause(st->rf), 0);
	assert_int_equal(claim(st, &key_a, NULL), IDEM_UNAVAILABLE);
	run_for(st, 2500);
	assert_int_equal(redis_fixture_resume(st->rf), 0);

	assert_int_equal(redis_fixture_run_until(st->base, is_key_gone, &gone,
	    WAIT_MS), 0);
	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
}

static void
undo_that_finds_no_record_tries_again_for_a_claim_run_late(void **state)
{
	struct test_state	*st = *state;
	struct idem_key		 key = key_a;
	struct key_gone		 gone = { st->rf, RECORD_KEY("team-a", "tok-1") };

	/* The claim's reply is lost: an undo is due a second later. */
	key.attempt = "attempt-late";
	assert_int_equal(redis_fixture_stop(st->rf), 0);
	assert_int_equal(redis_fixture_run_until(st->base, is_not_ready,
	    st->idem, WAIT_MS), 0);
	assert_int_equal(claim(st, &key, NULL), IDEM_UNAVAILABLE);
	assert_int_equal(redis_fixture_restart(st->rf), 0);

	/*
	 * The first undo has found nothing. Now the claim runs, as it does
	 * when Redis reads a dropped connection's bytes after the newer
	 * connection's undo; a later try must still undo it.
	 */
	run_for(st, 1500);
	assert_int_equal(redis_fixture_integer(st->rf,
	    "HSET %s state in_flight attempt attempt-late epoch 1", gone.key),
	    3);
	assert_int_equal(redis_fixture_run_until(st->base, is_key_gone, &gone,
	    WAIT_MS), 0);
}

static void
keys_of_two_tenants_do_not_collide(void **state)
{
	struct test_state	*st = *state;
	struct idem_key		 key_b = key_with_fingerprint(FP_B);
	json_t			*record;
	bool			 is_available;

	key_b.tenant = "team-b";
	assert_int_equal(claim(st, &key_a, NULL), IDEM_FRESH);
	/* Same client token, other tenant and request: not a mismatch. */
	assert_int_equal(claim(st, &key_b, NULL), IDEM_FRESH);
	assert_true(complete_by(st, st->idem, &key_a, false, 201,
	    BODY_CREATED));
	assert_int_equal(claim(st, &key_b, NULL), IDEM_IN_FLIGHT);

	assert_field(st, RECORD_KEY("team-a", "tok-1"), "fp", FP_A);
	assert_field(st, RECORD_KEY("team-b", "tok-1"), "fp", FP_B);
	record = lookup(st, "team-b", "tok-1", &is_available);
	assert_non_null(record);
	assert_string_equal(json_string_value(json_object_get(record,
	    "state")), "in_flight");
	json_decref(record);
}

#define CASE(name)	cmocka_unit_test_setup_teardown(name, setup, teardown)

static const struct CMUnitTest tests[] = {
	CASE(fresh_token_is_claimed_with_epoch_1),
	CASE(second_claim_is_in_flight_with_lease_left),
	CASE(in_flight_claim_overtaken_by_its_announcement_is_stale),
	CASE(claim_with_other_fingerprint_is_mismatch),
	CASE(complete_then_claim_is_replayed_with_status_and_body),
	CASE(failed_final_is_replayed),
	CASE(claim_after_lease_expiry_is_takeover_with_epoch_2),
	CASE(release_by_current_epoch_lets_next_claim_take_over_at_once),
	CASE(release_by_stale_epoch_changes_nothing),
	CASE(complete_keeps_the_first_final_result),
	CASE(complete_recreates_a_record_lost_with_flushall),
	CASE(record_expires_after_ttl),
	CASE(lookup_returns_client_view_without_fingerprint_or_owner),
	CASE(lookup_of_unknown_token_is_null),
	CASE(wait_wakes_on_complete_announcement),
	CASE(wait_wakes_on_release_announcement),
	CASE(wait_from_a_wake_callback_waits_for_the_next_announcement),
	CASE(wait_times_out_without_announcement),
	CASE(claim_is_unavailable_when_redis_is_down),
	CASE(claim_lost_to_a_long_stall_is_undone_once_redis_answers),
	CASE(undo_that_finds_no_record_tries_again_for_a_claim_run_late),
	CASE(keys_of_two_tenants_do_not_collide),
};

int
main(void)
{
	/* A write to a socket Redis closed must fail, not kill the test. */
	(void)signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
