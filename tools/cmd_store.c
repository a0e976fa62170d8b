/* custos store …: the store itself — migrate an SQLite deployment into
 * PostgreSQL (docs/scale-out.md). */
#include "cli.h"

#include <custos/state.h>
#include <custos/store.h>

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cu_cmd_store(int argc, char **argv);

/* A bar on a terminal, redrawn when the percentage moves. */
typedef struct bar {
    bool tty;
    const char *phase;
    int pct;
} bar;

static void show(void *arg, const char *phase, uint64_t done, uint64_t total)
{
    bar *b = arg;
    if (!b->tty)
        return;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct > 100)
        pct = 100;
    if (b->phase == phase && pct == b->pct)
        return;
    if (b->phase != NULL && b->phase != phase)
        fputc('\n', stderr);
    b->phase = phase;
    b->pct = pct;
    char fill[41];
    memset(fill, '#', (size_t)(pct * 40 / 100));
    memset(fill + pct * 40 / 100, '.', (size_t)(40 - pct * 40 / 100));
    fill[40] = 0;
    fprintf(stderr, "\r%-10s [%s] %3d%% %llu/%llu", phase, fill, pct, (unsigned long long)done,
            (unsigned long long)total);
    fflush(stderr);
}

/* Whether a PostgreSQL URI or "postgresql:KEY=VALUE ..." names a
 * password (-1: not a valid one). A command line is readable by every
 * user of the machine (ps, /proc) and stays in shell histories. */
static int names_password(const char *spec)
{
    const char *ci = strncmp(spec, "postgresql://", 13) != 0 && strncmp(spec, "postgresql:", 11) == 0 ? spec + 11
                                                                                                      : spec;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(ci, &err);
    PQfreemem(err); /* may quote the string */
    if (opts == NULL)
        return -1;
    int pw = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (!strcmp(o->keyword, "password") && o->val != NULL && o->val[0] != 0)
            pw = 1;
    PQconninfoFree(opts);
    return pw;
}

static int migrate(int argc, char **argv)
{
    const char *from = NULL, *to = NULL, *pwfile = NULL;
    bool json = false, help = false, quiet = false;
    const cu_cli_opt opts[] = {
        {"--from", &from, NULL, NULL, NULL, 0},          {"--to", &to, NULL, NULL, NULL, 0},
        {"--password-file", &pwfile, NULL, NULL, NULL, 0}, {"--json", NULL, &json, NULL, NULL, 0},
        {"--quiet", NULL, &quiet, NULL, NULL, 0},        {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("store migrate", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos store migrate --from STATE_DIR --to postgresql://USER@HOST:PORT/DB\n"
               "                            [--password-file FILE] [--json] [--quiet]\n\n"
               "Copies the SQLite store of STATE_DIR (its custos.db) into PostgreSQL: documents\n"
               "with their seals and index keys, settings, the audit log and its signed heads;\n"
               "then checks counts and checksums on both sides and the audit chain on the\n"
               "target. The service keyring of STATE_DIR (or $CUSTOS_KEYRING_URI) must be the\n"
               "one the nodes will use. Safe to run again: what is there is updated or\n"
               "checked; a target that nodes have written to since is refused. The password\n"
               "comes from --password-file or PGPASSWORD/PGPASSFILE (~/.pgpass), never from\n"
               "the command line: a URI with one is refused. Stop custosd on STATE_DIR first.\n");
        return CU_EXIT_OK;
    }
    if (from == NULL || to == NULL)
        return cu_cli_usage("store migrate", "--from STATE_DIR and --to postgresql://... are required");
    if (!cu_store_spec_is_postgres(to))
        return cu_cli_usage("store migrate", "--to must be a postgresql:// URI");
    int pw = names_password(to);
    if (pw < 0) /* not echoed: it may hold a password */
        return cu_cli_usage("store migrate", "--to is not a valid PostgreSQL URI or conninfo");
    if (pw > 0)
        return cu_cli_usage("store migrate",
                            "--to names a password, which every user of this machine can read on a command "
                            "line: give it with --password-file FILE, or PGPASSWORD or PGPASSFILE (~/.pgpass)");
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/custos.db", from);
    if (stat(path, &sb) != 0)
        return cu_cli_fail("no store in %s (no custos.db)", from);

    /* The source's keyring, with the source itself checked against it
     * (the state directory's store, whatever $CUSTOS_STORE says). */
    unsetenv("CUSTOS_STORE");
    cu_state *st = NULL;
    cu_store *dst = NULL;
    cu_store_migrate_report rep;
    bar b = {.tty = !quiet && !json && isatty(STDERR_FILENO), .pct = -1};
    int status = CU_EXIT_FAIL;
    if (cu_state_open(from, NULL, &st) != CU_OK) {
        cu_cli_fail("cannot open %s: %s", from, cu_err_last()->msg);
        goto out;
    }
    if (cu_store_open_spec(to, pwfile, cu_state_get0_keyring(st), &dst) != CU_OK) {
        cu_cli_fail("cannot open the target: %s", cu_err_last()->msg);
        goto out;
    }
    cu_rc r = cu_store_migrate_from_sqlite(path, dst, show, &b, &rep);
    if (b.phase != NULL)
        fputc('\n', stderr);
    if (r != CU_OK) {
        cu_cli_fail("migration %s: %s", r == CU_E_VERIFY ? "did not verify" : "failed", cu_err_last()->msg);
        goto out;
    }
    if (json)
        printf("{\"documents\":%llu,\"indexKeys\":%llu,\"settings\":%llu,\"auditRecordsCopied\":%llu,"
               "\"auditRecordsAlreadyThere\":%llu,\"auditHeads\":%llu,\"documentsSha256\":\"%s\","
               "\"auditLastHash\":\"%s\",\"verified\":true}\n",
               (unsigned long long)rep.docs, (unsigned long long)rep.keys, (unsigned long long)rep.settings,
               (unsigned long long)rep.audit_records, (unsigned long long)rep.audit_skipped,
               (unsigned long long)rep.audit_heads, rep.docs_sha256, rep.audit_last_hash);
    else
        printf("copied %llu documents (%llu index keys), %llu settings, %llu audit records (%llu already "
               "there), %llu signed heads\nverified: counts, documents sha256 %s, audit chain to %.16s…\n",
               (unsigned long long)rep.docs, (unsigned long long)rep.keys, (unsigned long long)rep.settings,
               (unsigned long long)rep.audit_records, (unsigned long long)rep.audit_skipped,
               (unsigned long long)rep.audit_heads, rep.docs_sha256, rep.audit_last_hash);
    status = CU_EXIT_OK;
out:
    cu_store_close(dst);
    cu_state_close(st);
    return status;
}

int cu_cmd_store(int argc, char **argv)
{
    static const cu_cli_group cmds[] = {
        {"migrate", "copy an SQLite state into PostgreSQL, verified (--from DIR --to postgresql://...)", migrate},
    };
    return cu_cli_dispatch("store", NULL, cmds, sizeof cmds / sizeof cmds[0], argc, argv);
}
