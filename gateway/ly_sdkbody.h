/*  ly_sdkbody.h: the body of POST /l/events, from HTTP bytes to one msgpack array of
    events. Checks the content type and encoding, inflates gzip within a limit, parses
    the JSON (one event, or {"events": [...]}) and packs every event. An event the
    gateway can already tell is unusable (not an object, nested too deep for a frame,
    or, in a batch whose body does not parse whole, not parseable itself) is packed as
    nil and listed with its reason, so the others go on. Pure functions:
    no sockets, no globals; fuzzed by tests/fuzz/fuzz_sdkbody.c. */
#ifndef LY_SDKBODY_H
#define LY_SDKBODY_H

#include "ly_prelude.h"

#define LY_SDKBODY_MAX_BYTES   (1024 * 1024)   /* body, and inflated body */
#define LY_SDKBODY_MAX_EVENTS  500
#define LY_SDKBODY_MAX_DEPTH   18              /* nesting of one event, counting itself */

typedef struct {
    void *events;           /* msgpack array of events (maps, or nil), owned (free) */
    size_t events_size;
    void *rejected;         /* msgpack array of [index, reason], owned (free) */
    size_t rejected_size;
    size_t count;           /* events in the body */
} ly_sdkbody_t;

typedef struct {
    unsigned status;        /* HTTP status: 400, 413 or 415 */
    const char *code;       /* error code for the JSON error body */
    char message [256];     /* one sentence for the client */
} ly_sdkbody_error_t;

/*  Parses a body. content_type and content_encoding may be NULL (header absent).
    0 with *out filled (caller frees with ly_sdkbody_free), or -1 with *error. */
int ly_sdkbody_parse (const char *content_type, const char *content_encoding,
                      const void *body, size_t size, ly_sdkbody_t *out,
                      ly_sdkbody_error_t *error);
void ly_sdkbody_free (ly_sdkbody_t *body);

/*  The checks of ly_sdkbody_parse that need only the headers (content type, encoding),
    for an answer before the body is sent. 0, or -1 with *error (415). */
int ly_sdkbody_check_headers (const char *content_type, const char *content_encoding,
                              ly_sdkbody_error_t *error);

/*  The two readers of the JSON text behind ly_sdkbody_parse (the body inflated, without
    its byte order mark). ly_sdkbody_parse_json is the reference: jansson, every message.
    ly_sdkbody_parse_fast writes the msgpack in one pass for the common bodies (one event,
    or {"events": [...]} alone, all events objects within the limits, strictly valid);
    -1 means it cannot tell (anything else, errors included) and the reference decides.
    Where the fast one answers, both give the same events. Exposed for the tests. */
int ly_sdkbody_parse_json (const char *text, size_t size, ly_sdkbody_t *out,
                           ly_sdkbody_error_t *error);
int ly_sdkbody_parse_fast (const char *text, size_t size, ly_sdkbody_t *out);

/*  Packs a JSON value as msgpack, the way the gateway packs each event (integers as
    int64, reals as double). */
void ly_sdkbody_pack_json (msgpack_packer *pk, json_t *json);

#endif
