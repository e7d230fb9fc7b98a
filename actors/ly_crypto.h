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

/*  A random token: prefix followed by 32 base62 characters; caller owns. NULL when the
    system has no randomness to give. */
char *ly_token_new (const char *prefix);

#endif
