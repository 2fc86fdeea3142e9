/*
 * The configuration file: JSON in, one immutable struct config out.
 *
 * Scalar keys are rows of keys[] below; defaults, type and bounds checks,
 * and conf/README.md all follow that table, so adding a key is one row.
 * Accounts, tenants and API keys are maps and lists with their own small
 * parsers. Every problem found is appended to one error text with its JSON
 * path and parsing carries on, so an operator fixes a file in one pass.
 *
 * No error message quotes a value from the file: values may be secrets,
 * and a path plus the rule broken is enough to find and fix the line.
 */
#include <sys/stat.h>

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "config.h"
#include "signer.h"
#include "util.h"

#define nitems(a)		(sizeof(a) / sizeof((a)[0]))

/* A config is a few KiB; the cap keeps a wrong path from eating memory. */
#define CONFIG_FILE_MAX_BYTES	(1024 * 1024)
/* Access key secrets are about 30 bytes; anything near this is a mistake. */
#define SECRET_FILE_MAX_BYTES	4096
/* Tenant names become part of Redis keys, so they stay short and plain. */
#define NAME_MAX_LEN		64
#define NAME_CHARS		"abcdefghijklmnopqrstuvwxyz0123456789_-"
/* Room for a shown name: NAME_MAX_LEN bytes, "..." and the NUL. */
#define SHOWN_NAME_SIZE		(NAME_MAX_LEN + 4)
#define ACCESS_KEY_ID_MAX_LEN	128
#define ACCESS_KEY_SECRET_MAX_LEN 256
/* STS tokens run to a couple of KiB. */
#define SECURITY_TOKEN_MAX_LEN	8192
#define FILE_PATH_MAX_LEN	4096
#define COMMENT_MAX_LEN		1024
/* A DNS name is at most 253 bytes. */
#define HOST_MAX_LEN		253
#define HOST_CHARS \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-"
#define SHA256_HEX_LEN		64

enum key_type {
	KEY_INT,		/* int */
	KEY_SIZE,		/* size_t */
	KEY_INT64,		/* int64_t */
	KEY_BOOL,		/* bool */
	KEY_STRING,		/* char *, owned; min, max bound its length */
	KEY_LOG_LEVEL,		/* enum log_level */
};

struct key_row {
	const char	*section;
	const char	*name;
	enum key_type	 type;
	int64_t		 min;
	int64_t		 max;
	int64_t		 def;		/* numbers, booleans, levels */
	const char	*def_str;	/* strings; NULL leaves it unset */
	bool		 is_required;
	size_t		 offset;
	const char	*doc;
};

#define F(member)	offsetof(struct config, member)

/*
 * One row per scalar key. Timeouts share 1..600000 ms (ten minutes): long
 * enough for any sane network, short enough to catch a unit mistake.
 */
static const struct key_row keys[] = {
	/* section, name, type, min, max, default, default string, required,
	 * field, doc */
	{ "listen", "address", KEY_STRING, 1, 255, 0, "127.0.0.1", false,
	    F(listen_address), "address or host name to bind" },
	{ "listen", "port", KEY_INT, 0, 65535, 8080, NULL, false,
	    F(listen_port), "TCP port to bind; 0 takes any free port" },

	{ "server", "workers", KEY_INT, 0, 256, 0, NULL, false,
	    F(workers), "worker threads; 0 means one per core" },
	{ "server", "body_max_bytes", KEY_SIZE, 1024, 1048576, 16384, NULL,
	    false, F(body_max_bytes), "largest request body accepted" },
	{ "server", "header_max_bytes", KEY_SIZE, 1024, 65536, 8192, NULL,
	    false, F(header_max_bytes), "largest request header block" },
	{ "server", "read_timeout_ms", KEY_INT, 1, 600000, 10000, NULL, false,
	    F(read_timeout_ms), "idle time on a client connection" },

	{ "redis", "host", KEY_STRING, 1, 255, 0, "127.0.0.1", false,
	    F(redis_host), "Redis host name or address" },
	{ "redis", "port", KEY_INT, 1, 65535, 6379, NULL, false,
	    F(redis_port), "Redis TCP port" },
	{ "redis", "connect_timeout_ms", KEY_INT, 1, 600000, 1000, NULL,
	    false, F(redis_connect_timeout_ms), "time allowed to connect" },
	{ "redis", "command_timeout_ms", KEY_INT, 1, 10000, 50, NULL, false,
	    F(redis_command_timeout_ms), "time allowed for one command" },
	{ "redis", "key_prefix", KEY_STRING, 1, 64, 0, "acrgw:", false,
	    F(redis_key_prefix), "prefix of every key the gateway writes" },

	{ "idempotency", "ttl_s", KEY_INT64, 3600, 2592000, 86400, NULL, false,
	    F(idem_ttl_s), "how long a ClientToken's result is kept" },
	{ "idempotency", "lease_ms", KEY_INT, 1000, 3600000, 45000, NULL,
	    false, F(idem_lease_ms), "lease of an in-flight request" },
	{ "idempotency", "wait_max_s", KEY_INT, 0, 300, 30, NULL, false,
	    F(idem_wait_max_s), "cap on how long a duplicate may wait" },
	{ "idempotency", "retry_after_s", KEY_INT, 1, 3600, 2, NULL, false,
	    F(idem_retry_after_s), "Retry-After sent with 409 in progress" },

	{ "upstream", "url", KEY_STRING, 1, 2048, 0, NULL, true,
	    F(upstream_url), "vendor endpoint, https://host[:port]" },
	{ "upstream", "ca_file", KEY_STRING, 1, FILE_PATH_MAX_LEN, 0, NULL,
	    false, F(upstream_ca_file), "CA bundle; unset: system store" },
	{ "upstream", "allow_plain_http", KEY_BOOL, 0, 1, false, NULL, false,
	    F(upstream_allow_plain_http), "allow an http:// url (tests only)" },
	{ "upstream", "timeout_ms", KEY_INT, 1, 600000, 30000, NULL, false,
	    F(upstream_timeout_ms), "time allowed for one vendor call" },
	{ "upstream", "connect_timeout_ms", KEY_INT, 1, 600000, 5000, NULL,
	    false, F(upstream_connect_timeout_ms),
	    "time allowed to connect and finish the TLS handshake" },
	{ "upstream", "max_connections", KEY_INT, 1, 1024, 16, NULL, false,
	    F(upstream_max_connections), "open connections per worker" },
	{ "upstream", "max_attempts", KEY_INT, 1, 10, 3, NULL, false,
	    F(upstream_max_attempts), "tries per purchase, same ClientToken" },

	{ "log", "level", KEY_LOG_LEVEL, 0, 0, LOG_INFO, NULL, false,
	    F(log_level), "least severe level written: debug|info|warn|error" },
};

#undef F

enum key_state {
	KEY_DEFAULT,		/* absent: the default stands */
	KEY_SET,		/* present and valid */
	KEY_INVALID,		/* present, reported as an error */
};

struct parse {
	char		*errs;		/* one "path: message\n" per error */
	size_t		 errs_len;
	size_t		 nerrors;
	enum key_state	 state[nitems(keys)];
};

static const char *const account_keys[] = {
	"site", "access_key_id", "access_key_secret",
	"access_key_secret_file", "security_token",
};
static const char *const tenant_keys[] = { "account" };
static const char *const api_key_keys[] = { "tenant", "sha256", "comment" };

static void	 errf(struct parse *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

static void
errf(struct parse *p, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;

	/* Room for the message, its newline and the final NUL. */
	p->errs = xrealloc(p->errs, p->errs_len + (size_t)n + 2);
	va_start(ap, fmt);
	(void)vsnprintf(p->errs + p->errs_len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	p->errs_len += (size_t)n;
	p->errs[p->errs_len++] = '\n';
	p->errs[p->errs_len] = '\0';
	p->nerrors++;
}

/*
 * Copies a name from the file into out for an error message: at most
 * NAME_MAX_LEN bytes, anything but printable ASCII shown as '?', so a
 * stray newline cannot split or forge an error line.
 */
static const char *
shown(const char *name, char out[SHOWN_NAME_SIZE])
{
	size_t	 i;

	for (i = 0; i < NAME_MAX_LEN && name[i] != '\0'; i++)
		out[i] = (name[i] > ' ' && name[i] < 0x7f) ? name[i] : '?';
	if (name[i] != '\0') {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
	return out;
}

static bool
has_control_chars(const char *s, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] < ' ' || s[i] == 0x7f)
			return true;
	}
	return false;
}

static bool
is_valid_name(const char *name)
{
	size_t	 len = strlen(name);

	return len >= 1 && len <= NAME_MAX_LEN &&
	    strspn(name, NAME_CHARS) == len;
}

static bool
is_listed(const char *key, const char *const *list, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++) {
		if (strcmp(key, list[i]) == 0)
			return true;
	}
	return false;
}

/* Reports each member of obj that is not in list as unknown. */
static void
check_keys(struct parse *p, const char *where, json_t *obj,
    const char *const *list, size_t n)
{
	const char	*key;
	json_t		*value;
	char		 name[SHOWN_NAME_SIZE];

	json_object_foreach(obj, key, value) {
		if (!is_listed(key, list, n))
			errf(p, "%s.%s: unknown key", where, shown(key, name));
	}
}

/*
 * Checks a string value: min_len to max_len bytes, no control characters.
 * Returns it, borrowed from the tree, or NULL after reporting why not.
 */
static const char *
check_string(struct parse *p, const char *where, const char *key, json_t *v,
    size_t min_len, size_t max_len)
{
	size_t	 len;

	if (!json_is_string(v)) {
		errf(p, "%s.%s: must be a string", where, key);
		return NULL;
	}

	len = json_string_length(v);
	if (len < min_len || len > max_len) {
		errf(p, "%s.%s: must be %zu to %zu bytes long", where, key,
		    min_len, max_len);
		return NULL;
	}
	if (has_control_chars(json_string_value(v), len)) {
		errf(p, "%s.%s: must not contain control characters", where,
		    key);
		return NULL;
	}
	return json_string_value(v);
}

/* A non-empty string member of obj, or NULL if absent or invalid. */
static const char *
get_string(struct parse *p, const char *where, json_t *obj, const char *key,
    bool is_required, size_t max_len)
{
	json_t	*v = json_object_get(obj, key);

	if (v == NULL) {
		if (is_required)
			errf(p, "%s.%s: is required", where, key);
		return NULL;
	}
	return check_string(p, where, key, v, 1, max_len);
}

/*
 * Reads the regular file at path into buf, which holds max_bytes + 1.
 * Returns 0 with *len set, or -1 with the reason in why. *len always
 * counts the bytes placed in buf, so the caller can wipe exactly those.
 */
static int
read_capped(const char *path, char *buf, size_t max_bytes, size_t *len,
    char *why, size_t why_size)
{
	struct stat	 st;
	ssize_t		 n;
	int		 fd, rc = -1;

	*len = 0;

	/* O_NONBLOCK: a FIFO at that path is refused below, not waited on. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd == -1) {
		(void)snprintf(why, why_size, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		(void)snprintf(why, why_size, "%s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		(void)snprintf(why, why_size, "not a regular file");
		goto out;
	}

	/* Reading one byte past the cap catches a file that grew meanwhile. */
	for (;;) {
		n = read(fd, buf + *len, max_bytes + 1 - *len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			(void)snprintf(why, why_size, "%s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		*len += (size_t)n;
		if (*len > max_bytes) {
			(void)snprintf(why, why_size, "larger than %zu bytes",
			    max_bytes);
			goto out;
		}
	}
	rc = 0;

out:
	(void)close(fd);
	return rc;
}

static void
wipe_free(char *buf, size_t len)
{
	if (buf == NULL)
		return;
	OPENSSL_cleanse(buf, len);
	free(buf);
}

static const struct key_row *
find_row(const char *section, const char *name)
{
	size_t	 i;

	for (i = 0; i < nitems(keys); i++) {
		if (strcmp(keys[i].section, section) == 0 &&
		    strcmp(keys[i].name, name) == 0)
			return &keys[i];
	}
	return NULL;
}

static bool
is_scalar_section(const char *name)
{
	size_t	 i;

	for (i = 0; i < nitems(keys); i++) {
		if (strcmp(keys[i].section, name) == 0)
			return true;
	}
	return false;
}

static enum key_state
state_of(const struct parse *p, const char *section, const char *name)
{
	const struct key_row	*row = find_row(section, name);

	assert(row != NULL);
	return p->state[row - keys];
}

static void
set_defaults(struct config *cfg)
{
	const struct key_row	*row;
	void			*field;
	size_t			 i;

	for (i = 0; i < nitems(keys); i++) {
		row = &keys[i];
		field = (char *)cfg + row->offset;

		switch (row->type) {
		case KEY_INT:
			*(int *)field = (int)row->def;
			break;
		case KEY_SIZE:
			*(size_t *)field = (size_t)row->def;
			break;
		case KEY_INT64:
			*(int64_t *)field = row->def;
			break;
		case KEY_BOOL:
			*(bool *)field = row->def != 0;
			break;
		case KEY_STRING:
			*(char **)field = row->def_str != NULL ?
			    xstrdup(row->def_str) : NULL;
			break;
		case KEY_LOG_LEVEL:
			*(enum log_level *)field = (enum log_level)row->def;
			break;
		}
	}
}

/* Stores an integer key within its bounds. Returns 0, or -1 if reported. */
static int
set_number(struct parse *p, void *field, const struct key_row *row,
    json_t *v)
{
	json_int_t	 n;

	if (!json_is_integer(v)) {
		errf(p, "%s.%s: must be an integer", row->section, row->name);
		return -1;
	}
	n = json_integer_value(v);
	if (n < row->min || n > row->max) {
		errf(p, "%s.%s: must be between %lld and %lld", row->section,
		    row->name, (long long)row->min, (long long)row->max);
		return -1;
	}

	if (row->type == KEY_INT)
		*(int *)field = (int)n;
	else if (row->type == KEY_SIZE)
		*(size_t *)field = (size_t)n;
	else
		*(int64_t *)field = (int64_t)n;
	return 0;
}

/* Stores one scalar key. Returns 0, or -1 after reporting why not. */
static int
set_scalar(struct parse *p, struct config *cfg, const struct key_row *row,
    json_t *v)
{
	void		*field = (char *)cfg + row->offset;
	const char	*s;
	enum log_level	 level;

	switch (row->type) {
	case KEY_BOOL:
		if (!json_is_boolean(v)) {
			errf(p, "%s.%s: must be true or false", row->section,
			    row->name);
			return -1;
		}
		*(bool *)field = json_is_true(v);
		return 0;
	case KEY_STRING:
		s = check_string(p, row->section, row->name, v,
		    (size_t)row->min, (size_t)row->max);
		if (s == NULL)
			return -1;
		free(*(char **)field);
		*(char **)field = xstrdup(s);
		return 0;
	case KEY_LOG_LEVEL:
		if (!json_is_string(v) ||
		    log_level_parse(json_string_value(v), &level) == -1) {
			errf(p,
			    "%s.%s: must be one of debug, info, warn, error",
			    row->section, row->name);
			return -1;
		}
		*(enum log_level *)field = level;
		return 0;
	default:
		return set_number(p, field, row, v);
	}
}

static void
parse_section(struct parse *p, struct config *cfg, const char *section,
    json_t *obj)
{
	const struct key_row	*row;
	const char		*key;
	json_t			*v;
	char			 name[SHOWN_NAME_SIZE];

	if (!json_is_object(obj)) {
		errf(p, "%s: must be an object", section);
		return;
	}

	json_object_foreach(obj, key, v) {
		if ((row = find_row(section, key)) == NULL) {
			errf(p, "%s.%s: unknown key", section,
			    shown(key, name));
			continue;
		}
		p->state[row - keys] = set_scalar(p, cfg, row, v) == 0 ?
		    KEY_SET : KEY_INVALID;
	}
}

static void
check_required(struct parse *p)
{
	size_t	 i;

	for (i = 0; i < nitems(keys); i++) {
		if (keys[i].is_required && p->state[i] == KEY_DEFAULT)
			errf(p, "%s.%s: is required", keys[i].section,
			    keys[i].name);
	}
}

/* Accounts and tenants are maps from name to object, never empty. */
static bool
check_map(struct parse *p, const char *where, json_t *map, const char *what)
{
	if (map == NULL) {
		errf(p, "%s: is required, with at least one %s", where, what);
		return false;
	}
	if (!json_is_object(map)) {
		errf(p, "%s: must be an object of name to %s", where, what);
		return false;
	}
	if (json_object_size(map) == 0) {
		errf(p, "%s: needs at least one %s", where, what);
		return false;
	}
	return true;
}

static void
check_name(struct parse *p, const char *where, const char *name)
{
	if (!is_valid_name(name))
		errf(p, "%s: name must be 1 to %d characters from a-z 0-9 _ -",
		    where, NAME_MAX_LEN);
}

static void
parse_site(struct parse *p, const char *where, struct config_account *a,
    json_t *v)
{
	const char	*s = json_string_value(v);

	/* No default: the site decides which commercial platform bills. */
	if (v == NULL)
		errf(p, "%s.site: is required: \"cn\" or \"intl\"", where);
	else if (s != NULL && strcmp(s, "cn") == 0)
		a->site = SITE_CN;
	else if (s != NULL && strcmp(s, "intl") == 0)
		a->site = SITE_INTL;
	else
		errf(p, "%s.site: must be \"cn\" or \"intl\"", where);
}

/*
 * The secret file holds the secret and at most one newline after it,
 * which editors and `echo` add and which is not part of the secret.
 * Returns the secret inside *buf (SECRET_FILE_MAX_BYTES + 1 bytes, always
 * allocated; free with wipe_free) or NULL after reporting why not.
 */
static const char *
read_secret_file(struct parse *p, const char *where, const char *path,
    char **buf)
{
	char	 why[128];
	size_t	 len;

	*buf = xcalloc(1, SECRET_FILE_MAX_BYTES + 1);
	if (read_capped(path, *buf, SECRET_FILE_MAX_BYTES, &len, why,
	    sizeof(why)) == -1) {
		errf(p, "%s.access_key_secret_file: cannot read %s: %s", where,
		    path, why);
		return NULL;
	}

	if (len > 0 && (*buf)[len - 1] == '\n')
		len--;
	(*buf)[len] = '\0';
	if (len == 0 || len > ACCESS_KEY_SECRET_MAX_LEN) {
		errf(p,
		    "%s.access_key_secret_file: %s must hold 1 to %d bytes",
		    where, path, ACCESS_KEY_SECRET_MAX_LEN);
		return NULL;
	}
	if (has_control_chars(*buf, len)) {
		errf(p,
		    "%s.access_key_secret_file: %s must hold one line only",
		    where, path);
		return NULL;
	}
	return *buf;
}

/*
 * The account's secret, from exactly one of access_key_secret (inline,
 * borrowed from the tree) or access_key_secret_file (read into *file_buf,
 * which the caller wipes). NULL after reporting why not.
 */
static const char *
account_secret(struct parse *p, const char *where, json_t *obj,
    char **file_buf)
{
	json_t		*inline_v, *file_v;
	const char	*path;

	inline_v = json_object_get(obj, "access_key_secret");
	file_v = json_object_get(obj, "access_key_secret_file");

	if (inline_v != NULL && file_v != NULL) {
		errf(p,
		    "%s: give access_key_secret or access_key_secret_file, not both",
		    where);
		return NULL;
	}
	if (inline_v != NULL)
		return check_string(p, where, "access_key_secret", inline_v, 1,
		    ACCESS_KEY_SECRET_MAX_LEN);
	if (file_v == NULL) {
		errf(p,
		    "%s: access_key_secret_file (or access_key_secret) is required",
		    where);
		return NULL;
	}

	path = check_string(p, where, "access_key_secret_file", file_v, 1,
	    FILE_PATH_MAX_LEN);
	if (path == NULL)
		return NULL;
	return read_secret_file(p, where, path, file_buf);
}

static void
parse_account(struct parse *p, struct config_account *a, json_t *obj)
{
	char		 name[SHOWN_NAME_SIZE], where[SHOWN_NAME_SIZE + 16];
	char		*file_buf = NULL;
	const char	*id, *secret, *token;
	size_t		 nerrors = p->nerrors;

	(void)snprintf(where, sizeof(where), "accounts.%s",
	    shown(a->name, name));
	check_name(p, where, a->name);
	if (!json_is_object(obj)) {
		errf(p, "%s: must be an object", where);
		return;
	}
	check_keys(p, where, obj, account_keys, nitems(account_keys));

	parse_site(p, where, a, json_object_get(obj, "site"));
	id = get_string(p, where, obj, "access_key_id", true,
	    ACCESS_KEY_ID_MAX_LEN);
	token = get_string(p, where, obj, "security_token", false,
	    SECURITY_TOKEN_MAX_LEN);
	secret = account_secret(p, where, obj, &file_buf);

	/* Credentials come only from an account without errors of its own. */
	if (p->nerrors == nerrors)
		a->creds = credentials_new(id, secret, token);
	wipe_free(file_buf, SECRET_FILE_MAX_BYTES + 1);
}

static void
parse_accounts(struct parse *p, struct config *cfg, json_t *map)
{
	struct config_account	*a;
	const char		*name;
	json_t			*v;

	if (!check_map(p, "accounts", map, "account"))
		return;

	cfg->accounts = xcalloc(json_object_size(map),
	    sizeof(*cfg->accounts));
	json_object_foreach(map, name, v) {
		a = &cfg->accounts[cfg->naccounts++];
		a->name = xstrdup(name);
		parse_account(p, a, v);
	}
}

static const struct config_account *
find_account(const struct config *cfg, const char *name)
{
	size_t	 i;

	for (i = 0; i < cfg->naccounts; i++) {
		if (strcmp(cfg->accounts[i].name, name) == 0)
			return &cfg->accounts[i];
	}
	return NULL;
}

static void
parse_tenant(struct parse *p, const struct config *cfg,
    struct config_tenant *t, json_t *obj)
{
	char		 name[SHOWN_NAME_SIZE], where[SHOWN_NAME_SIZE + 16];
	const char	*account;

	(void)snprintf(where, sizeof(where), "tenants.%s",
	    shown(t->name, name));
	check_name(p, where, t->name);
	if (!json_is_object(obj)) {
		errf(p, "%s: must be an object", where);
		return;
	}
	check_keys(p, where, obj, tenant_keys, nitems(tenant_keys));

	account = get_string(p, where, obj, "account", true, NAME_MAX_LEN);
	if (account == NULL)
		return;
	if ((t->account = find_account(cfg, account)) == NULL)
		errf(p, "%s.account: no account named %s", where,
		    shown(account, name));
}

static void
parse_tenants(struct parse *p, struct config *cfg, json_t *map)
{
	struct config_tenant	*t;
	const char		*name;
	json_t			*v;

	if (!check_map(p, "tenants", map, "tenant"))
		return;

	cfg->tenants = xcalloc(json_object_size(map), sizeof(*cfg->tenants));
	json_object_foreach(map, name, v) {
		t = &cfg->tenants[cfg->ntenants++];
		t->name = xstrdup(name);
		parse_tenant(p, cfg, t, v);
	}
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return c - 'A' + 10;
}

/* Decodes 64 hex digits, either case. Returns 0, or -1 if reported. */
static int
parse_hash(struct parse *p, const char *where, json_t *v,
    unsigned char out[32])
{
	const char	*hex = json_string_value(v);
	size_t		 i;

	if (v == NULL) {
		errf(p, "%s.sha256: is required", where);
		return -1;
	}
	if (hex == NULL || json_string_length(v) != SHA256_HEX_LEN ||
	    strspn(hex, "0123456789abcdefABCDEF") != SHA256_HEX_LEN) {
		errf(p, "%s.sha256: must be %d hex digits, the key's SHA-256",
		    where, SHA256_HEX_LEN);
		return -1;
	}

	for (i = 0; i < SHA256_HEX_LEN / 2; i++)
		out[i] = (unsigned char)(hex_value(hex[2 * i]) << 4 |
		    hex_value(hex[2 * i + 1]));
	return 0;
}

/* Parses api_keys[i]. Returns true when its hash is valid. */
static bool
parse_api_key(struct parse *p, struct config *cfg, size_t i, json_t *obj)
{
	struct config_api_key	*k = &cfg->api_keys[i];
	json_t			*comment;
	const char		*tenant;
	char			 where[48], name[SHOWN_NAME_SIZE];

	(void)snprintf(where, sizeof(where), "api_keys[%zu]", i);
	if (!json_is_object(obj)) {
		errf(p, "%s: must be an object", where);
		return false;
	}
	check_keys(p, where, obj, api_key_keys, nitems(api_key_keys));

	tenant = get_string(p, where, obj, "tenant", true, NAME_MAX_LEN);
	if (tenant != NULL && (k->tenant = config_tenant(cfg, tenant)) == NULL)
		errf(p, "%s.tenant: no tenant named %s", where,
		    shown(tenant, name));
	if ((comment = json_object_get(obj, "comment")) != NULL)
		(void)check_string(p, where, "comment", comment, 0,
		    COMMENT_MAX_LEN);
	return parse_hash(p, where, json_object_get(obj, "sha256"),
	    k->sha256) == 0;
}

static void
parse_api_keys(struct parse *p, struct config *cfg, json_t *list)
{
	json_t	*v;
	bool	*has_hash;
	size_t	 i, j;

	if (list == NULL) {
		errf(p, "api_keys: is required, with at least one key");
		return;
	}
	if (!json_is_array(list) || json_array_size(list) == 0) {
		errf(p, "api_keys: must be an array of at least one key");
		return;
	}

	cfg->napi_keys = json_array_size(list);
	cfg->api_keys = xcalloc(cfg->napi_keys, sizeof(*cfg->api_keys));
	has_hash = xcalloc(cfg->napi_keys, sizeof(*has_hash));
	json_array_foreach(list, i, v) {
		has_hash[i] = parse_api_key(p, cfg, i, v);
		if (!has_hash[i])
			continue;

		/* One key, one tenant: a shared hash would be ambiguous. */
		for (j = 0; j < i; j++) {
			if (has_hash[j] && memcmp(cfg->api_keys[i].sha256,
			    cfg->api_keys[j].sha256, 32) == 0) {
				errf(p,
				    "api_keys[%zu].sha256: same hash as api_keys[%zu]",
				    i, j);
				break;
			}
		}
	}
	free(has_hash);
}

/* Parses "[:port]" after the host. Returns the rest, or NULL if bad. */
static const char *
parse_port(const char *s, int *port)
{
	size_t	 ndigits;
	long	 n;

	if (*s != ':')
		return s;
	s++;
	ndigits = strspn(s, "0123456789");
	if (ndigits == 0 || ndigits > 5)
		return NULL;
	n = strtol(s, NULL, 10);
	if (n < 1 || n > 65535)
		return NULL;
	*port = (int)n;
	return s + ndigits;
}

/*
 * upstream.url is scheme://host[:port] with at most a trailing "/": calls
 * always go to "/", so a path would be dropped without a word, and user
 * info would put a credential in the config in plain sight.
 */
static void
check_upstream_url(struct parse *p, struct config *cfg)
{
	const char	*url = cfg->upstream_url, *host, *rest;
	size_t		 host_len;

	if (state_of(p, "upstream", "url") != KEY_SET ||
	    state_of(p, "upstream", "allow_plain_http") == KEY_INVALID)
		return;

	if (strncmp(url, "https://", 8) == 0) {
		cfg->upstream_is_https = true;
		cfg->upstream_port = 443;
		host = url + 8;
	} else if (strncmp(url, "http://", 7) == 0) {
		if (!cfg->upstream_allow_plain_http) {
			errf(p,
			    "upstream.url: http:// needs upstream.allow_plain_http set to true");
			return;
		}
		cfg->upstream_is_https = false;
		cfg->upstream_port = 80;
		host = url + 7;
	} else {
		errf(p, "upstream.url: must start with https://");
		return;
	}

	host_len = strspn(host, HOST_CHARS);
	rest = parse_port(host + host_len, &cfg->upstream_port);
	if (rest != NULL && *rest == '/')
		rest++;
	if (host_len == 0 || host_len > HOST_MAX_LEN || host[0] == '.' ||
	    host[0] == '-' || rest == NULL || *rest != '\0') {
		errf(p,
		    "upstream.url: must be https://host[:port] with an optional / and nothing else");
		return;
	}
	cfg->upstream_host = xstrndup(host, host_len);
}

/*
 * An idempotency lease must outlast the vendor call it guards: were it to
 * expire first, a retry with the same ClientToken could take the lease and
 * buy a second instance while the first call is still in flight.
 */
static void
check_lease(struct parse *p, const struct config *cfg)
{
	if (state_of(p, "idempotency", "lease_ms") == KEY_INVALID ||
	    state_of(p, "upstream", "timeout_ms") == KEY_INVALID)
		return;
	if (cfg->idem_lease_ms <= cfg->upstream_timeout_ms)
		errf(p,
		    "idempotency.lease_ms: must be greater than upstream.timeout_ms (%d): a lease must outlive the vendor call it guards",
		    cfg->upstream_timeout_ms);
}

static void
parse_root(struct parse *p, struct config *cfg, json_t *root)
{
	static const char *const maps[] = { "accounts", "tenants", "api_keys" };
	const char	*key;
	json_t		*v;
	char		 name[SHOWN_NAME_SIZE];

	json_object_foreach(root, key, v) {
		if (is_scalar_section(key))
			parse_section(p, cfg, key, v);
		else if (!is_listed(key, maps, nitems(maps)))
			errf(p, "%s: unknown key", shown(key, name));
	}
	check_required(p);

	/* In this order: tenants name accounts, keys name tenants. */
	parse_accounts(p, cfg, json_object_get(root, "accounts"));
	parse_tenants(p, cfg, json_object_get(root, "tenants"));
	parse_api_keys(p, cfg, json_object_get(root, "api_keys"));

	check_upstream_url(p, cfg);
	check_lease(p, cfg);
}

/*
 * jansson frees strings without wiping them, so overwrite inline secrets
 * in the tree before it goes. Its lexer's scratch buffers are out of
 * reach; that is one reason production configs use secret files.
 */
static void
wipe_tree_secrets(json_t *root)
{
	static const char *const secret_keys[] = {
		"access_key_secret", "security_token",
	};
	const char	*name;
	json_t		*accounts, *account, *v;
	size_t		 i;

	accounts = json_object_get(root, "accounts");
	json_object_foreach(accounts, name, account) {
		for (i = 0; i < nitems(secret_keys); i++) {
			v = json_object_get(account, secret_keys[i]);
			if (json_is_string(v))
				OPENSSL_cleanse((char *)json_string_value(v),
				    json_string_length(v));
		}
	}
}

/*
 * jansson's text ends with " near '<token>'", and the token may be a
 * secret (say, an access_key_secret missing its quotes). Line and column
 * locate the error without it.
 */
static void
report_syntax(struct parse *p, const char *path, const json_error_t *jerr)
{
	char	 text[JSON_ERROR_TEXT_LENGTH];
	char	*near;

	(void)snprintf(text, sizeof(text), "%s", jerr->text);
	if ((near = strstr(text, " near '")) != NULL)
		*near = '\0';
	errf(p, "%s:%d:%d: %s", path, jerr->line, jerr->column, text);
}

struct config *
config_parse(const char *text, size_t len, const char *path, char **errs)
{
	struct parse	 p;
	struct config	*cfg;
	json_t		*root;
	json_error_t	 jerr;

	memset(&p, 0, sizeof(p));
	cfg = xcalloc(1, sizeof(*cfg));
	cfg->path = path != NULL ? xstrdup(path) : NULL;
	set_defaults(cfg);

	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		report_syntax(&p, path != NULL ? path : "<config>", &jerr);
		goto fail;
	}
	if (json_is_object(root))
		parse_root(&p, cfg, root);
	else
		errf(&p, "%s: the top level must be an object",
		    path != NULL ? path : "<config>");
	wipe_tree_secrets(root);
	json_decref(root);
	if (p.nerrors > 0)
		goto fail;

	if (errs != NULL)
		*errs = NULL;
	return cfg;

fail:
	config_free(cfg);
	if (errs != NULL)
		*errs = p.errs;
	else
		free(p.errs);
	return NULL;
}

struct config *
config_load(const char *path, char **errs)
{
	struct config	*cfg = NULL;
	char		*buf, why[128];
	size_t		 len;

	buf = xmalloc(CONFIG_FILE_MAX_BYTES + 1);
	if (read_capped(path, buf, CONFIG_FILE_MAX_BYTES, &len, why,
	    sizeof(why)) == 0)
		cfg = config_parse(buf, len, path, errs);
	else if (errs != NULL)
		*errs = xasprintf("%s: cannot read: %s\n", path, why);

	/* The file may hold inline secrets. */
	wipe_free(buf, len);
	return cfg;
}

void
config_free(struct config *cfg)
{
	size_t	 i;

	if (cfg == NULL)
		return;

	for (i = 0; i < cfg->naccounts; i++) {
		free(cfg->accounts[i].name);
		credentials_free(cfg->accounts[i].creds);
	}
	free(cfg->accounts);
	for (i = 0; i < cfg->ntenants; i++)
		free(cfg->tenants[i].name);
	free(cfg->tenants);
	free(cfg->api_keys);

	for (i = 0; i < nitems(keys); i++) {
		if (keys[i].type == KEY_STRING)
			free(*(char **)((char *)cfg + keys[i].offset));
	}
	free(cfg->upstream_host);
	free(cfg->path);
	free(cfg);
}

const struct config_tenant *
config_tenant(const struct config *cfg, const char *name)
{
	size_t	 i;

	for (i = 0; i < cfg->ntenants; i++) {
		if (strcmp(cfg->tenants[i].name, name) == 0)
			return &cfg->tenants[i];
	}
	return NULL;
}
