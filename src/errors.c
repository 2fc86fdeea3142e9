/*
 * The table of every error a client can see. Codes are stable: portals
 * branch on them. Titles and details are fixed text, never built from
 * input.
 */
#include <stdlib.h>

#include "errors.h"
#include "util.h"

#define PROBLEM_TYPE_BASE	"https://acr-gateway.internal/problems/"

const struct api_error ERR_INVALID_REQUEST = {
	400, "invalid_request", "Invalid request",
	"The request body does not follow the API's rules; see errors."
};
const struct api_error ERR_DUPLICATE_HEADER = {
	400, "duplicate_header", "Duplicate header",
	"A header that may appear only once (Content-Length, Content-Type, "
	"Idempotency-Key) appears more than once."
};
const struct api_error ERR_BAD_HOST = {
	400, "bad_host", "Missing or repeated Host",
	"An HTTP/1.1 request needs exactly one Host header."
};
const struct api_error ERR_UNAUTHENTICATED = {
	401, "unauthenticated", "Unauthenticated",
	"A valid API key is required: Authorization: Bearer <key>."
};
const struct api_error ERR_FORBIDDEN = {
	403, "forbidden", "Forbidden",
	"This tenant may not perform this request."
};
const struct api_error ERR_NOT_FOUND = {
	404, "not_found", "Not found",
	"No such resource."
};
const struct api_error ERR_METHOD_NOT_ALLOWED = {
	405, "method_not_allowed", "Method not allowed",
	"This resource does not support that method."
};
const struct api_error ERR_REQUEST_IN_PROGRESS = {
	409, "request_in_progress", "Request in progress",
	"A request with this client token is still being processed; retry "
	"later or send Prefer: wait=N."
};
const struct api_error ERR_PAYLOAD_TOO_LARGE = {
	413, "payload_too_large", "Payload too large",
	"The request body exceeds the configured limit."
};
const struct api_error ERR_UNSUPPORTED_MEDIA_TYPE = {
	415, "unsupported_media_type", "Unsupported media type",
	"The request body must be sent as Content-Type: application/json."
};
const struct api_error ERR_IDEMPOTENCY_MISMATCH = {
	422, "idempotency_mismatch", "Idempotency key reused",
	"This client token was already used with a different request."
};
const struct api_error ERR_UPSTREAM_REJECTED = {
	422, "upstream_rejected", "Rejected by the cloud vendor",
	"The vendor refused to create the instance; see vendor_code."
};
const struct api_error ERR_INTERNAL = {
	500, "internal", "Internal error",
	"The gateway failed unexpectedly; the request was not sent upstream."
};
const struct api_error ERR_UNSUPPORTED_TRANSFER_ENCODING = {
	501, "unsupported_transfer_encoding", "Unsupported transfer encoding",
	"The only Transfer-Encoding accepted is a single chunked; send the "
	"body with Content-Length or chunked. The connection is closed."
};
const struct api_error ERR_UPSTREAM_UNAVAILABLE = {
	502, "upstream_unavailable", "Upstream unavailable",
	"The vendor could not be reached or failed; retry with the same "
	"client token."
};
const struct api_error ERR_UNAVAILABLE = {
	503, "unavailable", "Service unavailable",
	"The gateway cannot reach its Redis store right now, so it did "
	"nothing: no purchase was made. Retry later with the same client "
	"token."
};
const struct api_error ERR_UPSTREAM_TIMEOUT = {
	504, "upstream_timeout", "Upstream timeout",
	"The vendor did not answer in time; the outcome is unknown. Retry "
	"with the same client token to learn it."
};

char *
errors_problem_body(const struct api_error *err, const char *request_id,
    json_t *extra)
{
	json_t	*body;
	char	*type;
	char	*text;

	type = xasprintf("%s%s", PROBLEM_TYPE_BASE, err->code);
	body = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s}",
	    "type", type, "title", err->title, "status", err->status,
	    "code", err->code, "detail", err->detail,
	    "request_id", request_id != NULL ? request_id : "");
	free(type);
	if (body == NULL)
		abort();
	if (extra != NULL)
		(void)json_object_update(body, extra);
	json_decref(extra);

	text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(body);
	if (text == NULL)
		abort();
	return text;
}
