/* Custos: the service's keyring — the one secret the store depends on.
 *
 * The store never sees a key: it asks the keyring for an HMAC-SHA256 over
 * some bytes. That MAC seals every trust-bearing row (group certificates, CA
 * certificates, enabled/disabled status), and, over a fixed label, derives
 * the AES-256-GCM key that wraps enrollment secrets at rest. In production the
 * MAC key is a secret key in the service's token, used through the Custos
 * OpenSSL provider's HMAC (cu_keyring_evp_mac_new); tests use the software
 * keyring (a key in process memory). */
#ifndef CUSTOS_KEYRING_H
#define CUSTOS_KEYRING_H

#include <custos/rc.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cu_keyring cu_keyring;

/* A keyring implementation: mac() must be HMAC-SHA256-strength and stable
 * for the lifetime of the store. free() (may be NULL) releases ctx. */
typedef struct cu_keyring_ops {
    const char *name;
    cu_rc (*mac)(void *ctx, const uint8_t *data, size_t len, uint8_t out[32]);
    void (*free)(void *ctx);
} cu_keyring_ops;

/* Wraps an implementation (ops must outlive the keyring; takes ctx). */
cu_rc cu_keyring_new(const cu_keyring_ops *ops, void *ctx, cu_keyring **_out);
void cu_keyring_free(cu_keyring *kr);
const char *cu_keyring_name(const cu_keyring *kr);

/* The SOFTWARE keyring: HMAC-SHA256 from OpenSSL's default provider with a
 * key held in process memory (copied, wiped on free). For tests and
 * development only — the key is as safe as the process. */
cu_rc cu_keyring_software_new(const uint8_t *key, size_t len, cu_keyring **_out);

/* The production keyring: the provider's EVP_MAC "CUSTOS-HMAC" fetched with
 * propq (e.g. "provider=custos", or NULL) whose key is named by a pkcs11: URI
 * passed as the OSSL_PARAM "key-uri" (digest SHA256). The key never leaves
 * the token. Load the provider first (cu_keyring_provider_load). */
cu_rc cu_keyring_evp_mac_new(void *libctx /* OSSL_LIB_CTX*, may be NULL */, const char *propq,
                             const char *key_uri, cu_keyring **_out);

/* Loads the Custos OpenSSL provider and the default one into the default
 * library context, once per process. search_path: where custos.so is; NULL
 * means $OPENSSL_MODULES, else <dir of the program>/../lib/ossl-modules. */
cu_rc cu_keyring_provider_load(const char *search_path);

/* A key named by spec: a pkcs11: URI, through the Custos provider (loaded
 * first from search_path, as above; the PIN from the URI or CUSTOS_PIN),
 * or a PEM private key file. want_private false: a public key will do (a
 * URI may name either half). *_key: caller frees (EVP_PKEY_free).
 * @retval CU_E_OBJECT_NOT_FOUND the URI names no such key
 * @retval CU_E_CRYPTO the URI or the file cannot be read (OpenSSL's reason) */
struct evp_pkey_st; /* EVP_PKEY */
cu_rc cu_keyring_load_key(const char *spec, const char *search_path, bool want_private,
                          struct evp_pkey_st **_key);

/* What a keyring operation did with the key, for an observer. */
typedef enum cu_keyring_use {
    CU_KEYRING_USE_MAC = 1, /* a MAC by the keyring's key: raw, seal, seal check, wrap-key derivation */
    CU_KEYRING_USE_WRAP,    /* a secret wrapped with the derived wrap key */
    CU_KEYRING_USE_UNWRAP,  /* a secret unwrapped */
} cu_keyring_use;
/* Calls use(ctx, what, aad) once per operation of kr (aad: the wrap's or
 * unwrap's, else NULL), on the calling thread; set it before kr is shared
 * between threads. The service counts its key uses for the audit log with
 * it. use NULL: none. */
void cu_keyring_set_observer(cu_keyring *kr, void (*use)(void *ctx, cu_keyring_use what, const char *aad),
                             void *ctx);

/* HMAC over the raw bytes. */
cu_rc cu_keyring_mac(cu_keyring *kr, const uint8_t *data, size_t len, uint8_t out[32]);

/* A seal: MAC over domain || 0x00 || data, so seals of different kinds of
 * rows never collide. */
cu_rc cu_keyring_seal(cu_keyring *kr, const char *domain, const uint8_t *data, size_t len,
                      uint8_t out[32]);
/* Checks a seal in constant time. @retval CU_OK, CU_E_VERIFY */
cu_rc cu_keyring_seal_check(cu_keyring *kr, const char *domain, const uint8_t *data,
                            size_t len, const uint8_t seal[32]);

/* Wraps a secret: AES-256-GCM under a key derived by the keyring's MAC, with
 * aad bound (e.g. the enrollment id, so a wrapped key cannot be moved to
 * another row). Output "cw1:" + base64(iv12 || ciphertext || tag16), a heap
 * string (caller frees). */
cu_rc cu_keyring_wrap(cu_keyring *kr, const uint8_t *secret, size_t len, const char *aad,
                      char **_out);
/* Unwraps; *_out is freed with cu_keyring_secret_free. @retval CU_E_VERIFY on
 * tampering or the wrong aad. */
cu_rc cu_keyring_unwrap(cu_keyring *kr, const char *wrapped, const char *aad, uint8_t **_out,
                        size_t *_len);
void cu_keyring_secret_free(uint8_t *secret, size_t len);

#ifdef __cplusplus
}
#endif
#endif
