/*
 * The gateway's configuration: a JSON file parsed into one immutable
 * struct config. Threads share it read-only; nothing writes to it after
 * config_load returns.
 *
 * Every key is one row of the table in config.c (type, bounds, default,
 * doc line). Unknown keys, wrong types and values out of bounds are errors;
 * config_load reports all of them in one run, each with its JSON path.
 */
#ifndef ACRGW_CONFIG_H
#define ACRGW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

struct credentials;

enum site {
	SITE_CN,		/* ProductType acr_ee_public_cn */
	SITE_INTL,		/* ProductType acr_ee_public_intl */
};

struct config_account {
	char			*name;
	enum site		 site;
	/* Owned; only the signer reads the secret inside. */
	struct credentials	*creds;
};

struct config_tenant {
	char			*name;
	/* Borrowed from config.accounts. */
	const struct config_account *account;
};

struct config_api_key {
	/* SHA-256 of the presented key; the key itself is never stored. */
	unsigned char		 sha256[32];
	/* Borrowed from config.tenants. */
	const struct config_tenant *tenant;
};

struct config {
	char			*path;

	/* listen */
	char			*listen_address;
	int			 listen_port;	/* 0: any free port */

	/* server */
	int			 workers;	/* 0: one per core */
	size_t			 body_max_bytes;
	size_t			 header_max_bytes;
	int			 read_timeout_ms;

	/* redis */
	char			*redis_host;
	int			 redis_port;
	int			 redis_connect_timeout_ms;
	int			 redis_command_timeout_ms;
	char			*redis_key_prefix;

	/* idempotency */
	int64_t			 idem_ttl_s;	/* >= 3600 */
	int			 idem_lease_ms;	/* > upstream_timeout_ms */
	int			 idem_wait_max_s; /* cap on Prefer: wait */
	int			 idem_retry_after_s;

	/* upstream */
	char			*upstream_url;	/* https://host[:port] */
	char			*upstream_host;	/* parsed from the url */
	int			 upstream_port;
	bool			 upstream_is_https;
	bool			 upstream_allow_plain_http;
	char			*upstream_ca_file; /* NULL: system store */
	int			 upstream_timeout_ms;
	int			 upstream_connect_timeout_ms;
	/* Open connections per worker; tries per IdempotentProcessing. */
	int			 upstream_max_connections;
	int			 upstream_max_attempts;

	/* log */
	enum log_level		 log_level;

	struct config_account	*accounts;
	size_t			 naccounts;
	struct config_tenant	*tenants;
	size_t			 ntenants;
	struct config_api_key	*api_keys;
	size_t			 napi_keys;
};

/*
 * Parses the file at path into a new config. On failure returns NULL and
 * writes every error found to errs (one line each, "path: message"), which
 * must then be freed with free(). Secrets read from files are wiped from
 * every temporary buffer.
 */
struct config *config_load(const char *path, char **errs);

/* Same, from a string (for tests); path names it in errors. */
struct config *config_parse(const char *text, size_t len, const char *path,
	    char **errs);

/* Wipes and frees everything. NULL is a no-op. */
void	 config_free(struct config *cfg);

/* The tenant with that name, or NULL. Borrowed. */
const struct config_tenant *config_tenant(const struct config *cfg,
	    const char *name);

#endif
