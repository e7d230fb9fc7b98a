/*  fuzz_api_parse.c: libFuzzer target for the partner API's parsers of client text:
    RFC 3339 times, base64url cursors, UUIDs, content types. Any input: no crash, and
    what decodes re-encodes to the same bytes. */
#include "ly_prelude.h"
#include "ly_apiv1_private.h"
#include "ly_jsonr.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *text = (char *) malloc (size + 1);
    memcpy (text, data, size);
    text [size] = 0;
    int64_t usec;
    (void) ly_apiv1_rfc3339 (text, &usec);
    if (ly_is_uuid (text))
        assert (strlen (text) == 36);
    ly_jsonr_type_t type = ly_jsonr_content_type (text);
    assert (type == LY_JSONR_JSON || type == LY_JSONR_NOT_JSON || type == LY_JSONR_NOT_UTF8);
    (void) ly_apiv1_chars (text);
    size_t len = 0;
    char *decoded = ly_apiv1_base64url_decode (text, &len);
    if (decoded) {
        char *again = ly_apiv1_base64url (decoded, len);
        size_t len2 = 0;
        char *twice = again? ly_apiv1_base64url_decode (again, &len2): NULL;
        assert (twice && len2 == len && memcmp (twice, decoded, len) == 0);
        free (twice);
        free (again);
        free (decoded);
    }
    char *encoded = ly_apiv1_base64url (data, size);
    if (encoded) {
        size_t back_len = 0;
        char *back = ly_apiv1_base64url_decode (encoded, &back_len);
        assert (back && back_len == size && memcmp (back, data, size) == 0);
        free (back);
        free (encoded);
    }
    free (text);
    return 0;
}
