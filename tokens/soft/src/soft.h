/* custos-soft: internal types shared by the module's files.
 *
 * Layout (one concern per file):
 *   attr.c      attribute lists and the table of known attribute types
 *   record.c    DER codec of object and token records (libtasn1)
 *   crypto.c    PBKDF2, AES-256-GCM sealing, randomness
 *   store.c     files: crash-safe writes, reads, directory scans, locks
 *   token.c     slots, tokens, PINs, login, loading objects from disk
 *   object.c    object creation, templates, attributes, search
 *   mech.c      the mechanism table
 *   sign.c      sign / verify (single- and multi-part)
 *   keygen.c    key and key-pair generation
 *   module.c    the PKCS#11 entry points and the global state
 *   log.c       debug log (CUSTOS_SOFT_DEBUG, off by default); integrity
 *               failures, always reported (syslog)
 *
 * Locking: one process-wide rwlock (cs_g.lock) guards slots, tokens, sessions
 * and objects. Everything that changes them takes it exclusively; the sign and
 * verify paths take it shared and otherwise touch only their own session. */
#ifndef CS_SOFT_H
#define CS_SOFT_H

#include <p11-kit/pkcs11.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#define CS_MANUFACTURER "Custos"
#define CS_MODEL "custos-soft"
#define CS_LIB_DESCRIPTION "Custos software keystore"

#define CS_DEFAULT_PBKDF2_ITERATIONS 200000u
#define CS_MIN_PBKDF2_ITERATIONS 200000u /* lower: C_Initialize fails */
#define CS_DEFAULT_MAX_PIN_ATTEMPTS 10u
#define CS_MIN_PIN_LEN 4
#define CS_MAX_PIN_LEN 255
#define CS_SERIAL_LEN 16       /* hex chars */
#define CS_OBJID_LEN 32        /* hex chars */
#define CS_KEY_LEN 32          /* AES-256 */
#define CS_SALT_LEN 16
#define CS_NONCE_LEN 12
#define CS_TAG_LEN 16
#define CS_MAX_RECORD (1u << 20) /* largest record file we read */

/* ---- log.c ---- */
void cs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An integrity failure: always reported (syslog, or CUSTOS_SOFT_INTEGRITY_LOG). */
void cs_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cs_report_reset(void);  /* C_Initialize: report each failure once again */

/* ---- attr.c ---- */
typedef struct cs_attr {
    CK_ATTRIBUTE_TYPE type;
    CK_ULONG len;
    unsigned char *val; /* NULL when len == 0 */
} cs_attr;

typedef struct cs_attrs {
    cs_attr *a;
    size_t n, cap;
} cs_attrs;

enum cs_attr_kind { CS_AK_BYTES = 0, CS_AK_BOOL, CS_AK_ULONG };

/* Kind of a known attribute type; returns false for types we do not know. */
bool cs_attr_known(CK_ATTRIBUTE_TYPE type, enum cs_attr_kind *_kind);
CK_RV cs_attrs_set(cs_attrs *l, CK_ATTRIBUTE_TYPE type, const void *val, CK_ULONG len);
CK_RV cs_attrs_set_bool(cs_attrs *l, CK_ATTRIBUTE_TYPE type, CK_BBOOL v);
CK_RV cs_attrs_set_ulong(cs_attrs *l, CK_ATTRIBUTE_TYPE type, CK_ULONG v);
const cs_attr *cs_attrs_get(const cs_attrs *l, CK_ATTRIBUTE_TYPE type);
CK_BBOOL cs_attrs_bool(const cs_attrs *l, CK_ATTRIBUTE_TYPE type, CK_BBOOL def);
CK_ULONG cs_attrs_ulong(const cs_attrs *l, CK_ATTRIBUTE_TYPE type, CK_ULONG def);
void cs_attrs_del(cs_attrs *l, CK_ATTRIBUTE_TYPE type);
void cs_attrs_clear(cs_attrs *l);
CK_RV cs_attrs_copy(cs_attrs *dst, const cs_attrs *src);
bool cs_attrs_equal(const cs_attrs *a, const cs_attrs *b);
/* Checks a caller's template entry for the right size of its kind. */
CK_RV cs_attr_check_value(const CK_ATTRIBUTE *t);
/* Reads a template entry as bool / ulong (after cs_attr_check_value). */
CK_BBOOL cs_tmpl_bool(const CK_ATTRIBUTE *t);
CK_ULONG cs_tmpl_ulong(const CK_ATTRIBUTE *t);
const CK_ATTRIBUTE *cs_tmpl_find(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type);

/* ---- crypto.c ---- */
typedef struct cs_sealed {
    uint32_t generation;
    unsigned char nonce[CS_NONCE_LEN];
    unsigned char tag[CS_TAG_LEN];
    unsigned char *ct; /* ciphertext, same length as the plaintext */
    size_t ct_len;
} cs_sealed;

CK_RV cs_random(void *buf, size_t len);
CK_RV cs_pbkdf2(const unsigned char *pin, size_t pin_len, const unsigned char *salt,
                uint32_t iterations, unsigned char key[CS_KEY_LEN]);
/* AES-256-GCM with a fresh random nonce; *out's buffers are callee-allocated. */
CK_RV cs_seal(const unsigned char key[CS_KEY_LEN], uint32_t generation, const void *aad,
              size_t aad_len, const void *pt, size_t pt_len, cs_sealed *out);
/* Decrypts; CKR_ENCRYPTED_DATA_INVALID when the tag does not verify.
 * *_pt is callee-allocated (free with OPENSSL_clear_free(p, len)). */
CK_RV cs_open(const unsigned char key[CS_KEY_LEN], const void *aad, size_t aad_len,
              const cs_sealed *s, unsigned char **_pt, size_t *_pt_len);
void cs_sealed_clear(cs_sealed *s);
CK_RV cs_sealed_copy(cs_sealed *dst, const cs_sealed *src);

/* ---- record.c ---- */
typedef struct cs_pin_slot {
    bool present;
    unsigned char salt[CS_SALT_LEN];
    uint32_t iterations;
    uint32_t failures;
    size_t nkeys;
    cs_sealed keys[2]; /* data keys wrapped under the PIN's key, by generation */
} cs_pin_slot;

typedef struct cs_token_rec {
    char serial[CS_SERIAL_LEN + 1];
    unsigned char label[32];
    uint32_t max_attempts;
    uint32_t generation; /* current data-key generation */
    cs_pin_slot so, user;
} cs_token_rec;

typedef struct cs_object_rec {
    char serial[CS_SERIAL_LEN + 1];
    char id[CS_OBJID_LEN + 1];
    cs_attrs attrs;
    bool has_secret;
    cs_sealed secret;
    /* The DER of the header: the associated data of `secret` (callee-owned). */
    unsigned char *aad;
    size_t aad_len;
} cs_object_rec;

/* Record errors carry a reason for the log and for tests. */
typedef enum cs_rec_err {
    CS_REC_OK = 0,
    CS_REC_NOMEM,
    CS_REC_DER,       /* not DER of the expected type */
    CS_REC_DIGEST,    /* digest mismatch: corrupt */
    CS_REC_VERSION,   /* unknown version */
    CS_REC_FIELD,     /* a field out of range */
} cs_rec_err;
const char *cs_rec_err_str(cs_rec_err e);

void cs_object_rec_clear(cs_object_rec *r);
void cs_token_rec_clear(cs_token_rec *r);
/* Encodes; if `seal_key` is non-NULL and `secret_pt` is given, seals it with
 * the header as associated data first (r->secret is then set). */
cs_rec_err cs_object_rec_encode(cs_object_rec *r, const unsigned char *seal_key,
                                const unsigned char *secret_pt, size_t secret_len,
                                unsigned char **_der, size_t *_len);
cs_rec_err cs_object_rec_decode(const unsigned char *der, size_t len, cs_object_rec *_r);
cs_rec_err cs_token_rec_encode(const cs_token_rec *r, unsigned char **_der, size_t *_len);
cs_rec_err cs_token_rec_decode(const unsigned char *der, size_t len, cs_token_rec *_r);

/* ---- store.c ---- */
/* Writes a file crash-safely: temp file in the same dir, fsync, rename, fsync dir. */
CK_RV cs_store_write(const char *dir, const char *name, const void *data, size_t len);
/* Reads a whole file (at most CS_MAX_RECORD bytes); *_data is malloc'd. */
CK_RV cs_store_read(const char *path, unsigned char **_data, size_t *_len, struct stat *_st);
CK_RV cs_store_unlink(const char *dir, const char *name);
/* Exclusive inter-process lock on dir/.lock; returns an fd to pass to unlock. */
CK_RV cs_store_lock(const char *dir, int *_fd);
void cs_store_unlock(int fd);
/* mkdir 0700 (an existing one is fine), then fsync of the parent. */
CK_RV cs_store_mkdir(const char *path);
/* Removes a token directory and everything in it, then fsyncs the parent. */
CK_RV cs_store_rmtree(const char *dir);

/* ---- objects, sessions, tokens ---- */
typedef struct cs_token cs_token;
typedef struct cs_session cs_session;

typedef struct cs_object {
    CK_OBJECT_HANDLE handle;
    cs_token *tok;
    CK_SESSION_HANDLE session; /* owning session; 0 for a token object */
    char id[CS_OBJID_LEN + 1];  /* file id of a token object */
    cs_attrs attrs;             /* everything but the secret */
    bool has_secret;
    cs_sealed sealed;           /* token objects: the secret as stored */
    unsigned char *secret;      /* plaintext secret when available */
    size_t secret_len;
    EVP_PKEY *pkey;             /* keys: cached key (private only while usable) */
    bool broken;                /* its secret failed to open */
    bool authentic;             /* attributes authenticated (secret opened, or
                                 * sealed by us) in the current login */
    ino_t ino;                  /* file identity, to notice changes by others */
    struct timespec mtime;
    off_t size;
    bool seen;                  /* mark for directory scans */
} cs_object;

struct cs_token {
    char *dir;                 /* NULL: memory only */
    bool initialized;
    cs_token_rec rec;
    /* login state of this process */
    CK_USER_TYPE login;        /* CKU_USER, CKU_SO, or (CK_ULONG)-1 */
    size_t ndek;
    uint32_t dek_gen[2];
    unsigned char dek[2][CS_KEY_LEN];
    /* token objects */
    cs_object **objs;
    size_t nobjs, capobjs;
    /* what we last read from disk */
    struct timespec dir_mtime;
    struct timespec rec_mtime;
    ino_t rec_ino;
};

typedef struct cs_slot {
    CK_SLOT_ID id;
    cs_token *tok;   /* always set: an empty slot has an uninitialized token */
} cs_slot;

/* A sign/verify operation in progress (per session, no shared state). */
typedef struct cs_mech cs_mech;
typedef struct cs_op {
    int kind;                  /* CS_OP_NONE / SIGN / VERIFY */
    const cs_mech *m;
    EVP_PKEY *pkey;            /* reference held for the operation */
    EVP_PKEY_CTX *pctx;        /* reusable across operations with the same key */
    EVP_PKEY *pctx_key;        /* key pctx was made for */
    CK_MECHANISM_TYPE pctx_mech;
    const EVP_MD *pss_md, *pss_mgf;
    int pss_salt;
    EVP_MD_CTX *mdctx;         /* multi-part hashing */
    EVP_MAC_CTX *mac;          /* HMAC */
    unsigned char *hkey;       /* HMAC key the mac ctx holds */
    size_t hkey_len;
    bool update_called;
    size_t sig_len;
} cs_op;

enum { CS_OP_NONE = 0, CS_OP_SIGN, CS_OP_VERIFY };

struct cs_session {
    CK_SESSION_HANDLE handle;
    CK_SLOT_ID slot_id;
    cs_token *tok;
    CK_FLAGS flags;
    /* search */
    bool finding;
    CK_OBJECT_HANDLE *found;
    size_t nfound, found_pos;
    cs_op op;
};

/* ---- global state (module.c) ---- */
typedef struct cs_config {
    char *dir;                  /* store directory, NULL = memory only */
    uint32_t iterations;        /* PBKDF2 iterations for new PINs */
    uint32_t max_attempts;      /* wrong user PINs before the PIN locks */
} cs_config;

typedef struct cs_global {
    bool initialized;
    pthread_rwlock_t lock;
    cs_config cfg;
    cs_slot *slots;
    size_t nslots;
    cs_session **sessions;      /* indexed by handle - 1; NULL = closed */
    size_t nsessions_cap;
    cs_object **handles;        /* indexed by handle - 1 */
    size_t nhandles, caphandles;
    EVP_MAC *hmac;
} cs_global;

extern cs_global cs_g;

/* ---- token.c (callers hold cs_g.lock exclusively unless noted) ---- */
CK_RV cs_config_load(cs_config *cfg);
void cs_config_clear(cs_config *cfg);
CK_RV cs_slots_load(void);             /* scan the store, build the slot list */
CK_RV cs_slots_refresh(void);          /* notice tokens made by other processes */
void cs_slots_free(void);
cs_slot *cs_slot_get(CK_SLOT_ID id);
CK_RV cs_token_sync(cs_token *tok);    /* re-read what others changed on disk */
CK_RV cs_token_init(cs_slot *slot, const unsigned char *so_pin, size_t so_len,
                    const unsigned char label[32]);
CK_RV cs_token_login(cs_token *tok, CK_USER_TYPE who, const unsigned char *pin, size_t len);
void cs_token_logout(cs_token *tok);
CK_RV cs_token_init_pin(cs_token *tok, const unsigned char *pin, size_t len);
CK_RV cs_token_set_pin(cs_token *tok, const unsigned char *old, size_t old_len,
                       const unsigned char *pin, size_t len);
void cs_token_info(cs_token *tok, CK_TOKEN_INFO *info);
/* Stores (creates or rewrites) a token object's record. */
CK_RV cs_token_store_object(cs_token *tok, cs_object *obj);
CK_RV cs_token_delete_object(cs_token *tok, cs_object *obj);
/* Gives a token object a handle and a place in the token. */
CK_RV cs_token_add_object(cs_token *tok, cs_object *obj);
void cs_token_free(cs_token *tok);
bool cs_token_logged_in(const cs_token *tok);

/* ---- object.c ---- */
cs_object *cs_object_new(void);
void cs_object_free(cs_object *o);
void cs_object_forget_secret(cs_object *o);  /* logout: wipe plaintext */
/* Builds the cached EVP_PKEY / plaintext from a decrypted secret. */
CK_RV cs_object_set_secret(cs_object *o, unsigned char *pt, size_t len);
CK_RV cs_handle_add(cs_object *o);
void cs_handle_remove(cs_object *o);
cs_object *cs_handle_get(CK_OBJECT_HANDLE h);
/* Whether a session may see an object (private objects need a login; a
 * token object with a secret, until opened, shows unauthenticated
 * attributes and is hidden). */
bool cs_object_visible(const cs_session *s, const cs_object *o);
bool cs_object_is_private(const cs_object *o);
bool cs_object_matches(const cs_object *o, const CK_ATTRIBUTE *t, CK_ULONG n);
CK_RV cs_object_create(cs_session *s, const CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *_h);
CK_RV cs_object_get_attrs(cs_session *s, cs_object *o, CK_ATTRIBUTE *t, CK_ULONG n);
CK_RV cs_object_set_attrs(cs_session *s, cs_object *o, const CK_ATTRIBUTE *t, CK_ULONG n);
CK_RV cs_object_destroy(cs_session *s, cs_object *o);
/* The attributes of a generated key: defaults, template, custody
 * attributes (LOCAL, ALWAYS_SENSITIVE, NEVER_EXTRACTABLE, KEY_GEN_MECHANISM). */
CK_RV cs__object_template(cs_attrs *l, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt, const CK_ATTRIBUTE *t,
                          CK_ULONG n, CK_MECHANISM_TYPE mech);
CK_RV cs_object_copy(cs_session *s, cs_object *o, const CK_ATTRIBUTE *t, CK_ULONG n,
                     CK_OBJECT_HANDLE *_h);
/* Adds a finished object to the session or token (takes ownership). */
CK_RV cs_object_commit(cs_session *s, cs_object *o, CK_OBJECT_HANDLE *_h);
/* Derives public attributes (EC point, modulus, SPKI, ...) from a key. */
CK_RV cs_object_set_public_attrs(cs_attrs *l, EVP_PKEY *pkey, bool private_key);
/* Serializes a private key / secret for sealing (caller clear-frees). */
CK_RV cs_pkey_to_secret(EVP_PKEY *pkey, unsigned char **_out, size_t *_len);
CK_RV cs_ec_params_to_group(const cs_attr *params, const char **_name);

/* ---- session.c (module.c) ---- */
cs_session *cs_session_get(CK_SESSION_HANDLE h);
void cs_op_reset(cs_op *op, bool keep_cache);
void cs_op_free(cs_op *op);

/* ---- mech.c ---- */
struct cs_mech {
    CK_MECHANISM_TYPE type;
    CK_KEY_TYPE key_type;     /* CKK_EC / CKK_RSA / CKK_GENERIC_SECRET / -1 (keygen) */
    const char *md;           /* hash done by the mechanism, or NULL */
    int pad;                  /* RSA padding mode or 0 */
    bool multipart;
    CK_MECHANISM_INFO info;
};
const cs_mech *cs_mech_find(CK_MECHANISM_TYPE type);
size_t cs_mech_count(void);
const cs_mech *cs_mech_at(size_t i);

/* ---- sign.c ---- */
CK_RV cs_sign_init(cs_session *s, const CK_MECHANISM *mech, cs_object *key, int kind);
CK_RV cs_sign_update(cs_session *s, const unsigned char *data, size_t len, int kind);
CK_RV cs_sign_final(cs_session *s, unsigned char *sig, CK_ULONG *sig_len);
CK_RV cs_sign_oneshot(cs_session *s, const unsigned char *data, size_t len,
                      unsigned char *sig, CK_ULONG *sig_len);
CK_RV cs_verify_final(cs_session *s, const unsigned char *sig, size_t sig_len);
CK_RV cs_verify_oneshot(cs_session *s, const unsigned char *data, size_t len,
                        const unsigned char *sig, size_t sig_len);

/* ---- keygen.c ---- */
CK_RV cs_keygen_pair(cs_session *s, const CK_MECHANISM *m, const CK_ATTRIBUTE *pub,
                     CK_ULONG npub, const CK_ATTRIBUTE *priv, CK_ULONG npriv,
                     CK_OBJECT_HANDLE *_hpub, CK_OBJECT_HANDLE *_hpriv);
CK_RV cs_keygen_secret(cs_session *s, const CK_MECHANISM *m, const CK_ATTRIBUTE *t,
                       CK_ULONG n, CK_OBJECT_HANDLE *_h);

/* Pads a string into a blank-filled PKCS#11 field. */
void cs_pad(unsigned char *dst, size_t n, const char *src);

#endif
