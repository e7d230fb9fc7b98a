/*  ly_mock.h: the parts of layers-mock, the local stand-in for Meta's Conversions API,
    TikTok's Events API, Apple's AdServices attribution API and a model provider.
    A request to a fake goes through three parts: the fake itself (it checks the request
    against the documented shape and gives the normal answer), the fault queue (what to
    answer instead, after how long, or whether to hang up) and the journal (what tests
    read back over HTTP). The fakes keep no state but Apple's "not yet" counters. */
#ifndef LY_MOCK_H
#define LY_MOCK_H

#include "ly_prelude.h"

typedef enum {
    LY_MOCK_META,
    LY_MOCK_TIKTOK,
    LY_MOCK_APPLE,
    LY_MOCK_MODEL,
    LY_MOCK_SERVICES            /* how many there are */
} ly_mock_service_t;

#define LY_MOCK_ANY_SERVICE (-1)    /* a fault or filter for every service ("*") */

/*  "meta", "tiktok", "apple", "model". */
const char *ly_mock_service_name (ly_mock_service_t service);
/*  The service of name, or "*" as LY_MOCK_ANY_SERVICE when any_ok. 0 / -1 */
int ly_mock_service_parse (const char *name, bool any_ok, int *service);

/*  One received request as the fakes see it; everything is borrowed. */
typedef struct {
    ly_mock_service_t service;  /* which fake */
    const char *method;         /* "POST" */
    const char *path;           /* full path, "/meta/v21.0/123/events" */
    const char *subpath;        /* after the service prefix, "/v21.0/123/events" */
    json_t *query;              /* decoded query arguments, name -> string */
    json_t *headers;            /* lower-cased name -> value */
    const char *body;           /* body_size bytes, NUL-terminated after them */
    size_t body_size;
    bool commit;                /* false: a fault answers instead; change no state */
} ly_mock_request_t;

/*  An answer; ly_mock_answer_init before use, ly_mock_answer_reset frees its parts. */
typedef struct {
    unsigned status;            /* HTTP status, 0: hang up without answering */
    char *body;                 /* owned, NUL-terminated; NULL: empty */
    const char *content_type;   /* static or owned by extra headers' lifetime */
    json_t *headers;            /* extra response headers (name -> string), owned */
    json_t *errors;             /* why the request was refused (strings), owned */
    json_t *warnings;           /* accepted deviations from the documented shape */
    int events;                 /* events, tokens or calls accepted */
} ly_mock_answer_t;

void ly_mock_answer_init (ly_mock_answer_t *answer);
void ly_mock_answer_reset (ly_mock_answer_t *answer);
/*  Sets status and a JSON body (taken over and serialized). */
void ly_mock_answer_json (ly_mock_answer_t *answer, unsigned status, json_t *body);
/*  Appends to errors / warnings. */
void ly_mock_error (ly_mock_answer_t *answer, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));
void ly_mock_warning (ly_mock_answer_t *answer, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));
/*  Warns when data[index].field's "value" is not a number or its "currency" not a
    3-letter code (Meta's custom_data, TikTok's properties). */
void ly_mock_check_money (ly_mock_answer_t *answer, long index, const char *field,
                          const json_t *object);
/*  The first error, or "" (borrowed). */
const char *ly_mock_first_error (const ly_mock_answer_t *answer);

/*  What a fault asks the fake to answer (the parts the fake turns into its own error
    body); see ly_mock_faults.h for the rest of a fault. */
typedef struct {
    unsigned status;            /* HTTP status, 0: the fake's default for the code */
    bool has_code;
    json_int_t code;            /* the network's error code (Meta code, TikTok code) */
    bool has_subcode;
    json_int_t subcode;         /* Meta error_subcode */
    const char *message;        /* replaces the default message, NULL: default */
} ly_mock_error_spec_t;

/*  One fake: answers a request, or turns a fault into the error it would send. */
typedef struct {
    ly_mock_service_t service;
    const char *prefix;         /* "/meta" */
    void (*handle) (const ly_mock_request_t *request, ly_mock_answer_t *answer);
    void (*fail) (const ly_mock_request_t *request, const ly_mock_error_spec_t *spec,
                  ly_mock_answer_t *answer);
} ly_mock_fake_t;

void ly_mock_meta_handle (const ly_mock_request_t *request, ly_mock_answer_t *answer);
void ly_mock_meta_fail (const ly_mock_request_t *request, const ly_mock_error_spec_t *spec,
                        ly_mock_answer_t *answer);
void ly_mock_tiktok_handle (const ly_mock_request_t *request, ly_mock_answer_t *answer);
void ly_mock_tiktok_fail (const ly_mock_request_t *request, const ly_mock_error_spec_t *spec,
                          ly_mock_answer_t *answer);
void ly_mock_apple_handle (const ly_mock_request_t *request, ly_mock_answer_t *answer);
void ly_mock_apple_fail (const ly_mock_request_t *request, const ly_mock_error_spec_t *spec,
                         ly_mock_answer_t *answer);
/*  Forgets how often each "notyet-" token was asked for; frees the counters. */
void ly_mock_apple_reset (void);
void ly_mock_model_handle (const ly_mock_request_t *request, ly_mock_answer_t *answer);
void ly_mock_model_fail (const ly_mock_request_t *request, const ly_mock_error_spec_t *spec,
                         ly_mock_answer_t *answer);

/*  Helpers the fakes share. */

/*  The header's value (name lower case), NULL when absent. Borrowed. */
const char *ly_mock_header (const ly_mock_request_t *request, const char *name);
/*  True when content_type's media type (before any ';') is media_type, any case. */
bool ly_mock_media_type_is (const char *content_type, const char *media_type);
/*  Fills out with len random characters from alphabet and a NUL (out: len + 1 bytes). */
void ly_mock_random_text (char *out, size_t len, const char *alphabet);
#define LY_MOCK_ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
/*  SHA-256 in hex: 64 hex digits. *upper (may be NULL) is set when any is upper case. */
bool ly_mock_is_sha256_hex (const char *text, bool *upper);
/*  An application/x-www-form-urlencoded body as an object of strings. Caller owns. */
json_t *ly_mock_form_decode (const char *body, size_t size);
/*  The body as tests read it back: parsed JSON for JSON, an object for a form (its
    "data" field parsed when it is JSON), else the text (invalid UTF-8 shown as '?');
    null when empty. Caller owns. */
json_t *ly_mock_body_value (const char *content_type, const char *body, size_t size);
/*  The text as a JSON string; when it is not valid UTF-8, every byte that is not part
    of a valid character (and NUL) is shown as '?'. Caller owns. */
json_t *ly_mock_text_value (const char *text, size_t size);
/*  The body parsed as JSON when it is, else NULL; an integer beyond int64 is read as a
    real, as the networks take it (ly_json_loadb_bigint). Caller owns. */
json_t *ly_mock_json_parse (const char *body, size_t size);

#endif
