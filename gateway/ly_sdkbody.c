/*  ly_sdkbody.c: the /l/events body (see ly_sdkbody.h). */
#include "ly_sdkbody.h"
#include "ly_utf8.h"
#include "ly_jsonr.h"
#include <zlib.h>
#include <math.h>

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

//  The content coding a Content-Encoding value (RFC 9110 8.4) leaves: 0 none, 1 gzip,
//  -1 one the gateway does not decode (or gzip twice). A list: its elements are
//  separated by commas with optional white space, empty ones and "identity" are nothing.
static int
s_content_coding (const char *value)
{
    int gzips = 0;
    while (*value) {
        while (*value == ' ' || *value == '\t' || *value == ',')
            value++;
        size_t len = strcspn (value, ",");
        size_t token = len;
        while (token && (value [token - 1] == ' ' || value [token - 1] == '\t'))
            token--;
        if (token == 4 && strncasecmp (value, "gzip", 4) == 0)
            gzips++;
        else
        if (token == 6 && strncasecmp (value, "x-gzip", 6) == 0)
            gzips++;
        else
        if (token && !(token == 8 && strncasecmp (value, "identity", 8) == 0))
            return -1;
        value += len;
    }
    return gzips <= 1? gzips: -1;
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
        //  RFC 1952: a gzip file may hold several members, one after the other; zero
        //  bytes after a member are padding (gzip(1) and Python's gzip skip them too)
        if (rc == Z_STREAM_END) {
            while (zs.avail_in > 0 && *zs.next_in == 0) {
                zs.next_in++;
                zs.avail_in--;
            }
            if (zs.avail_in > 0)
                rc = inflateReset (&zs);
        }
    }
    inflateEnd (&zs);
    if (used > LY_SDKBODY_MAX_BYTES) {
        free (buffer);
        return s_fail (error, 413, "too_large", "the inflated body exceeds %d bytes",
                       LY_SDKBODY_MAX_BYTES);
    }
    if (rc != Z_STREAM_END) {
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
//  range, nesting beyond jansson's 2048 levels). s_split finds the events' byte ranges
//  in a body that is an object with an "events" array, looking only at strings and
//  brackets, so that each event can be parsed alone and an unreadable one refused
//  alone. The object's other keys must parse (they are ignored, but a body whose own
//  structure is broken is not whole). -1 when the body is not of that form, a key
//  comes twice, or its strings or brackets do not close: then the whole body is refused.

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
//  closers holds a bit per level open at once (set: '}' closes it, clear: ']'), room
//  for as many levels as the text has bytes.
static size_t
s_skip_value (const char *text, size_t size, size_t at, uint8_t *closers)
{
    if (at < size && text [at] == '"')
        return s_skip_string (text, size, at);
    if (at < size && (text [at] == '{' || text [at] == '[')) {
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
                uint8_t bit = (uint8_t) (1u << (depth % 8));
                closers [depth / 8] = c == '{'? closers [depth / 8] | bit
                                               : closers [depth / 8] & (uint8_t) ~bit;
                depth++;
            }
            else
            if (c == '}' || c == ']') {
                depth--;
                bool brace = closers [depth / 8] & (1u << (depth % 8));
                if (brace != (c == '}'))
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

//  The key that spans text [start, end) (with its quotes), decoded: a new string, or
//  NULL when it is not a valid JSON string.
static char *
s_key (const char *text, size_t start, size_t end)
{
    json_t *decoded = json_loadb (text + start, end - start, JSON_DECODE_ANY, NULL);
    char *key = json_is_string (decoded)? strdup (json_string_value (decoded)): NULL;
    json_decref (decoded);
    return key;
}

typedef struct {
    size_t *starts, *ends;          /* the events' ranges, max of them */
    size_t max;
    size_t count;                   /* events in the array: more than max when it is */
    bool event_id;                  /* an "event_id" key beside "events" */
} s_split_t;

//  The elements of the array at text [at] ('['); the end of the array, or 0.
static size_t
s_split_array (const char *text, size_t size, size_t at, uint8_t *closers, s_split_t *split)
{
    at = s_skip_space (text, size, at + 1);
    if (at < size && text [at] == ']')
        return 0;                   //  empty: the whole-body error says it better
    while (true) {
        size_t end = s_skip_value (text, size, at, closers);
        if (!end)
            return 0;
        if (split->count < split->max) {
            split->starts [split->count] = at;
            split->ends [split->count] = end;
        }
        split->count++;
        at = s_skip_space (text, size, end);
        if (at < size && text [at] == ',') {
            at = s_skip_space (text, size, at + 1);
            continue;
        }
        return at < size && text [at] == ']'? at + 1: 0;
    }
}

static int
s_split (const char *text, size_t size, s_split_t *split)
{
    split->count = 0;
    split->event_id = false;
    size_t at = s_skip_space (text, size, 0);
    if (at >= size || text [at] != '{')
        return -1;
    uint8_t *closers = (uint8_t *) malloc (size / 8 + 1);
    assert (closers);
    zhashx_t *keys = zhashx_new ();         //  a set: found in constant time, however many
    bool events = false;
    int rc = -1;
    at = s_skip_space (text, size, at + 1);
    while (at < size && text [at] == '"') {
        size_t key_end = s_skip_string (text, size, at);
        char *key = key_end? s_key (text, at, key_end): NULL;
        bool known = !key || zhashx_insert (keys, key, (void *) 1);
        bool is_events = key && streq (key, "events");
        bool is_event_id = key && streq (key, "event_id");
        zstr_free (&key);
        if (known)
            break;                  //  not a string, or a duplicate key
        at = s_skip_space (text, size, key_end);
        if (at >= size || text [at] != ':')
            break;
        at = s_skip_space (text, size, at + 1);
        size_t end;
        if (is_events) {
            if (at >= size || text [at] != '[')
                break;
            end = s_split_array (text, size, at, closers, split);
            events = true;
        }
        else {
            //  Ignored, but it must parse: the body around the events must be whole
            end = s_skip_value (text, size, at, closers);
            json_t *value = end? json_loadb (text + at, end - at,
                                             JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL): NULL;
            if (!value)
                break;
            if (is_event_id && !json_is_null (value))
                split->event_id = true;     //  null is no event_id
            json_decref (value);
        }
        if (!end)
            break;
        at = s_skip_space (text, size, end);
        if (at < size && text [at] == ',') {
            at = s_skip_space (text, size, at + 1);
            continue;
        }
        if (at < size && text [at] == '}' && events
        &&  s_skip_space (text, size, at + 1) == size)
            rc = 0;
        break;
    }
    zhashx_destroy (&keys);
    free (closers);
    return rc;
}

//  A body with "events" and "event_id" both: whether it meant one event or a batch,
//  reading it either way would drop what the other way keeps.
#define S_AMBIGUOUS "the body has both \"events\" and \"event_id\": send one event, or {\"events\": [...]}"

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

//  The fast path. Most bodies are one event object or {"events": [objects]}, valid and
//  within limits; for those, one pass over the text writes the msgpack directly, with
//  no tree and no allocation per value. It accepts only what jansson (with the flags the
//  reference path uses) would accept and turn into the same values; anything else, from
//  a syntax error to an event nested too deep, makes it give up (-1) and the reference
//  path below decides, with its messages. tests/fuzz/fuzz_sdkbody.c checks both paths
//  agree on every input the fast path takes. Maps and arrays get a 16-bit length header
//  (their size is known only at their end); strings and scalars are packed as msgpack-c
//  packs them.

#define S_FAST_KEYS 1024            /* keys of the objects open at once */
#define S_FAST_OBJECT_KEYS 64       /* keys of one object: duplicates are looked for
                                       pairwise, so more go to the reference path, whose
                                       hash table does not slow down with their count */

typedef struct {
    const uint8_t *text;            /* the body, borrowed */
    size_t size;                    /* its bytes */
    size_t at;                      /* next byte to read */
    msgpack_sbuffer out;            /* the events as msgpack, owned until released */
    msgpack_packer pk;              /* writes into out */
    char *scratch;                  /* an escaped string, decoded; NULL until needed, owned */
    size_t key_at [S_FAST_KEYS];    /* the open objects' keys: offset in out.data */
    size_t key_len [S_FAST_KEYS];   /* and length */
    size_t keys;                    /* entries in key_at and key_len */
} s_fast_t;

//  The byte at the cursor after white space, or 0 at the end.
static uint8_t
s_fast_peek (s_fast_t *self)
{
    self->at = s_skip_space ((const char *) self->text, self->size, self->at);
    return self->at < self->size? self->text [self->at]: 0;
}

//  Steps past want, after white space. 0, or -1 when another byte is there.
static int
s_fast_expect (s_fast_t *self, uint8_t want)
{
    if (s_fast_peek (self) != want)
        return -1;
    self->at++;
    return 0;
}

//  Inside a container just opened: 1 when a first member or element follows, 0 when it
//  closes at once (the close is taken).
static int
s_fast_first (s_fast_t *self, uint8_t close)
{
    return s_fast_expect (self, close) == 0? 0: 1;
}

//  After a member or element: 1 when a comma says another follows, 0 when the
//  container closes (the close is taken), -1 for anything else.
static int
s_fast_next (s_fast_t *self, uint8_t close)
{
    uint8_t c = s_fast_peek (self);
    if (c != ',' && c != close)
        return -1;
    self->at++;
    return c == ',';
}

static int
s_fast_hex4 (const uint8_t *text, size_t size, size_t at, uint32_t *value)
{
    if (at + 4 > size)
        return -1;
    *value = 0;
    for (size_t i = at; i < at + 4; i++) {
        uint8_t c = text [i];
        int digit = c >= '0' && c <= '9'? c - '0': c >= 'a' && c <= 'f'? c - 'a' + 10
                  : c >= 'A' && c <= 'F'? c - 'A' + 10: -1;
        if (digit < 0)
            return -1;
        *value = (*value << 4) | (uint32_t) digit;
    }
    return 0;
}

//  Decodes the escaped string whose contents start at text [at] into scratch; the end
//  of the string (after its closing quote) and the decoded length, or -1.
static int
s_fast_unescape (s_fast_t *self, size_t at, size_t *end, size_t *len)
{
    if (!self->scratch) {
        self->scratch = (char *) malloc (self->size);
        assert (self->scratch);
    }
    char *into = self->scratch;
    const uint8_t *text = self->text;
    while (at < self->size) {
        uint8_t c = text [at];
        if (c == '"') {
            *end = at + 1;
            *len = (size_t) (into - self->scratch);
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            size_t seq = ly_utf8_sequence (text + at, self->size - at);
            if (!seq)
                return -1;
            memcpy (into, text + at, seq);
            into += seq;
            at += seq;
            continue;
        }
        if (c != '\\') {
            *into++ = (char) c;
            at++;
            continue;
        }
        if (at + 1 >= self->size)
            return -1;
        c = text [at + 1];
        const char *plain = strchr ("\"\\/bfnrt", c);
        if (c && plain) {
            *into++ = "\"\\/\b\f\n\r\t" [plain - "\"\\/bfnrt"];
            at += 2;
            continue;
        }
        uint32_t point;
        if (c != 'u' || s_fast_hex4 (text, self->size, at + 2, &point))
            return -1;
        at += 6;
        if (point >= 0xD800 && point <= 0xDBFF) {
            uint32_t low;
            if (at + 1 >= self->size || text [at] != '\\' || text [at + 1] != 'u'
            ||  s_fast_hex4 (text, self->size, at + 2, &low) || low < 0xDC00 || low > 0xDFFF)
                return -1;
            point = 0x10000 + ((point - 0xD800) << 10) + (low - 0xDC00);
            at += 6;
        }
        else
        if ((point >= 0xDC00 && point <= 0xDFFF) || point == 0)
            return -1;                  //  a lone low surrogate; NUL, which jansson refuses
        into += ly_utf8_encode (point, into);
    }
    return -1;
}

//  Packs the string at the cursor (a quote); *at is where its bytes start in out.data.
static int
s_fast_string (s_fast_t *self, size_t *at, size_t *len)
{
    const uint8_t *text = self->text;
    size_t start = self->at + 1;
    size_t i = start;
    while (i < self->size) {
        uint8_t c = text [i];
        if (c == '"' || c == '\\' || c < 0x20)
            break;
        if (c < 0x80)
            i++;
        else {
            size_t seq = ly_utf8_sequence (text + i, self->size - i);
            if (!seq)
                return -1;
            i += seq;
        }
    }
    if (i >= self->size || text [i] < 0x20)
        return -1;
    const char *bytes = (const char *) text + start;
    *len = i - start;
    if (text [i] == '"')
        self->at = i + 1;
    else {
        if (s_fast_unescape (self, start, &self->at, len))
            return -1;
        bytes = self->scratch;
    }
    msgpack_pack_str (&self->pk, *len);
    *at = self->out.size;
    msgpack_pack_str_body (&self->pk, bytes, *len);
    return 0;
}

static int s_fast_value (s_fast_t *self, size_t depth);

//  A container's place: a 16-bit length header, filled in at its end.
static size_t
s_fast_open (s_fast_t *self, uint8_t type)
{
    size_t at = self->out.size;
    uint8_t header [3] = { type, 0, 0 };
    msgpack_sbuffer_write (&self->out, (const char *) header, 3);
    return at;
}

static int
s_fast_close (s_fast_t *self, size_t at, size_t count)
{
    if (count > UINT16_MAX)
        return -1;
    self->out.data [at + 1] = (char) (count >> 8);
    self->out.data [at + 2] = (char) (count & 0xFF);
    return 0;
}

//  The object at the cursor ('{'), depth counting itself. An event's own keys may not
//  say "events" when it is the whole body (the reference path reads that as a batch).
static int
s_fast_object (s_fast_t *self, size_t depth, bool body)
{
    if (depth > LY_SDKBODY_MAX_DEPTH)
        return -1;
    self->at++;
    size_t header = s_fast_open (self, 0xde);
    size_t first_key = self->keys;
    size_t count = 0;
    int more;
    for (more = s_fast_first (self, '}'); more == 1; more = s_fast_next (self, '}')) {
        size_t key_at, key_len;
        if (s_fast_peek (self) != '"' || self->keys == S_FAST_KEYS
        ||  self->keys - first_key == S_FAST_OBJECT_KEYS
        ||  s_fast_string (self, &key_at, &key_len))
            return -1;
        for (size_t k = first_key; k < self->keys; k++)
            if (self->key_len [k] == key_len
            &&  memcmp (self->out.data + self->key_at [k], self->out.data + key_at, key_len) == 0)
                return -1;          //  a duplicate key
        if (body && key_len == 6 && memcmp (self->out.data + key_at, "events", 6) == 0)
            return -1;
        self->key_at [self->keys] = key_at;
        self->key_len [self->keys++] = key_len;
        if (s_fast_expect (self, ':') || s_fast_value (self, depth + 1))
            return -1;
        count++;
    }
    if (more < 0)
        return -1;
    self->keys = first_key;
    return s_fast_close (self, header, count);
}

static int
s_fast_array (s_fast_t *self, size_t depth)
{
    if (depth > LY_SDKBODY_MAX_DEPTH)
        return -1;
    self->at++;
    size_t header = s_fast_open (self, 0xdc);
    size_t count = 0;
    int more;
    for (more = s_fast_first (self, ']'); more == 1; more = s_fast_next (self, ']')) {
        if (s_fast_value (self, depth + 1))
            return -1;
        count++;
    }
    if (more < 0)
        return -1;
    return s_fast_close (self, header, count);
}

static bool
s_fast_digit (s_fast_t *self, size_t at)
{
    return at < self->size && self->text [at] >= '0' && self->text [at] <= '9';
}

//  A number: an integer within int64, or a real within double's range (as jansson,
//  which refuses both overflows and takes an underflow as 0 or a subnormal).
static int
s_fast_number (s_fast_t *self)
{
    size_t at = self->at;
    bool negative = self->text [at] == '-';
    if (negative)
        at++;
    if (!s_fast_digit (self, at))
        return -1;
    size_t digits = at;
    if (self->text [at] == '0')
        at++;
    else
        while (s_fast_digit (self, at))
            at++;
    size_t int_end = at;
    bool real = false;
    if (at < self->size && self->text [at] == '.') {
        if (!s_fast_digit (self, ++at))
            return -1;
        while (s_fast_digit (self, at))
            at++;
        real = true;
    }
    if (at < self->size && (self->text [at] == 'e' || self->text [at] == 'E')) {
        at++;
        if (at < self->size && (self->text [at] == '+' || self->text [at] == '-'))
            at++;
        if (!s_fast_digit (self, at))
            return -1;
        while (s_fast_digit (self, at))
            at++;
        real = true;
    }
    if (s_fast_digit (self, at))
        return -1;                  //  a leading zero
    if (real) {
        char copy [64];
        if (at - self->at >= sizeof copy)
            return -1;
        memcpy (copy, self->text + self->at, at - self->at);
        copy [at - self->at] = 0;
        errno = 0;
        double value = strtod (copy, NULL);
        if (errno == ERANGE && (value == HUGE_VAL || value == -HUGE_VAL))
            return -1;
        msgpack_pack_double (&self->pk, value);
    }
    else {
        if (int_end - digits > 19)
            return -1;
        uint64_t value = 0;
        for (size_t i = digits; i < int_end; i++)
            value = value * 10 + (uint64_t) (self->text [i] - '0');
        if (value > (uint64_t) INT64_MAX + negative)
            return -1;
        msgpack_pack_int64 (&self->pk, negative? (int64_t) (0 - value): (int64_t) value);
    }
    self->at = at;
    return 0;
}

//  The literal word at the cursor.
static int
s_fast_word (s_fast_t *self, const char *word)
{
    size_t len = strlen (word);
    if (self->size - self->at < len || memcmp (self->text + self->at, word, len))
        return -1;
    self->at += len;
    return 0;
}

//  The value at the cursor (after white space), depth of a container counting itself.
static int
s_fast_value (s_fast_t *self, size_t depth)
{
    switch (s_fast_peek (self)) {
        case '{':
            return s_fast_object (self, depth, false);
        case '[':
            return s_fast_array (self, depth);
        case '"': {
            size_t at, len;
            return s_fast_string (self, &at, &len);
        }
        case 't':
            if (s_fast_word (self, "true"))
                return -1;
            msgpack_pack_true (&self->pk);
            return 0;
        case 'f':
            if (s_fast_word (self, "false"))
                return -1;
            msgpack_pack_false (&self->pk);
            return 0;
        case 'n':
            if (s_fast_word (self, "null"))
                return -1;
            msgpack_pack_nil (&self->pk);
            return 0;
        case 0:                     //  the end, or a NUL byte
            return -1;
        default:
            return s_fast_number (self);
    }
}

int
ly_sdkbody_parse_fast (const char *text, size_t size, ly_sdkbody_t *out)
{
    memset (out, 0, sizeof *out);
    s_fast_t *self = (s_fast_t *) malloc (sizeof (s_fast_t));
    assert (self);
    self->text = (const uint8_t *) text;
    self->size = size;
    self->at = 0;
    self->scratch = NULL;
    self->keys = 0;
    msgpack_sbuffer_init (&self->out);
    msgpack_packer_init (&self->pk, &self->out, msgpack_sbuffer_write);
    //  Room for the events' array header, written when their count is known
    static const char room [5] = { 0 };
    msgpack_sbuffer_write (&self->out, room, sizeof room);
    size_t count = 0;
    int rc = s_fast_peek (self) == '{'? 0: -1;
    size_t at = s_skip_space (text, size, self->at + 1);
    if (rc == 0 && size - at >= 8 && memcmp (text + at, "\"events\"", 8) == 0) {
        //  {"events": [objects]}, nothing else
        self->at = at + 8;
        int more = -1;
        if (s_fast_expect (self, ':') == 0 && s_fast_expect (self, '[') == 0)
            for (more = s_fast_first (self, ']'); more == 1 && rc == 0; more = s_fast_next (self, ']')) {
                if (s_fast_peek (self) != '{' || count == LY_SDKBODY_MAX_EVENTS
                ||  s_fast_object (self, 1, false))
                    rc = -1;
                count++;
            }
        if (more < 0 || count == 0 || s_fast_expect (self, '}'))
            rc = -1;
    }
    else
    if (rc == 0) {
        rc = s_fast_object (self, 1, true);
        count = 1;
    }
    s_fast_peek (self);
    if (rc == 0 && self->at != size)
        rc = -1;                    //  more after the body
    if (self->scratch) {
        //  It held decoded strings, e-mail and phone among them
        explicit_bzero (self->scratch, size);
        free (self->scratch);
    }
    if (rc == 0) {
        //  The array header, right before the events
        char header [5];
        size_t header_size = count < 16? 1: 3;
        header [0] = count < 16? (char) (0x90 | count): (char) 0xdc;
        header [1] = (char) (count >> 8);
        header [2] = (char) (count & 0xFF);
        memmove (self->out.data + header_size, self->out.data + sizeof room,
                 self->out.size - sizeof room);
        memcpy (self->out.data, header, header_size);
        out->events_size = self->out.size - sizeof room + header_size;
        out->events = msgpack_sbuffer_release (&self->out);
        out->rejected = malloc (1);
        assert (out->rejected);
        *(uint8_t *) out->rejected = 0x90;      //  an empty array
        out->rejected_size = 1;
        out->count = count;
    }
    msgpack_sbuffer_destroy (&self->out);
    free (self);
    return rc;
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
ly_sdkbody_check_headers (const char *content_type, const char *content_encoding,
                          ly_sdkbody_error_t *error)
{
    ly_jsonr_type_t type = ly_jsonr_content_type (content_type);
    if (type == LY_JSONR_NOT_JSON)
        return s_fail (error, 415, "unsupported_media_type",
                       "Content-Type must be application/json");
    if (type == LY_JSONR_NOT_UTF8)
        return s_fail (error, 415, "unsupported_media_type",
                       "the body must be UTF-8 (Content-Type: application/json; charset=utf-8)");
    if (content_encoding && s_content_coding (content_encoding) < 0)
        return s_fail (error, 415, "unsupported_encoding",
                       "Content-Encoding must be gzip or identity");
    return 0;
}

int
ly_sdkbody_parse (const char *content_type, const char *content_encoding,
                  const void *body, size_t size, ly_sdkbody_t *out,
                  ly_sdkbody_error_t *error)
{
    memset (out, 0, sizeof *out);
    if (ly_sdkbody_check_headers (content_type, content_encoding, error))
        return -1;
    if (size > LY_SDKBODY_MAX_BYTES)
        return s_fail (error, 413, "too_large", "the body exceeds %d bytes", LY_SDKBODY_MAX_BYTES);
    char *inflated = NULL;
    int coding = content_encoding? s_content_coding (content_encoding): 0;
    if (coding) {
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
    int rc = ly_sdkbody_parse_fast ((const char *) body, size, out) == 0? 0
           : ly_sdkbody_parse_json ((const char *) body, size, out, error);
    free (inflated);
    return rc;
}

int
ly_sdkbody_parse_json (const char *text, size_t size, ly_sdkbody_t *out,
                       ly_sdkbody_error_t *error)
{
    memset (out, 0, sizeof *out);
    json_error_t json_error;
    json_t *root = json_loadb (text, size, JSON_REJECT_DUPLICATES, &json_error);
    char **unreadable = NULL;       //  per event, NULL or why it does not parse: when split
    size_t parts = 0;
    if (!root) {
        //  Parse the events one by one, if the batch itself is whole
        size_t starts [LY_SDKBODY_MAX_EVENTS], ends [LY_SDKBODY_MAX_EVENTS];
        s_split_t split = { .starts = starts, .ends = ends, .max = LY_SDKBODY_MAX_EVENTS };
        if (s_split (text, size, &split) == 0) {
            if (split.event_id)
                return s_fail (error, 400, "malformed", S_AMBIGUOUS);
            if (split.count > LY_SDKBODY_MAX_EVENTS)
                return s_fail (error, 413, "too_many_events",
                               "at most %d events per request, got %zu",
                               LY_SDKBODY_MAX_EVENTS, split.count);
            parts = split.count;
            unreadable = (char **) calloc (parts, sizeof (char *));
            assert (unreadable);
            root = json_object ();
            json_t *list = json_array ();
            json_object_set_new (root, "events", list);
            for (size_t i = 0; i < parts; i++) {
                json_error_t part_error;
                json_t *event = json_loadb (text + starts [i], ends [i] - starts [i],
                                            JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &part_error);
                if (!event) {
                    char reason [JSON_ERROR_TEXT_LENGTH];
                    unreadable [i] = zsys_sprintf ("the event is not valid JSON: %s",
                        ly_jsonr_reason (part_error.text, reason, sizeof reason));
                    event = json_null ();
                }
                json_array_append_new (list, event);
            }
        }
    }
    if (!root) {
        char reason [JSON_ERROR_TEXT_LENGTH];
        return s_fail (error, 400, "malformed", "the body is not valid JSON: %s at line %d column %d",
                       ly_jsonr_reason (json_error.text, reason, sizeof reason),
                       json_error.line, json_error.column);
    }
    json_t *events = root;
    bool batch = false;
    //  null is a field left out: "event_id": null beside "events", and "events": null
    //  beside an event's own event_id (alone, {"events": null} is a batch gone wrong)
    json_t *listed = json_is_object (root)? json_object_get (root, "events"): NULL;
    json_t *event_id = json_is_object (root)? json_object_get (root, "event_id"): NULL;
    if (json_is_null (event_id))
        event_id = NULL;
    if (json_is_null (listed) && event_id)
        listed = NULL;
    if (listed && event_id) {
        json_decref (root);
        s_free_reasons (&unreadable, parts);
        return s_fail (error, 400, "malformed", S_AMBIGUOUS);
    }
    if (json_is_array (listed)) {
        events = listed;
        batch = true;
    }
    else
    if (!json_is_object (root) || listed) {
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
            reason = "the event nests too deeply (at most 18 levels; properties at most 16)";
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
