/* The token fixture (custos/fixture.h) made in a child process: its swtpm
 * (and tpm2-abrmd) daemons outlive the child, and this process never loads
 * tpm2-pkcs11 — so it can hold several such TPMs, and under ASan its leak
 * check needs no slow full unwinding (tpm2-pkcs11's own leaks stay in the
 * child, which leaves with _exit). Returns a cu_fixture_load handle (no
 * environment set, nothing loaded) or NULL. */
#ifndef CU_TPM_FIXTURE_CHILD_H
#define CU_TPM_FIXTURE_CHILD_H

#include <custos/fixture.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static inline cu_fixture *fixture_in_child(const char *dir, const char *label)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        cu_fixture *g = NULL;
        cu_rc rc = cu_fixture_create(CU_FIXTURE_TPM2, dir, label, "so-pin-1234", "user-pin-1234",
                                     NULL, &g);
        if (rc != CU_OK)
            fprintf(stderr, "swtpm fixture %s: %s\n", dir, cu_err_last()->msg);
        cu_fixture_free(g);
        fflush(NULL);
        _exit(rc == CU_OK ? 0 : 1);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return NULL;
    cu_fixture *f = NULL;
    return cu_fixture_load(dir, &f) == CU_OK ? f : NULL;
}

/* Runs fn(arg) in a child that may load tpm2-pkcs11; returns its exit status
 * (fn's return value) or -1. */
static inline int in_child(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int r = fn(arg);
        fflush(NULL);
        _exit(r);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* Puts the fixture's resource-manager bus address into this process's
 * environment (what cu_fixture_open would, without loading anything). */
static inline void fixture_bus_env(const cu_fixture *f)
{
    for (size_t i = 0; i < cu_fixture_env_count(f); i++)
        if (strcmp(cu_fixture_env_name(f, i), "DBUS_SESSION_BUS_ADDRESS") == 0)
            setenv("DBUS_SESSION_BUS_ADDRESS", cu_fixture_env_value(f, i), 1);
}

#endif
