/*
 * The logger: one JSON object per line on stderr, safe from any thread.
 * Each line carries ts (UTC, ms), level, module and event, then the event's
 * own fields. Callers never pass secrets, signatures, API keys or raw
 * bodies; the logger has no way to know them.
 */
#ifndef ACRGW_LOG_H
#define ACRGW_LOG_H

#include <stdbool.h>
#include <jansson.h>

enum log_level {
	LOG_DEBUG,
	LOG_INFO,
	LOG_WARN,
	LOG_ERROR,
};

void	 log_set_level(enum log_level min);
bool	 log_enabled(enum log_level level);
int	 log_level_parse(const char *name, enum log_level *out);

/*
 * Writes one line. fields is a JSON object whose members are appended;
 * the logger takes ownership of it (NULL is fine).
 */
void	 log_json(enum log_level level, const char *module, const char *event,
	    json_t *fields);

/*
 * Like log_json, with the fields built by json_pack from fmt ("{s:s, s:i}").
 * The level is checked before anything is built.
 */
void	 log_pack(enum log_level level, const char *module, const char *event,
	    const char *fmt, ...);

/* Logs and clears this thread's OpenSSL error queue as one line. */
void	 log_openssl_errors(enum log_level level, const char *module,
	    const char *event);

#endif
