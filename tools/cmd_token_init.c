/* custos token init | start | stop: token directories (custos/fixture.h). */
#include "cli.h"
#include "token_util.h"

#include <custos/fixture.h>

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cu_cmd_token_init(int argc, char **argv);
int cu_cmd_token_start(int argc, char **argv);
int cu_cmd_token_stop(int argc, char **argv);
int cu_cmd_token_hmac_import(int argc, char **argv);

static const char init_help[] =
    "usage: custos token init --kind softhsm2|tpm2|soft --label LABEL --dir DIR\n"
    "                         [--pin-source FILE] [--so-pin-source FILE]\n"
    "                         [--no-resource-manager] [--state DIR] [--json]\n"
    "\n"
    "Creates one token in the token directory DIR (created if missing) and prints\n"
    "its pkcs11: URI, then the environment lines (NAME=VALUE) another PKCS#11\n"
    "application needs to see it. DIR/custos-token.conf describes the token.\n"
    "\n"
    "  --kind KIND           softhsm2: SoftHSM2 with a private configuration\n"
    "                        tpm2: tpm2-pkcs11 on a swtpm on 127.0.0.1, behind its own\n"
    "                              tpm2-abrmd on a private D-Bus (left running;\n"
    "                              see custos token stop)\n"
    "                        soft: the Custos software keystore (custos-soft.so)\n"
    "  --label LABEL         token label (1..32 bytes)\n"
    "  --dir DIR             token directory; refused if it already holds a token\n"
    "  --pin-source FILE     user PIN from FILE (else $CUSTOS_PIN, else a prompt)\n"
    "  --so-pin-source FILE  SO PIN from FILE (else $CUSTOS_SO_PIN, else a prompt)\n"
    "  --no-resource-manager tpm2: no tpm2-abrmd; the TCTI goes straight to the swtpm,\n"
    "                        which holds 3 objects: a process can use about 2 keys\n"
    "  --state DIR           record the token's creation (or its failure) in the audit\n"
    "                        log of that state directory\n"
    "  --json                JSON output\n"
    "\n"
    "PINs never come from the command line.\n"
    "\n" CU_TOK_AUDIT_HELP;

static const char start_help[] =
    "usage: custos token start --dir DIR [--json]\n"
    "\n"
    "Starts the swtpm of the tpm2 token in DIR if it is not running (on the port\n"
    "recorded in DIR/custos-token.conf). Nothing to do for other kinds.\n";

static const char stop_help[] =
    "usage: custos token stop --dir DIR [--json]\n"
    "\n"
    "Stops the swtpm of the tpm2 token in DIR (by its PID) and waits until it is\n"
    "gone. Nothing to do for other kinds.\n";

static const char hmac_help[] =
    "usage: custos token hmac-import --dir DIR --key-file FILE --label LABEL [--id TEXT]\n"
    "                                [--pin-source FILE] [--state DIR] [--json]\n"
    "\n"
    "Imports a known HMAC-SHA256 key (FILE: the raw key, 1..64 bytes; SoftHSM2 needs\n"
    "at least 32) into the token of the token directory DIR, and prints the key's\n"
    "pkcs11: URI. The key is sensitive and not extractable; custody flags it as\n"
    "imported. On a tpm2 token this goes through tpm2_ptool (tpm2-pkcs11 cannot\n"
    "create secret keys through PKCS#11) with a private tpm2-abrmd; tpm2_ptool only\n"
    "takes the PIN on its command line, so use this on test and demo tokens only.\n"
    "Processes that loaded tpm2-pkcs11 before the import do not see the new key.\n"
    "\n"
    "  --dir DIR          token directory (see custos token init)\n"
    "  --key-file FILE    the raw key bytes\n"
    "  --label LABEL      the key's label (CKA_LABEL)\n"
    "  --id TEXT          the key's CKA_ID as text (default: the label)\n"
    "  --pin-source FILE  user PIN from FILE (else $CUSTOS_PIN, else a prompt)\n"
    "  --state DIR        record the import (token.import, or token.login-failed for\n"
    "                     a refused PIN) in the audit log of that state directory\n"
    "  --json             JSON output\n"
    "\n" CU_TOK_AUDIT_HELP;

typedef struct opts {
    const char *kind, *label, *dir, *pin_source, *so_pin_source, *key_file, *id, *state;
    bool json, no_rm;
} opts;

enum { CMD_INIT, CMD_START_STOP, CMD_HMAC };

/* Options: "--name VALUE" or "--name=VALUE"; argv[0] is the subcommand. */
static int parse(const char *cmd, const char *help, int argc, char **argv, opts *o, int which)
{
    /* which: the commands (bit CMD_*) that take the option. */
    static const struct {
        const char *name;
        size_t off;
        unsigned cmds;
    } table[] = {
        {"--kind", offsetof(opts, kind), 1u << CMD_INIT},
        {"--label", offsetof(opts, label), 1u << CMD_INIT | 1u << CMD_HMAC},
        {"--dir", offsetof(opts, dir), ~0u},
        {"--pin-source", offsetof(opts, pin_source), 1u << CMD_INIT | 1u << CMD_HMAC},
        {"--so-pin-source", offsetof(opts, so_pin_source), 1u << CMD_INIT},
        {"--key-file", offsetof(opts, key_file), 1u << CMD_HMAC},
        {"--id", offsetof(opts, id), 1u << CMD_HMAC},
        {"--state", offsetof(opts, state), 1u << CMD_INIT | 1u << CMD_HMAC},
    };
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cu_cli_is_help(a)) {
            fputs(help, stdout);
            return -1;
        }
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (which == CMD_INIT && strcmp(a, "--no-resource-manager") == 0) {
            o->no_rm = true;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof table / sizeof table[0]; k++) {
            if (!(table[k].cmds & (1u << which)))
                continue;
            size_t n = strlen(table[k].name);
            if (strncmp(a, table[k].name, n) != 0 || (a[n] != '\0' && a[n] != '='))
                continue;
            const char *v = a[n] == '=' ? a + n + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (v == NULL || *v == '\0')
                return cu_cli_usage(cmd, "%s needs a value", table[k].name);
            *(const char **)((char *)o + table[k].off) = v;
            break;
        }
        if (k == sizeof table / sizeof table[0]) {
            if (strncmp(a, "--pin", 5) == 0 || strncmp(a, "--so-pin", 8) == 0)
                return cu_cli_usage(cmd, "PINs are never taken from the command line: use "
                                         "--pin-source FILE or CUSTOS_PIN / CUSTOS_SO_PIN");
            return cu_cli_usage(cmd, "unknown argument '%s'", a);
        }
    }
    if (o->dir == NULL)
        return cu_cli_usage(cmd, "--dir DIR is required");
    return 0;
}

static void print_env_json(const cu_fixture *f)
{
    fputs("\"env\":{", stdout);
    for (size_t i = 0; i < cu_fixture_env_count(f); i++) {
        if (i > 0)
            fputc(',', stdout);
        cu_cli_json_str(stdout, cu_fixture_env_name(f, i));
        fputc(':', stdout);
        cu_cli_json_str(stdout, cu_fixture_env_value(f, i));
    }
    fputc('}', stdout);
}

static void print_swtpm_json(const cu_fixture *f)
{
    if (cu_fixture_get_kind(f) != CU_FIXTURE_TPM2) {
        fputs("\"swtpm\":null", stdout);
        return;
    }
    bool up = cu_fixture_tpm_running(f);
    printf("\"swtpm\":{\"running\":%s,\"pid\":%d,\"port\":%d,\"resource_manager\":\"%s\"}",
           up ? "true" : "false", up ? (int)cu_fixture_tpm_pid(f) : 0, cu_fixture_tpm_port(f),
           cu_fixture_tpm_has_rm(f) ? "abrmd" : "none");
}

static void print_fixture_json(const cu_fixture *f)
{
    fputs("{\"kind\":", stdout);
    cu_cli_json_str(stdout, cu_fixture_kind_str(cu_fixture_get_kind(f)));
    fputs(",\"dir\":", stdout);
    cu_cli_json_str(stdout, cu_fixture_get0_dir(f));
    fputs(",\"label\":", stdout);
    cu_cli_json_str(stdout, cu_fixture_get0_label(f));
    fputs(",\"uri\":", stdout);
    cu_cli_json_str(stdout, cu_fixture_get0_uri(f));
    fputs(",\"module\":", stdout);
    cu_cli_json_str(stdout, cu_fixture_get0_module(f));
    fputs(",\"quirks\":", stdout);
    cu_cli_json_str(stdout, cu_fixture_get0_quirks(f));
    fputc(',', stdout);
    print_env_json(f);
    fputc(',', stdout);
    print_swtpm_json(f);
    fputs("}\n", stdout);
}

static bool pin_available(const char *source, const char *env)
{
    const char *v = getenv(env);
    return source != NULL || (v != NULL && *v != '\0') || isatty(STDIN_FILENO);
}

int cu_cmd_token_init(int argc, char **argv)
{
    const char *cmd = "token init";
    opts o;
    int st = parse(cmd, init_help, argc, argv, &o, CMD_INIT);
    if (st != 0)
        return st < 0 ? CU_EXIT_OK : st;
    if (o.kind == NULL)
        return cu_cli_usage(cmd, "--kind softhsm2|tpm2|soft is required");
    if (o.label == NULL)
        return cu_cli_usage(cmd, "--label LABEL is required");
    cu_fixture_kind kind;
    if (cu_fixture_kind_parse(o.kind, &kind) != CU_OK)
        return cu_cli_usage(cmd, "unknown token kind '%s' (softhsm2, tpm2 or soft)", o.kind);
    if (!pin_available(o.so_pin_source, "CUSTOS_SO_PIN"))
        return cu_cli_fail("no SO PIN: give --so-pin-source FILE or set CUSTOS_SO_PIN");
    if (!pin_available(o.pin_source, "CUSTOS_PIN"))
        return cu_cli_fail("no user PIN: give --pin-source FILE or set CUSTOS_PIN");

    int ret = CU_EXIT_FAIL;
    char *so_pin = NULL, *pin = NULL;
    cu_fixture *f = NULL;
    so_pin = cu_cli_read_pin(o.so_pin_source, "CUSTOS_SO_PIN", "SO PIN for the new token");
    if (so_pin == NULL)
        goto cleanup;
    pin = cu_cli_read_pin(o.pin_source, "CUSTOS_PIN", "User PIN for the new token");
    if (pin == NULL)
        goto cleanup;
    if (o.no_rm && kind != CU_FIXTURE_TPM2) {
        cu_cli_usage(cmd, "--no-resource-manager is for --kind tpm2");
        ret = CU_EXIT_USAGE;
        goto cleanup;
    }
    cu_fixture_opts fo = {.tpm_direct = o.no_rm};
    char desc[1200];
    snprintf(desc, sizeof desc, "%s token '%s' in %s", o.kind, o.label, o.dir);
    if (cu_fixture_create(kind, o.dir, o.label, so_pin, pin, &fo, &f) != CU_OK) {
        cu_cli_fail("cannot create %s token '%s' in %s: %s", o.kind, o.label, o.dir,
                    cu_err_last()->msg);
        cu_tok_audit_desc(o.state, "init", NULL, desc, NULL, cu_err_last()->msg);
        goto cleanup;
    }
    /* The token's URI names it (and its serial) for the custody report. */
    snprintf(desc, sizeof desc, "%s token '%s' in %s: %s", o.kind, o.label, o.dir, cu_fixture_get0_uri(f));
    cu_tok_audit_desc(o.state, "init", NULL, desc, NULL, "ok");
    if (o.json) {
        print_fixture_json(f);
    } else {
        /* stdout stays machine-friendly: the URI, then NAME=VALUE lines. */
        printf("%s\n", cu_fixture_get0_uri(f));
        for (size_t i = 0; i < cu_fixture_env_count(f); i++)
            printf("%s=%s\n", cu_fixture_env_name(f, i), cu_fixture_env_value(f, i));
        if (kind == CU_FIXTURE_TPM2)
            fprintf(stderr,
                    "custos: swtpm for token '%s' runs as pid %d on 127.0.0.1:%d%s; "
                    "stop it with: custos token stop --dir %s\n",
                    o.label, (int)cu_fixture_tpm_pid(f), cu_fixture_tpm_port(f),
                    cu_fixture_tpm_has_rm(f) ? ", behind tpm2-abrmd" : "",
                    cu_fixture_get0_dir(f));
    }
    ret = CU_EXIT_OK;

cleanup:
    cu_cli_pin_free(so_pin);
    cu_cli_pin_free(pin);
    cu_fixture_free(f);
    /* Leave the modules loaded by the init in a clean state before exit. */
    cu_p11_shutdown();
    return ret;
}

static int start_or_stop(int argc, char **argv, bool start)
{
    const char *cmd = start ? "token start" : "token stop";
    opts o;
    int st = parse(cmd, start ? start_help : stop_help, argc, argv, &o, CMD_START_STOP);
    if (st != 0)
        return st < 0 ? CU_EXIT_OK : st;
    cu_fixture *f = NULL;
    if (cu_fixture_load(o.dir, &f) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    int ret = CU_EXIT_OK;
    pid_t before = cu_fixture_tpm_pid(f);
    cu_rc rc = start ? cu_fixture_start(f) : cu_fixture_stop(f);
    if (rc != CU_OK) {
        ret = cu_cli_fail("cannot %s the swtpm of %s: %s", start ? "start" : "stop", o.dir,
                          cu_err_last()->msg);
    } else if (o.json) {
        fputs("{\"dir\":", stdout);
        cu_cli_json_str(stdout, cu_fixture_get0_dir(f));
        fputs(",\"kind\":", stdout);
        cu_cli_json_str(stdout, cu_fixture_kind_str(cu_fixture_get_kind(f)));
        fputc(',', stdout);
        print_swtpm_json(f);
        fputs("}\n", stdout);
    } else if (cu_fixture_get_kind(f) != CU_FIXTURE_TPM2) {
        printf("nothing to %s: a %s token has no process\n", start ? "start" : "stop",
               cu_fixture_kind_str(cu_fixture_get_kind(f)));
    } else if (start) {
        printf("swtpm %s: pid %d on 127.0.0.1:%d%s\n", before ? "already running" : "started",
               (int)cu_fixture_tpm_pid(f), cu_fixture_tpm_port(f),
               cu_fixture_tpm_has_rm(f) ? ", behind tpm2-abrmd" : "");
    } else {
        if (before)
            printf("swtpm stopped (pid %d)%s\n", (int)before,
                   cu_fixture_tpm_has_rm(f) ? ", and its tpm2-abrmd" : "");
        else
            printf("swtpm was not running\n");
    }
    cu_fixture_free(f);
    return ret;
}

int cu_cmd_token_start(int argc, char **argv)
{
    return start_or_stop(argc, argv, true);
}

int cu_cmd_token_stop(int argc, char **argv)
{
    return start_or_stop(argc, argv, false);
}

/* RFC 7512 percent-encoding of every byte outside the unreserved set. */
static void put_pct(FILE *m, const uint8_t *p, size_t n, bool all)
{
    for (size_t i = 0; i < n; i++) {
        if (!all && (isalnum(p[i]) || strchr("-._~", p[i]) != NULL))
            fputc(p[i], m);
        else
            fprintf(m, "%%%02X", p[i]);
    }
}

/* The token URI with object=, id= and type= inserted before its query. */
static char *key_uri(const char *token_uri, const char *label, const uint8_t *id, size_t id_len)
{
    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    if (m == NULL)
        return NULL;
    const char *q = strchr(token_uri, '?');
    size_t path_len = q ? (size_t)(q - token_uri) : strlen(token_uri);
    fwrite(token_uri, 1, path_len, m);
    fputs(";object=", m);
    put_pct(m, (const uint8_t *)label, strlen(label), false);
    fputs(";id=", m);
    put_pct(m, id, id_len, true);
    fputs(";type=secret-key", m);
    if (q != NULL)
        fputs(q, m);
    if (fclose(m) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

static int read_key(const char *path, uint8_t *key, size_t cap, size_t *_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return cu_cli_fail("cannot read key file %s: %s", path, strerror(errno));
    size_t n = fread(key, 1, cap, f);
    fclose(f);
    if (n == 0 || n == cap) {
        OPENSSL_cleanse(key, cap);
        return cu_cli_fail("key file %s must hold 1 to %zu bytes", path, cap - 1);
    }
    *_len = n;
    return CU_EXIT_OK;
}

int cu_cmd_token_hmac_import(int argc, char **argv)
{
    const char *cmd = "token hmac-import";
    opts o;
    int st = parse(cmd, hmac_help, argc, argv, &o, CMD_HMAC);
    if (st != 0)
        return st < 0 ? CU_EXIT_OK : st;
    if (o.key_file == NULL)
        return cu_cli_usage(cmd, "--key-file FILE is required");
    if (o.label == NULL)
        return cu_cli_usage(cmd, "--label LABEL is required");
    const char *id = o.id ? o.id : o.label;

    int ret = CU_EXIT_FAIL;
    uint8_t key[65];
    size_t key_len = 0;
    char *pin = NULL, *uri = NULL;
    cu_fixture *f = NULL;
    cu_token *t = NULL;
    cu_object *obj = NULL;

    if (read_key(o.key_file, key, sizeof key, &key_len) != CU_EXIT_OK)
        return CU_EXIT_FAIL;
    /* Leave a tpm2 token's swtpm as it was found. */
    bool was_running = false;
    if (cu_fixture_load(o.dir, &f) != CU_OK) {
        cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    was_running = cu_fixture_get_kind(f) != CU_FIXTURE_TPM2 || cu_fixture_tpm_running(f);
    cu_fixture_free(f);
    f = NULL;
    if (cu_fixture_open(o.dir, &f) != CU_OK) {
        cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    pin = cu_cli_read_pin(o.pin_source, "CUSTOS_PIN", "User PIN");
    if (pin == NULL)
        goto cleanup;
    uri = key_uri(cu_fixture_get0_uri(f), o.label, (const uint8_t *)id, strlen(id));
    if (uri == NULL) {
        cu_cli_fail("out of memory");
        goto cleanup;
    }
    char target[1200];
    snprintf(target, sizeof target, "%s token '%s' in %s", cu_fixture_kind_str(cu_fixture_get_kind(f)),
             cu_fixture_get0_label(f), o.dir);
    cu_rc rc;
    if (cu_fixture_get_kind(f) == CU_FIXTURE_TPM2) {
        rc = cu_fixture_tpm2_import_hmac(f, key, key_len, o.label, id, pin);
    } else {
        rc = cu_fixture_token_open(f, pin, &t);
        if (rc == CU_E_PIN_INCORRECT || rc == CU_E_PIN_LOCKED) {
            cu_cli_fail("cannot import HMAC key '%s' into %s: %s", o.label, o.dir, cu_err_last()->msg);
            cu_tok_audit_desc(o.state, "login-failed", NULL, target, NULL, cu_rc_str(rc));
            goto cleanup;
        }
        if (rc == CU_OK)
            rc = cu_token_import_hmac(t, key, key_len, o.label, (const uint8_t *)id, strlen(id),
                                      &obj);
    }
    const cu_token_desc *d = t ? cu_token_get0_desc(t) : NULL;
    if (rc != CU_OK) {
        cu_cli_fail("cannot import HMAC key '%s' into %s: %s", o.label, o.dir, cu_err_last()->msg);
        cu_tok_audit_desc(o.state, "import", d, target, uri, cu_err_last()->msg);
        goto cleanup;
    }
    cu_tok_audit_desc(o.state, "import", d, target, uri, "ok");
    if (o.json) {
        fputs("{\"uri\":", stdout);
        cu_cli_json_str(stdout, uri);
        fputs(",\"label\":", stdout);
        cu_cli_json_str(stdout, o.label);
        printf(",\"bytes\":%zu,\"token\":", key_len);
        cu_cli_json_str(stdout, cu_fixture_get0_label(f));
        fputs("}\n", stdout);
    } else {
        printf("%s\n", uri);
    }
    ret = CU_EXIT_OK;

cleanup:
    OPENSSL_cleanse(key, sizeof key);
    cu_cli_pin_free(pin);
    free(uri);
    cu_object_free(obj);
    cu_token_unref(t);
    cu_p11_shutdown();
    if (f != NULL && !was_running && cu_fixture_stop(f) != CU_OK)
        ret = cu_cli_fail("cannot stop the swtpm again: %s", cu_err_last()->msg);
    cu_fixture_free(f);
    return ret;
}
