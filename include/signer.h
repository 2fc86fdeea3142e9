/*
 * The vendor's RPC signature, version 1.0 (HMAC-SHA1). Pure: no I/O, no
 * event loop. This is the only module that reads a credential's secret.
 *
 * Canonical form: parameters sorted by name in byte order; names and values
 * percent-encoded byte by byte, leaving only A-Z a-z 0-9 - _ . ~ as they are
 * (uppercase hex, space is %20, never '+'); joined as name=value with '&'.
 * String to sign: METHOD + "&%2F&" + percent_encode(canonical query).
 * Signature: base64(HMAC-SHA1(secret + "&", string to sign)).
 */
#ifndef ACRGW_SIGNER_H
#define ACRGW_SIGNER_H

#include <stddef.h>
#include <time.h>

/* Base64 of a 20-byte HMAC-SHA1 is 28 characters. */
#define SIGNER_SIGNATURE_LEN	28
/* SignatureNonce: 128 random bits as 32 lowercase hex digits. */
#define SIGNER_NONCE_LEN	32

/*
 * An access key: id, secret and an optional STS security token. Opaque, so
 * nothing but the signer can read the secret; the logger never sees it.
 */
struct credentials;

/* New copy of the three strings (security_token may be NULL). */
struct credentials *credentials_new(const char *access_key_id,
	    const char *access_key_secret, const char *security_token);
/* Wipes the secret and token, then frees. NULL is a no-op. */
void	 credentials_free(struct credentials *creds);
/* Borrowed; valid while creds lives. Not a secret. */
const char *credentials_access_key_id(const struct credentials *creds);

/* An ordered list of name/value parameters. */
struct rpc_params;

struct rpc_params *rpc_params_new(void);
void	 rpc_params_free(struct rpc_params *params);	/* NULL is a no-op */
/* Copies name and value. A later add of the same name replaces the value. */
void	 rpc_params_set(struct rpc_params *params, const char *name,
	    const char *value);
/* Borrowed value for name, or NULL. */
const char *rpc_params_get(const struct rpc_params *params, const char *name);
size_t	 rpc_params_count(const struct rpc_params *params);
/* The i-th pair in insertion order; borrowed. */
void	 rpc_params_at(const struct rpc_params *params, size_t i,
	    const char **name, const char **value);
/* Removes name if present. */
void	 rpc_params_remove(struct rpc_params *params, const char *name);

/*
 * Percent-encodes len bytes of s by the rule above. Returns a new string;
 * free with free().
 */
char	*signer_percent_encode(const char *s, size_t len);

/*
 * Decodes %XX escapes (and '+' as space, as form bodies allow). Returns a
 * new string, or NULL on a malformed escape or an embedded NUL.
 */
char	*signer_percent_decode(const char *s, size_t len);

/* The sorted, encoded query of params. New string; free with free(). */
char	*signer_canonical_query(const struct rpc_params *params);

/* METHOD&%2F&encode(canonical_query). New string; free with free(). */
char	*signer_string_to_sign(const char *http_method,
	    const char *canonical_query);

/*
 * base64(HMAC-SHA1(secret + "&", string_to_sign)) into out, which holds
 * SIGNER_SIGNATURE_LEN + 1 bytes. Returns 0, or -1 on an OpenSSL failure.
 */
int	 signer_signature(const struct credentials *creds,
	    const char *string_to_sign, char *out);

/*
 * Same, for a bare secret: used by the mock upstream, which holds its own
 * key table. The temporary key buffer is wiped before returning.
 */
int	 signer_signature_with_secret(const char *secret,
	    const char *string_to_sign, char *out);

/* 128 random bits from OpenSSL as lowercase hex. Returns 0 or -1. */
int	 signer_nonce(char out[SIGNER_NONCE_LEN + 1]);

/* UTC time as YYYY-MM-DDThh:mm:ssZ into out[21]. */
void	 signer_timestamp(time_t now, char out[21]);

/*
 * Signs a call: sets the common parameters (AccessKeyId, SignatureMethod,
 * SignatureVersion, SignatureNonce, Timestamp, and SecurityToken when the
 * credentials have one) in params, then returns the form body
 * "canonical query&Signature=encoded signature" for a POST to "/".
 * nonce NULL draws a fresh one. params must already hold Action, Version,
 * Format and the call's own parameters. Returns a new string (free with
 * free()), or NULL on an OpenSSL failure.
 */
char	*signer_sign_post(struct rpc_params *params,
	    const struct credentials *creds, time_t now, const char *nonce);

#endif
