#include "cu_test.h"

#include <CUnit/Basic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

int cu_test_add_suite(const char *name, CU_InitializeFunc init,
                      CU_CleanupFunc cleanup, const cu_test_case *cases)
{
    if (CU_get_registry() == NULL && CU_initialize_registry() != CUE_SUCCESS)
        return -1;
    CU_pSuite s = CU_add_suite(name, init, cleanup);
    if (s == NULL)
        return -1;
    for (const cu_test_case *c = cases; c->name != NULL; c++)
        if (CU_add_test(s, c->name, c->fn) == NULL)
            return -1;
    return 0;
}

int cu_test_run(void)
{
    if (CU_get_registry() == NULL)
        return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned run = CU_get_number_of_tests_run();
    unsigned failed = CU_get_number_of_tests_failed();
    unsigned suites_failed = CU_get_number_of_suites_failed();
    printf("\n%u passed, %u failed\n", run - failed, failed);
    CU_cleanup_registry();
    return (failed == 0 && suites_failed == 0 && run > 0) ? 0 : 1;
}

char *cu_test_mkdtemp(const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    char buf[256];
    snprintf(buf, sizeof buf, "%s/cu-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    if (mkdtemp(buf) == NULL)
        return NULL;
    return strdup(buf);
}

void cu_test_rmtree(const char *path)
{
    /* Only ever removes what cu_test_mkdtemp made. */
    if (path != NULL && strstr(path, "/cu-") != NULL && strchr(path, '\'') == NULL)
        cu_test_sh("rm -rf '%s'", path);
}

int cu_test_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd)
        return -1;
    fflush(stdout);
    fflush(stderr);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}
