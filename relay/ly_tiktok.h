/*  ly_tiktok.h: TikTok's Events API 2.0 for app events, as the relay speaks it: the
    layer's settings, our event names mapped to TikTok's standard events (a default
    map and the project's event_map over it), the request (POST
    {LAYERS_TIKTOK_URL}/open_api/v1.3/event/track/ with the Access-Token header) and the
    classification of TikTok's answers, whose `code` says more than the HTTP status. */
#ifndef LY_TIKTOK_H
#define LY_TIKTOK_H

#include "ly_delivery.h"
#include "ly_jsonw.h"

#define LY_TIKTOK_MAX_EVENTS 1000       /* events per request, TikTok's limit */

/*  Checks the layer's config (app_id a non-empty string, event_map an object of
    strings, test_event_code a string, app_store_id 1 to 20 digits). 0 / -1 with the
    reason. */
int ly_tiktok_settings_check (const json_t *config, char *reason, size_t size);

/*  TikTok's name for our event name: the project's event_map first (a null or empty
    value there means "do not send"), then the default map. NULL when unmapped.
    Borrowed from config or static. */
const char *ly_tiktok_event_name (const json_t *config, const char *name);

/*  Writes one element of the request's data array, for an event that has a TikTok
    name. */
void ly_tiktok_event (const ly_delivery_t *delivery, const char *tiktok_name,
                      const json_t *config, ly_jsonw_t *out);

/*  Builds the request for count deliveries (each mapped) with the layer's config
    (checked), the access token and base (LAYERS_TIKTOK_URL). 0 / -1. */
int ly_tiktok_request (const char *base, const json_t *config, const char *token,
                       ly_delivery_t **deliveries, size_t count, ly_request_t *request);

/*  Classifies an answer (see docs/relay.md for the table). */
void ly_tiktok_classify (const ly_httpc_response_t *response, ly_verdict_t *verdict);

#endif
