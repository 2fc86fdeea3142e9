/*
 * libFuzzer target: vendor_parse_answer. The first two bytes are the HTTP
 * status (big-endian, signed, so odd and negative ones come up too); the
 * rest is the body.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "vendor.h"

int	 LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A NUL inside the buffer, and text jansson will put in a log line. */
static void
check_text(const char *s, size_t size)
{
	json_t	*j;

	if (strnlen(s, size) == size)
		abort();
	if ((j = json_string(s)) == NULL)
		abort();
	json_decref(j);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vendor_answer a;
	char		*body;
	size_t		 len;
	int		 status;
	bool		 is_2xx, is_4xx;

	if (size < 2)
		return 0;
	status = (int16_t)(uint16_t)(data[0] << 8 | data[1]);
	len = size - 2;

	/* Its own buffer of exactly len bytes, so ASan sees any overread. */
	if ((body = malloc(len > 0 ? len : 1)) == NULL)
		abort();
	memcpy(body, data + 2, len);

	vendor_parse_answer(status, len > 0 ? body : NULL, len, &a);
	free(body);

	if (a.http_status != status)
		abort();
	check_text(a.instance_id, sizeof(a.instance_id));
	check_text(a.order_id, sizeof(a.order_id));
	check_text(a.request_id, sizeof(a.request_id));
	check_text(a.code, sizeof(a.code));

	is_2xx = status >= 200 && status < 300;
	is_4xx = status >= 400 && status < 500;
	switch (a.outcome) {
	case VENDOR_CREATED:
		/* The ID is what the caller stores: never empty. */
		if (!is_2xx || a.instance_id[0] == '\0')
			abort();
		break;
	case VENDOR_RETRY:
		if (strcmp(a.code, "IdempotentProcessing") != 0)
			abort();
		break;
	case VENDOR_REJECTED:
		/* Final and stored: only a 4xx with the vendor's own code. */
		if (!is_4xx || a.code[0] == '\0')
			abort();
		break;
	case VENDOR_GATEWAY_FAULT:
		if (a.code[0] == '\0')
			abort();
		break;
	case VENDOR_TRANSIENT:
	case VENDOR_MALFORMED:
		break;
	default:
		abort();
	}
	/* Only a purchase that happened names an instance or an order. */
	if (a.outcome != VENDOR_CREATED &&
	    (a.instance_id[0] != '\0' || a.order_id[0] != '\0'))
		abort();
	return 0;
}
