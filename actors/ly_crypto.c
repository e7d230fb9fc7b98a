/*  ly_crypto.c: the master key, SHA-256 hex and random tokens, on OpenSSL. */
#include "ly_crypto.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>

static int
s_hex_value (char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int
ly_master_key_load (const char *path, bool create, uint8_t key [32], char *err, size_t errlen)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd == -1 && errno == ENOENT && create) {
        if (RAND_bytes (key, 32) != 1) {
            snprintf (err, errlen, "could not generate a master key: no randomness");
            return -1;
        }
        char hex [66];
        for (int i = 0; i < 32; i++)
            sprintf (hex + 2 * i, "%02x", key [i]);
        hex [64] = '\n';
        hex [65] = 0;
        char *tmp = zsys_sprintf ("%s.tmp.%d", path, (int) getpid ());
        int out = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int rc = -1;
        if (out == -1)
            snprintf (err, errlen, "could not create master key file \"%s\": %s", tmp, strerror (errno));
        else
        if (write (out, hex, 65) != 65 || fsync (out)) {
            snprintf (err, errlen, "could not write master key file \"%s\": %s", tmp, strerror (errno));
            unlink (tmp);
        }
        else
        if (link (tmp, path) && errno != EEXIST)
            snprintf (err, errlen, "could not create master key file \"%s\": %s", path, strerror (errno));
        else
            rc = 0;
        if (out != -1) {
            close (out);
            unlink (tmp);
        }
        zstr_free (&tmp);
        memset (hex, 0, sizeof hex);
        if (rc)
            return -1;
        //  Another process may have won the race: read back what is there.
        fd = open (path, O_RDONLY | O_CLOEXEC);
    }
    if (fd == -1) {
        snprintf (err, errlen, "could not open master key file \"%s\": %s", path, strerror (errno));
        return -1;
    }
    struct stat st;
    if (fstat (fd, &st) == 0 && (st.st_mode & 077)) {
        snprintf (err, errlen, "master key file \"%s\" is readable by others (mode %04o); "
                  "run chmod 600 on it", path, (unsigned) (st.st_mode & 07777));
        close (fd);
        return -1;
    }
    char hex [80];
    ssize_t size = read (fd, hex, sizeof hex - 1);
    close (fd);
    while (size > 0 && (hex [size - 1] == '\n' || hex [size - 1] == '\r' || hex [size - 1] == ' '))
        size--;
    int rc = 0;
    if (size != 64)
        rc = -1;
    for (int i = 0; rc == 0 && i < 32; i++) {
        int hi = s_hex_value (hex [2 * i]), lo = s_hex_value (hex [2 * i + 1]);
        if (hi < 0 || lo < 0)
            rc = -1;
        else
            key [i] = (uint8_t) (hi << 4 | lo);
    }
    memset (hex, 0, sizeof hex);
    if (rc)
        snprintf (err, errlen, "master key file \"%s\" does not hold 64 hex characters", path);
    return rc;
}

static void
s_digest_hex (const uint8_t digest [32], char hex [65])
{
    static const char digits [] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex [2 * i] = digits [digest [i] >> 4];
        hex [2 * i + 1] = digits [digest [i] & 15];
    }
    hex [64] = 0;
}

void
ly_sha256_hex (const void *data, size_t size, char hex [65])
{
    uint8_t digest [32];
    unsigned int digest_len = 0;
    EVP_Digest (data, size, digest, &digest_len, EVP_sha256 (), NULL);
    s_digest_hex (digest, hex);
}

void
ly_hmac_sha256_hex (const uint8_t key [32], const void *data, size_t size, char hex [65])
{
    uint8_t digest [32];
    unsigned int digest_len = 0;
    HMAC (EVP_sha256 (), key, 32, (const unsigned char *) data, size, digest, &digest_len);
    s_digest_hex (digest, hex);
}

bool
ly_is_sha256_hex (const char *text, size_t len)
{
    if (!text || len != 64)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isxdigit ((unsigned char) text [i]))
            return false;
    return true;
}

bool
ly_is_uuid (const char *text)
{
    if (!text || strlen (text) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash? text [i] != '-': !isxdigit ((unsigned char) text [i]))
            return false;
    }
    return true;
}

char *
ly_token_new (const char *prefix)
{
    static const char alphabet [] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t prefix_len = strlen (prefix);
    char *token = (char *) malloc (prefix_len + 33);
    if (!token)
        return NULL;
    memcpy (token, prefix, prefix_len);
    size_t filled = 0;
    while (filled < 32) {
        uint8_t bytes [48];
        if (RAND_bytes (bytes, sizeof bytes) != 1) {
            free (token);
            return NULL;
        }
        for (size_t i = 0; i < sizeof bytes && filled < 32; i++)
            if (bytes [i] < 248)            //  248 = 4 * 62: no modulo bias
                token [prefix_len + filled++] = alphabet [bytes [i] % 62];
    }
    token [prefix_len + 32] = 0;
    return token;
}

//  --------------------------------------------------------------------------
//  Secrets at rest: AES-256-GCM under the master key

static uint8_t s_master_key [32];
static bool s_master_key_set;

void
ly_master_key_set (const uint8_t key [32])
{
    if (key)
        memcpy (s_master_key, key, 32);
    else
        OPENSSL_cleanse (s_master_key, 32);
    s_master_key_set = key != NULL;
}

const uint8_t *
ly_master_key (void)
{
    return s_master_key_set? s_master_key: NULL;
}

#define S_NONCE 12
#define S_TAG 16

int
ly_secret_seal (const uint8_t key [32], const char *aad, const void *plain, size_t len,
                uint8_t **sealed_p, size_t *sealed_len)
{
    if (!key || len > INT_MAX - S_NONCE - S_TAG)
        return -1;
    uint8_t *sealed = (uint8_t *) malloc (S_NONCE + len + S_TAG);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new ();
    int out_len = 0, final_len = 0;
    int ok = sealed && ctx
          && RAND_bytes (sealed, S_NONCE) == 1
          && EVP_EncryptInit_ex (ctx, EVP_aes_256_gcm (), NULL, NULL, NULL) == 1
          && EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_SET_IVLEN, S_NONCE, NULL) == 1
          && EVP_EncryptInit_ex (ctx, NULL, NULL, key, sealed) == 1
          && EVP_EncryptUpdate (ctx, NULL, &out_len, (const uint8_t *) aad, (int) strlen (aad)) == 1
          && EVP_EncryptUpdate (ctx, sealed + S_NONCE, &out_len, (const uint8_t *) plain, (int) len) == 1
          && EVP_EncryptFinal_ex (ctx, sealed + S_NONCE + out_len, &final_len) == 1
          && EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_GET_TAG, S_TAG, sealed + S_NONCE + len) == 1;
    EVP_CIPHER_CTX_free (ctx);
    if (!ok) {
        free (sealed);
        return -1;
    }
    *sealed_p = sealed;
    *sealed_len = S_NONCE + len + S_TAG;
    return 0;
}

int
ly_secret_open (const uint8_t key [32], const char *aad, const uint8_t *sealed, size_t len,
                char **plain_p, size_t *plain_len)
{
    if (!key || len < S_NONCE + S_TAG || len > INT_MAX)
        return -1;
    size_t text_len = len - S_NONCE - S_TAG;
    char *plain = (char *) malloc (text_len + 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new ();
    int out_len = 0, final_len = 0;
    int ok = plain && ctx
          && EVP_DecryptInit_ex (ctx, EVP_aes_256_gcm (), NULL, NULL, NULL) == 1
          && EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_SET_IVLEN, S_NONCE, NULL) == 1
          && EVP_DecryptInit_ex (ctx, NULL, NULL, key, sealed) == 1
          && EVP_DecryptUpdate (ctx, NULL, &out_len, (const uint8_t *) aad, (int) strlen (aad)) == 1
          && EVP_DecryptUpdate (ctx, (uint8_t *) plain, &out_len, sealed + S_NONCE, (int) text_len) == 1
          && EVP_CIPHER_CTX_ctrl (ctx, EVP_CTRL_GCM_SET_TAG, S_TAG, (void *) (sealed + S_NONCE + text_len)) == 1
          && EVP_DecryptFinal_ex (ctx, (uint8_t *) plain + out_len, &final_len) == 1;
    EVP_CIPHER_CTX_free (ctx);
    if (!ok) {
        if (plain)
            OPENSSL_cleanse (plain, text_len + 1);
        free (plain);
        return -1;
    }
    plain [text_len] = 0;
    *plain_p = plain;
    *plain_len = text_len;
    return 0;
}
