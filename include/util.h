/*
 * Small helpers every module uses: allocation that aborts on exhaustion,
 * clocks, hex, and wiping secrets.
 */
#ifndef ACRGW_UTIL_H
#define ACRGW_UTIL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Allocation failure after input sizes have been capped is fatal: these log
 * one line and abort, so callers carry no out-of-memory branches.
 */
void	*xmalloc(size_t size);
void	*xcalloc(size_t count, size_t size);
void	*xrealloc(void *ptr, size_t size);
char	*xstrdup(const char *s);
char	*xstrndup(const char *s, size_t len);
/* printf into a new string; free with free(). */
char	*xasprintf(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2)));

/* Overwrites then frees a NUL-terminated secret; NULL is a no-op. */
void	 secret_free(char *secret);

/* Milliseconds: wall clock since the epoch, and a monotonic clock. */
int64_t	 util_now_ms(void);
int64_t	 util_mono_ms(void);

/* Lowercase hex of len bytes into out, which holds 2 * len + 1 bytes. */
void	 util_hex(const unsigned char *bytes, size_t len, char *out);

/* Constant-time equality of two equal-length buffers. */
int	 util_equal_ct(const void *a, const void *b, size_t len);

#endif
