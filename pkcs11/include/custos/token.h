/* Custos token layer: one C API over any PKCS#11 module.
 *
 * A token is named by an RFC 7512 pkcs11: URI. Its module comes from the URI's
 * module-path / module-name query (or cu_token_opts.module), is loaded through
 * p11-kit and shared by every token of the process. An open token keeps a pool
 * of sessions that any number of threads may use at once, logs in once, and
 * re-initializes by itself in a fork()ed child before its first use there.
 *
 * Keys stay in the token: this API signs, verifies and MACs with them, and
 * reads their public halves and custody attributes, never their secrets.
 *
 * Errors: every function returns a cu_rc; cu_err_last() has the detail. */
#ifndef CUSTOS_TOKEN_H
#define CUSTOS_TOKEN_H

#include <custos/rc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cu_module cu_module; /* a loaded PKCS#11 module (shared, ref-counted) */
typedef struct cu_token cu_token;   /* an open token: slot, login, session pool */
typedef struct cu_object cu_object; /* one object on a token */

/* ---- Quirks: named workarounds for particular modules (docs/tokens.md) ---- */

enum {
    /* Never call C_Finalize: SoftHSM2 crashes if it runs after OpenSSL's own
     * exit-time clean-up (e.g. from a provider's teardown). */
    CU_QUIRK_NO_FINALIZE = 1u << 0,
    /* SoftHSM2 under concurrent start-up: when C_Initialize fails with
     * CKR_GENERAL_ERROR, retry it; when opening the token right after
     * discovery fails as it does then (token not seen, or C_OpenSession /
     * C_Login answering CKR_GENERAL_ERROR or CKR_USER_PIN_NOT_INITIALIZED),
     * start the module afresh and open again; both bounded. */
    CU_QUIRK_INIT_RETRY = 1u << 1,
    /* Do not copy keys into session objects for signing (the copy is the
     * fast path on SoftHSM2; some modules refuse C_CopyObject). */
    CU_QUIRK_NO_SESSION_COPY = 1u << 2,
    /* The module cannot start afresh in a fork()ed child: its state holds
     * the parent's connection and sessions (tpm2-pkcs11), which the child
     * would corrupt. In a child the layer refuses it (CU_E_STATE) instead. */
    CU_QUIRK_FORK_UNSAFE = 1u << 3,
};

/* Parses "no-finalize,init-retry,no-session-copy,fork-unsafe" (comma separated). */
cu_rc cu_quirks_parse(const char *s, unsigned *_quirks);
/* The quirks a module gets when cu_token_opts.quirks is NULL, by the name
 * of its file (or p11-kit name): "no-finalize,init-retry" for SoftHSM2
 * (*softhsm*), "fork-unsafe" for tpm2-pkcs11 (*tpm2_pkcs11*), else NULL. */
const char *cu_quirks_default(const char *module);

/* ---- Modules ---- */

/* Loads a module by file path, or by p11-kit module name (as registered in
 * p11-kit's configuration). The same path gives the same shared instance. */
cu_rc cu_module_load(const char *path_or_name, unsigned quirks, cu_module **_out);
void cu_module_unref(cu_module *m);
const char *cu_module_path(const cu_module *m);
/* The raw function list, for benchmarks and conformance checks (borrowed). */
void *cu_module_get0_functions(cu_module *m);

typedef struct cu_token_desc {
    unsigned long slot_id;
    char slot_description[65];
    bool present;            /* a token is in the slot */
    bool initialized;        /* CKF_TOKEN_INITIALIZED */
    char label[33];          /* trailing blanks removed */
    char manufacturer[33];
    char model[17];
    char serial[17];
    unsigned long flags;     /* CK_TOKEN_INFO.flags */
} cu_token_desc;

/* Lists the slots of a module (caller frees *_slots with free()). */
cu_rc cu_module_slots(cu_module *m, cu_token_desc **_slots, size_t *_n);

typedef struct cu_mech_desc {
    unsigned long type; /* CKM_* */
    const char *name;   /* "CKM_ECDSA", or NULL if unknown */
    unsigned long min_key, max_key, flags;
} cu_mech_desc;

/* Lists the mechanisms of a slot (caller frees *_mechs with free()). */
cu_rc cu_module_mechanisms(cu_module *m, unsigned long slot_id, cu_mech_desc **_mechs, size_t *_n);

/* Initializes the token in a slot (C_InitToken with the SO PIN, then the user
 * PIN with C_InitPIN). The slot's id may change afterwards (SoftHSM2). */
cu_rc cu_module_init_token(cu_module *m, unsigned long slot_id, const char *label,
                           const char *so_pin, const char *user_pin);

/* Finalizes every module now (unless no-finalize): call before exit, ahead of
 * OpenSSL's own clean-up. Tokens still open become unusable. */
void cu_p11_shutdown(void);

/* fork(): the layer takes every lock of its own before a fork and releases
 * (parent) or renews (child) them after it, so a child never inherits a lock
 * another thread held. A user of the layer whose own locks are held around
 * calls into it (the OpenSSL provider's caches, around token opens) hands
 * it its handlers here: prepare runs before the layer takes its locks,
 * parent and child after the layer has released or renewed them. At most 8
 * sets per process (CU_E_STATE beyond). */
cu_rc cu_p11_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));

/* ---- Tokens ---- */

typedef struct cu_token_opts {
    const char *module;   /* module path or name when the URI names none */
    const char *pin;      /* overrides pin-value, pin-source and CUSTOS_PIN */
    const char *quirks;   /* named quirks, see cu_quirks_parse; NULL: the
                           * module's cu_quirks_default, "": none */
    unsigned max_sessions;/* pool bound (0: 64) */
    bool no_login;        /* open without logging in (public objects only) */
} cu_token_opts;

/* Opens the one token the URI names. PIN order: opts->pin, the URI's
 * pin-value, its pin-source (a file, "file:" prefix allowed), then $CUSTOS_PIN.
 * No PIN and no login needed is fine; a PIN the token refuses is an error.
 * Fails with CU_E_TOKEN_NOT_FOUND / CU_E_AMBIGUOUS when not exactly one token
 * of the module matches. */
cu_rc cu_token_open(const char *uri, const cu_token_opts *opts, cu_token **_out);
/* The PIN a URI carries: its pin-value, else what its pin-source file holds;
 * *_pin is NULL when it has neither (caller frees). */
cu_rc cu_uri_pin(const char *uri, char **_pin);
cu_token *cu_token_ref(cu_token *t);
void cu_token_unref(cu_token *t);

const cu_token_desc *cu_token_get0_desc(const cu_token *t);
cu_module *cu_token_get0_module(const cu_token *t);
/* The token's URI (token, manufacturer, serial, model; module-path query),
 * without any PIN (caller frees). */
char *cu_token_uri(const cu_token *t);
/* Logs in (or again, e.g. after a PIN change). */
cu_rc cu_token_login(cu_token *t, const char *pin);
bool cu_token_logged_in(const cu_token *t);
/* Changes the user PIN (C_SetPIN). */
cu_rc cu_token_set_pin(cu_token *t, const char *old_pin, const char *new_pin);

/* The token's sessions besides the one that holds the login: open (in use,
 * idle in the pool, or kept by a thread for its next signature), idle in the
 * pool, and kept by threads (at most half of max_sessions; a thread gives
 * its kept sessions back when it exits). */
typedef struct cu_session_counts {
    unsigned open, idle, kept;
} cu_session_counts;
void cu_token_session_counts(cu_token *t, cu_session_counts *_c);

/* ---- Objects ---- */

typedef enum cu_class {
    CU_CLASS_ANY = 0,
    CU_CLASS_PRIVATE_KEY,
    CU_CLASS_PUBLIC_KEY,
    CU_CLASS_SECRET_KEY,
    CU_CLASS_CERTIFICATE,
    CU_CLASS_DATA,
    CU_CLASS_OTHER,
} cu_class;

typedef enum cu_key_type {
    CU_KEY_NONE = 0, /* not a key */
    CU_KEY_EC,
    CU_KEY_RSA,
    CU_KEY_HMAC,     /* CKK_GENERIC_SECRET or CKK_SHA256_HMAC */
    CU_KEY_OTHER,
} cu_key_type;

const char *cu_class_str(cu_class c);     /* "private-key", "certificate", ... */
const char *cu_key_type_str(cu_key_type k); /* "EC", "RSA", "HMAC", ... */

/* Finds exactly one object. uri may be a full pkcs11: URI (its token part must
 * match this token) or NULL for "any"; cls narrows it further (CU_CLASS_ANY
 * keeps the URI's type). CU_E_OBJECT_NOT_FOUND / CU_E_AMBIGUOUS otherwise. */
cu_rc cu_token_find(cu_token *t, const char *uri, cu_class cls, cu_object **_out);
/* Finds every matching object (caller frees with cu_objects_free). */
cu_rc cu_token_find_all(cu_token *t, const char *uri, cu_class cls, cu_object ***_objs, size_t *_n);
void cu_objects_free(cu_object **objs, size_t n);

/* Opens the token the URI names and finds the one object it names. */
cu_rc cu_object_open(const char *uri, const cu_token_opts *opts, cu_class cls, cu_object **_out);

void cu_object_free(cu_object *o);
cu_token *cu_object_get0_token(const cu_object *o);
cu_class cu_object_class(const cu_object *o);
cu_key_type cu_object_key_type(const cu_object *o);
const char *cu_object_label(const cu_object *o);
const uint8_t *cu_object_id(const cu_object *o, size_t *_len);
unsigned cu_object_bits(const cu_object *o); /* key size in bits; 0 if unknown */
/* The raw CK_OBJECT_HANDLE, for benchmarks and diagnostics that call the
 * module directly (cu_module_get0_functions). */
unsigned long cu_object_get_handle(const cu_object *o);
/* The object's full URI: token attributes, object=, id=, type=, module-path (caller frees). */
char *cu_object_uri(const cu_object *o);

/* Custody attributes; each tri-state flag is 1, 0, or -1 if the token does not report it. */
typedef struct cu_custody {
    cu_class cls;
    cu_key_type type;
    unsigned long ck_key_type;
    unsigned bits;
    int sensitive, extractable, always_sensitive, never_extractable, local;
    int modifiable, copyable, is_private;
} cu_custody;
cu_rc cu_object_custody(cu_object *o, cu_custody *_c);
/* True if the key may have existed outside the token: ever extractable, not
 * always sensitive, or not generated on the token. */
bool cu_custody_flagged(const cu_custody *c);

/* The SubjectPublicKeyInfo DER of an EC or RSA key; for a private key it is
 * read from its public twin (same CKA_ID) or its own public attributes
 * (caller frees *_der with free()). */
cu_rc cu_object_public_der(cu_object *o, uint8_t **_der, size_t *_len);
/* CKA_VALUE of a certificate or data object (caller frees with free()). */
cu_rc cu_object_value(cu_object *o, uint8_t **_val, size_t *_len);
cu_rc cu_object_destroy(cu_object *o); /* destroys on the token; o is still to be freed */

/* ---- Key generation and import ---- */

typedef enum cu_keygen_type {
    CU_KEYGEN_EC_P256 = 1,
    CU_KEYGEN_EC_P384,
    CU_KEYGEN_RSA2048,
    CU_KEYGEN_RSA3072,
    CU_KEYGEN_RSA4096,
    CU_KEYGEN_HMAC256,
} cu_keygen_type;

/* "ec-p256", "ec-p384", "rsa2048", "rsa3072", "rsa4096", "hmac256". */
cu_rc cu_keygen_type_parse(const char *s, cu_keygen_type *_t);
const char *cu_keygen_type_str(cu_keygen_type t);

/* Generates a key (pair) on the token: CKA_SENSITIVE=true, CKA_EXTRACTABLE=false,
 * token object, private. id may be NULL (a random 16-byte CKA_ID is chosen).
 * Returns the private (or secret) key. */
cu_rc cu_token_keygen(cu_token *t, cu_keygen_type type, const char *label,
                      const uint8_t *id, size_t id_len, cu_object **_key);
/* Stores a certificate (DER) as a token object. */
cu_rc cu_token_import_cert(cu_token *t, const uint8_t *der, size_t len, const char *label,
                           const uint8_t *id, size_t id_len, cu_object **_cert);
/* Imports a known secret as an HMAC key (sensitive, not extractable; the token
 * marks it not local, so custody flags it as imported). */
cu_rc cu_token_import_hmac(cu_token *t, const uint8_t *key, size_t len, const char *label,
                           const uint8_t *id, size_t id_len, cu_object **_key);

/* ---- Signatures and MACs ---- */

typedef enum cu_hash {
    CU_HASH_NONE = 0,
    CU_HASH_SHA1,
    CU_HASH_SHA224,
    CU_HASH_SHA256,
    CU_HASH_SHA384,
    CU_HASH_SHA512,
} cu_hash;

typedef enum cu_sig_alg {
    CU_SIG_ECDSA = 1,  /* output: raw r||s, as PKCS#11 produces it */
    CU_SIG_RSA_PKCS1,  /* RSASSA-PKCS1-v1_5 (hash NONE + cu_sign_digest: raw, caller's DigestInfo) */
    CU_SIG_RSA_PSS,    /* RSASSA-PSS */
    CU_SIG_HMAC,       /* HMAC with hash (SHA-256) */
} cu_sig_alg;

typedef struct cu_sig {
    cu_sig_alg alg;
    cu_hash hash;      /* message digest */
    cu_hash mgf1;      /* PSS: MGF1 digest (NONE: same as hash) */
    int salt_len;      /* PSS: salt length in bytes (-1: digest length) */
} cu_sig;

size_t cu_hash_size(cu_hash h);
/* The largest signature this key makes with this algorithm. */
size_t cu_sig_max_size(const cu_object *key, const cu_sig *s);

/* Signs a message: hashed inside the token when it has the combined mechanism,
 * else hashed here and signed with the raw one. If out is NULL, *_outlen is set
 * to the maximum size; if it is too small, CU_E_BUFFER_TOO_SMALL and *_outlen
 * is the size needed. */
cu_rc cu_sign(cu_object *key, const cu_sig *s, const uint8_t *msg, size_t len,
              uint8_t *out, size_t *_outlen);
/* Signs a digest the caller computed (s->hash names it; for RSA PKCS#1 with
 * hash NONE the input is signed as given: a DigestInfo or a TLS 1.0 MD5+SHA1). */
cu_rc cu_sign_digest(cu_object *key, const cu_sig *s, const uint8_t *digest, size_t len,
                     uint8_t *out, size_t *_outlen);
/* Verifies a signature with the key's public half (read from the token and
 * checked by OpenSSL: verification needs no secret), or an HMAC by computing
 * it again in the token and comparing in constant time. CU_OK, or CU_E_VERIFY
 * when the signature is wrong. */
cu_rc cu_verify(cu_object *key, const cu_sig *s, const uint8_t *msg, size_t len,
                const uint8_t *sig, size_t siglen);

/* Multi-part signing (streamed input). One operation holds one session until
 * final or free. */
typedef struct cu_sign_op cu_sign_op;
cu_rc cu_sign_init(cu_object *key, const cu_sig *s, cu_sign_op **_op);
cu_rc cu_sign_update(cu_sign_op *op, const uint8_t *data, size_t len);
cu_rc cu_sign_final(cu_sign_op *op, uint8_t *out, size_t *_outlen);
void cu_sign_op_free(cu_sign_op *op);

#ifdef __cplusplus
}
#endif
#endif
