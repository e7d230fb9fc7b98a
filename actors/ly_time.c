/*  ly_time.c: RFC 3339 date-times (see ly_time.h). */
#include "ly_prelude.h"
#include "ly_time.h"

#define S_TEXT_MAX 128              //  longest date-time text read

//  Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
static int64_t
s_days_from_civil (int64_t year, int month, int day)
{
    year -= month <= 2;
    int64_t era = (year >= 0? year: year - 399) / 400;
    int64_t yoe = year - era * 400;
    int64_t doy = (153 * (month + (month > 2? -3: 9)) + 2) / 5 + day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
s_digits (const char *text, int count)
{
    int value = 0;
    for (int i = 0; i < count; i++) {
        if (text [i] < '0' || text [i] > '9')
            return -1;
        value = value * 10 + text [i] - '0';
    }
    return value;
}

static bool
s_leap_year (int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

//  Parses RFC 3339 date-time: YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM),
//  fraction of any length (cut to microseconds), second 60 allowed (a leap second,
//  taken as the next minute's first, as PostgreSQL does). 0 / -1.
int
ly_time_rfc3339 (const char *text, size_t len, int64_t *usec)
{
    char buffer [S_TEXT_MAX + 1];
    if (len < 20 || len > S_TEXT_MAX)
        return -1;
    memcpy (buffer, text, len);
    buffer [len] = 0;
    const char *p = buffer;
    int year = s_digits (p, 4), month = s_digits (p + 5, 2), day = s_digits (p + 8, 2);
    if (p [4] != '-' || p [7] != '-' || (p [10] != 'T' && p [10] != 't' && p [10] != ' '))
        return -1;
    int hour = s_digits (p + 11, 2), minute = s_digits (p + 14, 2), second = s_digits (p + 17, 2);
    if (p [13] != ':' || p [16] != ':')
        return -1;
    static const int month_days [] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23
    ||  minute < 0 || minute > 59 || second < 0 || second > 60)
        return -1;
    if (day > month_days [month - 1] + (month == 2 && s_leap_year (year)))
        return -1;
    p += 19;
    int64_t fraction = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits++ < 6)
                fraction = fraction * 10 + (*p - '0');
            p++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 6; digits++)
            fraction *= 10;
    }
    int offset = 0;                 //  minutes east of UTC
    if (*p == 'Z' || *p == 'z')
        p++;
    else
    if (*p == '+' || *p == '-') {
        int offset_hour = s_digits (p + 1, 2);
        if (offset_hour < 0 || offset_hour > 23 || p [3] != ':')
            return -1;
        int offset_minute = s_digits (p + 4, 2);
        if (offset_minute < 0 || offset_minute > 59)
            return -1;
        offset = (offset_hour * 60 + offset_minute) * (*p == '-'? -1: 1);
        p += 6;
    }
    else
        return -1;
    if (*p)
        return -1;
    int64_t seconds = s_days_from_civil (year, month, day) * 86400
                    + hour * 3600 + minute * 60 + second - offset * 60;
    *usec = seconds * 1000000 + fraction;
    return 0;
}

void
ly_time_duration_text (int64_t seconds, char *out, size_t size)
{
    static const struct { int64_t unit; const char *name; } units [] = {
        { 86400, "day" }, { 3600, "hour" }, { 60, "minute" }, { 1, "second" } };
    size_t i = 0;
    while (seconds % units [i].unit)
        i++;
    int64_t count = seconds / units [i].unit;
    snprintf (out, size, "%" PRId64 " %s%s", count, units [i].name, count == 1? "": "s");
}
