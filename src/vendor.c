/*
 * Our client JSON -> struct order -> the vendor's CreateInstance
 * parameters, and the vendor's answer -> an outcome. Pure: no I/O.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "log.h"
#include "signer.h"
#include "util.h"
#include "vendor.h"

#define QUOTA_MAX		100000
#define SHA256_LEN		32
/* Written in the fingerprint for an optional field the client left out. */
#define FINGERPRINT_ABSENT	"(absent)"
#define UPSTREAM_TOKEN_DOMAIN	"acr-gateway/upstream-client-token/v1"

/* Errors on the body as a whole: the entry's field is "". */
#define MSG_BODY_EMPTY		"body is empty; send one JSON object"
#define MSG_BODY_SYNTAX		"body is not valid JSON"
#define MSG_BODY_UTF8		"body is not valid UTF-8"
#define MSG_BODY_DUPLICATE	"body has the same key more than once"
#define MSG_BODY_OVERFLOW	"body has a number too large to read"
#define MSG_BODY_NUL		"body has a NUL character"
#define MSG_BODY_NOT_OBJECT	"body must be one JSON object"

/* Errors on one field, shown after its name. */
#define MSG_REQUIRED		"is required"
#define MSG_UNKNOWN		"is not a known field"
#define MSG_NULL		"must not be null"
#define MSG_NOT_STRING		"must be a string"
#define MSG_NOT_BOOL		"must be true or false"
#define MSG_NOT_INTEGER		"must be an integer"
#define MSG_NOT_WHOLE		\
	"must be an integer written without a fraction or exponent"
#define MSG_TOKEN		\
	"must be 1-64 printable ASCII characters, without spaces"
#define MSG_HEADER_TOKEN	\
	"Idempotency-Key header must be 1-64 printable ASCII characters, without spaces"
#define MSG_TOKEN_REQUIRED	\
	"is required, in the body or the Idempotency-Key header"
#define MSG_TOKEN_MISMATCH	\
	"differs from the Idempotency-Key header; send the same token in both or only one"
#define MSG_INSTANCE_TYPE	"must be Basic, Standard or Advanced"
#define MSG_INSTANCE_NAME	\
	"must be 3-30 lowercase letters, digits or '-', not starting or ending with '-'"
#define MSG_REGION		\
	"must be a region ID such as cn-shanghai: 2-32 lowercase letters, digits or '-', in parts joined by single '-'"
#define MSG_BUCKET		\
	"must be an OSS bucket name: 3-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
#define MSG_BUCKET_REQUIRED	"is required when default_oss_bucket is false"
#define MSG_BUCKET_FORBIDDEN	\
	"must be omitted when default_oss_bucket is true"
#define MSG_SCANNER		"must be ACR or SAS"
#define MSG_QUOTA		"must be an integer from 0 to 100000"
#define MSG_PERIOD		\
	"must be a number of months: 1-9, 12, 24, 36, 48 or 60"
#define MSG_RENEWAL		"must be AutoRenewal or ManualRenewal"
#define MSG_RENEW_REQUIRED	"is required when renewal_status is AutoRenewal"
#define MSG_RENEW_FORBIDDEN	\
	"must be omitted unless renewal_status is AutoRenewal"

/* The fixed order sizes hold the longest value each rule accepts. */
_Static_assert(sizeof(((struct order *)0)->instance_name) > 30,
    "instance_name holds 30 characters");
_Static_assert(sizeof(((struct order *)0)->region) > 32,
    "region holds 32 characters");
_Static_assert(sizeof(((struct order *)0)->instance_storage_name) > 63,
    "instance_storage_name holds 63 characters");

/* Client values, which are also the vendor's, indexed by the enums. */
static const char *const instance_type_names[] = {
	[INSTANCE_BASIC] = "Basic",
	[INSTANCE_STANDARD] = "Standard",
	[INSTANCE_ADVANCED] = "Advanced",
};
static const char *const scanner_names[] = {
	[SCANNER_NONE] = NULL,
	[SCANNER_ACR] = "ACR",
	[SCANNER_SAS] = "SAS",
};
static const char *const renewal_names[] = {
	[RENEWAL_MANUAL] = "ManualRenewal",
	[RENEWAL_AUTO] = "AutoRenewal",
};

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

enum field_kind {
	KIND_STRING,
	KIND_BOOL,
	KIND_INTEGER,
};

/* How a field came in, so rules across fields never report it twice. */
enum field_state {
	FIELD_ABSENT,
	FIELD_VALID,
	FIELD_INVALID,
};

enum field_id {
	F_CLIENT_TOKEN,
	F_INSTANCE_TYPE,
	F_INSTANCE_NAME,
	F_REGION,
	F_DEFAULT_OSS_BUCKET,
	F_INSTANCE_STORAGE_NAME,
	F_IMAGE_SCANNER,
	F_NAMESPACE_QUOTA,
	F_REPO_QUOTA,
	F_VPC_NUM,
	F_PERIOD,
	F_RENEWAL_STATUS,
	F_RENEW_PERIOD,
	F_COUNT,
};

/* Checks a value of the right kind; returns NULL or a static message. */
typedef const char *(*field_apply_fn)(const json_t *value, struct order *o);

struct field_rule {
	const char	*name;
	enum field_kind	 kind;
	/* Rules that depend on another field live in check_conditions. */
	bool		 is_required;
	field_apply_fn	 apply;
};

static bool
is_lower_digit_dash(const char *s, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++) {
		if (!(s[i] >= 'a' && s[i] <= 'z') &&
		    !(s[i] >= '0' && s[i] <= '9') && s[i] != '-')
			return false;
	}
	return true;
}

static bool
is_lower_digit(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool
vendor_is_token(const char *s, size_t len)
{
	size_t	 i;

	if (len < 1 || len > VENDOR_TOKEN_MAX)
		return false;
	for (i = 0; i < len; i++) {
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	}
	return true;
}

static bool
is_period(json_int_t months)
{
	if (months >= 1 && months <= 9)
		return true;
	return months >= 12 && months <= 60 && months % 12 == 0;
}

/* Index of s in names, or -1. */
static int
name_index(const char *s, const char *const *names, size_t count)
{
	size_t	 i;

	for (i = 0; i < count; i++) {
		if (names[i] != NULL && strcmp(s, names[i]) == 0)
			return (int)i;
	}
	return -1;
}

/*
 * Copies at most size - 1 bytes of src, backing off to a UTF-8 character
 * boundary so the copy stays valid UTF-8: jansson refuses anything else
 * when the copy is later written into a problem body or a log line.
 */
static void
copy_truncated(char *dst, size_t size, const char *src)
{
	size_t	 len;

	len = strlen(src);
	if (len >= size) {
		len = size - 1;
		while (len > 0 && ((unsigned char)src[len] & 0xc0) == 0x80)
			len--;
	}
	memcpy(dst, src, len);
	dst[len] = '\0';
}

static const char *
apply_client_token(const json_t *value, struct order *o)
{
	const char	*s = json_string_value(value);
	size_t		 len = json_string_length(value);

	if (!vendor_is_token(s, len))
		return MSG_TOKEN;
	memcpy(o->client_token, s, len + 1);
	return NULL;
}

static const char *
apply_instance_type(const json_t *value, struct order *o)
{
	int	 i;

	i = name_index(json_string_value(value), instance_type_names,
	    NELEM(instance_type_names));
	if (i < 0)
		return MSG_INSTANCE_TYPE;
	o->instance_type = (enum instance_type)i;
	return NULL;
}

static const char *
apply_instance_name(const json_t *value, struct order *o)
{
	const char	*s = json_string_value(value);
	size_t		 len = json_string_length(value);

	if (len < 3 || len > 30 || !is_lower_digit_dash(s, len) ||
	    s[0] == '-' || s[len - 1] == '-')
		return MSG_INSTANCE_NAME;
	memcpy(o->instance_name, s, len + 1);
	return NULL;
}

static const char *
apply_region(const json_t *value, struct order *o)
{
	const char	*s = json_string_value(value);
	size_t		 len = json_string_length(value);

	/* Two parts at least, none empty: "cn-shanghai", "ap-southeast-1". */
	if (len < 2 || len > 32 || !is_lower_digit_dash(s, len) ||
	    s[0] == '-' || s[len - 1] == '-' || strchr(s, '-') == NULL ||
	    strstr(s, "--") != NULL)
		return MSG_REGION;
	memcpy(o->region, s, len + 1);
	return NULL;
}

static const char *
apply_default_oss_bucket(const json_t *value, struct order *o)
{
	o->default_oss_bucket = json_is_true(value);
	return NULL;
}

static const char *
apply_instance_storage_name(const json_t *value, struct order *o)
{
	const char	*s = json_string_value(value);
	size_t		 len = json_string_length(value);

	if (len < 3 || len > 63 || !is_lower_digit_dash(s, len) ||
	    !is_lower_digit(s[0]) || !is_lower_digit(s[len - 1]))
		return MSG_BUCKET;
	memcpy(o->instance_storage_name, s, len + 1);
	return NULL;
}

static const char *
apply_image_scanner(const json_t *value, struct order *o)
{
	int	 i;

	i = name_index(json_string_value(value), scanner_names,
	    NELEM(scanner_names));
	if (i < 0)
		return MSG_SCANNER;
	o->image_scanner = (enum image_scanner)i;
	return NULL;
}

static const char *
apply_quota(const json_t *value, int64_t *out)
{
	json_int_t	 n = json_integer_value(value);

	if (n < 0 || n > QUOTA_MAX)
		return MSG_QUOTA;
	*out = n;
	return NULL;
}

static const char *
apply_namespace_quota(const json_t *value, struct order *o)
{
	return apply_quota(value, &o->namespace_quota);
}

static const char *
apply_repo_quota(const json_t *value, struct order *o)
{
	return apply_quota(value, &o->repo_quota);
}

static const char *
apply_vpc_num(const json_t *value, struct order *o)
{
	return apply_quota(value, &o->vpc_num);
}

static const char *
apply_period(const json_t *value, struct order *o)
{
	json_int_t	 n = json_integer_value(value);

	if (!is_period(n))
		return MSG_PERIOD;
	o->period = (int)n;
	return NULL;
}

static const char *
apply_renewal_status(const json_t *value, struct order *o)
{
	int	 i;

	i = name_index(json_string_value(value), renewal_names,
	    NELEM(renewal_names));
	if (i < 0)
		return MSG_RENEWAL;
	o->renewal = (enum renewal)i;
	return NULL;
}

static const char *
apply_renew_period(const json_t *value, struct order *o)
{
	json_int_t	 n = json_integer_value(value);

	if (!is_period(n))
		return MSG_PERIOD;
	o->renew_period = (int)n;
	return NULL;
}

/* The client API, one row per field; the order of its error entries. */
static const struct field_rule field_rules[F_COUNT] = {
	[F_CLIENT_TOKEN] =
	    { "client_token", KIND_STRING, false, apply_client_token },
	[F_INSTANCE_TYPE] =
	    { "instance_type", KIND_STRING, true, apply_instance_type },
	[F_INSTANCE_NAME] =
	    { "instance_name", KIND_STRING, true, apply_instance_name },
	[F_REGION] =
	    { "region", KIND_STRING, true, apply_region },
	[F_DEFAULT_OSS_BUCKET] =
	    { "default_oss_bucket", KIND_BOOL, true,
	    apply_default_oss_bucket },
	[F_INSTANCE_STORAGE_NAME] =
	    { "instance_storage_name", KIND_STRING, false,
	    apply_instance_storage_name },
	[F_IMAGE_SCANNER] =
	    { "image_scanner", KIND_STRING, false, apply_image_scanner },
	[F_NAMESPACE_QUOTA] =
	    { "namespace_quota", KIND_INTEGER, false, apply_namespace_quota },
	[F_REPO_QUOTA] =
	    { "repo_quota", KIND_INTEGER, false, apply_repo_quota },
	[F_VPC_NUM] =
	    { "vpc_num", KIND_INTEGER, false, apply_vpc_num },
	[F_PERIOD] =
	    { "period", KIND_INTEGER, true, apply_period },
	[F_RENEWAL_STATUS] =
	    { "renewal_status", KIND_STRING, false, apply_renewal_status },
	[F_RENEW_PERIOD] =
	    { "renew_period", KIND_INTEGER, false, apply_renew_period },
};

/* Entries past VENDOR_MAX_FIELD_ERRORS are dropped; the first ones stand. */
static void
add_error(struct validation *v, const char *field, const char *message)
{
	if (v->count >= VENDOR_MAX_FIELD_ERRORS)
		return;
	v->errors[v->count].field = field;
	v->errors[v->count].message = message;
	v->count++;
}

static const char *
check_kind(const json_t *value, enum field_kind kind)
{
	if (json_is_null(value))
		return MSG_NULL;

	switch (kind) {
	case KIND_STRING:
		return json_is_string(value) ? NULL : MSG_NOT_STRING;
	case KIND_BOOL:
		return json_is_boolean(value) ? NULL : MSG_NOT_BOOL;
	case KIND_INTEGER:
		/* jansson reads 12.0 and 1e1 as reals: not what we ask for. */
		if (json_is_real(value))
			return MSG_NOT_WHOLE;
		return json_is_integer(value) ? NULL : MSG_NOT_INTEGER;
	}
	return MSG_NOT_STRING;
}

static const char *
parse_error_message(const json_error_t *err)
{
	switch (json_error_code(err)) {
	case json_error_duplicate_key:
		return MSG_BODY_DUPLICATE;
	case json_error_numeric_overflow:
		return MSG_BODY_OVERFLOW;
	case json_error_invalid_utf8:
		return MSG_BODY_UTF8;
	case json_error_null_character:
	case json_error_null_byte_in_key:
		return MSG_BODY_NUL;
	default:
		return MSG_BODY_SYNTAX;
	}
}

/* The body as one JSON object, or NULL with its one entry in v. */
static json_t *
load_body(const char *body, size_t len, struct validation *v)
{
	json_error_t	 err;
	json_t		*root;

	if (body == NULL || len == 0) {
		add_error(v, "", MSG_BODY_EMPTY);
		return NULL;
	}
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
	if (root == NULL) {
		add_error(v, "", parse_error_message(&err));
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		add_error(v, "", MSG_BODY_NOT_OBJECT);
		return NULL;
	}
	return root;
}

static void
check_fields(const json_t *root, struct order *o,
    enum field_state state[F_COUNT], struct validation *v)
{
	const struct field_rule	*rule;
	const json_t		*value;
	const char		*message;
	size_t			 i;

	for (i = 0; i < F_COUNT; i++) {
		rule = &field_rules[i];
		if ((value = json_object_get(root, rule->name)) == NULL) {
			state[i] = FIELD_ABSENT;
			if (rule->is_required)
				add_error(v, rule->name, MSG_REQUIRED);
			continue;
		}

		if ((message = check_kind(value, rule->kind)) == NULL)
			message = rule->apply(value, o);
		state[i] = message == NULL ? FIELD_VALID : FIELD_INVALID;
		if (message != NULL)
			add_error(v, rule->name, message);
	}
}

static bool
is_known_field(const char *key)
{
	size_t	 i;

	for (i = 0; i < F_COUNT; i++) {
		if (strcmp(key, field_rules[i].name) == 0)
			return true;
	}
	return false;
}

/* Names each unknown key, copied into v so the entry can point at it. */
static void
check_unknown(json_t *root, struct validation *v)
{
	const char	*key;
	json_t		*value;
	char		*name;

	json_object_foreach(root, key, value) {
		if (is_known_field(key) || v->count >= VENDOR_MAX_FIELD_ERRORS)
			continue;
		name = v->names[v->count];
		copy_truncated(name, sizeof(v->names[0]), key);
		add_error(v, name, MSG_UNKNOWN);
	}
}

/*
 * The token may come in the body, the header or both; both must then
 * agree. At most one entry, always on client_token.
 */
static void
check_token(const enum field_state state[F_COUNT], const char *header_token,
    struct order *o, struct validation *v)
{
	const char	*name = field_rules[F_CLIENT_TOKEN].name;

	if (state[F_CLIENT_TOKEN] == FIELD_INVALID)
		return;
	if (header_token != NULL &&
	    !vendor_is_token(header_token, strlen(header_token))) {
		add_error(v, name, MSG_HEADER_TOKEN);
		return;
	}

	if (state[F_CLIENT_TOKEN] == FIELD_ABSENT) {
		if (header_token == NULL)
			add_error(v, name, MSG_TOKEN_REQUIRED);
		else
			copy_truncated(o->client_token,
			    sizeof(o->client_token), header_token);
		return;
	}
	if (header_token != NULL && strcmp(header_token, o->client_token) != 0)
		add_error(v, name, MSG_TOKEN_MISMATCH);
}

/* Rules between fields, checked only when both fields were sound. */
static void
check_conditions(const enum field_state state[F_COUNT], const struct order *o,
    struct validation *v)
{
	const char	*bucket = field_rules[F_INSTANCE_STORAGE_NAME].name;
	const char	*renew = field_rules[F_RENEW_PERIOD].name;

	if (state[F_DEFAULT_OSS_BUCKET] == FIELD_VALID) {
		if (!o->default_oss_bucket &&
		    state[F_INSTANCE_STORAGE_NAME] == FIELD_ABSENT)
			add_error(v, bucket, MSG_BUCKET_REQUIRED);
		if (o->default_oss_bucket &&
		    state[F_INSTANCE_STORAGE_NAME] == FIELD_VALID)
			add_error(v, bucket, MSG_BUCKET_FORBIDDEN);
	}

	/* An absent renewal_status is ManualRenewal, the default. */
	if (state[F_RENEWAL_STATUS] != FIELD_INVALID) {
		if (o->renewal == RENEWAL_AUTO &&
		    state[F_RENEW_PERIOD] == FIELD_ABSENT)
			add_error(v, renew, MSG_RENEW_REQUIRED);
		if (o->renewal != RENEWAL_AUTO &&
		    state[F_RENEW_PERIOD] == FIELD_VALID)
			add_error(v, renew, MSG_RENEW_FORBIDDEN);
	}
}

int
vendor_parse_order(const char *body, size_t len, const char *header_token,
    struct order *out, struct validation *v)
{
	enum field_state state[F_COUNT];
	struct order	 o;
	json_t		*root;

	memset(v, 0, sizeof(*v));
	memset(&o, 0, sizeof(o));
	o.image_scanner = SCANNER_NONE;
	o.namespace_quota = -1;
	o.repo_quota = -1;
	o.vpc_num = -1;
	o.renewal = RENEWAL_MANUAL;

	if ((root = load_body(body, len, v)) == NULL)
		return -1;

	check_fields(root, &o, state, v);
	check_token(state, header_token, &o, v);
	check_conditions(state, &o, v);
	check_unknown(root, v);
	json_decref(root);

	if (v->count > 0)
		return -1;
	*out = o;
	return 0;
}

/*
 * Both callers promise a digest. SHA-256 over memory fails only when
 * OpenSSL itself is broken, which no retry or request can mend.
 */
static void
sha256_hex(const void *data, size_t len, char out[2 * SHA256_LEN + 1])
{
	unsigned char	 md[SHA256_LEN];
	unsigned int	 md_len = 0;

	if (EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) != 1 ||
	    md_len != SHA256_LEN) {
		log_openssl_errors(LOG_ERROR, "vendor", "sha256_failed");
		abort();
	}
	util_hex(md, sizeof(md), out);
}

/* n as decimal into buf, or the absent marker when n is negative. */
static const char *
optional_int(int64_t n, char *buf, size_t size)
{
	if (n < 0)
		return FINGERPRINT_ABSENT;
	(void)snprintf(buf, size, "%" PRId64, n);
	return buf;
}

void
vendor_fingerprint(const struct order *o, char out[65])
{
	char		 text[1024];
	char		 ns[24], repo[24], vpc[24], renew[24];
	const char	*scanner;
	int		 n;

	scanner = o->image_scanner == SCANNER_NONE ? FINGERPRINT_ABSENT :
	    scanner_names[o->image_scanner];

	/*
	 * Every value here passed validation, so none holds a newline and
	 * "name=value\n" lines cannot run into each other. The first line
	 * versions the encoding: changing it changes every fingerprint.
	 */
	n = snprintf(text, sizeof(text),
	    "acr-gateway/order/v1\n"
	    "client_token=%s\n"
	    "instance_type=%s\n"
	    "instance_name=%s\n"
	    "region=%s\n"
	    "default_oss_bucket=%s\n"
	    "instance_storage_name=%s\n"
	    "image_scanner=%s\n"
	    "namespace_quota=%s\n"
	    "repo_quota=%s\n"
	    "vpc_num=%s\n"
	    "period=%d\n"
	    "renewal_status=%s\n"
	    "renew_period=%s\n",
	    o->client_token,
	    instance_type_names[o->instance_type],
	    o->instance_name,
	    o->region,
	    o->default_oss_bucket ? "true" : "false",
	    o->instance_storage_name[0] != '\0' ? o->instance_storage_name :
	    FINGERPRINT_ABSENT,
	    scanner,
	    optional_int(o->namespace_quota, ns, sizeof(ns)),
	    optional_int(o->repo_quota, repo, sizeof(repo)),
	    optional_int(o->vpc_num, vpc, sizeof(vpc)),
	    o->period,
	    renewal_names[o->renewal],
	    optional_int(o->renew_period > 0 ? o->renew_period : -1, renew,
	    sizeof(renew)));

	/* The struct's fixed sizes bound the text well under the buffer. */
	if (n < 0 || (size_t)n >= sizeof(text))
		abort();
	sha256_hex(text, (size_t)n, out);
}

void
vendor_upstream_token(const char *tenant, const char *client_token,
    char out[VENDOR_TOKEN_MAX + 1])
{
	static const char domain[] = UPSTREAM_TOKEN_DOMAIN;
	size_t		 tenant_len, token_len, len;
	char		*buf;

	_Static_assert(2 * SHA256_LEN == VENDOR_TOKEN_MAX,
	    "the upstream token is one hex SHA-256");

	/* NULs between the parts: ("a", "bc") and ("ab", "c") differ. */
	tenant_len = strlen(tenant);
	token_len = strlen(client_token);
	len = sizeof(domain) + tenant_len + 1 + token_len;
	buf = xmalloc(len);
	memcpy(buf, domain, sizeof(domain));
	memcpy(buf + sizeof(domain), tenant, tenant_len + 1);
	memcpy(buf + sizeof(domain) + tenant_len + 1, client_token, token_len);

	sha256_hex(buf, len, out);
	free(buf);
}

/* Appends Parameter.<n>.Code and .Value, numbering from 1 without gaps. */
static void
add_parameter(struct rpc_params *params, int *n, const char *code,
    const char *value)
{
	char	 name[32];

	++*n;
	(void)snprintf(name, sizeof(name), "Parameter.%d.Code", *n);
	rpc_params_set(params, name, code);
	(void)snprintf(name, sizeof(name), "Parameter.%d.Value", *n);
	rpc_params_set(params, name, value);
}

static void
add_optional_int(struct rpc_params *params, int *n, const char *code,
    int64_t value)
{
	char	 text[24];

	if (value < 0)
		return;
	(void)snprintf(text, sizeof(text), "%" PRId64, value);
	add_parameter(params, n, code, text);
}

struct rpc_params *
vendor_params(const struct order *o, enum site site,
    const char *upstream_token)
{
	struct rpc_params *params;
	char		 text[24];
	int		 n = 0;

	params = rpc_params_new();
	rpc_params_set(params, "Action", "CreateInstance");
	rpc_params_set(params, "Version", "2017-12-14");
	rpc_params_set(params, "Format", "JSON");
	rpc_params_set(params, "ProductCode", "acr");
	rpc_params_set(params, "SubscriptionType", "Subscription");
	rpc_params_set(params, "ProductType",
	    site == SITE_INTL ? "acr_ee_public_intl" : "acr_ee_public_cn");
	(void)snprintf(text, sizeof(text), "%d", o->period);
	rpc_params_set(params, "Period", text);

	/* Sent even when manual, so the vendor's default never decides. */
	rpc_params_set(params, "RenewalStatus", renewal_names[o->renewal]);
	if (o->renewal == RENEWAL_AUTO) {
		(void)snprintf(text, sizeof(text), "%d", o->renew_period);
		rpc_params_set(params, "RenewPeriod", text);
	}
	rpc_params_set(params, "ClientToken", upstream_token);

	/* The vendor page's property order; the codes are its spelling. */
	add_parameter(params, &n, "InstanceType",
	    instance_type_names[o->instance_type]);
	add_parameter(params, &n, "InstanceName", o->instance_name);
	add_parameter(params, &n, "Region", o->region);
	add_parameter(params, &n, "DefaultOssBucket",
	    o->default_oss_bucket ? "true" : "false");
	if (o->instance_storage_name[0] != '\0')
		add_parameter(params, &n, "InstanceStorageName",
		    o->instance_storage_name);
	if (o->image_scanner != SCANNER_NONE)
		add_parameter(params, &n, "image_scanner",
		    scanner_names[o->image_scanner]);
	add_optional_int(params, &n, "NamespaceQuota", o->namespace_quota);
	add_optional_int(params, &n, "RepoQuota", o->repo_quota);
	add_optional_int(params, &n, "vpc_num", o->vpc_num);
	return params;
}

/* Codes that mean our signature, key or clock is wrong, not the order. */
static const char *const gateway_fault_prefixes[] = {
	"SignatureDoesNotMatch",
	"SignatureNonceUsed",
	"InvalidTimeStamp",
	"InvalidAccessKeyId",
	"IncompleteSignature",
	"InvalidSecurityToken",
	"MissingSecurityToken",
	"Forbidden.AccessKey",
	"InvalidApi",
};

static bool
has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool
is_gateway_fault(const char *code)
{
	size_t	 i;

	for (i = 0; i < NELEM(gateway_fault_prefixes); i++) {
		if (has_prefix(code, gateway_fault_prefixes[i]))
			return true;
	}
	return false;
}

static void
copy_member(const json_t *object, const char *key, char *dst, size_t size)
{
	const json_t	*value;

	value = json_object_get(object, key);
	if (json_is_string(value))
		copy_truncated(dst, size, json_string_value(value));
}

/*
 * Fills instance_id and order_id from Data. Returns 0, or -1 when there is
 * no usable InstanceId. An ID too long for our buffer is refused rather
 * than cut: a shortened ID would name another instance or none.
 */
static int
read_created(const json_t *root, struct vendor_answer *out)
{
	const json_t	*data, *id, *order;

	data = json_object_get(root, "Data");
	id = json_object_get(data, "InstanceId");
	if (!json_is_string(id) || json_string_length(id) == 0 ||
	    json_string_length(id) >= sizeof(out->instance_id))
		return -1;
	memcpy(out->instance_id, json_string_value(id),
	    json_string_length(id) + 1);

	/* Seen both as "2085..." and as a bare number; either is kept. */
	order = json_object_get(data, "OrderId");
	if (json_is_string(order) &&
	    json_string_length(order) < sizeof(out->order_id))
		memcpy(out->order_id, json_string_value(order),
		    json_string_length(order) + 1);
	else if (json_is_integer(order))
		(void)snprintf(out->order_id, sizeof(out->order_id),
		    "%" JSON_INTEGER_FORMAT, json_integer_value(order));
	return 0;
}

static enum vendor_outcome
classify(int http_status, const json_t *root, struct vendor_answer *out)
{
	const char	*code = out->code;
	bool		 is_2xx = http_status >= 200 && http_status < 300;
	bool		 is_4xx = http_status >= 400 && http_status < 500;

	if (is_2xx && json_is_true(json_object_get(root, "Success")) &&
	    read_created(root, out) == 0)
		return VENDOR_CREATED;

	if (strcmp(code, "IdempotentProcessing") == 0)
		return VENDOR_RETRY;
	if (has_prefix(code, "Throttling") ||
	    strcmp(code, "ServiceUnavailable") == 0 || http_status >= 500)
		return VENDOR_TRANSIENT;
	if (code[0] != '\0' && is_gateway_fault(code))
		return VENDOR_GATEWAY_FAULT;
	if (is_4xx && code[0] != '\0')
		return VENDOR_REJECTED;

	/*
	 * Not final and not stored: a 2xx that claims no success, or an error
	 * without a code, is an answer we cannot read, and the resend with the
	 * same ClientToken will learn what the vendor really did.
	 */
	return VENDOR_MALFORMED;
}

void
vendor_parse_answer(int http_status, const char *body, size_t len,
    struct vendor_answer *out)
{
	json_error_t	 err;
	json_t		*root = NULL;

	memset(out, 0, sizeof(*out));
	out->http_status = http_status;

	if (body != NULL && len > 0)
		root = json_loadb(body, len, 0, &err);
	if (root != NULL && !json_is_object(root)) {
		json_decref(root);
		root = NULL;
	}
	if (root != NULL) {
		copy_member(root, "RequestId", out->request_id,
		    sizeof(out->request_id));
		copy_member(root, "Code", out->code, sizeof(out->code));
	}

	out->outcome = classify(http_status, root, out);
	json_decref(root);
}
