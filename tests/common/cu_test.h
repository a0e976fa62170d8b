/* Test runner support shared by every CUnit suite.
 *
 * CUnit's basic runner returns success even when tests fail (TOKENS.md §8),
 * so cu_test_run() turns the failure count into the exit status and prints
 * the plain "N passed, N failed" line CI reads. */
#ifndef CU_TEST_H
#define CU_TEST_H

#include <CUnit/CUnit.h>

typedef struct cu_test_case {
    const char *name;
    void (*fn)(void);
} cu_test_case;

/* Adds a suite built from a NULL-terminated table of cases. Returns 0 on success. */
int cu_test_add_suite(const char *name, CU_InitializeFunc init,
                      CU_CleanupFunc cleanup, const cu_test_case *cases);

/* Runs every registered suite verbosely; returns the process exit status. */
int cu_test_run(void);

/* Creates a fresh private directory under $TMPDIR (caller frees the string,
 * and removes the tree with cu_test_rmtree). */
char *cu_test_mkdtemp(const char *tag);
void cu_test_rmtree(const char *path);

/* Runs a shell command, returning its exit status (-1 if it could not run). */
int cu_test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
