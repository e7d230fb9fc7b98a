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
//  than UTF-8 or US-ASCII (a subset of it)
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
            ||    (len == 4 && strncasecmp (name, "utf8", 4) == 0)
            ||    (len == 8 && strncasecmp (name, "us-ascii", 8) == 0)))
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

//  True when the n bytes at token are an integer (an optional '-' and digits) that
//  json_int_t cannot hold.
static bool
s_beyond_json_int (const char *token, size_t n)
{
    bool negative = n > 0 && *token == '-';
    const char *digits = token + negative;
    size_t count = n - negative;
    for (size_t i = 0; i < count; i++)
        if (!isdigit ((unsigned char) digits [i]))
            return false;           //  a real, or not a number: jansson judges
    const char *limit = negative? "9223372036854775808": "9223372036854775807";
    return count > 19 || (count == 19 && memcmp (digits, limit, 19) > 0);
}

json_t *
ly_jsonr_load (const char *text, size_t len, size_t flags)
{
    json_error_t error;
    json_t *tree = json_loadb (text, len, flags, &error);
    if (tree || json_error_code (&error) != json_error_numeric_overflow)
        return tree;
    //  Again, with ".0" after each integer too big, outside strings: jansson reads
    //  it as a real. (JSON_DECODE_INT_AS_REAL would make every integer a real, cut
    //  those above 2^53 to a double's precision and fail the fakes' integer checks.)
    //  Such an integer has 19 digits at least: the copy grows by 2 bytes per 20 at most.
    char *copy = (char *) malloc (len + len / 8 + 3);
    if (!copy)
        return NULL;
    size_t used = 0;
    bool in_string = false;
    size_t at = 0;
    while (at < len) {
        char c = text [at];
        if (in_string) {
            if (c == '\\' && at + 1 < len)
                copy [used++] = text [at++];
            else
            if (c == '"')
                in_string = false;
            copy [used++] = text [at++];
        }
        else
        if (c == '-' || isdigit ((unsigned char) c)) {
            size_t end = at + 1;
            while (end < len && text [end] && strchr ("0123456789.eE+-", text [end]))
                end++;
            memcpy (copy + used, text + at, end - at);
            used += end - at;
            if (s_beyond_json_int (text + at, end - at)) {
                copy [used++] = '.';
                copy [used++] = '0';
            }
            at = end;
        }
        else {
            in_string = c == '"';
            copy [used++] = text [at++];
        }
    }
    tree = json_loadb (copy, used, flags, NULL);
    free (copy);
    return tree;
}
