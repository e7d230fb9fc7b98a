/*  ly_pii_test.c: self-test of ly_pii: email and phone normalization per Meta's rules,
    with worked examples from Meta's documentation; the hashes are hard-coded constants
    computed independently (printf '%s' NORMALIZED | sha256sum), the normalized string
    beside each; passthrough of values hashed already; what is refused. */
#include "ly_prelude.h"
#include "ly_pii.h"

static int s_failures = 0;

//  Test constants: SHA-256 of the normalized string in the comment.
#define H_JOHN_SMITH    "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"  /* john_smith@gmail.com */
#define H_SOMEONE       "72497f475e4f76d0b28f57c73a084ece576d170874eba3ee2609d9afe4b71aab"  /* someone@example.com */
#define H_JANE          "04c0d34ac8be30ac554a560fd03f4272f408a1fa10b7e7379ba048747ccea464"  /* jane.doe+tag@mail.example.co.uk */
#define H_US_650        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"  /* 16505551212 */
#define H_US_650_E164   "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"  /* +16505551212 */
#define H_US_616        "bb2fa2e6d2cea4746530c99686d0c7886ab2019875dca2d7e9e171c0e6ada00d"  /* 16169547888 */
#define H_US_616_E164   "0a36809ca24463df1133c40c2e2fa2b7f180038fe7d86bd1923a32a1a54dfe58"  /* +16169547888 */
#define H_UK            "35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823"  /* 442079460958 */
#define H_UK_E164       "f0bf0228144d9fe2bdf1da2d8ca698f17bf1410ee688b075c27062e47b6f0b6d"  /* +442079460958 */
#define H_DE            "2f9fbc550b12cbc0e6242384cc472bd1e4f058a8b773f189f7acb86d202655ce"  /* 49301234567 */
#define H_DE_E164       "74bd805bcc47f8603082430ca056311389e38b74fcdfbc32bcb5c6a9269ff3bf"  /* +49301234567 */

static void
s_check_email (const char *input, const char *normalized, const char *hash)
{
    char out [LY_PII_EMAIL_MAX + 1];
    int rc = ly_pii_email_normalize (input, strlen (input), out);
    if (normalized && (rc != 0 || strcmp (out, normalized) != 0)) {
        printf ("email \"%s\": normalized to \"%s\" (rc %d), wanted \"%s\"\n", input, out, rc, normalized);
        s_failures++;
    }
    if (!normalized && (rc != -1 || out [0])) {
        printf ("email \"%s\": accepted as \"%s\", wanted refused\n", input, out);
        s_failures++;
    }
    char sha256 [65];
    rc = ly_pii_email_sha256 (input, strlen (input), sha256);
    if (hash && (rc != 0 || strcmp (sha256, hash) != 0)) {
        printf ("email \"%s\": hash %s (rc %d), wanted %s\n", input, sha256, rc, hash);
        s_failures++;
    }
    if (!hash && (rc != -1 || sha256 [0])) {
        printf ("email \"%s\": hashed, wanted refused\n", input);
        s_failures++;
    }
}

static void
s_check_phone (const char *input, const char *cc, const char *normalized,
               const char *hash, const char *e164_hash)
{
    char digits [LY_PII_PHONE_MAX + 1];
    int rc = ly_pii_phone_normalize (input, strlen (input), cc, digits);
    if (normalized && (rc != 0 || strcmp (digits, normalized) != 0)) {
        printf ("phone \"%s\" (cc %s): normalized to \"%s\" (rc %d), wanted \"%s\"\n",
                input, cc? cc: "none", digits, rc, normalized);
        s_failures++;
    }
    if (!normalized && (rc != -1 || digits [0])) {
        printf ("phone \"%s\" (cc %s): accepted as \"%s\", wanted refused\n",
                input, cc? cc: "none", digits);
        s_failures++;
    }
    char sha256 [65], e164_sha256 [65];
    rc = ly_pii_phone_sha256 (input, strlen (input), cc, sha256, e164_sha256);
    if (hash && (rc != 0 || strcmp (sha256, hash) != 0 || strcmp (e164_sha256, e164_hash) != 0)) {
        printf ("phone \"%s\" (cc %s): hashes %s / %s (rc %d), wanted %s / %s\n",
                input, cc? cc: "none", sha256, e164_sha256, rc, hash, e164_hash);
        s_failures++;
    }
    if (!hash && (rc != -1 || sha256 [0] || e164_sha256 [0])) {
        printf ("phone \"%s\" (cc %s): hashed, wanted refused\n", input, cc? cc: "none");
        s_failures++;
    }
}

//  Checks the normalization alone.
static void
s_check_digits (const char *input, const char *cc, const char *normalized)
{
    char digits [LY_PII_PHONE_MAX + 1];
    int rc = ly_pii_phone_normalize (input, strlen (input), cc, digits);
    if (rc != 0 || strcmp (digits, normalized) != 0) {
        printf ("phone \"%s\" (cc %s): normalized to \"%s\" (rc %d), wanted \"%s\"\n",
                input, cc, digits, rc, normalized);
        s_failures++;
    }
}

static void
s_test_email (void)
{
    //  Meta's worked example: trim, lower-case.
    s_check_email (" John_Smith@gmail.com ", "john_smith@gmail.com", H_JOHN_SMITH);
    s_check_email ("john_smith@gmail.com", "john_smith@gmail.com", H_JOHN_SMITH);
    s_check_email ("Someone@Example.COM", "someone@example.com", H_SOMEONE);
    s_check_email ("\t someone@example.com\r\n", "someone@example.com", H_SOMEONE);
    s_check_email ("Jane.Doe+Tag@Mail.Example.co.UK", "jane.doe+tag@mail.example.co.uk", H_JANE);
    //  Beyond ASCII: lower-cased too, as Meta's SDKs do
    s_check_email ("José@Exämple.de", "josé@exämple.de",
                   "fd77ec53c6567bfa7b9f7110e10d3d985380bd7ab39c134586f9e35e1136f1db"); /* josé@exämple.de */
    s_check_email ("JOSÉ@EXÄMPLE.DE", "josé@exämple.de",
                   "fd77ec53c6567bfa7b9f7110e10d3d985380bd7ab39c134586f9e35e1136f1db");
    s_check_email ("ΑΘΗΝΑ@Example.gr", "αθηνα@example.gr",
                   "2ecda0a091c9ad2a79f01ff3e789bde83c461bc0edd73d8053057354c1fa8a57");
    //  ... by the full mapping, as JavaScript's toLowerCase and Python's lower() do:
    //  a capital sigma that ends a word (past case-ignorable characters) is final
    s_check_email ("ΣΟΦΟΣ@EXAMPLE.GR", "σοφος@example.gr",
                   "0a94f649e814f77d4356401444421dfc3d5d23e951f9ad98b8faab2bc5cd0139"); /* σοφος@example.gr */
    s_check_email ("ΟΔΥΣΣΕΑΣ.Σ@example.gr", "οδυσσεασ.ς@example.gr",
                   "ead7fe4fe3aafe7d73de33b7acd316b72d5f0b374d8e55b283c274eb600e4e14");
    s_check_email ("ΣΑ.Σ\xCC\x81Β@example.gr", "σα.σ\xCC\x81β@example.gr",
                   "c928c53e0a87d038275232c804c44aff5d8f3aefa7d4a17cb114d0c5b93c5cd8");
    s_check_email ("Σ@example.gr", "σ@example.gr",
                   "28a9a46f56ff4155eaf6086a87b5f4d40eb83c49b9879488bf037c96bd7aea6c");
    //  ... after a lower-case letter without an upper case (ß, ΰ), or a combining mark
    s_check_email ("ΑΰΣ@example.gr", "αΰς@example.gr",
                   "44c8357c1743d888cc83c9d2954a6116290722c022c0696631089f7ad7df7ad0");
    s_check_email ("STRAßΣ@example.de", "straßς@example.de",
                   "fe15b1229fe8804bcea39006771a624aa00c0275a5853d9189426a7180525924");
    s_check_email ("Ο\xD2\x83Σ@example.gr", "ο\xD2\x83ς@example.gr",
                   "235b1533561d6afe2035fd3148e0880045004ef35003341979a5350aa39e7fa3");
    //  ... and İ is i with a combining dot above
    s_check_email ("İSTANBUL@EXAMPLE.COM", "i\xCC\x87stanbul@example.com",
                   "21b3d4ad954ffe193659bcdcff92053ab646244b3898969a09265d00b2af7ba4");
    //  ... where the lower case takes more bytes (U+023A is 2, U+2C65 3)
    s_check_email ("\xC8\xBA@example.com", "\xE2\xB1\xA5@example.com",
                   "56571e7bc9f1bf4dcada2da2cd598382c12c17e11c78dde034d2d3315926ffb8");
    //  Unicode white space around it goes too (a no-break space, an ideographic space)
    s_check_email ("\xC2\xA0someone@example.com\xE3\x80\x80", "someone@example.com", H_SOMEONE);
    s_check_email ("\xE2\x80\xAF Someone@Example.com\xC2\x85", "someone@example.com", H_SOMEONE);

    //  Not plausible addresses.
    const char *invalid [] = {
        "", "   ", "john", "john@", "@example.com", "john@example", "john@@example.com",
        "a@b@c.com", "jo hn@example.com", "john@exa mple.com", "john@example..com",
        "john@.example.com", "john@example.com.", "john\x01@example.com", "john@example.com\x7f",
        "\"john smith\"@example.com", "jo\xFFhn@example.com", "john@exam\xC3ple.com",
        "\xC2\xA0", "foo\xC2\xA0" "bar@example.com", "foo@exa\xE2\x80\x83mple.com",
        "foo\xE3\x80\x80" "bar@example.com", "foo\xC2\x85" "bar@example.com",
        "foo\xC2\x9F" "bar@example.com", NULL
    };
    for (int i = 0; invalid [i]; i++)
        s_check_email (invalid [i], NULL, NULL);
    //  An embedded NUL is not white space: refused.
    char out [LY_PII_EMAIL_MAX + 1];
    if (ly_pii_email_normalize ("john@exa\0mple.com", 17, out) != -1) {
        printf ("email with NUL accepted\n");
        s_failures++;
    }
    //  Length: 254 bytes pass, 255 do not.
    char long_email [300];
    memset (long_email, 'a', sizeof long_email);
    memcpy (long_email + 254 - 12, "@example.com", 12);
    long_email [254] = 0;
    if (ly_pii_email_normalize (long_email, 254, out) != 0 || strlen (out) != 254) {
        printf ("254-byte email refused\n");
        s_failures++;
    }
    memset (long_email, 'a', sizeof long_email);
    memcpy (long_email + 255 - 12, "@example.com", 12);
    long_email [255] = 0;
    if (ly_pii_email_normalize (long_email, 255, out) != -1) {
        printf ("255-byte email accepted\n");
        s_failures++;
    }

    //  Hashed already: passed through, lower-cased, white space trimmed.
    char sha256 [65];
    if (ly_pii_email_sha256 (" 62A14E44F765419D10FEA99367361A727C12365E2520F32218D505ED9AA0F62F\n",
                             66, sha256) != 0 || strcmp (sha256, H_JOHN_SMITH) != 0) {
        printf ("email passthrough failed: %s\n", sha256);
        s_failures++;
    }
    //  63 or 65 hex characters are not a hash, and no email either.
    s_check_email ("62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62", NULL, NULL);
    s_check_email ("62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f0", NULL, NULL);
    //  NULL is refused, not a crash.
    if (ly_pii_email_sha256 (NULL, 0, sha256) != -1 || sha256 [0]) {
        printf ("NULL email hashed\n");
        s_failures++;
    }
}

static void
s_test_phone (void)
{
    //  Meta's worked examples: digits only, with country code, no '+'.
    s_check_phone ("+1 (650) 555-1212", NULL, "16505551212", H_US_650, H_US_650_E164);
    s_check_phone ("1 (616) 954-78 88", NULL, "16169547888", H_US_616, H_US_616_E164);
    s_check_phone ("+1 616.954.7888", "44", "16169547888", H_US_616, H_US_616_E164);
    s_check_phone ("16505551212", NULL, "16505551212", H_US_650, H_US_650_E164);
    s_check_phone ("  +16505551212\n", NULL, "16505551212", H_US_650, H_US_650_E164);
    //  International prefix 00, and the "(0)" some write after the country code.
    s_check_phone ("0044 20 7946 0958", NULL, "442079460958", H_UK, H_UK_E164);
    s_check_phone ("+44 (0) 20 7946 0958", NULL, "442079460958", H_UK, H_UK_E164);
    s_check_phone ("+44 (0)20 7946 0958", "1", "442079460958", H_UK, H_UK_E164);
    s_check_phone ("(+44) 20 7946 0958", "1", "442079460958", H_UK, H_UK_E164);
    s_check_phone ("0049-30-1234567", NULL, "49301234567", H_DE, H_DE_E164);
    s_check_phone ("+49 (30) 123 45 67", NULL, "49301234567", H_DE, H_DE_E164);
    //  National numbers: the project's calling code, trunk zero removed.
    s_check_phone ("020 7946 0958", "44", "442079460958", H_UK, H_UK_E164);
    s_check_phone ("(020) 7946-0958", "44", "442079460958", H_UK, H_UK_E164);
    s_check_phone ("030/1234567", "49", "49301234567", H_DE, H_DE_E164);
    s_check_phone ("650.555.1212", "1", "16505551212", H_US_650, H_US_650_E164);
    s_check_phone ("(650) 555-1212", "1", "16505551212", H_US_650, H_US_650_E164);
    //  No-break spaces between the groups (U+00A0, U+202F), as locale formatters write
    s_check_phone ("020\xC2\xA0" "7946\xC2\xA0" "0958", "44", "442079460958", H_UK, H_UK_E164);
    s_check_phone ("+44\xE2\x80\xAF" "20\xE2\x80\xAF" "7946\xE2\x80\xAF" "0958\xC2\xA0", NULL,
                   "442079460958", H_UK, H_UK_E164);
    //  Countries whose national numbers the common rule (a trunk 0, or at most 10 digits)
    //  would misread: another trunk prefix, a leading 0 that belongs to the number, and
    //  11-digit mobiles written without a trunk prefix.
    s_check_digits ("8 (916) 123-45-67", "7", "79161234567");
    s_check_digits ("79161234567", "7", "79161234567");
    s_check_digits ("916 123 45 67", "7", "79161234567");
    s_check_digits ("06 30 123 4567", "36", "36301234567");
    s_check_digits ("06 1 234 5678", "36", "3612345678");
    s_check_digits ("8 612 34567", "370", "37061234567");
    s_check_digits ("0 612 34567", "370", "37061234567");
    s_check_digits ("8 029 123-45-67", "375", "375291234567");
    s_check_digits ("06 6988 3401", "39", "390669883401");
    s_check_digits ("0471 123 4567", "39", "3904711234567");
    s_check_digits ("333 123 4567", "39", "393331234567");
    s_check_digits ("07 07 12 34 56", "225", "2250707123456");
    s_check_digits ("(11) 98765-4321", "55", "5511987654321");
    s_check_digits ("0 11 98765-4321", "55", "5511987654321");
    s_check_digits ("0812-3456-7890", "62", "6281234567890");
    s_check_digits ("138 1234 5678", "86", "8613812345678");
    s_check_digits ("8 (29) 123-45-67", "375", "375291234567");
    s_check_digits ("0 15 11 98765 4321", "55", "5511987654321");
    s_check_digits ("0 21 11 3456 7890", "55", "551134567890");
    //  International prefixes of the country itself, before "00"
    s_check_digits ("011 44 20 7946 0958", "1", "442079460958");
    s_check_digits ("8 10 44 20 7946 0958", "7", "442079460958");
    s_check_digits ("8 10 44 20 7946 0958", "375", "442079460958");
    s_check_digits ("0011 44 20 7946 0958", "61", "442079460958");
    s_check_digits ("010 44 20 7946 0958", "81", "442079460958");
    s_check_digits ("090-1234-5678", "81", "819012345678");
    s_check_digits ("001 44 20 7946 0958", "82", "442079460958");
    s_check_digits ("010-1234-5678", "82", "821012345678");
    s_check_digits ("00 44 20 7946 0958", "1", "442079460958");
    //  ... while other 11-digit numbers keep being read as written with a country code,
    //  the same numbers elsewhere keep the common rule, and the prefix is taken once.
    s_check_digits ("16505551212", "55", "16505551212");
    s_check_digits ("16505551212", "39", "16505551212");
    s_check_digits ("13812345678", "1", "13812345678");
    s_check_digits ("89161234567", "81", "89161234567");
    s_check_digits ("8 916 123-45-6", "7", "78916123456");
    s_check_digits ("06 6988 3401", "44", "44669883401");
    s_check_digits ("81 3 1234 5678", "7", "81312345678");     //  Japan, not 8 + 13...
    s_check_digits ("82 2 1234 5678", "7", "82212345678");     //  Korea
    s_check_digits ("81 3 1234 5678", "62", "81312345678");
    s_check_digits ("12025550123", "86", "12025550123");       //  no mobile begins 12
    //  Too long to be national where a leading 0 belongs to the number, and no country
    //  code starts with 0: refused, never hashed with a leading 0
    s_check_phone ("06 6988 3401 23", "39", NULL, NULL, NULL);
    s_check_phone ("07 07 12 34 56 7", "225", NULL, NULL, NULL);
    s_check_phone ("0549 1234567", "378", NULL, NULL, NULL);
    //  ... and without one they are refused: the country code is missing.
    s_check_phone ("020 7946 0958", NULL, NULL, NULL, NULL);
    s_check_phone ("650.555.1212", NULL, NULL, NULL, NULL);
    s_check_phone ("650.555.1212", "", NULL, NULL, NULL);
    s_check_phone ("650.555.1212", "0", NULL, NULL, NULL);
    s_check_phone ("650.555.1212", "1234", NULL, NULL, NULL);
    s_check_phone ("650.555.1212", "+1", NULL, NULL, NULL);

    //  Refused: letters, extensions, a second '+', too short, too long, 0 after '+'.
    const char *invalid [] = {
        "", "+", "   ", "abc", "+1 650 555 1212 ext 3", "+1 650 CALL NOW", "+1+6505551212",
        "+123456", "+1234567890123456", "00", "0012", "1 +650 555 1212", "+0 650 555 1212", "+44 #20 7946 0958",
        "000 44 20 7946 0958", "1-800-FLOWERS", "+1\x00" "6505551212",
        "+1 650\xC2 555 1212", "+1 650\xE2\x80\x8B" "555 1212", NULL
    };
    for (int i = 0; invalid [i]; i++)
        s_check_phone (invalid [i], "1", NULL, NULL, NULL);
    //  Fewer than 7 digits once completed: refused; exactly 7 and exactly 15: accepted.
    s_check_phone ("12345", "1", NULL, NULL, NULL);
    s_check_phone ("+1234567", NULL, "1234567",
                   "8bb0cf6eb9b17d0f7d22b456f121257dc1254e1f01665370476383ea776df414",  /* 1234567 */
                   "8b425df0d3eb16fdb7eec7d37c426fe6378708a45b25d3aa2ba65eaf54b6c9ed"); /* +1234567 */
    s_check_phone ("+123456789012345", NULL, "123456789012345",
                   "e27a7686b8028cfee7b57d954c3abccfb2a701968925f52bbd482e77be5de0bb",  /* 123456789012345 */
                   "1b4baed9795e95210d08a51886e9d33e5da06189403c2a823c9d92e222ad55e8"); /* +123456789012345 */
    //  An embedded NUL is refused, not read past.
    char digits [LY_PII_PHONE_MAX + 1];
    if (ly_pii_phone_normalize ("+1650\0" "5551212", 12, NULL, digits) != -1) {
        printf ("phone with NUL accepted\n");
        s_failures++;
    }

    //  Hashed already: passed through as Meta's hash; TikTok's is then unknown.
    char sha256 [65], e164_sha256 [65];
    if (ly_pii_phone_sha256 ("E323EC626319CA94EE8BFF2E4C87CF613BE6EA19919ED1364124E16807AB3176",
                             64, "1", sha256, e164_sha256) != 0
    ||  strcmp (sha256, H_US_650) != 0 || e164_sha256 [0] != 0) {
        printf ("phone passthrough failed: %s / %s\n", sha256, e164_sha256);
        s_failures++;
    }
    if (ly_pii_phone_sha256 (NULL, 0, "1", sha256, e164_sha256) != -1 || sha256 [0] || e164_sha256 [0]) {
        printf ("NULL phone hashed\n");
        s_failures++;
    }
}

static void
s_test_sha256 (void)
{
    char hex [65];
    ly_pii_sha256_hex ("", 0, hex);
    if (strcmp (hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") != 0) {
        printf ("sha256 of \"\" is %s\n", hex);
        s_failures++;
    }
    ly_pii_sha256_hex ("abc", 3, hex);
    if (strcmp (hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") != 0) {
        printf ("sha256 of \"abc\" is %s\n", hex);
        s_failures++;
    }
}

//  Hashing from many threads at once gives the same answers (the digest is shared).
static void *
s_hash_worker (void *arg)
{
    int *bad = (int *) arg;
    for (int i = 0; i < 2000; i++) {
        char sha256 [65], e164_sha256 [65];
        if (ly_pii_phone_sha256 ("+1 (650) 555-1212", 17, NULL, sha256, e164_sha256) != 0
        ||  strcmp (sha256, H_US_650) != 0 || strcmp (e164_sha256, H_US_650_E164) != 0)
            (*bad)++;
    }
    return NULL;
}

static void
s_test_threads (void)
{
    pthread_t threads [4];
    int bad [4] = { 0 };
    for (int i = 0; i < 4; i++)
        pthread_create (&threads [i], NULL, s_hash_worker, &bad [i]);
    for (int i = 0; i < 4; i++) {
        pthread_join (threads [i], NULL);
        if (bad [i]) {
            printf ("thread %d: %d wrong hashes\n", i, bad [i]);
            s_failures++;
        }
    }
}

int
main (void)
{
    s_test_threads ();          //  first, so the digest is fetched under contention
    s_test_sha256 ();
    s_test_email ();
    s_test_phone ();
    if (s_failures) {
        printf ("ly_pii_test: %d failures\n", s_failures);
        return 1;
    }
    printf ("ly_pii_test: OK\n");
    return 0;
}
