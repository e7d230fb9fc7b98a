/*  ly_meta.h: Meta's Conversions API for app events, as the relay speaks it: the
    layer's settings, the checks an event must pass before it may be sent, the request
    (POST {LAYERS_META_URL}/{version}/{dataset_id}/events, JSON body with data,
    test_event_code and access_token) and the classification of Graph API answers. */
#ifndef LY_META_H
#define LY_META_H

#include "ly_delivery.h"
#include "ly_jsonw.h"

#define LY_META_MAX_EVENTS 1000         /* events per request, Meta's limit */
#define LY_META_MAX_AGE (7 * 24 * 3600) /* event_time at most this old, in seconds */
#define LY_META_MAX_AHEAD 300           /* nor this far ahead */

/*  Checks the layer's config (dataset_id digits, api_version like v21.0 when set,
    test_event_code a string when set). 0 / -1 with the reason in reason. */
int ly_meta_settings_check (const json_t *config, char *reason, size_t size);

/*  Checks that an event can be sent (event_time within Meta's window, a device OS
    that gives app_data its extinfo version). 0 / -1 with the reason. */
int ly_meta_event_check (const ly_delivery_t *delivery, time_t now, char *reason, size_t size);

/*  Writes one element of the request's data array. */
void ly_meta_event (const ly_delivery_t *delivery, ly_jsonw_t *out);

/*  Builds the request for count deliveries (each passed ly_meta_event_check) with the
    layer's config (checked), the access token, base (LAYERS_META_URL) and the default
    API version. 0 / -1 (out of memory). */
int ly_meta_request (const char *base, const char *default_version, const json_t *config,
                     const char *token, ly_delivery_t **deliveries, size_t count,
                     ly_request_t *request);

/*  Classifies an answer (see docs/relay.md for the table). */
void ly_meta_classify (const ly_httpc_response_t *response, ly_verdict_t *verdict);

#endif
