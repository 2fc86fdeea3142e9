/*
 * libFuzzer target: the signer's percent coding. decode(encode(x)) == x
 * for any x without a NUL, encode writes only unreserved bytes and %XX
 * with uppercase hex, and decode alone never yields a NUL inside.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "signer.h"

int	 LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
	    c == '~';
}

static bool
is_upper_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

/* Exactly the vendor's alphabet: A-Z a-z 0-9 - _ . ~ and %XX. */
static void
check_encoded(const char *enc, const char *x, size_t len)
{
	size_t	 i, j = 0;

	for (i = 0; i < len; i++) {
		if (is_unreserved((unsigned char)x[i])) {
			if (enc[j++] != x[i])
				abort();
			continue;
		}
		if (enc[j] != '%' || !is_upper_hex(enc[j + 1]) ||
		    !is_upper_hex(enc[j + 2]))
			abort();
		j += 3;
	}
	if (enc[j] != '\0')
		abort();
}

/* Decoding raw input: NULL, or a string no longer than the input. */
static void
check_decode_alone(const char *s, size_t len)
{
	char	*dec, *enc, *again;
	size_t	 n;

	dec = signer_percent_decode(s, len);
	if (memchr(s, '\0', len) != NULL) {
		/* An embedded NUL must be refused, not cut the value short. */
		if (dec != NULL)
			abort();
		return;
	}
	if (dec == NULL)
		return;
	n = strlen(dec);
	if (n > len)
		abort();

	/* A decoded value survives another round trip. */
	enc = signer_percent_encode(dec, n);
	again = signer_percent_decode(enc, strlen(enc));
	if (again == NULL || strcmp(again, dec) != 0)
		abort();
	free(again);
	free(enc);
	free(dec);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char		*x, *enc, *dec;
	const uint8_t	*nul;
	size_t		 len;

	/* Exact-size copies, so ASan sees a read past either end. */
	if ((x = malloc(size > 0 ? size : 1)) == NULL)
		abort();
	memcpy(x, data, size);
	check_decode_alone(x, size);

	/* The round trip takes x up to its first NUL. */
	nul = memchr(data, '\0', size);
	len = nul != NULL ? (size_t)(nul - data) : size;

	enc = signer_percent_encode(x, len);
	check_encoded(enc, x, len);
	dec = signer_percent_decode(enc, strlen(enc));
	if (dec == NULL || strlen(dec) != len || memcmp(dec, x, len) != 0)
		abort();

	free(dec);
	free(enc);
	free(x);
	return 0;
}
