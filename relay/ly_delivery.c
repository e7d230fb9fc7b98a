/*  ly_delivery.c: claimed rows, requests and verdicts, shared by the relay actor and
    its destination modules (see ly_delivery.h). */
#include "ly_delivery.h"
#include "ly_utf8.h"
#include "ly_crypto.h"
#include <openssl/crypto.h>

static const char *s_destination_names [LY_DEST_COUNT] = {
    [LY_DEST_META] = "meta",
    [LY_DEST_TIKTOK] = "tiktok",
    [LY_DEST_APPLE] = "apple_search_ads",
};

const char *
ly_destination_name (ly_destination_t destination)
{
    return destination < LY_DEST_COUNT? s_destination_names [destination]: "?";
}

int
ly_destination_parse (const char *name, ly_destination_t *destination)
{
    for (int i = 0; name && i < LY_DEST_COUNT; i++)
        if (streq (name, s_destination_names [i])) {
            *destination = (ly_destination_t) i;
            return 0;
        }
    return -1;
}

//  The order here is the order ly_delivery_new reads.
const char *ly_delivery_columns =
    "c.delivery_id, c.destination, c.attempts,"
    " extract (epoch FROM now () - c.created_at)::float8,"
    " c.org_id, c.project_id, c.event_id, e.seq IS NOT NULL, e.name,"
    " floor (extract (epoch FROM e.event_time))::bigint,"
    " extract (epoch FROM now () - e.received_at)::float8,"
    " e.user_id, e.email_sha256, e.phone_sha256, e.phone_e164_sha256, e.properties::text,"
    " e.device_os, e.device_os_version, e.device_model, e.device_brand, e.device_locale,"
    " e.device_timezone, e.app_version, e.app_build, e.app_package, e.geo_country,"
    " e.geo_region, e.attribution_token, e.consent_ads, e.consent_att";

enum {
    S_ID, S_DESTINATION, S_ATTEMPTS, S_AGE, S_ORG_ID, S_PROJECT_ID, S_EVENT_ID, S_HAS_EVENT,
    S_NAME, S_EVENT_TIME, S_RECEIVED_AGE, S_USER_ID, S_EMAIL, S_PHONE, S_PHONE_E164,
    S_PROPERTIES, S_DEVICE_OS, S_DEVICE_OS_VERSION, S_DEVICE_MODEL, S_DEVICE_BRAND,
    S_DEVICE_LOCALE, S_DEVICE_TIMEZONE, S_APP_VERSION, S_APP_BUILD, S_APP_PACKAGE,
    S_GEO_COUNTRY, S_GEO_REGION, S_ATTRIBUTION_TOKEN, S_CONSENT_ADS, S_CONSENT_ATT,
    S_COLUMNS
};
_Static_assert (S_COLUMNS == LY_DELIVERY_COLUMNS, "ly_delivery_columns and LY_DELIVERY_COLUMNS differ");

static char *
s_text (const PGresult *res, int row, int column)
{
    if (PQgetisnull (res, row, column))
        return NULL;
    return strdup (PQgetvalue (res, row, column));
}

ly_delivery_t *
ly_delivery_new (const PGresult *res, int row)
{
    if (PQnfields (res) < S_COLUMNS || row >= PQntuples (res))
        return NULL;
    ly_delivery_t *self = (ly_delivery_t *) calloc (1, sizeof (ly_delivery_t));
    if (!self)
        return NULL;
    self->id = strtoll (PQgetvalue (res, row, S_ID), NULL, 10);
    if (ly_destination_parse (PQgetvalue (res, row, S_DESTINATION), &self->destination)) {
        free (self);
        return NULL;
    }
    self->attempts = atoi (PQgetvalue (res, row, S_ATTEMPTS));
    self->age = strtod (PQgetvalue (res, row, S_AGE), NULL);
    snprintf (self->org_id, sizeof self->org_id, "%s", PQgetvalue (res, row, S_ORG_ID));
    snprintf (self->project_id, sizeof self->project_id, "%s", PQgetvalue (res, row, S_PROJECT_ID));
    self->event_id = s_text (res, row, S_EVENT_ID);
    self->has_event = streq (PQgetvalue (res, row, S_HAS_EVENT), "t");
    self->consent_ads = -1;
    if (self->has_event) {
        self->name = s_text (res, row, S_NAME);
        self->event_time = strtoll (PQgetvalue (res, row, S_EVENT_TIME), NULL, 10);
        self->received_age = strtod (PQgetvalue (res, row, S_RECEIVED_AGE), NULL);
        self->user_id = s_text (res, row, S_USER_ID);
        self->email_sha256 = s_text (res, row, S_EMAIL);
        self->phone_sha256 = s_text (res, row, S_PHONE);
        self->phone_e164_sha256 = s_text (res, row, S_PHONE_E164);
        const char *properties = PQgetvalue (res, row, S_PROPERTIES);
        if (*properties == '{' && !streq (properties, "{}")
        &&  !(self->properties = strdup (properties))) {
            ly_delivery_destroy (&self);
            return NULL;
        }
        self->device_os = s_text (res, row, S_DEVICE_OS);
        self->device_os_version = s_text (res, row, S_DEVICE_OS_VERSION);
        self->device_model = s_text (res, row, S_DEVICE_MODEL);
        self->device_brand = s_text (res, row, S_DEVICE_BRAND);
        self->device_locale = s_text (res, row, S_DEVICE_LOCALE);
        self->device_timezone = s_text (res, row, S_DEVICE_TIMEZONE);
        self->app_version = s_text (res, row, S_APP_VERSION);
        self->app_build = s_text (res, row, S_APP_BUILD);
        self->app_package = s_text (res, row, S_APP_PACKAGE);
        self->geo_country = s_text (res, row, S_GEO_COUNTRY);
        self->geo_region = s_text (res, row, S_GEO_REGION);
        self->attribution_token = s_text (res, row, S_ATTRIBUTION_TOKEN);
        if (!PQgetisnull (res, row, S_CONSENT_ADS))
            self->consent_ads = streq (PQgetvalue (res, row, S_CONSENT_ADS), "t");
        self->consent_att = s_text (res, row, S_CONSENT_ATT);
    }
    if (!self->event_id || (self->has_event && !self->name)) {
        ly_delivery_destroy (&self);
        return NULL;
    }
    return self;
}

void
ly_delivery_destroy (ly_delivery_t **self_p)
{
    ly_delivery_t *self = *self_p;
    if (self) {
        free (self->event_id);
        free (self->name);
        free (self->user_id);
        free (self->email_sha256);
        free (self->phone_sha256);
        free (self->phone_e164_sha256);
        free (self->properties);
        free (self->device_os);
        free (self->device_os_version);
        free (self->device_model);
        free (self->device_brand);
        free (self->device_locale);
        free (self->device_timezone);
        free (self->app_version);
        free (self->app_build);
        free (self->app_package);
        free (self->geo_country);
        free (self->geo_region);
        if (self->attribution_token)
            OPENSSL_cleanse (self->attribution_token, strlen (self->attribution_token));
        free (self->attribution_token);
        free (self->consent_att);
        free (self);
        *self_p = NULL;
    }
}

void
ly_request_reset (ly_request_t *request)
{
    free (request->url);
    for (struct curl_slist *header = request->headers; header; header = header->next)
        OPENSSL_cleanse (header->data, strlen (header->data));
    curl_slist_free_all (request->headers);
    if (request->body)
        OPENSSL_cleanse (request->body, request->len);
    free (request->body);
    memset (request, 0, sizeof *request);
}

const char *
ly_verdict_name (ly_verdict_kind_t kind)
{
    switch (kind) {
        case LY_VERDICT_DELIVERED: return "delivered";
        case LY_VERDICT_RETRY:     return "retry";
        case LY_VERDICT_THROTTLE:  return "throttle";
        case LY_VERDICT_REJECTED:  return "rejected";
        case LY_VERDICT_DEAD:      return "dead";
        case LY_VERDICT_NOT_YET:   return "not yet";
    }
    return "?";
}

void
ly_verdict_trace (ly_verdict_t *verdict, const char *trace_id)
{
    size_t used = 0;
    for (const char *c = trace_id; c && *c && used < sizeof verdict->trace_id - 1; c++)
        if (*c > 0x20 && *c < 0x7F && *c != '\\' && *c != '"')
            verdict->trace_id [used++] = *c;
    verdict->trace_id [used] = 0;
}

bool
ly_verdict_transport (ly_verdict_t *verdict, const ly_httpc_response_t *response)
{
    memset (verdict, 0, sizeof *verdict);
    verdict->retry_after = response->retry_after;
    if (response->result == CURLE_OK && response->status > 0)
        return false;
    verdict->kind = LY_VERDICT_RETRY;
    verdict->reason = response->result == CURLE_OPERATION_TIMEDOUT? "timeout": "network";
    return true;
}

void
ly_verdict_http (ly_verdict_t *verdict, long status)
{
    if (status == 429) {
        verdict->kind = LY_VERDICT_THROTTLE;
        verdict->reason = "throttled";
    }
    else
    if (status == 408 || status >= 500 || (status >= 200 && status < 300)) {
        verdict->kind = LY_VERDICT_RETRY;
        verdict->reason = status < 300? "invalid response": "server error";
    }
    else
    if (status == 401 || status == 403) {
        verdict->kind = LY_VERDICT_DEAD;
        verdict->reason = "auth";
    }
    else
    if (status == 404) {
        verdict->kind = LY_VERDICT_DEAD;
        verdict->reason = "config";
    }
    else {
        verdict->kind = LY_VERDICT_REJECTED;
        verdict->reason = "rejected";
    }
}

static int
s_hex_digit (unsigned char c)
{
    return c >= '0' && c <= '9'? c - '0': c >= 'a' && c <= 'f'? c - 'a' + 10
         : c >= 'A' && c <= 'F'? c - 'A' + 10: -1;
}

//  The value of the n hex digits at text (0 to 255 fits the secret's ASCII), or -1
static int
s_hex_value (const unsigned char *text, size_t n)
{
    int value = 0;
    for (size_t i = 0; i < n; i++) {
        int digit = s_hex_digit (text [i]);
        if (digit < 0)
            return -1;
        value = value * 16 + digit;
    }
    return value;
}

//  The length of secret as it appears at text [at] (of len bytes): as it is, or with
//  characters escaped the ways an echo may write them (JSON's "\/" and "\u002f", URL's
//  "%2F"); 0 when it does not.
static size_t
s_secret_at (const unsigned char *text, size_t len, size_t at, const char *secret)
{
    size_t start = at;
    for (const unsigned char *c = (const unsigned char *) secret; *c; c++) {
        if (at < len && text [at] == *c)
            at += 1;
        else
        if (at + 2 < len && text [at] == '%' && s_hex_value (text + at + 1, 2) == *c)
            at += 3;
        else
        if (at + 1 < len && text [at] == '\\' && text [at + 1] == '/' && *c == '/')
            at += 2;
        else
        if (at + 5 < len && text [at] == '\\' && text [at + 1] == 'u'
        &&  s_hex_value (text + at + 2, 4) == *c)
            at += 6;
        else
            return 0;
    }
    return at - start;
}

char *
ly_response_text (const char *body, size_t len, const char *secret)
{
    static const char redacted [] = "[redacted]";
    size_t secret_len = secret? strlen (secret): 0;
    char *out = (char *) malloc (LY_RESPONSE_MAX + 1);
    if (!out)
        return NULL;
    size_t used = 0;
    const unsigned char *text = (const unsigned char *) (body? body: "");
    size_t at = 0;
    while (at < len) {
        size_t echo = secret_len? s_secret_at (text, len, at, secret): 0;
        if (echo) {
            if (used + sizeof redacted - 1 > LY_RESPONSE_MAX)
                break;
            memcpy (out + used, redacted, sizeof redacted - 1);
            used += sizeof redacted - 1;
            at += echo;
            continue;
        }
        size_t char_len = ly_utf8_sequence (text + at, len - at);
        const char *piece = (const char *) text + at;
        char replacement = 0;
        if (char_len == 0) {
            replacement = '?';
            char_len = 1;
        }
        else
        if (char_len == 1 && text [at] < 0x20 && text [at] != '\n' && text [at] != '\t')
            replacement = ' ';
        else
        if (char_len == 1 && text [at] == 0x7F)
            replacement = ' ';
        size_t out_len = replacement? 1: char_len;
        if (used + out_len > LY_RESPONSE_MAX)
            break;
        if (replacement)
            out [used] = replacement;
        else
            memcpy (out + used, piece, char_len);
        used += out_len;
        at += char_len;
    }
    out [used] = 0;
    return out;
}

void
ly_delivery_sha256 (const char *text, char hex [65])
{
    ly_sha256_hex (text, strlen (text), hex);
}

ly_platform_t
ly_delivery_platform (const ly_delivery_t *delivery)
{
    const char *os = delivery->device_os;
    if (!os)
        return LY_PLATFORM_OTHER;
    if (strcasecmp (os, "ios") == 0 || strcasecmp (os, "ipados") == 0
    ||  strcasecmp (os, "iphone os") == 0)
        return LY_PLATFORM_IOS;
    if (strcasecmp (os, "android") == 0)
        return LY_PLATFORM_ANDROID;
    return LY_PLATFORM_OTHER;
}
