/*
 * libFuzzer target: vendor_parse_order, then what the request path does
 * with an order it accepted (fingerprint, upstream token, parameters).
 *
 * Input: the body, then optionally a NUL and the Idempotency-Key header.
 * The last NUL splits them, so the header never holds a NUL (it is a C
 * string on the request path too) while the body still may.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "signer.h"
#include "vendor.h"

#define QUOTA_MAX	100000

int	 LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
is_lower_hex(const char *s, size_t len)
{
	size_t	 i;

	if (strlen(s) != len)
		return false;
	for (i = 0; i < len; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

static bool
is_period(int64_t months)
{
	return (months >= 1 && months <= 9) ||
	    (months >= 12 && months <= 60 && months % 12 == 0);
}

static bool
is_lower_digit(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* lowercase letters, digits and '-', within min..max bytes. */
static bool
is_name(const char *s, size_t size, size_t min, size_t max)
{
	size_t	 len, i;

	len = strnlen(s, size);
	if (len == size || len < min || len > max)
		return false;
	for (i = 0; i < len; i++) {
		if (!is_lower_digit(s[i]) && s[i] != '-')
			return false;
	}
	return true;
}

static bool
is_quota(int64_t n)
{
	return n == -1 || (n >= 0 && n <= QUOTA_MAX);
}

/* What the README's client API promises about an accepted order. */
static void
check_order(const struct order *o, const char *header)
{
	size_t	 token_len;

	token_len = strnlen(o->client_token, sizeof(o->client_token));
	if (token_len < 1 || token_len > VENDOR_TOKEN_MAX ||
	    !vendor_is_token(o->client_token, token_len))
		abort();
	if (header != NULL && strcmp(header, o->client_token) != 0)
		abort();

	if (o->instance_type != INSTANCE_BASIC &&
	    o->instance_type != INSTANCE_STANDARD &&
	    o->instance_type != INSTANCE_ADVANCED)
		abort();
	if (!is_name(o->instance_name, sizeof(o->instance_name), 3, 30) ||
	    o->instance_name[0] == '-' ||
	    o->instance_name[strlen(o->instance_name) - 1] == '-')
		abort();
	if (!is_name(o->region, sizeof(o->region), 2, 32) ||
	    o->region[0] == '-' || o->region[strlen(o->region) - 1] == '-' ||
	    strchr(o->region, '-') == NULL || strstr(o->region, "--") != NULL)
		abort();

	/* The bucket goes with default_oss_bucket false, and only then. */
	if (o->default_oss_bucket) {
		if (o->instance_storage_name[0] != '\0')
			abort();
	} else {
		if (!is_name(o->instance_storage_name,
		    sizeof(o->instance_storage_name), 3, 63) ||
		    !is_lower_digit(o->instance_storage_name[0]) ||
		    !is_lower_digit(o->instance_storage_name[
		    strlen(o->instance_storage_name) - 1]))
			abort();
	}

	if (o->image_scanner != SCANNER_NONE && o->image_scanner !=
	    SCANNER_ACR && o->image_scanner != SCANNER_SAS)
		abort();
	if (!is_quota(o->namespace_quota) || !is_quota(o->repo_quota) ||
	    !is_quota(o->vpc_num))
		abort();
	if (!is_period(o->period))
		abort();
	if (o->renewal == RENEWAL_AUTO) {
		if (!is_period(o->renew_period))
			abort();
	} else if (o->renewal != RENEWAL_MANUAL || o->renew_period != 0) {
		abort();
	}
}

static const char *
param(const struct rpc_params *params, const char *name)
{
	const char	*value;

	if ((value = rpc_params_get(params, name)) == NULL)
		abort();
	return value;
}

/* The CreateInstance parameters agree with the order they came from. */
static void
check_params(const struct order *o)
{
	struct rpc_params *params;
	char		 token[VENDOR_TOKEN_MAX + 1], name[32], text[24];
	char		*query;
	int		 n;

	vendor_upstream_token("fuzz-tenant", o->client_token, token);
	if (!is_lower_hex(token, VENDOR_TOKEN_MAX))
		abort();

	params = vendor_params(o, o->period % 2 ? SITE_CN : SITE_INTL, token);
	if (strcmp(param(params, "Action"), "CreateInstance") != 0 ||
	    strcmp(param(params, "ClientToken"), token) != 0)
		abort();
	(void)snprintf(text, sizeof(text), "%d", o->period);
	if (strcmp(param(params, "Period"), text) != 0)
		abort();
	if ((o->renewal == RENEWAL_AUTO) !=
	    (rpc_params_get(params, "RenewPeriod") != NULL))
		abort();

	/*
	 * Parameter.N numbers from 1 without a gap, Code and Value paired;
	 * beside them, nine fixed names and RenewPeriod when renewing.
	 */
	for (n = 1; ; n++) {
		(void)snprintf(name, sizeof(name), "Parameter.%d.Code", n);
		if (rpc_params_get(params, name) == NULL)
			break;
		(void)snprintf(name, sizeof(name), "Parameter.%d.Value", n);
		(void)param(params, name);
	}
	if (n < 5 || rpc_params_count(params) != 9 + 2 * (size_t)(n - 1) +
	    (o->renewal == RENEWAL_AUTO))
		abort();
	if (strcmp(param(params, "Parameter.1.Code"), "InstanceType") != 0)
		abort();

	query = signer_canonical_query(params);
	if (query == NULL || strlen(query) == 0)
		abort();
	free(query);
	rpc_params_free(params);
}

/* Each entry names a field and a message, in text jansson will take. */
static void
check_validation(const struct validation *v)
{
	json_t	*s;
	size_t	 i;

	if (v->count < 1 || v->count > VENDOR_MAX_FIELD_ERRORS)
		abort();
	for (i = 0; i < v->count; i++) {
		if (v->errors[i].field == NULL || v->errors[i].message == NULL)
			abort();
		if (strlen(v->errors[i].field) > VENDOR_FIELD_NAME_MAX)
			abort();
		/* The problem body carries the field name: it must be UTF-8. */
		if ((s = json_string(v->errors[i].field)) == NULL)
			abort();
		json_decref(s);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t	*nul;
	struct validation v, v2;
	struct order	 o, o2;
	char		*body, *header = NULL;
	char		 fp[65], fp2[65];
	size_t		 body_len = size;

	nul = size > 0 ? memrchr(data, '\0', size) : NULL;
	if (nul != NULL) {
		body_len = (size_t)(nul - data);
		header = strndup((const char *)nul + 1, size - body_len - 1);
	}

	/* A buffer of exactly body_len bytes, so ASan sees any overread. */
	body = malloc(body_len > 0 ? body_len : 1);
	if (body == NULL || (nul != NULL && header == NULL))
		abort();
	memcpy(body, data, body_len);

	if (vendor_parse_order(body, body_len, header, &o, &v) != 0) {
		check_validation(&v);
		goto out;
	}
	if (v.count != 0)
		abort();
	check_order(&o, header);

	vendor_fingerprint(&o, fp);
	if (!is_lower_hex(fp, 64))
		abort();

	/*
	 * Where the token came from does not change the order: the same body
	 * with the token sent again as the header is the same fingerprint.
	 */
	if (vendor_parse_order(body, body_len, o.client_token, &o2, &v2) != 0)
		abort();
	vendor_fingerprint(&o2, fp2);
	if (strcmp(fp, fp2) != 0)
		abort();

	check_params(&o);

out:
	free(body);
	free(header);
	return 0;
}
