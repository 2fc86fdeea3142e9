/*
 * Every error a client can see. Each entry is static: status, a stable
 * machine-readable code, a title and a fixed human message. Request steps
 * hand a pointer to one of these upward; no text is ever built from input
 * or secrets.
 */
#ifndef ACRGW_ERRORS_H
#define ACRGW_ERRORS_H

#include <jansson.h>

struct api_error {
	int		 status;
	const char	*code;
	const char	*title;
	const char	*detail;
};

extern const struct api_error ERR_INVALID_REQUEST;	/* 400 */
extern const struct api_error ERR_DUPLICATE_HEADER;	/* 400 */
extern const struct api_error ERR_BAD_HOST;		/* 400 */
extern const struct api_error ERR_UNAUTHENTICATED;	/* 401 */
extern const struct api_error ERR_FORBIDDEN;		/* 403 */
extern const struct api_error ERR_NOT_FOUND;		/* 404 */
extern const struct api_error ERR_METHOD_NOT_ALLOWED;	/* 405 */
extern const struct api_error ERR_REQUEST_IN_PROGRESS;	/* 409 */
extern const struct api_error ERR_PAYLOAD_TOO_LARGE;	/* 413 */
extern const struct api_error ERR_UNSUPPORTED_MEDIA_TYPE; /* 415 */
extern const struct api_error ERR_IDEMPOTENCY_MISMATCH; /* 422 */
extern const struct api_error ERR_UPSTREAM_REJECTED;	/* 422 */
extern const struct api_error ERR_INTERNAL;		/* 500 */
extern const struct api_error ERR_UNSUPPORTED_TRANSFER_ENCODING; /* 501 */
extern const struct api_error ERR_UPSTREAM_UNAVAILABLE; /* 502 */
extern const struct api_error ERR_UNAVAILABLE;		/* 503 */
extern const struct api_error ERR_UPSTREAM_TIMEOUT;	/* 504 */

/*
 * Builds an application/problem+json body for err. extra, if not NULL, is
 * an object whose members are merged in (for example "errors" or
 * "vendor_code"); the call takes ownership of it. Returns a new string;
 * free with free().
 */
char	*errors_problem_body(const struct api_error *err,
	    const char *request_id, json_t *extra);

#endif
