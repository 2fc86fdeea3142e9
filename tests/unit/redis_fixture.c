/*
 * A redis-server per test, started and stopped from C so that the unit
 * tests of redis.c and idem.c need nothing started by hand.
 */
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "redis_fixture.h"
#include "util.h"

/*
 * Ports below 32768 stay clear of Linux's ephemeral range, so no client
 * socket of this or another test can be holding the one we pick.
 */
#define PORT_MIN		20000
#define PORT_SPAN		12001
#define START_ATTEMPTS		20
#define READY_TIMEOUT_MS	10000
#define STOP_TIMEOUT_MS		5000
#define POLL_INTERVAL_MS	10
#define COMMAND_TIMEOUT_MS	1000
#define LOOP_TICK_MS		5

struct redis_fixture {
	pid_t		 pid;		/* -1 when not running */
	int		 port;
	bool		 is_paused;
	char		 dir[64];
};

static long long
mono_ms(void)
{
	struct timespec	ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
pause_ms(int ms)
{
	struct timespec	ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		continue;
}

static struct timeval
timeval_ms(int ms)
{
	struct timeval	tv = { ms / 1000, (ms % 1000) * 1000 };

	return tv;
}

/* In the child: only async-signal-safe calls between fork and exec. */
static void
exec_server(const struct redis_fixture *rf, const char *log_path)
{
	char	port_text[16];
	int	fd;

	/* The server must not outlive a test binary that crashed. */
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fd != -1) {
		(void)dup2(fd, STDOUT_FILENO);
		(void)dup2(fd, STDERR_FILENO);
		(void)close(fd);
	}
	(void)signal(SIGPIPE, SIG_DFL);
	(void)snprintf(port_text, sizeof(port_text), "%d", rf->port);
	execlp("redis-server", "redis-server", "--port", port_text,
	    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
	    "--dir", rf->dir, (char *)NULL);
	_exit(127);
}

static int
spawn(struct redis_fixture *rf)
{
	char	log_path[96];
	pid_t	pid;

	if ((size_t)snprintf(log_path, sizeof(log_path), "%s/redis.log",
	    rf->dir) >= sizeof(log_path))
		return -1;
	pid = fork();
	if (pid == -1)
		return -1;
	if (pid == 0)
		exec_server(rf, log_path);
	rf->pid = pid;
	rf->is_paused = false;
	return 0;
}

static redisContext *
connect_server(const struct redis_fixture *rf)
{
	struct timeval	 tv = timeval_ms(COMMAND_TIMEOUT_MS);
	redisContext	*c;

	c = redisConnectWithTimeout("127.0.0.1", rf->port, tv);
	if (c == NULL)
		return NULL;
	if (c->err != 0 || redisSetTimeout(c, tv) != REDIS_OK) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/*
 * Whether the server on our port is our child: another test's server may
 * hold the port and answer PING while ours is still failing to bind.
 */
static bool
is_our_server(const struct redis_fixture *rf)
{
	redisContext	*c;
	redisReply	*reply;
	const char	*field;
	bool		 is_ours = false;

	if ((c = connect_server(rf)) == NULL)
		return false;
	reply = redisCommand(c, "INFO server");
	if (reply != NULL && reply->type == REDIS_REPLY_STRING &&
	    (field = strstr(reply->str, "\nprocess_id:")) != NULL)
		is_ours = strtol(field + strlen("\nprocess_id:"), NULL, 10) ==
		    rf->pid;
	freeReplyObject(reply);
	redisFree(c);
	return is_ours;
}

/* Polls until our server answers, or it exited, or time ran out. */
static int
wait_ready(struct redis_fixture *rf)
{
	long long	deadline = mono_ms() + READY_TIMEOUT_MS;
	int		status;

	while (mono_ms() < deadline) {
		if (waitpid(rf->pid, &status, WNOHANG) == rf->pid) {
			rf->pid = -1;
			return -1;
		}
		if (is_our_server(rf))
			return 0;
		pause_ms(POLL_INTERVAL_MS);
	}
	return -1;
}

static void
seed_random(void)
{
	static bool	is_seeded;
	struct timespec	ts;

	if (is_seeded)
		return;
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	srandom((unsigned)(getpid() ^ ts.tv_nsec ^ ts.tv_sec));
	is_seeded = true;
}

static void
remove_dir(const char *path)
{
	DIR		*dir;
	struct dirent	*entry;

	if ((dir = opendir(path)) == NULL)
		return;
	while ((entry = readdir(dir)) != NULL) {
		if (strcmp(entry->d_name, ".") == 0 ||
		    strcmp(entry->d_name, "..") == 0)
			continue;
		(void)unlinkat(dirfd(dir), entry->d_name, 0);
	}
	(void)closedir(dir);
	(void)rmdir(path);
}

struct redis_fixture *
redis_fixture_start(void)
{
	struct redis_fixture	*rf;
	const char		*tmp = getenv("TMPDIR");
	int			 attempt;

	rf = calloc(1, sizeof(*rf));
	if (rf == NULL)
		return NULL;
	rf->pid = -1;
	if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	if ((size_t)snprintf(rf->dir, sizeof(rf->dir), "%s/acrgw-redis-XXXXXX",
	    tmp) >= sizeof(rf->dir) || mkdtemp(rf->dir) == NULL) {
		free(rf);
		return NULL;
	}

	seed_random();
	for (attempt = 0; attempt < START_ATTEMPTS; attempt++) {
		rf->port = PORT_MIN + (int)(random() % PORT_SPAN);
		if (spawn(rf) == -1)
			break;
		if (wait_ready(rf) == 0)
			return rf;
		(void)redis_fixture_stop(rf);
	}
	redis_fixture_free(rf);
	return NULL;
}

void
redis_fixture_free(struct redis_fixture *rf)
{
	if (rf == NULL)
		return;
	(void)redis_fixture_stop(rf);
	remove_dir(rf->dir);
	free(rf);
}

int
redis_fixture_port(const struct redis_fixture *rf)
{
	return rf->port;
}

int
redis_fixture_stop(struct redis_fixture *rf)
{
	long long	deadline = mono_ms() + STOP_TIMEOUT_MS;
	int		status;

	if (rf->pid == -1)
		return -1;
	(void)kill(rf->pid, SIGTERM);
	/* A stopped process keeps SIGTERM pending until it runs again. */
	if (rf->is_paused)
		(void)kill(rf->pid, SIGCONT);
	rf->is_paused = false;

	while (mono_ms() < deadline) {
		if (waitpid(rf->pid, &status, WNOHANG) == rf->pid) {
			rf->pid = -1;
			return 0;
		}
		pause_ms(POLL_INTERVAL_MS / 2);
	}
	(void)kill(rf->pid, SIGKILL);
	(void)waitpid(rf->pid, &status, 0);
	rf->pid = -1;
	return 0;
}

int
redis_fixture_restart(struct redis_fixture *rf)
{
	if (rf->pid != -1)
		return -1;
	if (spawn(rf) == -1)
		return -1;
	if (wait_ready(rf) == -1) {
		(void)redis_fixture_stop(rf);
		return -1;
	}
	return 0;
}

int
redis_fixture_pause(struct redis_fixture *rf)
{
	int	status;

	if (rf->pid == -1 || kill(rf->pid, SIGSTOP) == -1)
		return -1;
	if (waitpid(rf->pid, &status, WUNTRACED) != rf->pid ||
	    !WIFSTOPPED(status))
		return -1;
	rf->is_paused = true;
	return 0;
}

int
redis_fixture_resume(struct redis_fixture *rf)
{
	int	status;

	if (rf->pid == -1 || kill(rf->pid, SIGCONT) == -1)
		return -1;
	if (waitpid(rf->pid, &status, WCONTINUED) != rf->pid ||
	    !WIFCONTINUED(status))
		return -1;
	rf->is_paused = false;
	return 0;
}

static redisReply *
command_va(struct redis_fixture *rf, const char *fmt, va_list ap)
{
	redisContext	*c;
	redisReply	*reply;

	if ((c = connect_server(rf)) == NULL)
		return NULL;
	reply = redisvCommand(c, fmt, ap);
	redisFree(c);
	return reply;
}

redisReply *
redis_fixture_command(struct redis_fixture *rf, const char *fmt, ...)
{
	redisReply	*reply;
	va_list		 ap;

	va_start(ap, fmt);
	reply = command_va(rf, fmt, ap);
	va_end(ap);
	return reply;
}

long long
redis_fixture_integer(struct redis_fixture *rf, const char *fmt, ...)
{
	redisReply	*reply;
	long long	 value = -1;
	va_list		 ap;

	va_start(ap, fmt);
	reply = command_va(rf, fmt, ap);
	va_end(ap);
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER)
		value = reply->integer;
	freeReplyObject(reply);
	return value;
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
	bool	*is_timed_out = arg;

	(void)fd;
	(void)what;
	*is_timed_out = true;
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

int
redis_fixture_run_until(struct event_base *base,
    redis_fixture_done_fn *is_done, void *arg, int timeout_ms)
{
	struct event	*deadline, *tick;
	struct timeval	 deadline_tv = timeval_ms(timeout_ms);
	struct timeval	 tick_tv = timeval_ms(LOOP_TICK_MS);
	bool		 is_timed_out = false;

	deadline = evtimer_new(base, on_deadline, &is_timed_out);
	tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
	if (deadline == NULL || tick == NULL ||
	    evtimer_add(deadline, &deadline_tv) == -1 ||
	    evtimer_add(tick, &tick_tv) == -1) {
		is_timed_out = true;
		goto out;
	}

	while (!is_done(arg) && !is_timed_out) {
		if (event_base_loop(base, EVLOOP_ONCE) == -1)
			break;
	}

out:
	if (tick != NULL)
		event_free(tick);
	if (deadline != NULL)
		event_free(deadline);
	return is_done(arg) ? 0 : -1;
}

struct clock_wait {
	int64_t	until_ms;
};

static bool
is_past(void *arg)
{
	const struct clock_wait	*wait = arg;

	return util_mono_ms() >= wait->until_ms;
}

void
redis_fixture_run_for(struct event_base *base, int ms)
{
	struct clock_wait	wait = { util_mono_ms() + ms };

	/* The deadline is the wait itself; a tick keeps the loop turning. */
	(void)redis_fixture_run_until(base, is_past, &wait, ms + 1000);
}
