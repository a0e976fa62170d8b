/* Every dispatch table of the provider, one line each; provider.c lists them
 * in its algorithm tables. One source file per operation class. */
#ifndef CUSTOS_PROV_IMPLEMENTATIONS_H
#define CUSTOS_PROV_IMPLEMENTATIONS_H

#include <openssl/core.h>

/* keymgmt.c */
extern const OSSL_DISPATCH cu_prov_ec_keymgmt_functions[];
extern const OSSL_DISPATCH cu_prov_rsa_keymgmt_functions[];
/* signature.c */
extern const OSSL_DISPATCH cu_prov_ecdsa_signature_functions[];
extern const OSSL_DISPATCH cu_prov_rsa_signature_functions[];
/* store.c */
extern const OSSL_DISPATCH cu_prov_pkcs11_store_functions[];
/* mac.c */
extern const OSSL_DISPATCH cu_prov_hmac_mac_functions[];

#endif
