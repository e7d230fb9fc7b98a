/*  ly_event.c: one SDK event (a msgpack map) in, one PostgreSQL COPY text line out.
    Validates every field of the SDK ingest contract (docs: DESIGN.md, "SDK ingest"),
    hashes email and phone (ly_pii), turns the client IP into a geo country / region
    (ly_geoip) and the User-Agent into device fields (ly_uap), and writes the columns of
    ly_event_copy_columns.

    Design: the event is read in one pass over its map into a fixed set of slots (the
    last of duplicate keys wins, as in jansson), then each field is checked in a fixed
    order so the reason for a refusal is stable. Column values are views (pointer +
    length) into the event or into the buffers of one scrub_t (allocated per call: it
    holds the 32 KiB of serialized properties); the line is sized exactly, the caller's
    buffer grown once, and the columns written with COPY escaping. Raw email, phone, IP
    and User-Agent are never copied into the line or a reason; ly_pii wipes its
    normalized values, and the buffers here that held values derived from them (a phone
    given as a number, the parsed User-Agent, the hashes) are wiped before returning. */
#include "ly_event.h"
#include "ly_utf8.h"
#include "ly_time.h"
#include "ly_jsonw.h"
#include "ly_crypto.h"
#include "ly_pii.h"
#include <float.h>
#include <math.h>
#include <openssl/crypto.h>

const char *ly_event_copy_columns =
    "org_id, project_id, event_id, name, event_time, received_at, user_id, "
    "email_sha256, phone_sha256, phone_e164_sha256, properties, "
    "device_os, device_os_version, device_model, device_brand, device_locale, "
    "device_timezone, app_version, app_build, app_package, geo_country, geo_region, "
    "attribution_token, consent_ads, consent_att";

#define S_EVENT_ID_MAX      128         //  bytes
#define S_NAME_MAX          64
#define S_USER_ID_MAX       256
#define S_DEVICE_FIELD_MAX  128         //  device.* and app.*
#define S_TOKEN_MAX         4096
#define S_PROPERTIES_MAX    32768       //  serialized JSON
#define S_PROPERTIES_DEPTH  16          //  the properties object is level 1
#define S_DEFAULT_FUTURE    (5 * 60 * (int64_t) 1000000)
#define S_DEFAULT_PAST      (7 * 86400 * (int64_t) 1000000)
#define S_USEC_EXACT        ((int64_t) 1 << 53)     //  times the store converts exactly

//  The columns, in the order of ly_event_copy_columns
typedef enum {
    COL_ORG_ID, COL_PROJECT_ID, COL_EVENT_ID, COL_NAME, COL_EVENT_TIME, COL_RECEIVED_AT,
    COL_USER_ID, COL_EMAIL_SHA256, COL_PHONE_SHA256, COL_PHONE_E164_SHA256,
    COL_PROPERTIES, COL_DEVICE_OS, COL_DEVICE_OS_VERSION, COL_DEVICE_MODEL,
    COL_DEVICE_BRAND, COL_DEVICE_LOCALE, COL_DEVICE_TIMEZONE, COL_APP_VERSION,
    COL_APP_BUILD, COL_APP_PACKAGE, COL_GEO_COUNTRY, COL_GEO_REGION,
    COL_ATTRIBUTION_TOKEN, COL_CONSENT_ADS, COL_CONSENT_ATT, COL_COUNT
} column_t;

//  The top-level fields we read; anything else in the event is ignored
typedef enum {
    F_EVENT_ID, F_NAME, F_TIMESTAMP, F_USER_ID, F_EMAIL, F_PHONE, F_PROPERTIES,
    F_DEVICE, F_APP, F_ATTRIBUTION_TOKEN, F_CONSENT, F_COUNT
} field_t;

static const char *s_fields [F_COUNT] = {
    "event_id", "name", "timestamp", "user_id", "email", "phone", "properties",
    "device", "app", "attribution_token", "consent"
};

//  A string field of device {...} or app {...}, and its column. A version or a build
//  may also come as an integer (Android's versionCode is one).
typedef struct {
    const char *key;
    const char *label;              //  how a reason names it
    column_t column;
    bool integer_ok;                //  an integer is taken too, as its decimal text
} subfield_t;

static const subfield_t s_device_fields [] = {
    { "os",         "device.os",            COL_DEVICE_OS,          false },
    { "os_version", "device.os_version",    COL_DEVICE_OS_VERSION,  true },
    { "model",      "device.model",         COL_DEVICE_MODEL,       false },
    { "brand",      "device.brand",         COL_DEVICE_BRAND,       false },
    { "locale",     "device.locale",        COL_DEVICE_LOCALE,      false },
    { "timezone",   "device.timezone",      COL_DEVICE_TIMEZONE,    false },
};

static const subfield_t s_app_fields [] = {
    { "version",    "app.version",          COL_APP_VERSION,        true },
    { "build",      "app.build",            COL_APP_BUILD,          true },
    { "package",    "app.package",          COL_APP_PACKAGE,        false },
};

#define S_DEVICE_FIELDS (sizeof s_device_fields / sizeof s_device_fields [0])
#define S_APP_FIELDS    (sizeof s_app_fields / sizeof s_app_fields [0])

//  A column value: data == NULL is SQL NULL. Not NUL-terminated.
typedef struct {
    const char *data;
    size_t len;
} text_t;

//  The work of one ly_event_scrub call, allocated per call; zeroed up to json_buffer
typedef struct {
    const ly_event_ctx_t *ctx;
    text_t column [COL_COUNT];              //  values, pointing into the event or below
    char event_time [24];                   //  epoch microseconds, decimal
    char received_at [24];
    char email_sha256 [65];
    char phone_sha256 [65];
    char phone_e164_sha256 [65];
    char country [3];
    char region [16];
    char os_version [100];                  //  from the User-Agent: major.minor.patch
    ly_uap_result_t uap;                    //  derived from the User-Agent: wiped
    char *err;                              //  reason for the client
    size_t errlen;
    char *json;                             //  properties being serialized
    size_t json_len;
    bool json_full;                         //  it outgrew S_PROPERTIES_MAX
    //  Written before they are read: not zeroed
    char json_buffer [S_PROPERTIES_MAX];
    char integer [COL_COUNT][24];           //  a column given as an integer, as text
} scrub_t;

//  Writes the reason for refusing the event; returns LY_INVALID.
static ly_result_t
s_refuse (scrub_t *self, const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static ly_result_t
s_refuse (scrub_t *self, const char *format, ...)
{
    if (self->err && self->errlen) {
        va_list args;
        va_start (args, format);
        vsnprintf (self->err, self->errlen, format, args);
        va_end (args);
    }
    return LY_INVALID;
}

static bool
s_key_is (const msgpack_object *key, const char *name)
{
    size_t len = strlen (name);
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == len
        && memcmp (key->via.str.ptr, name, len) == 0;
}

//  Fills values [i] with the value of the last key names [i] in map; nil counts as absent.
static void
s_pick (const msgpack_object *map, const char *const *names, size_t count,
        const msgpack_object **values)
{
    for (size_t i = 0; i < count; i++)
        values [i] = NULL;
    for (uint32_t entry = 0; entry < map->via.map.size; entry++) {
        const msgpack_object_kv *kv = &map->via.map.ptr [entry];
        for (size_t i = 0; i < count; i++)
            if (s_key_is (&kv->key, names [i])) {
                values [i] = kv->val.type == MSGPACK_OBJECT_NIL? NULL: &kv->val;
                break;
            }
    }
}

//  Checks UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF),
//  as PostgreSQL does, and that there is no NUL. With no_controls, also refuses C0 and
//  C1 control characters and DEL. true when the text passes.
static bool
s_utf8_valid (const char *text, size_t len, bool no_controls)
{
    const uint8_t *p = (const uint8_t *) text;
    const uint8_t *end = p + len;
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) {
            if (c == 0 || (no_controls && (c < 0x20 || c == 0x7f)))
                return false;
            p++;
            continue;
        }
        size_t size = ly_utf8_sequence (p, (size_t) (end - p));
        if (!size)
            return false;
        if (no_controls && c == 0xc2 && p [1] <= 0x9f)
            return false;                   //  U+0080..U+009F
        p += size;
    }
    return true;
}

//  Reads an optional string field of at most max bytes into column; "" stays NULL.
static ly_result_t
s_string_field (scrub_t *self, const msgpack_object *value, const char *label, size_t max,
                column_t column)
{
    if (!value)
        return LY_OK;
    if (value->type != MSGPACK_OBJECT_STR || value->via.str.size > max)
        return s_refuse (self, "%s must be a string of at most %zu bytes", label, max);
    if (!s_utf8_valid (value->via.str.ptr, value->via.str.size, false))
        return s_refuse (self, "%s must be valid UTF-8 without NUL bytes", label);
    if (value->via.str.size > 0) {
        self->column [column].data = value->via.str.ptr;
        self->column [column].len = value->via.str.size;
    }
    return LY_OK;
}

static void
s_set (scrub_t *self, column_t column, const char *text)
{
    self->column [column].data = text;
    self->column [column].len = strlen (text);
}

//  Reads an optional string of at most max bytes, or an integer as its decimal text,
//  into column.
static ly_result_t
s_string_or_integer (scrub_t *self, const msgpack_object *value, const char *label,
                     size_t max, column_t column)
{
    char *number = self->integer [column];
    if (value && value->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        snprintf (number, 24, "%" PRIu64, value->via.u64);
    else
    if (value && value->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        snprintf (number, 24, "%" PRId64, value->via.i64);
    else
    if (value && (value->type != MSGPACK_OBJECT_STR || value->via.str.size > max))
        return s_refuse (self, "%s must be a string of at most %zu bytes or an integer", label, max);
    else
        return s_string_field (self, value, label, max, column);
    s_set (self, column, number);
    return LY_OK;
}


//  --------------------------------------------------------------------------------------
//  Time

//  Formats epoch microseconds in decimal, the form the store's staging table takes (it
//  converts them to timestamptz, cheaper for PostgreSQL than parsing date text, and
//  exactly within +-2^53 us: years 1685-2254). -1 outside that range.
static int
s_format_time (int64_t usec, char out [24])
{
    if (usec <= -S_USEC_EXACT || usec >= S_USEC_EXACT)
        return -1;
    char digits [24];
    size_t len = 0;
    uint64_t rest = usec < 0? 0 - (uint64_t) usec: (uint64_t) usec;
    do {
        digits [len++] = (char) ('0' + rest % 10);
        rest /= 10;
    } while (rest);
    char *at = out;
    if (usec < 0)
        *at++ = '-';
    while (len)
        *at++ = digits [--len];
    *at = 0;
    return 0;
}

static ly_result_t
s_timestamp (scrub_t *self, const msgpack_object *value, int64_t received)
{
    static const char *wrong = "timestamp must be an RFC 3339 date-time with an offset"
                                " (2026-01-31T12:00:00Z) or a number of epoch milliseconds";
    int64_t future = self->ctx->max_future_usec > 0? self->ctx->max_future_usec: S_DEFAULT_FUTURE;
    int64_t past = self->ctx->max_past_usec > 0? self->ctx->max_past_usec: S_DEFAULT_PAST;
    int64_t usec = received;
    if (!value)
        ;                           //  the receive time
    else
    if (value->type == MSGPACK_OBJECT_STR) {
        if (ly_time_rfc3339 (value->via.str.ptr, value->via.str.size, &usec))
            return s_refuse (self, "%s", wrong);
    }
    else
    if (value->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        //  Far beyond any window: refuse before the multiplication could overflow.
        if (value->via.u64 > (uint64_t) (received + future) / 1000 + 1)
            usec = INT64_MAX;
        else
            usec = (int64_t) value->via.u64 * 1000;
    }
    else
    if (value->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        usec = value->via.i64 < INT64_MIN / 1000? INT64_MIN: value->via.i64 * 1000;
    else
    if (value->type == MSGPACK_OBJECT_FLOAT64 || value->type == MSGPACK_OBJECT_FLOAT32) {
        //  Milliseconds with a fraction, as SDKs computing them from a double send;
        //  a double holds today's epoch microseconds exactly
        double scaled = round (value->via.f64 * 1000.0);
        if (!isfinite (scaled))
            return s_refuse (self, "%s", wrong);
        usec = scaled >= 0x1p62? INT64_MAX: scaled <= -0x1p62? INT64_MIN: (int64_t) scaled;
    }
    else
        return s_refuse (self, "%s", wrong);

    char window [32];
    if (usec > received && usec - received > future) {
        ly_time_duration_text (future / 1000000, window, sizeof window);
        return s_refuse (self, "timestamp is more than %s in the future", window);
    }
    if (usec < received && (usec < received - past)) {
        ly_time_duration_text (past / 1000000, window, sizeof window);
        //  A number of 10 digits before any fraction (1e12 to 1e13 us once read as
        //  milliseconds): epoch seconds, a common mistake; say so
        bool number = value && value->type != MSGPACK_OBJECT_STR;
        if (number && usec >= INT64_C(1000000000000) && usec < INT64_C(10000000000000))
            return s_refuse (self, "timestamp is more than %s in the past (it looks like"
                             " epoch seconds; epoch milliseconds are expected)", window);
        return s_refuse (self, "timestamp is more than %s in the past", window);
    }
    if (s_format_time (usec, self->event_time))
        return s_refuse (self, "timestamp is out of range (years 1685 to 2254)");
    s_set (self, COL_EVENT_TIME, self->event_time);
    return LY_OK;
}


//  --------------------------------------------------------------------------------------
//  Properties: msgpack to JSON text that PostgreSQL's jsonb accepts

static void
s_json_put (scrub_t *self, const char *data, size_t len)
{
    if (self->json_full || len > S_PROPERTIES_MAX - self->json_len) {
        self->json_full = true;
        return;
    }
    memcpy (self->json + self->json_len, data, len);
    self->json_len += len;
}

//  A JSON string; false when text is not valid UTF-8 or holds NUL (jsonb refuses \u0000).
static bool
s_json_string (scrub_t *self, const char *text, size_t len)
{
    if (!s_utf8_valid (text, len, false))
        return false;
    s_json_put (self, "\"", 1);
    size_t plain = 0;               //  start of the run not yet written
    for (size_t i = 0; i < len && !self->json_full; i++) {
        char escape [6];
        size_t escape_len = ly_jsonw_escape ((unsigned char) text [i], escape);
        if (escape_len) {
            s_json_put (self, text + plain, i - plain);
            s_json_put (self, escape, escape_len);
            plain = i + 1;
        }
    }
    s_json_put (self, text + plain, len - plain);
    s_json_put (self, "\"", 1);
    return true;
}

//  A finite double (or float): the digits of its shortest text that reads back to the
//  same value, as a plain decimal, without an exponent. That is how jsonb (numeric)
//  writes it back to the relay and the API, so the properties' limit holds for what
//  they get (as compact JSON: jsonb's text adds a space after ':' and ','): 5e-324 is
//  326 bytes there, and counted so here.
static void
s_json_number (scrub_t *self, double value, bool single)
{
    static const char zeros [] = "0000000000000000000000000000000000000000000000000000000000000000";
    char text [40];
    size_t len = ly_jsonw_double_text (value, single, text);
    const char *exponent = memchr (text, 'e', len);
    if (!exponent) {
        s_json_put (self, text, len);
        return;
    }
    const char *mantissa = text;
    if (*mantissa == '-') {
        s_json_put (self, "-", 1);
        mantissa++;
    }
    char digits [40];
    int count = 0, point = -1;
    for (const char *at = mantissa; at < exponent; at++)
        if (*at == '.')
            point = count;
        else
            digits [count++] = *at;
    //  The decimal point falls after this many digits (before them when negative)
    int at = (point < 0? count: point) + atoi (exponent + 1);
    int leading = at < 0? -at: 0;
    int trailing = at > count? at - count: 0;
    if (at <= 0)
        s_json_put (self, "0.", 2);
    for (; leading > 0; leading -= (int) sizeof zeros - 1)
        s_json_put (self, zeros, (size_t) (leading < (int) sizeof zeros - 1? leading: (int) sizeof zeros - 1));
    if (at > 0 && at < count) {
        s_json_put (self, digits, (size_t) at);
        s_json_put (self, ".", 1);
        s_json_put (self, digits + at, (size_t) (count - at));
    }
    else
        s_json_put (self, digits, (size_t) count);
    for (; trailing > 0; trailing -= (int) sizeof zeros - 1)
        s_json_put (self, zeros, (size_t) (trailing < (int) sizeof zeros - 1? trailing: (int) sizeof zeros - 1));
}

static ly_result_t
s_json_value (scrub_t *self, const msgpack_object *value, int depth)
{
    char number [24];
    switch (value->type) {
        case MSGPACK_OBJECT_NIL:
            s_json_put (self, "null", 4);
            break;
        case MSGPACK_OBJECT_BOOLEAN:
            s_json_put (self, value->via.boolean? "true": "false", value->via.boolean? 4: 5);
            break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            s_json_put (self, number, snprintf (number, sizeof number, "%" PRIu64, value->via.u64));
            break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            s_json_put (self, number, snprintf (number, sizeof number, "%" PRId64, value->via.i64));
            break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            if (!isfinite (value->via.f64))
                return s_refuse (self, "properties must not hold NaN or infinite numbers");
            s_json_number (self, value->via.f64, value->type == MSGPACK_OBJECT_FLOAT32);
            break;
        case MSGPACK_OBJECT_STR:
            if (!s_json_string (self, value->via.str.ptr, value->via.str.size))
                return s_refuse (self, "properties must hold valid UTF-8 without NUL characters");
            break;
        case MSGPACK_OBJECT_ARRAY:
            if (depth >= S_PROPERTIES_DEPTH)
                return s_refuse (self, "properties must not be nested more than %d levels deep",
                                 S_PROPERTIES_DEPTH);
            s_json_put (self, "[", 1);
            for (uint32_t i = 0; i < value->via.array.size && !self->json_full; i++) {
                if (i)
                    s_json_put (self, ",", 1);
                ly_result_t rc = s_json_value (self, &value->via.array.ptr [i], depth + 1);
                if (rc != LY_OK)
                    return rc;
            }
            s_json_put (self, "]", 1);
            break;
        case MSGPACK_OBJECT_MAP:
            if (depth >= S_PROPERTIES_DEPTH)
                return s_refuse (self, "properties must not be nested more than %d levels deep",
                                 S_PROPERTIES_DEPTH);
            s_json_put (self, "{", 1);
            for (uint32_t i = 0; i < value->via.map.size && !self->json_full; i++) {
                const msgpack_object_kv *kv = &value->via.map.ptr [i];
                if (kv->key.type != MSGPACK_OBJECT_STR)
                    return s_refuse (self, "properties keys must be strings");
                if (i)
                    s_json_put (self, ",", 1);
                if (!s_json_string (self, kv->key.via.str.ptr, kv->key.via.str.size))
                    return s_refuse (self, "properties must hold valid UTF-8 without NUL characters");
                s_json_put (self, ":", 1);
                ly_result_t rc = s_json_value (self, &kv->val, depth + 1);
                if (rc != LY_OK)
                    return rc;
            }
            s_json_put (self, "}", 1);
            break;
        default:                    //  bin, ext: no JSON for them
            return s_refuse (self, "properties must hold JSON values only");
    }
    if (self->json_full)
        return s_refuse (self, "properties must be at most %d KiB as JSON", S_PROPERTIES_MAX / 1024);
    return LY_OK;
}

static ly_result_t
s_properties (scrub_t *self, const msgpack_object *value)
{
    self->json = self->json_buffer;
    self->json_len = 0;
    self->json_full = false;
    if (!value)
        s_json_put (self, "{}", 2);
    else
    if (value->type != MSGPACK_OBJECT_MAP)
        return s_refuse (self, "properties must be an object");
    else {
        //  The object itself is the first of the 16 levels.
        ly_result_t rc = s_json_value (self, value, 0);
        if (rc != LY_OK)
            return rc;
    }
    self->column [COL_PROPERTIES].data = self->json;
    self->column [COL_PROPERTIES].len = self->json_len;
    return LY_OK;
}


//  --------------------------------------------------------------------------------------
//  Fields

static ly_result_t
s_event_id (scrub_t *self, const msgpack_object *value)
{
    if (!value)
        return s_refuse (self, "event_id is required");
    if (value->type != MSGPACK_OBJECT_STR || value->via.str.size < 1
    ||  value->via.str.size > S_EVENT_ID_MAX)
        return s_refuse (self, "event_id must be a string of 1 to %d bytes", S_EVENT_ID_MAX);
    if (!s_utf8_valid (value->via.str.ptr, value->via.str.size, true))
        return s_refuse (self, "event_id must be valid UTF-8 without control characters");
    self->column [COL_EVENT_ID].data = value->via.str.ptr;
    self->column [COL_EVENT_ID].len = value->via.str.size;
    return LY_OK;
}

static ly_result_t
s_name (scrub_t *self, const msgpack_object *value)
{
    if (!value)
        return s_refuse (self, "name is required");
    bool valid = value->type == MSGPACK_OBJECT_STR && value->via.str.size >= 1
              && value->via.str.size <= S_NAME_MAX;
    for (uint32_t i = 0; valid && i < value->via.str.size; i++) {
        char c = value->via.str.ptr [i];
        valid = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    }
    if (!valid)
        return s_refuse (self, "name must match [a-z0-9_]{1,64}");
    self->column [COL_NAME].data = value->via.str.ptr;
    self->column [COL_NAME].len = value->via.str.size;
    return LY_OK;
}

static ly_result_t
s_user_id (scrub_t *self, const msgpack_object *value)
{
    return s_string_or_integer (self, value, "user_id", S_USER_ID_MAX, COL_USER_ID);
}

static ly_result_t
s_email (scrub_t *self, const msgpack_object *value, ly_event_stats_t *stats)
{
    if (!value)
        return LY_OK;
    if (value->type != MSGPACK_OBJECT_STR)
        return s_refuse (self, "email must be a string");
    if (!s_utf8_valid (value->via.str.ptr, value->via.str.size, false))
        return s_refuse (self, "email must be valid UTF-8 without NUL bytes");
    if (value->via.str.size == 0)
        return LY_OK;               //  "": not known, as SDKs send it; not an invalid one
    if (ly_pii_email_sha256 (value->via.str.ptr, value->via.str.size, self->email_sha256) == 0)
        s_set (self, COL_EMAIL_SHA256, self->email_sha256);
    else
    if (stats)
        stats->email_invalid++;
    return LY_OK;
}

static ly_result_t
s_phone (scrub_t *self, const msgpack_object *value, ly_event_stats_t *stats)
{
    if (!value)
        return LY_OK;
    char digits [24];               //  a phone given as a JSON number
    const char *phone;
    size_t len;
    if (value->type == MSGPACK_OBJECT_STR) {
        if (!s_utf8_valid (value->via.str.ptr, value->via.str.size, false))
            return s_refuse (self, "phone must be valid UTF-8 without NUL bytes");
        if (value->via.str.size == 0)
            return LY_OK;           //  "": not known
        phone = value->via.str.ptr;
        len = value->via.str.size;
    }
    else
    if (value->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        len = (size_t) snprintf (digits, sizeof digits, "%" PRIu64, value->via.u64);
        phone = digits;
    }
    else
    if (value->type == MSGPACK_OBJECT_FLOAT64 && value->via.f64 >= 1 && value->via.f64 < 1e15
    &&  value->via.f64 == floor (value->via.f64)) {
        len = (size_t) snprintf (digits, sizeof digits, "%.0f", value->via.f64);
        phone = digits;             //  16505551234.0: the number, written as a real
    }
    else
    if (value->type == MSGPACK_OBJECT_NEGATIVE_INTEGER || value->type == MSGPACK_OBJECT_FLOAT64) {
        if (stats)                  //  a number, but no phone number: dropped like one
            stats->phone_invalid++;
        return LY_OK;
    }
    else
        return s_refuse (self, "phone must be a string or a number");
    int rc = ly_pii_phone_sha256 (phone, len, self->ctx->default_country_code,
                                  self->phone_sha256, self->phone_e164_sha256);
    if (phone == digits)
        OPENSSL_cleanse (digits, sizeof digits);
    if (rc == 0) {
        s_set (self, COL_PHONE_SHA256, self->phone_sha256);
        if (self->phone_e164_sha256 [0])
            s_set (self, COL_PHONE_E164_SHA256, self->phone_e164_sha256);
    }
    else
    if (stats)
        stats->phone_invalid++;
    return LY_OK;
}

//  device {...} or app {...}: an object of optional strings.
static ly_result_t
s_object_fields (scrub_t *self, const msgpack_object *value, const char *label,
                 const subfield_t *fields, size_t count)
{
    if (!value)
        return LY_OK;
    if (value->type != MSGPACK_OBJECT_MAP)
        return s_refuse (self, "%s must be an object", label);
    assert (count <= S_DEVICE_FIELDS);
    const char *names [S_DEVICE_FIELDS];
    const msgpack_object *values [S_DEVICE_FIELDS];
    for (size_t i = 0; i < count; i++)
        names [i] = fields [i].key;
    s_pick (value, names, count, values);
    for (size_t i = 0; i < count; i++) {
        const subfield_t *field = &fields [i];
        ly_result_t rc = field->integer_ok
            ? s_string_or_integer (self, values [i], field->label, S_DEVICE_FIELD_MAX, field->column)
            : s_string_field (self, values [i], field->label, S_DEVICE_FIELD_MAX, field->column);
        if (rc != LY_OK)
            return rc;
    }
    return LY_OK;
}

static ly_result_t
s_consent (scrub_t *self, const msgpack_object *value)
{
    static const char *att_values [] = { "authorized", "denied", "not_determined", "restricted" };
    if (!value)
        return LY_OK;
    if (value->type != MSGPACK_OBJECT_MAP)
        return s_refuse (self, "consent must be an object");
    static const char *names [] = { "ads", "att" };
    const msgpack_object *values [2];
    s_pick (value, names, 2, values);
    if (values [0]) {
        if (values [0]->type != MSGPACK_OBJECT_BOOLEAN)
            return s_refuse (self, "consent.ads must be true or false");
        s_set (self, COL_CONSENT_ADS, values [0]->via.boolean? "t": "f");
    }
    if (values [1]) {
        for (size_t i = 0; i < 4; i++)
            if (s_key_is (values [1], att_values [i]))
                s_set (self, COL_CONSENT_ATT, att_values [i]);
        if (!self->column [COL_CONSENT_ATT].data)
            return s_refuse (self, "consent.att must be one of authorized, denied, "
                             "not_determined, restricted");
    }
    return LY_OK;
}

//  Country and region from the client IP, which goes no further.
static void
s_geo (scrub_t *self)
{
    const ly_event_ctx_t *ctx = self->ctx;
    if (!ctx->geoip || !ctx->client_ip || !ctx->client_ip [0])
        return;
    if (ly_geoip_lookup (ctx->geoip, ctx->client_ip, self->country, self->region))
        return;
    if (strlen (self->country) == 2 && isupper ((unsigned char) self->country [0])
    &&  isupper ((unsigned char) self->country [1]))
        s_set (self, COL_GEO_COUNTRY, self->country);
    if (self->region [0] && s_utf8_valid (self->region, strlen (self->region), true))
        s_set (self, COL_GEO_REGION, self->region);
}

//  A User-Agent value for a device column unless the SDK gave one, unknown or unsafe.
static void
s_set_derived (scrub_t *self, column_t column, const char *text)
{
    size_t len = strlen (text);
    if (!self->column [column].data && len > 0 && len <= S_DEVICE_FIELD_MAX
    &&  strcmp (text, "Other") != 0 && s_utf8_valid (text, len, true)) {
        self->column [column].data = text;
        self->column [column].len = len;
    }
}

//  An OS name folded for comparison into out (size bytes): lower-case letters and
//  digits only, Apple's other names for iOS and macOS as those.
static void
s_os_fold (const char *text, size_t len, char *out, size_t size)
{
    size_t used = 0;
    for (size_t i = 0; i < len && used + 1 < size; i++)
        if (isalnum ((unsigned char) text [i]))
            out [used++] = (char) tolower ((unsigned char) text [i]);
    out [used] = 0;
    static const char *aliases [][2] = {
        { "ipados", "ios" }, { "iphoneos", "ios" }, { "macosx", "macos" }, { "osx", "macos" } };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases [0]; i++)
        if (streq (out, aliases [i][0]))
            snprintf (out, size, "%s", aliases [i][1]);
}

//  True when the SDK's device.os and the User-Agent's OS are different systems (an
//  iOS app whose request went through an Android proxy, a wrong SDK field): then the
//  User-Agent says nothing of this device.
static bool
s_other_os (const text_t *given, const char *derived)
{
    if (!given->data || !derived [0] || streq (derived, "Other"))
        return false;
    char one [32], two [32];
    s_os_fold (given->data, given->len, one, sizeof one);
    s_os_fold (derived, strlen (derived), two, sizeof two);
    return !streq (one, two);
}

//  Whether a value the User-Agent gave as a device field looks like personal data put
//  there (an email, an IP address, a phone number: 7 digits or more with nothing but
//  phone punctuation), which no model or brand is
static bool
s_personal (const char *value)
{
    unsigned char address [16];
    if (strchr (value, '@') || inet_pton (AF_INET, value, address) == 1
    ||  inet_pton (AF_INET6, value, address) == 1)
        return true;
    size_t digits = 0;
    for (const char *c = value; *c; c++) {
        if (*c >= '0' && *c <= '9')
            digits++;
        else
        if (!strchr (" +-().", *c))
            return false;
    }
    return digits >= 7;
}

//  Device fields from the User-Agent, which goes no further; the SDK's own values win,
//  and a User-Agent of another OS than the SDK's device.os is not used at all.
static void
s_user_agent (scrub_t *self)
{
    const ly_event_ctx_t *ctx = self->ctx;
    if (!ctx->uap || !ctx->user_agent || ctx->user_agent_len == 0)
        return;
    if (self->column [COL_DEVICE_OS].data && self->column [COL_DEVICE_OS_VERSION].data
    &&  self->column [COL_DEVICE_MODEL].data && self->column [COL_DEVICE_BRAND].data)
        return;                     //  nothing to learn from it
    ly_uap_result_t *uap = &self->uap;
    ly_uap_parse (ctx->uap, ctx->user_agent, ctx->user_agent_len, uap);
    //  Cut every field at its end, whatever the parser left there.
    uap->os_family [sizeof uap->os_family - 1] = 0;
    uap->os_major [sizeof uap->os_major - 1] = 0;
    uap->os_minor [sizeof uap->os_minor - 1] = 0;
    uap->os_patch [sizeof uap->os_patch - 1] = 0;
    uap->device_brand [sizeof uap->device_brand - 1] = 0;
    uap->device_model [sizeof uap->device_model - 1] = 0;
    if (s_other_os (&self->column [COL_DEVICE_OS], uap->os_family))
        return;
    if (streq (uap->device_family, "Spider"))
        return;                     //  a crawler's or an HTTP library's: no device at all
    s_set_derived (self, COL_DEVICE_OS, uap->os_family);
    if (uap->os_major [0]) {
        if (!uap->os_minor [0])
            snprintf (self->os_version, sizeof self->os_version, "%s", uap->os_major);
        else
        if (!uap->os_patch [0])
            snprintf (self->os_version, sizeof self->os_version, "%s.%s",
                      uap->os_major, uap->os_minor);
        else
            snprintf (self->os_version, sizeof self->os_version, "%s.%s.%s",
                      uap->os_major, uap->os_minor, uap->os_patch);
        s_set_derived (self, COL_DEVICE_OS_VERSION, self->os_version);
    }
    if (!s_personal (uap->device_model))
        s_set_derived (self, COL_DEVICE_MODEL, uap->device_model);
    if (!s_personal (uap->device_brand))
        s_set_derived (self, COL_DEVICE_BRAND, uap->device_brand);
}


//  --------------------------------------------------------------------------------------
//  The line

//  Bytes of a column in COPY text: \N for NULL; backslash, tab, newline, CR escaped.
static size_t
s_copy_len (const text_t *text)
{
    if (!text->data)
        return 2;
    size_t len = text->len;
    for (size_t i = 0; i < text->len; i++) {
        char c = text->data [i];
        if (c == '\\' || c == '\t' || c == '\n' || c == '\r')
            len++;
    }
    return len;
}

static char *
s_copy_put (char *out, const text_t *text)
{
    if (!text->data) {
        memcpy (out, "\\N", 2);
        return out + 2;
    }
    for (size_t i = 0; i < text->len; i++) {
        char c = text->data [i];
        switch (c) {
            case '\\': *out++ = '\\'; *out++ = '\\'; break;
            case '\t': *out++ = '\\'; *out++ = 't'; break;
            case '\n': *out++ = '\\'; *out++ = 'n'; break;
            case '\r': *out++ = '\\'; *out++ = 'r'; break;
            default:   *out++ = c;
        }
    }
    return out;
}

static ly_result_t
s_scrub (scrub_t *self, const msgpack_object *event, ly_event_stats_t *stats)
{
    const ly_event_ctx_t *ctx = self->ctx;
    if (!ly_is_uuid (ctx->org_id) || !ly_is_uuid (ctx->project_id)) {
        s_refuse (self, "the event's project context is incomplete");
        return LY_ERROR;
    }
    s_set (self, COL_ORG_ID, ctx->org_id);
    s_set (self, COL_PROJECT_ID, ctx->project_id);
    int64_t received = ctx->received_usec > 0? ctx->received_usec: ly_now_usec ();
    if (s_format_time (received, self->received_at)) {
        s_refuse (self, "the event's receive time is out of range");
        return LY_ERROR;
    }
    s_set (self, COL_RECEIVED_AT, self->received_at);

    if (!event || event->type != MSGPACK_OBJECT_MAP)
        return s_refuse (self, "the event must be an object");
    const msgpack_object *field [F_COUNT];
    s_pick (event, s_fields, F_COUNT, field);
    ly_result_t rc = s_event_id (self, field [F_EVENT_ID]);
    if (rc == LY_OK)
        rc = s_name (self, field [F_NAME]);
    if (rc == LY_OK)
        rc = s_timestamp (self, field [F_TIMESTAMP], received);
    if (rc == LY_OK)
        rc = s_user_id (self, field [F_USER_ID]);
    if (rc == LY_OK)
        rc = s_email (self, field [F_EMAIL], stats);
    if (rc == LY_OK)
        rc = s_phone (self, field [F_PHONE], stats);
    if (rc == LY_OK)
        rc = s_properties (self, field [F_PROPERTIES]);
    if (rc == LY_OK)
        rc = s_object_fields (self, field [F_DEVICE], "device", s_device_fields, S_DEVICE_FIELDS);
    if (rc == LY_OK)
        rc = s_object_fields (self, field [F_APP], "app", s_app_fields, S_APP_FIELDS);
    if (rc == LY_OK)
        rc = s_string_field (self, field [F_ATTRIBUTION_TOKEN], "attribution_token",
                             S_TOKEN_MAX, COL_ATTRIBUTION_TOKEN);
    if (rc == LY_OK)
        rc = s_consent (self, field [F_CONSENT]);
    if (rc == LY_OK) {
        s_geo (self);
        s_user_agent (self);
    }
    return rc;
}

ly_result_t
ly_event_scrub (const msgpack_object *event, const ly_event_ctx_t *ctx,
                char **line, size_t *line_len, char event_id [129],
                ly_event_stats_t *stats, char *err, size_t errlen)
{
    if (err && errlen)
        err [0] = 0;
    event_id [0] = 0;
    scrub_t *self = (scrub_t *) malloc (sizeof (scrub_t));
    if (!self) {
        if (err && errlen)
            snprintf (err, errlen, "out of memory");
        return LY_ERROR;
    }
    memset (self, 0, offsetof (scrub_t, json_buffer));
    self->ctx = ctx;
    self->err = err;
    self->errlen = errlen;

    ly_result_t rc = s_scrub (self, event, stats);
    if (rc == LY_OK) {
        size_t size = COL_COUNT;        //  24 tabs and the newline
        for (int i = 0; i < COL_COUNT; i++)
            size += s_copy_len (&self->column [i]);
        char *grown = (char *) realloc (*line, *line_len + size);
        if (grown) {
            *line = grown;
            char *out = grown + *line_len;
            for (int i = 0; i < COL_COUNT; i++) {
                out = s_copy_put (out, &self->column [i]);
                *out++ = i + 1 < COL_COUNT? '\t': '\n';
            }
            assert (out == grown + *line_len + size);
            *line_len += size;
            text_t *id = &self->column [COL_EVENT_ID];
            memcpy (event_id, id->data, id->len);
            event_id [id->len] = 0;
        }
        else {
            s_refuse (self, "out of memory");
            rc = LY_ERROR;
        }
    }
    //  Values derived from personal data. A phone hash is as good as the number: its
    //  digits are few enough to try them all.
    OPENSSL_cleanse (&self->uap, sizeof self->uap);
    OPENSSL_cleanse (self->os_version, sizeof self->os_version);
    OPENSSL_cleanse (self->phone_sha256, sizeof self->phone_sha256);
    OPENSSL_cleanse (self->phone_e164_sha256, sizeof self->phone_e164_sha256);
    OPENSSL_cleanse (self->email_sha256, sizeof self->email_sha256);
    free (self);
    return rc;
}
