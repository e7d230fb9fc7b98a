/*  ly_apple.h: Apple's AdServices attribution API, as the relay speaks it: one POST
    of the event's attribution token as text/plain to LAYERS_ADSERVICES_URL, and the
    answer: 200 with the attribution record (attribution true or false, both final), 404
    while Apple does not know the token yet, 400 for a token it refuses. */
#ifndef LY_APPLE_H
#define LY_APPLE_H

#include "ly_delivery.h"

#define LY_APPLE_MAX_ATTEMPTS 3         /* 404 answers before we give up */
#define LY_APPLE_TOKEN_LIFE (24 * 3600) /* seconds a token is valid after the event */

/*  The fields of a 200 answer that go to the attributions table. */
typedef struct {
    bool attribution;
    bool has_org_id, has_campaign_id, has_ad_group_id, has_keyword_id, has_ad_id;
    int64_t org_id, campaign_id, ad_group_id, keyword_id, ad_id;
    char conversion_type [64];      /* "" when absent */
    char country_or_region [16];
    char claim_type [32];
    char click_date [40];           /* ISO 8601 as Apple sent it, "" when absent or odd */
    char *raw;                      /* the whole answer as a JSON object, owned */
} ly_apple_record_t;

void ly_apple_record_reset (ly_apple_record_t *record);

/*  Builds the request for the token to url. 0 / -1. */
int ly_apple_request (const char *url, const char *token, ly_request_t *request);

/*  Classifies an answer; for DELIVERED fills record (reset it afterwards). */
void ly_apple_classify (const ly_httpc_response_t *response, ly_verdict_t *verdict,
                        ly_apple_record_t *record);

#endif
