/*
 * redis.c through its header, on a real libevent loop against a real
 * redis-server that each case starts, stops, hangs and restarts.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "redis.h"
#include "redis_fixture.h"
#include "util.h"

/* Generous for a sanitized build on a shared machine, still bounded. */
#define WAIT_MS			5000
#define CONNECT_TIMEOUT_MS	1000
#define BUDGET_MS		1000
#define HUNG_BUDGET_MS		300
/* How late past its budget a command may be answered. */
#define BUDGET_SLACK_MS		250
/*
 * libevent 2.1 times events with CLOCK_MONOTONIC_COARSE (a 4 ms tick
 * here), so a timer may fire that much before our own clock says it is due.
 */
#define CLOCK_SLACK_MS		10
#define CHANNEL			"acrgw-test:announce"
#define MAX_ARGS		5

struct test_state {
	struct redis_fixture	*rf;
	struct event_base	*base;
	struct redis		*r;
};

/* What one command's callback saw, copied out of the borrowed reply. */
struct reply_box {
	int		 calls;
	bool		 is_null;
	bool		 was_inside_command;
	int		 type;
	char		 text[64];
	size_t		 len;
	long long	 integer;
	int64_t		 answered_ms;
};

struct message_box {
	int		 count;
	char		 payload[64];
	size_t		 len;
};

/*
 * Set while redis_command runs, so a callback can tell whether it was
 * called from inside it, which the header forbids.
 */
static bool	is_inside_command;

static void
on_reply(redisReply *reply, void *arg)
{
	struct reply_box	*box = arg;

	box->calls++;
	box->was_inside_command = is_inside_command;
	box->answered_ms = util_mono_ms();
	box->is_null = reply == NULL;
	if (reply == NULL)
		return;
	box->type = reply->type;
	box->integer = reply->integer;
	if (reply->type == REDIS_REPLY_STRING ||
	    reply->type == REDIS_REPLY_STATUS) {
		box->len = reply->len < sizeof(box->text) ? reply->len :
		    sizeof(box->text) - 1;
		memcpy(box->text, reply->str, box->len);
		box->text[box->len] = '\0';
	}
}

static void
on_message(const char *payload, size_t len, void *arg)
{
	struct message_box	*box = arg;

	box->count++;
	box->len = len < sizeof(box->payload) ? len : sizeof(box->payload);
	memcpy(box->payload, payload, box->len);
}

/* Sends a command given as NUL-terminated words ended by NULL. */
static void
send_words(struct redis *r, struct reply_box *box, ...)
{
	const char	*argv[MAX_ARGS];
	size_t		 lens[MAX_ARGS];
	const char	*word;
	int		 argc = 0;
	va_list		 ap;

	va_start(ap, box);
	while ((word = va_arg(ap, const char *)) != NULL) {
		assert_true(argc < MAX_ARGS);
		argv[argc] = word;
		lens[argc] = strlen(word);
		argc++;
	}
	va_end(ap);

	is_inside_command = true;
	redis_command(r, on_reply, box, argc, argv, lens);
	is_inside_command = false;
}

static bool
is_answered(void *arg)
{
	const struct reply_box	*box = arg;

	return box->calls > 0;
}

static bool
is_connected(void *arg)
{
	return redis_is_connected(arg);
}

static bool
is_disconnected(void *arg)
{
	return !redis_is_connected(arg);
}

static void
wait_answered(struct test_state *st, struct reply_box *box)
{
	assert_int_equal(redis_fixture_run_until(st->base, is_answered, box,
	    WAIT_MS), 0);
}

static void
wait_connected(struct test_state *st, struct redis *r)
{
	assert_int_equal(redis_fixture_run_until(st->base, is_connected, r,
	    WAIT_MS), 0);
}

static void
wait_disconnected(struct test_state *st, struct redis *r)
{
	assert_int_equal(redis_fixture_run_until(st->base, is_disconnected, r,
	    WAIT_MS), 0);
}

static struct redis_options
options(const struct test_state *st, int budget_ms)
{
	struct redis_options	opts = {
		.host = "127.0.0.1",
		.port = redis_fixture_port(st->rf),
		.connect_timeout_ms = CONNECT_TIMEOUT_MS,
		.command_timeout_ms = budget_ms,
	};

	return opts;
}

static void
open_redis(struct test_state *st, int budget_ms)
{
	struct redis_options	opts = options(st, budget_ms);

	st->r = redis_new(st->base, &opts);
	assert_non_null(st->r);
	wait_connected(st, st->r);
}

static void
expect_pong(struct test_state *st)
{
	struct reply_box	box = { 0 };

	send_words(st->r, &box, "PING", NULL);
	wait_answered(st, &box);
	assert_int_equal(box.calls, 1);
	assert_false(box.is_null);
	assert_int_equal(box.type, REDIS_REPLY_STATUS);
	assert_string_equal(box.text, "PONG");
}

struct subscriber_wait {
	struct redis_fixture	*rf;
	const char		*channel;
};

static bool
is_subscribed(void *arg)
{
	struct subscriber_wait	*w = arg;
	redisReply		*reply;
	bool			 is_one;

	reply = redis_fixture_command(w->rf, "PUBSUB NUMSUB %s", w->channel);
	is_one = reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
	    reply->elements == 2 &&
	    reply->element[1]->type == REDIS_REPLY_INTEGER &&
	    reply->element[1]->integer == 1;
	freeReplyObject(reply);
	return is_one;
}

struct message_wait {
	const struct message_box	*box;
	int				 want;
};

static bool
has_messages(void *arg)
{
	const struct message_wait	*w = arg;

	return w->box->count >= w->want;
}

static int
setup(void **state)
{
	struct test_state	*st;

	st = xcalloc(1, sizeof(*st));
	st->rf = redis_fixture_start();
	st->base = event_base_new();
	*state = st;
	if (st->rf == NULL || st->base == NULL)
		return -1;
	return 0;
}

static int
teardown(void **state)
{
	struct test_state	*st = *state;

	redis_free(st->r);
	if (st->base != NULL)
		event_base_free(st->base);
	redis_fixture_free(st->rf);
	free(st);
	return 0;
}

static void
command_gets_reply_when_connected(void **state)
{
	struct test_state	*st = *state;
	struct reply_box	 set = { 0 }, get = { 0 };
	const char		*argv[3] = { "SET", "acrgw-test:k", "va\0lue" };
	const size_t		 lens[3] = { 3, 12, 6 };

	open_redis(st, BUDGET_MS);

	/* Binary-safe: the NUL inside the value goes over whole. */
	is_inside_command = true;
	redis_command(st->r, on_reply, &set, 3, argv, lens);
	is_inside_command = false;
	wait_answered(st, &set);
	assert_int_equal(set.calls, 1);
	assert_false(set.was_inside_command);
	assert_false(set.is_null);
	assert_int_equal(set.type, REDIS_REPLY_STATUS);
	assert_string_equal(set.text, "OK");
	assert_int_equal(redis_fixture_integer(st->rf, "STRLEN %s",
	    "acrgw-test:k"), 6);

	send_words(st->r, &get, "GET", "acrgw-test:k", NULL);
	wait_answered(st, &get);
	assert_int_equal(get.calls, 1);
	assert_int_equal(get.type, REDIS_REPLY_STRING);
	assert_int_equal(get.len, 6);
	assert_memory_equal(get.text, "va\0lue", 6);
}

static void
command_gets_null_when_redis_is_down(void **state)
{
	struct test_state	*st = *state;
	struct reply_box	 early = { 0 }, late = { 0 }, after = { 0 };

	open_redis(st, BUDGET_MS);
	assert_int_equal(redis_fixture_stop(st->rf), 0);

	/* The client has not noticed yet: the command meets a dead socket. */
	send_words(st->r, &early, "PING", NULL);
	assert_int_equal(early.calls, 0);
	wait_answered(st, &early);
	assert_int_equal(early.calls, 1);
	assert_true(early.is_null);
	assert_false(early.was_inside_command);

	/* Known to be down: failed on a later loop turn, not in the call. */
	wait_disconnected(st, st->r);
	send_words(st->r, &late, "PING", NULL);
	assert_int_equal(late.calls, 0);
	wait_answered(st, &late);
	assert_int_equal(late.calls, 1);
	assert_true(late.is_null);
	assert_false(late.was_inside_command);

	/* Neither is answered a second time later on. */
	send_words(st->r, &after, "PING", NULL);
	wait_answered(st, &after);
	assert_int_equal(early.calls, 1);
	assert_int_equal(late.calls, 1);
}

static void
command_gets_null_within_budget_when_redis_is_hung(void **state)
{
	struct test_state	*st = *state;
	struct reply_box	 first = { 0 }, second = { 0 };
	int64_t			 sent_ms;

	open_redis(st, HUNG_BUDGET_MS);
	assert_int_equal(redis_fixture_pause(st->rf), 0);

	sent_ms = util_mono_ms();
	send_words(st->r, &first, "GET", "acrgw-test:a", NULL);
	send_words(st->r, &second, "GET", "acrgw-test:b", NULL);
	wait_answered(st, &first);
	wait_answered(st, &second);

	assert_true(first.is_null);
	assert_true(second.is_null);
	assert_int_equal(first.calls, 1);
	assert_int_equal(second.calls, 1);
	assert_true(first.answered_ms - sent_ms >=
	    HUNG_BUDGET_MS - CLOCK_SLACK_MS);
	assert_true(first.answered_ms - sent_ms <
	    HUNG_BUDGET_MS + BUDGET_SLACK_MS);
	assert_true(second.answered_ms - sent_ms <
	    HUNG_BUDGET_MS + BUDGET_SLACK_MS);

	/* Once Redis runs again the connection comes back by itself. */
	assert_int_equal(redis_fixture_resume(st->rf), 0);
	wait_connected(st, st->r);
	expect_pong(st);
}

/*
 * A Lua script that keeps Redis busy for SPIN_MS: a slow moment, not a
 * hang. Redis answers nothing else meanwhile.
 */
#define SPIN_MS			500
#define SLOW_BUDGET_MS		400
#define SPIN_SCRIPT \
	"local t = redis.call('TIME') " \
	"local start = t[1] * 1000000 + t[2] " \
	"repeat t = redis.call('TIME') " \
	"until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) * 1000 " \
	"return 1"

static void
run_for(struct test_state *st, int ms)
{
	redis_fixture_run_for(st->base, ms);
}

/* This connection's id as Redis numbers it: a new id is a reconnect. */
static long long
client_id(struct test_state *st)
{
	struct reply_box	box = { 0 };

	send_words(st->r, &box, "CLIENT", "ID", NULL);
	wait_answered(st, &box);
	assert_false(box.is_null);
	assert_int_equal(box.type, REDIS_REPLY_INTEGER);
	return box.integer;
}

static void
slow_command_fails_alone_and_keeps_the_connection(void **state)
{
	struct test_state	*st = *state;
	struct reply_box	 spin = { 0 }, behind = { 0 };
	char			 spin_ms[16];
	int64_t			 sent_ms;
	long long		 id;

	open_redis(st, SLOW_BUDGET_MS);
	id = client_id(st);
	(void)snprintf(spin_ms, sizeof(spin_ms), "%d", SPIN_MS);

	sent_ms = util_mono_ms();
	send_words(st->r, &spin, "EVAL", SPIN_SCRIPT, "0", spin_ms, NULL);
	/*
	 * Sent while the script runs and before its budget is out: its own
	 * budget outlasts the script, so it must get its real answer rather
	 * than fail with the script.
	 */
	run_for(st, SLOW_BUDGET_MS - 50);
	send_words(st->r, &behind, "PING", NULL);
	wait_answered(st, &spin);
	wait_answered(st, &behind);

	assert_true(spin.is_null);
	assert_true(spin.answered_ms - sent_ms >=
	    SLOW_BUDGET_MS - CLOCK_SLACK_MS);
	assert_false(behind.is_null);
	assert_string_equal(behind.text, "PONG");
	assert_true(behind.answered_ms - sent_ms >= SPIN_MS - CLOCK_SLACK_MS);

	/* The script's late reply was dropped, and no reconnect happened. */
	assert_int_equal(client_id(st), id);
	assert_int_equal(spin.calls, 1);
	assert_int_equal(behind.calls, 1);
}

static void
connection_silent_past_the_stall_limit_is_replaced(void **state)
{
	struct test_state	*st = *state;
	struct reply_box	 box = { 0 };
	long long		 id;

	open_redis(st, HUNG_BUDGET_MS);
	id = client_id(st);
	assert_int_equal(redis_fixture_pause(st->rf), 0);

	send_words(st->r, &box, "GET", "acrgw-test:a", NULL);
	wait_answered(st, &box);
	assert_true(box.is_null);
	/* Past the one-second stall limit the connection is given up. */
	run_for(st, 1200);

	assert_int_equal(redis_fixture_resume(st->rf), 0);
	wait_connected(st, st->r);
	assert_true(client_id(st) != id);
	assert_int_equal(box.calls, 1);
}

static void
reconnects_after_redis_restart(void **state)
{
	struct test_state	*st = *state;
	struct reply_box	 set = { 0 }, get = { 0 };

	open_redis(st, BUDGET_MS);
	send_words(st->r, &set, "SET", "acrgw-test:k", "before", NULL);
	wait_answered(st, &set);
	assert_string_equal(set.text, "OK");

	assert_int_equal(redis_fixture_stop(st->rf), 0);
	wait_disconnected(st, st->r);
	assert_int_equal(redis_fixture_restart(st->rf), 0);
	wait_connected(st, st->r);
	expect_pong(st);

	/* The key is gone: this is the new server, not a stale answer. */
	send_words(st->r, &get, "GET", "acrgw-test:k", NULL);
	wait_answered(st, &get);
	assert_false(get.is_null);
	assert_int_equal(get.type, REDIS_REPLY_NIL);
}

static void
publish_and_expect(struct test_state *st, struct message_box *box,
    const char *payload, size_t len)
{
	struct message_wait	w = { box, box->count + 1 };

	assert_int_equal(redis_fixture_integer(st->rf, "PUBLISH %s %b",
	    CHANNEL, payload, len), 1);
	assert_int_equal(redis_fixture_run_until(st->base, has_messages, &w,
	    WAIT_MS), 0);
	assert_int_equal(box->count, w.want);
	assert_int_equal(box->len, len);
	assert_memory_equal(box->payload, payload, len);
}

static void
subscriber_receives_published_messages_also_after_a_restart(void **state)
{
	struct test_state	*st = *state;
	struct redis_options	 opts = options(st, BUDGET_MS);
	struct message_box	 box = { 0 };
	struct subscriber_wait	 w = { st->rf, CHANNEL };

	st->r = redis_new_subscriber(st->base, &opts, CHANNEL, on_message,
	    &box);
	assert_int_equal(redis_fixture_run_until(st->base, is_subscribed, &w,
	    WAIT_MS), 0);
	publish_and_expect(st, &box, "first\0message", 13);

	assert_int_equal(redis_fixture_stop(st->rf), 0);
	wait_disconnected(st, st->r);
	assert_int_equal(redis_fixture_restart(st->rf), 0);
	assert_int_equal(redis_fixture_run_until(st->base, is_subscribed, &w,
	    WAIT_MS), 0);
	publish_and_expect(st, &box, "again", 5);
}

static void
free_with_pending_commands_calls_each_callback_once(void **state)
{
	struct test_state	*st = *state;
	struct redis_options	 opts;
	struct reply_box	 box[4] = { { 0 } };
	struct redis		*down;
	int			 i;

	/* Sent to a hung server, so all three are inside hiredis. */
	open_redis(st, WAIT_MS);
	assert_int_equal(redis_fixture_pause(st->rf), 0);
	for (i = 0; i < 3; i++)
		send_words(st->r, &box[i], "PING", NULL);
	(void)event_base_loop(st->base, EVLOOP_NONBLOCK);
	redis_free(st->r);
	st->r = NULL;
	for (i = 0; i < 3; i++) {
		assert_int_equal(box[i].calls, 1);
		assert_true(box[i].is_null);
	}

	/* Against a stopped server: the command waits for its timer. */
	assert_int_equal(redis_fixture_stop(st->rf), 0);
	opts = options(st, WAIT_MS);
	down = redis_new(st->base, &opts);
	send_words(down, &box[3], "PING", NULL);
	redis_free(down);
	assert_int_equal(box[3].calls, 1);
	assert_true(box[3].is_null);

	/* Nothing of either connection is left on the loop to fire later. */
	assert_int_equal(event_base_get_num_events(st->base,
	    EVENT_BASE_COUNT_ADDED), 0);
	(void)event_base_loop(st->base, EVLOOP_NONBLOCK);
	for (i = 0; i < 4; i++)
		assert_int_equal(box[i].calls, 1);
}

int
main(void)
{
	const struct CMUnitTest	tests[] = {
		cmocka_unit_test_setup_teardown(
		    command_gets_reply_when_connected, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    command_gets_null_when_redis_is_down, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    command_gets_null_within_budget_when_redis_is_hung, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    slow_command_fails_alone_and_keeps_the_connection, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    connection_silent_past_the_stall_limit_is_replaced, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    reconnects_after_redis_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    subscriber_receives_published_messages_also_after_a_restart,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    free_with_pending_commands_calls_each_callback_once, setup,
		    teardown),
	};

	/* A write to a socket Redis closed must fail, not kill the test. */
	(void)signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
