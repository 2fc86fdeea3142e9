/*
 * hiredis async on the worker's loop, with a connect timeout, a time
 * budget per command and reconnection, which hiredis 0.14 does not have.
 *
 * States: ac == NULL and the reconnect timer armed (down), ac != NULL and
 * !is_connected (connecting: commands queue inside hiredis, bounded by
 * their own budget), ac != NULL and is_connected (up).
 */
#include <sys/queue.h>
#include <string.h>
#include <stdlib.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "log.h"
#include "redis.h"
#include "util.h"

#define RECONNECT_MIN_MS	50
#define RECONNECT_MAX_MS	1000
/*
 * A command still unanswered this long (or its budget, if longer) means
 * Redis is hung or the link is dead rather than slow for a moment: the
 * connection is dropped and everything queued on it fails at once.
 */
#define STALL_MIN_MS		1000

struct redis_cmd {
	struct redis		*r;
	redis_reply_cb		*cb;
	void			*arg;
	struct event		 timer;
	int64_t			 sent_ms;	/* monotonic */
	/* The caller has had its one callback (reply or budget spent). */
	bool			 is_answered;
	/* hiredis holds this command and will call on_reply exactly once. */
	bool			 is_in_hiredis;
	TAILQ_ENTRY(redis_cmd)	 link;
};

struct redis {
	struct event_base	*base;
	char			*host;
	int			 port;
	int			 connect_timeout_ms;
	int			 command_timeout_ms;

	redisAsyncContext	*ac;
	bool			 is_connected;
	bool			 is_freeing;
	int			 backoff_ms;
	struct event		 connect_timer;
	struct event		 reconnect_timer;

	/* Subscriber only. */
	char			*channel;
	redis_message_cb	*on_message;
	void			*message_arg;

	TAILQ_HEAD(, redis_cmd)	 cmds;
};

static void	connect_start(struct redis *r);

static void
set_timer_ms(struct event *ev, int ms)
{
	struct timeval	tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

static void
schedule_reconnect(struct redis *r)
{
	if (r->is_freeing)
		return;
	set_timer_ms(&r->reconnect_timer, r->backoff_ms);
	r->backoff_ms *= 2;
	if (r->backoff_ms > RECONNECT_MAX_MS)
		r->backoff_ms = RECONNECT_MAX_MS;
}

/* Drops the connection now; hiredis answers its pending commands NULL. */
static void
drop_connection(struct redis *r)
{
	redisAsyncContext	*ac = r->ac;

	if (ac == NULL)
		return;
	r->ac = NULL;
	r->is_connected = false;
	evtimer_del(&r->connect_timer);
	redisAsyncFree(ac);
	schedule_reconnect(r);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
	struct redis	*r = ac->data;

	evtimer_del(&r->connect_timer);
	if (status != REDIS_OK) {
		/* hiredis frees ac once this returns. */
		log_pack(LOG_WARN, "redis", "redis_connect_failed",
		    "{s:s, s:i, s:s}", "host", r->host, "port", r->port,
		    "error", ac->errstr != NULL ? ac->errstr : "");
		r->ac = NULL;
		schedule_reconnect(r);
		return;
	}

	r->is_connected = true;
	r->backoff_ms = RECONNECT_MIN_MS;
	log_pack(LOG_INFO, "redis", "redis_connected", "{s:s, s:i, s:b}",
	    "host", r->host, "port", r->port, "subscriber",
	    r->channel != NULL);
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	struct redis	*r = ac->data;

	/* drop_connection cleared r->ac first: nothing left to do. */
	if (r->ac != ac)
		return;
	r->ac = NULL;
	r->is_connected = false;
	if (!r->is_freeing)
		log_pack(LOG_WARN, "redis", "redis_disconnected",
		    "{s:s, s:i, s:s}", "host", r->host, "port", r->port,
		    "error", status == REDIS_OK || ac->errstr == NULL ? "" :
		    ac->errstr);
	schedule_reconnect(r);
}

static void
on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct redis	*r = arg;

	(void)fd;
	(void)what;
	log_pack(LOG_WARN, "redis", "redis_connect_timeout", "{s:s, s:i}",
	    "host", r->host, "port", r->port);
	drop_connection(r);
}

static void
on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	connect_start(arg);
}

static void
on_subscription(redisAsyncContext *ac, void *reply_ptr, void *arg)
{
	struct redis	*r = arg;
	redisReply	*reply = reply_ptr;
	redisReply	*kind, *payload;

	(void)ac;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != 3)
		return;
	kind = reply->element[0];
	payload = reply->element[2];
	if (kind->type != REDIS_REPLY_STRING ||
	    strcmp(kind->str, "message") != 0 ||
	    payload->type != REDIS_REPLY_STRING)
		return;
	r->on_message(payload->str, payload->len, r->message_arg);
}

static void
connect_start(struct redis *r)
{
	redisAsyncContext	*ac;

	ac = redisAsyncConnect(r->host, r->port);
	if (ac == NULL || ac->err != 0) {
		log_pack(LOG_WARN, "redis", "redis_connect_failed",
		    "{s:s, s:i, s:s}", "host", r->host, "port", r->port,
		    "error", ac != NULL && ac->errstr != NULL ? ac->errstr :
		    "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		schedule_reconnect(r);
		return;
	}

	ac->data = r;
	if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
		redisAsyncFree(ac);
		schedule_reconnect(r);
		return;
	}
	(void)redisAsyncSetConnectCallback(ac, on_connect);
	(void)redisAsyncSetDisconnectCallback(ac, on_disconnect);
	r->ac = ac;
	r->is_connected = false;
	set_timer_ms(&r->connect_timer, r->connect_timeout_ms);

	/* Queued now, sent by hiredis as soon as the socket connects. */
	if (r->channel != NULL &&
	    redisAsyncCommand(ac, on_subscription, r, "SUBSCRIBE %s",
	    r->channel) != REDIS_OK)
		drop_connection(r);
}

static struct redis *
redis_alloc(struct event_base *base, const struct redis_options *opts)
{
	struct redis	*r;

	r = xcalloc(1, sizeof(*r));
	r->base = base;
	r->host = xstrdup(opts->host);
	r->port = opts->port;
	r->connect_timeout_ms = opts->connect_timeout_ms;
	r->command_timeout_ms = opts->command_timeout_ms;
	r->backoff_ms = RECONNECT_MIN_MS;
	TAILQ_INIT(&r->cmds);
	evtimer_assign(&r->connect_timer, base, on_connect_timeout, r);
	evtimer_assign(&r->reconnect_timer, base, on_reconnect_timer, r);
	return r;
}

struct redis *
redis_new(struct event_base *base, const struct redis_options *opts)
{
	struct redis	*r = redis_alloc(base, opts);

	connect_start(r);
	return r;
}

struct redis *
redis_new_subscriber(struct event_base *base,
    const struct redis_options *opts, const char *channel,
    redis_message_cb *on_message, void *arg)
{
	struct redis	*r = redis_alloc(base, opts);

	r->channel = xstrdup(channel);
	r->on_message = on_message;
	r->message_arg = arg;
	connect_start(r);
	return r;
}

static void
cmd_free(struct redis_cmd *cmd)
{
	evtimer_del(&cmd->timer);
	TAILQ_REMOVE(&cmd->r->cmds, cmd, link);
	free(cmd);
}

static void
cmd_answer(struct redis_cmd *cmd, redisReply *reply)
{
	if (cmd->is_answered)
		return;
	cmd->is_answered = true;
	evtimer_del(&cmd->timer);
	cmd->cb(reply, cmd->arg);
}

static void
on_reply(redisAsyncContext *ac, void *reply, void *arg)
{
	struct redis_cmd	*cmd = arg;

	(void)ac;
	cmd_answer(cmd, reply);
	cmd_free(cmd);
}

static int
stall_ms(const struct redis *r)
{
	return r->command_timeout_ms > STALL_MIN_MS ? r->command_timeout_ms :
	    STALL_MIN_MS;
}

/* The oldest command hiredis still holds has waited past the limit. */
static bool
is_stalled(const struct redis *r)
{
	const struct redis_cmd	*cmd;

	TAILQ_FOREACH(cmd, &r->cmds, link) {
		if (cmd->is_in_hiredis)
			return util_mono_ms() - cmd->sent_ms >= stall_ms(r);
	}
	return false;
}

/*
 * The budget ran out, or the command never reached hiredis. The caller
 * gets its NULL now and a late reply is dropped when it comes (on_reply),
 * so one slow moment fails only the commands it made late, not all those
 * queued behind them. The timer then waits for the stall limit: a
 * connection still silent by then is dropped, which fails the rest at
 * once, and reconnected.
 */
static void
on_cmd_timer(evutil_socket_t fd, short what, void *arg)
{
	struct redis_cmd	*cmd = arg;
	struct redis		*r = cmd->r;
	int64_t			 waited_ms;

	(void)fd;
	(void)what;
	if (!cmd->is_in_hiredis) {
		cmd_answer(cmd, NULL);
		cmd_free(cmd);
		return;
	}

	if (!cmd->is_answered) {
		log_pack(LOG_WARN, "redis", "redis_command_timeout",
		    "{s:s, s:i, s:i}", "host", r->host, "port", r->port,
		    "budget_ms", r->command_timeout_ms);
		cmd_answer(cmd, NULL);
	}
	if (is_stalled(r)) {
		log_pack(LOG_WARN, "redis", "redis_stalled", "{s:s, s:i, s:i}",
		    "host", r->host, "port", r->port, "stall_ms", stall_ms(r));
		/* hiredis calls on_reply for each command, which frees it. */
		drop_connection(r);
		return;
	}
	waited_ms = util_mono_ms() - cmd->sent_ms;
	set_timer_ms(&cmd->timer, waited_ms < stall_ms(r) ?
	    (int)(stall_ms(r) - waited_ms) : 0);
}

void
redis_command(struct redis *r, redis_reply_cb *cb, void *arg, int argc,
    const char **argv, const size_t *argvlen)
{
	struct redis_cmd	*cmd;

	cmd = xcalloc(1, sizeof(*cmd));
	cmd->r = r;
	cmd->cb = cb;
	cmd->arg = arg;
	evtimer_assign(&cmd->timer, r->base, on_cmd_timer, cmd);
	TAILQ_INSERT_TAIL(&r->cmds, cmd, link);

	/*
	 * Down and waiting out the backoff: a request is here, so try now
	 * rather than fail it because of a timer. A refused connect answers
	 * at once, so a Redis that is really gone still fails fast.
	 */
	if (r->ac == NULL && !r->is_freeing) {
		evtimer_del(&r->reconnect_timer);
		connect_start(r);
	}

	if (r->ac != NULL && redisAsyncCommandArgv(r->ac, on_reply, cmd, argc,
	    argv, argvlen) == REDIS_OK) {
		cmd->is_in_hiredis = true;
		cmd->sent_ms = util_mono_ms();
		set_timer_ms(&cmd->timer, r->command_timeout_ms);
		return;
	}

	/* Down: fail on the next loop turn, never from inside this call. */
	set_timer_ms(&cmd->timer, 0);
}

bool
redis_is_connected(const struct redis *r)
{
	return r->is_connected;
}

void
redis_free(struct redis *r)
{
	struct redis_cmd	*cmd;

	if (r == NULL)
		return;
	r->is_freeing = true;
	evtimer_del(&r->connect_timer);
	evtimer_del(&r->reconnect_timer);
	if (r->ac != NULL) {
		redisAsyncContext *ac = r->ac;

		r->ac = NULL;
		redisAsyncFree(ac);
	}
	while ((cmd = TAILQ_FIRST(&r->cmds)) != NULL) {
		cmd_answer(cmd, NULL);
		cmd_free(cmd);
	}
	free(r->channel);
	free(r->host);
	free(r);
}
