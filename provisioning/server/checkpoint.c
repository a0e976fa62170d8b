/* The checkpointer: on a SQLite store, copies the write-ahead log back
 * into the database from a thread of its own, so that a registration's
 * commit no longer does it (copying 16 MB of log and two fsyncs while
 * holding the write lock: the p99 latency under load). custosd's
 * connections defer to it (cu_store_wal_defer) and call cu_srv__ckpt_due
 * when the log is as long as a commit would have checkpointed at.
 *
 * Two passes. The first copies what it can while the workers go on; but
 * the log can only start over once a checkpoint has copied all of it with
 * no commit after, so the second pass, which copies the few pages
 * committed during the first, holds the write lock. */
#include "srv_int.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

struct cu_srv__ckpt {
    cu_srv__srv *srv;
    cu_store *store; /* its own connection */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool due, stop;
};

/* With no commit calling for one: a quiet node's log is copied back
 * within a second. */
#define IDLE_MS 1000

void cu_srv__ckpt_due(void *arg)
{
    cu_srv__ckpt *c = arg;
    pthread_mutex_lock(&c->lock);
    if (!c->due) {
        c->due = true;
        pthread_cond_signal(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
}

static void checkpoint(cu_srv__ckpt *c, time_t *warned)
{
    unsigned long left = 0;
    if (cu_store_checkpoint(c->store, &left) == CU_OK || time(NULL) - *warned < 60)
        return;
    *warned = time(NULL);
    cu_srv__lf f[] = {CU_LF_S("error", cu_err_last()->msg)};
    cu_srv__log(CU_LOG_WARN, "store checkpoint failed (retrying)", f, 1);
}

static void *run(void *arg)
{
    cu_srv__ckpt *c = arg;
    time_t warned = 0;
    pthread_mutex_lock(&c->lock);
    while (!c->stop) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_nsec += IDLE_MS * 1000000L;
        t.tv_sec += t.tv_nsec / 1000000000L;
        t.tv_nsec %= 1000000000L;
        int w = 0;
        while (!c->due && !c->stop && w != ETIMEDOUT)
            w = pthread_cond_timedwait(&c->cond, &c->lock, &t);
        if (c->stop)
            break;
        bool due = c->due;
        pthread_mutex_unlock(&c->lock);
        checkpoint(c, &warned);
        if (due) {
            pthread_mutex_lock(&c->srv->write_lock);
            checkpoint(c, &warned);
            pthread_mutex_unlock(&c->srv->write_lock);
        }
        pthread_mutex_lock(&c->lock);
        /* Commits that called while it ran are covered by it. */
        c->due = false;
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

cu_rc cu_srv__ckpt_start(cu_srv__srv *srv, cu_srv__ckpt **_c)
{
    *_c = NULL;
    cu_srv__ckpt *c = calloc(1, sizeof *c);
    if (c == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    c->srv = srv;
    cu_rc rc = cu_srv_state_store_open(srv->st, &c->store);
    if (rc != CU_OK) {
        free(c);
        return rc;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (pthread_create(&c->thread, NULL, run, c) != 0) {
        rc = cu_err_set_sys(CU_E_IO, errno, "cannot start the checkpoint thread");
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->lock);
        cu_store_close(c->store);
        free(c);
        return rc;
    }
    *_c = c;
    return CU_OK;
}

void cu_srv__ckpt_stop(cu_srv__ckpt *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    /* The workers are gone: what they left goes in now. */
    time_t warned = 0;
    checkpoint(c, &warned);
    cu_store_close(c->store);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
