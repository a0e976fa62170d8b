/* Custos: the service's state directory (--state DIR, default ./var), as
 * the command line and custosd open it: the store (DIR/custos.db) under the
 * service keyring, and the id scope. */
#ifndef CUSTOS_STATE_H
#define CUSTOS_STATE_H

#include <custos/keyring.h>
#include <custos/rc.h>
#include <custos/store.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cu_state cu_state;

/* How the keyring is chosen, in order:
 * 1. key_uri (or $CUSTOS_KEYRING_URI): a pkcs11: URI of a secret key, used
 *    through the Custos provider's HMAC (EVP_MAC "HMAC", "provider=custos",
 *    OSSL_PARAM "key-uri"); the provider must be loaded by the caller's
 *    OpenSSL configuration.
 * 2. Else the SOFTWARE keyring for development: a random 32-byte key in
 *    DIR/keyring.key (created 0600 on first use). The state says which one
 *    it uses (cu_state_keyring_name), and a store made with one refuses the
 *    other.
 * The store is DIR/custos.db unless $CUSTOS_STORE names another (a
 * postgresql:// URI, or an SQLite path; see cu_store_open_spec), with the
 * PostgreSQL password in the file $CUSTOS_STORE_PASSWORD_FILE. */
cu_rc cu_state_open(const char *dir, const char *key_uri, cu_state **_out);
void cu_state_close(cu_state *st);
cu_store *cu_state_get0_store(cu_state *st);
cu_keyring *cu_state_get0_keyring(cu_state *st);
const char *cu_state_keyring_name(const cu_state *st);
/* The id scope ("0ne" + 8 hex digits, made on first use and sealed). */
const char *cu_state_id_scope(const cu_state *st);

#ifdef __cplusplus
}
#endif
#endif
