/*
 * The vendor's RPC signature 1.0: canonical query, string to sign and
 * HMAC-SHA1, plus the credentials it reads. See signer.h for the rules.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "signer.h"
#include "util.h"

/* SHA-1 output; base64 turns its 20 bytes into SIGNER_SIGNATURE_LEN. */
#define HMAC_SHA1_LEN	20
#define NONCE_BYTES	(SIGNER_NONCE_LEN / 2)

struct credentials {
	char		*access_key_id;
	char		*secret;
	char		*token;		/* NULL: long-term key, no STS */
};

struct rpc_param {
	char		*name;
	char		*value;
};

struct rpc_params {
	struct rpc_param *items;
	size_t		 count;
	size_t		 capacity;
};

struct credentials *
credentials_new(const char *access_key_id, const char *access_key_secret,
    const char *security_token)
{
	struct credentials *creds;

	creds = xcalloc(1, sizeof(*creds));
	creds->access_key_id = xstrdup(access_key_id);
	creds->secret = xstrdup(access_key_secret);

	/*
	 * An empty token means none: sending "SecurityToken=" would make the
	 * vendor treat a long-term key as an STS one and refuse it.
	 */
	if (security_token != NULL && security_token[0] != '\0')
		creds->token = xstrdup(security_token);
	return creds;
}

void
credentials_free(struct credentials *creds)
{
	if (creds == NULL)
		return;
	free(creds->access_key_id);
	secret_free(creds->secret);
	secret_free(creds->token);
	OPENSSL_cleanse(creds, sizeof(*creds));
	free(creds);
}

const char *
credentials_access_key_id(const struct credentials *creds)
{
	return creds->access_key_id;
}

struct rpc_params *
rpc_params_new(void)
{
	return xcalloc(1, sizeof(struct rpc_params));
}

void
rpc_params_free(struct rpc_params *params)
{
	size_t	 i;

	if (params == NULL)
		return;
	for (i = 0; i < params->count; i++) {
		free(params->items[i].name);
		free(params->items[i].value);
	}
	free(params->items);
	free(params);
}

static struct rpc_param *
params_find(const struct rpc_params *params, const char *name)
{
	size_t	 i;

	for (i = 0; i < params->count; i++) {
		if (strcmp(params->items[i].name, name) == 0)
			return &params->items[i];
	}
	return NULL;
}

void
rpc_params_set(struct rpc_params *params, const char *name, const char *value)
{
	struct rpc_param *p;
	char		*copy;

	/* Copy first: value may point into the entry it replaces. */
	copy = xstrdup(value);
	if ((p = params_find(params, name)) != NULL) {
		free(p->value);
		p->value = copy;
		return;
	}

	if (params->count == params->capacity) {
		params->capacity = params->capacity ? params->capacity * 2 : 16;
		params->items = xrealloc(params->items,
		    params->capacity * sizeof(*params->items));
	}
	p = &params->items[params->count++];
	p->name = xstrdup(name);
	p->value = copy;
}

const char *
rpc_params_get(const struct rpc_params *params, const char *name)
{
	const struct rpc_param *p;

	p = params_find(params, name);
	return p != NULL ? p->value : NULL;
}

size_t
rpc_params_count(const struct rpc_params *params)
{
	return params->count;
}

void
rpc_params_at(const struct rpc_params *params, size_t i, const char **name,
    const char **value)
{
	*name = params->items[i].name;
	*value = params->items[i].value;
}

void
rpc_params_remove(struct rpc_params *params, const char *name)
{
	struct rpc_param *p;
	size_t		 i;

	if ((p = params_find(params, name)) == NULL)
		return;
	i = (size_t)(p - params->items);
	free(p->name);
	free(p->value);

	/* Keep insertion order for the rest: callers read them with _at. */
	memmove(p, p + 1, (params->count - i - 1) * sizeof(*p));
	params->count--;
}

static bool
is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
	    c == '~';
}

char *
signer_percent_encode(const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	char		*out, *o;
	size_t		 i;

	/* Every input reaching here was capped far below SIZE_MAX / 3. */
	if (len > (SIZE_MAX - 1) / 3)
		abort();

	o = out = xmalloc(len * 3 + 1);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_unreserved(c)) {
			*o++ = (char)c;
			continue;
		}
		*o++ = '%';
		*o++ = hex[c >> 4];
		*o++ = hex[c & 0x0f];
	}
	*o = '\0';
	return out;
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *
signer_percent_decode(const char *s, size_t len)
{
	char		*out;
	size_t		 i, n = 0;
	int		 hi, lo;

	out = xmalloc(len + 1);
	for (i = 0; i < len; i++) {
		if (s[i] == '+') {
			out[n++] = ' ';
			continue;
		}
		if (s[i] != '%') {
			out[n++] = s[i];
			if (s[i] == '\0')
				goto fail;
			continue;
		}

		/* A '%' takes two hex digits, and must not hide a NUL. */
		if (len - i < 3)
			goto fail;
		if ((hi = hex_value(s[i + 1])) < 0 ||
		    (lo = hex_value(s[i + 2])) < 0)
			goto fail;
		if (hi == 0 && lo == 0)
			goto fail;
		out[n++] = (char)(hi << 4 | lo);
		i += 2;
	}
	out[n] = '\0';
	return out;

fail:
	free(out);
	return NULL;
}

static int
compare_names(const void *a, const void *b)
{
	const struct rpc_param *const *pa = a, *const *pb = b;

	/* strcmp compares as unsigned char: the byte order the vendor uses. */
	return strcmp((*pa)->name, (*pb)->name);
}

char *
signer_canonical_query(const struct rpc_params *params)
{
	const struct rpc_param **sorted;
	char		*out, *name, *value;
	size_t		 i, used = 0, size = 1, need;

	sorted = xcalloc(params->count ? params->count : 1, sizeof(*sorted));
	for (i = 0; i < params->count; i++)
		sorted[i] = &params->items[i];
	qsort(sorted, params->count, sizeof(*sorted), compare_names);

	out = xmalloc(size);
	out[0] = '\0';
	for (i = 0; i < params->count; i++) {
		name = signer_percent_encode(sorted[i]->name,
		    strlen(sorted[i]->name));
		value = signer_percent_encode(sorted[i]->value,
		    strlen(sorted[i]->value));

		/* '&' before all but the first, '=' between, NUL at the end. */
		need = used + strlen(name) + strlen(value) + 3;
		if (need > size) {
			size = need * 2;
			out = xrealloc(out, size);
		}
		/* Cannot truncate: size was grown to need just above. */
		used += (size_t)snprintf(out + used, size - used, "%s%s=%s",
		    i > 0 ? "&" : "", name, value);
		free(name);
		free(value);
	}
	free(sorted);
	return out;
}

char *
signer_string_to_sign(const char *http_method, const char *canonical_query)
{
	char		*encoded, *out;

	encoded = signer_percent_encode(canonical_query,
	    strlen(canonical_query));
	out = xasprintf("%s&%%2F&%s", http_method, encoded);
	free(encoded);
	return out;
}

int
signer_signature_with_secret(const char *secret, const char *string_to_sign,
    char *out)
{
	unsigned char	 mac[HMAC_SHA1_LEN];
	unsigned int	 mac_len = 0;
	char		*key;
	size_t		 key_len;
	int		 rc = -1;

	/* The vendor's key is the secret followed by '&'. */
	key_len = strlen(secret) + 1;
	key = xmalloc(key_len + 1);
	memcpy(key, secret, key_len - 1);
	key[key_len - 1] = '&';
	key[key_len] = '\0';

	if (key_len > INT_MAX)
		goto out;
	if (HMAC(EVP_sha1(), key, (int)key_len,
	    (const unsigned char *)string_to_sign, strlen(string_to_sign),
	    mac, &mac_len) == NULL || mac_len != HMAC_SHA1_LEN)
		goto out;
	if (EVP_EncodeBlock((unsigned char *)out, mac, HMAC_SHA1_LEN) !=
	    SIGNER_SIGNATURE_LEN)
		goto out;
	rc = 0;

out:
	OPENSSL_cleanse(mac, sizeof(mac));
	OPENSSL_cleanse(key, key_len + 1);
	free(key);
	if (rc != 0)
		out[0] = '\0';
	return rc;
}

int
signer_signature(const struct credentials *creds, const char *string_to_sign,
    char *out)
{
	return signer_signature_with_secret(creds->secret, string_to_sign, out);
}

int
signer_nonce(char out[SIGNER_NONCE_LEN + 1])
{
	unsigned char	 bytes[NONCE_BYTES];

	if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
		out[0] = '\0';
		return -1;
	}
	util_hex(bytes, sizeof(bytes), out);
	return 0;
}

void
signer_timestamp(time_t now, char out[21])
{
	struct tm	 tm;

	/*
	 * Only a clock past year 9999 fails here; the empty timestamp then
	 * makes the vendor answer InvalidTimeStamp, a gateway fault.
	 */
	if (gmtime_r(&now, &tm) == NULL ||
	    strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) != 20)
		out[0] = '\0';
}

char *
signer_sign_post(struct rpc_params *params, const struct credentials *creds,
    time_t now, const char *nonce)
{
	char		 fresh_nonce[SIGNER_NONCE_LEN + 1];
	char		 timestamp[21];
	char		 signature[SIGNER_SIGNATURE_LEN + 1];
	char		*canonical = NULL, *to_sign = NULL, *encoded = NULL;
	char		*body = NULL;

	if (nonce == NULL) {
		if (signer_nonce(fresh_nonce) == -1)
			return NULL;
		nonce = fresh_nonce;
	}
	signer_timestamp(now, timestamp);

	rpc_params_set(params, "AccessKeyId", creds->access_key_id);
	rpc_params_set(params, "SignatureMethod", "HMAC-SHA1");
	rpc_params_set(params, "SignatureVersion", "1.0");
	rpc_params_set(params, "SignatureNonce", nonce);
	rpc_params_set(params, "Timestamp", timestamp);

	/*
	 * Params may come back for a resend: drop what an earlier signing or
	 * other credentials left, or it would be signed as a call parameter.
	 */
	rpc_params_remove(params, "Signature");
	if (creds->token != NULL)
		rpc_params_set(params, "SecurityToken", creds->token);
	else
		rpc_params_remove(params, "SecurityToken");

	canonical = signer_canonical_query(params);
	to_sign = signer_string_to_sign("POST", canonical);
	if (signer_signature(creds, to_sign, signature) == -1)
		goto out;
	encoded = signer_percent_encode(signature, SIGNER_SIGNATURE_LEN);
	body = xasprintf("%s&Signature=%s", canonical, encoded);

out:
	OPENSSL_cleanse(signature, sizeof(signature));
	secret_free(encoded);
	free(to_sign);
	free(canonical);
	return body;
}
