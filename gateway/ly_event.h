/*  ly_event.h: validation and scrubbing of one SDK event, as the ingest actor does it.
    The event arrives as a msgpack map (the SDK's JSON object, converted by the gateway)
    together with the request's context (client IP, User-Agent, project); it leaves as
    one line of PostgreSQL COPY text for the store, with email and phone hashed, the IP
    turned into a geo region and the User-Agent into device fields. Raw values never
    leave this module. A line is guaranteed to be accepted by PostgreSQL: valid UTF-8, no
    NUL, every length and format within the sdk_events constraints. */
#ifndef LY_EVENT_H
#define LY_EVENT_H

#include "ly_prelude.h"
#include "ly_uap.h"
#include "ly_geoip.h"

/*  The staging columns, in COPY order (without the store's leading "pos" column).
    event_time and received_at are epoch microseconds (the store converts them). */
extern const char *ly_event_copy_columns;

typedef struct {
    const char *org_id;             /* uuid text */
    const char *project_id;         /* uuid text */
    int64_t received_usec;          /* gateway receive time, epoch usec */
    const char *client_ip;          /* raw, may be NULL */
    const char *user_agent;         /* raw, may be NULL */
    size_t user_agent_len;
    const char *default_country_code;   /* project's calling code ("1", "44"), may be NULL */
    ly_uap_t *uap;                  /* may be NULL: no UA parsing */
    ly_geoip_t *geoip;              /* may be NULL: no geo-IP */
    int64_t max_future_usec;        /* reject event times further ahead (default 5 min) */
    int64_t max_past_usec;          /* reject event times older (default 7 days) */
} ly_event_ctx_t;

typedef struct {
    unsigned email_invalid;         /* fields dropped because invalid */
    unsigned phone_invalid;
} ly_event_stats_t;

/*  Validates and scrubs one event. On success appends one COPY text line (ending in \n)
    to *line (realloc'd; *line_len updated) and writes the event_id into event_id
    (NUL-terminated, at most 128 bytes + NUL) and returns LY_OK. When the event is
    refused returns LY_INVALID with a one-line reason for the client in err
    (e.g. "name must match [a-z0-9_]{1,64}"), appends nothing. Invalid email or phone
    drop that field only (counted in stats). Never asserts on input. */
ly_result_t ly_event_scrub (const msgpack_object *event, const ly_event_ctx_t *ctx,
                            char **line, size_t *line_len, char event_id [129],
                            ly_event_stats_t *stats, char *err, size_t errlen);

#endif
