/*  ly_log.h: leveled logging, one line per message on stderr, prefixed with time, level
    and actor. Messages are PostgreSQL style ("could not open \"%s\": %s"). As a last line
    of defence against leaking personal data, every line is scrubbed before it is written:
    anything shaped like an email address, an IP address or a phone number is masked. */
#ifndef LY_LOG_H
#define LY_LOG_H

#include "ly_prelude.h"

typedef enum { LY_LOG_DEBUG, LY_LOG_INFO, LY_LOG_WARNING, LY_LOG_ERROR } ly_log_level_t;

/*  Process-wide set-up, from main: the minimum level (INFO until then) and the process'
    actor name ("layers" until then). */
void ly_log_init (ly_log_level_t level, const char *process_name);
/*  "debug", "info", "warning" or "error", any case. 0 / -1 */
int ly_log_level_parse (const char *text, ly_log_level_t *level);
ly_log_level_t ly_log_level (void);

/*  Writes "2026-11-27 08:12:03.123 UTC [pid] LEVEL: actor: message" with one write(2);
    actor NULL means the process name. The message is scrubbed (see ly_log_scrub), its
    control characters become spaces, and a line longer than PIPE_BUF (4096) is cut and
    ends in " [truncated]". Thread-safe; errno is preserved. */
void ly_log (ly_log_level_t level, const char *actor, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));
#define ly_debug(actor, ...)   do { if (ly_log_level () <= LY_LOG_DEBUG) ly_log (LY_LOG_DEBUG, actor, __VA_ARGS__); } while (0)
#define ly_info(actor, ...)    ly_log (LY_LOG_INFO, actor, __VA_ARGS__)
#define ly_warning(actor, ...) ly_log (LY_LOG_WARNING, actor, __VA_ARGS__)
#define ly_error(actor, ...)   ly_log (LY_LOG_ERROR, actor, __VA_ARGS__)

/*  A request id as X-Request-Id gives it and the logs name it: 16 hex digits, never a
    run of 9 to 15 digits the scrubber would take for a phone number. */
#define LY_REQUEST_ID_FORMAT "%016" PRIx64

/*  Copies text into out (size bytes, always NUL-terminated when size > 0) with personal
    data replaced by a token; ly_log runs it over every message (never over the prefix).
    Returns true when all of text fit, false when out was cut short (never inside a token
    or a UTF-8 character). Exposed for the self-test and for other redacting code.

    "[email]"  local@domain.tld: a local part of letters, digits and .!#$%&'*+-=?^_`{|}~
               (or bytes >= 0x80) and a domain of two or more labels whose last label
               has two or more characters and a letter. Leading ' and ` are not taken as
               part of the local part, so 'jane@example.com' keeps its quotes.
    "[ip]"     a dotted quad of octets 0-255, and anything inet_pton accepts as IPv6
               (compressed, ::ffff:1.2.3.4), not glued to a letter, digit, '_' or '.'.
               Loopback and unspecified addresses (127.0.0.0/8, 0.0.0.0, ::1, ::) are
               not personal and are kept, as are the server's own (ly_log_own_address).
    "[phone]"  '+' and 7-15 digits, grouped by single spaces, dashes, dots or
               parentheses ("+1 (555) 123-4567", "+44 20 7946 0958"); or 9-15 digits
               standing alone, bare or grouped by dashes, by dots (three groups or more)
               or after an area code in parentheses ("5551234567", "555-123-4567",
               "555.123.4567", "(555) 123-4567").
    Kept as they are: pids, counts and durations up to 8 digits, decimals (12.5ms,
    1234567890.5), dates and times (2026-11-27 08:12:03.123), versions (4.3.4),
    ports, UUIDs and hex digests. Because of the phone rule, do not log bare numbers of
    9-15 digits (byte counts, epoch seconds): log sizes in KiB/MiB, times in ISO form. */
bool ly_log_scrub (const char *text, char *out, size_t size);

/*  Names an address of the server itself (the host of LAYERS_HTTP_ADDR, when an IP
    address), which the scrubber then keeps: an operator must see which address a
    listener failed on. Call at start, before any thread logs; at most 8 are kept, and
    anything that is not an IP address is ignored. */
void ly_log_own_address (const char *text);

#endif
