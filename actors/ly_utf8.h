/*  ly_utf8.h: the one UTF-8 rule every module checks text against (RFC 3629, as
    PostgreSQL and jansson take it: no overlong forms, no surrogates, nothing past
    U+10FFFF). Inline: the ingest path calls it for every non-ASCII byte. */
#ifndef LY_UTF8_H_INCLUDED
#define LY_UTF8_H_INCLUDED

#include "ly_prelude.h"

/*  Length of the well-formed UTF-8 character at text (at most left bytes, at least 1):
    1 for ASCII, 2 to 4, or 0 when it is not one. */
static inline size_t
ly_utf8_sequence (const void *text, size_t left)
{
    const uint8_t *p = (const uint8_t *) text;
    uint8_t c = p [0];
    if (c < 0x80)
        return 1;
    size_t need;
    uint8_t low = 0x80, high = 0xBF;    //  bounds of the second byte
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else
    if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            low = 0xA0;                 //  no overlong forms
        if (c == 0xED)
            high = 0x9F;                //  no surrogates
    }
    else
    if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            low = 0x90;                 //  no overlong forms
        if (c == 0xF4)
            high = 0x8F;                //  nothing past U+10FFFF
    }
    else
        return 0;
    if (left < need || p [1] < low || p [1] > high)
        return 0;
    for (size_t index = 2; index < need; index++)
        if (p [index] < 0x80 || p [index] > 0xBF)
            return 0;
    return need;
}

/*  The code point of the well-formed character of n bytes at text (n as
    ly_utf8_sequence says). */
static inline uint32_t
ly_utf8_decode (const void *text, size_t n)
{
    const uint8_t *p = (const uint8_t *) text;
    if (n == 1)
        return p [0];
    uint32_t code = p [0] & (0xFF >> (n + 1));
    for (size_t i = 1; i < n; i++)
        code = (code << 6) | (p [i] & 0x3F);
    return code;
}

/*  Writes code (at most U+10FFFF) as UTF-8 at out; returns its length, 1 to 4. */
static inline size_t
ly_utf8_encode (uint32_t code, char *out)
{
    if (code < 0x80) {
        out [0] = (char) code;
        return 1;
    }
    if (code < 0x800) {
        out [0] = (char) (0xC0 | (code >> 6));
        out [1] = (char) (0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out [0] = (char) (0xE0 | (code >> 12));
        out [1] = (char) (0x80 | ((code >> 6) & 0x3F));
        out [2] = (char) (0x80 | (code & 0x3F));
        return 3;
    }
    out [0] = (char) (0xF0 | (code >> 18));
    out [1] = (char) (0x80 | ((code >> 12) & 0x3F));
    out [2] = (char) (0x80 | ((code >> 6) & 0x3F));
    out [3] = (char) (0x80 | (code & 0x3F));
    return 4;
}

/*  White space beyond ASCII, as Unicode (and so Python's str.strip, which Meta's
    business SDK trims with) has it: NEL, no-break spaces, the typographic spaces, the
    line and paragraph separators, the ideographic space. */
static inline bool
ly_utf8_is_space (uint32_t code)
{
    return code == 0x85 || code == 0xA0 || code == 0x1680 || (code >= 0x2000 && code <= 0x200A)
        || code == 0x2028 || code == 0x2029 || code == 0x202F || code == 0x205F
        || code == 0x3000;
}

/*  A control character: C0, DEL or C1. */
static inline bool
ly_utf8_is_control (uint32_t code)
{
    return code < 0x20 || (code >= 0x7F && code <= 0x9F);
}

/*  The characters of text when it is valid UTF-8 without a control character (a name,
    a label); -1 otherwise. */
static inline long
ly_utf8_plain_chars (const char *text)
{
    size_t len = text? strlen (text): 0;
    long chars = 0;
    for (size_t i = 0; i < len; chars++) {
        size_t n = ly_utf8_sequence (text + i, len - i);
        if (!n || ly_utf8_is_control (ly_utf8_decode (text + i, n)))
            return -1;
        i += n;
    }
    return chars;
}

#endif
