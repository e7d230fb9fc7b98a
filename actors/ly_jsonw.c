/*  ly_jsonw.c: a compact JSON text writer (see ly_jsonw.h). Strings come out as
    jansson's json_dumps (JSON_COMPACT) writes them, but for the case of the hex digits:
    '"', '\\' and control characters escaped, everything else (UTF-8 included) copied. */
#include "ly_jsonw.h"
#include <float.h>
#include <math.h>
#include <openssl/crypto.h>

void
ly_jsonw_init (ly_jsonw_t *self, size_t hint)
{
    memset (self, 0, sizeof *self);
    self->size = hint < 64? 64: hint;
    self->data = (char *) malloc (self->size);
    if (self->data)
        self->data [0] = 0;
    else
        self->failed = true;
}

void
ly_jsonw_reset (ly_jsonw_t *self, bool wipe)
{
    if (self->data && wipe)
        OPENSSL_cleanse (self->data, self->size);
    free (self->data);
    memset (self, 0, sizeof *self);
}

char *
ly_jsonw_take (ly_jsonw_t *self, size_t *len)
{
    char *text = self->failed || self->depth? NULL: self->data;
    if (!text)
        ly_jsonw_reset (self, true);
    *len = text? self->len: 0;
    memset (self, 0, sizeof *self);
    return text;
}

//  Room for bytes more plus the NUL; false after a failed allocation.
static bool
s_room (ly_jsonw_t *self, size_t bytes)
{
    if (self->failed)
        return false;
    if (self->len + bytes + 1 <= self->size)
        return true;
    size_t size = self->size? self->size * 2: 64;     //  0: taken or reset, not init
    while (size < self->len + bytes + 1)
        size *= 2;
    char *data = (char *) realloc (self->data, size);
    if (!data) {
        self->failed = true;
        return false;
    }
    self->data = data;
    self->size = size;
    return true;
}

void
ly_jsonw_reserve (ly_jsonw_t *self, size_t bytes)
{
    s_room (self, bytes);
}

static void
s_put (ly_jsonw_t *self, const char *bytes, size_t len)
{
    if (!s_room (self, len))
        return;
    memcpy (self->data + self->len, bytes, len);
    self->len += len;
    self->data [self->len] = 0;
}

//  The comma before a value or a key, unless it is the first at its depth or a value
//  right after its key.
static void
s_separate (ly_jsonw_t *self)
{
    if (self->after_key) {
        self->after_key = false;
        return;
    }
    if (self->depth > 0) {
        if (!self->first [self->depth - 1])
            s_put (self, ",", 1);
        self->first [self->depth - 1] = false;
    }
}

void
ly_jsonw_open (ly_jsonw_t *self, char bracket)
{
    assert (bracket == '{' || bracket == '[');
    assert (self->depth < LY_JSONW_DEPTH);
    s_separate (self);
    s_put (self, &bracket, 1);
    self->first [self->depth++] = true;
}

void
ly_jsonw_close (ly_jsonw_t *self, char bracket)
{
    assert (bracket == '}' || bracket == ']');
    assert (self->depth > 0 && !self->after_key);
    self->depth--;
    s_put (self, &bracket, 1);
}

size_t
ly_jsonw_escape (unsigned char c, char escape [6])
{
    static const char hex [] = "0123456789abcdef";
    if (c >= 0x20 && c != '"' && c != '\\')
        return 0;
    escape [0] = '\\';
    switch (c) {
        case '"':  escape [1] = '"'; return 2;
        case '\\': escape [1] = '\\'; return 2;
        case '\b': escape [1] = 'b'; return 2;
        case '\f': escape [1] = 'f'; return 2;
        case '\n': escape [1] = 'n'; return 2;
        case '\r': escape [1] = 'r'; return 2;
        case '\t': escape [1] = 't'; return 2;
    }
    memcpy (escape + 1, "u00", 3);
    escape [4] = hex [c >> 4];
    escape [5] = hex [c & 15];
    return 6;
}

static void
s_quoted (ly_jsonw_t *self, const char *text)
{
    s_put (self, "\"", 1);
    const char *run = text;
    for (const char *c = text; *c; c++) {
        char escape [6];
        size_t len = ly_jsonw_escape ((unsigned char) *c, escape);
        if (len) {
            s_put (self, run, (size_t) (c - run));
            s_put (self, escape, len);
            run = c + 1;
        }
    }
    s_put (self, run, strlen (run));
    s_put (self, "\"", 1);
}

void
ly_jsonw_key (ly_jsonw_t *self, const char *key)
{
    assert (self->depth > 0 && !self->after_key);
    s_separate (self);
    s_quoted (self, key);
    s_put (self, ":", 1);
    self->after_key = true;
}

void
ly_jsonw_string (ly_jsonw_t *self, const char *text)
{
    s_separate (self);
    if (text)
        s_quoted (self, text);
    else
        s_put (self, "null", 4);
}

void
ly_jsonw_int (ly_jsonw_t *self, int64_t value)
{
    char digits [24];
    int len = snprintf (digits, sizeof digits, "%" PRId64, value);
    s_separate (self);
    s_put (self, digits, (size_t) len);
}

void
ly_jsonw_bool (ly_jsonw_t *self, bool value)
{
    s_separate (self);
    s_put (self, value? "true": "false", value? 4: 5);
}

size_t
ly_jsonw_double_text (double value, bool single, char text [40])
{
    if (!isfinite (value)) {
        strcpy (text, "null");
        return 4;
    }
    //  Any decimal of up to 6 (float) or 15 (double) digits round-trips, so start there;
    //  subnormals have fewer digits of precision: start at 1.
    bool subnormal = fabs (value) < (single? FLT_MIN: DBL_MIN);
    int first = subnormal? 1: single? 6: 15;
    for (int precision = first; precision <= (single? 9: 17); precision++) {
        snprintf (text, 40, "%.*g", precision, value);
        double back = strtod (text, NULL);
        if (single? (float) back == (float) value: back == value)
            break;
    }
    //  JSON wants '.', whatever LC_NUMERIC says.
    for (char *comma = strchr (text, ','); comma; comma = strchr (comma, ','))
        *comma = '.';
    return strlen (text);
}

void
ly_jsonw_double (ly_jsonw_t *self, double value)
{
    char text [40];
    size_t len = ly_jsonw_double_text (value, false, text);
    s_separate (self);
    s_put (self, text, len);
}

void
ly_jsonw_json (ly_jsonw_t *self, const json_t *json)
{
    const char *key;
    json_t *value;
    size_t index;
    switch (json_typeof (json)) {
        case JSON_OBJECT:
        case JSON_ARRAY:
            if (self->depth >= LY_JSONW_DEPTH) {
                ly_jsonw_string (self, NULL);   //  the member still gets a value
                self->failed = true;
                return;
            }
            ly_jsonw_open (self, json_is_object (json)? '{': '[');
            if (json_is_object (json))
                json_object_foreach ((json_t *) json, key, value) {
                    ly_jsonw_key (self, key);
                    ly_jsonw_json (self, value);
                }
            else
                json_array_foreach (json, index, value)
                    ly_jsonw_json (self, value);
            ly_jsonw_close (self, json_is_object (json)? '}': ']');
            break;
        case JSON_STRING:
            ly_jsonw_string (self, json_string_value (json));
            break;
        case JSON_INTEGER:
            ly_jsonw_int (self, json_integer_value (json));
            break;
        case JSON_REAL:
            ly_jsonw_double (self, json_real_value (json));
            break;
        case JSON_TRUE:
        case JSON_FALSE:
            ly_jsonw_bool (self, json_is_true (json));
            break;
        default:
            ly_jsonw_string (self, NULL);
    }
}

void
ly_jsonw_raw (ly_jsonw_t *self, const char *json, size_t len)
{
    s_separate (self);
    s_put (self, json, len);
}

void
ly_jsonw_member_string (ly_jsonw_t *self, const char *key, const char *text)
{
    ly_jsonw_key (self, key);
    ly_jsonw_string (self, text);
}

void
ly_jsonw_member_int (ly_jsonw_t *self, const char *key, int64_t value)
{
    ly_jsonw_key (self, key);
    ly_jsonw_int (self, value);
}
