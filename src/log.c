/*
 * One JSON object per line on stderr. jansson does the escaping, so bytes
 * from the wire cannot forge a line. Each line goes out in a single
 * writev(2), so lines from different threads never interleave.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/uio.h>
#include <openssl/err.h>

#include "log.h"

static atomic_int	min_level = LOG_INFO;

static const char *const level_names[] = {
	[LOG_DEBUG] = "debug",
	[LOG_INFO] = "info",
	[LOG_WARN] = "warn",
	[LOG_ERROR] = "error",
};

void
log_set_level(enum log_level min)
{
	atomic_store(&min_level, (int)min);
}

bool
log_enabled(enum log_level level)
{
	return (int)level >= atomic_load(&min_level);
}

int
log_level_parse(const char *name, enum log_level *out)
{
	size_t	i;

	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

static void
format_ts(char *out, size_t size)
{
	struct timespec	ts;
	struct tm	tm;
	char		date[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
	(void)snprintf(out, size, "%.20s.%03dZ", date,
	    (int)(ts.tv_nsec / 1000000));
}

/* One writev per line keeps lines from different threads whole. */
static void
write_line(const char *text)
{
	struct iovec	iov[2];

	iov[0].iov_base = (void *)text;
	iov[0].iov_len = strlen(text);
	iov[1].iov_base = (void *)"\n";
	iov[1].iov_len = 1;
	(void)writev(STDERR_FILENO, iov, 2);
}

void
log_json(enum log_level level, const char *module, const char *event,
    json_t *fields)
{
	json_t	*line;
	char	 ts[40];
	char	*text;

	if (!log_enabled(level)) {
		json_decref(fields);
		return;
	}

	format_ts(ts, sizeof(ts));
	line = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts,
	    "level", level_names[level], "module", module, "event", event);
	if (line == NULL) {
		json_decref(fields);
		return;
	}
	if (fields != NULL && json_is_object(fields))
		(void)json_object_update_missing(line, fields);
	json_decref(fields);

	text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(line);
	if (text == NULL)
		return;
	write_line(text);
	free(text);
}

void
log_pack(enum log_level level, const char *module, const char *event,
    const char *fmt, ...)
{
	json_error_t	 err;
	json_t		*fields;
	va_list		 ap;

	if (!log_enabled(level))
		return;

	va_start(ap, fmt);
	fields = json_vpack_ex(&err, 0, fmt, ap);
	va_end(ap);
	log_json(level, module, event, fields);
}

void
log_openssl_errors(enum log_level level, const char *module,
    const char *event)
{
	json_t		*list;
	unsigned long	 code;
	char		 text[256];

	list = json_array();
	while ((code = ERR_get_error()) != 0) {
		ERR_error_string_n(code, text, sizeof(text));
		(void)json_array_append_new(list, json_string(text));
	}
	log_json(level, module, event, json_pack("{s:o}", "openssl", list));
}
