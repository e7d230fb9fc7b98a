/*  ly_msg.h: the msgpack envelope codec, the one codec for every frame between actors.
    A frame is one msgpack array: [protocol version, message type, field 0, field 1, ...].
    Absent fields are nil. docs/protocol.md lists every type and field. */
#ifndef LY_MSG_H
#define LY_MSG_H

#include "ly_prelude.h"

#define LY_PROTOCOL_VERSION 1
#define LY_MSG_MAX_FIELDS   16
#define LY_MSG_MAX_FRAME    (8 * 1024 * 1024)   /* larger frames are refused */
#define LY_MSG_MAX_DEPTH    24                  /* nesting limit inside OBJ fields */

typedef enum {
    LY_FT_UINT,     /* unsigned integer */
    LY_FT_INT,      /* signed integer */
    LY_FT_BOOL,     /* boolean */
    LY_FT_STR,      /* UTF-8 string; decoded copies are NUL-terminated */
    LY_FT_BIN,      /* opaque bytes */
    LY_FT_OBJ       /* any msgpack value (map, array, ...), kept as a msgpack_object */
} ly_ftype_t;

typedef enum {
    LY_PII_NONE = 0,    /* no personal data */
    LY_PII_RAW,         /* the field itself is raw personal data: redacted in taps and logs */
    LY_PII_NESTED,      /* an OBJ that may hold raw personal data under known keys
                           (ip, client_ip, email, phone, user_agent): those are redacted */
    LY_PII_TEXT         /* a STR anyone may write (a URL path): scrubbed as a log line
                           (ly_log_scrub: emails, phones, IPs masked) in taps */
} ly_pii_t;

typedef struct {
    const char *name;   /* field name, as in docs/protocol.md */
    ly_ftype_t type;    /* wire type */
    ly_pii_t pii;       /* personal-data class */
} ly_field_t;

/*  Message types. Numbers are part of the wire format: never reuse one. */
typedef enum {
    LY_MSG_PING = 1,            /* liveness/readiness probe */
    LY_MSG_PONG = 2,            /* answer to PING */
    LY_MSG_ERROR = 3,           /* a request could not be served */
    LY_MSG_KEY_LOOKUP = 4,      /* gateway -> api: who owns this SDK key (by hash) */
    LY_MSG_KEY_INFO = 5,        /* api -> gateway: the key's project, or why not */
    LY_MSG_EVENTS_SUBMIT = 6,   /* gateway -> ingest: one request's raw events */
    LY_MSG_EVENTS_STORE = 7,    /* ingest -> store: scrubbed rows and rejections */
    LY_MSG_EVENTS_ACK = 8,      /* store -> gateway: committed (or why not) */
    LY_MSG_API_REQUEST = 9,     /* gateway -> api: one /v1 request */
    LY_MSG_API_RESPONSE = 10,   /* api -> gateway: its answer */
    LY_MSG_METRICS_REPORT = 11, /* any actor process -> gateway: its metrics */
    LY_MSG_TYPE_MAX             /* one past the highest type number */
} ly_msgtype_t;

/*  Field indexes, one enum per message type. */
enum { LY_PING_REQUEST_ID, LY_PING_SENDER };
enum { LY_PONG_REQUEST_ID, LY_PONG_SENDER, LY_PONG_DB_OK, LY_PONG_DETAIL };
enum { LY_ERROR_REQUEST_ID, LY_ERROR_CODE, LY_ERROR_MESSAGE };
enum { LY_KEY_LOOKUP_REQUEST_ID, LY_KEY_LOOKUP_KEY_SHA256 };
enum { LY_KEY_INFO_REQUEST_ID, LY_KEY_INFO_KEY_SHA256, LY_KEY_INFO_STATUS,
       LY_KEY_INFO_ORG_ID, LY_KEY_INFO_PROJECT_ID, LY_KEY_INFO_DEFAULT_COUNTRY_CODE };
enum { LY_EVENTS_SUBMIT_REQUEST_ID, LY_EVENTS_SUBMIT_REPLY_TO, LY_EVENTS_SUBMIT_ORG_ID,
       LY_EVENTS_SUBMIT_PROJECT_ID, LY_EVENTS_SUBMIT_DEFAULT_COUNTRY_CODE,
       LY_EVENTS_SUBMIT_RECEIVED_AT, LY_EVENTS_SUBMIT_CLIENT_IP, LY_EVENTS_SUBMIT_USER_AGENT,
       LY_EVENTS_SUBMIT_EVENTS, LY_EVENTS_SUBMIT_REJECTED };
enum { LY_EVENTS_STORE_REQUEST_ID, LY_EVENTS_STORE_REPLY_TO, LY_EVENTS_STORE_COUNT,
       LY_EVENTS_STORE_ROWS, LY_EVENTS_STORE_REJECTED };
enum { LY_API_REQUEST_REQUEST_ID, LY_API_REQUEST_METHOD, LY_API_REQUEST_PATH,
       LY_API_REQUEST_QUERY, LY_API_REQUEST_TOKEN_SHA256, LY_API_REQUEST_IDEMPOTENCY_KEY,
       LY_API_REQUEST_IF_MATCH, LY_API_REQUEST_CONTENT_TYPE, LY_API_REQUEST_BODY };
enum { LY_API_RESPONSE_REQUEST_ID, LY_API_RESPONSE_STATUS, LY_API_RESPONSE_CONTENT_TYPE,
       LY_API_RESPONSE_ETAG, LY_API_RESPONSE_LOCATION, LY_API_RESPONSE_BODY,
       LY_API_RESPONSE_ALLOW, LY_API_RESPONSE_KEYS_CHANGED };
enum { LY_METRICS_REPORT_INSTANCE, LY_METRICS_REPORT_SNAPSHOT };
enum { LY_EVENTS_ACK_REQUEST_ID, LY_EVENTS_ACK_STATUS, LY_EVENTS_ACK_ACCEPTED,
       LY_EVENTS_ACK_DUPLICATES, LY_EVENTS_ACK_REJECTED };

typedef struct _ly_msg_t ly_msg_t;

/*  Schema access, for tools (layers-tap, tests) that walk every type. Returns NULL
    for an unknown type. */
const char *ly_msg_type_name (int type);
int ly_msg_type_by_name (const char *name);   /* -1 when unknown */
size_t ly_msg_field_count (int type);
const ly_field_t *ly_msg_field (int type, size_t index);

/*  A new, empty message of this type; all fields absent. Caller owns. */
ly_msg_t *ly_msg_new (ly_msgtype_t type);
void ly_msg_destroy (ly_msg_t **self_p);
ly_msgtype_t ly_msg_type (const ly_msg_t *self);

/*  Setters copy their argument; a field set twice keeps the last value.
    Setting a field of the wrong type is a programming error (asserted). */
void ly_msg_set_uint (ly_msg_t *self, int field, uint64_t value);
void ly_msg_set_int (ly_msg_t *self, int field, int64_t value);
void ly_msg_set_bool (ly_msg_t *self, int field, bool value);
void ly_msg_set_str (ly_msg_t *self, int field, const char *value);     /* NULL: absent */
void ly_msg_set_strn (ly_msg_t *self, int field, const char *value, size_t len);
void ly_msg_set_bin (ly_msg_t *self, int field, const void *data, size_t len);
/*  An OBJ field from one already-packed msgpack value (copied). */
void ly_msg_set_obj (ly_msg_t *self, int field, const void *packed, size_t len);

/*  Getters: absent fields read as 0 / false / NULL. Returned pointers are borrowed
    and live as long as the message. */
bool ly_msg_has (const ly_msg_t *self, int field);
uint64_t ly_msg_uint (const ly_msg_t *self, int field);
int64_t ly_msg_int (const ly_msg_t *self, int field);
bool ly_msg_bool (const ly_msg_t *self, int field);
const char *ly_msg_str (const ly_msg_t *self, int field);               /* NUL-terminated */
size_t ly_msg_str_len (const ly_msg_t *self, int field);
const void *ly_msg_bin (const ly_msg_t *self, int field, size_t *len);
/*  An OBJ field as a msgpack_object. Its strings are NOT NUL-terminated and point into
    the message's own storage. */
const msgpack_object *ly_msg_obj (const ly_msg_t *self, int field);

/*  Encodes the message into a new buffer; caller owns *data_p (free()).
    With redact, LY_PII_RAW fields become the string "[redacted]", LY_PII_NESTED
    objects have their personal-data keys' values replaced the same way, and LY_PII_TEXT
    strings are scrubbed. */
int ly_msg_encode (const ly_msg_t *self, bool redact, void **data_p, size_t *size_p);
zframe_t *ly_msg_encode_frame (const ly_msg_t *self, bool redact);

/*  Decodes one frame. Never asserts on input: on any error (truncated, trailing bytes,
    wrong version, unknown type, missing fields, wrong field types, absurd lengths or
    nesting) returns NULL and writes a reason into err (when err is not NULL).
    The data is copied; caller owns the result. */
ly_msg_t *ly_msg_decode (const void *data, size_t size, char *err, size_t errlen);

/*  Writes the message as one JSON object {"type": ..., "fields": {...}} with personal
    data redacted; caller owns the returned json_t. For layers-tap and logs. */
json_t *ly_msg_to_json (const ly_msg_t *self);

/*  Converts any msgpack object to JSON, redacting personal-data keys when redact.
    Bins become {"$bin": "<hex>"}. Caller owns. */
json_t *ly_msgpack_to_json (const msgpack_object *obj, bool redact);

#endif
