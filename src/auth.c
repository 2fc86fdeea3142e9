/*
 * Who is calling: an API key in "Authorization: Bearer <key>", matched by
 * its SHA-256 against the hashes in the config. The config holds hashes
 * only, so a leaked config file does not leak a usable key.
 */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth.h"

#define BEARER			"Bearer"
#define BEARER_LEN		(sizeof(BEARER) - 1)
/* Our keys are about 40 bytes; the cap bounds the work an attacker buys. */
#define AUTH_TOKEN_MAX_BYTES	512
#define SHA256_BYTES		32
/* token68 (RFC 9110, section 11.2), apart from its trailing '=' padding. */
#define TOKEN68_CHARS \
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"

/*
 * Finds the token in "Bearer <token>": scheme in any case, one or more
 * spaces, then a token68. Returns a pointer into header (no copy is made,
 * so there is none to wipe) with its length, or NULL if malformed.
 */
static const char *
bearer_token(const char *header, size_t *len)
{
	const char	*token;
	size_t		 n;

	if (strncasecmp(header, BEARER, BEARER_LEN) != 0 ||
	    header[BEARER_LEN] != ' ')
		return NULL;
	token = header + BEARER_LEN;
	token += strspn(token, " ");

	n = strspn(token, TOKEN68_CHARS);
	n += strspn(token + n, "=");
	if (n == 0 || n > AUTH_TOKEN_MAX_BYTES || token[n] != '\0')
		return NULL;
	*len = n;
	return token;
}

const struct config_tenant *
auth_tenant(const struct config *cfg, const char *authorization)
{
	const struct config_tenant	*tenant = NULL;
	const struct config_api_key	*k;
	const char			*token;
	unsigned char			 digest[SHA256_BYTES];
	unsigned int			 digest_len = 0;
	size_t				 len, i;
	bool				 is_match;

	if (cfg == NULL || authorization == NULL)
		return NULL;
	if ((token = bearer_token(authorization, &len)) == NULL)
		return NULL;

	if (EVP_Digest(token, len, digest, &digest_len, EVP_sha256(),
	    NULL) != 1 || digest_len != SHA256_BYTES)
		goto out;

	/*
	 * Compare with every hash, in constant time, without stopping at a
	 * match: how long this takes must not tell which prefix was right
	 * or where in the list a key sits.
	 */
	for (i = 0; i < cfg->napi_keys; i++) {
		k = &cfg->api_keys[i];
		is_match = CRYPTO_memcmp(digest, k->sha256, SHA256_BYTES) == 0;
		if (is_match && tenant == NULL)
			tenant = k->tenant;
	}

out:
	OPENSSL_cleanse(digest, sizeof(digest));
	return tenant;
}
