/*  ly_sdkbody.c: the /l/events body (see ly_sdkbody.h). */
#include "ly_sdkbody.h"
#include <zlib.h>

static int
s_fail (ly_sdkbody_error_t *error, unsigned status, const char *code, const char *format, ...)
{
    error->status = status;
    error->code = code;
    va_list args;
    va_start (args, format);
    vsnprintf (error->message, sizeof error->message, format, args);
    va_end (args);
    return -1;
}

//  True when the header value names this media type, parameters allowed.
static bool
s_media_type_is (const char *value, const char *type)
{
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen (type);
    if (strncasecmp (value, type, len))
        return false;
    char next = value [len];
    return next == 0 || next == ';' || next == ' ' || next == '\t';
}

//  Inflates a gzip body into a new buffer of at most LY_SDKBODY_MAX_BYTES.
static int
s_inflate (const void *data, size_t size, char **out, size_t *out_size, ly_sdkbody_error_t *error)
{
    z_stream zs;
    memset (&zs, 0, sizeof zs);
    if (inflateInit2 (&zs, 16 + MAX_WBITS) != Z_OK)
        return s_fail (error, 500, "internal", "could not start gzip decoding");
    size_t cap = size * 4 + 1024;
    if (cap > LY_SDKBODY_MAX_BYTES + 1)
        cap = LY_SDKBODY_MAX_BYTES + 1;
    char *buffer = (char *) malloc (cap);
    zs.next_in = (Bytef *) data;
    zs.avail_in = (uInt) size;
    int rc = Z_OK;
    size_t used = 0;
    while (rc == Z_OK) {
        if (used == cap) {
            if (cap > LY_SDKBODY_MAX_BYTES)
                break;
            cap = cap * 2 > LY_SDKBODY_MAX_BYTES + 1? LY_SDKBODY_MAX_BYTES + 1: cap * 2;
            buffer = (char *) realloc (buffer, cap);
        }
        zs.next_out = (Bytef *) buffer + used;
        zs.avail_out = (uInt) (cap - used);
        rc = inflate (&zs, Z_NO_FLUSH);
        used = cap - zs.avail_out;
    }
    bool trailing = rc == Z_STREAM_END && zs.avail_in > 0;
    inflateEnd (&zs);
    if (used > LY_SDKBODY_MAX_BYTES) {
        free (buffer);
        return s_fail (error, 413, "too_large", "the inflated body exceeds %d bytes",
                       LY_SDKBODY_MAX_BYTES);
    }
    if (rc != Z_STREAM_END || trailing) {
        free (buffer);
        return s_fail (error, 400, "malformed", "the body is not valid gzip");
    }
    *out = buffer;
    *out_size = used;
    return 0;
}

static size_t
s_depth (json_t *json)
{
    size_t deepest = 0;
    if (json_is_object (json)) {
        const char *key;
        json_t *value;
        json_object_foreach (json, key, value) {
            size_t depth = s_depth (value);
            if (depth > deepest)
                deepest = depth;
        }
        return deepest + 1;
    }
    if (json_is_array (json)) {
        size_t index;
        json_t *value;
        json_array_foreach (json, index, value) {
            size_t depth = s_depth (value);
            if (depth > deepest)
                deepest = depth;
        }
        return deepest + 1;
    }
    return 0;
}

//  A batch whose body does not parse as a whole may still be whole as a batch: only
//  some of its events are unreadable (a syntax error, invalid UTF-8, a number out of
//  range). s_split finds the events' byte ranges in a body of exactly the form
//  {"events": [ ... ]}, looking only at strings and brackets, so that each event can
//  be parsed alone and an unreadable one refused alone. -1 when the body is not of
//  that form, or its strings or brackets do not close (then the whole body is refused).

#define S_SCAN_DEPTH 4096           /* brackets open at once; jansson stops at 2048 */

static size_t
s_skip_space (const char *text, size_t size, size_t at)
{
    while (at < size && (text [at] == ' ' || text [at] == '\t' || text [at] == '\n' || text [at] == '\r'))
        at++;
    return at;
}

//  The end of the string that starts at text [at] (a quote), or 0 when it does not end.
static size_t
s_skip_string (const char *text, size_t size, size_t at)
{
    for (at++; at < size; at++) {
        if (text [at] == '\\')
            at++;
        else
        if (text [at] == '"')
            return at + 1;
    }
    return 0;
}

//  The end of the value that starts at text [at], or 0 when its brackets or strings do
//  not close. Nothing inside is checked: the value is parsed on its own afterwards.
static size_t
s_skip_value (const char *text, size_t size, size_t at)
{
    if (at < size && text [at] == '"')
        return s_skip_string (text, size, at);
    if (at < size && (text [at] == '{' || text [at] == '[')) {
        char close [S_SCAN_DEPTH];      //  the bracket each open one needs
        size_t depth = 0;
        for (; at < size; at++) {
            char c = text [at];
            if (c == '"') {
                at = s_skip_string (text, size, at);
                if (!at)
                    return 0;
                at--;                   //  the loop steps past the closing quote
            }
            else
            if (c == '{' || c == '[') {
                if (depth == S_SCAN_DEPTH)
                    return 0;
                close [depth++] = c == '{'? '}': ']';
            }
            else
            if (c == '}' || c == ']') {
                if (close [--depth] != c)
                    return 0;
                if (depth == 0)
                    return at + 1;
            }
        }
        return 0;
    }
    size_t start = at;                  //  a scalar, up to the next delimiter
    while (at < size && !memchr (",]} \t\n\r", text [at], 7))
        at++;
    return at > start? at: 0;
}

//  Fills starts [] and ends [] (max entries) with the events' ranges; -1 as above, or
//  when there are more than max.
static int
s_split (const char *text, size_t size, size_t *starts, size_t *ends, size_t max, size_t *count)
{
    size_t at = s_skip_space (text, size, 0);
    if (at >= size || text [at] != '{')
        return -1;
    at = s_skip_space (text, size, at + 1);
    if (size - at < 8 || memcmp (text + at, "\"events\"", 8))
        return -1;
    at = s_skip_space (text, size, at + 8);
    if (at >= size || text [at] != ':')
        return -1;
    at = s_skip_space (text, size, at + 1);
    if (at >= size || text [at] != '[')
        return -1;
    *count = 0;
    at = s_skip_space (text, size, at + 1);
    if (at < size && text [at] == ']')
        return -1;                  //  empty: the whole-body error says it better
    while (true) {
        size_t end = s_skip_value (text, size, at);
        if (!end || *count == max)
            return -1;
        starts [*count] = at;
        ends [(*count)++] = end;
        at = s_skip_space (text, size, end);
        if (at < size && text [at] == ',') {
            at = s_skip_space (text, size, at + 1);
            continue;
        }
        if (at < size && text [at] == ']')
            break;
        return -1;
    }
    at = s_skip_space (text, size, at + 1);
    if (at >= size || text [at] != '}')
        return -1;
    return s_skip_space (text, size, at + 1) == size? 0: -1;
}

void
ly_sdkbody_pack_json (msgpack_packer *pk, json_t *json)
{
    switch (json_typeof (json)) {
        case JSON_OBJECT: {
            msgpack_pack_map (pk, json_object_size (json));
            const char *key;
            json_t *value;
            json_object_foreach (json, key, value) {
                msgpack_pack_str_with_body (pk, key, strlen (key));
                ly_sdkbody_pack_json (pk, value);
            }
            break;
        }
        case JSON_ARRAY: {
            msgpack_pack_array (pk, json_array_size (json));
            size_t index;
            json_t *value;
            json_array_foreach (json, index, value)
                ly_sdkbody_pack_json (pk, value);
            break;
        }
        case JSON_STRING:
            msgpack_pack_str_with_body (pk, json_string_value (json), json_string_length (json));
            break;
        case JSON_INTEGER:
            msgpack_pack_int64 (pk, json_integer_value (json));
            break;
        case JSON_REAL:
            msgpack_pack_double (pk, json_real_value (json));
            break;
        case JSON_TRUE:
            msgpack_pack_true (pk);
            break;
        case JSON_FALSE:
            msgpack_pack_false (pk);
            break;
        default:
            msgpack_pack_nil (pk);
    }
}

//  Frees the reasons of a split body (count of them), and the array.
static void
s_free_reasons (char ***reasons_p, size_t count)
{
    char **reasons = *reasons_p;
    for (size_t i = 0; reasons && i < count; i++)
        zstr_free (&reasons [i]);
    free (reasons);
    *reasons_p = NULL;
}

int
ly_sdkbody_parse (const char *content_type, const char *content_encoding,
                  const void *body, size_t size, ly_sdkbody_t *out,
                  ly_sdkbody_error_t *error)
{
    memset (out, 0, sizeof *out);
    if (!content_type || !s_media_type_is (content_type, "application/json"))
        return s_fail (error, 415, "unsupported_media_type",
                       "Content-Type must be application/json");
    if (size > LY_SDKBODY_MAX_BYTES)
        return s_fail (error, 413, "too_large", "the body exceeds %d bytes", LY_SDKBODY_MAX_BYTES);
    char *inflated = NULL;
    if (content_encoding && !s_media_type_is (content_encoding, "identity")) {
        if (!s_media_type_is (content_encoding, "gzip") && !s_media_type_is (content_encoding, "x-gzip"))
            return s_fail (error, 415, "unsupported_encoding",
                           "Content-Encoding must be gzip or identity");
        if (s_inflate (body, size, &inflated, &size, error))
            return -1;
        body = inflated;
    }
    if (size == 0) {
        free (inflated);
        return s_fail (error, 400, "malformed", "the body is empty");
    }
    //  RFC 8259 lets a parser ignore a byte order mark; some HTTP clients send one
    if (size >= 3 && memcmp (body, "\xEF\xBB\xBF", 3) == 0) {
        body = (const uint8_t *) body + 3;
        size -= 3;
    }
    json_error_t json_error;
    json_t *root = json_loadb ((const char *) body, size, JSON_REJECT_DUPLICATES, &json_error);
    char **unreadable = NULL;       //  per event, NULL or why it does not parse: when split
    size_t parts = 0;
    if (!root) {
        //  Parse the events one by one, if the batch itself is whole
        size_t starts [LY_SDKBODY_MAX_EVENTS], ends [LY_SDKBODY_MAX_EVENTS];
        if (s_split ((const char *) body, size, starts, ends, LY_SDKBODY_MAX_EVENTS, &parts) == 0) {
            unreadable = (char **) calloc (parts, sizeof (char *));
            assert (unreadable);
            root = json_object ();
            json_t *list = json_array ();
            json_object_set_new (root, "events", list);
            for (size_t i = 0; i < parts; i++) {
                json_error_t part_error;
                json_t *event = json_loadb ((const char *) body + starts [i], ends [i] - starts [i],
                                            JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &part_error);
                if (!event) {
                    //  Without jansson's "near '<the bytes>'": the reason travels in
                    //  frames that taps show as they are, and the bytes may be anything
                    const char *near = strstr (part_error.text, " near ");
                    int len = near? (int) (near - part_error.text): (int) strlen (part_error.text);
                    unreadable [i] = zsys_sprintf ("the event is not valid JSON: %.*s", len,
                                                   part_error.text);
                    event = json_null ();
                }
                json_array_append_new (list, event);
            }
        }
    }
    free (inflated);
    if (!root)
        return s_fail (error, 400, "malformed", "the body is not valid JSON: %s at line %d column %d",
                       json_error.text, json_error.line, json_error.column);
    json_t *events = root;
    bool batch = false;
    if (json_is_object (root) && json_is_array (json_object_get (root, "events"))) {
        events = json_object_get (root, "events");
        batch = true;
    }
    else
    if (!json_is_object (root) || json_object_get (root, "events")) {
        bool object = json_is_object (root);
        json_decref (root);
        s_free_reasons (&unreadable, parts);
        return s_fail (error, 400, "malformed", object
                       ? "\"events\" must be an array of event objects"
                       : "the body must be one event object or {\"events\": [...]}");
    }
    size_t count = batch? json_array_size (events): 1;
    if (count == 0) {
        json_decref (root);
        s_free_reasons (&unreadable, parts);
        return s_fail (error, 400, "malformed", "\"events\" is empty");
    }
    if (count > LY_SDKBODY_MAX_EVENTS) {
        json_decref (root);
        s_free_reasons (&unreadable, parts);
        return s_fail (error, 413, "too_many_events", "at most %d events per request, got %zu",
                       LY_SDKBODY_MAX_EVENTS, count);
    }
    msgpack_sbuffer packed, rejected;
    msgpack_sbuffer_init (&packed);
    msgpack_sbuffer_init (&rejected);
    msgpack_packer pk, rk;
    msgpack_packer_init (&pk, &packed, msgpack_sbuffer_write);
    msgpack_packer_init (&rk, &rejected, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, count);
    size_t rejects = 0;
    for (size_t i = 0; i < count; i++) {
        json_t *event = batch? json_array_get (events, i): events;
        const char *reason = unreadable? unreadable [i]: NULL;
        if (reason)
            ;
        else
        if (!json_is_object (event))
            reason = "an event must be a JSON object";
        else
        if (s_depth (event) > LY_SDKBODY_MAX_DEPTH)
            reason = "the event nests too deeply (properties: at most 16 levels)";
        if (reason) {
            msgpack_pack_nil (&pk);
            //  Rejections are few; pack each as [index, reason] and count them.
            msgpack_pack_array (&rk, 2);
            msgpack_pack_uint64 (&rk, i);
            msgpack_pack_str_with_body (&rk, reason, strlen (reason));
            rejects++;
        }
        else
            ly_sdkbody_pack_json (&pk, event);
    }
    json_decref (root);
    s_free_reasons (&unreadable, parts);
    //  Put the array header in front of the rejections.
    msgpack_sbuffer header;
    msgpack_sbuffer_init (&header);
    msgpack_packer hk;
    msgpack_packer_init (&hk, &header, msgpack_sbuffer_write);
    msgpack_pack_array (&hk, rejects);
    msgpack_sbuffer_write (&header, rejected.data, rejected.size);
    msgpack_sbuffer_destroy (&rejected);
    out->events_size = packed.size;
    out->events = msgpack_sbuffer_release (&packed);
    out->rejected_size = header.size;
    out->rejected = msgpack_sbuffer_release (&header);
    out->count = count;
    return 0;
}

void
ly_sdkbody_free (ly_sdkbody_t *body)
{
    free (body->events);
    free (body->rejected);
    memset (body, 0, sizeof *body);
}
