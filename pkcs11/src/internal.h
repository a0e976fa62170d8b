/* Token layer internals shared by the files of pkcs11/src (not installed). */
#ifndef CU_P11_INTERNAL_H
#define CU_P11_INTERNAL_H

#include <custos/token.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* Cross-file internal names carry a double underscore (cu__). */

/* The live objects and tokens whose locks the fork handlers take: each
 * links itself once its lock (and condition) is made, and unlinks itself
 * before they are destroyed, holding no other lock of the layer. */
typedef struct cu__live {
    struct cu__live *prev, *next;
    pthread_mutex_t *lock;
    pthread_cond_t *cond; /* made anew in the child, or NULL */
} cu__live;
typedef struct cu__live_list {
    pthread_mutex_t lock;
    cu__live *head;
} cu__live_list;

struct cu_module {
    atomic_uint refs;
    char *path;
    CK_FUNCTION_LIST *f;
    unsigned quirks;
    unsigned long fork_gen; /* process generation the module was initialized in */
    pthread_mutex_t lock;   /* guards re-initialization after fork; recursive */
    cu__live live;          /* in cu__live_modules */
    /* Held around C_OpenSession and C_CloseSession: tpm2-pkcs11 1.9 hands
     * two threads that open or close at once a shared session context
     * (double frees, operations seen as active by the other); opening and
     * closing are rare (sessions are pooled), so every module pays nothing. */
    pthread_mutex_t session_lock;
    bool finalized;         /* cu_p11_shutdown ran; calls fail cleanly */
    struct cu_login *logins;/* slots this process logged in to (PIN digests) */
    struct cu_module *next;
};

struct cu_token {
    atomic_uint refs;
    cu_module *mod;
    CK_FUNCTION_LIST *f;      /* == mod->f, for short call sites */
    CK_SLOT_ID slot;
    cu_token_desc desc;
    char *pin;                /* kept to log in again after fork; wiped on free */
    bool login_required;
    bool logged_in;

    pthread_mutex_t lock;     /* recursive (see the fork handlers) */
    pthread_cond_t cond;
    cu__live live;            /* in cu__live_tokens */
    CK_SESSION_HANDLE *idle;  /* free sessions, used as a stack */
    size_t n_idle;
    unsigned n_open, max_sessions; /* n_open counts kept sessions too */
    /* Sessions kept by threads (session_cache.c): this token's identity
     * there (never reused, unlike its address), how many are kept (at most
     * max_sessions / 2), and the slots that keep one (guarded by
     * session_cache.c's lock). */
    unsigned long long serial;
    atomic_uint n_owned;
    struct cu_tslot *parked;
    /* Never closed: keeps the login state and owns session copies of keys. */
    CK_SESSION_HANDLE keeper;
    unsigned long fork_gen;
    atomic_ulong epoch;       /* bumped when handles become invalid (fork) */

    CK_MECHANISM_TYPE *mechs; /* sorted, for cu__token_has_mech */
    size_t n_mechs;
};

struct cu_object {
    cu_token *tok;
    CK_OBJECT_HANDLE h;
    CK_OBJECT_HANDLE fast;    /* session copy used for signing, or 0 */
    unsigned long epoch;      /* token epoch h/fast belong to */
    pthread_mutex_t lock;     /* guards h/fast refresh; recursive */
    cu__live live;            /* in cu__live_objects */
    bool fast_tried;
    CK_OBJECT_CLASS ckc;
    CK_KEY_TYPE ckk;
    cu_class cls;
    cu_key_type kt;
    char *label;
    uint8_t *id;
    size_t id_len;
    unsigned bits;
};

extern atomic_ulong cu__fork_gen;

/* fork() (fork.c): the layer's locks are all taken by the forking thread
 * before the fork (prepare) and released after it (parent) or made anew
 * (child, whose thread does not own them), so that no lock another thread
 * held at the fork stays held for good in the child. The order is the one
 * every other path takes them in: the session cache's lock, each object's,
 * each token's pool lock, the module registry and each module's lock. All
 * are recursive: a module that forks (a helper spawned from C_Initialize)
 * while the layer holds one does not deadlock itself. (A module's
 * session_lock, held around the module's own C_OpenSession/C_CloseSession,
 * is not taken: the child makes it anew at its first use, cu__module_ready.) */
void cu__fork_handlers_install(void);
/* After a module's C_Initialize, which may have registered fork handlers of
 * its own: the layer's run before them (fork.c). */
void cu__fork_handlers_after_init(void);
extern pthread_mutex_t cu__tc_lock;       /* session_cache.c */
extern pthread_mutex_t cu__registry_lock; /* module.c */
extern cu__live_list cu__live_objects, cu__live_tokens, cu__live_modules;
void cu__live_link(cu__live_list *l, cu__live *n, pthread_mutex_t *lock, pthread_cond_t *cond);
void cu__live_unlink(cu__live_list *l, cu__live *n);
/* A recursive mutex (made anew in a fork()ed child). */
void cu__mutex_init_recursive(pthread_mutex_t *mu);

/* The module gate (gate.c): every call the layer makes into a module goes
 * through CU__P11, so that the fork handlers can wait until no thread is
 * inside a module (whose own mutexes a child would otherwise inherit
 * locked). close: in prepare, after the layer's locks. */
/* Two cache lines each: threads writing their marks must not share a line,
 * nor a pair of lines (the adjacent-line prefetcher moves them together:
 * at 64 bytes two threads' HMACs on custos-soft cost 12% more). */
typedef struct cu__gate {
    _Alignas(128) atomic_int depth; /* calls of its thread now inside a module */
    bool used;        /* owned by a live thread */
    struct cu__gate *next;
} cu__gate;
void cu__gate_install(void);
/* initial-exec: no __tls_get_addr call on every PKCS#11 call (the layer is
 * linked into custos.so, which OpenSSL dlopen()s; one pointer fits in the
 * static TLS glibc keeps for such libraries). */
#define CU__TLS_IE __attribute__((tls_model("initial-exec")))
extern _Thread_local cu__gate *cu__gate_mine CU__TLS_IE;
typedef struct cu__gate_state {
    _Alignas(128) atomic_int closing; /* a fork is waiting: stay out */
    atomic_bool asymmetric;          /* membarrier registered: a mark needs no fence */
    char pad[128 - sizeof(atomic_int) - sizeof(atomic_bool)];
} cu__gate_state;
extern cu__gate_state cu__gate_st;
cu__gate *cu__gate_enter_slow(void);

static inline void cu__gate_fence(void)
{
    if (atomic_load_explicit(&cu__gate_st.asymmetric, memory_order_relaxed))
        atomic_signal_fence(memory_order_seq_cst);
    else
        atomic_thread_fence(memory_order_seq_cst);
}

/* Marks the thread inside a module; returns its slot (NULL: ungated). */
static inline cu__gate *cu__gate_enter(void)
{
    cu__gate *g = cu__gate_mine;
    if (g == NULL || atomic_load_explicit(&g->depth, memory_order_relaxed) != 0)
        return cu__gate_enter_slow();
    atomic_store_explicit(&g->depth, 1, memory_order_relaxed);
    cu__gate_fence();
    if (!atomic_load_explicit(&cu__gate_st.closing, memory_order_relaxed))
        return g;
    atomic_store_explicit(&g->depth, 0, memory_order_release);
    return cu__gate_enter_slow();
}

static inline void cu__gate_leave(cu__gate *g)
{
    if (g != NULL)
        atomic_store_explicit(&g->depth, atomic_load_explicit(&g->depth, memory_order_relaxed) - 1,
                              memory_order_release);
}
void cu__gate_close(void);
void cu__gate_open_parent(void);
void cu__gate_open_child(void);
#define CU__P11(f, fn, ...)                                                                                  \
    ({                                                                                                       \
        cu__gate *cu__g_ = cu__gate_enter();                                                                 \
        CK_RV cu__rv_ = (f)->fn(__VA_ARGS__);                                                                \
        cu__gate_leave(cu__g_);                                                                              \
        cu__rv_;                                                                                             \
    })

/* Returns CU_OK when the module is usable in this process (re-initializing it
 * in a fork()ed child). */
cu_rc cu__module_ready(cu_module *m);
cu_module *cu__module_ref(cu_module *m);
/* Finalizes and initializes a module again after delay_us, when nothing
 * else in the process holds it (init-retry quirk). */
cu_rc cu__module_restart(cu_module *m, unsigned delay_us);
/* Login state is per process and token, shared by every session: remember
 * the PIN's digest so that a second open with another PIN is refused even
 * though the module answers CKR_USER_ALREADY_LOGGED_IN. */
void cu__module_note_login(cu_module *m, CK_SLOT_ID slot, const char *pin);
bool cu__module_login_matches(cu_module *m, CK_SLOT_ID slot, const char *pin);
void cu__token_desc_read(cu_module *m, CK_SLOT_ID id, cu_token_desc *d);
const char *cu__mech_name(CK_MECHANISM_TYPE t);

/* Session pool. get takes the session this thread keeps if it has one, else
 * one from the pool; it blocks when max_sessions are busy. put keeps the
 * session for this thread (if it may), else returns it to the pool. */
cu_rc cu__session_get(cu_token *t, CK_SESSION_HANDLE *_s);
void cu__session_put(cu_token *t, CK_SESSION_HANDLE s);
/* Returns a session to the pool itself (never parks it). */
void cu__pool_put(cu_token *t, CK_SESSION_HANDLE s);

/* Sessions kept per thread (session_cache.c). take/park take no lock in the
 * common case; take fails when this thread keeps no idle session of t, park
 * when it may not keep s (then s goes to the pool). dropped: s was closed as
 * invalid. forget closes every kept session of t (t is being freed). Call
 * none of them with t->lock held. */
bool cu__tcache_take(cu_token *t, CK_SESSION_HANDLE *_s);
bool cu__tcache_park(cu_token *t, CK_SESSION_HANDLE s);
void cu__tcache_dropped(cu_token *t, CK_SESSION_HANDLE s);
void cu__tcache_forget(cu_token *t);
/* Drops a session that the module reported invalid. */
void cu__session_drop(cu_token *t, CK_SESSION_HANDLE s);
/* C_OpenSession (read-write, serial) and C_CloseSession under the module's
 * session_lock. */
CK_RV cu__open_session(cu_module *m, CK_SLOT_ID slot, CK_SESSION_HANDLE *_s);
CK_RV cu__close_session(cu_module *m, CK_SESSION_HANDLE s);
bool cu__token_has_mech(const cu_token *t, CK_MECHANISM_TYPE m);
/* Logs in again with the PIN kept for that purpose (the token lost the login). */
cu_rc cu__token_relogin(cu_token *t);

/* Describes a token for messages: "token 'L' (serial S)". */
const char *cu__token_name(const cu_token *t, char *buf, size_t len);
/* Describes an object for messages: "token 'L': private-key 'label' id 0a0b". */
const char *cu__object_name(const cu_object *o, char *buf, size_t len);

/* Reads object metadata into a new cu_object (takes a token reference). */
cu_rc cu__object_new(cu_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, cu_object **_out);
/* Returns the handle to use for a signature (session copy when there is one),
 * refreshing stale handles after fork. */
cu_rc cu__object_handle(cu_object *o, CK_SESSION_HANDLE s, bool for_signing, CK_OBJECT_HANDLE *_h);
/* Finds the public twin (same CKA_ID) of a private key. */
cu_rc cu__object_public_twin(cu_object *o, cu_object **_pub);

/* Parses a pkcs11: URI and rejects unknown attributes. */
cu_rc cu__uri_parse(const char *uri, P11KitUri **_u);
/* Clears the token-info fields a URI must not carry: the clock, and a field
 * padded with NULs instead of blanks (tpm2-pkcs11's model), which would
 * print as %00 runs. */
void cu__uri_token_fields(CK_TOKEN_INFO *ti);
/* The URI without its pin-value, for error messages (returns buf). */
const char *cu__uri_for_message(const char *uri, char *buf, size_t len);
/* Reads a PIN from a pin-source value ("file:/p", "file:///p" or "/p"). */
cu_rc cu__pin_from_source(const char *src, char **_pin);
void cu__secret_free(char *s);
/* Records e again as this thread's last error; returns its rc. */
cu_rc cu__err_restore(const cu_err *e);

/* Trims the blank padding of a PKCS#11 fixed-size string into a C string. */
void cu__trim_copy(char *dst, size_t dst_size, const unsigned char *src, size_t src_len);
void cu__hex(const uint8_t *in, size_t len, char *out, size_t out_size);

#endif
