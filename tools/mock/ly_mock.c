/*  ly_mock.c: what layers-mock's fakes share: answers, service names, form decoding,
    hash checks, random ids and the body shown to tests. */
#include "ly_prelude.h"
#include "ly_mock.h"
#include "ly_jsonr.h"        /* ly_jsonr_load, shared with the relay */
#include <sys/random.h>

static const char *s_service_names [LY_MOCK_SERVICES] = { "meta", "tiktok", "apple", "model" };

const char *
ly_mock_service_name (ly_mock_service_t service)
{
    return service < LY_MOCK_SERVICES? s_service_names [service]: "?";
}

int
ly_mock_service_parse (const char *name, bool any_ok, int *service)
{
    if (!name)
        return -1;
    if (any_ok && streq (name, "*")) {
        *service = LY_MOCK_ANY_SERVICE;
        return 0;
    }
    for (int i = 0; i < LY_MOCK_SERVICES; i++)
        if (streq (name, s_service_names [i])) {
            *service = i;
            return 0;
        }
    return -1;
}

void
ly_mock_answer_init (ly_mock_answer_t *answer)
{
    memset (answer, 0, sizeof *answer);
    answer->content_type = "application/json";
    answer->errors = json_array ();
    answer->warnings = json_array ();
}

void
ly_mock_answer_reset (ly_mock_answer_t *answer)
{
    free (answer->body);
    json_decref (answer->headers);
    json_decref (answer->errors);
    json_decref (answer->warnings);
    memset (answer, 0, sizeof *answer);
}

void
ly_mock_answer_json (ly_mock_answer_t *answer, unsigned status, json_t *body)
{
    free (answer->body);
    answer->status = status;
    answer->body = body? json_dumps (body, JSON_COMPACT | JSON_ENCODE_ANY): NULL;
    answer->content_type = "application/json; charset=UTF-8";
    json_decref (body);
}

static void
s_append (json_t *list, const char *format, va_list args)
{
    char text [1024];
    vsnprintf (text, sizeof text, format, args);
    json_t *value = json_string (text);
    if (!value)                 //  not UTF-8: it quoted client input
        value = json_string ("(message with invalid UTF-8)");
    json_array_append_new (list, value);
}

void
ly_mock_error (ly_mock_answer_t *answer, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    s_append (answer->errors, format, args);
    va_end (args);
}

void
ly_mock_warning (ly_mock_answer_t *answer, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    s_append (answer->warnings, format, args);
    va_end (args);
}

void
ly_mock_check_money (ly_mock_answer_t *answer, long index, const char *field,
                     const json_t *object)
{
    json_t *value = json_object_get (object, "value");
    if (value && !json_is_number (value))
        ly_mock_warning (answer, "data[%ld].%s.value: not a number", index, field);
    json_t *currency = json_object_get (object, "currency");
    if (currency && (!json_is_string (currency) || json_string_length (currency) != 3))
        ly_mock_warning (answer, "data[%ld].%s.currency: not an ISO 4217 code", index, field);
}

const char *
ly_mock_first_error (const ly_mock_answer_t *answer)
{
    const char *text = json_string_value (json_array_get (answer->errors, 0));
    return text? text: "";
}

const char *
ly_mock_header (const ly_mock_request_t *request, const char *name)
{
    return json_string_value (json_object_get (request->headers, name));
}

bool
ly_mock_media_type_is (const char *content_type, const char *media_type)
{
    if (!content_type)
        return false;
    while (*content_type == ' ' || *content_type == '\t')
        content_type++;
    size_t len = strcspn (content_type, "; \t");
    return len == strlen (media_type) && strncasecmp (content_type, media_type, len) == 0;
}

void
ly_mock_random_text (char *out, size_t len, const char *alphabet)
{
    uint8_t bytes [128];
    size_t alphabet_len = strlen (alphabet);
    size_t done = 0;
    while (done < len) {
        size_t chunk = len - done < sizeof bytes? len - done: sizeof bytes;
        if (getrandom (bytes, chunk, 0) != (ssize_t) chunk) {
            //  Unlikely; ids only need to differ, not to be secret.
            static uint64_t counter = 0x9e3779b97f4a7c15ULL;
            uint64_t x = __atomic_add_fetch (&counter, (uint64_t) ly_now_usec (), __ATOMIC_RELAXED);
            for (size_t i = 0; i < chunk; i++, x = x * 6364136223846793005ULL + 1)
                bytes [i] = (uint8_t) (x >> 56);
        }
        for (size_t i = 0; i < chunk; i++)
            out [done + i] = alphabet [bytes [i] % alphabet_len];
        done += chunk;
    }
    out [len] = 0;
}

bool
ly_mock_is_sha256_hex (const char *text, bool *upper)
{
    if (upper)
        *upper = false;
    if (!text || strlen (text) != 64)
        return false;
    for (const char *c = text; *c; c++) {
        if (!isxdigit ((unsigned char) *c))
            return false;
        if (upper && isupper ((unsigned char) *c))
            *upper = true;
    }
    return true;
}

static int
s_hex_value (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

//  Decodes one form component ('+' is a space, %XX a byte) into a new string.
static char *
s_form_unescape (const char *text, size_t len)
{
    char *out = malloc (len + 1);
    if (!out)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        if (text [i] == '+')
            out [j++] = ' ';
        else
        if (text [i] == '%' && i + 2 < len
        &&  s_hex_value (text [i + 1]) >= 0 && s_hex_value (text [i + 2]) >= 0) {
            out [j++] = (char) (s_hex_value (text [i + 1]) * 16 + s_hex_value (text [i + 2]));
            i += 2;
        }
        else
            out [j++] = text [i];
    }
    out [j] = 0;
    return out;
}

json_t *
ly_mock_form_decode (const char *body, size_t size)
{
    json_t *form = json_object ();
    size_t start = 0;
    while (start < size) {
        size_t end = start;
        while (end < size && body [end] != '&')
            end++;
        size_t eq = start;
        while (eq < end && body [eq] != '=')
            eq++;
        if (end > start) {
            char *name = s_form_unescape (body + start, eq - start);
            char *value = eq < end? s_form_unescape (body + eq + 1, end - eq - 1): strdup ("");
            if (name && value && *name) {
                json_t *string = json_string (value);
                if (string)
                    json_object_set_new (form, name, string);
            }
            free (name);
            free (value);
        }
        start = end + 1;
    }
    return form;
}

json_t *
ly_mock_json_parse (const char *body, size_t size)
{
    if (!body || size == 0)
        return NULL;
    return ly_jsonr_load (body, size, JSON_DECODE_ANY);
}

json_t *
ly_mock_text_value (const char *text, size_t size)
{
    json_t *value = json_stringn (text, size);
    if (value)
        return value;
    char *copy = malloc (size + 1);
    if (!copy)
        return json_null ();
    size_t i = 0;
    while (i < size) {
        unsigned char c = (unsigned char) text [i];
        size_t len = c < 0x80? 1: (c >> 5) == 0x6? 2: (c >> 4) == 0xe? 3: (c >> 3) == 0x1e? 4: 0;
        bool valid = len > 0 && i + len <= size && c != 0;
        for (size_t k = 1; valid && k < len; k++)
            valid = ((unsigned char) text [i + k] >> 6) == 0x2;
        if (valid && len > 1) {     //  overlong or surrogate: let jansson judge
            json_t *probe = json_stringn (text + i, len);
            valid = probe != NULL;
            json_decref (probe);
        }
        if (valid) {
            memcpy (copy + i, text + i, len);
            i += len;
        }
        else
            copy [i++] = '?';
    }
    value = json_stringn (copy, size);
    free (copy);
    return value? value: json_null ();
}

json_t *
ly_mock_body_value (const char *content_type, const char *body, size_t size)
{
    if (!body || size == 0)
        return json_null ();
    if (ly_mock_media_type_is (content_type, "application/x-www-form-urlencoded")) {
        json_t *form = ly_mock_form_decode (body, size);
        const char *data = json_string_value (json_object_get (form, "data"));
        json_t *parsed = data? ly_mock_json_parse (data, strlen (data)): NULL;
        if (parsed)
            json_object_set_new (form, "data", parsed);
        return form;
    }
    json_t *parsed = ly_mock_json_parse (body, size);
    return parsed? parsed: ly_mock_text_value (body, size);
}
