/*
 * A throwaway redis-server for the unit tests of the Redis-facing modules,
 * and a way to drive a libevent loop until something has happened.
 *
 * The server listens on 127.0.0.1 on a random port below the kernel's
 * ephemeral range, keeps nothing on disk, and lives in its own temp dir
 * that redis_fixture_free removes. Nothing here sleeps for a fixed time:
 * readiness and exit are polled against a deadline.
 */
#ifndef ACRGW_TEST_REDIS_FIXTURE_H
#define ACRGW_TEST_REDIS_FIXTURE_H

#include <stdbool.h>

#include <hiredis/hiredis.h>

struct event_base;
struct redis_fixture;

/*
 * Starts redis-server and returns once it answers PING. Tries other ports
 * when one is taken. New; free with redis_fixture_free. NULL when no
 * server could be started.
 */
struct redis_fixture	*redis_fixture_start(void);

/* Stops the server if it runs and removes its temp dir. NULL is a no-op. */
void			 redis_fixture_free(struct redis_fixture *rf);

int			 redis_fixture_port(const struct redis_fixture *rf);

/* SIGTERM and reap (SIGKILL past a deadline). 0, or -1 if not running. */
int			 redis_fixture_stop(struct redis_fixture *rf);

/*
 * Starts a stopped server again on the same port, with no data. 0 once it
 * answers PING, -1 if it did not.
 */
int			 redis_fixture_restart(struct redis_fixture *rf);

/*
 * SIGSTOP: the kernel still accepts connections and buffers commands, but
 * nothing answers, which is how a hung Redis looks to a client. Both
 * return once the process has changed state; 0 or -1.
 */
int			 redis_fixture_pause(struct redis_fixture *rf);
int			 redis_fixture_resume(struct redis_fixture *rf);

/*
 * Runs one command through hiredis's blocking API on a fresh connection,
 * with fmt as for redisCommand. New reply, free with freeReplyObject; NULL
 * when the server did not answer within a second.
 */
redisReply		*redis_fixture_command(struct redis_fixture *rf,
			    const char *fmt, ...);

/*
 * The same for a command whose reply is an integer: its value, or -1 when
 * there was no integer reply.
 */
long long		 redis_fixture_integer(struct redis_fixture *rf,
			    const char *fmt, ...);

/* Whether the wait is over; polled after every loop turn. */
typedef bool		 redis_fixture_done_fn(void *arg);

/*
 * Runs base until is_done(arg) holds, at most timeout_ms. A 5 ms tick
 * keeps the loop turning, so is_done may also look at state outside the
 * loop (the server's). 0 when done, -1 when time ran out.
 */
int			 redis_fixture_run_until(struct event_base *base,
			    redis_fixture_done_fn *is_done, void *arg,
			    int timeout_ms);

/* Runs base for ms, so that the timers and replies due in it happen. */
void			 redis_fixture_run_for(struct event_base *base,
			    int ms);

#endif
