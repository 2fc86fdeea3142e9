/*
 * Unit tests for auth.c: the Bearer scheme, the token's shape and the
 * lookup of its hash among the configured keys.
 *
 * The config is built once per run from JSON whose hashes are computed
 * here, so every key below is known only to this file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "auth.h"
#include "config.h"

#define KEY_A		"key-for-team-a-Qm9vYmFy"
#define KEY_B		"key-for-team-b-WmFwcGVk"
#define KEY_PADDED	"cGFkZGVkLWtleQ=="
#define TOKEN_MAX	512

/* SHA-256 of s as 64 lowercase hex digits into out[65]. */
static void
sha256_hex(const char *s, char out[65])
{
	static const char	 digits[] = "0123456789abcdef";
	unsigned char		 md[32];
	unsigned int		 len = 0;
	size_t			 i;

	assert_int_equal(EVP_Digest(s, strlen(s), md, &len, EVP_sha256(),
	    NULL), 1);
	for (i = 0; i < 32; i++) {
		out[2 * i] = digits[md[i] >> 4];
		out[2 * i + 1] = digits[md[i] & 0x0f];
	}
	out[64] = '\0';
}

static json_t *
key_entry(const char *tenant, const char *key)
{
	char	 hex[65];

	sha256_hex(key, hex);
	return json_pack("{s:s, s:s}", "tenant", tenant, "sha256", hex);
}

/* A key of len 'k' bytes into out, which holds len + 1. */
static void
long_key(char *out, size_t len)
{
	memset(out, 'k', len);
	out[len] = '\0';
}

static int
setup(void **state)
{
	struct config	*cfg;
	json_t		*root, *keys;
	char		*text, *errs = NULL, key[TOKEN_MAX + 2];

	keys = json_array();
	json_array_append_new(keys, key_entry("team-a", KEY_A));
	json_array_append_new(keys, key_entry("team-b", KEY_B));
	json_array_append_new(keys, key_entry("team-b", KEY_PADDED));
	/* The longest key accepted, and one byte more, which never matches. */
	long_key(key, TOKEN_MAX);
	json_array_append_new(keys, key_entry("team-a", key));
	long_key(key, TOKEN_MAX + 1);
	json_array_append_new(keys, key_entry("team-b", key));
	root = json_pack("{s:{s:s}, s:{s:{s:s, s:s, s:s}},"
	    " s:{s:{s:s}, s:{s:s}}, s:o}",
	    "upstream", "url", "https://business.aliyuncs.com",
	    "accounts", "main", "site", "cn", "access_key_id", "LTAI5tAuthTest",
	    "access_key_secret", "auth-test-secret",
	    "tenants", "team-a", "account", "main", "team-b", "account", "main",
	    "api_keys", keys);
	if (root == NULL)
		return -1;

	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (text == NULL)
		return -1;
	cfg = config_parse(text, strlen(text), "auth-test.json", &errs);
	free(text);
	if (cfg == NULL) {
		fprintf(stderr, "%s", errs);
		free(errs);
		return -1;
	}
	*state = cfg;
	return 0;
}

static int
teardown(void **state)
{
	config_free(*state);
	return 0;
}

static void
assert_tenant(const struct config *cfg, const char *header,
    const char *want)
{
	const struct config_tenant	*t = auth_tenant(cfg, header);

	if (t == NULL)
		fail_msg("no tenant for \"%s\"", header);
	assert_string_equal(t->name, want);
}

static void
valid_key_returns_its_tenant(void **state)
{
	assert_tenant(*state, "Bearer " KEY_A, "team-a");
}

static void
two_keys_map_to_two_tenants(void **state)
{
	assert_tenant(*state, "Bearer " KEY_A, "team-a");
	assert_tenant(*state, "Bearer " KEY_B, "team-b");
	assert_tenant(*state, "Bearer " KEY_PADDED, "team-b");
}

static void
scheme_matches_in_any_case(void **state)
{
	assert_tenant(*state, "bearer " KEY_A, "team-a");
	assert_tenant(*state, "BEARER " KEY_A, "team-a");
	assert_tenant(*state, "bEaReR " KEY_B, "team-b");
}

static void
several_spaces_may_follow_the_scheme(void **state)
{
	assert_tenant(*state, "Bearer    " KEY_A, "team-a");
}

static void
wrong_key_returns_null(void **state)
{
	assert_null(auth_tenant(*state, "Bearer key-for-team-c"));
	/* Keys are case-sensitive, and a prefix is not the key. */
	assert_null(auth_tenant(*state, "Bearer KEY-FOR-TEAM-A-QM9VYMFY"));
	assert_null(auth_tenant(*state, "Bearer key-for-team-a"));
	assert_null(auth_tenant(*state, "Bearer " KEY_A "x"));
}

static void
missing_header_returns_null(void **state)
{
	assert_null(auth_tenant(*state, NULL));
	assert_null(auth_tenant(*state, ""));
	assert_null(auth_tenant(NULL, "Bearer " KEY_A));
}

static void
other_schemes_return_null(void **state)
{
	assert_null(auth_tenant(*state, "Basic dGVhbS1hOnNlY3JldA=="));
	assert_null(auth_tenant(*state, "Token " KEY_A));
	assert_null(auth_tenant(*state, "Bearerx " KEY_A));
	assert_null(auth_tenant(*state, KEY_A));
}

static void
empty_token_returns_null(void **state)
{
	assert_null(auth_tenant(*state, "Bearer"));
	assert_null(auth_tenant(*state, "Bearer "));
	assert_null(auth_tenant(*state, "Bearer     "));
}

static void
malformed_token_returns_null(void **state)
{
	/* No space before the token, or a tab instead. */
	assert_null(auth_tenant(*state, "Bearer" KEY_A));
	assert_null(auth_tenant(*state, "Bearer\t" KEY_A));
	/* Embedded or trailing space, a second token, a stray character. */
	assert_null(auth_tenant(*state, "Bearer key-for team-a"));
	assert_null(auth_tenant(*state, "Bearer " KEY_A " "));
	assert_null(auth_tenant(*state, "Bearer " KEY_A " " KEY_B));
	assert_null(auth_tenant(*state, "Bearer key,for-team-a"));
	/* '=' is padding: only at the end. */
	assert_null(auth_tenant(*state, "Bearer cGFkZGVk=LWtleQ=="));
	assert_null(auth_tenant(*state, "Bearer =="));
}

static void
token_over_512_bytes_returns_null(void **state)
{
	char	 header[sizeof("Bearer ") + TOKEN_MAX + 1];

	memcpy(header, "Bearer ", 7);
	long_key(header + 7, TOKEN_MAX);
	assert_tenant(*state, header, "team-a");

	/* One byte more is refused, though its hash is configured. */
	long_key(header + 7, TOKEN_MAX + 1);
	assert_null(auth_tenant(*state, header));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid_key_returns_its_tenant),
		cmocka_unit_test(two_keys_map_to_two_tenants),
		cmocka_unit_test(scheme_matches_in_any_case),
		cmocka_unit_test(several_spaces_may_follow_the_scheme),
		cmocka_unit_test(wrong_key_returns_null),
		cmocka_unit_test(missing_header_returns_null),
		cmocka_unit_test(other_schemes_return_null),
		cmocka_unit_test(empty_token_returns_null),
		cmocka_unit_test(malformed_token_returns_null),
		cmocka_unit_test(token_over_512_bytes_returns_null),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
