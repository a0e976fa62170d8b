/* The key object behind every EVP_PKEY of the provider.
 *
 * A token key keeps its cu_object (so a signature costs no look-up) and its
 * public half as a software EVP_PKEY in the provider's private library
 * context, read once when the key is loaded. A public-only key (a token's
 * public-key object, or a public key imported to match a certificate) has no
 * cu_object. Keys are immutable once made, and reference-counted, so the
 * store loader can hand one to keymgmt_load and dup is a reference.
 * Software keys (no cu_object, pub may hold a private half) exist only so that
 * an "EC" key generation that reaches this provider first (TLS ephemeral
 * ECDHE keys) still works: they export in full to the default provider. */
#ifndef CUSTOS_PROV_KEY_H
#define CUSTOS_PROV_KEY_H

#include "provider.h"

typedef struct cu_prov_key {
    cu_prov_ctx *pc;
    int refs;
    cu_key_type type;  /* CU_KEY_EC or CU_KEY_RSA */
    cu_object *obj;    /* the private key on the token, or NULL */
    EVP_PKEY *pub;     /* public half (in pc->sw), or NULL for an empty key */
    bool has_public;   /* pub has a public key (not only domain parameters) */
    bool soft_private; /* pub is a software key pair: made by keygen without a
                        * URI (TLS ephemeral keys); exportable, never signs */
    unsigned bits;
    size_t ec_field;   /* EC: bytes of r and s in a raw signature */
    size_t max_sig;    /* largest signature (DER for ECDSA) */
} cu_prov_key;

cu_prov_key *cu_prov_key_new(cu_prov_ctx *pc, cu_key_type type);
cu_prov_key *cu_prov_key_ref(cu_prov_key *k);
void cu_prov_key_unref(cu_prov_key *k);

/* Sets the public half from a SubjectPublicKeyInfo DER (1 on success). */
int cu_prov_key_set_spki(cu_prov_key *k, const uint8_t *der, size_t len);
/* Sets the public half from a software key (takes a reference). */
int cu_prov_key_set_pub(cu_prov_key *k, EVP_PKEY *pub);

/* Makes a key of a token object, taking ownership of obj in every case: a
 * private key keeps it, a public key only lends its public half. With
 * public_only, a private key gives a key without its private half. */
int cu_prov_key_from_object(cu_prov_ctx *pc, cu_object *obj, bool public_only,
                            cu_prov_key **_key);

/* Keymgmt name ("EC", "RSA") of a key type. */
const char *cu_prov_key_type_name(cu_key_type t);

#endif
