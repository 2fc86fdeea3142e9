/*
 * The signer against the published and our own signature vectors
 * (tests/fixtures/signature-rpc-v1.json), and its helpers on their own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "signer.h"

#define FIXTURE_PATH	FIXTURES_DIR "/signature-rpc-v1.json"
/*
 * The vectors the fixture holds today. Pinned so that a truncated or
 * emptied file fails here instead of passing with nothing checked; raise
 * it when vectors are added.
 */
#define FIXTURE_VECTORS	8

/* 2026-01-15T08:30:00Z, the time the fixture's own vectors use. */
#define FIXTURE_TIME	((time_t)1768465800)
#define FIXTURE_NONCE	"11111111-2222-4333-8444-555555555555"

static const char *
member(const json_t *vector, const char *key)
{
	const char	*s;

	s = json_string_value(json_object_get(vector, key));
	if (s == NULL)
		fail_msg("vector lacks string member %s", key);
	return s;
}

static void
expect_equal(const char *id, const char *what, const char *got,
    const char *want)
{
	if (got == NULL || strcmp(got, want) != 0)
		fail_msg("vector %s: %s\n got  %s\n want %s", id, what,
		    got ? got : "(null)", want);
}

static struct rpc_params *
params_from_json(const json_t *object)
{
	struct rpc_params *params;
	const char	*name;
	json_t		*value;

	params = rpc_params_new();
	json_object_foreach((json_t *)object, name, value) {
		assert_true(json_is_string(value));
		rpc_params_set(params, name, json_string_value(value));
	}
	return params;
}

/* Checks one vector field by field; the failure names the vector. */
static void
check_vector(const json_t *vector)
{
	struct credentials *creds;
	struct rpc_params *params;
	const char	*id, *secret, *docs;
	char		*canonical, *to_sign, *encoded;
	char		 key[256];
	char		 sig[SIGNER_SIGNATURE_LEN + 1];
	char		 sig_creds[SIGNER_SIGNATURE_LEN + 1];

	id = member(vector, "id");
	secret = member(vector, "access_key_secret");
	params = params_from_json(json_object_get(vector, "params"));

	/* The fixture states the key it used: the secret and '&'. */
	if ((size_t)snprintf(key, sizeof(key), "%s&", secret) >= sizeof(key))
		fail_msg("vector %s: secret too long for this test", id);
	expect_equal(id, "hmac_key", key, member(vector, "hmac_key"));

	canonical = signer_canonical_query(params);
	expect_equal(id, "canonical_query", canonical,
	    member(vector, "canonical_query"));

	to_sign = signer_string_to_sign(member(vector, "http_method"),
	    canonical);
	expect_equal(id, "string_to_sign", to_sign,
	    member(vector, "string_to_sign"));

	assert_int_equal(signer_signature_with_secret(secret, to_sign, sig),
	    0);
	expect_equal(id, "signature", sig, member(vector, "signature"));

	/* The same through credentials, the way the gateway signs. */
	creds = credentials_new("id", secret, NULL);
	assert_int_equal(signer_signature(creds, to_sign, sig_creds), 0);
	expect_equal(id, "signature via credentials", sig_creds,
	    member(vector, "signature"));

	encoded = signer_percent_encode(sig, strlen(sig));
	expect_equal(id, "signature_urlencoded", encoded,
	    member(vector, "signature_urlencoded"));

	docs = json_string_value(json_object_get(vector, "expected_from_docs"));
	if (docs != NULL)
		expect_equal(id, "expected_from_docs", sig, docs);

	free(encoded);
	credentials_free(creds);
	free(to_sign);
	free(canonical);
	rpc_params_free(params);
}

static void
every_fixture_vector_matches_field_by_field(void **state)
{
	json_error_t	 err;
	json_t		*root;
	size_t		 i, checked = 0;

	(void)state;
	root = json_load_file(FIXTURE_PATH, 0, &err);
	if (root == NULL)
		fail_msg("%s:%d: %s", FIXTURE_PATH, err.line, err.text);
	assert_true(json_is_array(root));
	assert_int_equal(json_array_size(root), FIXTURE_VECTORS);

	for (i = 0; i < json_array_size(root); i++) {
		check_vector(json_array_get(root, i));
		checked++;
	}
	assert_true(checked > 0);
	assert_int_equal(checked, FIXTURE_VECTORS);
	json_decref(root);
}

/* The call parameters of the fixture's plain-ascii vector. */
static struct rpc_params *
plain_ascii_call(void)
{
	struct rpc_params *params;

	params = rpc_params_new();
	rpc_params_set(params, "Action", "CreateInstance");
	rpc_params_set(params, "Version", "2017-12-14");
	rpc_params_set(params, "Format", "JSON");
	rpc_params_set(params, "ProductCode", "acr");
	rpc_params_set(params, "SubscriptionType", "Subscription");
	rpc_params_set(params, "Parameter.1.Code", "InstanceName");
	rpc_params_set(params, "Parameter.1.Value", "auto-create-instance");
	return params;
}

static void
sign_post_reproduces_the_plain_ascii_vector(void **state)
{
	struct credentials *creds;
	struct rpc_params *params;
	char		*body;

	(void)state;
	creds = credentials_new("testid", "testsecret", NULL);
	params = plain_ascii_call();
	body = signer_sign_post(params, creds, FIXTURE_TIME, FIXTURE_NONCE);
	assert_non_null(body);
	assert_string_equal(body,
	    "AccessKeyId=testid&Action=CreateInstance&Format=JSON"
	    "&Parameter.1.Code=InstanceName"
	    "&Parameter.1.Value=auto-create-instance&ProductCode=acr"
	    "&SignatureMethod=HMAC-SHA1"
	    "&SignatureNonce=" FIXTURE_NONCE
	    "&SignatureVersion=1.0&SubscriptionType=Subscription"
	    "&Timestamp=2026-01-15T08%3A30%3A00Z&Version=2017-12-14"
	    "&Signature=YPHuj5GlwEfp7omozGbe1kcz730%3D");

	free(body);
	rpc_params_free(params);
	credentials_free(creds);
}

static void
sign_post_reproduces_the_security_token_vector(void **state)
{
	struct credentials *creds;
	struct rpc_params *params;
	char		*body;

	(void)state;
	creds = credentials_new("STS.NTestAccessKeyId", "stssecret",
	    "CAIS+abc/def==");
	params = plain_ascii_call();
	body = signer_sign_post(params, creds, FIXTURE_TIME, FIXTURE_NONCE);
	assert_non_null(body);
	assert_non_null(strstr(body,
	    "&SecurityToken=CAIS%2Babc%2Fdef%3D%3D&"));
	assert_non_null(strstr(body,
	    "&Signature=41%2BjpYJktL%2FjsivcxTRIdCNClZo%3D"));

	free(body);
	rpc_params_free(params);
	credentials_free(creds);
}

/* Splits a form body into params, setting the Signature aside. */
static struct rpc_params *
params_from_body(const char *body, char **signature)
{
	struct rpc_params *params;
	char		*copy, *pair, *eq, *save = NULL, *name, *value;

	*signature = NULL;
	params = rpc_params_new();
	copy = strdup(body);
	assert_non_null(copy);
	for (pair = strtok_r(copy, "&", &save); pair != NULL;
	    pair = strtok_r(NULL, "&", &save)) {
		eq = strchr(pair, '=');
		assert_non_null(eq);
		name = signer_percent_decode(pair, (size_t)(eq - pair));
		value = signer_percent_decode(eq + 1, strlen(eq + 1));
		assert_non_null(name);
		assert_non_null(value);
		if (strcmp(name, "Signature") == 0) {
			*signature = value;
			value = NULL;
		} else
			rpc_params_set(params, name, value);
		free(name);
		free(value);
	}
	free(copy);
	return params;
}

static void
sign_post_body_signature_verifies_when_recomputed(void **state)
{
	struct credentials *creds;
	struct rpc_params *params, *received;
	char		*body, *signature, *canonical, *to_sign;
	char		 expected[SIGNER_SIGNATURE_LEN + 1];

	(void)state;
	creds = credentials_new("AKID-team-a", "s3cr3t/with+odd=chars", NULL);
	params = rpc_params_new();
	rpc_params_set(params, "Action", "CreateInstance");
	rpc_params_set(params, "Version", "2017-12-14");
	rpc_params_set(params, "Format", "JSON");
	rpc_params_set(params, "Parameter.1.Value", "my registry*é~");
	body = signer_sign_post(params, creds, FIXTURE_TIME, NULL);
	assert_non_null(body);

	/* What the vendor does: decode, drop Signature, sign the rest. */
	received = params_from_body(body, &signature);
	assert_non_null(signature);
	assert_int_equal(strlen(signature), SIGNER_SIGNATURE_LEN);
	assert_string_equal(rpc_params_get(received, "AccessKeyId"),
	    "AKID-team-a");
	assert_string_equal(rpc_params_get(received, "SignatureMethod"),
	    "HMAC-SHA1");
	assert_string_equal(rpc_params_get(received, "SignatureVersion"),
	    "1.0");
	assert_string_equal(rpc_params_get(received, "Timestamp"),
	    "2026-01-15T08:30:00Z");
	assert_string_equal(rpc_params_get(received, "Parameter.1.Value"),
	    "my registry*é~");
	assert_int_equal(strlen(rpc_params_get(received, "SignatureNonce")),
	    SIGNER_NONCE_LEN);

	canonical = signer_canonical_query(received);
	to_sign = signer_string_to_sign("POST", canonical);
	assert_int_equal(signer_signature_with_secret("s3cr3t/with+odd=chars",
	    to_sign, expected), 0);
	assert_string_equal(signature, expected);

	/* A different secret does not verify. */
	assert_int_equal(signer_signature_with_secret("other", to_sign,
	    expected), 0);
	assert_string_not_equal(signature, expected);

	free(to_sign);
	free(canonical);
	free(signature);
	rpc_params_free(received);
	free(body);
	rpc_params_free(params);
	credentials_free(creds);
}

static void
sign_post_twice_replaces_nonce_and_signs_no_old_signature(void **state)
{
	struct credentials *creds;
	struct rpc_params *params;
	char		*first, *second;

	(void)state;
	creds = credentials_new("testid", "testsecret", NULL);
	params = plain_ascii_call();
	first = signer_sign_post(params, creds, FIXTURE_TIME, "nonce-1");
	rpc_params_set(params, "Signature", "left-over");
	second = signer_sign_post(params, creds, FIXTURE_TIME, "nonce-2");
	assert_non_null(first);
	assert_non_null(second);

	assert_string_equal(rpc_params_get(params, "SignatureNonce"),
	    "nonce-2");
	assert_null(rpc_params_get(params, "Signature"));
	assert_null(strstr(second, "nonce-1"));
	assert_null(strstr(second, "left-over"));
	assert_string_not_equal(first, second);

	free(second);
	free(first);
	rpc_params_free(params);
	credentials_free(creds);
}

static int
is_lower_hex(const char *s)
{
	for (; *s != '\0'; s++) {
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	}
	return 1;
}

static void
nonce_is_32_lowercase_hex_and_fresh_each_time(void **state)
{
	char	 a[SIGNER_NONCE_LEN + 1], b[SIGNER_NONCE_LEN + 1];

	(void)state;
	assert_int_equal(signer_nonce(a), 0);
	assert_int_equal(signer_nonce(b), 0);
	assert_int_equal(strlen(a), 32);
	assert_int_equal(strlen(b), 32);
	assert_true(is_lower_hex(a));
	assert_true(is_lower_hex(b));
	assert_string_not_equal(a, b);
}

static void
sign_post_draws_a_fresh_nonce_when_none_is_given(void **state)
{
	struct credentials *creds;
	struct rpc_params *params;
	char		*body, nonce[SIGNER_NONCE_LEN + 1];

	(void)state;
	creds = credentials_new("testid", "testsecret", NULL);
	params = plain_ascii_call();
	body = signer_sign_post(params, creds, FIXTURE_TIME, NULL);
	assert_non_null(body);
	strcpy(nonce, rpc_params_get(params, "SignatureNonce"));
	assert_int_equal(strlen(nonce), SIGNER_NONCE_LEN);
	assert_true(is_lower_hex(nonce));
	free(body);

	body = signer_sign_post(params, creds, FIXTURE_TIME, NULL);
	assert_non_null(body);
	assert_string_not_equal(rpc_params_get(params, "SignatureNonce"),
	    nonce);

	free(body);
	rpc_params_free(params);
	credentials_free(creds);
}

static void
security_token_is_added_only_when_the_credentials_have_one(void **state)
{
	struct credentials *plain, *sts, *empty;
	struct rpc_params *params;
	char		*body;

	(void)state;
	plain = credentials_new("testid", "testsecret", NULL);
	sts = credentials_new("STS.id", "stssecret", "CAIS+token");
	empty = credentials_new("testid", "testsecret", "");
	params = plain_ascii_call();

	body = signer_sign_post(params, plain, FIXTURE_TIME, FIXTURE_NONCE);
	assert_non_null(body);
	assert_null(rpc_params_get(params, "SecurityToken"));
	assert_null(strstr(body, "SecurityToken"));
	free(body);

	body = signer_sign_post(params, sts, FIXTURE_TIME, FIXTURE_NONCE);
	assert_non_null(body);
	assert_string_equal(rpc_params_get(params, "SecurityToken"),
	    "CAIS+token");
	assert_non_null(strstr(body, "&SecurityToken=CAIS%2Btoken&"));
	free(body);

	/* Re-signed with a long-term key, the old token must not linger. */
	body = signer_sign_post(params, empty, FIXTURE_TIME, FIXTURE_NONCE);
	assert_non_null(body);
	assert_null(rpc_params_get(params, "SecurityToken"));
	assert_null(strstr(body, "SecurityToken"));
	free(body);

	rpc_params_free(params);
	credentials_free(empty);
	credentials_free(sts);
	credentials_free(plain);
}

static void
percent_encode_keeps_unreserved_and_uppercases_hex(void **state)
{
	static const char input[] = "AZaz09-_.~ *+/=&%\xc3\xa9\x01\xff";
	char	*out;

	(void)state;
	out = signer_percent_encode(input, sizeof(input) - 1);
	assert_string_equal(out,
	    "AZaz09-_.~%20%2A%2B%2F%3D%26%25%C3%A9%01%FF");
	free(out);

	/* len is honoured: an embedded NUL is a byte like any other. */
	out = signer_percent_encode("a\0b", 3);
	assert_string_equal(out, "a%00b");
	free(out);
}

static void
percent_decode_round_trips_every_byte_but_nul(void **state)
{
	char	 all[255];
	char	*encoded, *decoded;
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(all); i++)
		all[i] = (char)(i + 1);
	encoded = signer_percent_encode(all, sizeof(all));
	decoded = signer_percent_decode(encoded, strlen(encoded));
	assert_non_null(decoded);
	assert_int_equal(strlen(decoded), sizeof(all));
	assert_memory_equal(decoded, all, sizeof(all));
	free(decoded);
	free(encoded);

	decoded = signer_percent_decode("a+b%2bc%2Fd", 11);
	assert_string_equal(decoded, "a b+c/d");
	free(decoded);
}

static void
percent_decode_rejects_bad_escapes_and_nul(void **state)
{
	static const char *const bad[] = {
		"%4", "%zz", "%00", "%", "ab%", "%4g", "%g4", "x%0",
	};
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (signer_percent_decode(bad[i], strlen(bad[i])) != NULL)
			fail_msg("decoded %s", bad[i]);
	}

	/* A raw NUL inside len is refused too. */
	assert_null(signer_percent_decode("a\0b", 3));
}

static void
rpc_params_set_replaces_a_value_in_place(void **state)
{
	struct rpc_params *params;
	const char	*name, *value;

	(void)state;
	params = rpc_params_new();
	rpc_params_set(params, "Period", "1");
	rpc_params_set(params, "Action", "CreateInstance");
	rpc_params_set(params, "Period", "12");

	assert_int_equal(rpc_params_count(params), 2);
	assert_string_equal(rpc_params_get(params, "Period"), "12");
	rpc_params_at(params, 0, &name, &value);
	assert_string_equal(name, "Period");
	assert_string_equal(value, "12");

	/* Setting a value from its own entry must not read freed memory. */
	rpc_params_set(params, "Action", rpc_params_get(params, "Action"));
	assert_string_equal(rpc_params_get(params, "Action"),
	    "CreateInstance");

	rpc_params_free(params);
}

static void
rpc_params_remove_keeps_the_order_of_the_rest(void **state)
{
	struct rpc_params *params;
	const char	*name, *value;

	(void)state;
	params = rpc_params_new();
	rpc_params_set(params, "A", "1");
	rpc_params_set(params, "B", "2");
	rpc_params_set(params, "C", "3");
	rpc_params_remove(params, "B");
	rpc_params_remove(params, "missing");

	assert_int_equal(rpc_params_count(params), 2);
	assert_null(rpc_params_get(params, "B"));
	rpc_params_at(params, 1, &name, &value);
	assert_string_equal(name, "C");
	assert_string_equal(value, "3");

	rpc_params_free(params);
}

static void
canonical_query_sorts_names_by_unsigned_byte_order(void **state)
{
	struct rpc_params *params;
	char		*query;

	(void)state;
	params = rpc_params_new();
	rpc_params_set(params, "b", "1");
	rpc_params_set(params, "\xc3\xa9", "2");
	rpc_params_set(params, "B", "3");
	rpc_params_set(params, "a_", "4");
	rpc_params_set(params, "a.", "5");
	rpc_params_set(params, "", "6");
	query = signer_canonical_query(params);

	/* '.' 0x2e < '_' 0x5f; 'B' < 'b'; 0xc3 after all ASCII. */
	assert_string_equal(query, "=6&B=3&a.=5&a_=4&b=1&%C3%A9=2");
	free(query);
	rpc_params_free(params);

	params = rpc_params_new();
	query = signer_canonical_query(params);
	assert_string_equal(query, "");
	free(query);
	rpc_params_free(params);
}

static void
timestamp_is_utc_iso8601_to_the_second(void **state)
{
	char	 out[21];

	(void)state;
	signer_timestamp(0, out);
	assert_string_equal(out, "1970-01-01T00:00:00Z");
	signer_timestamp(FIXTURE_TIME, out);
	assert_string_equal(out, "2026-01-15T08:30:00Z");
}

static void
credentials_expose_the_id_and_free_accepts_null(void **state)
{
	struct credentials *creds;

	(void)state;
	creds = credentials_new("AKID", "secret", NULL);
	assert_string_equal(credentials_access_key_id(creds), "AKID");
	credentials_free(creds);
	credentials_free(NULL);
	rpc_params_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_fixture_vector_matches_field_by_field),
		cmocka_unit_test(sign_post_reproduces_the_plain_ascii_vector),
		cmocka_unit_test(
		    sign_post_reproduces_the_security_token_vector),
		cmocka_unit_test(
		    sign_post_body_signature_verifies_when_recomputed),
		cmocka_unit_test(
		    sign_post_twice_replaces_nonce_and_signs_no_old_signature),
		cmocka_unit_test(nonce_is_32_lowercase_hex_and_fresh_each_time),
		cmocka_unit_test(
		    sign_post_draws_a_fresh_nonce_when_none_is_given),
		cmocka_unit_test(
		    security_token_is_added_only_when_the_credentials_have_one),
		cmocka_unit_test(
		    percent_encode_keeps_unreserved_and_uppercases_hex),
		cmocka_unit_test(percent_decode_round_trips_every_byte_but_nul),
		cmocka_unit_test(percent_decode_rejects_bad_escapes_and_nul),
		cmocka_unit_test(rpc_params_set_replaces_a_value_in_place),
		cmocka_unit_test(rpc_params_remove_keeps_the_order_of_the_rest),
		cmocka_unit_test(
		    canonical_query_sorts_names_by_unsigned_byte_order),
		cmocka_unit_test(timestamp_is_utc_iso8601_to_the_second),
		cmocka_unit_test(
		    credentials_expose_the_id_and_free_accepts_null),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
