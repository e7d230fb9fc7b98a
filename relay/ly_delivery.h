/*  ly_delivery.h: what the relay's parts share. A delivery is one claimed
    relay_deliveries row joined with its sdk_events row; a request is what a destination
    module builds from deliveries; a verdict is what its classification table makes of
    the network's answer, and decides what happens to the request's rows. */
#ifndef LY_DELIVERY_H
#define LY_DELIVERY_H

#include "ly_prelude.h"
#include "ly_httpc.h"

typedef enum {
    LY_DEST_META,
    LY_DEST_TIKTOK,
    LY_DEST_APPLE,
    LY_DEST_COUNT
} ly_destination_t;

/*  "meta", "tiktok", "apple_search_ads" (relay_deliveries.destination). */
const char *ly_destination_name (ly_destination_t destination);
/*  0 / -1 for a name that is not a destination. */
int ly_destination_parse (const char *name, ly_destination_t *destination);

/*  One claimed row and its event. Strings are NULL when the column is NULL. */
typedef struct {
    int64_t id;                 /* delivery_id */
    ly_destination_t destination;
    int attempts;               /* failed sends so far */
    double age;                 /* seconds since the row was created (retry window) */
    char org_id [40];           /* uuid text */
    char project_id [40];       /* uuid text */
    char *event_id;             /* owned */
    bool has_event;             /* the sdk_events row exists */
    char *name;                 /* event name, owned */
    int64_t event_time;         /* epoch seconds */
    double received_age;        /* seconds since the event was received */
    char *user_id;              /* owned, the rest too */
    char *email_sha256;
    char *phone_sha256;         /* digits with country code (Meta) */
    char *phone_e164_sha256;    /* '+' and digits (TikTok) */
    char *properties;           /* the properties object as JSON text (PostgreSQL's),
                                   owned; NULL when there are none */
    char *device_os;
    char *device_os_version;
    char *device_model;
    char *device_brand;
    char *device_locale;
    char *device_timezone;
    char *app_version;
    char *app_build;
    char *app_package;
    char *geo_country;
    char *geo_region;
    char *attribution_token;
    int consent_ads;            /* -1 unknown, 0 refused, 1 given */
    char *consent_att;          /* authorized, denied, not_determined, restricted */
} ly_delivery_t;

/*  The select list ly_delivery_new reads, over the claimed relay_deliveries rows
    (alias c) LEFT JOINed with sdk_events (alias e): LY_DELIVERY_COLUMNS columns, which
    may be followed by others. */
extern const char *ly_delivery_columns;
#define LY_DELIVERY_COLUMNS 30

/*  The delivery in row of a result selected with ly_delivery_columns first; NULL when
    the row is unusable. Caller owns. */
ly_delivery_t *ly_delivery_new (const PGresult *res, int row);
void ly_delivery_destroy (ly_delivery_t **self_p);

/*  A request a destination module built; every part owned. */
typedef struct {
    char *url;
    struct curl_slist *headers;     /* may carry the access token */
    char *body;                     /* may carry the access token */
    size_t len;
} ly_request_t;

/*  Wipes and frees the parts still held (after a failed build or instead of
    sending). */
void ly_request_reset (ly_request_t *request);

/*  What the relay does with the rows of a request after an answer. */
typedef enum {
    LY_VERDICT_DELIVERED,   /* the network took every event of the request */
    LY_VERDICT_RETRY,       /* transient: the same events again later, with backoff */
    LY_VERDICT_THROTTLE,    /* rate limited: pause the destination for the project, then retry */
    LY_VERDICT_REJECTED,    /* the data was refused: split the request; a lone event is dead */
    LY_VERDICT_DEAD,        /* permanent for every event (credentials, permissions, settings) */
    LY_VERDICT_NOT_YET      /* Apple 404: no attribution known yet, ask again in a while */
} ly_verdict_kind_t;

typedef struct {
    ly_verdict_kind_t kind;
    const char *reason;     /* the class, for relay_deliveries.reason (static) */
    long code;              /* the network's error code (Graph code, TikTok code), 0: none */
    long subcode;           /* Graph error_subcode, 0: none */
    long retry_after;       /* seconds the network asked us to wait, -1: not said */
    char trace_id [80];     /* fbtrace_id (Meta) or request_id (TikTok), "" when none */
} ly_verdict_t;

const char *ly_verdict_name (ly_verdict_kind_t kind);

/*  Sets verdict->trace_id from a network's id, keeping printable ASCII only (it is
    stored and logged). */
void ly_verdict_trace (ly_verdict_t *verdict, const char *trace_id);

/*  Starts a verdict from the transport: a transfer without an answer (timeout,
    refused or dropped connection) is RETRY and true is returned; else false and the
    destination's table decides. */
bool ly_verdict_transport (ly_verdict_t *verdict, const ly_httpc_response_t *response);
/*  The classification by HTTP status alone, for answers a destination cannot read:
    408 and 5xx retry, 429 throttles, 401/403 dead (auth), 404 dead (config), other
    4xx rejected, 2xx without a readable body retry. */
void ly_verdict_http (ly_verdict_t *verdict, long status);

#define LY_RESPONSE_MAX 2048    /* bytes of an answer kept in last_response */

/*  The answer as it may be stored in last_response: valid UTF-8 without control
    characters but newline and tab, at most LY_RESPONSE_MAX bytes, and every occurrence
    of secret (when not NULL or empty), as it is or escaped for JSON or a URL, replaced
    by "[redacted]". Caller owns. */
char *ly_response_text (const char *body, size_t len, const char *secret);

/*  sha256 hex of text into hex (65 bytes). */
void ly_delivery_sha256 (const char *text, char hex [65]);

/*  The device's platform, from device_os as SDKs name it ("iOS", "iPadOS", "iPhone OS",
    "Android", any case). */
typedef enum {
    LY_PLATFORM_OTHER,          /* unknown, or an OS the networks take no app events from */
    LY_PLATFORM_IOS,            /* iOS and iPadOS */
    LY_PLATFORM_ANDROID
} ly_platform_t;

ly_platform_t ly_delivery_platform (const ly_delivery_t *delivery);

#endif
