/*
 * Our client JSON <-> the vendor's CreateInstance fields. Pure: no I/O.
 *
 * vendor_parse_order applies the client API's rules (see README.md, "The
 * client API") and our own; vendor_params maps a valid order to the
 * vendor's Parameter.N.Code/Value list; vendor_parse_answer classifies what
 * the vendor said.
 */
#ifndef ACRGW_VENDOR_H
#define ACRGW_VENDOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct rpc_params;

/* Longest client_token, and the upstream ClientToken's length. */
#define VENDOR_TOKEN_MAX	64

enum instance_type {
	INSTANCE_BASIC,
	INSTANCE_STANDARD,
	INSTANCE_ADVANCED,
};

enum image_scanner {
	SCANNER_NONE,		/* field absent */
	SCANNER_ACR,
	SCANNER_SAS,
};

enum renewal {
	RENEWAL_MANUAL,		/* the default */
	RENEWAL_AUTO,
};

/* A validated request: the effective request after defaults. */
struct order {
	char			 client_token[VENDOR_TOKEN_MAX + 1];
	enum instance_type	 instance_type;
	char			 instance_name[31];
	char			 region[33];
	bool			 default_oss_bucket;
	char			 instance_storage_name[64];	/* "" if absent */
	enum image_scanner	 image_scanner;
	int64_t			 namespace_quota;	/* -1 if absent */
	int64_t			 repo_quota;		/* -1 if absent */
	int64_t			 vpc_num;		/* -1 if absent */
	int			 period;
	enum renewal		 renewal;
	int			 renew_period;		/* 0 if absent */
};

/*
 * One bad field: field is "" for the body as a whole. Both static, except
 * an unknown key's name, which lives in the struct validation holding it.
 */
struct field_error {
	const char		*field;
	const char		*message;
};

#define VENDOR_MAX_FIELD_ERRORS	24
/* An unknown key is named in its entry, cut to this many bytes. */
#define VENDOR_FIELD_NAME_MAX	63

/*
 * The errors of one parse. An unknown key's field points into names, so
 * the entries stay valid only inside this struct: do not copy it by value.
 */
struct validation {
	struct field_error	 errors[VENDOR_MAX_FIELD_ERRORS];
	size_t			 count;
	char			 names[VENDOR_MAX_FIELD_ERRORS]
				    [VENDOR_FIELD_NAME_MAX + 1];
};

/*
 * Parses and validates a request body. header_token is the Idempotency-Key
 * header (already stripped of structured-field quotes) or NULL. Returns 0
 * with out filled, or -1 with one entry in v for each bad field.
 */
int	 vendor_parse_order(const char *body, size_t len,
	    const char *header_token, struct order *out, struct validation *v);

/* A client token: 1-64 printable ASCII characters, no spaces. */
bool	 vendor_is_token(const char *s, size_t len);

/*
 * SHA-256 of the normalized order (every field after defaults, in a fixed
 * order and encoding), as 64 lowercase hex digits plus NUL. Key order,
 * spacing, an omitted default and where the token came from do not change
 * it.
 */
void	 vendor_fingerprint(const struct order *order, char out[65]);

/*
 * The upstream ClientToken for (tenant, client_token): deterministic, so
 * every retry on every node sends the same one, and domain-separated per
 * tenant, so two tenants never collide. 64 hex digits plus NUL.
 */
void	 vendor_upstream_token(const char *tenant, const char *client_token,
	    char out[VENDOR_TOKEN_MAX + 1]);

/*
 * The CreateInstance parameters for order: Action, Version, Format,
 * ProductCode, SubscriptionType, ProductType (from site), Period,
 * RenewalStatus, RenewPeriod, ClientToken and Parameter.N.Code/Value in the
 * vendor page's order, numbered from 1 over the ones present. New; free
 * with rpc_params_free(). The signer adds the common parameters.
 */
struct rpc_params *vendor_params(const struct order *order, enum site site,
	    const char *upstream_token);

/* What the vendor's answer means for us. */
enum vendor_outcome {
	VENDOR_CREATED,		/* 2xx and Success true */
	VENDOR_REJECTED,	/* a definite, final rejection: store it */
	VENDOR_RETRY,		/* IdempotentProcessing: wait and resend */
	VENDOR_TRANSIENT,	/* 5xx, throttling: not final, not stored */
	VENDOR_GATEWAY_FAULT,	/* signature, key or clock: ours, not stored */
	VENDOR_MALFORMED,	/* not the vendor's JSON: not stored */
};

struct vendor_answer {
	enum vendor_outcome	 outcome;
	int			 http_status;
	char			 instance_id[128];
	char			 order_id[128];
	char			 request_id[128];
	char			 code[128];	/* vendor Code, "" if none */
};

/* Classifies an HTTP answer from the vendor. Never fails: see outcome. */
void	 vendor_parse_answer(int http_status, const char *body, size_t len,
	    struct vendor_answer *out);

#endif
