/*  ly_pii.h: normalization and SHA-256 of the personal data an SDK may send (email,
    phone), following Meta's Conversions API customer-information rules, so the raw
    value can be dropped at ingest. TikTok wants the phone as E.164 with its '+', so a
    phone gets both hashes. Thread-safe; no allocation. */
#ifndef LY_PII_H
#define LY_PII_H

#include "ly_prelude.h"

#define LY_PII_EMAIL_MAX 254        /* longest normalized email, in bytes */
#define LY_PII_PHONE_MAX 15         /* E.164: at most 15 digits (country code included) */

/*  Normalizes an email (len bytes of UTF-8, need not be NUL-terminated): surrounding
    white space (ASCII or Unicode: a no-break space) trimmed, lower-cased (beyond ASCII
    too, by the full mapping of JavaScript's toLowerCase: a final sigma, İ). Refuses
    what is not a plausible address: not exactly one '@', an empty local part, a
    domain without a dot (or with an empty label), white space or control characters
    inside, not UTF-8, more than LY_PII_EMAIL_MAX bytes once lower-cased. 0 / -1. */
int ly_pii_email_normalize (const char *email, size_t len, char out [LY_PII_EMAIL_MAX + 1]);

/*  Normalizes a phone number to its E.164 digits without '+' ("16505551212"): '+' or
    the international prefix "00" mark a number with its country code; spaces, tabs,
    parentheses, dashes, dots and slashes are dropped, as is a "(0)" after the country
    code. A national number (a leading trunk '0', or at most 10 digits without '+' or
    "00") gets default_cc (the project's calling code, "1".."999"; may be NULL) in front
    of it, its trunk '0' removed; without default_cc it is refused. Some calling codes
    number otherwise (s_numbering in ly_pii.c): other trunk prefixes (7, 36, 370, 375,
    55), a leading 0 that is part of the number (39, 378, 379, 225, 242), 11-digit
    mobiles written without trunk prefix (55, 86), international prefixes besides "00"
    (1, 7, 375, 61, 81, 82). Also refused: letters or other characters, fewer than 7 or
    more than 15 digits in the result, a country code that would start with 0. 0 / -1. */
int ly_pii_phone_normalize (const char *phone, size_t len, const char *default_cc,
                            char digits [LY_PII_PHONE_MAX + 1]);

/*  Lower-case hex SHA-256 of the normalized email. A value that is already 64 hex
    characters (white space trimmed) is taken as a hash and passed through, lower-cased.
    0 / -1 (not a plausible email: sha256 is ""). */
int ly_pii_email_sha256 (const char *email, size_t len, char sha256 [65]);

/*  Hex SHA-256 of the normalized phone digits (Meta) into sha256, and of '+' and those
    digits (TikTok) into e164_sha256. A value that is already 64 hex characters passes
    through, lower-cased, as sha256; e164_sha256 is then "" (unknown). 0 / -1 (invalid:
    both ""). */
int ly_pii_phone_sha256 (const char *phone, size_t len, const char *default_cc,
                         char sha256 [65], char e164_sha256 [65]);

/*  Lower-case hex SHA-256 of data (the digest is fetched from OpenSSL once). */
void ly_pii_sha256_hex (const void *data, size_t size, char hex [65]);

#endif
