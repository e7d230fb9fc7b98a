/*  ly_pii.c: email and phone normalization and SHA-256 hex, per Meta's Conversions API
    customer-information rules (and TikTok's E.164 phone hash). Every buffer that held a
    normalized value is wiped before returning: only the hashes leave this file. */
#include "ly_pii.h"
#include "ly_casing_data.h"
#include "ly_crypto.h"
#include "ly_utf8.h"
#include <locale.h>
#include <wctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

static EVP_MD *s_sha256_fetched = NULL;     //  fetched once, kept for the process
static const EVP_MD *s_sha256 = NULL;       //  what we digest with
static pthread_once_t s_sha256_once = PTHREAD_ONCE_INIT;

static void
s_sha256_init (void)
{
    //  An explicit fetch avoids OpenSSL's implicit fetch on every digest call.
    s_sha256_fetched = EVP_MD_fetch (NULL, "SHA256", NULL);
    s_sha256 = s_sha256_fetched? s_sha256_fetched: EVP_sha256 ();
}

void
ly_pii_sha256_hex (const void *data, size_t size, char hex [65])
{
    static const char digits [] = "0123456789abcdef";
    pthread_once (&s_sha256_once, s_sha256_init);
    uint8_t digest [EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (EVP_Digest (data, size, digest, &digest_len, s_sha256, NULL) != 1 || digest_len != 32) {
        //  Only an OpenSSL without SHA-256 gets here; say so rather than hash nothing.
        fprintf (stderr, "ly_pii: E: could not compute SHA-256\n");
        abort ();
    }
    for (int i = 0; i < 32; i++) {
        hex [2 * i] = digits [digest [i] >> 4];
        hex [2 * i + 1] = digits [digest [i] & 15];
    }
    hex [64] = 0;
}

static bool
s_is_space (char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

//  Length of the white space character (ASCII or Unicode) ending at text [len - 1], or
//  0 when the last character is none.
static size_t
s_space_at_end (const char *text, size_t len)
{
    if (s_is_space (text [len - 1]))
        return 1;
    size_t start = len - 1;
    while (start > 0 && len - start < 4 && ((uint8_t) text [start] & 0xC0) == 0x80)
        start--;
    size_t n = ly_utf8_sequence (text + start, len - start);
    return n > 1 && start + n == len
        && ly_utf8_is_space (ly_utf8_decode (text + start, n))? n: 0;
}

//  Length of the white space character (ASCII or Unicode) at text, or 0.
static size_t
s_space_at_start (const char *text, size_t len)
{
    if (s_is_space (text [0]))
        return 1;
    size_t n = ly_utf8_sequence (text, len);
    return n > 1 && ly_utf8_is_space (ly_utf8_decode (text, n))? n: 0;
}

//  Narrows [*text, *text + *len) to its content without surrounding white space,
//  ASCII or Unicode (a no-break space pasted with an address).
static void
s_trim (const char **text, size_t *len)
{
    size_t n;
    while (*len && (n = s_space_at_start (*text, *len))) {
        *text += n;
        *len -= n;
    }
    while (*len && (n = s_space_at_end (*text, *len)))
        *len -= n;
}

static locale_t s_utf8_locale = (locale_t) 0;  //  C.UTF-8, for towlower_l; kept
static pthread_once_t s_utf8_locale_once = PTHREAD_ONCE_INIT;

static void
s_utf8_locale_init (void)
{
    s_utf8_locale = newlocale (LC_CTYPE_MASK, "C.UTF-8", (locale_t) 0);
}

//  The lower case of code beyond ASCII (Unicode's simple mapping, as glibc's C.UTF-8
//  has it; code itself when there is none or the locale is missing).
static uint32_t
s_to_lower (uint32_t code)
{
    pthread_once (&s_utf8_locale_once, s_utf8_locale_init);
    if (!s_utf8_locale)
        return code;
    wint_t lower = towlower_l ((wint_t) code, s_utf8_locale);
    return lower > 0 && lower <= 0x10FFFF? (uint32_t) lower: code;
}

//  True when code is in one of the count sorted, disjoint ranges
static bool
s_in_ranges (uint32_t code, const uint32_t ranges [][2], size_t count)
{
    size_t low = 0, high = count;
    while (low < high) {
        size_t mid = (low + high) / 2;
        if (code < ranges [mid][0])
            high = mid;
        else
        if (code > ranges [mid][1])
            low = mid + 1;
        else
            return true;
    }
    return false;
}

//  Unicode's Cased and Case_Ignorable (ly_casing_data.h, made by tools/gen_casing.py)
static bool
s_cased (uint32_t code)
{
    return s_in_ranges (code, ly_cased_ranges,
                        sizeof ly_cased_ranges / sizeof ly_cased_ranges [0]);
}

static bool
s_case_ignorable (uint32_t code)
{
    return s_in_ranges (code, ly_case_ignorable_ranges,
                        sizeof ly_case_ignorable_ranges / sizeof ly_case_ignorable_ranges [0]);
}

//  Whether a capital sigma at text [0, len) (its bytes, n) ends a word (Unicode's
//  Final_Sigma, which full lower-casing applies, as JavaScript's toLowerCase and
//  Python's lower() do): a cased letter before it (prev_cased), none after it past
//  case-ignorable characters.
static bool
s_final_sigma (const char *text, size_t len, size_t n, bool prev_cased)
{
    if (!prev_cased)
        return false;
    for (size_t i = n; i < len; ) {
        size_t next = ly_utf8_sequence (text + i, len - i);
        if (next == 0)
            return true;
        uint32_t code = ly_utf8_decode (text + i, next);
        if (!s_case_ignorable (code))
            return !s_cased (code);
        i += next;
    }
    return true;
}

static void
s_hex_lower (const char *text, char hex [65])
{
    for (size_t i = 0; i < 64; i++)
        hex [i] = (char) tolower ((unsigned char) text [i]);
    hex [64] = 0;
}

int
ly_pii_email_normalize (const char *email, size_t len, char out [LY_PII_EMAIL_MAX + 1])
{
    out [0] = 0;
    if (!email)
        return -1;
    s_trim (&email, &len);
    if (len == 0 || len > LY_PII_EMAIL_MAX)
        return -1;
    size_t at = SIZE_MAX, out_len = 0;
    bool prev_cased = false;            //  a cased letter before, past case-ignorable ones
    for (size_t i = 0; i < len; ) {
        unsigned char c = (unsigned char) email [i];
        if (c <= ' ' || c == 0x7f)
            goto invalid;               //  white space or control character inside
        if (c == '@') {
            if (at != SIZE_MAX)
                goto invalid;           //  a second '@'
            at = out_len;
        }
        if (c < 0x80) {                 //  the common case, without decoding
            if (out_len == LY_PII_EMAIL_MAX)
                goto invalid;
            out [out_len++] = (char) (c >= 'A' && c <= 'Z'? c + ('a' - 'A'): c);
            if (!s_case_ignorable (c))
                prev_cased = s_cased (c);
            i++;
            continue;
        }
        //  Lower-cased (Meta's rule) beyond ASCII too: "JOSÉ@" is "josé@", by the full
        //  mapping as Meta's SDKs (JavaScript, Python, Java) apply it: İ is i and a
        //  combining dot, a capital sigma that ends a word is ς
        size_t n = ly_utf8_sequence (email + i, len - i);
        if (n == 0)
            goto invalid;               //  not UTF-8
        uint32_t code = ly_utf8_decode (email + i, n);
        if (ly_utf8_is_space (code) || ly_utf8_is_control (code))
            goto invalid;               //  a no-break space or a C1 control inside
        char lower [8];
        size_t lower_len;
        if (code == 0x130)
            lower_len = ly_utf8_encode ('i', lower) + ly_utf8_encode (0x307, lower + 1);
        else
        if (code == 0x3A3)
            lower_len = ly_utf8_encode (s_final_sigma (email + i, len - i, n, prev_cased)
                                        ? 0x3C2: 0x3C3, lower);
        else
            lower_len = ly_utf8_encode (s_to_lower (code), lower);
        if (!s_case_ignorable (code))
            prev_cased = s_cased (code);
        if (out_len + lower_len > LY_PII_EMAIL_MAX)
            goto invalid;
        memcpy (out + out_len, lower, lower_len);
        out_len += lower_len;
        i += n;
    }
    out [out_len] = 0;
    len = out_len;
    if (at == SIZE_MAX || at == 0)
        goto invalid;                   //  no '@', or an empty local part
    //  The domain: at least two labels, none empty ("a@b.c", not "a@b", "a@.b", "a@b..c").
    const char *domain = out + at + 1;
    size_t domain_len = len - at - 1;
    size_t labels = 0, label_len = 0;
    for (size_t i = 0; i <= domain_len; i++) {
        if (i == domain_len || domain [i] == '.') {
            if (label_len == 0)
                goto invalid;
            labels++;
            label_len = 0;
        }
        else
            label_len++;
    }
    if (labels < 2)
        goto invalid;
    return 0;

invalid:
    OPENSSL_cleanse (out, LY_PII_EMAIL_MAX + 1);
    out [0] = 0;
    return -1;
}

//  The project's calling code, when it is one ("1".."999", no leading zero); else NULL.
static const char *
s_calling_code (const char *default_cc)
{
    if (!default_cc)
        return NULL;
    size_t len = strlen (default_cc);
    if (len < 1 || len > 3 || default_cc [0] == '0')
        return NULL;
    for (size_t i = 0; i < len; i++)
        if (default_cc [i] < '0' || default_cc [i] > '9')
            return NULL;
    return default_cc;
}

//  A prefix a number may begin with: digits, '.' for any digit, "[3-9]" for a range; the
//  first `strip` digits go, and the digits left must number shortest..longest.
typedef struct {
    const char *pattern;            //  what the number begins with, or NULL
    size_t strip;                   //  digits of it that go
    size_t shortest;                //  fewest digits left after them ...
    size_t longest;                 //  ... and most, to tell it from a country code
} s_prefix_t;

//  How a country writes numbers where that differs from the rule for every other calling
//  code: "+" or "00" before an international number, else a leading trunk 0 (removed),
//  or at most 10 digits as written, for a national one.
typedef struct {
    const char *cc;                 //  calling code
    s_prefix_t idd [2];             //  international prefixes besides "00", tried first
    s_prefix_t trunk [2];           //  trunk prefixes besides 0, tried next
    bool zero_kept;                 //  a leading 0 belongs to the number: no trunk 0
    const char *eleven;             //  11 digits written without a trunk prefix that begin
                                    //  like this are national, or NULL
} s_numbering_t;

#define S_NO_PREFIX { NULL, 0, 0, 0 }

static const s_numbering_t s_numbering [] = {
    //  USA, Canada: 011 44 20 ... dialled abroad
    { "1",   { { "011", 3, 1, 15 } }, { S_NO_PREFIX }, false, NULL },
    //  Russia, Kazakhstan: 8 (916) 123-45-67; 8 10 44 ... abroad. No area code begins
    //  with 1 or 2, so 81 (Japan) and 82 (Korea) numbers written without '+' stay theirs
    { "7",   { { "810", 3, 1, 15 } }, { { "8[3-9]", 1, 10, 10 } }, false, NULL },
    //  Hungary: 06 30 123 4567
    { "36",  { S_NO_PREFIX }, { { "06", 2, 8, 9 } }, false, NULL },
    //  Lithuania: 8 612 34567 (and 0 612 34567)
    { "370", { S_NO_PREFIX }, { { "8", 1, 8, 8 } }, false, NULL },
    //  Belarus: 8 029 123-45-67, 8 (29) 123-45-67; 8 10 ... abroad
    { "375", { { "810", 3, 1, 15 } }, { { "80", 2, 9, 9 }, { "8[1-9]", 1, 9, 9 } }, false, NULL },
    //  Italy: 06 6988 3401, 0X XXXX XXXXX; the 0 stays
    { "39",  { S_NO_PREFIX }, { S_NO_PREFIX }, true, "0" },
    { "378", { S_NO_PREFIX }, { S_NO_PREFIX }, true, NULL },      //  San Marino: 0549 123456
    { "379", { S_NO_PREFIX }, { S_NO_PREFIX }, true, NULL },      //  Vatican City
    { "225", { S_NO_PREFIX }, { S_NO_PREFIX }, true, NULL },      //  Côte d'Ivoire: 07 07 12 34 56
    { "242", { S_NO_PREFIX }, { S_NO_PREFIX }, true, NULL },      //  Congo: 06 123 4567
    //  Brazil: mobiles (11) 98765-4321; 0 15 11 98765-4321 with a carrier code
    { "55",  { S_NO_PREFIX }, { { "0[1-9][1-9]", 3, 10, 11 } }, false, "[1-9][1-9]9" },
    //  Australia: 0011 44 20 ... abroad
    { "61",  { { "0011", 4, 1, 15 } }, { S_NO_PREFIX }, false, NULL },
    //  Japan: 010 44 20 ... abroad
    { "81",  { { "010", 3, 1, 15 } }, { S_NO_PREFIX }, false, NULL },
    //  South Korea: 001 44 20 ..., 002 ... abroad (a carrier's digit after 00)
    { "82",  { { "00[1-9]", 3, 1, 15 } }, { S_NO_PREFIX }, false, NULL },
    //  China: mobiles 138 1234 5678
    { "86",  { S_NO_PREFIX }, { S_NO_PREFIX }, false, "1[3-9]" },
};

//  The numbering of calling code cc, or NULL for the common rule.
static const s_numbering_t *
s_numbering_of (const char *cc)
{
    for (size_t i = 0; cc && i < sizeof s_numbering / sizeof s_numbering [0]; i++)
        if (strcmp (s_numbering [i].cc, cc) == 0)
            return &s_numbering [i];
    return NULL;
}

//  Whether the count digits begin like pattern (digits, '.' any digit, "[a-b]" a range).
static bool
s_begins_like (const char *digits, size_t count, const char *pattern)
{
    size_t at = 0;
    for (const char *p = pattern; *p; p++, at++) {
        if (at == count)
            return false;
        if (*p == '[') {
            if (digits [at] < p [1] || digits [at] > p [3])
                return false;
            p += 4;                     //  "[a-b" read; the loop steps over ']'
        }
        else
        if (*p != '.' && *p != digits [at])
            return false;
    }
    return true;
}

//  The digits of the first prefix of prefixes [2] the count digits begin with, leaving
//  as many as it wants, or 0.
static size_t
s_prefix_strip (const s_prefix_t prefixes [2], const char *found, size_t count)
{
    for (size_t i = 0; i < 2 && prefixes [i].pattern; i++)
        if (count > prefixes [i].strip && s_begins_like (found, count, prefixes [i].pattern)
        &&  count - prefixes [i].strip >= prefixes [i].shortest
        &&  count - prefixes [i].strip <= prefixes [i].longest)
            return prefixes [i].strip;
    return 0;
}

//  Where the national number begins in the count digits written without an international
//  prefix (after its trunk prefix), or -1 when they are an international number.
static ssize_t
s_national_start (const char *found, size_t count, const s_numbering_t *numbering)
{
    size_t trunk = numbering? s_prefix_strip (numbering->trunk, found, count): 0;
    if (trunk)
        return (ssize_t) trunk;
    if (count > 0 && found [0] == '0' && !(numbering && numbering->zero_kept))
        return 1;                       //  the trunk 0 ("00" was taken as international)
    if (count <= 10
    || (count == 11 && numbering && numbering->eleven
    &&  s_begins_like (found, count, numbering->eleven)))
        return 0;
    return -1;
}

int
ly_pii_phone_normalize (const char *phone, size_t len, const char *default_cc,
                        char digits [LY_PII_PHONE_MAX + 1])
{
    digits [0] = 0;
    if (!phone)
        return -1;
    s_trim (&phone, &len);
    char found [24];                    //  the digits as written
    size_t count = 0;
    size_t space;                       //  bytes of a Unicode space
    bool international = false;
    int rc = -1;
    for (size_t i = 0; i < len; i++) {
        char c = phone [i];
        if (c == '+' && count == 0 && !international)
            international = true;       //  before the first digit: "+44 ...", "(+44) ..."
        else
        if (c >= '0' && c <= '9') {
            if (count == sizeof found)
                goto done;              //  far too long to be a phone number
            found [count++] = c;
        }
        else
        if (c == '(' && count > 0 && i + 2 < len && phone [i + 1] == '0' && phone [i + 2] == ')')
            i += 2;                     //  "+44 (0) 20 ...": the trunk zero, not dialled
        else
        if ((unsigned char) c >= 0x80 && (space = s_space_at_start (phone + i, len - i)))
            i += space - 1;             //  a no-break space between groups, as formatters
                                        //  for French and other locales write them
        else
        if (!strchr (" \t-()./", c) || c == 0)
            goto done;                  //  letters, a second '+', anything else
    }
    const char *cc = s_calling_code (default_cc);
    const s_numbering_t *numbering = s_numbering_of (cc);
    size_t start = 0;
    if (!international && numbering
    &&  (start = s_prefix_strip (numbering->idd, found, count)) > 0)
        international = true;           //  the country's own international prefix
    else
    if (!international && count >= 2 && found [0] == '0' && found [1] == '0') {
        international = true;           //  "00" international prefix
        start = 2;
    }
    ssize_t national = -1;              //  where the national number begins, past its
    if (!international)                 //  trunk prefix; -1: written with its country code
        national = s_national_start (found, count, numbering);
    size_t size = 0;
    if (international) {
        if (start == count || found [start] == '0')
            goto done;                  //  no country code starts with 0
        size = count - start;
        if (size > LY_PII_PHONE_MAX)
            goto done;
        memcpy (digits, found + start, size);
    }
    else
    if (national >= 0) {
        //  A national number: it needs the project's calling code.
        if (!cc)
            goto done;
        start = (size_t) national;
        size_t cc_len = strlen (cc);
        if (start == count || cc_len + count - start > LY_PII_PHONE_MAX)
            goto done;
        memcpy (digits, cc, cc_len);
        memcpy (digits + cc_len, found + start, count - start);
        size = cc_len + count - start;
    }
    else {
        if (count > LY_PII_PHONE_MAX || found [0] == '0')
            goto done;                  //  no country code starts with 0
        memcpy (digits, found, count);
        size = count;
    }
    digits [size] = 0;
    if (size >= 7 && size <= LY_PII_PHONE_MAX)
        rc = 0;

done:
    OPENSSL_cleanse (found, sizeof found);
    if (rc) {
        OPENSSL_cleanse (digits, LY_PII_PHONE_MAX + 1);
        digits [0] = 0;
    }
    return rc;
}

int
ly_pii_email_sha256 (const char *email, size_t len, char sha256 [65])
{
    sha256 [0] = 0;
    if (!email)
        return -1;
    s_trim (&email, &len);
    if (ly_is_sha256_hex (email, len)) {
        s_hex_lower (email, sha256);
        return 0;
    }
    char normalized [LY_PII_EMAIL_MAX + 1];
    if (ly_pii_email_normalize (email, len, normalized))
        return -1;
    ly_pii_sha256_hex (normalized, strlen (normalized), sha256);
    OPENSSL_cleanse (normalized, sizeof normalized);
    return 0;
}

int
ly_pii_phone_sha256 (const char *phone, size_t len, const char *default_cc,
                     char sha256 [65], char e164_sha256 [65])
{
    sha256 [0] = 0;
    e164_sha256 [0] = 0;
    if (!phone)
        return -1;
    s_trim (&phone, &len);
    if (ly_is_sha256_hex (phone, len)) {
        s_hex_lower (phone, sha256);
        return 0;
    }
    char e164 [LY_PII_PHONE_MAX + 2];   //  '+' digits NUL
    e164 [0] = '+';
    if (ly_pii_phone_normalize (phone, len, default_cc, e164 + 1))
        return -1;
    size_t size = strlen (e164);
    ly_pii_sha256_hex (e164 + 1, size - 1, sha256);
    ly_pii_sha256_hex (e164, size, e164_sha256);
    OPENSSL_cleanse (e164, sizeof e164);
    return 0;
}
