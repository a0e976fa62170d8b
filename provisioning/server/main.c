/* custosd: the HTTPS provisioning service. With no arguments it serves on
 * 127.0.0.1:8443 with its state in ./var, creating what it needs. */
#include "srv_int.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fputs("usage: custosd [--state DIR] [--listen ADDR:PORT]... [--config FILE]\n"
          "\n"
          "Serves the device provisioning API and the service API over HTTPS.\n"
          "  --state DIR         state directory (default ./var; created on first start)\n"
          "  --listen ADDR:PORT  address to listen on, repeatable (default 127.0.0.1:8443;\n"
          "                      port 0 picks a free port, written to STATE/endpoint)\n"
          "  --config FILE       key = value settings (see docs/custosd.md)\n"
          "SIGTERM or SIGINT stops it after the requests in flight.\n",
          f);
}

int main(int argc, char **argv)
{
    cu_srv_config cfg, cli;
    cu_srv_state *st = NULL;
    const char *config = NULL;
    int status = 1;
    cu_rc rc = CU_OK;

    /* Block the stop signals before any thread exists; cu_srv_run waits for them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    /* No memory map for SQLite (SQLITE_CONFIG_MMAP_SIZE): with two workers
     * each connection unmaps the whole file whenever the other one has
     * committed, and the TLB shootdowns cost more than the preads saved
     * (benchmarks.md, 2026-11-28: 305 -> 250 us CPU a registration). */

    cu_srv_config_init(&cfg);
    cu_srv_config_init(&cli);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            status = 0;
            goto out;
        }
        if (v == NULL || (strcmp(a, "--state") && strcmp(a, "--listen") && strcmp(a, "--config"))) {
            fprintf(stderr, "custosd: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            status = 2;
            goto out;
        }
        i++;
        if (!strcmp(a, "--config"))
            config = v;
        else if ((rc = cu_srv_config_set(&cli, a + 2, v)) != CU_OK)
            break;
    }
    if (rc == CU_OK && config != NULL)
        rc = cu_srv_config_load(&cfg, config);
    if (rc != CU_OK) {
        fprintf(stderr, "custosd: %s\n", cu_err_last()->msg);
        status = 2;
        goto out;
    }
    /* The command line overrides the file. */
    if (cli.state_dir != NULL) {
        free(cfg.state_dir);
        cfg.state_dir = cli.state_dir;
        cli.state_dir = NULL;
    }
    if (cli.n_listen > 0) {
        for (size_t i = 0; i < cfg.n_listen; i++)
            free(cfg.listen[i]);
        memcpy(cfg.listen, cli.listen, sizeof cfg.listen);
        cfg.n_listen = cli.n_listen;
        cli.n_listen = 0;
    }
    if ((rc = cu_srv__log_open(&cfg)) != CU_OK) {
        fprintf(stderr, "custosd: %s\n", cu_err_last()->msg);
        goto out;
    }
    /* custosd records its own key uses in the audit log (from the state's
     * first keyring operation on). */
    cu_srv__keyuse_enable();
    if ((rc = cu_srv_state_open(&cfg, true, &st)) == CU_OK)
        rc = cu_srv_run(&cfg, st);
    if (rc != CU_OK) {
        cu_srv__lf f[] = {CU_LF_S("error", cu_err_last()->msg)};
        cu_srv__log(CU_LOG_ERROR, "custosd failed", f, 1);
        fprintf(stderr, "custosd: %s\n", cu_err_last()->msg);
    } else {
        status = 0;
    }
out:
    cu_srv_state_free(st);
    cu_srv__log_close();
    cu_srv_config_clear(&cfg);
    cu_srv_config_clear(&cli);
    return status;
}
