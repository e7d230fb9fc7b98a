/*  ly_tiktok.c: TikTok Events API 2.0 payloads, event names and answer classification
    (see ly_tiktok.h). TikTok answers HTTP 200 for most errors: the body's `code` is
    what counts. */
#include "ly_tiktok.h"
#include "ly_jsonr.h"
#include <openssl/crypto.h>

#define S_TRACK_PATH "/open_api/v1.3/event/track/"

//  Our event names and TikTok's standard app events.
static const char *s_default_map [][2] = {
    { "purchase",           "Purchase" },
    { "sign_up",            "Registration" },
    { "add_to_cart",        "AddToCart" },
    { "install",            "InstallApp" },
    { "app_open",           "LaunchAPP" },
    { "checkout",           "Checkout" },
    { "add_payment_info",   "AddPaymentInfo" },
    { "view_content",       "ViewContent" },
    { "search",             "Search" },
    { "subscribe",          "Subscribe" },
    { "complete_tutorial",  "CompleteTutorial" },
    { "achieve_level",      "AchieveLevel" },
    { "unlock_achievement", "UnlockAchievement" },
    { "spend_credits",      "SpendCredits" },
    { "start_trial",        "StartTrial" },
    { "add_to_wishlist",    "AddToWishlist" },
    { "login",              "Login" },
    { "rate",               "Rate" },
    { "generate_lead",      "GenerateLead" },
    { "in_app_ad_click",    "InAppADClick" },
    { "in_app_ad_impr",     "InAppADImpr" },
    { "create_group",       "CreateGroup" },
    { "join_group",         "JoinGroup" },
    { "create_role",        "CreateRole" },
    { "loan_application",   "LoanApplication" },
    { "loan_approval",      "LoanApproval" },
    { "loan_disbursal",     "LoanDisbursal" },
};
#define S_DEFAULT_MAP (sizeof s_default_map / sizeof s_default_map [0])

//  TikTok `code` values and what they mean for our rows. Codes not listed: 4xxxx are
//  taken as a refusal of the data, anything else as transient.
typedef struct {
    long low, high;
    ly_verdict_kind_t kind;
    const char *reason;
} s_code_rule_t;

static const s_code_rule_t s_code_rules [] = {
    { 0, 0,         LY_VERDICT_DELIVERED, NULL },
    { 40100, 40100, LY_VERDICT_THROTTLE,  "throttled" },    /* too many requests */
    { 40016, 40016, LY_VERDICT_THROTTLE,  "throttled" },    /* request frequency limit */
    { 40001, 40001, LY_VERDICT_DEAD,      "permission" },   /* no permission */
    { 40101, 40101, LY_VERDICT_DEAD,      "auth" },         /* invalid app id or secret */
    { 40102, 40102, LY_VERDICT_DEAD,      "auth" },         /* access token expired */
    { 40104, 40104, LY_VERDICT_DEAD,      "auth" },         /* access token empty */
    { 40105, 40105, LY_VERDICT_DEAD,      "auth" },         /* access token incorrect or revoked */
    { 40106, 40107, LY_VERDICT_DEAD,      "auth" },         /* authorization invalid */
    { 40002, 40002, LY_VERDICT_REJECTED,  "rejected" },     /* invalid parameters */
    { 40000, 49999, LY_VERDICT_REJECTED,  "rejected" },     /* other request errors */
    { 50000, 59999, LY_VERDICT_RETRY,     "server error" }, /* internal errors */
};
#define S_CODE_RULES (sizeof s_code_rules / sizeof s_code_rules [0])

int
ly_tiktok_settings_check (const json_t *config, char *reason, size_t size)
{
    const char *app_id = json_string_value (json_object_get (config, "app_id"));
    if (!app_id || !*app_id || strlen (app_id) > 64) {
        snprintf (reason, size, "config: app_id must be the TikTok App ID");
        return -1;
    }
    json_t *map = json_object_get (config, "event_map");
    if (map && !json_is_null (map)) {
        if (!json_is_object (map)) {
            snprintf (reason, size, "config: event_map must be an object");
            return -1;
        }
        const char *key;
        json_t *value;
        json_object_foreach (map, key, value)
            if (!json_is_string (value) && !json_is_null (value)) {
                snprintf (reason, size, "config: event_map values must be strings");
                return -1;
            }
    }
    json_t *test_code = json_object_get (config, "test_event_code");
    if (test_code && !json_is_null (test_code) && !json_is_string (test_code)) {
        snprintf (reason, size, "config: test_event_code must be a string");
        return -1;
    }
    return 0;
}

const char *
ly_tiktok_event_name (const json_t *config, const char *name)
{
    json_t *map = json_object_get (config, "event_map");
    json_t *mapped = json_is_object (map)? json_object_get (map, name): NULL;
    if (mapped) {
        const char *text = json_string_value (mapped);
        return text && *text? text: NULL;
    }
    for (size_t i = 0; i < S_DEFAULT_MAP; i++)
        if (streq (s_default_map [i][0], name))
            return s_default_map [i][1];
    return NULL;
}

//  TikTok's properties from ours: content_ids becomes contents, ttclid goes to "ad".
//  Most events have neither and their text is copied as PostgreSQL gave it; the others
//  are parsed and rewritten. Text that cannot be parsed is copied too, not lost.
static void
s_properties (ly_jsonw_t *out, const char *properties)
{
    if (!properties)
        return;
    json_t *tree = NULL;
    if (strstr (properties, "\"content_ids\"") || strstr (properties, "\"ttclid\""))
        tree = ly_jsonr_load (properties, strlen (properties), 0);
    if (!json_is_object (tree)) {
        json_decref (tree);
        ly_jsonw_key (out, "properties");
        ly_jsonw_raw (out, properties, strlen (properties));
        return;
    }
    json_t *ids = json_object_get (tree, "content_ids");
    if (json_is_array (ids) && !json_object_get (tree, "contents")) {
        json_t *contents = json_array ();
        size_t index;
        json_t *id;
        json_array_foreach (ids, index, id)
            if (json_is_string (id) || json_is_integer (id))
                json_array_append_new (contents, json_pack ("{s:O}", "content_id", id));
        json_object_set_new (tree, "contents", contents);
        json_object_del (tree, "content_ids");
    }
    json_t *ttclid = json_incref (json_object_get (tree, "ttclid"));
    json_object_del (tree, "ttclid");
    char *text = json_object_size (tree)? json_dumps (tree, JSON_COMPACT): NULL;
    if (text) {
        ly_jsonw_key (out, "properties");
        ly_jsonw_raw (out, text, strlen (text));
        free (text);
    }
    char number [32];               //  an SDK that sent the click id as a JSON number
    if (json_is_integer (ttclid))
        snprintf (number, sizeof number, "%" JSON_INTEGER_FORMAT, json_integer_value (ttclid));
    const char *callback = json_is_string (ttclid)? json_string_value (ttclid)
                         : json_is_integer (ttclid)? number: NULL;
    if (callback) {
        ly_jsonw_key (out, "ad");
        ly_jsonw_open (out, '{');
        ly_jsonw_member_string (out, "callback", callback);
        ly_jsonw_close (out, '}');
    }
    json_decref (ttclid);
    json_decref (tree);
}

//  user.att_status. App Tracking Transparency exists from iOS 14 on: TikTok wants
//  NOT_APPLICABLE on Android and an older iOS, whatever the SDK said. Elsewhere the
//  event's consent_att; NULL (not sent) when the event does not say.
static const char *
s_att_status (const ly_delivery_t *delivery)
{
    static const char *statuses [][2] = {
        { "authorized",     "AUTHORIZED" },
        { "denied",         "DENIED" },
        { "not_determined", "NOT_DETERMINED" },
        { "restricted",     "RESTRICTED" },
    };
    ly_platform_t platform = ly_delivery_platform (delivery);
    const char *version = delivery->device_os_version;
    if (platform == LY_PLATFORM_ANDROID
    ||  (platform == LY_PLATFORM_IOS && version && isdigit ((unsigned char) *version)
         && strtol (version, NULL, 10) < 14))
        return "NOT_APPLICABLE";
    for (size_t i = 0; delivery->consent_att && i < sizeof statuses / sizeof statuses [0]; i++)
        if (streq (delivery->consent_att, statuses [i][0]))
            return statuses [i][1];
    return NULL;
}

//  app.app_id: the App Store id of an iOS app (the project's app_store_id, which the
//  relay's claim puts in the TikTok layer's config), the package name of an Android
//  app. An iOS event of a project without app_store_id sends its package (bundle id)
//  all the same.
static const char *
s_app_id (const ly_delivery_t *delivery, const json_t *config)
{
    const char *store_id = json_string_value (json_object_get (config, "app_store_id"));
    if (ly_delivery_platform (delivery) == LY_PLATFORM_IOS && store_id && *store_id)
        return store_id;
    return delivery->app_package;
}

void
ly_tiktok_event (const ly_delivery_t *delivery, const char *tiktok_name, const json_t *config,
                 ly_jsonw_t *out)
{
    ly_jsonw_open (out, '{');
    ly_jsonw_member_string (out, "event", tiktok_name);
    ly_jsonw_member_int (out, "event_time", delivery->event_time);
    ly_jsonw_member_string (out, "event_id", delivery->event_id);

    ly_jsonw_key (out, "user");
    ly_jsonw_open (out, '{');
    if (delivery->email_sha256)
        ly_jsonw_member_string (out, "email", delivery->email_sha256);
    if (delivery->phone_e164_sha256)
        ly_jsonw_member_string (out, "phone", delivery->phone_e164_sha256);
    if (delivery->user_id) {
        char hex [65];
        ly_delivery_sha256 (delivery->user_id, hex);
        ly_jsonw_member_string (out, "external_id", hex);
    }
    const char *att_status = s_att_status (delivery);
    if (att_status)
        ly_jsonw_member_string (out, "att_status", att_status);
    ly_jsonw_close (out, '}');

    ly_jsonw_key (out, "app");
    ly_jsonw_open (out, '{');
    const char *app_id = s_app_id (delivery, config);
    if (app_id)
        ly_jsonw_member_string (out, "app_id", app_id);
    const char *app_name = json_string_value (json_object_get (config, "app_name"));
    if (app_name && *app_name)
        ly_jsonw_member_string (out, "app_name", app_name);
    if (delivery->app_version)
        ly_jsonw_member_string (out, "app_version", delivery->app_version);
    ly_jsonw_close (out, '}');

    s_properties (out, delivery->properties);
    ly_jsonw_close (out, '}');
}

int
ly_tiktok_request (const char *base, const json_t *config, const char *token,
                   ly_delivery_t **deliveries, size_t count, ly_request_t *request)
{
    memset (request, 0, sizeof *request);
    const char *app_id = json_string_value (json_object_get (config, "app_id"));
    const char *test_code = json_string_value (json_object_get (config, "test_event_code"));
    ly_jsonw_t body;
    ly_jsonw_init (&body, 1024 + count * 640);
    ly_jsonw_open (&body, '{');
    ly_jsonw_member_string (&body, "event_source", "app");
    ly_jsonw_member_string (&body, "event_source_id", app_id? app_id: "");
    ly_jsonw_key (&body, "data");
    ly_jsonw_open (&body, '[');
    for (size_t i = 0; i < count; i++) {
        const char *name = ly_tiktok_event_name (config, deliveries [i]->name);
        if (name)
            ly_tiktok_event (deliveries [i], name, config, &body);
    }
    ly_jsonw_close (&body, ']');
    if (test_code && *test_code)
        ly_jsonw_member_string (&body, "test_event_code", test_code);
    ly_jsonw_close (&body, '}');
    request->body = ly_jsonw_take (&body, &request->len);
    size_t len = strlen (base);
    while (len > 0 && base [len - 1] == '/')
        len--;
    if (asprintf (&request->url, "%.*s" S_TRACK_PATH, (int) len, base) < 0)
        request->url = NULL;
    char *header = NULL;
    if (asprintf (&header, "Access-Token: %s", token) >= 0) {
        request->headers = curl_slist_append (NULL, header);
        OPENSSL_cleanse (header, strlen (header));
        free (header);
    }
    if (request->headers)
        request->headers = curl_slist_append (request->headers, "Content-Type: application/json");
    if (!request->url || !request->headers || !request->body) {
        ly_request_reset (request);
        return -1;
    }
    return 0;
}

void
ly_tiktok_classify (const ly_httpc_response_t *response, ly_verdict_t *verdict)
{
    if (ly_verdict_transport (verdict, response))
        return;
    json_t *answer = json_loadb (response->body, response->body_len, 0, NULL);
    json_t *code = json_object_get (answer, "code");
    const char *request_id = json_string_value (json_object_get (answer, "request_id"));
    if (request_id)
        ly_verdict_trace (verdict, request_id);
    if (response->status != 200 || !json_is_integer (code)) {
        //  A gateway or proxy answered, or TikTok without its envelope.
        ly_verdict_http (verdict, response->status);
        if (json_is_integer (code))
            verdict->code = (long) json_integer_value (code);
        json_decref (answer);
        return;
    }
    verdict->code = (long) json_integer_value (code);
    verdict->kind = LY_VERDICT_RETRY;
    verdict->reason = "server error";
    for (size_t i = 0; i < S_CODE_RULES; i++)
        if (verdict->code >= s_code_rules [i].low && verdict->code <= s_code_rules [i].high) {
            verdict->kind = s_code_rules [i].kind;
            verdict->reason = s_code_rules [i].reason;
            break;
        }
    json_decref (answer);
}
