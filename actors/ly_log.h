/*  ly_log.h: leveled logging, one line per message on stderr, prefixed with time, level
    and actor. Messages are PostgreSQL style ("could not open \"%s\": %s"). As a last line
    of defence against leaking personal data, every line is scrubbed before it is written:
    anything shaped like an email address, an IP address or a phone number is masked. */
#ifndef LY_LOG_H
#define LY_LOG_H

#include "ly_prelude.h"

typedef enum { LY_LOG_DEBUG, LY_LOG_INFO, LY_LOG_WARNING, LY_LOG_ERROR } ly_log_level_t;

/*  Process-wide set-up, from main: the minimum level and the process' actor name. */
void ly_log_init (ly_log_level_t level, const char *process_name);
int ly_log_level_parse (const char *text, ly_log_level_t *level);   /* 0 / -1 */
ly_log_level_t ly_log_level (void);

void ly_log (ly_log_level_t level, const char *actor, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));
#define ly_debug(actor, ...)   do { if (ly_log_level () <= LY_LOG_DEBUG) ly_log (LY_LOG_DEBUG, actor, __VA_ARGS__); } while (0)
#define ly_info(actor, ...)    ly_log (LY_LOG_INFO, actor, __VA_ARGS__)
#define ly_warning(actor, ...) ly_log (LY_LOG_WARNING, actor, __VA_ARGS__)
#define ly_error(actor, ...)   ly_log (LY_LOG_ERROR, actor, __VA_ARGS__)

/*  Masks email addresses, IPv4/IPv6 addresses and phone-like digit runs in place.
    Exposed for the self-test. */
void ly_log_scrub (char *line);

#endif
