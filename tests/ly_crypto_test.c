/*  ly_crypto_test.c: master key files, SHA-256 hex, UUID text, tokens and sealed secrets. */
#include "ly_prelude.h"
#include "ly_crypto.h"

int
main (void)
{
    char dir [] = "/tmp/ly_crypto_test.XXXXXX";
    assert (mkdtemp (dir));
    char path [256], err [256];
    snprintf (path, sizeof path, "%s/master.key", dir);
    uint8_t key [32], again [32];
    assert (ly_master_key_load (path, false, key, err, sizeof err) == -1 && strstr (err, path));
    assert (ly_master_key_load (path, true, key, err, sizeof err) == 0);
    struct stat st;
    assert (stat (path, &st) == 0 && (st.st_mode & 0777) == 0600);
    assert (ly_master_key_load (path, true, again, err, sizeof err) == 0);
    assert (memcmp (key, again, 32) == 0);
    chmod (path, 0644);
    assert (ly_master_key_load (path, false, again, err, sizeof err) == -1 && strstr (err, "chmod"));
    chmod (path, 0600);
    FILE *file = fopen (path, "w");
    fputs ("not hex\n", file);
    fclose (file);
    assert (ly_master_key_load (path, false, again, err, sizeof err) == -1);
    unlink (path);
    rmdir (dir);

    char hex [65];
    ly_sha256_hex ("abc", 3, hex);
    assert (streq (hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    assert (ly_is_sha256_hex (hex, 64) && !ly_is_sha256_hex (hex, 63) && !ly_is_sha256_hex (NULL, 64));
    assert (!ly_is_sha256_hex ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015aZ", 64));

    assert (ly_is_uuid ("0b5e6f0e-3c1a-4d2b-9f6e-1a2b3c4d5e6F"));
    assert (!ly_is_uuid (NULL) && !ly_is_uuid ("") && !ly_is_uuid ("not-a-uuid"));
    assert (!ly_is_uuid ("0b5e6f0e-3c1a-4d2b-9f6e-1a2b3c4d5e6"));       //  35 characters
    assert (!ly_is_uuid ("0b5e6f0e-3c1a-4d2b-9f6e-1a2b3c4d5e6f0"));     //  37
    assert (!ly_is_uuid ("0b5e6f0e3c1a-4d2b-9f6e-1a2b3c4d5e6f0"));      //  dash misplaced
    assert (!ly_is_uuid ("0b5e6f0g-3c1a-4d2b-9f6e-1a2b3c4d5e6f"));      //  not hex

    char *token = ly_token_new ("lys_");
    assert (token && strlen (token) == 36 && strncmp (token, "lys_", 4) == 0);
    char *other = ly_token_new ("lys_");
    assert (strcmp (token, other));
    free (token);
    free (other);

    const char *secret = "EAAB-access-token-value";
    uint8_t *sealed;
    size_t sealed_len;
    assert (ly_secret_seal (key, "project_layers/p1/meta", secret, strlen (secret), &sealed, &sealed_len) == 0);
    assert (sealed_len == strlen (secret) + 28);
    assert (!memmem (sealed, sealed_len, secret, strlen (secret)));
    char *plain;
    size_t plain_len;
    assert (ly_secret_open (key, "project_layers/p1/meta", sealed, sealed_len, &plain, &plain_len) == 0);
    assert (plain_len == strlen (secret) && streq (plain, secret));
    free (plain);
    assert (ly_secret_open (key, "project_layers/p2/meta", sealed, sealed_len, &plain, &plain_len) == -1);
    sealed [sealed_len / 2] ^= 1;
    assert (ly_secret_open (key, "project_layers/p1/meta", sealed, sealed_len, &plain, &plain_len) == -1);
    assert (ly_secret_open (key, "x", sealed, 10, &plain, &plain_len) == -1);
    free (sealed);
    uint8_t *first, *second;
    size_t first_len, second_len;
    assert (ly_secret_seal (key, "a", "same", 4, &first, &first_len) == 0);
    assert (ly_secret_seal (key, "a", "same", 4, &second, &second_len) == 0);
    assert (memcmp (first, second, first_len));     //  fresh nonce each time
    free (first);
    free (second);
    printf ("ly_crypto_test: passed\n");
    return 0;
}
