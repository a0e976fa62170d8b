/* The module gate: which threads are inside a PKCS#11 module right now.
 *
 * A module's own locks are out of the layer's reach. A thread signing on its
 * kept session holds none of the layer's locks, so the fork handlers' taking
 * them does not wait for it; if fork() strikes while it is inside the module
 * (SoftHSM2 holds its slot and session mutexes during every call), the child
 * inherits those mutexes locked and hangs at its first call. So every call
 * the layer makes goes through the gate (CU__P11): a thread marks itself
 * inside, and the forking thread, after taking the layer's locks, closes the
 * gate and waits until no other thread is inside.
 *
 * The mark costs no locked instruction: each thread has a slot of its own,
 * and the forking thread makes the other threads' marks visible with
 * membarrier(2) (an asymmetric barrier; where the kernel lacks it, each
 * mark is followed by a full fence instead). */
#include "internal.h"

#include <linux/membarrier.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef cu__gate gate_slot;

/* Slots are reused, never freed: a thread's exit gives its slot back. */
static gate_slot *slots;
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t slot_key;
static bool have_key;
_Thread_local cu__gate *cu__gate_mine CU__TLS_IE;
/* Read on every call: lines of its own, which nothing written often shares. */
cu__gate_state cu__gate_st;
#define mine cu__gate_mine
#define closing cu__gate_st.closing
#define asymmetric cu__gate_st.asymmetric

/* A fork waits this long for a call to come out of a module (a TPM's key
 * generation can take seconds); after that it goes ahead as it used to. */
#define WAIT_MAX_NS (10LL * 1000 * 1000 * 1000)

/* At the thread's exit (key destructor), or when it could not keep it. Other
 * destructors of the exiting thread may still call a module: they take a
 * slot anew. */
static void slot_release(void *p)
{
    gate_slot *s = p;
    if (mine == s)
        mine = NULL;
    pthread_mutex_lock(&slots_lock);
    atomic_store(&s->depth, 0);
    s->used = false;
    pthread_mutex_unlock(&slots_lock);
}

void cu__gate_install(void)
{
    have_key = pthread_key_create(&slot_key, slot_release) == 0;
    atomic_store(&asymmetric, syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0);
}

static gate_slot *slot_register(void)
{
    if (!have_key)
        return NULL;
    pthread_mutex_lock(&slots_lock);
    gate_slot *s = slots;
    while (s != NULL && s->used)
        s = s->next;
    if (s == NULL && (s = aligned_alloc(_Alignof(gate_slot), sizeof *s)) != NULL) {
        memset(s, 0, sizeof *s);
        s->next = slots;
        slots = s;
    }
    if (s != NULL) {
        s->used = true;
        atomic_store(&s->depth, 0);
    }
    pthread_mutex_unlock(&slots_lock);
    /* Without a slot (no memory) the thread goes through ungated: a fork
     * then does not wait for it, as before the gate. */
    if (s != NULL && pthread_setspecific(slot_key, s) != 0) {
        slot_release(s);
        s = NULL;
    }
    return mine = s;
}

/* The way in when the inline one (internal.h) cannot take it: a thread's
 * first call, a nested call, or a fork closing the gate. */
cu__gate *cu__gate_enter_slow(void)
{
    gate_slot *s = mine != NULL ? mine : slot_register();
    if (s == NULL)
        return NULL;
    int d = atomic_load_explicit(&s->depth, memory_order_relaxed);
    for (;;) {
        atomic_store_explicit(&s->depth, d + 1, memory_order_relaxed);
        cu__gate_fence();
        /* Already inside (a gated call made within another) it must not
         * wait: the fork is waiting for this thread's outer call. */
        if (d > 0 || !atomic_load_explicit(&closing, memory_order_relaxed))
            return s;
        atomic_store_explicit(&s->depth, d, memory_order_release);
        while (atomic_load_explicit(&closing, memory_order_acquire))
            sched_yield();
    }
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* prepare: after the layer's locks, so that no thread holding one of them
 * is left to come out of a module. The forking thread itself may be inside
 * one (a module forking a helper): then the others may be waiting for it
 * in that module, and the fork goes ahead without waiting. */
void cu__gate_close(void)
{
    atomic_store(&closing, 1);
    if (atomic_load(&asymmetric) && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
        /* Not expected once registered. From now on marks are fenced; a
         * mark stored without one is in a store buffer for far less than
         * the millisecond waited here. */
        atomic_store(&asymmetric, false);
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    pthread_mutex_lock(&slots_lock);
    if (mine != NULL && atomic_load(&mine->depth) > 0)
        return;
    long long end = now_ns() + WAIT_MAX_NS;
    for (gate_slot *s = slots; s != NULL; s = s->next)
        while (s != mine && atomic_load(&s->depth) > 0 && now_ns() < end)
            sched_yield();
}

void cu__gate_open_parent(void)
{
    pthread_mutex_unlock(&slots_lock);
    atomic_store(&closing, 0);
}

/* The child's only thread is the forking one: every other slot is free.
 * The child is a process of its own for membarrier: registered anew. */
void cu__gate_open_child(void)
{
    pthread_mutex_init(&slots_lock, NULL);
    atomic_store(&asymmetric, syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0);
    for (gate_slot *s = slots; s != NULL; s = s->next)
        if (s != mine) {
            atomic_store(&s->depth, 0);
            s->used = false;
        }
    atomic_store(&closing, 0);
}
