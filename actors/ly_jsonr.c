/*  ly_jsonr.c: reading JSON with jansson (see ly_jsonr.h). */
#include "ly_prelude.h"
#include "ly_jsonr.h"

const char *
ly_jsonr_reason (const char *text, char *buffer, size_t size)
{
    static const struct { const char *jansson, *ours; } reasons [] = {
        { "\\u0000 is not allowed without JSON_ALLOW_NUL", "\\u0000 is not allowed in a string" },
        { "too big integer", "an integer beyond the signed 64-bit range" },
        { "too big negative integer", "an integer beyond the signed 64-bit range" },
        { "real number overflow", "a number beyond the range of a double" },
    };
    for (size_t i = 0; i < sizeof reasons / sizeof reasons [0]; i++)
        if (strncmp (text, reasons [i].jansson, strlen (reasons [i].jansson)) == 0)
            return reasons [i].ours;
    const char *near = strstr (text, " near ");
    int len = near? (int) (near - text): (int) strlen (text);
    snprintf (buffer, size, "%.*s", len, text);
    return buffer;
}

//  True when the parameters after a media type (";" and on) name a charset other
//  than UTF-8
static bool
s_other_charset (const char *param)
{
    while (param && *param == ';') {
        param++;
        while (*param == ' ' || *param == '\t')
            param++;
        const char *next = strchr (param, ';');
        if (strncasecmp (param, "charset=", 8) == 0) {
            const char *name = param + 8;
            size_t len = next? (size_t) (next - name): strlen (name);
            while (len > 0 && (name [len - 1] == ' ' || name [len - 1] == '\t'))
                len--;
            if (len >= 2 && name [0] == '"' && name [len - 1] == '"') {
                name++;
                len -= 2;
            }
            if (!((len == 5 && strncasecmp (name, "utf-8", 5) == 0)
            ||    (len == 4 && strncasecmp (name, "utf8", 4) == 0)))
                return true;
        }
        param = next;
    }
    return false;
}

ly_jsonr_type_t
ly_jsonr_content_type (const char *value)
{
    if (!value)
        return LY_JSONR_NOT_JSON;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen ("application/json");
    if (strncasecmp (value, "application/json", len))
        return LY_JSONR_NOT_JSON;
    const char *rest = value + len;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest != 0 && *rest != ';')
        return LY_JSONR_NOT_JSON;
    return s_other_charset (rest)? LY_JSONR_NOT_UTF8: LY_JSONR_JSON;
}
