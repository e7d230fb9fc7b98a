/*  ly_apple.c: AdServices requests and answers (see ly_apple.h). The answer is
    validated field by field: a value of the wrong type is left out of the columns
    (the raw record keeps it), never trusted. */
#include "ly_apple.h"

void
ly_apple_record_reset (ly_apple_record_t *record)
{
    free (record->raw);
    memset (record, 0, sizeof *record);
}

int
ly_apple_request (const char *url, const char *token, ly_request_t *request)
{
    memset (request, 0, sizeof *request);
    request->url = strdup (url);
    request->headers = curl_slist_append (NULL, "Content-Type: text/plain");
    request->body = strdup (token);
    request->len = request->body? strlen (request->body): 0;
    if (!request->url || !request->headers || !request->body) {
        ly_request_reset (request);
        return -1;
    }
    return 0;
}

//  An id: a JSON integer, or a string of digits.
static bool
s_id (json_t *record, const char *name, int64_t *value)
{
    json_t *field = json_object_get (record, name);
    if (json_is_integer (field)) {
        *value = (int64_t) json_integer_value (field);
        return true;
    }
    const char *text = json_string_value (field);
    if (text && *text && strlen (text) < 19 && strspn (text, "0123456789") == strlen (text)) {
        *value = strtoll (text, NULL, 10);
        return true;
    }
    return false;
}

static void
s_string (json_t *record, const char *name, char *out, size_t size)
{
    const char *text = json_string_value (json_object_get (record, name));
    if (text && strlen (text) < size)
        snprintf (out, size, "%s", text);
}

//  Apple's clickDate, e.g. "2020-04-08T17:17Z": only characters of an ISO 8601 time.
static bool
s_is_iso_time (const char *text)
{
    size_t len = strlen (text);
    return len >= 10 && len < 40 && isdigit ((unsigned char) text [0]) && text [4] == '-'
        && strspn (text, "0123456789-:.TZ+") == len;
}

void
ly_apple_classify (const ly_httpc_response_t *response, ly_verdict_t *verdict,
                   ly_apple_record_t *record)
{
    memset (record, 0, sizeof *record);
    if (ly_verdict_transport (verdict, response))
        return;
    if (response->status == 404) {
        verdict->kind = LY_VERDICT_NOT_YET;
        verdict->reason = "not found";
        return;
    }
    if (response->status == 400) {
        verdict->kind = LY_VERDICT_DEAD;
        verdict->reason = "invalid token";
        return;
    }
    if (response->status != 200) {
        ly_verdict_http (verdict, response->status);
        return;
    }
    json_t *answer = json_loadb (response->body, response->body_len, 0, NULL);
    json_t *attribution = json_object_get (answer, "attribution");
    if (!json_is_object (answer) || !json_is_boolean (attribution)) {
        verdict->kind = LY_VERDICT_RETRY;
        verdict->reason = "invalid response";
        json_decref (answer);
        return;
    }
    verdict->kind = LY_VERDICT_DELIVERED;
    record->attribution = json_is_true (attribution);
    record->has_org_id = s_id (answer, "orgId", &record->org_id);
    record->has_campaign_id = s_id (answer, "campaignId", &record->campaign_id);
    record->has_ad_group_id = s_id (answer, "adGroupId", &record->ad_group_id);
    record->has_keyword_id = s_id (answer, "keywordId", &record->keyword_id);
    record->has_ad_id = s_id (answer, "adId", &record->ad_id);
    s_string (answer, "conversionType", record->conversion_type, sizeof record->conversion_type);
    s_string (answer, "countryOrRegion", record->country_or_region, sizeof record->country_or_region);
    s_string (answer, "claimType", record->claim_type, sizeof record->claim_type);
    s_string (answer, "clickDate", record->click_date, sizeof record->click_date);
    if (*record->click_date && !s_is_iso_time (record->click_date))
        *record->click_date = 0;
    record->raw = json_dumps (answer, JSON_COMPACT);
    json_decref (answer);
    if (!record->raw) {
        verdict->kind = LY_VERDICT_RETRY;
        verdict->reason = "invalid response";
    }
}
