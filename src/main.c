/*
 * acr-gateway: flags, configuration, logging, then the server.
 */
#include <sys/prctl.h>
#include <sys/resource.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "server.h"

#define DEFAULT_CONFIG	"/etc/acr-gateway/acr-gateway.json"

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: acr-gateway [--config FILE] [--check-config]\n"
	    "       acr-gateway --version | --help\n"
	    "\n"
	    "  -c, --config FILE   configuration file (default "
	    DEFAULT_CONFIG ")\n"
	    "  -t, --check-config  validate the configuration, list every\n"
	    "                      error, and exit 0 if it is valid, 1 if not\n"
	    "  -V, --version       print the version and exit\n"
	    "  -h, --help          print this help and exit\n");
}

/* libevent's own messages go through our logger, as JSON lines. */
static void
on_libevent_log(int severity, const char *msg)
{
	enum log_level	level;

	switch (severity) {
	case EVENT_LOG_DEBUG:
		level = LOG_DEBUG;
		break;
	case EVENT_LOG_MSG:
		level = LOG_INFO;
		break;
	case EVENT_LOG_WARN:
		level = LOG_WARN;
		break;
	default:
		level = LOG_ERROR;
		break;
	}
	log_pack(level, "libevent", "libevent_message", "{s:s}", "message",
	    msg);
}

/*
 * The process holds access key secrets in memory: no core dump may carry
 * them away, and no other process of the same user may read them through
 * ptrace or /proc/PID/mem.
 */
static void
protect_memory(void)
{
	struct rlimit	none = { 0, 0 };

	(void)setrlimit(RLIMIT_CORE, &none);
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

/* Each client and vendor connection is a descriptor: take all we may. */
static void
raise_fd_limit(void)
{
	struct rlimit	lim;

	if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == lim.rlim_max)
		return;
	lim.rlim_cur = lim.rlim_max;
	(void)setrlimit(RLIMIT_NOFILE, &lim);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char	*path = DEFAULT_CONFIG;
	struct config	*cfg;
	char		*errs = NULL;
	int		 ch, is_check_only = 0, status;

	while ((ch = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			is_check_only = 1;
			break;
		case 'V':
			printf("acr-gateway %s\n", ACRGW_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	protect_memory();
	raise_fd_limit();
	cfg = config_load(path, &errs);
	if (cfg == NULL) {
		fprintf(stderr, "%s: invalid configuration:\n%s", path,
		    errs != NULL ? errs : "");
		free(errs);
		return 1;
	}
	if (is_check_only) {
		printf("%s: configuration is valid\n", path);
		config_free(cfg);
		return 0;
	}

	log_set_level(cfg->log_level);
	event_set_log_callback(on_libevent_log);
	log_pack(LOG_INFO, "main", "starting", "{s:s, s:s}", "version",
	    ACRGW_VERSION, "config", path);
	status = server_run(cfg);
	config_free(cfg);
	return status;
}
