/*
 * One Redis connection owned by one worker thread: hiredis's async API on
 * the worker's libevent loop, with what hiredis 0.14 lacks added here:
 * a connect timeout, a per-command time budget, and reconnection with
 * backoff.
 *
 * Every command gets exactly one callback, always from the event loop and
 * never from inside redis_command. A command sent while the connection is
 * down starts a reconnect at once and waits for it within its budget. The reply is NULL when the connection is
 * down, the command failed to send, or the budget ran out; a NULL reply
 * means "Redis did not answer", so callers fail closed.
 */
#ifndef ACRGW_REDIS_H
#define ACRGW_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

struct event_base;
struct redis;

/*
 * reply is borrowed: valid only during the callback, so copy what you
 * keep. arg is the caller's and must stay valid until the callback runs.
 */
typedef void redis_reply_cb(redisReply *reply, void *arg);

/*
 * For subscribers: called once per message published on the channel, with
 * the message's payload (borrowed, valid during the call).
 */
typedef void redis_message_cb(const char *payload, size_t len, void *arg);

struct redis_options {
	const char	*host;
	int		 port;
	int		 connect_timeout_ms;
	int		 command_timeout_ms;
};

/* Starts connecting at once. New; free with redis_free. */
struct redis	*redis_new(struct event_base *base,
		    const struct redis_options *opts);

/*
 * A connection that only listens: it subscribes to channel on every
 * (re)connect and calls on_message for each message. Messages published
 * while it was disconnected are lost, so callers pair it with a timer.
 */
struct redis	*redis_new_subscriber(struct event_base *base,
		    const struct redis_options *opts, const char *channel,
		    redis_message_cb *on_message, void *arg);

/*
 * Closes the connection; pending commands get their NULL-reply callback
 * first. NULL is a no-op. Not from inside one of r's own callbacks:
 * hiredis is still using the connection there.
 */
void		 redis_free(struct redis *r);

bool		 redis_is_connected(const struct redis *r);

/*
 * Sends one command given as argc binary-safe arguments. cb runs exactly
 * once, later, on this loop.
 */
void		 redis_command(struct redis *r, redis_reply_cb *cb, void *arg,
		    int argc, const char **argv, const size_t *argvlen);

#endif
