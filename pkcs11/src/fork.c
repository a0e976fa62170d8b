/* fork() handlers: every lock of the token layer is taken by the forking
 * thread before the fork and released after it in the parent, or made anew
 * in the child (its only thread does not own what the parent's thread
 * took). Without them, a child forked while another thread held one of the
 * locks (taking a session, refreshing a key's handle, noting a login) would
 * wait on it forever at its first use of the token. The order is the one
 * every other path takes them in (internal.h). Then the module gate
 * (gate.c) waits for the threads inside a module to come out. */
#include "internal.h"

cu__live_list cu__live_objects = {PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP, NULL};
cu__live_list cu__live_tokens = {PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP, NULL};
cu__live_list cu__live_modules = {PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP, NULL};

static pthread_once_t installed = PTHREAD_ONCE_INIT;

/* Handlers of the layer's users (cu_p11_atfork), around the layer's own. */
enum { MAX_USERS = 8 };
static struct { void (*prepare)(void), (*parent)(void), (*child)(void); } users[MAX_USERS];
static atomic_int n_users;
static pthread_mutex_t users_lock = PTHREAD_MUTEX_INITIALIZER;

void cu__mutex_init_recursive(pthread_mutex_t *mu)
{
    pthread_mutexattr_t rec;
    pthread_mutexattr_init(&rec);
    pthread_mutexattr_settype(&rec, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(mu, &rec);
    pthread_mutexattr_destroy(&rec);
}

void cu__live_link(cu__live_list *l, cu__live *n, pthread_mutex_t *lock, pthread_cond_t *cond)
{
    n->lock = lock;
    n->cond = cond;
    pthread_mutex_lock(&l->lock);
    n->prev = NULL;
    n->next = l->head;
    if (l->head != NULL)
        l->head->prev = n;
    l->head = n;
    pthread_mutex_unlock(&l->lock);
}

void cu__live_unlink(cu__live_list *l, cu__live *n)
{
    pthread_mutex_lock(&l->lock);
    if (n->prev != NULL)
        n->prev->next = n->next;
    else if (l->head == n)
        l->head = n->next;
    if (n->next != NULL)
        n->next->prev = n->prev;
    n->prev = n->next = NULL;
    pthread_mutex_unlock(&l->lock);
}

static void live_lock_all(cu__live_list *l)
{
    pthread_mutex_lock(&l->lock);
    for (cu__live *n = l->head; n != NULL; n = n->next)
        pthread_mutex_lock(n->lock);
}

static void live_unlock_all(cu__live_list *l)
{
    for (cu__live *n = l->head; n != NULL; n = n->next)
        pthread_mutex_unlock(n->lock);
    pthread_mutex_unlock(&l->lock);
}

static void live_renew_all(cu__live_list *l)
{
    for (cu__live *n = l->head; n != NULL; n = n->next) {
        cu__mutex_init_recursive(n->lock);
        if (n->cond != NULL)
            pthread_cond_init(n->cond, NULL); /* the parent's waiters are not here */
    }
    cu__mutex_init_recursive(&l->lock);
}

/* pthread_atfork runs prepare handlers last-registered first. A module that
 * takes a lock of its own in a fork handler (custos-soft does) must take it
 * after the gate has waited for the threads inside the module, which may be
 * waiting for that very lock: so the layer registers its handlers again
 * after each module initialization (cu__fork_handlers_after_init), to run
 * before the module's. Of the copies, the first prepare and the last
 * parent or child, by this count, do the work. Forks do not overlap here:
 * glibc runs one fork's handlers at a time. */
static int nesting;
static int registered;
enum { MAX_REGISTRATIONS = 32 };

static void prepare_all(void);
static void parent_all(void);
static void child_all(void);

static void prepare(void)
{
    if (nesting++ == 0)
        prepare_all();
}

static void parent(void)
{
    if (--nesting == 0)
        parent_all();
}

static void child(void)
{
    if (--nesting == 0)
        child_all();
}

static void prepare_all(void)
{
    int n = atomic_load(&n_users);
    for (int i = 0; i < n; i++)
        if (users[i].prepare != NULL)
            users[i].prepare();
    pthread_mutex_lock(&cu__tc_lock);
    live_lock_all(&cu__live_objects);
    live_lock_all(&cu__live_tokens);
    pthread_mutex_lock(&cu__registry_lock);
    live_lock_all(&cu__live_modules);
    cu__gate_close();
}

static void parent_all(void)
{
    cu__gate_open_parent();
    live_unlock_all(&cu__live_modules);
    pthread_mutex_unlock(&cu__registry_lock);
    live_unlock_all(&cu__live_tokens);
    live_unlock_all(&cu__live_objects);
    pthread_mutex_unlock(&cu__tc_lock);
    for (int i = atomic_load(&n_users) - 1; i >= 0; i--)
        if (users[i].parent != NULL)
            users[i].parent();
}

static void child_all(void)
{
    cu__gate_open_child();
    live_renew_all(&cu__live_modules);
    cu__mutex_init_recursive(&cu__registry_lock);
    live_renew_all(&cu__live_tokens);
    live_renew_all(&cu__live_objects);
    cu__mutex_init_recursive(&cu__tc_lock);
    atomic_fetch_add(&cu__fork_gen, 1);
    for (int i = atomic_load(&n_users) - 1; i >= 0; i--)
        if (users[i].child != NULL)
            users[i].child();
}

static void install(void)
{
    cu__gate_install();
    if (pthread_atfork(prepare, parent, child) == 0)
        registered = 1;
}

void cu__fork_handlers_install(void)
{
    pthread_once(&installed, install);
}

/* Called holding none of the locks the handlers take: pthread_atfork waits
 * for a fork under way, whose prepare handler would wait for such a lock. */
void cu__fork_handlers_after_init(void)
{
    static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&reg_lock);
    if (registered < MAX_REGISTRATIONS && pthread_atfork(prepare, parent, child) == 0)
        registered++;
    pthread_mutex_unlock(&reg_lock);
}

cu_rc cu_p11_atfork(void (*prepare_fn)(void), void (*parent_fn)(void), void (*child_fn)(void))
{
    cu__fork_handlers_install();
    pthread_mutex_lock(&users_lock);
    int n = atomic_load(&n_users);
    if (n == MAX_USERS) {
        pthread_mutex_unlock(&users_lock);
        return cu_err_set(CU_E_STATE, "too many fork handlers (at most %d)", MAX_USERS);
    }
    users[n].prepare = prepare_fn;
    users[n].parent = parent_fn;
    users[n].child = child_fn;
    atomic_store(&n_users, n + 1); /* published after the entry */
    pthread_mutex_unlock(&users_lock);
    return CU_OK;
}
