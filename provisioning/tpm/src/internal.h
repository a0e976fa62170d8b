/* custos_tpm internals: big-endian readers and writers with a sticky
 * failure flag (check once at the end), the parsed public area, and helpers
 * shared by the files of this directory. */
#ifndef CUSTOS_TPM_INTERNAL_H
#define CUSTOS_TPM_INTERNAL_H

#include <custos/tpmsvc.h>

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cu_tpmsvc_pub {
    uint8_t *raw; /* TPM2B_PUBLIC, size prefix included */
    size_t raw_len;
    uint16_t type, name_alg;
    uint32_t attrs;
    size_t policy_len;
    uint16_t sym_alg, sym_bits, sym_mode; /* sym_bits/mode 0 when NULL */
    uint16_t scheme, scheme_hash;
    /* RSA */
    uint16_t rsa_bits;
    uint32_t exponent; /* as marshalled (0 means 65537) */
    const uint8_t *modulus;
    size_t modulus_len;
    /* ECC */
    uint16_t curve, kdf, kdf_hash;
    const uint8_t *x, *y;
    size_t x_len, y_len;
    /* KEYEDHASH / SYMCIPHER unique */
    const uint8_t *unique;
    size_t unique_len;
};

/* ---- reader ---- */
typedef struct cu_tpmsvc_rd {
    const uint8_t *p;
    size_t len, off;
    bool fail;
    const char *what; /* first field that did not fit */
} cu_tpmsvc_rd;

static inline const uint8_t *cu_tpmsvc__rd_take(cu_tpmsvc_rd *r, size_t n, const char *what)
{
    if (r->fail || r->len - r->off < n) {
        if (!r->fail)
            r->what = what;
        r->fail = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}
static inline uint16_t cu_tpmsvc__rd_u16(cu_tpmsvc_rd *r, const char *what)
{
    const uint8_t *p = cu_tpmsvc__rd_take(r, 2, what);
    return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}
static inline uint32_t cu_tpmsvc__rd_u32(cu_tpmsvc_rd *r, const char *what)
{
    const uint8_t *p = cu_tpmsvc__rd_take(r, 4, what);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}
/* A TPM2B: size then bytes; *_len receives the size. */
static inline const uint8_t *cu_tpmsvc__rd_2b(cu_tpmsvc_rd *r, size_t *_len, const char *what)
{
    size_t n = cu_tpmsvc__rd_u16(r, what);
    const uint8_t *p = cu_tpmsvc__rd_take(r, n, what);
    *_len = p ? n : 0;
    return p;
}

/* ---- writer (bounded, caller-supplied buffer) ---- */
typedef struct cu_tpmsvc_wr {
    uint8_t *p;
    size_t cap, len;
    bool fail;
} cu_tpmsvc_wr;

static inline void cu_tpmsvc__wr_bytes(cu_tpmsvc_wr *w, const void *b, size_t n)
{
    if (w->fail || w->cap - w->len < n) {
        w->fail = true;
        return;
    }
    if (n)
        __builtin_memcpy(w->p + w->len, b, n);
    w->len += n;
}
static inline void cu_tpmsvc__wr_u16(cu_tpmsvc_wr *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    cu_tpmsvc__wr_bytes(w, b, 2);
}
static inline void cu_tpmsvc__wr_u32(cu_tpmsvc_wr *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    cu_tpmsvc__wr_bytes(w, b, 4);
}
static inline void cu_tpmsvc__wr_2b(cu_tpmsvc_wr *w, const void *b, size_t n)
{
    if (n > 0xffff) {
        w->fail = true;
        return;
    }
    cu_tpmsvc__wr_u16(w, (uint16_t)n);
    cu_tpmsvc__wr_bytes(w, b, n);
}

/* ---- shared helpers ---- */

/* OpenSSL digest of a TPM hash algorithm, or NULL. */
const EVP_MD *cu_tpmsvc__md(uint16_t hash_alg);
/* Random bytes through opts (or RAND_priv_bytes). */
cu_rc cu_tpmsvc__random(const cu_tpmsvc_blob_opts *opts, uint8_t *buf, size_t len);
/* AES-CFB128 with an all-zero IV, in place allowed; key_bits 128/192/256. */
cu_rc cu_tpmsvc__aes_cfb(const uint8_t *key, unsigned key_bits, bool encrypt, const uint8_t *in,
                      size_t len, uint8_t *out);
/* HMAC with the TPM hash over the concatenation of two buffers. */
cu_rc cu_tpmsvc__hmac2(uint16_t hash_alg, const uint8_t *key, size_t key_len, const uint8_t *a,
                    size_t a_len, const uint8_t *b, size_t b_len, uint8_t *out, size_t *_out_len);
/* Strict base64 (padding required, no whitespace); caller frees. */
cu_rc cu_tpmsvc__b64_decode(const char *s, uint8_t **_out, size_t *_len);
char *cu_tpmsvc__b64_encode(const uint8_t *data, size_t len);
/* The public key of an RSA/ECC public area as an EVP_PKEY (caller frees). */
cu_rc cu_tpmsvc__pub_pkey(const cu_tpmsvc_pub *pub, EVP_PKEY **_out);
/* OpenSSL group name of a TPM curve, or NULL. */
const char *cu_tpmsvc__curve_name(uint16_t curve);


#endif
