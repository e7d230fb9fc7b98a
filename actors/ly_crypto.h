/*  ly_crypto.h: the master key (kept outside the database) and hashing helpers. */
#ifndef LY_CRYPTO_H
#define LY_CRYPTO_H

#include "ly_prelude.h"

/*  Reads the 32-byte master key (64 hex characters) from path; when the file does not
    exist and create is true, makes a new random key there with mode 0600. Refuses a
    key file that others can read. 0 / -1 (reason in err). */
int ly_master_key_load (const char *path, bool create, uint8_t key [32], char *err, size_t errlen);

/*  Lower-case hex SHA-256 of data into hex (65 bytes with the NUL). */
void ly_sha256_hex (const void *data, size_t size, char hex [65]);

/*  Lower-case hex HMAC-SHA-256 of data under a 32-byte key into hex (65 bytes). */
void ly_hmac_sha256_hex (const uint8_t key [32], const void *data, size_t size, char hex [65]);

/*  True when text (len bytes) is exactly 64 hex digits, as a SHA-256 hex is. */
bool ly_is_sha256_hex (const char *text, size_t len);

/*  True when text is a UUID in its 36-character text form (any hex case). */
bool ly_is_uuid (const char *text);

/*  A random token: prefix followed by 32 base62 characters; caller owns. NULL when the
    system has no randomness to give. */
char *ly_token_new (const char *prefix);

/*  The process-wide master key, set once by main after loading it; NULL before. */
void ly_master_key_set (const uint8_t key [32]);
const uint8_t *ly_master_key (void);

/*  Encrypts plain (len bytes) with AES-256-GCM under key. *sealed_p gets
    12-byte nonce || ciphertext || 16-byte tag (caller frees). aad (a NUL-terminated
    label, e.g. "project_layers/<project_id>/meta") is authenticated, not stored: a
    ciphertext moved to another row does not open. 0 / -1. */
int ly_secret_seal (const uint8_t key [32], const char *aad, const void *plain, size_t len,
                    uint8_t **sealed_p, size_t *sealed_len);
/*  Decrypts what ly_secret_seal made; *plain_p is NUL-terminated (caller frees, and
    should wipe). -1 when the data was altered, the aad or key differ, or it is short. */
int ly_secret_open (const uint8_t key [32], const char *aad, const uint8_t *sealed, size_t len,
                    char **plain_p, size_t *plain_len);

#endif
