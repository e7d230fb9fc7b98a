/*  ly_jsonw.h: writes compact JSON text straight into one growing buffer, for bodies
    built in a hot path (the relay's requests) where a jansson tree per value would cost
    more than the text itself. The caller writes a well-formed document; the writer adds
    the commas. */
#ifndef LY_JSONW_H_INCLUDED
#define LY_JSONW_H_INCLUDED

#include "ly_prelude.h"

#define LY_JSONW_DEPTH 2100         /* beyond jansson's 2048 levels: any tree it reads */

typedef struct {
    char *data;                 /* the text, NUL-terminated, owned */
    size_t len;                 /* bytes written */
    size_t size;                /* bytes allocated */
    bool failed;                /* an allocation failed: the text is incomplete */
    bool after_key;             /* the next value belongs to the key just written */
    int depth;                  /* open objects and arrays */
    bool first [LY_JSONW_DEPTH];    /* nothing written yet at that depth */
} ly_jsonw_t;

/*  An empty writer with room for hint bytes. */
void ly_jsonw_init (ly_jsonw_t *self, size_t hint);
/*  Frees the text (wiped first when wipe is true: it held a secret). */
void ly_jsonw_reset (ly_jsonw_t *self, bool wipe);
/*  Hands the text to the caller (caller owns; NULL after a failure) and resets. */
char *ly_jsonw_take (ly_jsonw_t *self, size_t *len);

/*  Makes room for bytes more without moving the text again, so that what is written
    next (a secret) is never left behind in a freed block. */
void ly_jsonw_reserve (ly_jsonw_t *self, size_t bytes);

/*  Structure: '{' or '[' to open, '}' or ']' to close. */
void ly_jsonw_open (ly_jsonw_t *self, char bracket);
void ly_jsonw_close (ly_jsonw_t *self, char bracket);
/*  A member's key (inside an object); the next call writes its value. */
void ly_jsonw_key (ly_jsonw_t *self, const char *key);

/*  Values. A string is valid UTF-8; it is escaped as JSON requires. NULL writes null. */
void ly_jsonw_string (ly_jsonw_t *self, const char *text);
void ly_jsonw_int (ly_jsonw_t *self, int64_t value);
void ly_jsonw_bool (ly_jsonw_t *self, bool value);
/*  A finite double in the shortest text that reads back to the same value (19.99, not
    19.989999999999998 as "%.17g" writes it); with single, the same for a float. The
    text goes into text (40 bytes); its length. Not finite: "null". */
size_t ly_jsonw_double_text (double value, bool single, char text [40]);
void ly_jsonw_double (ly_jsonw_t *self, double value);
/*  A jansson value, its reals written as ly_jsonw_double does (jansson's own dump
    writes 17 digits). Deeper than the writer allows: null there, and the writer fails
    (ly_jsonw_take gives NULL). */
void ly_jsonw_json (ly_jsonw_t *self, const json_t *json);
/*  A value that is already JSON text (len bytes), copied as it is. */
void ly_jsonw_raw (ly_jsonw_t *self, const char *json, size_t len);

/*  The escape sequence JSON needs for byte c (a quote, a backslash, a control
    character) written into escape: its length, 0 when c needs none. */
size_t ly_jsonw_escape (unsigned char c, char escape [6]);

/*  Shorthands for a member: key and value. */
void ly_jsonw_member_string (ly_jsonw_t *self, const char *key, const char *text);
void ly_jsonw_member_int (ly_jsonw_t *self, const char *key, int64_t value);

#endif
