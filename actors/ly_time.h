/*  ly_time.h: RFC 3339 date-times, as SDK events and partner API queries write them. */
#ifndef LY_TIME_H_INCLUDED
#define LY_TIME_H_INCLUDED

#include "ly_prelude.h"

/*  Parses YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM) of len bytes (no NUL
    needed) into epoch microseconds: fraction up to 9 digits (cut to microseconds),
    second 60 allowed (a leap second, taken as the next minute's first, as PostgreSQL
    does). 0 / -1. */
int
    ly_time_rfc3339 (const char *text, size_t len, int64_t *usec);

/*  Writes a duration in its largest whole unit: "7 days", "1 hour", "90 seconds". */
void
    ly_time_duration_text (int64_t seconds, char *out, size_t size);

#endif
