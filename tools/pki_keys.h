/* Where the keys of `custos pki` live, and undoing a run that failed.
 *
 * Keys are either PEM files next to their certificates, or objects in one
 * PKCS#11 token: generated there through the token layer (sensitive, never
 * extractable) and used through the custos OpenSSL provider, so that a CA
 * key signs inside its token and never leaves it. A run remembers every
 * token object, file and directory it made; cu_pki_keys_abort removes them,
 * so a command that fails leaves nothing behind. */
#ifndef CU_PKI_KEYS_H
#define CU_PKI_KEYS_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>

typedef struct cu_pki_keys cu_pki_keys;

/* Keys in the token that token_uri and/or token_dir (a `custos token init`
 * directory) name, logged in with the PIN from pin_source, CUSTOS_PIN, the
 * URI or a prompt; both NULL: keys in files. label_prefix (may be NULL) goes
 * before every label. Prints errors; returns an exit status. */
int cu_pki_keys_open(const char *token_uri, const char *token_dir, const char *pin_source,
                     const char *label_prefix, cu_pki_keys **_out);
bool cu_pki_keys_in_token(const cu_pki_keys *k);

/* Token: fails (printing why) if the token already holds an object with the
 * label of name. Files: always fine. Check every name before generating. */
int cu_pki_keys_check(cu_pki_keys *k, const char *name);

/* A new EC P-256 key for the certificate name: on the token (label =
 * prefix + name, a random CKA_ID) or in memory. The key stays owned by k. */
int cu_pki_keys_generate(cu_pki_keys *k, const char *name, EVP_PKEY **_key);

/* Writes what holds a finished certificate: path_prefix.pem, and
 * path_prefix.key (files) or path_prefix.uri plus the certificate as a token
 * object beside its key (same label and CKA_ID). key is one that
 * cu_pki_keys_generate made. */
int cu_pki_keys_save(cu_pki_keys *k, const char *path_prefix, X509 *cert, EVP_PKEY *key);

/* Frees a key this run made once its certificates are issued (a token key
 * stays on the token, and in the undo list). */
void cu_pki_keys_release(cu_pki_keys *k, EVP_PKEY *key);

/* Writes (append: adds to) a PEM certificate file, remembered for undo. */
int cu_pki_keys_write_cert(cu_pki_keys *k, const char *path, X509 *cert, bool append);
/* Creates a directory unless it exists, remembered for undo. */
int cu_pki_keys_mkdir(cu_pki_keys *k, const char *dir);

/* Loads a signing key: a PEM file, or a pkcs11: URI through the provider
 * (with this run's PIN when the URI carries none). Caller frees. */
int cu_pki_keys_load(cu_pki_keys *k, const char *spec, EVP_PKEY **_key);

/* Prints "<label> <uri>" of every key made on the token (nothing for files). */
void cu_pki_keys_print(const cu_pki_keys *k, FILE *f);

/* The keys made, as a JSON array: [{"label","uri"}] (token) or
 * [{"name","file"}] (files). */
void cu_pki_keys_print_json(const cu_pki_keys *k, FILE *f);

/* Removes every token object, file and directory this run made. */
void cu_pki_keys_abort(cu_pki_keys *k);
void cu_pki_keys_free(cu_pki_keys *k);

#endif
