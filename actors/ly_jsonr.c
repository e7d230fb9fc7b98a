/*  ly_jsonr.c: reading JSON with jansson (see ly_jsonr.h). */
#include "ly_prelude.h"
#include "ly_jsonr.h"

const char *
ly_jsonr_reason (const char *text)
{
    static const struct { const char *jansson, *ours; } reasons [] = {
        { "\\u0000 is not allowed without JSON_ALLOW_NUL", "\\u0000 is not allowed in a string" },
        { "too big integer", "an integer beyond 64 bits" },
        { "real number overflow", "a number beyond the range of a double" },
    };
    for (size_t i = 0; i < sizeof reasons / sizeof reasons [0]; i++)
        if (strncmp (text, reasons [i].jansson, strlen (reasons [i].jansson)) == 0)
            return reasons [i].ours;
    return text;
}
