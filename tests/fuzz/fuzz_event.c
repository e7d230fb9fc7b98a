/*  fuzz_event.c: libFuzzer target for ly_event_scrub. The input is read as one msgpack
    object; a map is scrubbed with a fixed context (no User-Agent parser, no geo-IP).
    A refusal must give a reason and append nothing; an accepted event must give one
    line PostgreSQL's COPY takes: valid UTF-8, no NUL, exactly 24 unescaped tabs, one
    final newline, only known escapes, and properties that parse as a JSON object. */
#include "ly_prelude.h"
#include "ly_event.h"
#include "ly_testsupport.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

//  True when no container in the msgpack data claims more elements than bytes remain.
//  msgpack-c allocates a container's elements before reading them, so a few bytes could
//  ask for gigabytes; the frame codec (ly_msg_decode) refuses such frames before the
//  ingest actor sees them, and this does the same for the fuzzer.
static bool
s_plausible (const uint8_t *p, size_t size)
{
    const uint8_t *end = p + size;
    uint64_t pending = 1;
    while (pending) {
        if (p >= end)
            return false;
        uint8_t lead = *p++;
        pending--;
        uint64_t items = 0, skip = 0;
        size_t width = 0;                   //  bytes of a length that follows
        if (lead <= 0x7f || lead >= 0xe0 || lead == 0xc0 || lead == 0xc2 || lead == 0xc3)
            ;
        else if (lead <= 0x8f) items = 2 * (uint64_t) (lead & 0x0f);
        else if (lead <= 0x9f) items = lead & 0x0f;
        else if (lead <= 0xbf) skip = lead & 0x1f;
        else if (lead == 0xc4 || lead == 0xd9) width = 1;
        else if (lead == 0xc5 || lead == 0xda) width = 2;
        else if (lead == 0xc6 || lead == 0xdb) width = 4;
        else if (lead == 0xc7) { width = 1; skip = 1; }
        else if (lead == 0xc8) { width = 2; skip = 1; }
        else if (lead == 0xc9) { width = 4; skip = 1; }
        else if (lead == 0xca) skip = 4;
        else if (lead == 0xcb) skip = 8;
        else if (lead >= 0xcc && lead <= 0xcf) skip = (uint64_t) 1 << (lead - 0xcc);
        else if (lead >= 0xd0 && lead <= 0xd3) skip = (uint64_t) 1 << (lead - 0xd0);
        else if (lead >= 0xd4 && lead <= 0xd8) skip = 1 + ((uint64_t) 1 << (lead - 0xd4));
        else if (lead == 0xdc || lead == 0xde) width = 2;
        else if (lead == 0xdd || lead == 0xdf) width = 4;
        else
            return false;                   //  0xc1: never used
        if (width) {
            if ((size_t) (end - p) < width)
                return false;
            uint64_t length = 0;
            for (size_t i = 0; i < width; i++)
                length = length << 8 | *p++;
            if (lead >= 0xdc)
                items = lead >= 0xde? 2 * length: length;
            else
                skip += length;
        }
        if (skip > (uint64_t) (end - p) || items > (uint64_t) (end - p))
            return false;
        p += skip;
        pending += items;
    }
    return true;
}

//  Checks the line's shape and returns the unescaped properties column (caller frees).
static char *
s_check_line (const char *line, size_t len)
{
    if (len == 0 || line [len - 1] != '\n' || memchr (line, '\n', len - 1))
        abort ();                       //  one line, one final newline
    if (memchr (line, 0, len) || !ly_test_utf8_valid (line, len))
        abort ();
    int tabs = 0;
    size_t column_start = 0;
    char *properties = NULL;
    for (size_t i = 0; i < len; i++) {
        if (line [i] == '\\') {
            if (i + 1 >= len || !strchr ("\\tnrN", line [i + 1]))
                abort ();               //  only the escapes we mean
            i++;
            continue;
        }
        if (line [i] != '\t' && line [i] != '\n')
            continue;
        if (tabs == 10) {               //  properties: never NULL, unescape it
            properties = (char *) malloc (i - column_start + 1);
            size_t out = 0;
            for (size_t j = column_start; j < i; j++) {
                char c = line [j];
                if (c == '\\') {
                    c = line [++j];
                    c = c == 't'? '\t': c == 'n'? '\n': c == 'r'? '\r': c;
                }
                properties [out++] = c;
            }
            properties [out] = 0;
        }
        if (line [i] == '\t')
            tabs++;
        column_start = i + 1;
    }
    if (tabs != 24 || !properties)
        abort ();
    return properties;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    size_t offset = 0;
    if (!s_plausible (data, size)
    ||  msgpack_unpack_next (&unpacked, (const char *) data, size, &offset) != MSGPACK_UNPACK_SUCCESS
    ||  unpacked.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy (&unpacked);
        return 0;
    }
    ly_event_ctx_t ctx = {
        .org_id = "0b7e4f6a-3c1d-4e5f-9a8b-1c2d3e4f5a6b",
        .project_id = "5f0e1d2c-3b4a-4958-8776-655443322110",
        .received_usec = INT64_C(1700000000000000),
        .client_ip = "81.2.69.160",     //  unused without geo-IP
        .default_country_code = "1",
    };
    char *line = NULL;
    size_t line_len = 0;
    char event_id [129];
    char reason [256] = "";
    ly_event_stats_t stats = { 0 };
    ly_result_t rc = ly_event_scrub (&unpacked.data, &ctx, &line, &line_len, event_id,
                                     &stats, reason, sizeof reason);
    if (rc == LY_OK) {
        char *properties = s_check_line (line, line_len);
        json_t *json = json_loads (properties, JSON_DECODE_INT_AS_REAL, NULL);
        if (!json_is_object (json))
            abort ();
        json_decref (json);
        free (properties);
        size_t id_len = strlen (event_id);
        if (id_len < 1 || id_len > 128)
            abort ();
    }
    else
    if (rc != LY_INVALID || !reason [0] || line_len != 0)
        abort ();
    free (line);
    msgpack_unpacked_destroy (&unpacked);
    return 0;
}
