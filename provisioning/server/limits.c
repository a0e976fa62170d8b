/* Rate limits: a token bucket for new registrations on this node (with
 * several nodes on one database each has its own: the service admits up to
 * N times rate-global), and a fixed 10-second window per device
 * (PROTOCOL.md §7: "5 polls per 10 s"). On a shared store (PostgreSQL) the
 * device windows are rows of the database, so that a device spreading its
 * requests over the nodes still gets one budget; otherwise they are a
 * fixed-size table keyed by a hash of the lower-cased registration id:
 * memory stays bounded whatever the number of devices, and a collision
 * only makes two devices share one budget.
 *
 * A device's window counts only requests whose evidence verified: knowing
 * a registration id must not be enough to keep the device at 429. So a
 * registration is let in when the window has room (device_wait, which
 * counts nothing) and counted once the engine has accepted its evidence
 * (device_in); refused requests cost only rate-global. On a shared store a
 * registration is counted in the database before the engine runs
 * (shared_take: one budget for all nodes, checked where it is kept) and
 * taken back if it is refused (shared_refund), so an attacker's request
 * holds a place only while the engine looks at it. */
#include "srv_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS (1u << 16)
#define STRIPES 64u
#define WINDOW 10

typedef struct slot {
    uint64_t key;
    uint32_t start;
    uint32_t count;
} slot;

struct cu_srv__limits {
    unsigned rate, per_device;
    pthread_mutex_t bucket_lock;
    double tokens;
    struct timespec last;
    pthread_mutex_t stripe[STRIPES];
    slot *slots;
};

cu_rc cu_srv__limits_new(unsigned per_second, unsigned per_device_10s, cu_srv__limits **_out)
{
    cu_srv__limits *l = calloc(1, sizeof *l);
    if (l == NULL || (per_device_10s > 0 && (l->slots = calloc(SLOTS, sizeof *l->slots)) == NULL)) {
        free(l);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    l->rate = per_second;
    l->per_device = per_device_10s;
    l->tokens = per_second;
    clock_gettime(CLOCK_MONOTONIC, &l->last);
    pthread_mutex_init(&l->bucket_lock, NULL);
    for (unsigned i = 0; i < STRIPES; i++)
        pthread_mutex_init(&l->stripe[i], NULL);
    *_out = l;
    return CU_OK;
}

void cu_srv__limits_free(cu_srv__limits *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->bucket_lock);
    for (unsigned i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&l->stripe[i]);
    free(l->slots);
    free(l);
}

bool cu_srv__limits_global(cu_srv__limits *l)
{
    if (l->rate == 0)
        return true;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&l->bucket_lock);
    double dt = (double)(now.tv_sec - l->last.tv_sec) + (double)(now.tv_nsec - l->last.tv_nsec) / 1e9;
    l->last = now;
    /* Burst: one second's worth. */
    l->tokens += dt * l->rate;
    if (l->tokens > l->rate)
        l->tokens = l->rate;
    bool ok = l->tokens >= 1.0;
    if (ok)
        l->tokens -= 1.0;
    pthread_mutex_unlock(&l->bucket_lock);
    return ok;
}

/* FNV-1a over the lower-cased id (registration ids are case-insensitive). */
static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)tolower((unsigned char)*s);
        h *= 1099511628211ull;
    }
    return h | 1; /* 0 marks an empty slot */
}

unsigned cu_srv__limits_device(cu_srv__limits *l, const char *registration_id)
{
    if (l->per_device == 0)
        return 0;
    uint64_t h = hash_id(registration_id);
    uint32_t now = (uint32_t)time(NULL);
    slot *sl = &l->slots[h & (SLOTS - 1)];
    pthread_mutex_t *m = &l->stripe[(h >> 16) % STRIPES];
    unsigned wait = 0;
    pthread_mutex_lock(m);
    if (sl->key != h || now - sl->start >= WINDOW) {
        sl->key = h;
        sl->start = now;
        sl->count = 0;
    }
    if (sl->count >= l->per_device)
        wait = WINDOW - (now - sl->start);
    else
        sl->count++;
    pthread_mutex_unlock(m);
    return wait;
}

unsigned cu_srv__limits_device_wait(cu_srv__limits *l, const char *registration_id)
{
    if (l->per_device == 0)
        return 0;
    uint64_t h = hash_id(registration_id);
    uint32_t now = (uint32_t)time(NULL);
    slot *sl = &l->slots[h & (SLOTS - 1)];
    pthread_mutex_t *m = &l->stripe[(h >> 16) % STRIPES];
    unsigned wait = 0;
    pthread_mutex_lock(m);
    if (sl->key == h && now - sl->start < WINDOW && sl->count >= l->per_device)
        wait = WINDOW - (now - sl->start);
    pthread_mutex_unlock(m);
    return wait;
}

/* The shared window is full: so is this node's, until it ends. */
static void device_block(cu_srv__limits *l, const char *registration_id, unsigned wait)
{
    uint64_t h = hash_id(registration_id);
    uint32_t now = (uint32_t)time(NULL);
    slot *sl = &l->slots[h & (SLOTS - 1)];
    pthread_mutex_t *m = &l->stripe[(h >> 16) % STRIPES];
    pthread_mutex_lock(m);
    sl->key = h;
    sl->start = now - WINDOW + (wait < WINDOW ? wait : WINDOW);
    sl->count = l->per_device;
    pthread_mutex_unlock(m);
}

static void shared_key(const char *registration_id, char key[160])
{
    size_t i = 0;
    for (; registration_id[i] && i < 128; i++)
        key[i] = (char)tolower((unsigned char)registration_id[i]);
    key[i] = 0;
}

unsigned cu_srv__limits_shared_take(cu_srv__limits *l, cu_store *s, const char *registration_id)
{
    if (l->per_device == 0 || s == NULL)
        return 0;
    char key[160];
    unsigned wait = 0;
    shared_key(registration_id, key);
    if (cu_store_rate_hit(s, key, WINDOW, l->per_device, &wait) != CU_OK) {
        /* No shared windows, or the database is out: this node's own count
         * still bounds the device (the request itself will fail with 503
         * if the store is really gone). */
        cu_err_clear();
        return 0;
    }
    if (wait != 0)
        device_block(l, registration_id, wait);
    return wait;
}

void cu_srv__limits_shared_refund(cu_srv__limits *l, cu_store *s, const char *registration_id)
{
    if (l->per_device == 0 || s == NULL)
        return;
    char key[160];
    shared_key(registration_id, key);
    if (cu_store_rate_undo(s, key) != CU_OK)
        cu_err_clear(); /* at worst the device waits out a window it did not use */
}

unsigned cu_srv__limits_device_in(cu_srv__limits *l, cu_store *s, const char *registration_id)
{
    if (l->per_device == 0)
        return 0;
    unsigned wait = cu_srv__limits_device(l, registration_id);
    return wait != 0 ? wait : cu_srv__limits_shared_take(l, s, registration_id);
}
