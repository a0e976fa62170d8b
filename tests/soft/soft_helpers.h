/* Helpers for the custos-soft tests: load the module like any PKCS#11
 * application (dlopen + C_GetFunctionList), make stores in private temp
 * directories, and check results with OpenSSL in software. */
#ifndef SOFT_HELPERS_H
#define SOFT_HELPERS_H

#include <p11-kit/pkcs11.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>

#define SO_PIN "12345678"
#define USER_PIN "1234"

extern CK_FUNCTION_LIST *p11;

/* A store in a fresh temp dir: sets CUSTOS_SOFT_DIR (or memory mode), the
 * attempt limit, a debug log file and an integrity log file (instead of
 * syslog), then C_Initialize. The PBKDF2 count is the production one
 * (200,000, also the floor). */
typedef struct tst_store {
    char *dir;      /* temp dir (store is dir/store) */
    char store[512];
    char log[512];
    char integrity[512];
} tst_store;

void tst_load_module(void);
bool tst_begin(tst_store *t, unsigned max_attempts);
bool tst_begin_memory(tst_store *t);
void tst_end(tst_store *t);
/* C_Finalize + C_Initialize with the same environment (a "restart"). */
bool tst_restart(void);

/* Finds the uninitialized slot, initializes a token there with SO_PIN and
 * USER_PIN; returns its slot ID. */
bool tst_init_token(const char *label, CK_SLOT_ID *_slot);
bool tst_find_token(const char *label, CK_SLOT_ID *_slot);
/* RW session logged in as the user. */
bool tst_user_session(CK_SLOT_ID slot, CK_SESSION_HANDLE *_h);

CK_RV tst_gen_ec(CK_SESSION_HANDLE h, int bits, bool token, const char *label,
                 CK_OBJECT_HANDLE *_pub, CK_OBJECT_HANDLE *_priv);
CK_RV tst_gen_rsa(CK_SESSION_HANDLE h, CK_ULONG bits, bool token, const char *label,
                  CK_OBJECT_HANDLE *_pub, CK_OBJECT_HANDLE *_priv);
CK_RV tst_gen_hmac(CK_SESSION_HANDLE h, CK_ULONG len, bool token, const char *label,
                   CK_OBJECT_HANDLE *_key);
/* Imports a generic secret (sensitive, not extractable). */
CK_RV tst_import_hmac(CK_SESSION_HANDLE h, const unsigned char *key, size_t len, bool token,
                      const char *label, CK_OBJECT_HANDLE *_key);

/* The public key of a key object, from CKA_PUBLIC_KEY_INFO (caller frees). */
EVP_PKEY *tst_pubkey(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o);
CK_BBOOL tst_bool_attr(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE t);
/* Number of objects matching a label (and class if cls != -1). */
int tst_count(CK_SESSION_HANDLE h, const char *label, CK_ULONG cls);
bool tst_find_one(CK_SESSION_HANDLE h, const char *label, CK_ULONG cls, CK_OBJECT_HANDLE *_o);

/* Signs `data` with a mechanism (single-part) into sig (size in *len). */
CK_RV tst_sign(CK_SESSION_HANDLE h, CK_MECHANISM *m, CK_OBJECT_HANDLE key,
               const void *data, size_t dlen, unsigned char *sig, CK_ULONG *len);

/* Verifies an ECDSA r||s signature over a digest with OpenSSL. */
bool tst_ossl_verify_ecdsa(EVP_PKEY *pub, const unsigned char *dgst, size_t dlen,
                           const unsigned char *sig, size_t slen);
/* Verifies a signature over data with OpenSSL: md is "SHA256" etc. or NULL
 * for a raw digest input; pss selects RSA-PSS with salt = hash length. */
bool tst_ossl_verify(EVP_PKEY *pub, const char *md, bool pss, const unsigned char *data,
                     size_t dlen, const unsigned char *sig, size_t slen);

/* Whether the debug log of the current store contains a string. */
bool tst_log_has(const tst_store *t, const char *needle);
/* Number of lines of a file containing a string (0 if no file). */
int tst_file_lines(const char *path, const char *needle);
/* Path of the first file in the token dir of a token whose name starts with
 * prefix (e.g. "obj-"), choosing the one holding an object labelled
 * `label` if label != NULL (by scanning the DER for the label bytes). */
bool tst_object_file(const tst_store *t, const char *label, char *path, size_t n);

#endif
