/* A real token of one kind in a private directory, for the token-layer suite. */
#ifndef P11_BACKEND_H
#define P11_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct p11_backend {
    const char *kind;      /* softhsm2, tpm2, soft */
    char *dir;             /* private directory, removed at the end */
    char uri[1024];        /* token URI with module-path, no PIN */
    char module[512];
    char quirks[128];      /* the fixture's named quirks for this module */
    const char *p11kit_name; /* the module's p11-kit registration, or NULL */
    const char *label;
    const char *pin;
    bool hmac_keygen;      /* the token generates HMAC keys through PKCS#11 */
    bool hmac_import;      /* C_CreateObject of a secret key works */
    bool fork_ok;          /* the module starts afresh in a fork()ed child */
    uint8_t hmac_value[32];/* the value of the pre-made key "hmac" (if !hmac_keygen) */
    size_t hmac_value_len;
    void *priv;
} p11_backend;

int p11_backend_select(p11_backend *b, const char *kind);
int p11_backend_create(p11_backend *b);
void p11_backend_destroy(p11_backend *b);

#endif
