/* Per-thread sessions: a thread keeps one session of each token it signs
 * with (at most SLOTS tokens), so that the common sign path (take,
 * C_SignInit, C_Sign, park) takes no lock and makes no atomic
 * read-modify-write: on custos-soft, where an HMAC costs ~300 ns, the pool's
 * mutex and even a locked exchange showed in the profile.
 *
 * A kept session is owned by its thread: only that thread takes and parks it.
 * So that threads keeping sessions can never starve the pool, at most half
 * of a token's max_sessions are kept (n_owned); beyond that threads use the
 * pool as before.
 *
 * Hand-backs: a thread that exits gives its sessions back to their pools
 * (pthread key destructor); a token that is freed closes the sessions kept
 * for it in every thread; a session kept from before a fork() is never used
 * in the child (it belongs to the parent; the slot is re-bound to a session
 * of the child); a finalized module's sessions are never used again.
 *
 * Locking: a slot's session fields are touched by its owner thread, and by
 * others only when the slot's token is being freed (then no thread uses the
 * token). Binding a slot, the tokens' lists of slots, thread exit and token
 * free run under cu__tc_lock, which is taken before a token's pool lock, never
 * after it. */
#include "internal.h"

#include <stdlib.h>

/* Tokens a thread keeps a session for at once (more: one is given back). */
enum { SLOTS = 4 };

struct cu_tslot {
    atomic_ullong serial;    /* cu_token.serial this slot serves, 0: free */
    CK_SESSION_HANDLE s;     /* the kept session (owner thread) */
    unsigned long gen;       /* cu__fork_gen when s was opened */
    bool busy;               /* s is taken (owner thread) */
    cu_token *tok;           /* guarded by cu__tc_lock */
    struct cu_tslot *next;   /* in tok->parked, guarded by cu__tc_lock */
};

typedef struct tcache {
    struct cu_tslot slot[SLOTS];
    unsigned evict;          /* round-robin victim when every slot is bound */
} tcache;

pthread_mutex_t cu__tc_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP; /* fork.c takes it around a fork */
static pthread_once_t tc_once = PTHREAD_ONCE_INIT;
static pthread_key_t tc_key;
static bool tc_key_ok;
static _Thread_local tcache *tl;

static unsigned long fork_gen(void)
{
    return atomic_load_explicit(&cu__fork_gen, memory_order_relaxed);
}

/* Called with cu__tc_lock held: unbinds a slot. Its idle session goes back to
 * the pool (give) or is closed (the token is being freed); a session of the
 * parent of a fork() is only forgotten. */
static void unbind_locked(struct cu_tslot *sl, bool give)
{
    cu_token *t = sl->tok;
    if (t == NULL)
        return;
    bool ours = sl->gen == fork_gen();
    if (ours && !sl->busy) {
        if (give)
            cu__pool_put(t, sl->s);
        else if (!t->mod->finalized)
            cu__close_session(t->mod, sl->s);
    }
    if (ours && give)
        atomic_fetch_sub(&t->n_owned, 1);
    for (struct cu_tslot **pp = &t->parked; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == sl) {
            *pp = sl->next;
            break;
        }
    }
    sl->next = NULL;
    sl->tok = NULL;
    sl->busy = false;
    sl->s = CK_INVALID_HANDLE;
    atomic_store(&sl->serial, 0);
}

static void thread_exit(void *p)
{
    tcache *c = p;
    pthread_mutex_lock(&cu__tc_lock);
    for (int i = 0; i < SLOTS; i++)
        unbind_locked(&c->slot[i], true);
    pthread_mutex_unlock(&cu__tc_lock);
    free(c);
}

/* cu__tc_lock is taken around fork by fork.c, in the layer's lock order. */
static void make_key(void)
{
    tc_key_ok = pthread_key_create(&tc_key, thread_exit) == 0;
}

/* This thread's cache, made on first use; NULL if it cannot be (then the
 * pool alone serves this thread). */
static tcache *cache(void)
{
    if (tl != NULL)
        return tl;
    pthread_once(&tc_once, make_key);
    if (!tc_key_ok)
        return NULL;
    tcache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    if (pthread_setspecific(tc_key, c) != 0) {
        free(c);
        return NULL;
    }
    tl = c;
    return c;
}

static struct cu_tslot *slot_of(tcache *c, const cu_token *t)
{
    for (int i = 0; i < SLOTS; i++)
        if (atomic_load_explicit(&c->slot[i].serial, memory_order_relaxed) == t->serial)
            return &c->slot[i];
    return NULL;
}

/* Counts one more kept session of t, unless half its sessions are kept. */
static bool may_own(cu_token *t)
{
    if (atomic_fetch_add(&t->n_owned, 1) < t->max_sessions / 2)
        return true;
    atomic_fetch_sub(&t->n_owned, 1);
    return false;
}

bool cu__tcache_take(cu_token *t, CK_SESSION_HANDLE *_s)
{
    tcache *c = tl;
    struct cu_tslot *sl = c ? slot_of(c, t) : NULL;
    if (sl == NULL || sl->busy || sl->gen != fork_gen() || t->mod->finalized)
        return false;
    sl->busy = true;
    *_s = sl->s;
    return true;
}

bool cu__tcache_park(cu_token *t, CK_SESSION_HANDLE s)
{
    unsigned long gen = fork_gen();
    if (t->fork_gen != gen || t->mod->finalized)
        return false;
    tcache *c = tl;
    struct cu_tslot *sl = c ? slot_of(c, t) : NULL;
    if (sl != NULL) {
        if (sl->gen == gen) {
            if (!sl->busy || sl->s != s)
                return false; /* a second session of this thread: the pool's */
            sl->busy = false;
            return true;
        }
        /* Kept from before a fork(): keep this one instead. */
        if (!may_own(t))
            return false;
        sl->s = s;
        sl->gen = gen;
        sl->busy = false;
        return true;
    }
    /* The first session of this token in this thread: bind a slot (rare). */
    if ((c = cache()) == NULL || !may_own(t))
        return false;
    pthread_mutex_lock(&cu__tc_lock);
    for (int i = 0; i < SLOTS && sl == NULL; i++)
        if (c->slot[i].tok == NULL)
            sl = &c->slot[i];
    for (int i = 0; i < SLOTS && sl == NULL; i++) {
        struct cu_tslot *v = &c->slot[c->evict++ % SLOTS];
        if (!v->busy) {
            unbind_locked(v, true);
            sl = v;
        }
    }
    if (sl != NULL) {
        sl->tok = t;
        sl->s = s;
        sl->gen = gen;
        sl->busy = false;
        sl->next = t->parked;
        t->parked = sl;
        atomic_store(&sl->serial, t->serial);
    } else {
        atomic_fetch_sub(&t->n_owned, 1);
    }
    pthread_mutex_unlock(&cu__tc_lock);
    return sl != NULL;
}

void cu__tcache_dropped(cu_token *t, CK_SESSION_HANDLE s)
{
    tcache *c = tl;
    struct cu_tslot *sl = c ? slot_of(c, t) : NULL;
    if (sl == NULL || !sl->busy || sl->s != s)
        return;
    pthread_mutex_lock(&cu__tc_lock);
    sl->busy = false;
    sl->s = CK_INVALID_HANDLE;
    if (sl->gen == fork_gen())
        atomic_fetch_sub(&t->n_owned, 1);
    sl->gen = ~0ul; /* nothing to give back or close */
    unbind_locked(sl, true);
    pthread_mutex_unlock(&cu__tc_lock);
}

void cu__tcache_forget(cu_token *t)
{
    pthread_mutex_lock(&cu__tc_lock);
    while (t->parked != NULL)
        unbind_locked(t->parked, false);
    pthread_mutex_unlock(&cu__tc_lock);
}
