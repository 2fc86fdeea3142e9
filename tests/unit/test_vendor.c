/*
 * The client API's rules, the fingerprint, the upstream token, the
 * CreateInstance parameters and how vendor answers are classified.
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
#include "vendor.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* Every required field, valid; period last so tests can swap it. */
#define BASE_FIELDS \
	"\"client_token\":\"tok-1\",\"instance_type\":\"Basic\"," \
	"\"instance_name\":\"reg-01\",\"region\":\"cn-shanghai\"," \
	"\"default_oss_bucket\":true"
#define MINIMAL		"{" BASE_FIELDS ",\"period\":1}"

#define FULL \
	"{\"client_token\":\"order-42\",\"instance_type\":\"Advanced\"," \
	"\"instance_name\":\"team-a-registry\",\"region\":\"ap-southeast-1\"," \
	"\"default_oss_bucket\":false," \
	"\"instance_storage_name\":\"team-a-images\"," \
	"\"image_scanner\":\"SAS\",\"namespace_quota\":10," \
	"\"repo_quota\":1000,\"vpc_num\":5,\"period\":12," \
	"\"renewal_status\":\"AutoRenewal\",\"renew_period\":24}"

static int
parse(const char *body, const char *header, struct order *o,
    struct validation *v)
{
	return vendor_parse_order(body, strlen(body), header, o, v);
}

/*
 * MINIMAL with key set to the JSON text value (NULL: key removed), as a
 * new string. Built with jansson so only the one member changes.
 */
static char *
minimal_with(const char *key, const char *value)
{
	json_t	*root, *member;
	char	*body;

	root = json_loads(MINIMAL, 0, NULL);
	assert_non_null(root);
	if (value == NULL)
		json_object_del(root, key);
	else {
		member = json_loads(value, JSON_DECODE_ANY, NULL);
		if (member == NULL)
			fail_msg("bad test value %s", value);
		json_object_set_new(root, key, member);
	}
	body = json_dumps(root, JSON_COMPACT);
	assert_non_null(body);
	json_decref(root);
	return body;
}

static void
print_errors(const struct validation *v)
{
	size_t	 i;

	for (i = 0; i < v->count; i++)
		print_message("  %s: %s\n", v->errors[i].field,
		    v->errors[i].message);
}

/* body must fail with exactly one entry, on field. Returns its message. */
static const char *
expect_one_error(const char *body, const char *header, const char *field)
{
	static struct validation v;
	struct order	 o;

	if (parse(body, header, &o, &v) != -1)
		fail_msg("accepted %s", body);
	if (v.count != 1 || strcmp(v.errors[0].field, field) != 0) {
		print_errors(&v);
		fail_msg("%s: want one entry on \"%s\", got %zu", body,
		    field, v.count);
	}
	assert_non_null(v.errors[0].message);
	assert_true(strlen(v.errors[0].message) > 0);
	return v.errors[0].message;
}

/* MINIMAL with key set to value must fail only on key. */
static const char *
expect_field_error(const char *key, const char *value)
{
	const char	*message;
	char		*body;

	body = minimal_with(key, value);
	message = expect_one_error(body, NULL, key);
	free(body);
	return message;
}

static void
expect_field_ok(const char *key, const char *value, struct order *o)
{
	struct validation v;
	char		*body;

	body = minimal_with(key, value);
	if (parse(body, NULL, o, &v) != 0) {
		print_errors(&v);
		fail_msg("rejected %s", body);
	}
	free(body);
}

static void
minimal_order_parses_with_defaults(void **state)
{
	struct validation v;
	struct order	 o;

	(void)state;
	assert_int_equal(parse(MINIMAL, NULL, &o, &v), 0);
	assert_int_equal(v.count, 0);
	assert_string_equal(o.client_token, "tok-1");
	assert_int_equal(o.instance_type, INSTANCE_BASIC);
	assert_string_equal(o.instance_name, "reg-01");
	assert_string_equal(o.region, "cn-shanghai");
	assert_true(o.default_oss_bucket);
	assert_string_equal(o.instance_storage_name, "");
	assert_int_equal(o.image_scanner, SCANNER_NONE);
	assert_int_equal(o.namespace_quota, -1);
	assert_int_equal(o.repo_quota, -1);
	assert_int_equal(o.vpc_num, -1);
	assert_int_equal(o.period, 1);
	assert_int_equal(o.renewal, RENEWAL_MANUAL);
	assert_int_equal(o.renew_period, 0);
}

static void
full_order_parses_every_field(void **state)
{
	struct validation v;
	struct order	 o;

	(void)state;
	assert_int_equal(parse(FULL, NULL, &o, &v), 0);
	assert_string_equal(o.client_token, "order-42");
	assert_int_equal(o.instance_type, INSTANCE_ADVANCED);
	assert_string_equal(o.instance_name, "team-a-registry");
	assert_string_equal(o.region, "ap-southeast-1");
	assert_false(o.default_oss_bucket);
	assert_string_equal(o.instance_storage_name, "team-a-images");
	assert_int_equal(o.image_scanner, SCANNER_SAS);
	assert_int_equal(o.namespace_quota, 10);
	assert_int_equal(o.repo_quota, 1000);
	assert_int_equal(o.vpc_num, 5);
	assert_int_equal(o.period, 12);
	assert_int_equal(o.renewal, RENEWAL_AUTO);
	assert_int_equal(o.renew_period, 24);
}

static void
client_token_must_be_1_to_64_printable_ascii(void **state)
{
	struct order	 o;

	(void)state;
	expect_field_error("client_token", "\"\"");
	expect_field_error("client_token", "\"has space\"");
	expect_field_error("client_token", "\"tab\\there\"");
	expect_field_error("client_token", "\"caf\\u00e9\"");
	expect_field_error("client_token", "\"del\\u007f\"");
	expect_field_error("client_token",
	    "\"1234567890123456789012345678901234567890"
	    "1234567890123456789012345\"");
	expect_field_error("client_token", "42");

	expect_field_ok("client_token",
	    "\"1234567890123456789012345678901234567890"
	    "123456789012345678901234\"",
	    &o);
	assert_int_equal(strlen(o.client_token), 64);
	expect_field_ok("client_token", "\"!~{}\\\"\"", &o);
	assert_string_equal(o.client_token, "!~{}\"");
}

static void
client_token_is_required_from_body_or_header(void **state)
{
	const char	*message;
	char		*body;

	(void)state;
	body = minimal_with("client_token", NULL);
	message = expect_one_error(body, NULL, "client_token");
	assert_non_null(strstr(message, "required"));
	free(body);
}

static void
header_token_alone_is_used(void **state)
{
	struct validation v;
	struct order	 o;
	char		*body;

	(void)state;
	body = minimal_with("client_token", NULL);
	assert_int_equal(parse(body, "hdr-77", &o, &v), 0);
	assert_string_equal(o.client_token, "hdr-77");
	free(body);
}

static void
header_token_equal_to_body_token_is_fine(void **state)
{
	struct validation v;
	struct order	 o;

	(void)state;
	assert_int_equal(parse(MINIMAL, "tok-1", &o, &v), 0);
	assert_string_equal(o.client_token, "tok-1");
}

static void
header_token_differing_from_body_token_is_an_error(void **state)
{
	(void)state;
	expect_one_error(MINIMAL, "tok-2", "client_token");
	expect_one_error(MINIMAL, "TOK-1", "client_token");
}

static void
header_token_obeys_the_token_rule(void **state)
{
	char	*body;

	(void)state;
	body = minimal_with("client_token", NULL);
	expect_one_error(body, "", "client_token");
	expect_one_error(body, "with space", "client_token");
	expect_one_error(body,
	    "12345678901234567890123456789012345678901234567890123456789012345",
	    "client_token");
	free(body);

	/* Both bad still gives one entry for the one field. */
	body = minimal_with("client_token", "\"bad token\"");
	expect_one_error(body, "bad header", "client_token");
	free(body);
}

static void
instance_type_must_be_one_of_three_case_sensitive(void **state)
{
	struct order	 o;

	(void)state;
	expect_field_error("instance_type", "\"basic\"");
	expect_field_error("instance_type", "\"ADVANCED\"");
	expect_field_error("instance_type", "\"Premium\"");
	expect_field_error("instance_type", "\"\"");
	expect_field_error("instance_type", NULL);
	expect_field_error("instance_type", "[\"Basic\"]");

	expect_field_ok("instance_type", "\"Standard\"", &o);
	assert_int_equal(o.instance_type, INSTANCE_STANDARD);
}

static void
instance_name_must_be_3_to_30_without_edge_dashes(void **state)
{
	struct order	 o;

	(void)state;
	expect_field_error("instance_name", "\"ab\"");
	expect_field_error("instance_name",
	    "\"abcdefghijklmnopqrstuvwxyz01234\"");
	expect_field_error("instance_name", "\"-abc\"");
	expect_field_error("instance_name", "\"abc-\"");
	expect_field_error("instance_name", "\"Abc\"");
	expect_field_error("instance_name", "\"a_b\"");
	expect_field_error("instance_name", "\"a b c\"");
	expect_field_error("instance_name", NULL);

	expect_field_ok("instance_name", "\"a-b\"", &o);
	expect_field_ok("instance_name", "\"a--b\"", &o);
	expect_field_ok("instance_name",
	    "\"abcdefghijklmnopqrstuvwxyz0123\"", &o);
	assert_string_equal(o.instance_name, "abcdefghijklmnopqrstuvwxyz0123");
}

static void
region_must_be_dash_separated_parts(void **state)
{
	struct order	 o;

	(void)state;
	expect_field_error("region", "\"cnshanghai\"");
	expect_field_error("region", "\"cn--shanghai\"");
	expect_field_error("region", "\"-cn\"");
	expect_field_error("region", "\"cn-\"");
	expect_field_error("region", "\"-\"");
	expect_field_error("region", "\"CN-shanghai\"");
	expect_field_error("region", "\"cn_shanghai\"");
	expect_field_error("region", "\"abcdefghijklmnop-abcdefghijklmnop\"");
	expect_field_error("region", NULL);

	expect_field_ok("region", "\"ap-southeast-1\"", &o);
	assert_string_equal(o.region, "ap-southeast-1");
	expect_field_ok("region", "\"abcdefghijklmno-abcdefghijklmnop\"", &o);
}

static void
default_oss_bucket_must_be_a_boolean(void **state)
{
	(void)state;
	expect_field_error("default_oss_bucket", "\"true\"");
	expect_field_error("default_oss_bucket", "1");
	expect_field_error("default_oss_bucket", NULL);

	/* A bad type is one entry: no "storage name required" as well. */
	expect_field_error("default_oss_bucket", "\"false\"");
}

static void
instance_storage_name_required_without_default_bucket(void **state)
{
	struct validation v;
	struct order	 o;
	char		*body;
	const char	*message;

	(void)state;
	body = minimal_with("default_oss_bucket", "false");
	message = expect_one_error(body, NULL, "instance_storage_name");
	assert_non_null(strstr(message, "required"));
	free(body);

	body = strdup("{\"client_token\":\"t\",\"instance_type\":\"Basic\","
	    "\"instance_name\":\"abc\",\"region\":\"cn-beijing\","
	    "\"default_oss_bucket\":false,\"instance_storage_name\":"
	    "\"my-bucket-01\",\"period\":3}");
	assert_int_equal(parse(body, NULL, &o, &v), 0);
	assert_string_equal(o.instance_storage_name, "my-bucket-01");
	free(body);
}

static void
instance_storage_name_forbidden_with_default_bucket(void **state)
{
	const char	*message;

	(void)state;
	message = expect_field_error("instance_storage_name",
	    "\"my-bucket\"");
	assert_non_null(strstr(message, "omitted"));
}

static void
instance_storage_name_must_be_a_bucket_name(void **state)
{
	static const char *const bad[] = {
		"\"ab\"", "\"-abc\"", "\"abc-\"", "\"my_bucket\"",
		"\"My-bucket\"", "\"\"", "12",
		("\"abcdefghijklmnopqrstuvwxyz0123456789"
		    "abcdefghijklmnopqrstuvwxyz01\""),
	};
	struct validation v;
	struct order	 o;
	char		 body[512];
	size_t		 i;

	(void)state;
	for (i = 0; i < NELEM(bad); i++) {
		snprintf(body, sizeof(body), "{\"client_token\":\"t\","
		    "\"instance_type\":\"Basic\",\"instance_name\":\"abc\","
		    "\"region\":\"cn-beijing\",\"default_oss_bucket\":false,"
		    "\"instance_storage_name\":%s,\"period\":3}", bad[i]);
		expect_one_error(body, NULL, "instance_storage_name");
	}

	assert_int_equal(parse("{\"client_token\":\"t\","
	    "\"instance_type\":\"Basic\",\"instance_name\":\"abc\","
	    "\"region\":\"cn-beijing\",\"default_oss_bucket\":false,"
	    "\"instance_storage_name\":"
	    "\"0abcdefghijklmnopqrstuvwxyz-123456789"
	    "abcdefghijklmnopqrstuvwxyz\","
	    "\"period\":3}", NULL, &o, &v), 0);
	assert_int_equal(strlen(o.instance_storage_name), 63);
}

static void
image_scanner_must_be_acr_or_sas(void **state)
{
	struct order	 o;

	(void)state;
	expect_field_error("image_scanner", "\"acr\"");
	expect_field_error("image_scanner", "\"Trivy\"");
	expect_field_error("image_scanner", "true");

	expect_field_ok("image_scanner", "\"ACR\"", &o);
	assert_int_equal(o.image_scanner, SCANNER_ACR);
	expect_field_ok("image_scanner", "\"SAS\"", &o);
	assert_int_equal(o.image_scanner, SCANNER_SAS);
}

static void
quotas_must_be_integers_from_0_to_100000(void **state)
{
	static const char *const fields[] = {
		"namespace_quota", "repo_quota", "vpc_num",
	};
	struct order	 o;
	size_t		 i;

	(void)state;
	for (i = 0; i < NELEM(fields); i++) {
		expect_field_error(fields[i], "-1");
		expect_field_error(fields[i], "100001");
		expect_field_error(fields[i], "\"10\"");
		expect_field_error(fields[i], "10.5");
		expect_field_ok(fields[i], "0", &o);
		expect_field_ok(fields[i], "100000", &o);
	}
	assert_int_equal(o.vpc_num, 100000);
}

static void
period_must_be_1_to_9_or_whole_years_to_60(void **state)
{
	static const char *const bad[] = {
		"0", "10", "11", "13", "72", "120", "-12", "\"12\"",
		"9223372036854775807",
	};
	static const int good[] = { 1, 2, 5, 9, 12, 24, 36, 48, 60 };
	struct order	 o;
	char		 text[16];
	size_t		 i;

	(void)state;
	for (i = 0; i < NELEM(bad); i++)
		expect_field_error("period", bad[i]);
	expect_field_error("period", NULL);

	for (i = 0; i < NELEM(good); i++) {
		snprintf(text, sizeof(text), "%d", good[i]);
		expect_field_ok("period", text, &o);
		assert_int_equal(o.period, good[i]);
	}
}

static void
renewal_status_must_be_auto_or_manual_case_sensitive(void **state)
{
	struct order	 o;

	(void)state;
	expect_field_error("renewal_status", "\"autorenewal\"");
	expect_field_error("renewal_status", "\"Auto\"");
	expect_field_error("renewal_status", "false");

	expect_field_ok("renewal_status", "\"ManualRenewal\"", &o);
	assert_int_equal(o.renewal, RENEWAL_MANUAL);
}

static void
renew_period_required_with_auto_renewal_only(void **state)
{
	struct validation v;
	struct order	 o;
	const char	*message;

	(void)state;
	message = expect_one_error("{" BASE_FIELDS ",\"period\":1,"
	    "\"renewal_status\":\"AutoRenewal\"}", NULL, "renew_period");
	assert_non_null(strstr(message, "required"));

	message = expect_one_error("{" BASE_FIELDS ",\"period\":1,"
	    "\"renewal_status\":\"ManualRenewal\",\"renew_period\":12}",
	    NULL, "renew_period");
	assert_non_null(strstr(message, "omitted"));

	/* No renewal_status means manual: renew_period is not wanted. */
	expect_field_error("renew_period", "12");

	/* The period rule applies, as one entry. */
	expect_one_error("{" BASE_FIELDS ",\"period\":1,"
	    "\"renewal_status\":\"AutoRenewal\",\"renew_period\":10}",
	    NULL, "renew_period");

	assert_int_equal(parse("{" BASE_FIELDS ",\"period\":1,"
	    "\"renewal_status\":\"AutoRenewal\",\"renew_period\":60}",
	    NULL, &o, &v), 0);
	assert_int_equal(o.renewal, RENEWAL_AUTO);
	assert_int_equal(o.renew_period, 60);
}

static void
unknown_field_is_named_in_its_entry(void **state)
{
	const char	*message;

	(void)state;
	message = expect_field_error("colour", "\"blue\"");
	assert_non_null(strstr(message, "known"));
	expect_field_error("Period", "12");
	expect_field_error("InstanceType", "\"Basic\"");
}

static void
long_unknown_field_name_is_cut_on_a_character_boundary(void **state)
{
	struct validation v;
	struct order	 o;
	char		 body[512];
	const char	*field;

	(void)state;
	/* 62 ASCII bytes, then a 2-byte character straddling the limit. */
	snprintf(body, sizeof(body), "{" BASE_FIELDS ",\"period\":1,"
	    "\"%s\\u00e9tail\":1}",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_int_equal(parse(body, NULL, &o, &v), -1);
	assert_int_equal(v.count, 1);
	field = v.errors[0].field;
	assert_int_equal(strlen(field), 62);
	assert_ptr_equal(field, v.names[0]);
}

static void
null_is_rejected_for_any_field(void **state)
{
	static const char *const fields[] = {
		"client_token", "instance_type", "instance_name", "region",
		"default_oss_bucket", "instance_storage_name",
		"image_scanner", "namespace_quota", "repo_quota", "vpc_num",
		"period", "renewal_status", "renew_period",
	};
	size_t	 i;

	(void)state;
	for (i = 0; i < NELEM(fields); i++)
		expect_field_error(fields[i], "null");
}

static void
integers_written_as_reals_are_rejected(void **state)
{
	const char	*message;

	(void)state;
	message = expect_one_error("{" BASE_FIELDS ",\"period\":12.0}", NULL,
	    "period");
	assert_non_null(strstr(message, "fraction"));
	expect_one_error("{" BASE_FIELDS ",\"period\":1e1}", NULL, "period");
	expect_one_error("{" BASE_FIELDS ",\"period\":1E1}", NULL, "period");
	expect_one_error("{" BASE_FIELDS ",\"period\":1,\"vpc_num\":2.5}",
	    NULL, "vpc_num");
}

static void
body_level_errors_are_one_entry_with_an_empty_field(void **state)
{
	static const char *const bodies[] = {
		"",
		" ",
		"[" MINIMAL "]",
		"null",
		"\"order\"",
		"42",
		"{",
		"{" BASE_FIELDS ",\"period\":1} {}",
		"{" BASE_FIELDS ",\"period\":1,\"period\":2}",
		"{" BASE_FIELDS ",\"period\":99999999999999999999}",
		"{" BASE_FIELDS ",\"period\":1,\"x\":\"\\u0000\"}",
	};
	size_t	 i;

	(void)state;
	for (i = 0; i < NELEM(bodies); i++)
		expect_one_error(bodies[i], NULL, "");
}

static void
body_errors_name_duplicates_and_overflow(void **state)
{
	const char	*message;

	(void)state;
	message = expect_one_error("{" BASE_FIELDS ",\"period\":1,"
	    "\"region\":\"cn-beijing\"}", NULL, "");
	assert_non_null(strstr(message, "more than once"));
	message = expect_one_error("{" BASE_FIELDS
	    ",\"period\":99999999999999999999}", NULL, "");
	assert_non_null(strstr(message, "too large"));
	message = expect_one_error("[]", NULL, "");
	assert_non_null(strstr(message, "object"));
}

static void
invalid_utf8_and_embedded_nul_bytes_are_rejected(void **state)
{
	static const char body[] = "{\"client_token\":\"a\0b\"}";
	struct validation v;
	struct order	 o;

	(void)state;
	expect_one_error("{\"client_token\":\"\xff\"}", NULL, "");
	assert_int_equal(vendor_parse_order(body, sizeof(body) - 1, NULL, &o,
	    &v), -1);
	assert_int_equal(v.count, 1);
	assert_string_equal(v.errors[0].field, "");
	assert_int_equal(vendor_parse_order(NULL, 0, NULL, &o, &v), -1);
	assert_int_equal(v.count, 1);
}

static int
has_error(const struct validation *v, const char *field)
{
	size_t	 i;
	int	 n = 0;

	for (i = 0; i < v->count; i++) {
		if (strcmp(v->errors[i].field, field) == 0)
			n++;
	}
	return n;
}

static void
every_bad_field_gets_its_own_entry(void **state)
{
	struct validation v;
	struct order	 o;

	(void)state;
	assert_int_equal(parse("{\"client_token\":\"a b\","
	    "\"instance_type\":\"basic\",\"instance_name\":\"A\","
	    "\"region\":\"shanghai\",\"default_oss_bucket\":\"yes\","
	    "\"image_scanner\":null,\"namespace_quota\":-5,"
	    "\"repo_quota\":1.0,\"vpc_num\":\"3\","
	    "\"renewal_status\":\"auto\",\"renew_period\":7.5,"
	    "\"extra\":1,\"more\":{}}", NULL, &o, &v), -1);
	assert_int_equal(v.count, 14);
	assert_int_equal(has_error(&v, "client_token"), 1);
	assert_int_equal(has_error(&v, "instance_type"), 1);
	assert_int_equal(has_error(&v, "instance_name"), 1);
	assert_int_equal(has_error(&v, "region"), 1);
	assert_int_equal(has_error(&v, "default_oss_bucket"), 1);
	assert_int_equal(has_error(&v, "image_scanner"), 1);
	assert_int_equal(has_error(&v, "namespace_quota"), 1);
	assert_int_equal(has_error(&v, "repo_quota"), 1);
	assert_int_equal(has_error(&v, "vpc_num"), 1);
	assert_int_equal(has_error(&v, "period"), 1);
	assert_int_equal(has_error(&v, "renewal_status"), 1);
	assert_int_equal(has_error(&v, "renew_period"), 1);
	assert_int_equal(has_error(&v, "extra"), 1);
	assert_int_equal(has_error(&v, "more"), 1);
}

static void
entries_stop_at_the_cap_without_overflowing(void **state)
{
	struct validation v;
	struct order	 o;
	char		 body[4096];
	size_t		 used, i;

	(void)state;
	used = (size_t)snprintf(body, sizeof(body), "{" BASE_FIELDS
	    ",\"period\":1");
	for (i = 0; i < 2 * VENDOR_MAX_FIELD_ERRORS; i++)
		used += (size_t)snprintf(body + used, sizeof(body) - used,
		    ",\"unknown_%zu\":1", i);
	snprintf(body + used, sizeof(body) - used, "}");

	assert_int_equal(parse(body, NULL, &o, &v), -1);
	assert_int_equal(v.count, VENDOR_MAX_FIELD_ERRORS);
	assert_string_equal(v.errors[0].field, "unknown_0");
	assert_string_equal(v.errors[VENDOR_MAX_FIELD_ERRORS - 1].field,
	    "unknown_23");
}

static void
fingerprint_of(const char *body, const char *header, char out[65])
{
	struct validation v;
	struct order	 o;

	if (parse(body, header, &o, &v) != 0) {
		print_errors(&v);
		fail_msg("rejected %s", body);
	}
	vendor_fingerprint(&o, out);
}

static void
fingerprint_ignores_layout_defaults_and_token_source(void **state)
{
	char	 base[65], other[65];

	(void)state;
	fingerprint_of(MINIMAL, NULL, base);
	assert_int_equal(strlen(base), 64);
	assert_int_equal(strspn(base, "0123456789abcdef"), 64);

	fingerprint_of("{ \"period\" : 1 ,\n\t\"default_oss_bucket\": true,"
	    " \"region\":\"cn-shanghai\", \"instance_name\":\"reg-01\","
	    " \"instance_type\":\"Basic\", \"client_token\":\"tok-1\" }",
	    NULL, other);
	assert_string_equal(base, other);

	fingerprint_of("{" BASE_FIELDS ",\"period\":1,"
	    "\"renewal_status\":\"ManualRenewal\"}", NULL, other);
	assert_string_equal(base, other);

	fingerprint_of("{\"instance_type\":\"Basic\","
	    "\"instance_name\":\"reg-01\",\"region\":\"cn-shanghai\","
	    "\"default_oss_bucket\":true,\"period\":1}", "tok-1", other);
	assert_string_equal(base, other);

	fingerprint_of(MINIMAL, "tok-1", other);
	assert_string_equal(base, other);
}

static void
fingerprint_differs_when_any_field_differs(void **state)
{
	static const char *const variants[] = {
		MINIMAL,
		"{" BASE_FIELDS ",\"period\":2}",
		"{" BASE_FIELDS ",\"period\":12}",
		"{\"client_token\":\"tok-2\",\"instance_type\":\"Basic\","
		    "\"instance_name\":\"reg-01\",\"region\":\"cn-shanghai\","
		    "\"default_oss_bucket\":true,\"period\":1}",
		"{\"client_token\":\"tok-1\",\"instance_type\":\"Standard\","
		    "\"instance_name\":\"reg-01\",\"region\":\"cn-shanghai\","
		    "\"default_oss_bucket\":true,\"period\":1}",
		"{\"client_token\":\"tok-1\",\"instance_type\":\"Basic\","
		    "\"instance_name\":\"reg-02\",\"region\":\"cn-shanghai\","
		    "\"default_oss_bucket\":true,\"period\":1}",
		"{\"client_token\":\"tok-1\",\"instance_type\":\"Basic\","
		    "\"instance_name\":\"reg-01\",\"region\":\"cn-beijing\","
		    "\"default_oss_bucket\":true,\"period\":1}",
		"{\"client_token\":\"tok-1\",\"instance_type\":\"Basic\","
		    "\"instance_name\":\"reg-01\",\"region\":\"cn-shanghai\","
		    "\"default_oss_bucket\":false,"
		    "\"instance_storage_name\":\"bucket-a\",\"period\":1}",
		"{\"client_token\":\"tok-1\",\"instance_type\":\"Basic\","
		    "\"instance_name\":\"reg-01\",\"region\":\"cn-shanghai\","
		    "\"default_oss_bucket\":false,"
		    "\"instance_storage_name\":\"bucket-b\",\"period\":1}",
		"{" BASE_FIELDS ",\"period\":1,\"image_scanner\":\"ACR\"}",
		"{" BASE_FIELDS ",\"period\":1,\"image_scanner\":\"SAS\"}",
		"{" BASE_FIELDS ",\"period\":1,\"namespace_quota\":0}",
		"{" BASE_FIELDS ",\"period\":1,\"namespace_quota\":1}",
		"{" BASE_FIELDS ",\"period\":1,\"repo_quota\":0}",
		"{" BASE_FIELDS ",\"period\":1,\"vpc_num\":0}",
		"{" BASE_FIELDS ",\"period\":1,"
		    "\"renewal_status\":\"AutoRenewal\",\"renew_period\":1}",
		"{" BASE_FIELDS ",\"period\":1,"
		    "\"renewal_status\":\"AutoRenewal\",\"renew_period\":12}",
	};
	char	 fp[NELEM(variants)][65];
	size_t	 i, j;

	(void)state;
	for (i = 0; i < NELEM(variants); i++)
		fingerprint_of(variants[i], NULL, fp[i]);
	for (i = 0; i < NELEM(variants); i++) {
		for (j = i + 1; j < NELEM(variants); j++) {
			if (strcmp(fp[i], fp[j]) == 0)
				fail_msg("same fingerprint:\n %s\n %s",
				    variants[i], variants[j]);
		}
	}
}

static void
upstream_token_is_stable_and_separated_per_tenant(void **state)
{
	char	 a[VENDOR_TOKEN_MAX + 1], b[VENDOR_TOKEN_MAX + 1];

	(void)state;
	vendor_upstream_token("team-a", "order-42", a);
	assert_int_equal(strlen(a), 64);
	assert_int_equal(strspn(a, "0123456789abcdef"), 64);

	/* sha256("acr-gateway/upstream-client-token/v1\0team-a\0order-42") */
	assert_string_equal(a,
	    "5b9b2665e9cb133dc26bc942aa395df65b756807d022e2f8d376edfcae1462ae");

	vendor_upstream_token("team-a", "order-42", b);
	assert_string_equal(a, b);

	vendor_upstream_token("team-b", "order-42", b);
	assert_string_not_equal(a, b);
	vendor_upstream_token("team-a", "order-43", b);
	assert_string_not_equal(a, b);

	/* The separator keeps the split between tenant and token. */
	vendor_upstream_token("team-ao", "rder-42", b);
	assert_string_not_equal(a, b);
}

/* params must hold exactly the pairs in want, in that order. */
static void
expect_params(const struct rpc_params *params, const char *const want[][2],
    size_t count)
{
	const char	*name, *value;
	size_t		 i;

	for (i = 0; i < rpc_params_count(params) && i < count; i++) {
		rpc_params_at(params, i, &name, &value);
		if (strcmp(name, want[i][0]) != 0 ||
		    strcmp(value, want[i][1]) != 0)
			fail_msg("pair %zu: got %s=%s, want %s=%s", i, name,
			    value, want[i][0], want[i][1]);
	}
	assert_int_equal(rpc_params_count(params), count);
}

/* Parameter.1..N are contiguous, each with a Code and a Value. */
static void
expect_contiguous_parameters(const struct rpc_params *params, int count)
{
	char	 name[32];
	int	 n;

	for (n = 1; n <= count + 1; n++) {
		snprintf(name, sizeof(name), "Parameter.%d.Code", n);
		if (n <= count)
			assert_non_null(rpc_params_get(params, name));
		else
			assert_null(rpc_params_get(params, name));
		snprintf(name, sizeof(name), "Parameter.%d.Value", n);
		if (n <= count)
			assert_non_null(rpc_params_get(params, name));
		else
			assert_null(rpc_params_get(params, name));
	}
}

static struct order
parsed(const char *body)
{
	struct validation v;
	struct order	 o;

	if (parse(body, NULL, &o, &v) != 0) {
		print_errors(&v);
		fail_msg("rejected %s", body);
	}
	return o;
}

static void
vendor_params_for_a_full_order(void **state)
{
	static const char *const want[][2] = {
		{ "Action", "CreateInstance" },
		{ "Version", "2017-12-14" },
		{ "Format", "JSON" },
		{ "ProductCode", "acr" },
		{ "SubscriptionType", "Subscription" },
		{ "ProductType", "acr_ee_public_cn" },
		{ "Period", "12" },
		{ "RenewalStatus", "AutoRenewal" },
		{ "RenewPeriod", "24" },
		{ "ClientToken", "UPSTREAM" },
		{ "Parameter.1.Code", "InstanceType" },
		{ "Parameter.1.Value", "Advanced" },
		{ "Parameter.2.Code", "InstanceName" },
		{ "Parameter.2.Value", "team-a-registry" },
		{ "Parameter.3.Code", "Region" },
		{ "Parameter.3.Value", "ap-southeast-1" },
		{ "Parameter.4.Code", "DefaultOssBucket" },
		{ "Parameter.4.Value", "false" },
		{ "Parameter.5.Code", "InstanceStorageName" },
		{ "Parameter.5.Value", "team-a-images" },
		{ "Parameter.6.Code", "image_scanner" },
		{ "Parameter.6.Value", "SAS" },
		{ "Parameter.7.Code", "NamespaceQuota" },
		{ "Parameter.7.Value", "10" },
		{ "Parameter.8.Code", "RepoQuota" },
		{ "Parameter.8.Value", "1000" },
		{ "Parameter.9.Code", "vpc_num" },
		{ "Parameter.9.Value", "5" },
	};
	struct rpc_params *params;
	struct order	 o;

	(void)state;
	o = parsed(FULL);
	params = vendor_params(&o, SITE_CN, "UPSTREAM");
	expect_params(params, want, NELEM(want));
	expect_contiguous_parameters(params, 9);
	rpc_params_free(params);
}

static void
vendor_params_for_a_minimal_order(void **state)
{
	static const char *const want[][2] = {
		{ "Action", "CreateInstance" },
		{ "Version", "2017-12-14" },
		{ "Format", "JSON" },
		{ "ProductCode", "acr" },
		{ "SubscriptionType", "Subscription" },
		{ "ProductType", "acr_ee_public_intl" },
		{ "Period", "1" },
		{ "RenewalStatus", "ManualRenewal" },
		{ "ClientToken", "UPSTREAM" },
		{ "Parameter.1.Code", "InstanceType" },
		{ "Parameter.1.Value", "Basic" },
		{ "Parameter.2.Code", "InstanceName" },
		{ "Parameter.2.Value", "reg-01" },
		{ "Parameter.3.Code", "Region" },
		{ "Parameter.3.Value", "cn-shanghai" },
		{ "Parameter.4.Code", "DefaultOssBucket" },
		{ "Parameter.4.Value", "true" },
	};
	struct rpc_params *params;
	struct order	 o;

	(void)state;
	o = parsed(MINIMAL);
	params = vendor_params(&o, SITE_INTL, "UPSTREAM");
	expect_params(params, want, NELEM(want));
	expect_contiguous_parameters(params, 4);
	assert_null(rpc_params_get(params, "RenewPeriod"));
	rpc_params_free(params);
}

static void
vendor_params_number_without_gaps_over_present_fields(void **state)
{
	struct rpc_params *params;
	struct order	 o;

	(void)state;
	o = parsed("{" BASE_FIELDS ",\"period\":1,\"image_scanner\":\"ACR\","
	    "\"vpc_num\":0}");
	params = vendor_params(&o, SITE_CN, "UPSTREAM");
	expect_contiguous_parameters(params, 6);
	assert_string_equal(rpc_params_get(params, "Parameter.5.Code"),
	    "image_scanner");
	assert_string_equal(rpc_params_get(params, "Parameter.5.Value"),
	    "ACR");
	assert_string_equal(rpc_params_get(params, "Parameter.6.Code"),
	    "vpc_num");
	assert_string_equal(rpc_params_get(params, "Parameter.6.Value"), "0");
	rpc_params_free(params);
}

static struct vendor_answer
answer(int status, const char *body)
{
	struct vendor_answer a;

	vendor_parse_answer(status, body, body ? strlen(body) : 0, &a);
	assert_int_equal(a.http_status, status);
	return a;
}

static void
answer_created_on_success_with_an_instance_id(void **state)
{
	struct vendor_answer a;

	(void)state;
	a = answer(200, "{\"Code\":\"Success\",\"Data\":{\"InstanceId\":"
	    "\"cri-abc123\",\"OrderId\":\"208571234567\"},\"RequestId\":"
	    "\"A555455B-EA70\",\"Success\":true,\"Message\":\"Successful!\"}");
	assert_int_equal(a.outcome, VENDOR_CREATED);
	assert_string_equal(a.instance_id, "cri-abc123");
	assert_string_equal(a.order_id, "208571234567");
	assert_string_equal(a.request_id, "A555455B-EA70");
	assert_string_equal(a.code, "Success");

	/* OrderId as a bare number, and no Code at all. */
	a = answer(200, "{\"Data\":{\"InstanceId\":\"cri-x\","
	    "\"OrderId\":208571234567},\"Success\":true}");
	assert_int_equal(a.outcome, VENDOR_CREATED);
	assert_string_equal(a.order_id, "208571234567");
	assert_string_equal(a.code, "");
	assert_string_equal(a.request_id, "");
}

static void
answer_retry_on_idempotent_processing(void **state)
{
	(void)state;
	assert_int_equal(answer(400, "{\"Code\":\"IdempotentProcessing\","
	    "\"Success\":false}").outcome, VENDOR_RETRY);
	assert_int_equal(answer(409, "{\"Code\":\"IdempotentProcessing\"}")
	    .outcome, VENDOR_RETRY);
}

static void
answer_transient_on_throttling_unavailable_and_5xx(void **state)
{
	(void)state;
	assert_int_equal(answer(400, "{\"Code\":\"Throttling.User\"}")
	    .outcome, VENDOR_TRANSIENT);
	assert_int_equal(answer(429, "{\"Code\":\"Throttling\"}").outcome,
	    VENDOR_TRANSIENT);
	assert_int_equal(answer(503, "{\"Code\":\"ServiceUnavailable\"}")
	    .outcome, VENDOR_TRANSIENT);
	assert_int_equal(answer(500, "{\"Code\":\"InternalError\"}").outcome,
	    VENDOR_TRANSIENT);
	assert_int_equal(answer(502, "<html>Bad Gateway</html>").outcome,
	    VENDOR_TRANSIENT);
	assert_int_equal(answer(504, NULL).outcome, VENDOR_TRANSIENT);
}

static void
answer_gateway_fault_on_signature_key_and_clock_codes(void **state)
{
	static const char *const codes[] = {
		"SignatureDoesNotMatch", "SignatureNonceUsed",
		"InvalidTimeStamp.Expired", "InvalidTimeStamp.Format",
		"InvalidAccessKeyId.NotFound", "IncompleteSignature",
		"InvalidSecurityToken.Expired", "MissingSecurityToken",
		"Forbidden.AccessKeyDisabled", "InvalidApi.NotFound",
		"InvalidAccessKeyId.Inactive",
	};
	char	 body[128];
	size_t	 i;

	(void)state;
	for (i = 0; i < NELEM(codes); i++) {
		snprintf(body, sizeof(body), "{\"Code\":\"%s\"}", codes[i]);
		if (answer(400, body).outcome != VENDOR_GATEWAY_FAULT)
			fail_msg("%s is not a gateway fault", codes[i]);
		if (answer(403, body).outcome != VENDOR_GATEWAY_FAULT)
			fail_msg("%s at 403 is not a gateway fault", codes[i]);
	}
}

static void
answer_rejected_on_other_4xx_codes(void **state)
{
	static const char *const codes[] = {
		"IdempotentFailed", "IdempotentParameterMismatch",
		"InvalidParameter", "Forbidden.RAM", "OrderError.Failed",
		"InstanceNameExists",
	};
	struct vendor_answer a;
	char		 body[160];
	size_t		 i;

	(void)state;
	for (i = 0; i < NELEM(codes); i++) {
		snprintf(body, sizeof(body), "{\"Code\":\"%s\","
		    "\"RequestId\":\"R-1\",\"Success\":false}", codes[i]);
		a = answer(400, body);
		if (a.outcome != VENDOR_REJECTED)
			fail_msg("%s is not a rejection", codes[i]);
		assert_string_equal(a.code, codes[i]);
		assert_string_equal(a.request_id, "R-1");
	}
}

static void
answer_malformed_when_it_cannot_be_read(void **state)
{
	static const struct {
		int		 status;
		const char	*body;
	} cases[] = {
		{ 200, "not json" },
		{ 200, NULL },
		{ 200, "[]" },
		{ 200, "{\"Success\":false}" },
		{ 200, "{\"Success\":true}" },
		{ 200, "{\"Success\":true,\"Data\":{}}" },
		{ 200, "{\"Success\":true,\"Data\":{\"InstanceId\":\"\"}}" },
		{ 200, "{\"Success\":true,\"Data\":{\"InstanceId\":42}}" },
		{ 200, "{\"Success\":\"true\","
		    "\"Data\":{\"InstanceId\":\"c\"}}" },
		{ 201, "{\"Data\":{\"InstanceId\":\"cri-x\"}}" },
		{ 400, "{\"Message\":\"bad\"}" },
		{ 400, "{\"Code\":\"\"}" },
		{ 400, "{\"Code\":42}" },
		{ 404, "<html></html>" },
		{ 302, "{\"Code\":\"Found\"}" },
	};
	size_t	 i;

	(void)state;
	for (i = 0; i < NELEM(cases); i++) {
		if (answer(cases[i].status, cases[i].body).outcome !=
		    VENDOR_MALFORMED)
			fail_msg("case %zu (%d %s) is not malformed", i,
			    cases[i].status, cases[i].body);
	}
}

static void
answer_fields_are_truncated_safely(void **state)
{
	struct vendor_answer a;
	char		 body[1024], id[301];

	(void)state;
	memset(id, 'r', 300);
	id[300] = '\0';
	/* 126 ASCII bytes, then a 2-byte character across the limit. */
	id[126] = '\xc3';
	id[127] = '\xa9';
	snprintf(body, sizeof(body), "{\"Code\":\"%s\",\"RequestId\":\"%s\"}",
	    "InvalidParameter", id);
	a = answer(400, body);
	assert_int_equal(a.outcome, VENDOR_REJECTED);
	assert_int_equal(strlen(a.request_id), 126);
	assert_memory_equal(a.request_id, id, 126);

	/* An instance ID that does not fit is refused, not cut. */
	memset(id, 'c', 300);
	snprintf(body, sizeof(body), "{\"Success\":true,\"Data\":"
	    "{\"InstanceId\":\"%s\"}}", id);
	assert_int_equal(answer(200, body).outcome, VENDOR_MALFORMED);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(minimal_order_parses_with_defaults),
		cmocka_unit_test(full_order_parses_every_field),
		cmocka_unit_test(client_token_must_be_1_to_64_printable_ascii),
		cmocka_unit_test(client_token_is_required_from_body_or_header),
		cmocka_unit_test(header_token_alone_is_used),
		cmocka_unit_test(header_token_equal_to_body_token_is_fine),
		cmocka_unit_test(
		    header_token_differing_from_body_token_is_an_error),
		cmocka_unit_test(header_token_obeys_the_token_rule),
		cmocka_unit_test(
		    instance_type_must_be_one_of_three_case_sensitive),
		cmocka_unit_test(
		    instance_name_must_be_3_to_30_without_edge_dashes),
		cmocka_unit_test(region_must_be_dash_separated_parts),
		cmocka_unit_test(default_oss_bucket_must_be_a_boolean),
		cmocka_unit_test(
		    instance_storage_name_required_without_default_bucket),
		cmocka_unit_test(
		    instance_storage_name_forbidden_with_default_bucket),
		cmocka_unit_test(instance_storage_name_must_be_a_bucket_name),
		cmocka_unit_test(image_scanner_must_be_acr_or_sas),
		cmocka_unit_test(quotas_must_be_integers_from_0_to_100000),
		cmocka_unit_test(period_must_be_1_to_9_or_whole_years_to_60),
		cmocka_unit_test(
		    renewal_status_must_be_auto_or_manual_case_sensitive),
		cmocka_unit_test(renew_period_required_with_auto_renewal_only),
		cmocka_unit_test(unknown_field_is_named_in_its_entry),
		cmocka_unit_test(
		    long_unknown_field_name_is_cut_on_a_character_boundary),
		cmocka_unit_test(null_is_rejected_for_any_field),
		cmocka_unit_test(integers_written_as_reals_are_rejected),
		cmocka_unit_test(
		    body_level_errors_are_one_entry_with_an_empty_field),
		cmocka_unit_test(body_errors_name_duplicates_and_overflow),
		cmocka_unit_test(
		    invalid_utf8_and_embedded_nul_bytes_are_rejected),
		cmocka_unit_test(every_bad_field_gets_its_own_entry),
		cmocka_unit_test(entries_stop_at_the_cap_without_overflowing),
		cmocka_unit_test(
		    fingerprint_ignores_layout_defaults_and_token_source),
		cmocka_unit_test(fingerprint_differs_when_any_field_differs),
		cmocka_unit_test(
		    upstream_token_is_stable_and_separated_per_tenant),
		cmocka_unit_test(vendor_params_for_a_full_order),
		cmocka_unit_test(vendor_params_for_a_minimal_order),
		cmocka_unit_test(
		    vendor_params_number_without_gaps_over_present_fields),
		cmocka_unit_test(answer_created_on_success_with_an_instance_id),
		cmocka_unit_test(answer_retry_on_idempotent_processing),
		cmocka_unit_test(
		    answer_transient_on_throttling_unavailable_and_5xx),
		cmocka_unit_test(
		    answer_gateway_fault_on_signature_key_and_clock_codes),
		cmocka_unit_test(answer_rejected_on_other_4xx_codes),
		cmocka_unit_test(answer_malformed_when_it_cannot_be_read),
		cmocka_unit_test(answer_fields_are_truncated_safely),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
