/*  ly_msg.c: the msgpack envelope codec (see ly_msg.h and docs/protocol.md). The schema
    table below is the single source of truth for every message type: adding a type is
    one enum value in ly_msg.h (plus its field-index enum) and one entry in s_types.

    Decoding never trusts the frame. A small pre-scan walks the raw bytes first and
    checks that every declared length and element count fits in what is left, that
    nesting stays within LY_MSG_MAX_DEPTH and that the frame holds exactly one value;
    only then does msgpack-c unpack it, so an absurd count can never make msgpack-c
    allocate a huge zone. A decoded message owns a copy of the frame: OBJ and BIN
    fields point into that copy, STR fields get their own NUL-terminated copy. */
#include "ly_msg.h"
#include "ly_log.h"
#include "ly_utf8.h"

//  The schema. Indexed by message type; a type's fields end at the first entry
//  without a name (or at LY_MSG_MAX_FIELDS). The self-test and the fuzz target
//  include this file and add types of their own through LY_MSG_SELFTEST_TYPES;
//  production builds never define it.

typedef struct {
    const char *name;                           //  type name, as in docs/protocol.md
    ly_field_t fields [LY_MSG_MAX_FIELDS];      //  field schema, by field index
} s_type_t;

static const s_type_t s_types [] = {
    [LY_MSG_PING] = { "PING", {
        [LY_PING_REQUEST_ID]    = { "request_id", LY_FT_UINT, LY_PII_NONE },
        [LY_PING_SENDER]        = { "sender",     LY_FT_STR,  LY_PII_NONE } } },
    [LY_MSG_PONG] = { "PONG", {
        [LY_PONG_REQUEST_ID]    = { "request_id", LY_FT_UINT, LY_PII_NONE },
        [LY_PONG_SENDER]        = { "sender",     LY_FT_STR,  LY_PII_NONE },
        [LY_PONG_DB_OK]         = { "db_ok",      LY_FT_BOOL, LY_PII_NONE },
        [LY_PONG_DETAIL]        = { "detail",     LY_FT_STR,  LY_PII_NONE } } },
    [LY_MSG_ERROR] = { "ERROR", {
        [LY_ERROR_REQUEST_ID]   = { "request_id", LY_FT_UINT, LY_PII_NONE },
        [LY_ERROR_CODE]         = { "code",       LY_FT_STR,  LY_PII_NONE },
        [LY_ERROR_MESSAGE]      = { "message",    LY_FT_STR,  LY_PII_NONE } } },
    [LY_MSG_KEY_LOOKUP] = { "KEY_LOOKUP", {
        [LY_KEY_LOOKUP_REQUEST_ID]  = { "request_id", LY_FT_UINT, LY_PII_NONE },
        [LY_KEY_LOOKUP_KEY_SHA256]  = { "key_sha256", LY_FT_STR,  LY_PII_NONE } } },
    [LY_MSG_KEY_INFO] = { "KEY_INFO", {
        [LY_KEY_INFO_REQUEST_ID]    = { "request_id", LY_FT_UINT, LY_PII_NONE },
        [LY_KEY_INFO_KEY_SHA256]    = { "key_sha256", LY_FT_STR,  LY_PII_NONE },
        [LY_KEY_INFO_STATUS]        = { "status",     LY_FT_STR,  LY_PII_NONE },
        [LY_KEY_INFO_ORG_ID]        = { "org_id",     LY_FT_STR,  LY_PII_NONE },
        [LY_KEY_INFO_PROJECT_ID]    = { "project_id", LY_FT_STR,  LY_PII_NONE },
        [LY_KEY_INFO_DEFAULT_COUNTRY_CODE] = { "default_country_code", LY_FT_STR, LY_PII_NONE } } },
    [LY_MSG_EVENTS_SUBMIT] = { "EVENTS_SUBMIT", {
        [LY_EVENTS_SUBMIT_REQUEST_ID]   = { "request_id",  LY_FT_UINT, LY_PII_NONE },
        [LY_EVENTS_SUBMIT_REPLY_TO]     = { "reply_to",    LY_FT_BIN,  LY_PII_NONE },
        [LY_EVENTS_SUBMIT_ORG_ID]       = { "org_id",      LY_FT_STR,  LY_PII_NONE },
        [LY_EVENTS_SUBMIT_PROJECT_ID]   = { "project_id",  LY_FT_STR,  LY_PII_NONE },
        [LY_EVENTS_SUBMIT_DEFAULT_COUNTRY_CODE] = { "default_country_code", LY_FT_STR, LY_PII_NONE },
        [LY_EVENTS_SUBMIT_RECEIVED_AT]  = { "received_at", LY_FT_INT,  LY_PII_NONE },
        [LY_EVENTS_SUBMIT_CLIENT_IP]    = { "client_ip",   LY_FT_STR,  LY_PII_RAW },
        [LY_EVENTS_SUBMIT_USER_AGENT]   = { "user_agent",  LY_FT_STR,  LY_PII_RAW },
        [LY_EVENTS_SUBMIT_EVENTS]       = { "events",      LY_FT_OBJ,  LY_PII_NESTED },
        [LY_EVENTS_SUBMIT_REJECTED]     = { "rejected",    LY_FT_OBJ,  LY_PII_NONE } } },
    [LY_MSG_EVENTS_STORE] = { "EVENTS_STORE", {
        [LY_EVENTS_STORE_REQUEST_ID]    = { "request_id",  LY_FT_UINT, LY_PII_NONE },
        [LY_EVENTS_STORE_REPLY_TO]      = { "reply_to",    LY_FT_BIN,  LY_PII_NONE },
        [LY_EVENTS_STORE_COUNT]         = { "count",       LY_FT_UINT, LY_PII_NONE },
        [LY_EVENTS_STORE_ROWS]          = { "rows",        LY_FT_BIN,  LY_PII_NONE },
        [LY_EVENTS_STORE_REJECTED]      = { "rejected",    LY_FT_OBJ,  LY_PII_NONE } } },
    [LY_MSG_EVENTS_ACK] = { "EVENTS_ACK", {
        [LY_EVENTS_ACK_REQUEST_ID]      = { "request_id",  LY_FT_UINT, LY_PII_NONE },
        [LY_EVENTS_ACK_STATUS]          = { "status",      LY_FT_STR,  LY_PII_NONE },
        [LY_EVENTS_ACK_ACCEPTED]        = { "accepted",    LY_FT_UINT, LY_PII_NONE },
        [LY_EVENTS_ACK_DUPLICATES]      = { "duplicates",  LY_FT_UINT, LY_PII_NONE },
        [LY_EVENTS_ACK_REJECTED]        = { "rejected",    LY_FT_OBJ,  LY_PII_NONE } } },
    [LY_MSG_API_REQUEST] = { "API_REQUEST", {
        [LY_API_REQUEST_REQUEST_ID]     = { "request_id",      LY_FT_UINT, LY_PII_NONE },
        [LY_API_REQUEST_METHOD]         = { "method",          LY_FT_STR,  LY_PII_NONE },
        [LY_API_REQUEST_PATH]           = { "path",            LY_FT_STR,  LY_PII_TEXT },
        [LY_API_REQUEST_QUERY]          = { "query",           LY_FT_STR,  LY_PII_RAW },
        [LY_API_REQUEST_TOKEN_SHA256]   = { "token_sha256",    LY_FT_STR,  LY_PII_NONE },
        [LY_API_REQUEST_IDEMPOTENCY_KEY]= { "idempotency_key", LY_FT_STR,  LY_PII_NONE },
        [LY_API_REQUEST_IF_MATCH]       = { "if_match",        LY_FT_STR,  LY_PII_NONE },
        [LY_API_REQUEST_CONTENT_TYPE]   = { "content_type",    LY_FT_STR,  LY_PII_NONE },
        [LY_API_REQUEST_BODY]           = { "body",            LY_FT_BIN,  LY_PII_RAW } } },
    [LY_MSG_METRICS_REPORT] = { "METRICS_REPORT", {
        [LY_METRICS_REPORT_INSTANCE]    = { "instance", LY_FT_STR, LY_PII_NONE },
        [LY_METRICS_REPORT_SNAPSHOT]    = { "snapshot", LY_FT_OBJ, LY_PII_NONE } } },
    [LY_MSG_API_RESPONSE] = { "API_RESPONSE", {
        [LY_API_RESPONSE_REQUEST_ID]    = { "request_id",   LY_FT_UINT, LY_PII_NONE },
        [LY_API_RESPONSE_STATUS]        = { "status",       LY_FT_UINT, LY_PII_NONE },
        [LY_API_RESPONSE_CONTENT_TYPE]  = { "content_type", LY_FT_STR,  LY_PII_NONE },
        [LY_API_RESPONSE_ETAG]          = { "etag",         LY_FT_STR,  LY_PII_NONE },
        [LY_API_RESPONSE_LOCATION]      = { "location",     LY_FT_STR,  LY_PII_NONE },
        [LY_API_RESPONSE_BODY]          = { "body",         LY_FT_BIN,  LY_PII_RAW },
        [LY_API_RESPONSE_ALLOW]         = { "allow",        LY_FT_STR,  LY_PII_NONE },
        [LY_API_RESPONSE_KEYS_CHANGED]  = { "keys_changed", LY_FT_BOOL, LY_PII_NONE } } },
#ifdef LY_MSG_SELFTEST_TYPES
    LY_MSG_SELFTEST_TYPES
#endif
};

#define S_TYPE_SLOTS (sizeof (s_types) / sizeof (s_types [0]))
_Static_assert (S_TYPE_SLOTS >= LY_MSG_TYPE_MAX, "every message type needs a schema entry");

//  Map keys whose values are personal data inside LY_PII_NESTED objects. Matched
//  without regard to case, with '-' taken as '_' ("User-Agent" is "user_agent").
static const char *s_pii_keys [] = { "ip", "client_ip", "email", "phone", "user_agent", NULL };

#define S_REDACTED      "[redacted]"
#define S_SPAN_MAX      (2 + LY_MSG_MAX_FIELDS)     //  frame elements whose bytes we locate
#define S_JSON_DEPTH    64                          //  ly_msgpack_to_json's recursion guard

//  One field's value.
typedef struct {
    bool present;               //  set, or non-nil on the wire
    uint64_t uint;              //  UINT value
    int64_t sint;               //  INT value
    bool boolean;               //  BOOL value
    const char *bytes;          //  STR / BIN / OBJ bytes: owned, or inside self->frame
    size_t size;                //  length of bytes (STR: without the final NUL)
    char *owned;                //  bytes we allocated, or NULL
    msgpack_object obj;         //  OBJ: the unpacked value, once obj_ready
    bool obj_ready;             //  OBJ: obj is unpacked (a set value is, when first read)
    msgpack_unpacked unpacked;  //  OBJ from ly_msg_set_obj: owns obj's zone
} s_value_t;

struct _ly_msg_t {
    ly_msgtype_t type;                      //  message type
    const s_type_t *schema;                 //  its schema entry, static
    size_t field_count;                     //  fields in the schema
    s_value_t values [LY_MSG_MAX_FIELDS];   //  field values, by field index
    char *frame;                            //  decoded frame copy, owned, or NULL
    msgpack_unpacked unpacked;              //  decoded frame, owns its zone
};


//  --------------------------------------------------------------------------
//  Schema access

static const s_type_t *
s_schema (int type)
{
    if (type <= 0 || (size_t) type >= S_TYPE_SLOTS || !s_types [type].name)
        return NULL;
    return &s_types [type];
}

static size_t
s_schema_field_count (const s_type_t *schema)
{
    size_t count = 0;
    while (count < LY_MSG_MAX_FIELDS && schema->fields [count].name)
        count++;
    return count;
}

const char *
ly_msg_type_name (int type)
{
    const s_type_t *schema = s_schema (type);
    return schema? schema->name: NULL;
}

int
ly_msg_type_by_name (const char *name)
{
    if (!name)
        return -1;
    for (size_t type = 1; type < S_TYPE_SLOTS; type++)
        if (s_types [type].name && strcasecmp (s_types [type].name, name) == 0)
            return (int) type;
    return -1;
}

size_t
ly_msg_field_count (int type)
{
    const s_type_t *schema = s_schema (type);
    return schema? s_schema_field_count (schema): 0;
}

const ly_field_t *
ly_msg_field (int type, size_t index)
{
    const s_type_t *schema = s_schema (type);
    if (!schema || index >= s_schema_field_count (schema))
        return NULL;
    return &schema->fields [index];
}

static const char *
s_ftype_name (ly_ftype_t type)
{
    switch (type) {
        case LY_FT_UINT: return "uint";
        case LY_FT_INT:  return "int";
        case LY_FT_BOOL: return "bool";
        case LY_FT_STR:  return "str";
        case LY_FT_BIN:  return "bin";
        case LY_FT_OBJ:  return "obj";
    }
    return "?";
}


//  --------------------------------------------------------------------------
//  Pre-scan: checks raw msgpack bytes before msgpack-c sees them

typedef struct {
    const uint8_t *data;    //  bytes being checked, borrowed
    size_t size;            //  their length
    size_t pos;             //  next byte to read
    int max_depth;          //  deepest container nesting allowed
    char *err;              //  caller's buffer for the reason, or NULL
    size_t errlen;          //  its size
} s_scan_t;

static int
s_fail (char *err, size_t errlen, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

//  Writes a reason into err (when there is room) and returns -1.
static int
s_fail (char *err, size_t errlen, const char *format, ...)
{
    if (err && errlen > 0) {
        va_list args;
        va_start (args, format);
        vsnprintf (err, errlen, format, args);
        va_end (args);
    }
    return -1;
}

static int
s_scan_uint (s_scan_t *scan, size_t width, uint64_t *value)
{
    if (scan->size - scan->pos < width)
        return s_fail (scan->err, scan->errlen,
                       "frame truncated: %zu-byte length at byte %zu needs %zu bytes, %zu left",
                       width, scan->pos, width, scan->size - scan->pos);
    uint64_t result = 0;
    for (size_t index = 0; index < width; index++)
        result = (result << 8) | scan->data [scan->pos + index];
    scan->pos += width;
    *value = result;
    return 0;
}

static int
s_scan_skip (s_scan_t *scan, uint64_t length, size_t at)
{
    if (length > scan->size - scan->pos)
        return s_fail (scan->err, scan->errlen,
                       "value at byte %zu declares %" PRIu64 " bytes, only %zu left",
                       at, length, scan->size - scan->pos);
    scan->pos += (size_t) length;
    return 0;
}

static int s_scan_value (s_scan_t *scan, int depth);

//  Checks a container's elements; every element takes at least one byte.
static int
s_scan_items (s_scan_t *scan, uint64_t count, bool map, int depth, size_t at)
{
    if (depth + 1 > scan->max_depth)
        return s_fail (scan->err, scan->errlen,
                       "nesting deeper than %d levels at byte %zu", scan->max_depth, at);
    uint64_t per_entry = map? 2: 1;
    if (count > (scan->size - scan->pos) / per_entry)
        return s_fail (scan->err, scan->errlen,
                       "%s at byte %zu declares %" PRIu64 " %s, only %zu bytes left",
                       map? "map": "array", at, count, map? "entries": "elements",
                       scan->size - scan->pos);
    for (uint64_t index = 0; index < count * per_entry; index++)
        if (s_scan_value (scan, depth + 1))
            return -1;
    return 0;
}

//  Checks one value; depth is the number of containers around it.
static int
s_scan_value (s_scan_t *scan, int depth)
{
    size_t at = scan->pos;
    if (at >= scan->size)
        return s_fail (scan->err, scan->errlen, "frame truncated at byte %zu", at);
    uint8_t lead = scan->data [scan->pos++];
    uint64_t length = 0;

    if (lead <= 0x7f || lead >= 0xe0)           //  positive and negative fixint
        return 0;
    if (lead <= 0x8f)
        return s_scan_items (scan, lead & 0x0f, true, depth, at);
    if (lead <= 0x9f)
        return s_scan_items (scan, lead & 0x0f, false, depth, at);
    if (lead <= 0xbf)
        return s_scan_skip (scan, lead & 0x1f, at);

    switch (lead) {
        case 0xc0: case 0xc2: case 0xc3:        //  nil, false, true
            return 0;
        case 0xc4: case 0xc5: case 0xc6:        //  bin 8/16/32
        case 0xd9: case 0xda: case 0xdb:        //  str 8/16/32
            if (s_scan_uint (scan, lead <= 0xc6? 1u << (lead - 0xc4): 1u << (lead - 0xd9), &length))
                return -1;
            return s_scan_skip (scan, length, at);
        case 0xc7: case 0xc8: case 0xc9:        //  ext 8/16/32: length, type, data
            if (s_scan_uint (scan, 1u << (lead - 0xc7), &length))
                return -1;
            return s_scan_skip (scan, length + 1, at);
        case 0xca: return s_scan_skip (scan, 4, at);                    //  float 32
        case 0xcb: return s_scan_skip (scan, 8, at);                    //  float 64
        case 0xcc: case 0xcd: case 0xce: case 0xcf:                     //  uint 8..64
            return s_scan_skip (scan, 1u << (lead - 0xcc), at);
        case 0xd0: case 0xd1: case 0xd2: case 0xd3:                     //  int 8..64
            return s_scan_skip (scan, 1u << (lead - 0xd0), at);
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:          //  fixext 1..16
            return s_scan_skip (scan, 1 + (1u << (lead - 0xd4)), at);
        case 0xdc: case 0xdd:                                           //  array 16/32
            if (s_scan_uint (scan, lead == 0xdc? 2: 4, &length))
                return -1;
            return s_scan_items (scan, length, false, depth, at);
        case 0xde: case 0xdf:                                           //  map 16/32
            if (s_scan_uint (scan, lead == 0xde? 2: 4, &length))
                return -1;
            return s_scan_items (scan, length, true, depth, at);
        default:                                                        //  0xc1
            return s_fail (scan->err, scan->errlen,
                           "invalid msgpack byte 0x%02x at byte %zu", lead, at);
    }
}

//  Checks a whole frame: one array, within the limits, nothing after it. Records
//  where each of the first S_SPAN_MAX elements starts and ends.
static int
s_scan_frame (const void *data, size_t size, size_t *starts, size_t *ends,
              char *err, size_t errlen)
{
    if (size == 0 || !data)
        return s_fail (err, errlen, "empty frame");
    if (size > LY_MSG_MAX_FRAME)
        return s_fail (err, errlen, "frame of %zu bytes exceeds the limit of %d bytes",
                       size, LY_MSG_MAX_FRAME);
    s_scan_t scan = { data, size, 0, 1 + LY_MSG_MAX_DEPTH, err, errlen };
    uint8_t lead = scan.data [scan.pos++];
    uint64_t count = 0;
    if (lead >= 0x90 && lead <= 0x9f)
        count = lead & 0x0f;
    else
    if (lead == 0xdc || lead == 0xdd) {
        if (s_scan_uint (&scan, lead == 0xdc? 2: 4, &count))
            return -1;
    }
    else
        return s_fail (err, errlen, "frame is not a msgpack array (first byte 0x%02x)", lead);

    if (count > size - scan.pos)
        return s_fail (err, errlen, "frame declares %" PRIu64 " elements, only %zu bytes left",
                       count, size - scan.pos);
    for (uint64_t index = 0; index < count; index++) {
        if (index < S_SPAN_MAX)
            starts [index] = scan.pos;
        if (s_scan_value (&scan, 1))
            return -1;
        if (index < S_SPAN_MAX)
            ends [index] = scan.pos;
    }
    if (scan.pos != size)
        return s_fail (err, errlen, "frame has %zu trailing bytes after the message",
                       size - scan.pos);
    return 0;
}


//  --------------------------------------------------------------------------
//  Message object, setters and getters

ly_msg_t *
ly_msg_new (ly_msgtype_t type)
{
    const s_type_t *schema = s_schema (type);
    assert (schema);
    ly_msg_t *self = (ly_msg_t *) calloc (1, sizeof (ly_msg_t));
    if (!self)
        return NULL;
    self->type = type;
    self->schema = schema;
    self->field_count = s_schema_field_count (schema);
    return self;
}

static void
s_value_clear (s_value_t *value)
{
    msgpack_unpacked_destroy (&value->unpacked);
    free (value->owned);
    memset (value, 0, sizeof (s_value_t));
}

void
ly_msg_destroy (ly_msg_t **self_p)
{
    assert (self_p);
    ly_msg_t *self = *self_p;
    if (self) {
        for (size_t index = 0; index < LY_MSG_MAX_FIELDS; index++)
            s_value_clear (&self->values [index]);
        msgpack_unpacked_destroy (&self->unpacked);
        free (self->frame);
        free (self);
        *self_p = NULL;
    }
}

ly_msgtype_t
ly_msg_type (const ly_msg_t *self)
{
    assert (self);
    return self->type;
}

//  The value of a field, checked against the schema: a wrong index or type is a
//  bug in our own code.
static s_value_t *
s_value (const ly_msg_t *self, int field, ly_ftype_t type)
{
    assert (self);
    assert (field >= 0 && (size_t) field < self->field_count);
    assert (self->schema->fields [field].type == type);
    return (s_value_t *) &self->values [field];
}

void
ly_msg_set_uint (ly_msg_t *self, int field, uint64_t value)
{
    s_value_t *slot = s_value (self, field, LY_FT_UINT);
    s_value_clear (slot);
    slot->present = true;
    slot->uint = value;
}

void
ly_msg_set_int (ly_msg_t *self, int field, int64_t value)
{
    s_value_t *slot = s_value (self, field, LY_FT_INT);
    s_value_clear (slot);
    slot->present = true;
    slot->sint = value;
}

void
ly_msg_set_bool (ly_msg_t *self, int field, bool value)
{
    s_value_t *slot = s_value (self, field, LY_FT_BOOL);
    s_value_clear (slot);
    slot->present = true;
    slot->boolean = value;
}

//  Stores an owned copy of bytes, with a NUL after them.
static void
s_value_copy (s_value_t *slot, const void *data, size_t size)
{
    slot->owned = (char *) malloc (size + 1);
    assert (slot->owned);
    if (size)
        memcpy (slot->owned, data, size);
    slot->owned [size] = 0;
    slot->bytes = slot->owned;
    slot->size = size;
    slot->present = true;
}

void
ly_msg_set_str (ly_msg_t *self, int field, const char *value)
{
    ly_msg_set_strn (self, field, value, value? strlen (value): 0);
}

void
ly_msg_set_strn (ly_msg_t *self, int field, const char *value, size_t len)
{
    s_value_t *slot = s_value (self, field, LY_FT_STR);
    s_value_clear (slot);
    if (value)
        s_value_copy (slot, value, len);
}

void
ly_msg_set_bin (ly_msg_t *self, int field, const void *data, size_t len)
{
    s_value_t *slot = s_value (self, field, LY_FT_BIN);
    s_value_clear (slot);
    assert (data || len == 0);
    s_value_copy (slot, data, len);
}

void
ly_msg_set_obj (ly_msg_t *self, int field, const void *packed, size_t len)
{
    s_value_t *slot = s_value (self, field, LY_FT_OBJ);
    s_value_clear (slot);
    assert (packed && len > 0);
    //  Our own code built this value: it must be exactly one well-formed value
    //  within the limits, or the frame we send would be refused.
    char reason [128] = "";
    s_scan_t scan = { packed, len, 0, LY_MSG_MAX_DEPTH, reason, sizeof reason };
    int rc = len <= LY_MSG_MAX_FRAME? s_scan_value (&scan, 0): -1;
    assert (rc == 0 && scan.pos == len);
    if (((const uint8_t *) packed) [0] == 0xc0)
        return;                 //  nil: absent
    s_value_copy (slot, packed, len);
    slot->obj_ready = false;    //  the sender needs only the bytes: unpacked when read
}

//  The unpacked value of an OBJ field; a value set by ly_msg_set_obj is unpacked on
//  first use (a tap, a reader of the message that built it), its cache in the slot.
static const msgpack_object *
s_obj (const s_value_t *value)
{
    if (!value->obj_ready) {
        s_value_t *slot = (s_value_t *) value;
        size_t offset = 0;
        msgpack_unpack_return unpacked = msgpack_unpack_next (&slot->unpacked, slot->owned,
                                                              slot->size, &offset);
        assert (unpacked == MSGPACK_UNPACK_SUCCESS && offset == slot->size);
        slot->obj = slot->unpacked.data;
        slot->obj_ready = true;
    }
    return &value->obj;
}

bool
ly_msg_has (const ly_msg_t *self, int field)
{
    assert (self);
    assert (field >= 0 && (size_t) field < self->field_count);
    return self->values [field].present;
}

uint64_t
ly_msg_uint (const ly_msg_t *self, int field)
{
    return s_value (self, field, LY_FT_UINT)->uint;
}

int64_t
ly_msg_int (const ly_msg_t *self, int field)
{
    return s_value (self, field, LY_FT_INT)->sint;
}

bool
ly_msg_bool (const ly_msg_t *self, int field)
{
    return s_value (self, field, LY_FT_BOOL)->boolean;
}

const char *
ly_msg_str (const ly_msg_t *self, int field)
{
    const s_value_t *slot = s_value (self, field, LY_FT_STR);
    return slot->present? slot->bytes: NULL;
}

size_t
ly_msg_str_len (const ly_msg_t *self, int field)
{
    return s_value (self, field, LY_FT_STR)->size;
}

const void *
ly_msg_bin (const ly_msg_t *self, int field, size_t *len)
{
    const s_value_t *slot = s_value (self, field, LY_FT_BIN);
    if (len)
        *len = slot->size;
    return slot->present? slot->bytes: NULL;
}

const msgpack_object *
ly_msg_obj (const ly_msg_t *self, int field)
{
    const s_value_t *slot = s_value (self, field, LY_FT_OBJ);
    return slot->present? s_obj (slot): NULL;
}


//  --------------------------------------------------------------------------
//  Redaction

//  True when a map key names personal data.
static bool
s_is_pii_key (const msgpack_object *key)
{
    const char *name;
    size_t size;
    if (key->type == MSGPACK_OBJECT_STR) {
        name = key->via.str.ptr;
        size = key->via.str.size;
    }
    else
    if (key->type == MSGPACK_OBJECT_BIN) {
        name = key->via.bin.ptr;
        size = key->via.bin.size;
    }
    else
        return false;

    for (const char **pii = s_pii_keys; *pii; pii++) {
        if (strlen (*pii) != size)
            continue;
        size_t index;
        for (index = 0; index < size; index++) {
            char c = (char) tolower ((unsigned char) name [index]);
            if (c == '-')
                c = '_';
            if (c != (*pii) [index])
                break;
        }
        if (index == size)
            return true;
    }
    return false;
}

//  Packs obj with the values under personal-data keys replaced, at any depth.
static int
s_pack_redacted (msgpack_packer *pk, const msgpack_object *obj)
{
    if (obj->type == MSGPACK_OBJECT_ARRAY) {
        if (msgpack_pack_array (pk, obj->via.array.size))
            return -1;
        for (uint32_t index = 0; index < obj->via.array.size; index++)
            if (s_pack_redacted (pk, &obj->via.array.ptr [index]))
                return -1;
        return 0;
    }
    if (obj->type == MSGPACK_OBJECT_MAP) {
        if (msgpack_pack_map (pk, obj->via.map.size))
            return -1;
        for (uint32_t index = 0; index < obj->via.map.size; index++) {
            const msgpack_object_kv *entry = &obj->via.map.ptr [index];
            if (msgpack_pack_object (pk, entry->key))
                return -1;
            int rc = s_is_pii_key (&entry->key)
                   ? msgpack_pack_str_with_body (pk, S_REDACTED, strlen (S_REDACTED))
                   : s_pack_redacted (pk, &entry->val);
            if (rc)
                return -1;
        }
        return 0;
    }
    return msgpack_pack_object (pk, *obj);
}


//  --------------------------------------------------------------------------
//  Encoding

//  A string anyone may write, scrubbed as a log line is (emails, phones, IPs masked),
//  as a new string; NULL when out of memory.
static char *
s_scrubbed (const char *text, size_t size)
{
    char *copy = strndup (text, size);
    size_t room = size * 2 + 64;        //  a mask may be longer than what it hides
    char *scrubbed = copy? (char *) malloc (room): NULL;
    if (scrubbed)
        ly_log_scrub (copy, scrubbed, room);
    free (copy);
    return scrubbed;
}

static int
s_pack_scrubbed (msgpack_packer *pk, const char *text, size_t size)
{
    char *scrubbed = s_scrubbed (text, size);
    const char *shown = scrubbed? scrubbed: S_REDACTED;
    int rc = msgpack_pack_str_with_body (pk, shown, strlen (shown));
    free (scrubbed);
    return rc;
}

static int
s_pack_field (msgpack_packer *pk, msgpack_sbuffer *sbuf, const ly_field_t *field,
              const s_value_t *value, bool redact)
{
    if (!value->present)
        return msgpack_pack_nil (pk);
    if (redact && field->pii == LY_PII_RAW) {
        //  The redacted frame must still decode: a string where the schema allows
        //  one, bytes for BIN, and nil (absent) for scalars.
        if (field->type == LY_FT_STR || field->type == LY_FT_OBJ)
            return msgpack_pack_str_with_body (pk, S_REDACTED, strlen (S_REDACTED));
        if (field->type == LY_FT_BIN)
            return msgpack_pack_bin_with_body (pk, S_REDACTED, strlen (S_REDACTED));
        return msgpack_pack_nil (pk);
    }
    switch (field->type) {
        case LY_FT_UINT:
            return msgpack_pack_uint64 (pk, value->uint);
        case LY_FT_INT:
            return msgpack_pack_int64 (pk, value->sint);
        case LY_FT_BOOL:
            return value->boolean? msgpack_pack_true (pk): msgpack_pack_false (pk);
        case LY_FT_STR:
            if (redact && field->pii == LY_PII_TEXT)
                return s_pack_scrubbed (pk, value->bytes, value->size);
            return msgpack_pack_str_with_body (pk, value->bytes, value->size);
        case LY_FT_BIN:
            return msgpack_pack_bin_with_body (pk, value->bytes, value->size);
        case LY_FT_OBJ:
            if (redact && field->pii == LY_PII_NESTED)
                return s_pack_redacted (pk, s_obj (value));
            return msgpack_sbuffer_write (sbuf, value->bytes, value->size);
    }
    return -1;
}

int
ly_msg_encode (const ly_msg_t *self, bool redact, void **data_p, size_t *size_p)
{
    assert (self);
    assert (data_p && size_p);
    *data_p = NULL;
    *size_p = 0;

    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);

    int rc = msgpack_pack_array (&pk, 2 + self->field_count);
    if (rc == 0)
        rc = msgpack_pack_uint64 (&pk, LY_PROTOCOL_VERSION);
    if (rc == 0)
        rc = msgpack_pack_uint64 (&pk, (uint64_t) self->type);
    for (size_t index = 0; rc == 0 && index < self->field_count; index++)
        rc = s_pack_field (&pk, &sbuf, &self->schema->fields [index],
                           &self->values [index], redact);
    if (rc || sbuf.size > LY_MSG_MAX_FRAME) {
        msgpack_sbuffer_destroy (&sbuf);
        return -1;
    }
    *size_p = sbuf.size;
    *data_p = msgpack_sbuffer_release (&sbuf);
    return 0;
}

zframe_t *
ly_msg_encode_frame (const ly_msg_t *self, bool redact)
{
    void *data;
    size_t size;
    if (ly_msg_encode (self, redact, &data, &size))
        return NULL;
    zframe_t *frame = zframe_new (data, size);
    free (data);
    return frame;
}


//  --------------------------------------------------------------------------
//  Decoding

static const char *
s_obj_type_name (const msgpack_object *obj)
{
    switch (obj->type) {
        case MSGPACK_OBJECT_NIL:                return "nil";
        case MSGPACK_OBJECT_BOOLEAN:            return "bool";
        case MSGPACK_OBJECT_POSITIVE_INTEGER:   return "uint";
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:   return "negative int";
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:            return "float";
        case MSGPACK_OBJECT_STR:                return "str";
        case MSGPACK_OBJECT_ARRAY:              return "array";
        case MSGPACK_OBJECT_MAP:                return "map";
        case MSGPACK_OBJECT_BIN:                return "bin";
        case MSGPACK_OBJECT_EXT:                return "ext";
    }
    return "unknown";
}

//  Takes one field from the unpacked frame; the bytes stay in self->frame.
static int
s_decode_field (ly_msg_t *self, size_t index, const msgpack_object *obj,
                size_t start, size_t end, char *err, size_t errlen)
{
    const ly_field_t *field = &self->schema->fields [index];
    s_value_t *slot = &self->values [index];
    if (obj->type == MSGPACK_OBJECT_NIL)
        return 0;               //  absent

    bool ok = false;
    switch (field->type) {
        case LY_FT_UINT:
            if ((ok = obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER))
                slot->uint = obj->via.u64;
            break;
        case LY_FT_INT:
            if (obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                if (obj->via.u64 > INT64_MAX)
                    return s_fail (err, errlen,
                                   "field \"%s\" of %s message is out of range for int",
                                   field->name, self->schema->name);
                slot->sint = (int64_t) obj->via.u64;
                ok = true;
            }
            else
            if ((ok = obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER))
                slot->sint = obj->via.i64;
            break;
        case LY_FT_BOOL:
            if ((ok = obj->type == MSGPACK_OBJECT_BOOLEAN))
                slot->boolean = obj->via.boolean;
            break;
        case LY_FT_STR:
            if ((ok = obj->type == MSGPACK_OBJECT_STR)) {
                slot->owned = (char *) malloc (obj->via.str.size + 1);
                if (!slot->owned)
                    return s_fail (err, errlen, "out of memory");
                if (obj->via.str.size)      //  msgpack-c gives "" a NULL pointer
                    memcpy (slot->owned, obj->via.str.ptr, obj->via.str.size);
                slot->owned [obj->via.str.size] = 0;
                slot->bytes = slot->owned;
                slot->size = obj->via.str.size;
            }
            break;
        case LY_FT_BIN:
            if ((ok = obj->type == MSGPACK_OBJECT_BIN)) {
                slot->bytes = obj->via.bin.ptr? obj->via.bin.ptr: "";
                slot->size = obj->via.bin.size;
            }
            break;
        case LY_FT_OBJ:
            ok = true;
            slot->obj = *obj;
            slot->obj_ready = true;
            slot->bytes = self->frame + start;
            slot->size = end - start;
            break;
    }
    if (!ok)
        return s_fail (err, errlen, "field \"%s\" of %s message has type %s, expected %s",
                       field->name, self->schema->name, s_obj_type_name (obj),
                       s_ftype_name (field->type));
    slot->present = true;
    return 0;
}

ly_msg_t *
ly_msg_decode (const void *data, size_t size, char *err, size_t errlen)
{
    if (err && errlen > 0)
        err [0] = 0;
    size_t starts [S_SPAN_MAX], ends [S_SPAN_MAX];
    if (s_scan_frame (data, size, starts, ends, err, errlen))
        return NULL;

    ly_msg_t *self = (ly_msg_t *) calloc (1, sizeof (ly_msg_t));
    if (self)
        self->frame = (char *) malloc (size);
    if (!self || !self->frame) {
        free (self);
        s_fail (err, errlen, "out of memory");
        return NULL;
    }
    memcpy (self->frame, data, size);
    size_t offset = 0;
    msgpack_unpack_return unpacked = msgpack_unpack_next (&self->unpacked, self->frame,
                                                          size, &offset);
    const msgpack_object *root = &self->unpacked.data;
    if (unpacked != MSGPACK_UNPACK_SUCCESS || offset != size
    ||  root->type != MSGPACK_OBJECT_ARRAY) {
        s_fail (err, errlen, "could not unpack frame (msgpack error %d)", (int) unpacked);
        goto failed;
    }
    const msgpack_object *items = root->via.array.ptr;
    uint32_t item_count = root->via.array.size;
    if (item_count < 2) {
        s_fail (err, errlen, "frame has %" PRIu32 " elements, expected at least 2", item_count);
        goto failed;
    }
    if (items [0].type != MSGPACK_OBJECT_POSITIVE_INTEGER
    ||  items [0].via.u64 != LY_PROTOCOL_VERSION) {
        if (items [0].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            s_fail (err, errlen, "unsupported protocol version %" PRIu64 ", expected %d",
                    items [0].via.u64, LY_PROTOCOL_VERSION);
        else
            s_fail (err, errlen, "protocol version has type %s, expected uint",
                    s_obj_type_name (&items [0]));
        goto failed;
    }
    if (items [1].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        s_fail (err, errlen, "message type has type %s, expected uint",
                s_obj_type_name (&items [1]));
        goto failed;
    }
    if (items [1].via.u64 > INT_MAX || !s_schema ((int) items [1].via.u64)) {
        s_fail (err, errlen, "unknown message type %" PRIu64, items [1].via.u64);
        goto failed;
    }
    self->type = (ly_msgtype_t) items [1].via.u64;
    self->schema = s_schema (self->type);
    self->field_count = s_schema_field_count (self->schema);
    if (item_count - 2 < self->field_count) {
        s_fail (err, errlen, "%s message has %" PRIu32 " fields, expected %zu",
                self->schema->name, item_count - 2, self->field_count);
        goto failed;
    }
    for (size_t index = 0; index < self->field_count; index++)
        if (s_decode_field (self, index, &items [2 + index],
                            starts [2 + index], ends [2 + index], err, errlen))
            goto failed;
    return self;

failed:
    ly_msg_destroy (&self);
    return NULL;
}


//  --------------------------------------------------------------------------
//  JSON, for taps and logs

//  A copy of text in which every invalid UTF-8 sequence is U+FFFD. Caller frees.
static char *
s_utf8_repair (const char *text, size_t size, size_t *repaired_size)
{
    char *repaired = (char *) malloc (size * 3 + 1);
    if (!repaired)
        return NULL;
    size_t out = 0;
    for (size_t in = 0; in < size; ) {
        size_t length = ly_utf8_sequence (text + in, size - in);
        if (length) {
            memcpy (repaired + out, text + in, length);
            out += length;
            in += length;
        }
        else {
            memcpy (repaired + out, "\xef\xbf\xbd", 3);
            out += 3;
            in++;
        }
    }
    repaired [out] = 0;
    *repaired_size = out;
    return repaired;
}

static json_t *
s_json_string (const char *text, size_t size)
{
    json_t *json = json_stringn (text? text: "", size);
    if (!json && text) {
        size_t repaired_size;
        char *repaired = s_utf8_repair (text, size, &repaired_size);
        if (repaired)
            json = json_stringn (repaired, repaired_size);
        free (repaired);
    }
    return json;
}

//  {"$bin": "<hex>"}
static json_t *
s_json_bin (const void *data, size_t size)
{
    char *hex = (char *) malloc (size * 2 + 1);
    if (!hex)
        return NULL;
    static const char digits [] = "0123456789abcdef";
    for (size_t index = 0; index < size; index++) {
        uint8_t byte = ((const uint8_t *) data) [index];
        hex [index * 2] = digits [byte >> 4];
        hex [index * 2 + 1] = digits [byte & 0x0f];
    }
    hex [size * 2] = 0;
    json_t *json = json_pack ("{s:s}", "$bin", hex);
    free (hex);
    return json;
}

static json_t *
s_json_uint (uint64_t value)
{
    if (value <= INT64_MAX)
        return json_integer ((json_int_t) value);
    char digits [24];
    snprintf (digits, sizeof digits, "%" PRIu64, value);
    return json_string (digits);
}

//  JSON has no NaN or infinities: those become the strings "NaN", "Infinity" and
//  "-Infinity" (json_real refuses them).
static json_t *
s_json_real (double value)
{
    json_t *json = json_real (value);
    if (!json)
        json = json_string (value != value? "NaN": value > 0? "Infinity": "-Infinity");
    return json;
}

static json_t *s_to_json (const msgpack_object *obj, bool redact, int depth);

//  A map key as JSON object key: strings as they are (invalid UTF-8 repaired),
//  anything else as its compact JSON text. Caller frees.
static char *
s_json_key (const msgpack_object *key, bool redact, int depth, size_t *size)
{
    if (key->type == MSGPACK_OBJECT_STR) {
        return s_utf8_repair (key->via.str.ptr, key->via.str.size, size);
    }
    json_t *json = s_to_json (key, redact, depth);
    if (!json)
        return NULL;
    char *text = json_is_string (json)
               ? strndup (json_string_value (json), json_string_length (json))
               : json_dumps (json, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text)
        *size = json_is_string (json)? json_string_length (json): strlen (text);
    json_decref (json);
    return text;
}

static json_t *
s_to_json (const msgpack_object *obj, bool redact, int depth)
{
    if (depth > S_JSON_DEPTH)
        return json_string ("[nested too deep]");
    switch (obj->type) {
        case MSGPACK_OBJECT_NIL:
            return json_null ();
        case MSGPACK_OBJECT_BOOLEAN:
            return json_boolean (obj->via.boolean);
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            return s_json_uint (obj->via.u64);
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            return json_integer ((json_int_t) obj->via.i64);
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            return s_json_real (obj->via.f64);
        case MSGPACK_OBJECT_STR:
            return s_json_string (obj->via.str.ptr, obj->via.str.size);
        case MSGPACK_OBJECT_BIN:
            return s_json_bin (obj->via.bin.ptr, obj->via.bin.size);
        case MSGPACK_OBJECT_EXT: {
            json_t *json = s_json_bin (obj->via.ext.ptr, obj->via.ext.size);
            if (json && json_object_set_new (json, "$ext", json_integer (obj->via.ext.type))) {
                json_decref (json);
                return NULL;
            }
            return json;
        }
        case MSGPACK_OBJECT_ARRAY: {
            json_t *json = json_array ();
            for (uint32_t index = 0; json && index < obj->via.array.size; index++) {
                json_t *item = s_to_json (&obj->via.array.ptr [index], redact, depth + 1);
                if (!item || json_array_append_new (json, item)) {
                    json_decref (json);
                    json = NULL;
                }
            }
            return json;
        }
        case MSGPACK_OBJECT_MAP: {
            json_t *json = json_object ();
            for (uint32_t index = 0; json && index < obj->via.map.size; index++) {
                const msgpack_object_kv *entry = &obj->via.map.ptr [index];
                size_t key_size = 0;
                char *key = s_json_key (&entry->key, redact, depth + 1, &key_size);
                json_t *value = redact && s_is_pii_key (&entry->key)
                              ? json_string (S_REDACTED)
                              : s_to_json (&entry->val, redact, depth + 1);
                //  json_object_setn_new takes value over, also when it fails.
                if (!key || !value || json_object_setn_new (json, key, key_size, value)) {
                    if (!key)
                        json_decref (value);
                    json_decref (json);
                    json = NULL;
                }
                free (key);
            }
            return json;
        }
    }
    return NULL;
}

json_t *
ly_msgpack_to_json (const msgpack_object *obj, bool redact)
{
    assert (obj);
    return s_to_json (obj, redact, 0);
}

static json_t *
s_field_to_json (const ly_field_t *field, const s_value_t *value)
{
    if (field->pii == LY_PII_RAW)
        return json_string (S_REDACTED);
    if (field->pii == LY_PII_TEXT && field->type == LY_FT_STR) {
        char *scrubbed = s_scrubbed (value->bytes, value->size);
        json_t *json = scrubbed? s_json_string (scrubbed, strlen (scrubbed))
                               : json_string (S_REDACTED);
        free (scrubbed);
        return json;
    }
    switch (field->type) {
        case LY_FT_UINT: return s_json_uint (value->uint);
        case LY_FT_INT:  return json_integer ((json_int_t) value->sint);
        case LY_FT_BOOL: return json_boolean (value->boolean);
        case LY_FT_STR:  return s_json_string (value->bytes, value->size);
        case LY_FT_BIN:  return s_json_bin (value->bytes, value->size);
        case LY_FT_OBJ:  return s_to_json (s_obj (value), field->pii == LY_PII_NESTED, 0);
    }
    return NULL;
}

json_t *
ly_msg_to_json (const ly_msg_t *self)
{
    assert (self);
    json_t *fields = json_object ();
    for (size_t index = 0; fields && index < self->field_count; index++) {
        const ly_field_t *field = &self->schema->fields [index];
        if (!self->values [index].present)
            continue;
        json_t *value = s_field_to_json (field, &self->values [index]);
        if (!value || json_object_set_new (fields, field->name, value)) {
            json_decref (fields);
            fields = NULL;
        }
    }
    if (!fields)
        return NULL;
    return json_pack ("{s:s, s:o}", "type", self->schema->name, "fields", fields);
}
