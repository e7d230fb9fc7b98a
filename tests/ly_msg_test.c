/*  ly_msg_test.c: self-test of the msgpack envelope codec: round trips of every message
    type, redaction of personal data, JSON output, and refusal of malformed frames.
    It includes ly_msg.c itself, with two test-only message types carrying personal
    data (the production schema has none yet), so it is built without ly_msg.o. */
#define LY_MSG_SELFTEST_TYPES \
    [S_TEST_ALL] = { "TEST_ALL", { \
        { "u",      LY_FT_UINT, LY_PII_NONE }, \
        { "i",      LY_FT_INT,  LY_PII_NONE }, \
        { "b",      LY_FT_BOOL, LY_PII_NONE }, \
        { "s",      LY_FT_STR,  LY_PII_NONE }, \
        { "bin",    LY_FT_BIN,  LY_PII_NONE }, \
        { "o",      LY_FT_OBJ,  LY_PII_NONE } } }, \
    [S_TEST_PII] = { "TEST_PII", { \
        { "email",  LY_FT_STR,  LY_PII_RAW }, \
        { "photo",  LY_FT_BIN,  LY_PII_RAW }, \
        { "device", LY_FT_OBJ,  LY_PII_RAW }, \
        { "props",  LY_FT_OBJ,  LY_PII_NESTED }, \
        { "age",    LY_FT_UINT, LY_PII_RAW }, \
        { "event",  LY_FT_STR,  LY_PII_NONE }, \
        { "plain",  LY_FT_OBJ,  LY_PII_NONE } } },
enum { S_TEST_ALL = 60, S_TEST_PII = 61 };
enum { T_U, T_I, T_B, T_S, T_BIN, T_O };
enum { P_EMAIL, P_PHOTO, P_DEVICE, P_PROPS, P_AGE, P_EVENT, P_PLAIN };

#include "ly_msg.c"

_Static_assert ((int) LY_MSG_TYPE_MAX < (int) S_TEST_ALL, "test types must not collide with real ones");

static int s_passed;
static int s_failed;

#define CHECK(cond) do { \
    if (cond) s_passed++; \
    else { s_failed++; fprintf (stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

//  --------------------------------------------------------------------------
//  Helpers

typedef struct {
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
} s_buf_t;

static void
s_buf_init (s_buf_t *buf)
{
    msgpack_sbuffer_init (&buf->sbuf);
    msgpack_packer_init (&buf->pk, &buf->sbuf, msgpack_sbuffer_write);
}

static void
s_buf_str (s_buf_t *buf, const char *text)
{
    msgpack_pack_str_with_body (&buf->pk, text, strlen (text));
}

//  Decodes and expects failure with a reason.
static void
s_expect_refused (const void *data, size_t size, const char *what)
{
    char err [256];
    memset (err, 'x', sizeof err);
    ly_msg_t *msg = ly_msg_decode (data, size, err, sizeof err);
    if (msg || err [0] == 0 || !memchr (err, 0, sizeof err))
        fprintf (stderr, "  refusal expected: %s\n", what);
    CHECK (msg == NULL);
    CHECK (err [0] != 0 && memchr (err, 0, sizeof err));
    ly_msg_destroy (&msg);
}

static ly_msg_t *
s_expect_decoded (const void *data, size_t size, const char *what)
{
    char err [256] = "";
    ly_msg_t *msg = ly_msg_decode (data, size, err, sizeof err);
    if (!msg)
        fprintf (stderr, "  decode expected: %s: %s\n", what, err);
    CHECK (msg != NULL);
    return msg;
}

//  Every prefix of a valid frame is refused.
static void
s_check_prefixes (const void *data, size_t size)
{
    for (size_t length = 0; length < size; length++)
        s_expect_refused (data, length, "prefix");
}

static bool
s_contains (const void *data, size_t size, const char *text)
{
    return memmem (data, size, text, strlen (text)) != NULL;
}

//  Packs one msgpack object into a fresh buffer, to compare values by bytes.
static void
s_pack_obj (const msgpack_object *obj, msgpack_sbuffer *sbuf)
{
    msgpack_sbuffer_init (sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_object (&pk, *obj);
}

static bool
s_obj_equal (const msgpack_object *a, const msgpack_object *b)
{
    if (!a || !b)
        return a == b;
    msgpack_sbuffer one, two;
    s_pack_obj (a, &one);
    s_pack_obj (b, &two);
    bool equal = one.size == two.size && memcmp (one.data, two.data, one.size) == 0;
    msgpack_sbuffer_destroy (&one);
    msgpack_sbuffer_destroy (&two);
    return equal;
}

//  True when both messages carry the same type and field values.
static bool
s_msg_equal (const ly_msg_t *a, const ly_msg_t *b)
{
    if (ly_msg_type (a) != ly_msg_type (b))
        return false;
    int type = ly_msg_type (a);
    for (size_t index = 0; index < ly_msg_field_count (type); index++) {
        int field = (int) index;
        if (ly_msg_has (a, field) != ly_msg_has (b, field))
            return false;
        size_t size_a, size_b;
        const void *bin_a, *bin_b;
        switch (ly_msg_field (type, index)->type) {
            case LY_FT_UINT:
                if (ly_msg_uint (a, field) != ly_msg_uint (b, field))
                    return false;
                break;
            case LY_FT_INT:
                if (ly_msg_int (a, field) != ly_msg_int (b, field))
                    return false;
                break;
            case LY_FT_BOOL:
                if (ly_msg_bool (a, field) != ly_msg_bool (b, field))
                    return false;
                break;
            case LY_FT_STR:
                if (ly_msg_str_len (a, field) != ly_msg_str_len (b, field))
                    return false;
                if (ly_msg_has (a, field)
                &&  memcmp (ly_msg_str (a, field), ly_msg_str (b, field),
                            ly_msg_str_len (a, field) + 1) != 0)
                    return false;
                break;
            case LY_FT_BIN:
                bin_a = ly_msg_bin (a, field, &size_a);
                bin_b = ly_msg_bin (b, field, &size_b);
                if (size_a != size_b || (size_a && memcmp (bin_a, bin_b, size_a)))
                    return false;
                break;
            case LY_FT_OBJ:
                if (!s_obj_equal (ly_msg_obj (a, field), ly_msg_obj (b, field)))
                    return false;
                break;
        }
    }
    return true;
}

//  Sets field to a value of its type, varied by seed.
static void
s_set_sample (ly_msg_t *msg, int field, int seed)
{
    int type = ly_msg_type (msg);
    char text [64];
    switch (ly_msg_field (type, field)->type) {
        case LY_FT_UINT:
            ly_msg_set_uint (msg, field, seed % 2? UINT64_MAX - (uint64_t) seed: (uint64_t) seed);
            break;
        case LY_FT_INT:
            ly_msg_set_int (msg, field, seed % 2? INT64_MIN + seed: -seed);
            break;
        case LY_FT_BOOL:
            ly_msg_set_bool (msg, field, seed % 2);
            break;
        case LY_FT_STR:
            snprintf (text, sizeof text, "value %d of %s", seed, ly_msg_field (type, field)->name);
            ly_msg_set_str (msg, field, text);
            break;
        case LY_FT_BIN: {
            uint8_t bytes [] = { 0x01, 0x00, 0xff, (uint8_t) seed };
            ly_msg_set_bin (msg, field, bytes, sizeof bytes);
            break;
        }
        case LY_FT_OBJ: {
            s_buf_t buf;
            s_buf_init (&buf);
            msgpack_pack_map (&buf.pk, 2);
            s_buf_str (&buf, "n");
            msgpack_pack_int (&buf.pk, seed);
            s_buf_str (&buf, "list");
            msgpack_pack_array (&buf.pk, 3);
            msgpack_pack_double (&buf.pk, 1.5);
            msgpack_pack_nil (&buf.pk);
            msgpack_pack_float (&buf.pk, 2.5f);
            ly_msg_set_obj (msg, field, buf.sbuf.data, buf.sbuf.size);
            msgpack_sbuffer_destroy (&buf.sbuf);
            break;
        }
    }
}

//  Encodes msg, decodes it, checks the copy equals msg and encodes identically.
static void
s_check_round_trip (const ly_msg_t *msg)
{
    void *data, *again;
    size_t size, again_size;
    CHECK (ly_msg_encode (msg, false, &data, &size) == 0);
    ly_msg_t *copy = s_expect_decoded (data, size, ly_msg_type_name (ly_msg_type (msg)));
    if (copy) {
        CHECK (s_msg_equal (msg, copy));
        CHECK (ly_msg_encode (copy, false, &again, &again_size) == 0);
        CHECK (again_size == size && memcmp (again, data, size) == 0);
        free (again);
    }
    //  The frame form carries the same bytes.
    zframe_t *frame = ly_msg_encode_frame (msg, false);
    CHECK (frame && zframe_size (frame) == size && memcmp (zframe_data (frame), data, size) == 0);
    zframe_destroy (&frame);
    //  The message owns its copy of the frame.
    memset (data, 0xc1, size);
    if (copy) {
        CHECK (s_msg_equal (msg, copy));
        json_t *json = ly_msg_to_json (copy);
        CHECK (json != NULL);
        json_decref (json);
    }
    ly_msg_destroy (&copy);
    free (data);
}


//  --------------------------------------------------------------------------
//  Schema

static void
s_test_schema (void)
{
    for (int type = 1; type < LY_MSG_TYPE_MAX; type++) {
        const char *name = ly_msg_type_name (type);
        CHECK (name != NULL);
        CHECK (ly_msg_type_by_name (name) == type);
        size_t count = ly_msg_field_count (type);
        CHECK (count >= 1 && count <= LY_MSG_MAX_FIELDS);
        CHECK (ly_msg_field (type, count) == NULL);
        for (size_t index = 0; index < count; index++) {
            const ly_field_t *field = ly_msg_field (type, index);
            CHECK (field && field->name && *field->name);
            //  Redacted frames must still decode: raw personal data is a str, bin or
            //  obj, and only an obj has keys to look into.
            CHECK (field->pii != LY_PII_RAW || field->type == LY_FT_STR
                   || field->type == LY_FT_BIN || field->type == LY_FT_OBJ);
            CHECK (field->pii != LY_PII_NESTED || field->type == LY_FT_OBJ);
            for (size_t other = 0; other < index; other++)
                CHECK (strcmp (ly_msg_field (type, other)->name, field->name) != 0);
        }
    }
    CHECK (ly_msg_type_name (0) == NULL);
    CHECK (ly_msg_type_name (-1) == NULL);
    CHECK (ly_msg_type_name (LY_MSG_TYPE_MAX) == NULL);
    CHECK (ly_msg_type_name (100000) == NULL);
    CHECK (ly_msg_type_by_name ("NO_SUCH_TYPE") == -1);
    CHECK (ly_msg_type_by_name (NULL) == -1);
    CHECK (ly_msg_type_by_name ("ping") == LY_MSG_PING);
    CHECK (ly_msg_field_count (0) == 0);
    CHECK (ly_msg_field (0, 0) == NULL);

    //  The documented schema of the current types.
    CHECK (streq (ly_msg_type_name (LY_MSG_PING), "PING"));
    CHECK (ly_msg_field_count (LY_MSG_PING) == 2);
    CHECK (streq (ly_msg_field (LY_MSG_PING, LY_PING_REQUEST_ID)->name, "request_id"));
    CHECK (ly_msg_field (LY_MSG_PING, LY_PING_REQUEST_ID)->type == LY_FT_UINT);
    CHECK (streq (ly_msg_field (LY_MSG_PING, LY_PING_SENDER)->name, "sender"));
    CHECK (ly_msg_field (LY_MSG_PING, LY_PING_SENDER)->type == LY_FT_STR);
    CHECK (ly_msg_field_count (LY_MSG_PONG) == 4);
    CHECK (streq (ly_msg_field (LY_MSG_PONG, LY_PONG_DB_OK)->name, "db_ok"));
    CHECK (ly_msg_field (LY_MSG_PONG, LY_PONG_DB_OK)->type == LY_FT_BOOL);
    CHECK (streq (ly_msg_field (LY_MSG_PONG, LY_PONG_DETAIL)->name, "detail"));
    CHECK (ly_msg_field_count (LY_MSG_ERROR) == 3);
    CHECK (streq (ly_msg_field (LY_MSG_ERROR, LY_ERROR_CODE)->name, "code"));
    CHECK (streq (ly_msg_field (LY_MSG_ERROR, LY_ERROR_MESSAGE)->name, "message"));
}


//  --------------------------------------------------------------------------
//  Round trips

static void
s_test_wire_bytes (void)
{
    //  [1, 1, 42, "gw"]: the frame layout is part of the protocol.
    ly_msg_t *msg = ly_msg_new (LY_MSG_PING);
    ly_msg_set_uint (msg, LY_PING_REQUEST_ID, 42);
    ly_msg_set_str (msg, LY_PING_SENDER, "gw");
    void *data;
    size_t size;
    CHECK (ly_msg_encode (msg, false, &data, &size) == 0);
    static const uint8_t expected [] = { 0x94, 0x01, 0x01, 0x2a, 0xa2, 'g', 'w' };
    CHECK (size == sizeof expected && memcmp (data, expected, size) == 0);
    free (data);

    //  Absent fields are nil.
    ly_msg_set_str (msg, LY_PING_SENDER, NULL);
    CHECK (!ly_msg_has (msg, LY_PING_SENDER));
    CHECK (ly_msg_encode (msg, false, &data, &size) == 0);
    static const uint8_t with_nil [] = { 0x94, 0x01, 0x01, 0x2a, 0xc0 };
    CHECK (size == sizeof with_nil && memcmp (data, with_nil, size) == 0);
    free (data);
    ly_msg_destroy (&msg);
    CHECK (msg == NULL);
    ly_msg_destroy (&msg);          //  NULL is fine
}

static void
s_test_named_round_trips (void)
{
    ly_msg_t *ping = ly_msg_new (LY_MSG_PING);
    ly_msg_set_uint (ping, LY_PING_REQUEST_ID, 7);
    ly_msg_set_str (ping, LY_PING_SENDER, "gateway");
    void *data;
    size_t size;
    CHECK (ly_msg_encode (ping, false, &data, &size) == 0);
    ly_msg_t *copy = s_expect_decoded (data, size, "PING");
    if (copy) {
        CHECK (ly_msg_type (copy) == LY_MSG_PING);
        CHECK (ly_msg_uint (copy, LY_PING_REQUEST_ID) == 7);
        CHECK (streq (ly_msg_str (copy, LY_PING_SENDER), "gateway"));
        CHECK (ly_msg_str_len (copy, LY_PING_SENDER) == 7);
    }
    ly_msg_destroy (&copy);
    free (data);
    ly_msg_destroy (&ping);

    ly_msg_t *pong = ly_msg_new (LY_MSG_PONG);
    ly_msg_set_uint (pong, LY_PONG_REQUEST_ID, UINT64_MAX);
    ly_msg_set_str (pong, LY_PONG_SENDER, "store");
    ly_msg_set_bool (pong, LY_PONG_DB_OK, false);
    ly_msg_set_str (pong, LY_PONG_DETAIL, "database is starting up");
    CHECK (ly_msg_encode (pong, false, &data, &size) == 0);
    copy = s_expect_decoded (data, size, "PONG");
    if (copy) {
        CHECK (ly_msg_uint (copy, LY_PONG_REQUEST_ID) == UINT64_MAX);
        CHECK (ly_msg_has (copy, LY_PONG_DB_OK));         //  false, yet present
        CHECK (ly_msg_bool (copy, LY_PONG_DB_OK) == false);
        CHECK (streq (ly_msg_str (copy, LY_PONG_DETAIL), "database is starting up"));
    }
    ly_msg_destroy (&copy);
    free (data);
    ly_msg_destroy (&pong);

    ly_msg_t *error = ly_msg_new (LY_MSG_ERROR);
    ly_msg_set_uint (error, LY_ERROR_REQUEST_ID, 0);
    ly_msg_set_str (error, LY_ERROR_CODE, "unavailable");
    CHECK (ly_msg_encode (error, false, &data, &size) == 0);
    copy = s_expect_decoded (data, size, "ERROR");
    if (copy) {
        CHECK (ly_msg_has (copy, LY_ERROR_REQUEST_ID));
        CHECK (ly_msg_uint (copy, LY_ERROR_REQUEST_ID) == 0);
        CHECK (streq (ly_msg_str (copy, LY_ERROR_CODE), "unavailable"));
        CHECK (!ly_msg_has (copy, LY_ERROR_MESSAGE));
        CHECK (ly_msg_str (copy, LY_ERROR_MESSAGE) == NULL);
        CHECK (ly_msg_str_len (copy, LY_ERROR_MESSAGE) == 0);
    }
    ly_msg_destroy (&copy);
    free (data);
    ly_msg_destroy (&error);
}

//  Every type, real and test: all fields set, none set, each one left out.
static void
s_test_all_round_trips (void)
{
    for (int type = 1; type < (int) S_TYPE_SLOTS; type++) {
        if (!ly_msg_type_name (type))
            continue;
        int count = (int) ly_msg_field_count (type);
        for (int seed = 1; seed <= 2; seed++) {
            ly_msg_t *msg = ly_msg_new ((ly_msgtype_t) type);
            for (int field = 0; field < count; field++)
                s_set_sample (msg, field, seed + field);
            for (int field = 0; field < count; field++)
                CHECK (ly_msg_has (msg, field));
            s_check_round_trip (msg);
            ly_msg_destroy (&msg);
        }
        ly_msg_t *empty = ly_msg_new ((ly_msgtype_t) type);
        s_check_round_trip (empty);
        for (int field = 0; field < count; field++) {
            CHECK (!ly_msg_has (empty, field));
            switch (ly_msg_field (type, field)->type) {
                case LY_FT_UINT: CHECK (ly_msg_uint (empty, field) == 0); break;
                case LY_FT_INT:  CHECK (ly_msg_int (empty, field) == 0); break;
                case LY_FT_BOOL: CHECK (ly_msg_bool (empty, field) == false); break;
                case LY_FT_STR:  CHECK (ly_msg_str (empty, field) == NULL); break;
                case LY_FT_OBJ:  CHECK (ly_msg_obj (empty, field) == NULL); break;
                case LY_FT_BIN: {
                    size_t size = 99;
                    CHECK (ly_msg_bin (empty, field, &size) == NULL && size == 0);
                    break;
                }
            }
        }
        ly_msg_destroy (&empty);
        for (int absent = 0; absent < count; absent++) {
            ly_msg_t *msg = ly_msg_new ((ly_msgtype_t) type);
            for (int field = 0; field < count; field++)
                if (field != absent)
                    s_set_sample (msg, field, field + 3);
            s_check_round_trip (msg);
            ly_msg_destroy (&msg);
        }
    }
}

static void
s_test_values (void)
{
    ly_msg_t *msg = ly_msg_new ((ly_msgtype_t) S_TEST_ALL);
    ly_msg_set_uint (msg, T_U, 1);
    ly_msg_set_uint (msg, T_U, 2);                  //  the last value wins
    ly_msg_set_int (msg, T_I, INT64_MIN);
    ly_msg_set_bool (msg, T_B, true);
    ly_msg_set_strn (msg, T_S, "a\0b", 3);          //  NUL inside a string
    ly_msg_set_bin (msg, T_BIN, NULL, 0);           //  present, empty
    static const uint8_t nil [] = { 0xc0 };
    ly_msg_set_obj (msg, T_O, nil, 1);              //  nil object: absent
    CHECK (!ly_msg_has (msg, T_O));
    static const uint8_t three [] = { 0x03 };
    ly_msg_set_obj (msg, T_O, three, 1);
    CHECK (ly_msg_has (msg, T_O));
    CHECK (ly_msg_uint (msg, T_U) == 2);

    void *data;
    size_t size;
    CHECK (ly_msg_encode (msg, false, &data, &size) == 0);
    ly_msg_t *copy = s_expect_decoded (data, size, "TEST_ALL values");
    if (copy) {
        CHECK (ly_msg_uint (copy, T_U) == 2);
        CHECK (ly_msg_int (copy, T_I) == INT64_MIN);
        CHECK (ly_msg_bool (copy, T_B));
        CHECK (ly_msg_str_len (copy, T_S) == 3);
        CHECK (memcmp (ly_msg_str (copy, T_S), "a\0b", 4) == 0);
        size_t bin_size = 99;
        CHECK (ly_msg_bin (copy, T_BIN, &bin_size) != NULL && bin_size == 0);
        const msgpack_object *obj = ly_msg_obj (copy, T_O);
        CHECK (obj && obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER && obj->via.u64 == 3);
        json_t *json = ly_msg_to_json (copy);
        json_t *fields = json_object_get (json, "fields");
        json_t *text = json_object_get (fields, "s");
        CHECK (json_is_string (text) && json_string_length (text) == 3);
        CHECK (json_is_integer (json_object_get (fields, "i")));
        CHECK (json_integer_value (json_object_get (fields, "i")) == INT64_MIN);
        json_t *bin = json_object_get (fields, "bin");
        CHECK (bin && streq (json_string_value (json_object_get (bin, "$bin")), ""));
        json_decref (json);
    }
    ly_msg_destroy (&copy);
    free (data);

    //  An empty string is present, and reads as "".
    ly_msg_t *empty = ly_msg_new (LY_MSG_PING);
    ly_msg_set_str (empty, LY_PING_SENDER, "");
    CHECK (ly_msg_encode (empty, false, &data, &size) == 0);
    ly_msg_destroy (&empty);
    empty = s_expect_decoded (data, size, "empty string");
    CHECK (empty && ly_msg_has (empty, LY_PING_SENDER));
    CHECK (empty && streq (ly_msg_str (empty, LY_PING_SENDER), ""));
    CHECK (empty && ly_msg_str_len (empty, LY_PING_SENDER) == 0);
    ly_msg_destroy (&empty);
    free (data);

    //  Setting a field again replaces it, for every kind of storage.
    ly_msg_set_str (msg, T_S, "first");
    ly_msg_set_str (msg, T_S, "second");
    CHECK (streq (ly_msg_str (msg, T_S), "second"));
    ly_msg_set_bin (msg, T_BIN, "xy", 2);
    size_t bin_size;
    CHECK (memcmp (ly_msg_bin (msg, T_BIN, &bin_size), "xy", 2) == 0 && bin_size == 2);
    ly_msg_set_obj (msg, T_O, three, 1);
    ly_msg_set_obj (msg, T_O, three, 1);
    ly_msg_destroy (&msg);

    //  Integers in any msgpack width are accepted; a UINT may come as a positive int8.
    static const uint8_t widths [][16] = {
        { 0x94, 0x01, 0x01, 0xcc, 0x05, 0xc0 },
        { 0x94, 0x01, 0x01, 0xcd, 0x00, 0x05, 0xc0 },
        { 0x94, 0x01, 0x01, 0xce, 0x00, 0x00, 0x00, 0x05, 0xc0 },
        { 0x94, 0x01, 0x01, 0xcf, 0, 0, 0, 0, 0, 0, 0, 0x05, 0xc0 },
        { 0x94, 0x01, 0x01, 0xd0, 0x05, 0xc0 },
        { 0x94, 0xcf, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x01, 0x05, 0xc0 },
    };
    static const size_t width_sizes [] = { 6, 7, 9, 13, 6, 13 };
    for (size_t index = 0; index < sizeof width_sizes / sizeof width_sizes [0]; index++) {
        ly_msg_t *ping = s_expect_decoded (widths [index], width_sizes [index], "int width");
        CHECK (ping && ly_msg_uint (ping, LY_PING_REQUEST_ID) == 5);
        ly_msg_destroy (&ping);
    }

    //  Extra fields after the schema's are ignored (newer senders); nil is absent
    //  for any field, also in a str8 header the schema does not need.
    s_buf_t buf;
    s_buf_init (&buf);
    msgpack_pack_array (&buf.pk, 6);
    msgpack_pack_uint8 (&buf.pk, 1);
    msgpack_pack_uint8 (&buf.pk, LY_MSG_PING);
    msgpack_pack_nil (&buf.pk);
    s_buf_str (&buf, "newer");
    msgpack_pack_map (&buf.pk, 1);
    s_buf_str (&buf, "k");
    msgpack_pack_array (&buf.pk, 0);
    s_buf_str (&buf, "more");
    ly_msg_t *ping = s_expect_decoded (buf.sbuf.data, buf.sbuf.size, "extra fields");
    if (ping) {
        CHECK (!ly_msg_has (ping, LY_PING_REQUEST_ID));
        CHECK (streq (ly_msg_str (ping, LY_PING_SENDER), "newer"));
        CHECK (ly_msg_encode (ping, false, &data, &size) == 0);
        static const uint8_t trimmed [] = { 0x94, 1, 1, 0xc0, 0xa5, 'n', 'e', 'w', 'e', 'r' };
        CHECK (size == sizeof trimmed && memcmp (data, trimmed, size) == 0);
        free (data);
    }
    ly_msg_destroy (&ping);
    msgpack_sbuffer_destroy (&buf.sbuf);
}


//  --------------------------------------------------------------------------
//  Redaction

//  Looks up key in a msgpack map; NULL when missing.
static const msgpack_object *
s_map_get (const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t index = 0; index < map->via.map.size; index++) {
        const msgpack_object_kv *entry = &map->via.map.ptr [index];
        if (entry->key.type == MSGPACK_OBJECT_STR && entry->key.via.str.size == strlen (key)
        &&  memcmp (entry->key.via.str.ptr, key, strlen (key)) == 0)
            return &entry->val;
    }
    return NULL;
}

static bool
s_is_str (const msgpack_object *obj, const char *text)
{
    return obj && obj->type == MSGPACK_OBJECT_STR && obj->via.str.size == strlen (text)
        && memcmp (obj->via.str.ptr, text, strlen (text)) == 0;
}

//  {"ip": ..., "Email": ..., "User-Agent": ..., "keep": "visible",
//   "list": [{"phone": ...}, 5], "client_ip": {...}, 7: "seven",
//   "deep": {"deep": ... {"user_agent": ...}}}  (the last key 20 maps down)
static void
s_pack_personal (s_buf_t *buf)
{
    msgpack_pack_map (&buf->pk, 8);
    s_buf_str (buf, "ip");
    s_buf_str (buf, "203.0.113.9");
    s_buf_str (buf, "Email");
    s_buf_str (buf, "jane@example.com");
    s_buf_str (buf, "User-Agent");
    s_buf_str (buf, "SecretBrowser/1.0");
    s_buf_str (buf, "keep");
    s_buf_str (buf, "visible");
    s_buf_str (buf, "list");
    msgpack_pack_array (&buf->pk, 2);
    msgpack_pack_map (&buf->pk, 1);
    s_buf_str (buf, "phone");
    s_buf_str (buf, "+15550100");
    msgpack_pack_int (&buf->pk, 5);
    s_buf_str (buf, "client_ip");
    msgpack_pack_map (&buf->pk, 1);
    s_buf_str (buf, "v4");
    s_buf_str (buf, "198.51.100.7");
    msgpack_pack_int (&buf->pk, 7);
    s_buf_str (buf, "seven");
    s_buf_str (buf, "deep");
    for (int level = 0; level < 20; level++) {
        msgpack_pack_map (&buf->pk, 1);
        s_buf_str (buf, level < 19? "deep": "user_agent");
    }
    s_buf_str (buf, "DeepAgent/2.0");
}

static const char *s_personal_values [] = {
    "203.0.113.9", "jane@example.com", "SecretBrowser", "+15550100", "198.51.100.7",
    "DeepAgent", NULL
};

static void
s_check_redacted_nested (const msgpack_object *props)
{
    CHECK (s_is_str (s_map_get (props, "ip"), S_REDACTED));
    CHECK (s_is_str (s_map_get (props, "Email"), S_REDACTED));
    CHECK (s_is_str (s_map_get (props, "User-Agent"), S_REDACTED));
    CHECK (s_is_str (s_map_get (props, "client_ip"), S_REDACTED));
    CHECK (s_is_str (s_map_get (props, "keep"), "visible"));
    const msgpack_object *list = s_map_get (props, "list");
    CHECK (list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 2);
    if (list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 2) {
        CHECK (s_is_str (s_map_get (&list->via.array.ptr [0], "phone"), S_REDACTED));
        CHECK (list->via.array.ptr [1].via.u64 == 5);
    }
    const msgpack_object *deep = s_map_get (props, "deep");
    for (int level = 0; level < 19 && deep; level++)
        deep = s_map_get (deep, "deep");
    CHECK (s_is_str (s_map_get (deep, "user_agent"), S_REDACTED));
}

static void
s_test_redaction (void)
{
    ly_msg_t *msg = ly_msg_new ((ly_msgtype_t) S_TEST_PII);
    ly_msg_set_str (msg, P_EMAIL, "jane@example.com");
    ly_msg_set_bin (msg, P_PHOTO, "\x89PNG", 4);
    ly_msg_set_uint (msg, P_AGE, 42);
    ly_msg_set_str (msg, P_EVENT, "purchase");
    s_buf_t buf;
    s_buf_init (&buf);
    s_pack_personal (&buf);
    ly_msg_set_obj (msg, P_PROPS, buf.sbuf.data, buf.sbuf.size);
    ly_msg_set_obj (msg, P_PLAIN, buf.sbuf.data, buf.sbuf.size);
    msgpack_sbuffer_destroy (&buf.sbuf);
    s_buf_init (&buf);
    msgpack_pack_map (&buf.pk, 1);
    s_buf_str (&buf, "model");
    s_buf_str (&buf, "Pixel 8");
    ly_msg_set_obj (msg, P_DEVICE, buf.sbuf.data, buf.sbuf.size);
    msgpack_sbuffer_destroy (&buf.sbuf);

    //  Without redaction everything goes out as set.
    void *data;
    size_t size;
    CHECK (ly_msg_encode (msg, false, &data, &size) == 0);
    CHECK (s_contains (data, size, "jane@example.com"));
    CHECK (s_contains (data, size, "DeepAgent/2.0"));
    ly_msg_t *copy = s_expect_decoded (data, size, "TEST_PII");
    CHECK (copy && s_msg_equal (msg, copy));
    ly_msg_destroy (&copy);
    free (data);

    //  Redacted, the frame still decodes and carries no personal data, except in
    //  the LY_PII_NONE object, which the schema says holds none.
    CHECK (ly_msg_encode (msg, true, &data, &size) == 0);
    copy = s_expect_decoded (data, size, "TEST_PII redacted");
    if (copy) {
        CHECK (streq (ly_msg_str (copy, P_EMAIL), S_REDACTED));
        size_t photo_size;
        const void *photo = ly_msg_bin (copy, P_PHOTO, &photo_size);
        CHECK (photo && photo_size == strlen (S_REDACTED) && memcmp (photo, S_REDACTED, photo_size) == 0);
        CHECK (s_is_str (ly_msg_obj (copy, P_DEVICE), S_REDACTED));
        CHECK (!ly_msg_has (copy, P_AGE));      //  raw scalars are left out
        CHECK (streq (ly_msg_str (copy, P_EVENT), "purchase"));
        s_check_redacted_nested (ly_msg_obj (copy, P_PROPS));
        CHECK (s_is_str (s_map_get (ly_msg_obj (copy, P_PLAIN), "ip"), "203.0.113.9"));

        //  Redacting again changes nothing.
        void *again;
        size_t again_size;
        CHECK (ly_msg_encode (copy, true, &again, &again_size) == 0);
        CHECK (again_size == size && memcmp (again, data, size) == 0);
        free (again);
    }
    ly_msg_destroy (&copy);
    //  Only the plain object still holds the personal data.
    zframe_t *frame = ly_msg_encode_frame (msg, true);
    CHECK (frame && zframe_size (frame) == size && memcmp (zframe_data (frame), data, size) == 0);
    zframe_destroy (&frame);
    free (data);
    ly_msg_set_obj (msg, P_PLAIN, "\x01", 1);
    CHECK (ly_msg_encode (msg, true, &data, &size) == 0);
    for (const char **value = s_personal_values; *value; value++)
        CHECK (!s_contains (data, size, *value));
    CHECK (!s_contains (data, size, "Pixel 8"));
    CHECK (s_contains (data, size, "visible"));
    free (data);

    //  JSON is always redacted.
    json_t *json = ly_msg_to_json (msg);
    char *text = json_dumps (json, JSON_COMPACT);
    CHECK (text != NULL);
    if (text) {
        for (const char **value = s_personal_values; *value; value++)
            CHECK (!strstr (text, *value));
        CHECK (!strstr (text, "Pixel 8"));
        CHECK (strstr (text, "\"email\":\"[redacted]\""));
        CHECK (strstr (text, "\"age\":\"[redacted]\""));
        CHECK (strstr (text, "\"ip\":\"[redacted]\""));
        CHECK (strstr (text, "\"keep\":\"visible\""));
        CHECK (strstr (text, "\"7\":\"seven\""));
        CHECK (strstr (text, "\"event\":\"purchase\""));
        free (text);
    }
    json_decref (json);
    ly_msg_destroy (&msg);

    //  ly_msgpack_to_json redacts only when asked.
    s_buf_init (&buf);
    s_pack_personal (&buf);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    size_t offset = 0;
    CHECK (msgpack_unpack_next (&unpacked, buf.sbuf.data, buf.sbuf.size, &offset)
           == MSGPACK_UNPACK_SUCCESS);
    for (int redact = 0; redact <= 1; redact++) {
        json = ly_msgpack_to_json (&unpacked.data, redact);
        text = json_dumps (json, JSON_COMPACT);
        CHECK (text != NULL);
        if (text) {
            for (const char **value = s_personal_values; *value; value++)
                CHECK (redact? !strstr (text, *value): strstr (text, *value) != NULL);
            CHECK (strstr (text, "\"keep\":\"visible\""));
            CHECK (strstr (text, "\"user_agent\":\"[redacted]\"") || !redact);
            free (text);
        }
        json_decref (json);
    }
    msgpack_unpacked_destroy (&unpacked);
    msgpack_sbuffer_destroy (&buf.sbuf);
}


//  --------------------------------------------------------------------------
//  JSON

static void
s_test_json (void)
{
    ly_msg_t *pong = ly_msg_new (LY_MSG_PONG);
    ly_msg_set_uint (pong, LY_PONG_REQUEST_ID, 9);
    ly_msg_set_bool (pong, LY_PONG_DB_OK, true);
    ly_msg_set_strn (pong, LY_PONG_DETAIL, "bad \xff\xfe utf8", 11);
    json_t *json = ly_msg_to_json (pong);
    char *text = json_dumps (json, JSON_COMPACT);
    CHECK (text && streq (text, "{\"type\":\"PONG\",\"fields\":{\"request_id\":9,\"db_ok\":true,"
                                "\"detail\":\"bad \xef\xbf\xbd\xef\xbf\xbd utf8\"}}"));
    free (text);
    json_decref (json);
    ly_msg_set_uint (pong, LY_PONG_REQUEST_ID, UINT64_MAX);
    json = ly_msg_to_json (pong);
    json_t *id = json_object_get (json_object_get (json, "fields"), "request_id");
    CHECK (json_is_string (id) && streq (json_string_value (id), "18446744073709551615"));
    json_decref (json);
    ly_msg_destroy (&pong);

    //  Every msgpack kind.
    s_buf_t buf;
    s_buf_init (&buf);
    msgpack_pack_map (&buf.pk, 10);
    msgpack_pack_int (&buf.pk, -3);
    msgpack_pack_true (&buf.pk);
    s_buf_str (&buf, "bin");
    msgpack_pack_bin_with_body (&buf.pk, "\x00\xab", 2);
    s_buf_str (&buf, "f");
    msgpack_pack_double (&buf.pk, 0.25);
    s_buf_str (&buf, "nan");
    msgpack_pack_double (&buf.pk, 0.0 / 0.0);
    s_buf_str (&buf, "inf");
    msgpack_pack_float (&buf.pk, -1.0f / 0.0f);
    s_buf_str (&buf, "ext");
    msgpack_pack_ext_with_body (&buf.pk, "\x01", 1, 5);
    msgpack_pack_nil (&buf.pk);
    msgpack_pack_nil (&buf.pk);
    msgpack_pack_array (&buf.pk, 1);
    msgpack_pack_int (&buf.pk, 1);
    s_buf_str (&buf, "array key");
    msgpack_pack_str_with_body (&buf.pk, "bad\xc3", 4);
    msgpack_pack_uint64 (&buf.pk, UINT64_MAX);
    msgpack_pack_str_with_body (&buf.pk, "a\0b", 3);
    msgpack_pack_false (&buf.pk);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    size_t offset = 0;
    CHECK (msgpack_unpack_next (&unpacked, buf.sbuf.data, buf.sbuf.size, &offset)
           == MSGPACK_UNPACK_SUCCESS);
    json = ly_msgpack_to_json (&unpacked.data, false);
    CHECK (json_is_true (json_object_get (json, "-3")));
    CHECK (streq (json_string_value (json_object_get (json_object_get (json, "bin"), "$bin")), "00ab"));
    CHECK (json_real_value (json_object_get (json, "f")) == 0.25);
    CHECK (streq (json_string_value (json_object_get (json, "nan")), "NaN"));
    CHECK (streq (json_string_value (json_object_get (json, "inf")), "-Infinity"));
    json_t *ext = json_object_get (json, "ext");
    CHECK (json_integer_value (json_object_get (ext, "$ext")) == 5);
    CHECK (streq (json_string_value (json_object_get (ext, "$bin")), "01"));
    CHECK (json_is_null (json_object_get (json, "null")));
    CHECK (streq (json_string_value (json_object_get (json, "[1]")), "array key"));
    CHECK (streq (json_string_value (json_object_get (json, "bad\xef\xbf\xbd")), "18446744073709551615"));
    CHECK (json_is_false (json_object_getn (json, "a\0b", 3)));
    json_decref (json);
    msgpack_unpacked_destroy (&unpacked);
    msgpack_sbuffer_destroy (&buf.sbuf);
}


//  --------------------------------------------------------------------------
//  Malformed frames

//  A valid frame of every real type plus the test types, for prefix checks.
static void
s_test_prefixes (void)
{
    for (int type = 1; type < (int) S_TYPE_SLOTS; type++) {
        if (!ly_msg_type_name (type))
            continue;
        ly_msg_t *msg = ly_msg_new ((ly_msgtype_t) type);
        for (int field = 0; field < (int) ly_msg_field_count (type); field++)
            s_set_sample (msg, field, field);
        void *data;
        size_t size;
        CHECK (ly_msg_encode (msg, false, &data, &size) == 0);
        s_check_prefixes (data, size);
        //  Trailing bytes, of any kind, are refused.
        uint8_t *longer = (uint8_t *) malloc (size + 2);
        memcpy (longer, data, size);
        longer [size] = 0xc0;
        longer [size + 1] = 0x00;
        s_expect_refused (longer, size + 1, "trailing nil");
        s_expect_refused (longer, size + 2, "trailing bytes");
        free (longer);
        free (data);
        ly_msg_destroy (&msg);
    }
}

static void
s_test_header_errors (void)
{
    static const struct {
        const char *what;
        size_t size;
        uint8_t bytes [24];
    } cases [] = {
        { "wrong version",          5, { 0x94, 0x02, 0x01, 0x01, 0xc0 } },
        { "version zero",           5, { 0x94, 0x00, 0x01, 0x01, 0xc0 } },
        { "negative version",       5, { 0x94, 0xff, 0x01, 0x01, 0xc0 } },
        { "version as str",         6, { 0x94, 0xa1, '1', 0x01, 0x01, 0xc0 } },
        { "version as nil",         5, { 0x94, 0xc0, 0x01, 0x01, 0xc0 } },
        { "unknown type",           5, { 0x94, 0x01, 0x63, 0x01, 0xc0 } },
        { "type zero",              5, { 0x94, 0x01, 0x00, 0x01, 0xc0 } },
        { "type max",               5, { 0x94, 0x01, LY_MSG_TYPE_MAX, 0x01, 0xc0 } },
        { "selftest type gap",      5, { 0x94, 0x01, 0x3b, 0x01, 0xc0 } },
        { "huge type",             13, { 0x94, 0x01, 0xcf, 0, 0, 0, 1, 0, 0, 0, 1, 0x01, 0xc0 } },
        { "negative type",          5, { 0x94, 0x01, 0xff, 0x01, 0xc0 } },
        { "type as str",            6, { 0x94, 0x01, 0xa1, 'P', 0x01, 0xc0 } },
        { "type as bool",           5, { 0x94, 0x01, 0xc3, 0x01, 0xc0 } },
        { "empty array",            1, { 0x90 } },
        { "version only",           2, { 0x91, 0x01 } },
        { "no fields",              3, { 0x92, 0x01, 0x01 } },
        { "too few fields",         4, { 0x93, 0x01, 0x01, 0x05 } },
        { "PONG too few",           6, { 0x95, 0x01, 0x02, 0x05, 0xc0, 0xc3 } },
        { "request_id as str",      6, { 0x94, 0x01, 0x01, 0xa1, '5', 0xc0 } },
        { "request_id negative",    5, { 0x94, 0x01, 0x01, 0xff, 0xc0 } },
        { "request_id float",       9, { 0x94, 0x01, 0x01, 0xca, 0x3f, 0x80, 0, 0, 0xc0 } },
        { "request_id bool",        5, { 0x94, 0x01, 0x01, 0xc2, 0xc0 } },
        { "sender as int",          5, { 0x94, 0x01, 0x01, 0x01, 0x07 } },
        { "sender as bin",          7, { 0x94, 0x01, 0x01, 0x01, 0xc4, 0x01, 'x' } },
        { "sender as array",        5, { 0x94, 0x01, 0x01, 0x01, 0x90 } },
        { "db_ok as int",           7, { 0x96, 0x01, 0x02, 0x01, 0xc0, 0x01, 0xc0 } },
        { "not an array: map",      1, { 0x80 } },
        { "not an array: int",      1, { 0x01 } },
        { "not an array: nil",      1, { 0xc0 } },
        { "not an array: str",      3, { 0xa2, 'h', 'i' } },
        { "not an array: map16",    3, { 0xde, 0x00, 0x00 } },
        { "reserved byte",          5, { 0x94, 0x01, 0x01, 0x01, 0xc1 } },
        { "reserved byte first",    1, { 0xc1 } },
        { "two frames",             4, { 0x91, 0x01, 0x91, 0x01 } },
        { "array32 4 billion",      5, { 0xdd, 0xff, 0xff, 0xff, 0xff } },
        { "array32 4 billion + data",  9, { 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01, 0x01, 0xc0 } },
        { "array16 too long",       7, { 0xdc, 0xff, 0xff, 0x01, 0x01, 0x01, 0xc0 } },
        { "str32 4 GB",             9, { 0x94, 0x01, 0x01, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff } },
        { "str16 too long",         8, { 0x94, 0x01, 0x01, 0x01, 0xda, 0x10, 0x00, 'x' } },
        { "str8 too long",          7, { 0x94, 0x01, 0x01, 0x01, 0xd9, 0x05, 'x' } },
        { "fixstr too long",        6, { 0x94, 0x01, 0x01, 0x01, 0xa5, 'x' } },
        { "bin32 4 GB",            10, { 0x94, 0x01, 0x01, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff, 0 } },
        { "ext32 4 GB",            11, { 0x94, 0x01, 0x01, 0x01, 0xc9, 0xff, 0xff, 0xff, 0xff, 1, 0 } },
        { "ext8 missing type",      6, { 0x94, 0x01, 0x01, 0x01, 0xc7, 0x00 } },
        { "fixext16 short",         8, { 0x94, 0x01, 0x01, 0x01, 0xd8, 0x01, 0x00, 0x00 } },
        { "nested array32",        13, { 0x95, 0x01, 0x01, 0x01, 0xc0, 0xdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0 } },
        { "nested map32",          13, { 0x95, 0x01, 0x01, 0x01, 0xc0, 0xdf, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0 } },
        { "map entries need 2 bytes", 9, { 0x95, 0x01, 0x01, 0x01, 0xc0, 0x83, 0x01, 0x02, 0x03 } },
        { "uint64 short",           7, { 0x94, 0x01, 0x01, 0xcf, 0, 0, 0xc0 } },
        { "float64 short",          7, { 0x94, 0x01, 0x01, 0x01, 0xcb, 0, 0 } },
    };
    for (size_t index = 0; index < sizeof cases / sizeof cases [0]; index++)
        s_expect_refused (cases [index].bytes, cases [index].size, cases [index].what);

    //  INT fields: a uint above INT64_MAX does not fit; a UINT field takes no
    //  negative value.
    static const uint8_t big_int [] = { 0x98, 0x01, S_TEST_ALL, 0xc0,
        0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0, 0xc0, 0xc0, 0xc0, 0xc0 };
    s_expect_refused (big_int, sizeof big_int, "int above INT64_MAX");
    static const uint8_t max_int [] = { 0x98, 0x01, S_TEST_ALL, 0xc0,
        0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0, 0xc0, 0xc0 };
    ly_msg_t *msg = s_expect_decoded (max_int, sizeof max_int, "INT64_MAX");
    CHECK (msg && ly_msg_int (msg, T_I) == INT64_MAX);
    ly_msg_destroy (&msg);
    static const uint8_t bin_as_str [] = { 0x98, 0x01, S_TEST_ALL, 0xc0, 0xc0, 0xc0, 0xc0,
        0xa1, 'x', 0xc0 };
    s_expect_refused (bin_as_str, sizeof bin_as_str, "bin as str");

    //  No reason buffer, or a tiny one, is fine.
    static const uint8_t bad [] = { 0x94, 0x02, 0x01, 0x01, 0xc0 };
    CHECK (ly_msg_decode (bad, sizeof bad, NULL, 0) == NULL);
    char tiny [4] = "abc";
    CHECK (ly_msg_decode (bad, sizeof bad, tiny, 0) == NULL && streq (tiny, "abc"));
    CHECK (ly_msg_decode (bad, sizeof bad, tiny, sizeof tiny) == NULL && strlen (tiny) == 3);
    CHECK (ly_msg_decode (NULL, 0, tiny, sizeof tiny) == NULL && tiny [0]);
    CHECK (ly_msg_decode (NULL, 5, tiny, sizeof tiny) == NULL && tiny [0]);
    s_expect_refused ("", 0, "empty frame");
}

//  [1, TEST_ALL, nil x 5, <depth levels of single-element arrays around 1>]
static size_t
s_nested_frame (uint8_t *frame, int depth, bool use_maps)
{
    size_t size = 0;
    frame [size++] = 0x98;
    frame [size++] = 0x01;
    frame [size++] = S_TEST_ALL;
    for (int index = 0; index < 5; index++)
        frame [size++] = 0xc0;
    for (int level = 0; level < depth; level++) {
        frame [size++] = use_maps? 0x81: 0x91;
        if (use_maps)
            frame [size++] = 0x00;
    }
    frame [size++] = 0x01;
    return size;
}

static void
s_test_limits (void)
{
    //  Nesting inside an OBJ field: LY_MSG_MAX_DEPTH levels pass, one more fails.
    uint8_t frame [256];
    for (int maps = 0; maps <= 1; maps++) {
        size_t size = s_nested_frame (frame, LY_MSG_MAX_DEPTH, maps);
        ly_msg_t *msg = s_expect_decoded (frame, size, "deepest allowed nesting");
        if (msg) {
            //  It round-trips, redacted or not, and converts to JSON.
            s_check_round_trip (msg);
            void *data;
            size_t data_size;
            CHECK (ly_msg_encode (msg, true, &data, &data_size) == 0);
            free (data);
        }
        ly_msg_destroy (&msg);
        size = s_nested_frame (frame, LY_MSG_MAX_DEPTH + 1, maps);
        s_expect_refused (frame, size, "nesting too deep");
        size = s_nested_frame (frame, 100, maps);
        s_expect_refused (frame, size, "nesting far too deep");
    }
    //  Deep nesting in a field the schema does not know is refused too.
    uint8_t extra [64];
    size_t size = 0;
    extra [size++] = 0x95;
    extra [size++] = 0x01;
    extra [size++] = LY_MSG_PING;
    extra [size++] = 0x01;
    extra [size++] = 0xc0;
    for (int level = 0; level < 40; level++)
        extra [size++] = 0x91;
    extra [size++] = 0xc0;
    s_expect_refused (extra, size, "deep extra field");

    //  Frames up to LY_MSG_MAX_FRAME are accepted; larger ones are refused, and
    //  the encoder does not produce them.
    ly_msg_t *msg = ly_msg_new ((ly_msgtype_t) S_TEST_ALL);
    size_t overhead = 1 + 1 + 1 + 4 + 5 + 1;          //  header, 4 nils, bin32 header, nil
    size_t payload = LY_MSG_MAX_FRAME - overhead;
    char *big = (char *) calloc (1, payload + 1);
    ly_msg_set_bin (msg, T_BIN, big, payload);
    void *data;
    CHECK (ly_msg_encode (msg, false, &data, &size) == 0);
    CHECK (size == LY_MSG_MAX_FRAME);
    ly_msg_t *copy = s_expect_decoded (data, size, "largest frame");
    CHECK (copy && ly_msg_bin (copy, T_BIN, &size) && size == payload);
    ly_msg_destroy (&copy);
    free (data);
    ly_msg_set_bin (msg, T_BIN, big, payload + 1);
    CHECK (ly_msg_encode (msg, false, &data, &size) == -1 && data == NULL && size == 0);
    CHECK (ly_msg_encode_frame (msg, false) == NULL);
    ly_msg_destroy (&msg);
    free (big);

    //  A hand-built frame one byte over the limit, otherwise valid: refused.
    size = LY_MSG_MAX_FRAME + 1;
    uint8_t *huge = (uint8_t *) calloc (1, size);
    static const uint8_t head [] = { 0x98, 0x01, S_TEST_ALL, 0xc0, 0xc0, 0xc0, 0xc0, 0xc6 };
    memcpy (huge, head, sizeof head);
    uint32_t body = (uint32_t) (size - overhead);
    huge [8] = body >> 24; huge [9] = body >> 16; huge [10] = body >> 8; huge [11] = body;
    huge [size - 1] = 0xc0;
    s_expect_refused (huge, size, "frame over the limit");
    //  One byte less in the bin, and it is accepted.
    huge [size - 2] = 0xc0;
    body--;
    huge [8] = body >> 24; huge [9] = body >> 16; huge [10] = body >> 8; huge [11] = body;
    msg = s_expect_decoded (huge, size - 1, "frame at the limit");
    ly_msg_destroy (&msg);
    //  An array of many nils fits in the limit and decodes (extra fields).
    memset (huge, 0xc0, LY_MSG_MAX_FRAME);
    uint32_t count = LY_MSG_MAX_FRAME - 5;
    huge [0] = 0xdd;
    huge [1] = count >> 24; huge [2] = count >> 16; huge [3] = count >> 8; huge [4] = count;
    huge [5] = 0x01;
    huge [6] = 0x01;
    msg = s_expect_decoded (huge, LY_MSG_MAX_FRAME, "many extra fields");
    ly_msg_destroy (&msg);
    free (huge);
}

//  Random damage to valid frames never crashes the decoder.
static void
s_test_mutations (void)
{
    unsigned seed = 12345;
    int decoded = 0;
    for (int type = 1; type < (int) S_TYPE_SLOTS; type++) {
        if (!ly_msg_type_name (type))
            continue;
        ly_msg_t *msg = ly_msg_new ((ly_msgtype_t) type);
        for (int field = 0; field < (int) ly_msg_field_count (type); field++)
            s_set_sample (msg, field, field);
        void *data;
        size_t size;
        CHECK (ly_msg_encode (msg, false, &data, &size) == 0);
        uint8_t *copy = (uint8_t *) malloc (size);
        for (int round = 0; round < 5000; round++) {
            memcpy (copy, data, size);
            int flips = 1 + rand_r (&seed) % 3;
            for (int flip = 0; flip < flips; flip++)
                copy [rand_r (&seed) % size] = (uint8_t) rand_r (&seed);
            char err [128] = "";
            ly_msg_t *damaged = ly_msg_decode (copy, size, err, sizeof err);
            if (damaged) {
                decoded++;
                json_t *json = ly_msg_to_json (damaged);
                json_decref (json);
                void *again;
                size_t again_size;
                if (ly_msg_encode (damaged, true, &again, &again_size) == 0)
                    free (again);
            }
            else
            if (!err [0])
                CHECK (!"refusal without a reason");
            ly_msg_destroy (&damaged);
        }
        free (copy);
        free (data);
        ly_msg_destroy (&msg);
    }
    CHECK (decoded > 0);
}

int
main (void)
{
    s_test_schema ();
    s_test_wire_bytes ();
    s_test_named_round_trips ();
    s_test_all_round_trips ();
    s_test_values ();
    s_test_redaction ();
    s_test_json ();
    s_test_prefixes ();
    s_test_header_errors ();
    s_test_limits ();
    s_test_mutations ();
    printf ("ly_msg_test: %d passed, %d failed\n", s_passed, s_failed);
    return s_failed? 1: 0;
}
