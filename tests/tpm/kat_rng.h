/* A deterministic "random" stream for the known-answer tests: block i
 * (i = 0, 1, ...) is SHA-256(label || u32be(i)), the blocks concatenated.
 * The vectors in vectors/ were made with label "custos tpm kat". */
#ifndef CU_TPM_KAT_RNG_H
#define CU_TPM_KAT_RNG_H

#include <custos/tpmsvc.h>

#include <openssl/evp.h>
#include <string.h>

typedef struct kat_rng {
    const char *label;
    uint32_t block;
    uint8_t buf[32];
    size_t left;
    /* Optional fixed prefix served before the hashed stream. */
    const uint8_t *prefix;
    size_t prefix_len;
} kat_rng;

static inline cu_rc kat_rng_fill(void *ctx, uint8_t *out, size_t len)
{
    kat_rng *r = ctx;
    while (len > 0 && r->prefix_len > 0) {
        *out++ = *r->prefix++;
        r->prefix_len--;
        len--;
    }
    while (len > 0) {
        if (r->left == 0) {
            uint8_t c[4] = {(uint8_t)(r->block >> 24), (uint8_t)(r->block >> 16),
                            (uint8_t)(r->block >> 8), (uint8_t)r->block};
            EVP_MD_CTX *m = EVP_MD_CTX_new();
            EVP_DigestInit_ex(m, EVP_sha256(), NULL);
            EVP_DigestUpdate(m, r->label, strlen(r->label));
            EVP_DigestUpdate(m, c, 4);
            EVP_DigestFinal_ex(m, r->buf, NULL);
            EVP_MD_CTX_free(m);
            r->block++;
            r->left = 32;
        }
        *out++ = r->buf[32 - r->left--];
        len--;
    }
    return CU_OK;
}

#define KAT_LABEL "custos tpm kat"

#endif
