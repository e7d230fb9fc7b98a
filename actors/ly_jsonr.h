/*  ly_jsonr.h: reading JSON, the parts the SDK body reader, the partner API and the
    relay share: whether a Content-Type announces JSON we read, jansson's reasons for
    refusing a text, in words for the client, and reading what PostgreSQL's jsonb gives
    back. */
#ifndef LY_JSONR_H_INCLUDED
#define LY_JSONR_H_INCLUDED

#include "ly_prelude.h"

typedef enum {
    LY_JSONR_JSON,          /* application/json, UTF-8 (said or not) */
    LY_JSONR_NOT_JSON,      /* another media type, or none */
    LY_JSONR_NOT_UTF8       /* application/json with another charset parameter */
} ly_jsonr_type_t;

/*  What a Content-Type header value (may be NULL) announces. JSON between systems is
    UTF-8 (RFC 8259): a body labelled with another charset would be read as something
    its sender did not mean. Parameters are allowed; charset may be quoted, any case. */
ly_jsonr_type_t
    ly_jsonr_content_type (const char *value);

/*  jansson's reason (json_error_t.text) in the client's terms: some of its messages
    name jansson's own flags ("without JSON_ALLOW_NUL") or say little ("too big
    integer"), and most quote the bytes "near '...'" the error, which may be an e-mail
    address or a phone number: never in an answer, a log or a frame. Returns a static
    string, or text without that quote, copied into buffer (size bytes). */
const char *
    ly_jsonr_reason (const char *text, char *buffer, size_t size);

/*  len bytes of JSON text parsed like json_loadb with flags, except that an integer
    beyond json_int_t becomes a real instead of failing the whole text: PostgreSQL's
    jsonb gives an SDK's 1e19 back as 10000000000000000000, valid JSON that the networks
    take. Every other number is read as it is written. NULL when the text is not JSON.
    Caller owns. */
json_t *
    ly_jsonr_load (const char *text, size_t len, size_t flags);

#endif
