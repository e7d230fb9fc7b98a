/*  fuzz_msg.c: libFuzzer target for the msgpack envelope codec. Any bytes may be
    refused, but never crash; what decodes must re-encode (plain and redacted), convert
    to JSON, and decode again to the same encoding. It includes ly_msg.c itself, so the
    codec is built with the fuzzer's coverage instrumentation, plus one extra type with
    every field type and personal-data class (the production schema has no OBJ or
    personal-data field yet); link it without ly_msg.o. */
#define LY_MSG_SELFTEST_TYPES \
    [60] = { "FUZZ", { \
        { "u",      LY_FT_UINT, LY_PII_NONE }, \
        { "i",      LY_FT_INT,  LY_PII_NONE }, \
        { "b",      LY_FT_BOOL, LY_PII_NONE }, \
        { "s",      LY_FT_STR,  LY_PII_NONE }, \
        { "bin",    LY_FT_BIN,  LY_PII_NONE }, \
        { "o",      LY_FT_OBJ,  LY_PII_NONE }, \
        { "email",  LY_FT_STR,  LY_PII_RAW }, \
        { "photo",  LY_FT_BIN,  LY_PII_RAW }, \
        { "device", LY_FT_OBJ,  LY_PII_RAW }, \
        { "props",  LY_FT_OBJ,  LY_PII_NESTED }, \
        { "age",    LY_FT_UINT, LY_PII_RAW } } },
#include "../../actors/ly_msg.c"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

//  Decodes data, which must succeed, and checks that it re-encodes to exactly data.
static void
s_check_stable (const void *data, size_t size, bool redact)
{
    char err [256] = "";
    ly_msg_t *msg = ly_msg_decode (data, size, err, sizeof err);
    if (!msg) {
        fprintf (stderr, "re-encoded frame refused: %s\n", err);
        abort ();
    }
    void *again;
    size_t again_size;
    if (ly_msg_encode (msg, redact, &again, &again_size) != 0
    ||  again_size != size || memcmp (again, data, size) != 0) {
        fprintf (stderr, "re-encoding is not stable (redact=%d)\n", redact);
        abort ();
    }
    free (again);
    ly_msg_destroy (&msg);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char err [256] = "";
    ly_msg_t *msg = ly_msg_decode (data, size, err, sizeof err);
    if (!msg) {
        if (!err [0])
            abort ();           //  a refusal always says why
        return 0;
    }
    //  Every field the schema declares is readable.
    int type = ly_msg_type (msg);
    for (size_t index = 0; index < ly_msg_field_count (type); index++) {
        int field = (int) index;
        size_t bin_size;
        switch (ly_msg_field (type, index)->type) {
            case LY_FT_UINT: (void) ly_msg_uint (msg, field); break;
            case LY_FT_INT:  (void) ly_msg_int (msg, field); break;
            case LY_FT_BOOL: (void) ly_msg_bool (msg, field); break;
            case LY_FT_STR:
                if (ly_msg_has (msg, field)
                &&  ly_msg_str (msg, field) [ly_msg_str_len (msg, field)] != 0)
                    abort ();
                break;
            case LY_FT_BIN:  (void) ly_msg_bin (msg, field, &bin_size); break;
            case LY_FT_OBJ:
                if (ly_msg_has (msg, field)) {
                    json_t *json = ly_msgpack_to_json (ly_msg_obj (msg, field), false);
                    if (!json)
                        abort ();
                    json_decref (json);
                }
                break;
        }
    }
    //  The whole frame, extra fields included, converts to JSON.
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    size_t offset = 0;
    if (msgpack_unpack_next (&unpacked, (const char *) data, size, &offset)
        != MSGPACK_UNPACK_SUCCESS || offset != size)
        abort ();
    for (int redact = 0; redact <= 1; redact++) {
        json_t *json = ly_msgpack_to_json (&unpacked.data, redact);
        char *text = json? json_dumps (json, JSON_COMPACT): NULL;
        if (!text)
            abort ();
        free (text);
        json_decref (json);
    }
    msgpack_unpacked_destroy (&unpacked);

    json_t *json = ly_msg_to_json (msg);
    char *text = json? json_dumps (json, JSON_COMPACT): NULL;
    if (!text)
        abort ();
    free (text);
    json_decref (json);

    //  The plain re-encoding is never larger than the input (minimal integer and
    //  length forms, extra fields dropped), so it always fits the frame limit. The
    //  redacted one may grow ("[redacted]" is 11 bytes), by at most about 3.5 times.
    for (int redact = 0; redact <= 1; redact++) {
        void *encoded;
        size_t encoded_size;
        if (ly_msg_encode (msg, redact, &encoded, &encoded_size) != 0) {
            if (!redact || size * 4 + 256 <= LY_MSG_MAX_FRAME)
                abort ();
            continue;
        }
        if (!redact && encoded_size > size)
            abort ();
        s_check_stable (encoded, encoded_size, redact);
        zframe_t *frame = ly_msg_encode_frame (msg, redact);
        if (!frame || zframe_size (frame) != encoded_size
        ||  memcmp (zframe_data (frame), encoded, encoded_size) != 0)
            abort ();
        zframe_destroy (&frame);
        free (encoded);
    }
    ly_msg_destroy (&msg);
    return 0;
}
