/*
 * Unit tests for config.c: the example file, defaults, every bound, the
 * shape rules, accounts and their secrets, tenants, API keys, the rules
 * across keys, and that no error message ever quotes a secret.
 *
 * Most cases start from a small valid tree, change one thing with jansson
 * and parse the result, so each case states only what it is about.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "config.h"
#include "signer.h"

#define EXAMPLE_PATH	FIXTURES_DIR "/../../conf/acr-gateway.example.json"
#define INLINE_SECRET	"inline-Secret-7f3a9c"
#define DEMO_KEY	"demo-key-team-a"
#define DEMO_KEY_SHA256 \
	"7dbaf6a9f8103761445f073645d544d53cc1f4584dbcd673ec93ce854bdedae5"
#define OTHER_SHA256 \
	"0000000000000000000000000000000000000000000000000000000000000001"

static const char base_text[] =
	"{"
	"\"upstream\": {\"url\": \"https://business.aliyuncs.com\"},"
	"\"accounts\": {\"main\": {\"site\": \"cn\","
	"    \"access_key_id\": \"LTAI5tTestId\","
	"    \"access_key_secret\": \"" INLINE_SECRET "\"}},"
	"\"tenants\": {\"team-a\": {\"account\": \"main\"}},"
	"\"api_keys\": [{\"tenant\": \"team-a\", \"sha256\": \""
	    DEMO_KEY_SHA256 "\"}]"
	"}";

/* Bounds as conf/README.md documents them, checked against the code. */
struct bound {
	const char	*section;
	const char	*key;
	long long	 min;
	long long	 max;
};

static const struct bound int_bounds[] = {
	{ "listen", "port", 0, 65535 },
	{ "server", "workers", 0, 256 },
	{ "server", "body_max_bytes", 1024, 1048576 },
	{ "server", "header_max_bytes", 1024, 65536 },
	{ "server", "read_timeout_ms", 1, 600000 },
	{ "redis", "port", 1, 65535 },
	{ "redis", "connect_timeout_ms", 1, 600000 },
	{ "redis", "command_timeout_ms", 1, 10000 },
	{ "idempotency", "ttl_s", 3600, 2592000 },
	{ "idempotency", "lease_ms", 1000, 3600000 },
	{ "idempotency", "wait_max_s", 0, 300 },
	{ "idempotency", "retry_after_s", 1, 3600 },
	{ "upstream", "timeout_ms", 1, 600000 },
	{ "upstream", "connect_timeout_ms", 1, 600000 },
	{ "upstream", "max_connections", 1, 1024 },
	{ "upstream", "max_attempts", 1, 10 },
};

/* The keys that are not integers, for the every-key check. */
static const char *const other_keys[][2] = {
	{ "listen", "address" }, { "redis", "host" },
	{ "redis", "key_prefix" }, { "upstream", "url" },
	{ "upstream", "ca_file" }, { "upstream", "allow_plain_http" },
	{ "log", "level" },
};

static json_t *
base_tree(void)
{
	json_error_t	 jerr;
	json_t		*root;

	root = json_loads(base_text, 0, &jerr);
	assert_non_null(root);
	return root;
}

/* The object at root.name, created if absent. Borrowed. */
static json_t *
section(json_t *root, const char *name)
{
	json_t	*obj = json_object_get(root, name);

	if (obj == NULL) {
		obj = json_object();
		assert_int_equal(json_object_set_new(root, name, obj), 0);
	}
	return obj;
}

/* Sets root.sec.key to value, taking the reference to value. */
static void
set(json_t *root, const char *sec, const char *key, json_t *value)
{
	assert_int_equal(json_object_set_new(section(root, sec), key, value),
	    0);
}

static json_t *
main_account(json_t *root)
{
	return json_object_get(json_object_get(root, "accounts"), "main");
}

/* Parses root, consuming it. Returns the errors; *cfg gets the result. */
static char *
parse_tree(json_t *root, struct config **cfg)
{
	char	*text, *errs = NULL;

	text = json_dumps(root, JSON_COMPACT);
	assert_non_null(text);
	json_decref(root);
	*cfg = config_parse(text, strlen(text), "test.json", &errs);
	free(text);
	return errs;
}

static struct config *
expect_valid(json_t *root)
{
	struct config	*cfg;
	char		*errs;

	errs = parse_tree(root, &cfg);
	if (cfg == NULL)
		fail_msg("expected a valid config, got:\n%s", errs);
	assert_null(errs);
	return cfg;
}

/* Expects rejection with needle among the errors; returns them. */
static char *
expect_error(json_t *root, const char *needle)
{
	struct config	*cfg;
	char		*errs;

	errs = parse_tree(root, &cfg);
	assert_null(cfg);
	assert_non_null(errs);
	if (strstr(errs, needle) == NULL)
		fail_msg("expected \"%s\" in:\n%s", needle, errs);
	return errs;
}

static void
expect_rejected(json_t *root, const char *needle)
{
	free(expect_error(root, needle));
}

static size_t
count_lines(const char *s)
{
	size_t	 n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

/* Writes len bytes to a new temporary file. Returns its path; free it. */
static char *
temp_file(const char *content, size_t len)
{
	char	*path;
	int	 fd;

	path = strdup("/tmp/acrgw-test-config-XXXXXX");
	assert_non_null(path);
	fd = mkstemp(path);
	assert_true(fd != -1);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	return path;
}

/* The base tree with the main account's secret moved to a file. */
static json_t *
tree_with_secret_file(const char *path)
{
	json_t	*root = base_tree();
	json_t	*account = main_account(root);

	assert_int_equal(json_object_del(account, "access_key_secret"), 0);
	assert_int_equal(json_object_set_new(account, "access_key_secret_file",
	    json_string(path)), 0);
	return root;
}

static void
sha256(const char *s, unsigned char out[32])
{
	unsigned int	 len = 0;

	assert_int_equal(EVP_Digest(s, strlen(s), out, &len, EVP_sha256(),
	    NULL), 1);
	assert_int_equal(len, 32);
}

/* Whether creds sign as the given secret would. */
static int
creds_hold_secret(const struct credentials *creds, const char *secret)
{
	char	 got[SIGNER_SIGNATURE_LEN + 1], want[SIGNER_SIGNATURE_LEN + 1];

	assert_int_equal(signer_signature(creds, "POST&%2F&x%3D1", got), 0);
	assert_int_equal(signer_signature_with_secret(secret, "POST&%2F&x%3D1",
	    want), 0);
	return strcmp(got, want) == 0;
}

static void
example_parses_once_secret_files_exist(void **state)
{
	const char	 secret[] = "example-secret\n";
	struct config	*cfg;
	json_error_t	 jerr;
	json_t		*root, *account;
	const char	*name;
	unsigned char	 demo[32];
	char		*path;

	(void)state;
	path = temp_file(secret, strlen(secret));
	root = json_load_file(EXAMPLE_PATH, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		fail_msg("%s:%d: %s", EXAMPLE_PATH, jerr.line, jerr.text);

	/* The documented /run/secrets paths do not exist on a test host. */
	json_object_foreach(json_object_get(root, "accounts"), name, account)
		assert_int_equal(json_object_set_new(account,
		    "access_key_secret_file", json_string(path)), 0);
	cfg = expect_valid(root);

	assert_string_equal(cfg->upstream_host, "business.aliyuncs.com");
	assert_int_equal(cfg->upstream_port, 443);
	assert_true(cfg->upstream_is_https);
	assert_string_equal(cfg->upstream_ca_file,
	    "/etc/ssl/certs/ca-certificates.crt");
	assert_int_equal(cfg->naccounts, 2);
	assert_int_equal(cfg->accounts[1].site, SITE_INTL);
	assert_int_equal(cfg->ntenants, 2);
	assert_int_equal(cfg->napi_keys, 2);

	/* The first key is the documented demo key of team-a. */
	sha256(DEMO_KEY, demo);
	assert_memory_equal(cfg->api_keys[0].sha256, demo, 32);
	assert_string_equal(cfg->api_keys[0].tenant->name, "team-a");
	assert_true(creds_hold_secret(cfg->accounts[0].creds,
	    "example-secret"));

	config_free(cfg);
	unlink(path);
	free(path);
}

static void
example_config_sets_every_key(void **state)
{
	json_error_t	 jerr;
	json_t		*root;
	size_t		 i;

	(void)state;
	root = json_load_file(EXAMPLE_PATH, 0, &jerr);
	assert_non_null(root);
	for (i = 0; i < sizeof(int_bounds) / sizeof(int_bounds[0]); i++) {
		if (json_object_get(json_object_get(root,
		    int_bounds[i].section), int_bounds[i].key) == NULL)
			fail_msg("example lacks %s.%s", int_bounds[i].section,
			    int_bounds[i].key);
	}
	for (i = 0; i < sizeof(other_keys) / sizeof(other_keys[0]); i++) {
		if (json_object_get(json_object_get(root, other_keys[i][0]),
		    other_keys[i][1]) == NULL)
			fail_msg("example lacks %s.%s", other_keys[i][0],
			    other_keys[i][1]);
	}
	json_decref(root);
}

static void
minimal_file_takes_the_documented_defaults(void **state)
{
	struct config	*cfg;
	char		*errs = NULL;

	(void)state;
	cfg = config_load(FIXTURES_DIR "/config-minimal.json", &errs);
	if (cfg == NULL)
		fail_msg("%s", errs);

	assert_string_equal(cfg->path, FIXTURES_DIR "/config-minimal.json");
	assert_string_equal(cfg->listen_address, "127.0.0.1");
	assert_int_equal(cfg->listen_port, 8080);
	assert_int_equal(cfg->workers, 0);
	assert_int_equal(cfg->body_max_bytes, 16384);
	assert_int_equal(cfg->header_max_bytes, 8192);
	assert_int_equal(cfg->read_timeout_ms, 10000);
	assert_string_equal(cfg->redis_host, "127.0.0.1");
	assert_int_equal(cfg->redis_port, 6379);
	assert_int_equal(cfg->redis_connect_timeout_ms, 1000);
	assert_int_equal(cfg->redis_command_timeout_ms, 50);
	assert_string_equal(cfg->redis_key_prefix, "acrgw:");
	assert_int_equal(cfg->idem_ttl_s, 86400);
	assert_int_equal(cfg->idem_lease_ms, 45000);
	assert_int_equal(cfg->idem_wait_max_s, 30);
	assert_int_equal(cfg->idem_retry_after_s, 2);
	assert_null(cfg->upstream_ca_file);
	assert_false(cfg->upstream_allow_plain_http);
	assert_int_equal(cfg->upstream_timeout_ms, 30000);
	assert_int_equal(cfg->upstream_connect_timeout_ms, 5000);
	assert_int_equal(cfg->upstream_max_connections, 16);
	assert_int_equal(cfg->upstream_max_attempts, 3);
	assert_int_equal(cfg->log_level, LOG_INFO);
	assert_string_equal(credentials_access_key_id(cfg->accounts[0].creds),
	    "LTAI5tFixtureMinimal");
	assert_true(creds_hold_secret(cfg->accounts[0].creds,
	    "minimal-fixture-secret"));
	config_free(cfg);
}

static void
values_given_reach_their_fields(void **state)
{
	struct config	*cfg;
	json_t		*root = base_tree();

	(void)state;
	set(root, "listen", "address", json_string("::1"));
	set(root, "listen", "port", json_integer(9001));
	set(root, "server", "workers", json_integer(3));
	set(root, "server", "body_max_bytes", json_integer(2048));
	set(root, "server", "header_max_bytes", json_integer(4096));
	set(root, "server", "read_timeout_ms", json_integer(11));
	set(root, "redis", "host", json_string("redis.internal"));
	set(root, "redis", "port", json_integer(6380));
	set(root, "redis", "connect_timeout_ms", json_integer(13));
	set(root, "redis", "command_timeout_ms", json_integer(14));
	set(root, "redis", "key_prefix", json_string("gw:"));
	set(root, "idempotency", "ttl_s", json_integer(7200));
	set(root, "idempotency", "lease_ms", json_integer(60000));
	set(root, "idempotency", "wait_max_s", json_integer(5));
	set(root, "idempotency", "retry_after_s", json_integer(6));
	set(root, "upstream", "ca_file", json_string("/etc/ca.pem"));
	set(root, "upstream", "timeout_ms", json_integer(16));
	set(root, "upstream", "connect_timeout_ms", json_integer(15));
	set(root, "upstream", "max_connections", json_integer(17));
	set(root, "upstream", "max_attempts", json_integer(4));
	set(root, "log", "level", json_string("debug"));
	cfg = expect_valid(root);

	assert_string_equal(cfg->listen_address, "::1");
	assert_int_equal(cfg->listen_port, 9001);
	assert_int_equal(cfg->workers, 3);
	assert_int_equal(cfg->body_max_bytes, 2048);
	assert_int_equal(cfg->header_max_bytes, 4096);
	assert_int_equal(cfg->read_timeout_ms, 11);
	assert_string_equal(cfg->redis_host, "redis.internal");
	assert_int_equal(cfg->redis_port, 6380);
	assert_int_equal(cfg->redis_connect_timeout_ms, 13);
	assert_int_equal(cfg->redis_command_timeout_ms, 14);
	assert_string_equal(cfg->redis_key_prefix, "gw:");
	assert_int_equal(cfg->idem_ttl_s, 7200);
	assert_int_equal(cfg->idem_lease_ms, 60000);
	assert_int_equal(cfg->idem_wait_max_s, 5);
	assert_int_equal(cfg->idem_retry_after_s, 6);
	assert_string_equal(cfg->upstream_ca_file, "/etc/ca.pem");
	assert_int_equal(cfg->upstream_timeout_ms, 16);
	assert_int_equal(cfg->upstream_connect_timeout_ms, 15);
	assert_int_equal(cfg->upstream_max_connections, 17);
	assert_int_equal(cfg->upstream_max_attempts, 4);
	assert_int_equal(cfg->log_level, LOG_DEBUG);
	config_free(cfg);
}

/*
 * A tree where only the key under test can be wrong: the upstream timeout
 * sits below the lease's minimum and the lease above the timeout's
 * maximum, so the lease rule holds at every bound of either.
 */
static json_t *
bounds_tree(const struct bound *b, long long value)
{
	json_t	*root = base_tree();

	set(root, "upstream", "timeout_ms", json_integer(500));
	set(root, "idempotency", "lease_ms", json_integer(3600000));
	set(root, b->section, b->key, json_integer(value));
	return root;
}

static void
integer_keys_accept_bounds_reject_beyond(void **state)
{
	const struct bound	*b;
	char			 msg[160];
	size_t			 i;

	(void)state;
	for (i = 0; i < sizeof(int_bounds) / sizeof(int_bounds[0]); i++) {
		b = &int_bounds[i];
		(void)snprintf(msg, sizeof(msg),
		    "%s.%s: must be between %lld and %lld\n", b->section,
		    b->key, b->min, b->max);

		config_free(expect_valid(bounds_tree(b, b->min)));
		config_free(expect_valid(bounds_tree(b, b->max)));
		expect_rejected(bounds_tree(b, b->min - 1), msg);
		expect_rejected(bounds_tree(b, b->max + 1), msg);
	}
}

static void
string_keys_reject_empty_and_overlong_values(void **state)
{
	char	 prefix[66];
	json_t	*root;

	(void)state;
	memset(prefix, 'p', 64);
	prefix[64] = '\0';
	root = base_tree();
	set(root, "redis", "key_prefix", json_string(prefix));
	config_free(expect_valid(root));

	prefix[64] = 'p';
	prefix[65] = '\0';
	root = base_tree();
	set(root, "redis", "key_prefix", json_string(prefix));
	expect_rejected(root, "redis.key_prefix: must be 1 to 64 bytes long");

	root = base_tree();
	set(root, "listen", "address", json_string(""));
	expect_rejected(root, "listen.address: must be 1 to 255 bytes long");

	root = base_tree();
	set(root, "redis", "host", json_string("redis\nhost"));
	expect_rejected(root,
	    "redis.host: must not contain control characters");
}

static void
log_level_accepts_only_the_four_names(void **state)
{
	static const char *const good[] = { "debug", "info", "warn", "error" };
	static const enum log_level want[] = {
		LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR,
	};
	struct config	*cfg;
	json_t		*root;
	size_t		 i;

	(void)state;
	for (i = 0; i < 4; i++) {
		root = base_tree();
		set(root, "log", "level", json_string(good[i]));
		cfg = expect_valid(root);
		assert_int_equal(cfg->log_level, want[i]);
		config_free(cfg);
	}

	root = base_tree();
	set(root, "log", "level", json_string("verbose"));
	expect_rejected(root,
	    "log.level: must be one of debug, info, warn, error");
	root = base_tree();
	set(root, "log", "level", json_integer(1));
	expect_rejected(root, "log.level: must be one of");
}

static void
unknown_keys_are_rejected_at_every_level(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	set(root, "lisen", "port", json_integer(1));
	expect_rejected(root, "lisen: unknown key\n");

	root = base_tree();
	set(root, "server", "worker", json_integer(1));
	expect_rejected(root, "server.worker: unknown key\n");

	root = base_tree();
	json_object_set_new(main_account(root), "region", json_string("x"));
	expect_rejected(root, "accounts.main.region: unknown key\n");

	root = base_tree();
	json_object_set_new(json_object_get(json_object_get(root, "tenants"),
	    "team-a"), "quota", json_integer(3));
	expect_rejected(root, "tenants.team-a.quota: unknown key\n");

	root = base_tree();
	json_object_set_new(json_array_get(json_object_get(root, "api_keys"),
	    0), "key", json_string("x"));
	expect_rejected(root, "api_keys[0].key: unknown key\n");
}

static void
wrong_types_are_rejected(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	set(root, "listen", "port", json_string("8080"));
	expect_rejected(root, "listen.port: must be an integer");

	root = base_tree();
	set(root, "server", "workers", json_real(1.5));
	expect_rejected(root, "server.workers: must be an integer");

	root = base_tree();
	set(root, "upstream", "allow_plain_http", json_string("yes"));
	expect_rejected(root,
	    "upstream.allow_plain_http: must be true or false");

	root = base_tree();
	set(root, "upstream", "ca_file", json_null());
	expect_rejected(root, "upstream.ca_file: must be a string");

	root = base_tree();
	json_object_set_new(root, "listen", json_array());
	expect_rejected(root, "listen: must be an object");

	root = base_tree();
	json_object_set_new(root, "accounts", json_array());
	expect_rejected(root, "accounts: must be an object");

	root = base_tree();
	json_object_set_new(root, "api_keys", json_object());
	expect_rejected(root, "api_keys: must be an array");

	root = base_tree();
	json_object_set_new(json_object_get(root, "tenants"), "team-a",
	    json_string("main"));
	expect_rejected(root, "tenants.team-a: must be an object");
}

static void
missing_required_keys_are_all_reported(void **state)
{
	char	*errs;

	(void)state;
	errs = expect_error(json_object(), "upstream.url: is required\n");
	assert_non_null(strstr(errs, "accounts: is required"));
	assert_non_null(strstr(errs, "tenants: is required"));
	assert_non_null(strstr(errs, "api_keys: is required"));
	assert_int_equal(count_lines(errs), 4);
	free(errs);
}

static void
empty_accounts_tenants_and_keys_are_rejected(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	json_object_set_new(root, "accounts", json_object());
	expect_rejected(root, "accounts: needs at least one account");

	root = base_tree();
	json_object_set_new(root, "tenants", json_object());
	expect_rejected(root, "tenants: needs at least one tenant");

	root = base_tree();
	json_object_set_new(root, "api_keys", json_array());
	expect_rejected(root, "api_keys: must be an array of at least one");
}

static void
upstream_url_yields_host_and_port(void **state)
{
	static const struct {
		const char	*url;
		const char	*host;
		int		 port;
	} good[] = {
		{ "https://business.aliyuncs.com", "business.aliyuncs.com",
		    443 },
		{ "https://business.aliyuncs.com/", "business.aliyuncs.com",
		    443 },
		{ "https://127.0.0.1:8443", "127.0.0.1", 8443 },
		{ "https://vendor-mock:65535/", "vendor-mock", 65535 },
	};
	struct config	*cfg;
	json_t		*root;
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		root = base_tree();
		set(root, "upstream", "url", json_string(good[i].url));
		cfg = expect_valid(root);
		assert_string_equal(cfg->upstream_host, good[i].host);
		assert_int_equal(cfg->upstream_port, good[i].port);
		assert_true(cfg->upstream_is_https);
		config_free(cfg);
	}
}

static void
url_beyond_host_and_port_is_rejected(void **state)
{
	static const char *const bad[] = {
		"https://business.aliyuncs.com/v1",
		"https://business.aliyuncs.com?Action=x",
		"https://business.aliyuncs.com#top",
		"https://user:pass@business.aliyuncs.com",
		"https://business.aliyuncs.com:0",
		"https://business.aliyuncs.com:65536",
		"https://business.aliyuncs.com:",
		"https://business.aliyuncs.com:443x",
		"https://business.aliyuncs.com//",
		"https://",
		"https://-host",
		"https:///path",
	};
	json_t	*root;
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		root = base_tree();
		set(root, "upstream", "url", json_string(bad[i]));
		expect_rejected(root,
		    "upstream.url: must be https://host[:port]");
	}

	root = base_tree();
	set(root, "upstream", "url",
	    json_string("ftp://business.aliyuncs.com"));
	expect_rejected(root, "upstream.url: must start with https://");
	root = base_tree();
	set(root, "upstream", "url", json_string("business.aliyuncs.com"));
	expect_rejected(root, "upstream.url: must start with https://");
}

static void
plain_http_url_needs_the_flag(void **state)
{
	struct config	*cfg;
	json_t		*root;

	(void)state;
	root = base_tree();
	set(root, "upstream", "url", json_string("http://127.0.0.1:9090"));
	expect_rejected(root,
	    "upstream.url: http:// needs upstream.allow_plain_http set to true");

	root = base_tree();
	set(root, "upstream", "url", json_string("http://mock/"));
	set(root, "upstream", "allow_plain_http", json_true());
	cfg = expect_valid(root);
	assert_false(cfg->upstream_is_https);
	assert_string_equal(cfg->upstream_host, "mock");
	assert_int_equal(cfg->upstream_port, 80);
	config_free(cfg);
}

static void
lease_not_above_upstream_timeout_is_rejected(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	set(root, "idempotency", "lease_ms", json_integer(30000));
	set(root, "upstream", "timeout_ms", json_integer(30000));
	expect_rejected(root,
	    "idempotency.lease_ms: must be greater than upstream.timeout_ms (30000): a lease must outlive the vendor call it guards");

	/* The default lease against a raised timeout fails the same way. */
	root = base_tree();
	set(root, "upstream", "timeout_ms", json_integer(60000));
	expect_rejected(root,
	    "idempotency.lease_ms: must be greater than upstream.timeout_ms (60000)");

	root = base_tree();
	set(root, "idempotency", "lease_ms", json_integer(30001));
	set(root, "upstream", "timeout_ms", json_integer(30000));
	config_free(expect_valid(root));
}

static void
secret_file_loses_one_trailing_newline(void **state)
{
	const char	 secret[] = "file-Secret-42\n";
	struct config	*cfg;
	char		*path;

	(void)state;
	path = temp_file(secret, strlen(secret));
	cfg = expect_valid(tree_with_secret_file(path));
	assert_true(creds_hold_secret(cfg->accounts[0].creds,
	    "file-Secret-42"));
	assert_false(creds_hold_secret(cfg->accounts[0].creds,
	    "file-Secret-42\n"));
	config_free(cfg);
	unlink(path);
	free(path);

	/* Without a newline the whole file is the secret. */
	path = temp_file("no-newline", 10);
	cfg = expect_valid(tree_with_secret_file(path));
	assert_true(creds_hold_secret(cfg->accounts[0].creds, "no-newline"));
	config_free(cfg);
	unlink(path);
	free(path);
}

static void
secret_file_with_extra_lines_is_rejected(void **state)
{
	static const char *const bad[] = {
		"two-newlines\n\n", "two\nlines\n", "crlf-line\r\n", "\n", "",
	};
	char	*path, *errs;
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		path = temp_file(bad[i], strlen(bad[i]));
		errs = expect_error(tree_with_secret_file(path),
		    "accounts.main.access_key_secret_file: ");
		assert_null(strstr(errs, "two-newlines"));
		assert_null(strstr(errs, "crlf-line"));
		free(errs);
		unlink(path);
		free(path);
	}
}

static void
missing_secret_file_is_reported_with_its_path(void **state)
{
	(void)state;
	expect_rejected(tree_with_secret_file("/nonexistent/acr-main"),
	    "accounts.main.access_key_secret_file: cannot read /nonexistent/acr-main: No such file or directory");
	expect_rejected(tree_with_secret_file("/tmp"),
	    "cannot read /tmp: not a regular file");
}

static void
inline_and_file_secret_together_are_rejected(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	json_object_set_new(main_account(root), "access_key_secret_file",
	    json_string("/run/secrets/acr-main"));
	expect_rejected(root,
	    "accounts.main: give access_key_secret or access_key_secret_file, not both");
}

static void
account_without_any_secret_is_rejected(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	json_object_del(main_account(root), "access_key_secret");
	expect_rejected(root,
	    "accounts.main: access_key_secret_file (or access_key_secret) is required");
}

static void
account_site_and_key_id_are_checked(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	json_object_set_new(main_account(root), "site", json_string("eu"));
	expect_rejected(root, "accounts.main.site: must be \"cn\" or \"intl\"");

	root = base_tree();
	json_object_del(main_account(root), "site");
	expect_rejected(root, "accounts.main.site: is required");

	root = base_tree();
	json_object_del(main_account(root), "access_key_id");
	expect_rejected(root, "accounts.main.access_key_id: is required");
}

static void
security_token_is_an_optional_string(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	json_object_set_new(main_account(root), "security_token",
	    json_string("CAIS-sts-token"));
	config_free(expect_valid(root));

	root = base_tree();
	json_object_set_new(main_account(root), "security_token",
	    json_integer(1));
	expect_rejected(root,
	    "accounts.main.security_token: must be a string");
}

static void
names_outside_the_allowed_set_are_rejected(void **state)
{
	char	 long_name[66];
	json_t	*root, *tenants;

	(void)state;
	root = base_tree();
	json_object_set_new(json_object_get(root, "accounts"), "Main Acct",
	    json_deep_copy(main_account(root)));
	expect_rejected(root,
	    "accounts.Main?Acct: name must be 1 to 64 characters from a-z 0-9 _ -");

	memset(long_name, 't', 65);
	long_name[65] = '\0';
	root = base_tree();
	tenants = json_object_get(root, "tenants");
	json_object_set_new(tenants, long_name,
	    json_deep_copy(json_object_get(tenants, "team-a")));
	expect_rejected(root, "...: name must be 1 to 64 characters");

	/* Exactly 64 is fine. */
	long_name[64] = '\0';
	root = base_tree();
	tenants = json_object_get(root, "tenants");
	json_object_set_new(tenants, long_name,
	    json_deep_copy(json_object_get(tenants, "team-a")));
	config_free(expect_valid(root));
}

static void
tenant_naming_an_unknown_account_is_rejected(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	json_object_set_new(json_object_get(json_object_get(root, "tenants"),
	    "team-a"), "account", json_string("backup"));
	expect_rejected(root,
	    "tenants.team-a.account: no account named backup");
}

static void
api_key_naming_an_unknown_tenant_is_rejected(void **state)
{
	json_t	*root;

	(void)state;
	root = base_tree();
	json_object_set_new(json_array_get(json_object_get(root, "api_keys"),
	    0), "tenant", json_string("team-b"));
	expect_rejected(root, "api_keys[0].tenant: no tenant named team-b");
}

/* The demo hash in capitals. */
static void
upper_demo_hash(char out[65])
{
	size_t	 i;

	for (i = 0; i < 64; i++)
		out[i] = (char)toupper((unsigned char)DEMO_KEY_SHA256[i]);
	out[64] = '\0';
}

static void
api_key_hash_must_be_64_hex_digits(void **state)
{
	char	 bad[4][66];
	json_t	*root, *key;
	size_t	 i;

	(void)state;
	/* One digit short, one too many, one not hex, none at all. */
	memcpy(bad[0], DEMO_KEY_SHA256, 63);
	bad[0][63] = '\0';
	memcpy(bad[1], DEMO_KEY_SHA256 "0", 66);
	memcpy(bad[2], DEMO_KEY_SHA256, 65);
	bad[2][63] = 'g';
	bad[3][0] = '\0';

	for (i = 0; i < 4; i++) {
		root = base_tree();
		key = json_array_get(json_object_get(root, "api_keys"), 0);
		json_object_set_new(key, "sha256", json_string(bad[i]));
		expect_rejected(root,
		    "api_keys[0].sha256: must be 64 hex digits");
	}

	root = base_tree();
	key = json_array_get(json_object_get(root, "api_keys"), 0);
	json_object_del(key, "sha256");
	expect_rejected(root, "api_keys[0].sha256: is required");
}

static void
api_key_hash_accepts_uppercase_and_comment(void **state)
{
	struct config	*cfg;
	json_t		*root, *key;
	unsigned char	 demo[32];
	char		 upper[65];

	(void)state;
	upper_demo_hash(upper);
	root = base_tree();
	key = json_array_get(json_object_get(root, "api_keys"), 0);
	json_object_set_new(key, "sha256", json_string(upper));
	json_object_set_new(key, "comment", json_string("CI pipeline"));
	cfg = expect_valid(root);

	sha256(DEMO_KEY, demo);
	assert_memory_equal(cfg->api_keys[0].sha256, demo, 32);
	config_free(cfg);
}

static void
duplicate_api_key_hash_is_rejected(void **state)
{
	json_t	*root, *keys, *dup;
	char	 upper[65];

	(void)state;
	root = base_tree();
	keys = json_object_get(root, "api_keys");
	json_array_append_new(keys, json_pack("{s:s, s:s}", "tenant", "team-a",
	    "sha256", OTHER_SHA256));
	/* The same hash in other case is still the same key. */
	upper_demo_hash(upper);
	dup = json_deep_copy(json_array_get(keys, 0));
	json_object_set_new(dup, "sha256", json_string(upper));
	json_array_append_new(keys, dup);
	expect_rejected(root, "api_keys[2].sha256: same hash as api_keys[0]");
}

static void
several_errors_are_reported_in_one_run(void **state)
{
	struct config	*cfg;
	char		*errs = NULL;
	size_t		 i;
	static const char *const want[] = {
		"listen.port: must be between 0 and 65535\n",
		"server.workers: must be an integer\n",
		"server.body_max_byte: unknown key\n",
		"idempotency.ttl_s: must be between 3600 and 2592000\n",
		"upstream.url: must be https://host[:port]",
		"log.level: must be one of debug, info, warn, error\n",
		"accounts.main.site: must be \"cn\" or \"intl\"\n",
		"tenants.team-a.account: no account named mian\n",
		"api_keys[0].tenant: no tenant named team-z\n",
		"api_keys[0].sha256: must be 64 hex digits",
	};

	(void)state;
	cfg = config_load(FIXTURES_DIR "/config-many-errors.json", &errs);
	assert_null(cfg);
	assert_non_null(errs);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (strstr(errs, want[i]) == NULL)
			fail_msg("expected \"%s\" in:\n%s", want[i], errs);
	}
	assert_int_equal(count_lines(errs), sizeof(want) / sizeof(want[0]));
	assert_null(strstr(errs, "many-errors-fixture-secret"));
	free(errs);
}

static void
syntax_error_gives_file_line_and_column(void **state)
{
	/* The trailing comma makes line 4 the first that cannot parse. */
	const char	 text[] = "{\n\t\"listen\": {\n\t\t\"port\": 80,\n"
	    "\t}\n}\n";
	struct config	*cfg;
	char		*errs = NULL;

	(void)state;
	cfg = config_parse(text, strlen(text), "bad.json", &errs);
	assert_null(cfg);
	assert_non_null(errs);
	assert_true(strncmp(errs, "bad.json:4:", 11) == 0);
	assert_int_equal(count_lines(errs), 1);
	free(errs);
}

static void
duplicate_keys_are_syntax_errors(void **state)
{
	const char	 text[] = "{\"log\": {\"level\": \"info\"},\n"
	    "\"log\": {\"level\": \"debug\"}}";
	struct config	*cfg;
	char		*errs = NULL;

	(void)state;
	cfg = config_parse(text, strlen(text), "dup.json", &errs);
	assert_null(cfg);
	assert_non_null(strstr(errs, "dup.json:2:"));
	assert_non_null(strstr(errs, "duplicate object key"));
	free(errs);
}

static void
top_level_must_be_an_object(void **state)
{
	struct config	*cfg;
	char		*errs = NULL;

	(void)state;
	cfg = config_parse("[1, 2]", 6, "array.json", &errs);
	assert_null(cfg);
	assert_string_equal(errs,
	    "array.json: the top level must be an object\n");
	free(errs);
}

/* Cases where a secret sits right where the error is. */
static void
no_error_text_contains_the_secret(void **state)
{
	static const char *const texts[] = {
		/* Unquoted: jansson's own text would quote the token. */
		"{\"accounts\": {\"main\": {\"access_key_secret\": "
		    "Unquoted7Secret}}}",
		/* Unterminated string. */
		"{\"accounts\": {\"main\": {\"access_key_secret\": "
		    "\"Unterminated7Secret",
		/* A raw newline inside the string. */
		"{\"accounts\": {\"main\": {\"access_key_secret\": "
		    "\"Newline7\nSecret\"}}}",
	};
	static const char *const secrets[] = {
		"Unquoted7Secret", "Unterminated7Secret", "Newline7",
	};
	struct config	*cfg;
	json_t		*root, *account;
	char		*errs;
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		cfg = config_parse(texts[i], strlen(texts[i]), "s.json", &errs);
		assert_null(cfg);
		assert_non_null(errs);
		assert_non_null(strstr(errs, "s.json:1:"));
		if (strstr(errs, secrets[i]) != NULL)
			fail_msg("secret leaked: %s", errs);
		free(errs);
	}

	/* Every account error at once, next to a valid inline secret. */
	root = base_tree();
	account = main_account(root);
	json_object_set_new(account, "site", json_string("mars"));
	json_object_set_new(account, "access_key_secret_file",
	    json_string("/nonexistent"));
	json_object_set_new(account, "secret", json_string(INLINE_SECRET));
	json_object_set_new(account, "security_token",
	    json_string("Token7Secret\x01"));
	errs = expect_error(root, "not both");
	assert_non_null(strstr(errs, "accounts.main.secret: unknown key"));
	assert_non_null(strstr(errs, "accounts.main.site: must be"));
	assert_non_null(strstr(errs,
	    "accounts.main.security_token: must not contain control characters"));
	assert_null(strstr(errs, INLINE_SECRET));
	assert_null(strstr(errs, "Token7Secret"));
	free(errs);

	/* A secret with a control character in it. */
	root = base_tree();
	json_object_set_new(main_account(root), "access_key_secret",
	    json_string("Ctrl7Secret\t"));
	errs = expect_error(root,
	    "accounts.main.access_key_secret: must not contain control characters");
	assert_null(strstr(errs, "Ctrl7Secret"));
	free(errs);
}

static void
load_reports_a_missing_or_oversized_file(void **state)
{
	struct config	*cfg;
	char		*errs = NULL, *big, *path;
	size_t		 big_len = 1024 * 1024 + 1;

	(void)state;
	cfg = config_load("/nonexistent/acr-gateway.json", &errs);
	assert_null(cfg);
	assert_string_equal(errs,
	    "/nonexistent/acr-gateway.json: cannot read: No such file or directory\n");
	free(errs);

	big = malloc(big_len);
	assert_non_null(big);
	memset(big, ' ', big_len);
	path = temp_file(big, big_len);
	cfg = config_load(path, &errs);
	assert_null(cfg);
	assert_non_null(strstr(errs, "cannot read: larger than 1048576 bytes"));
	free(errs);
	unlink(path);
	free(path);
	free(big);
}

static void
tenant_lookup_finds_by_exact_name(void **state)
{
	const struct config_tenant	*t;
	struct config			*cfg;

	(void)state;
	cfg = expect_valid(base_tree());
	t = config_tenant(cfg, "team-a");
	assert_non_null(t);
	assert_string_equal(t->name, "team-a");
	assert_ptr_equal(t->account, &cfg->accounts[0]);
	assert_ptr_equal(cfg->api_keys[0].tenant, t);
	assert_null(config_tenant(cfg, "team"));
	assert_null(config_tenant(cfg, "TEAM-A"));
	config_free(cfg);
	config_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(example_parses_once_secret_files_exist),
		cmocka_unit_test(example_config_sets_every_key),
		cmocka_unit_test(minimal_file_takes_the_documented_defaults),
		cmocka_unit_test(values_given_reach_their_fields),
		cmocka_unit_test(integer_keys_accept_bounds_reject_beyond),
		cmocka_unit_test(string_keys_reject_empty_and_overlong_values),
		cmocka_unit_test(log_level_accepts_only_the_four_names),
		cmocka_unit_test(unknown_keys_are_rejected_at_every_level),
		cmocka_unit_test(wrong_types_are_rejected),
		cmocka_unit_test(missing_required_keys_are_all_reported),
		cmocka_unit_test(empty_accounts_tenants_and_keys_are_rejected),
		cmocka_unit_test(upstream_url_yields_host_and_port),
		cmocka_unit_test(url_beyond_host_and_port_is_rejected),
		cmocka_unit_test(plain_http_url_needs_the_flag),
		cmocka_unit_test(lease_not_above_upstream_timeout_is_rejected),
		cmocka_unit_test(secret_file_loses_one_trailing_newline),
		cmocka_unit_test(secret_file_with_extra_lines_is_rejected),
		cmocka_unit_test(missing_secret_file_is_reported_with_its_path),
		cmocka_unit_test(inline_and_file_secret_together_are_rejected),
		cmocka_unit_test(account_without_any_secret_is_rejected),
		cmocka_unit_test(account_site_and_key_id_are_checked),
		cmocka_unit_test(security_token_is_an_optional_string),
		cmocka_unit_test(names_outside_the_allowed_set_are_rejected),
		cmocka_unit_test(tenant_naming_an_unknown_account_is_rejected),
		cmocka_unit_test(api_key_naming_an_unknown_tenant_is_rejected),
		cmocka_unit_test(api_key_hash_must_be_64_hex_digits),
		cmocka_unit_test(api_key_hash_accepts_uppercase_and_comment),
		cmocka_unit_test(duplicate_api_key_hash_is_rejected),
		cmocka_unit_test(several_errors_are_reported_in_one_run),
		cmocka_unit_test(syntax_error_gives_file_line_and_column),
		cmocka_unit_test(duplicate_keys_are_syntax_errors),
		cmocka_unit_test(top_level_must_be_an_object),
		cmocka_unit_test(no_error_text_contains_the_secret),
		cmocka_unit_test(load_reports_a_missing_or_oversized_file),
		cmocka_unit_test(tenant_lookup_finds_by_exact_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
