/* custos token: list, keygen, import, objects, custody (init/start/stop are
 * in cmd_token_init.c, check in cmd_token_check.c). */
#include "cli.h"
#include "token_util.h"

#include <custos/audit.h>
#include <custos/fixture.h>
#include <custos/store.h>
#include <custos/token.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int cu_cmd_token_init(int argc, char **argv);
int cu_cmd_token_start(int argc, char **argv);
int cu_cmd_token_stop(int argc, char **argv);
int cu_cmd_token_hmac_import(int argc, char **argv);
int cu_cmd_token_check(int argc, char **argv);
int cu_cmd_token_destroy(int argc, char **argv);
int cu_cmd_token_set_pin(int argc, char **argv);

static const char token_usage[] =
    "usage: custos token <command> [options]\n\n"
    "commands:\n"
    "  init      make a token (softhsm2, tpm2 on swtpm, soft) in a directory\n"
    "  start     start the swtpm of a tpm2 token directory\n"
    "  stop      stop the swtpm of a tpm2 token directory\n"
    "  list      modules, slots, tokens and their mechanisms\n"
    "  keygen    generate a key on a token\n"
    "  import    store a certificate on a token\n"
    "  hmac-import  import a known HMAC key (also on tpm2, via tpm2_ptool)\n"
    "  destroy   destroy the objects a URI names\n"
    "  set-pin   change the user PIN\n"
    "  objects   list the objects of a token\n"
    "  custody   custody attributes of every key of a token\n"
    "  check     conformance report for a PKCS#11 module\n\n"
    "A token is named by a pkcs11: URI (with ?module-path=...) or by its token\n"
    "directory (--dir D, made by 'custos token init'). PINs come from\n"
    "--pin-source FILE, CUSTOS_PIN, a URI's pin-source, or a prompt; never argv.\n";

/* ---- shared: open a token from a URI and/or a token directory ---- */

void cu_tok_target_free(cu_tok_target *t)
{
    cu_token_unref(t->tok);
    if (t->started) {
        /* Leave the token as we found it: finalize tpm2-pkcs11 while its
         * TPM still answers, then stop the processes this command started. */
        cu_p11_shutdown();
        cu_fixture_stop(t->fixture);
    }
    cu_fixture_free(t->fixture);
    cu_cli_pin_free(t->pin);
    memset(t, 0, sizeof *t);
}

static char *pin_if_available(const char *pin_source, bool uri_has_pin)
{
    if (pin_source != NULL)
        return cu_cli_read_pin(pin_source, "CUSTOS_PIN", "User PIN");
    const char *env = getenv("CUSTOS_PIN");
    if (env != NULL && *env)
        return strdup(env);
    if (uri_has_pin)
        return NULL;
    return cu_cli_read_pin(NULL, "CUSTOS_PIN", "User PIN");
}

/* Opens a token directory; *_started tells whether this started its swtpm
 * (a tpm2 token that was stopped), so that the caller stops it again. */
static cu_rc fixture_open(const char *dir, cu_fixture **_f, bool *_started)
{
    cu_fixture *probe = NULL;
    bool was_running = false;
    if (cu_fixture_load(dir, &probe) == CU_OK) {
        was_running = cu_fixture_get_kind(probe) != CU_FIXTURE_TPM2 || cu_fixture_tpm_running(probe);
        cu_fixture_free(probe);
    }
    cu_rc rc = cu_fixture_open(dir, _f);
    *_started = rc == CU_OK && !was_running && cu_fixture_get_kind(*_f) == CU_FIXTURE_TPM2;
    return rc;
}

int cu_tok_target_open(const char *dir, const char *uri, const char *pin_source, bool need_pin, cu_tok_target *t)
{
    memset(t, 0, sizeof *t);
    cu_token_opts o = {0};
    if (dir != NULL) {
        if (fixture_open(dir, &t->fixture, &t->started) != CU_OK)
            return cu_cli_fail("%s", cu_err_last()->msg);
        if (uri == NULL)
            uri = cu_fixture_get0_uri(t->fixture);
        o.quirks = cu_fixture_get0_quirks(t->fixture);
        o.module = cu_fixture_get0_module(t->fixture);
    }
    if (uri == NULL)
        return cu_cli_fail("no token: give a pkcs11: URI or --dir DIR");
    bool uri_pin = strstr(uri, "pin-value=") != NULL || strstr(uri, "pin-source=") != NULL;
    if (need_pin || pin_source != NULL || getenv("CUSTOS_PIN") != NULL) {
        t->pin = pin_if_available(pin_source, uri_pin);
        if (t->pin == NULL && !uri_pin)
            return CU_EXIT_FAIL; /* cu_cli_read_pin said why */
    }
    o.pin = t->pin;
    if (cu_token_open(uri, &o, &t->tok) != CU_OK) {
        int rc = cu_cli_fail("%s", cu_err_last()->msg);
        cu_tok_target_free(t);
        return rc;
    }
    t->uri = uri;
    return CU_EXIT_OK;
}

int cu_tok_parse_hex(const char *hex, uint8_t *out, size_t max, size_t *_len)
{
    size_t n = strlen(hex);
    if (n == 0 || n % 2 || n / 2 > max)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    *_len = n / 2;
    return 0;
}

/* ---- list ---- */

enum { MAX_LIST = 32 };

static void print_slot_json(cu_module *m, const cu_token_desc *d, bool first)
{
    printf("%s{\"slot_id\":%lu,\"description\":", first ? "" : ",", d->slot_id);
    cu_cli_json_str(stdout, d->slot_description);
    printf(",\"token_present\":%s", d->present ? "true" : "false");
    if (d->present) {
        printf(",\"token\":{");
        cu_tok_json_fields(d);
        printf(",\"initialized\":%s,\"flags\":%lu}", d->initialized ? "true" : "false", d->flags);
    }
    cu_mech_desc *mechs = NULL;
    size_t n = 0;
    printf(",\"mechanisms\":[");
    if (d->present && cu_module_mechanisms(m, d->slot_id, &mechs, &n) == CU_OK) {
        for (size_t i = 0; i < n; i++) {
            char hex[32];
            snprintf(hex, sizeof hex, "0x%lx", mechs[i].type);
            printf("%s", i ? "," : "");
            cu_cli_json_str(stdout, mechs[i].name ? mechs[i].name : hex);
        }
    }
    free(mechs);
    printf("]}");
}

static void print_slot_text(cu_module *m, const cu_token_desc *d)
{
    printf("  slot %lu (0x%lx): %s\n", d->slot_id, d->slot_id, d->slot_description);
    if (!d->present) {
        printf("    no token\n");
        return;
    }
    if (!d->initialized) {
        printf("    token: (not initialized)\n");
        return;
    }
    printf("    token: %s\n    manufacturer: %s, model: %s, serial: %s\n", d->label, d->manufacturer, d->model,
           d->serial);
    cu_mech_desc *mechs = NULL;
    size_t n = 0;
    if (cu_module_mechanisms(m, d->slot_id, &mechs, &n) == CU_OK) {
        printf("    mechanisms (%zu):", n);
        size_t col = 20;
        for (size_t i = 0; i < n; i++) {
            char hex[32];
            const char *name = mechs[i].name;
            if (name == NULL) {
                snprintf(hex, sizeof hex, "0x%lx", mechs[i].type);
                name = hex;
            } else if (strncmp(name, "CKM_", 4) == 0) {
                name += 4;
            }
            if (col + strlen(name) > 96) {
                printf("\n      ");
                col = 6;
            }
            printf(" %s", name);
            col += strlen(name) + 1;
        }
        printf("\n");
    }
    free(mechs);
}

/* Prints one module's slots, tokens and mechanisms. */
static int list_module(const char *path, bool json, bool first)
{
    cu_module *m = NULL;
    cu_token_desc *slots = NULL;
    size_t n = 0;
    if (cu_module_load(path, 0, &m) != CU_OK || cu_module_slots(m, &slots, &n) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    if (json) {
        printf("%s{\"path\":", first ? "" : ",");
        cu_cli_json_str(stdout, cu_module_path(m));
        printf(",\"slots\":[");
        for (size_t s = 0; s < n; s++)
            print_slot_json(m, &slots[s], s == 0);
        printf("]}");
    } else {
        printf("module %s\n", cu_module_path(m));
        for (size_t s = 0; s < n; s++)
            print_slot_text(m, &slots[s]);
    }
    free(slots);
    cu_module_unref(m);
    return CU_EXIT_OK;
}

typedef struct list_dir_arg {
    const char *dir;
    bool json, first;
} list_dir_arg;

/* In a child process: the module of one token directory, with its environment. */
static int list_dir_child(void *arg, int fd)
{
    list_dir_arg *a = arg;
    cu_fixture *f = NULL;
    bool started = false;
    (void)fd;
    if (fixture_open(a->dir, &f, &started) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    int rc = list_module(cu_fixture_get0_module(f), a->json, a->first);
    if (started) {
        cu_p11_shutdown(); /* while its TPM still answers */
        cu_fixture_stop(f);
    }
    cu_fixture_free(f);
    return rc;
}

/* Token directories under STATE/tokens/ (what `make demo` and operators make). */
static size_t state_token_dirs(const char *state, char **dirs, size_t max)
{
    char path[1024];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/tokens", state);
    DIR *d = opendir(path);
    if (d == NULL)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        char conf[2048];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(conf, sizeof conf, "%s/%s/%s", path, e->d_name, CU_FIXTURE_CONF);
        if (stat(conf, &st) == 0) {
            char *dir = NULL;
            if (asprintf(&dir, "%s/%s", path, e->d_name) >= 0)
                dirs[n++] = dir;
        }
    }
    closedir(d);
    return n;
}

static int cmd_list(int argc, char **argv)
{
    const char *modules[MAX_LIST], *dirs[MAX_LIST], *state = "./var";
    char *owned[MAX_LIST];
    size_t n_mod = 0, n_dir = 0, n_owned = 0;
    bool json = false, help = false;
    cu_cli_opt opts[] = {
        {"--module", NULL, NULL, modules, &n_mod, MAX_LIST},
        {"--dir", NULL, NULL, dirs, &n_dir, MAX_LIST},
        {"--state", &state, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("token list", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos token list [--module PATH|NAME]... [--dir TOKEN_DIR]... [--state DIR] [--json]\n\n"
               "Lists the slots, tokens and mechanisms of each module: those named by --module,\n"
               "those of the token directories given by --dir, or by default those of the\n"
               "token directories under STATE/tokens/ (default ./var).\n");
        return CU_EXIT_OK;
    }
    if (n_mod == 0 && n_dir == 0) {
        n_owned = state_token_dirs(state, owned, MAX_LIST);
        for (size_t i = 0; i < n_owned; i++)
            dirs[n_dir++] = owned[i];
    }
    if (n_mod == 0 && n_dir == 0)
        return cu_cli_fail("no module to list: give --module PATH or --dir DIR (none under %s/tokens)", state);
    if (json)
        printf("{\"modules\":[");
    size_t shown = 0;
    for (size_t i = 0; i < n_mod && rc == CU_EXIT_OK; i++)
        rc = list_module(modules[i], json, shown++ == 0);
    /* A module reads its configuration (SOFTHSM2_CONF, ...) once per
     * process: each token directory is listed by a process of its own. */
    for (size_t i = 0; i < n_dir && rc == CU_EXIT_OK; i++) {
        list_dir_arg la = {dirs[i], json, shown++ == 0};
        rc = cu_tok_run_isolated(list_dir_child, &la, NULL, NULL);
    }
    if (json && rc == CU_EXIT_OK)
        printf("]}\n");
    for (size_t i = 0; i < n_owned; i++)
        free(owned[i]);
    return rc;
}

/* ---- keygen / import ---- */

static void print_object_json(cu_object *o)
{
    size_t idlen;
    const uint8_t *id = cu_object_id(o, &idlen);
    char hex[257] = "";
    for (size_t i = 0; i < idlen && i < 128; i++)
        snprintf(hex + 2 * i, 3, "%02x", id[i]);
    char *uri = cu_object_uri(o);
    printf("{\"class\":\"%s\",\"type\":\"%s\",\"bits\":%u,\"label\":", cu_class_str(cu_object_class(o)),
           cu_key_type_str(cu_object_key_type(o)), cu_object_bits(o));
    cu_cli_json_str(stdout, cu_object_label(o));
    printf(",\"id\":\"%s\",\"uri\":", hex);
    cu_cli_json_str(stdout, uri);
    printf("}");
    free(uri);
}

/* Where token administration is recorded (issue 8: key generated, imported,
 * destroyed, PIN changed, login failures), as every other command opens its
 * store: the state given by --state (its store made if need be), else the
 * default state ./var, the store being $CUSTOS_STORE when set (custos/state.h).
 * Without --state the store must exist already: a token command run where
 * no service lives makes no store just to record itself. Returns the state
 * directory to hand cu_audit_token_event, or NULL: nothing to record to. */
static const char *audit_state(const char *state)
{
    struct stat sb;
    const char *spec = getenv("CUSTOS_STORE");
    if (state != NULL)
        return state;
    if (spec == NULL || *spec == 0)
        return stat(CU_TOK_DEFAULT_STATE "/custos.db", &sb) == 0 ? CU_TOK_DEFAULT_STATE : NULL;
    /* The store is $CUSTOS_STORE's, whatever the directory: "." is one that
     * exists, so that none is made. A PostgreSQL database is there to be
     * written to. */
    if (cu_store_spec_is_postgres(spec))
        return ".";
    return stat(strncmp(spec, "sqlite:", 7) == 0 ? spec + 7 : spec, &sb) == 0 ? "." : NULL;
}

/* A token named by URI as recorded: without its pin-value or pin-source
 * (as cu_audit_token_event removes them from the key's URI). */
static void target_shown(const char *target, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; target[i] && o + 1 < size;) {
        bool start = i > 0 && strchr(";?&", target[i - 1]) != NULL;
        if (start && (!strncmp(target + i, "pin-value=", 10) || !strncmp(target + i, "pin-source=", 11))) {
            i += strcspn(target + i, ";?&");
            i += target[i] == ';' || target[i] == '&';
            continue;
        }
        out[o++] = target[i++];
    }
    while (o > 0 && strchr(";?&", out[o - 1]) != NULL)
        o--;
    out[o] = 0;
}

/* A failure to write the record is reported, never silent. */
void cu_tok_audit_desc(const char *state, const char *kind, const cu_token_desc *d, const char *target,
                       const char *key_uri, const char *result)
{
    char actor[320], desc[256];
    const char *dir = audit_state(state);
    if (dir == NULL)
        return;
    if (d != NULL)
        snprintf(desc, sizeof desc, "token '%s' serial %s (%s %s)", d->label, d->serial, d->manufacturer, d->model);
    else if (target != NULL)
        target_shown(target, desc, sizeof desc);
    else
        snprintf(desc, sizeof desc, "(unknown token)");
    if (cu_audit_token_event(dir, cu_cli_actor(actor, sizeof actor), kind, desc, key_uri, result) != CU_OK)
        cu_cli_fail("could not write the audit record to %s: %s",
                    state == NULL && getenv("CUSTOS_STORE") && *getenv("CUSTOS_STORE") ? "$CUSTOS_STORE" : dir,
                    cu_err_last()->msg);
}

void cu_tok_audit(const char *state, const char *kind, const cu_tok_target *t, const char *target,
                  const char *key_uri, const char *result)
{
    cu_tok_audit_desc(state, kind, t && t->tok ? cu_token_get0_desc(t->tok) : NULL, target, key_uri, result);
}

static void audit_token(const char *state, const char *kind, const cu_tok_target *t, const char *target,
                        const cu_object *o, const char *result)
{
    char *uri = o ? cu_object_uri(o) : NULL;
    cu_tok_audit(state, kind, t, target, uri, result);
    free(uri);
}

int cu_tok_open_audited(const char *state, const char *dir, const char *uri, const char *pin_source,
                        cu_tok_target *t)
{
    int rc = cu_tok_target_open(dir, uri, pin_source, true, t);
    cu_rc why = cu_err_last()->rc;
    if (rc != CU_EXIT_OK && (why == CU_E_PIN_INCORRECT || why == CU_E_PIN_LOCKED))
        audit_token(state, "login-failed", NULL, dir ? dir : uri, NULL, cu_rc_str(why));
    return rc;
}

/* What keygen and import print: the new object's URI, or its JSON. */
static void print_new_object(cu_object *o, bool json)
{
    if (json) {
        print_object_json(o);
        printf("\n");
        return;
    }
    char *uri = cu_object_uri(o);
    printf("%s\n", uri ? uri : "");
    free(uri);
}

static int cmd_keygen(int argc, char **argv)
{
    const char *type = NULL, *label = NULL, *idhex = NULL, *dir = NULL, *pin_source = NULL, *pos[1];
    const char *state = NULL;
    bool json = false, help = false;
    size_t npos = 0;
    cu_cli_opt opts[] = {
        {"--type", &type, NULL, NULL, NULL, 0},   {"--label", &label, NULL, NULL, NULL, 0},
        {"--state", &state, NULL, NULL, NULL, 0},
        {"--id", &idhex, NULL, NULL, NULL, 0},    {"--dir", &dir, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},   {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("token keygen", argc, argv, opts, pos, 1, &npos);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos token keygen --type ec-p256|ec-p384|rsa2048|rsa3072|rsa4096|hmac256\n"
               "                           --label LABEL [--id HEX] [--dir TOKEN_DIR]\n"
               "                           [--pin-source FILE] [--state DIR] [--json] [URI]\n\n"
               "Generates a key (pair) inside the token: sensitive, never extractable.\n"
               "Prints the URI of the new private (or secret) key.\n\n" CU_TOK_AUDIT_HELP);
        return CU_EXIT_OK;
    }
    cu_keygen_type kt;
    if (type == NULL || label == NULL)
        return cu_cli_usage("token keygen", "--type and --label are required");
    if (cu_keygen_type_parse(type, &kt) != CU_OK)
        return cu_cli_usage("token keygen", "%s", cu_err_last()->msg);
    uint8_t id[64];
    size_t idlen = 0;
    if (idhex && cu_tok_parse_hex(idhex, id, sizeof id, &idlen) != 0)
        return cu_cli_usage("token keygen", "--id must be hex (up to 64 bytes)");
    cu_tok_target t;
    if ((rc = cu_tok_open_audited(state, dir, npos ? pos[0] : NULL, pin_source, &t)) != CU_EXIT_OK)
        return rc;
    cu_object *k = NULL;
    if (cu_token_keygen(t.tok, kt, label, idlen ? id : NULL, idlen, &k) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        audit_token(state, "keygen", &t, NULL, NULL, cu_err_last()->msg);
    } else {
        print_new_object(k, json);
        audit_token(state, "keygen", &t, NULL, k, "ok");
    }
    cu_object_free(k);
    cu_tok_target_free(&t);
    return rc;
}

static int cmd_import(int argc, char **argv)
{
    const char *cert = NULL, *label = NULL, *idhex = NULL, *dir = NULL, *pin_source = NULL, *pos[1];
    const char *state = NULL;
    bool json = false, help = false;
    size_t npos = 0;
    cu_cli_opt opts[] = {
        {"--cert", &cert, NULL, NULL, NULL, 0},   {"--label", &label, NULL, NULL, NULL, 0},
        {"--state", &state, NULL, NULL, NULL, 0},
        {"--id", &idhex, NULL, NULL, NULL, 0},    {"--dir", &dir, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},   {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("token import", argc, argv, opts, pos, 1, &npos);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos token import --cert FILE [--label LABEL] [--id HEX] [--dir TOKEN_DIR]\n"
               "                           [--pin-source FILE] [--state DIR] [--json] [URI]\n\n"
               "Stores a certificate (PEM or DER) on the token. With the id of a key (--id),\n"
               "the certificate names that key.\n\n" CU_TOK_AUDIT_HELP);
        return CU_EXIT_OK;
    }
    if (cert == NULL)
        return cu_cli_usage("token import", "--cert FILE is required");
    uint8_t id[64];
    size_t idlen = 0;
    if (idhex && cu_tok_parse_hex(idhex, id, sizeof id, &idlen) != 0)
        return cu_cli_usage("token import", "--id must be hex (up to 64 bytes)");
    uint8_t *der = NULL;
    size_t dlen = 0;
    if (cu_tok_read_cert(cert, &der, &dlen) != 0)
        return CU_EXIT_FAIL;
    cu_tok_target t;
    if ((rc = cu_tok_open_audited(state, dir, npos ? pos[0] : NULL, pin_source, &t)) != CU_EXIT_OK) {
        free(der);
        return rc;
    }
    cu_object *c = NULL;
    if (cu_token_import_cert(t.tok, der, dlen, label ? label : "certificate", idlen ? id : NULL, idlen, &c) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        audit_token(state, "import", &t, NULL, NULL, cu_err_last()->msg);
    } else {
        print_new_object(c, json);
        audit_token(state, "import", &t, NULL, c, "ok");
    }
    cu_object_free(c);
    free(der);
    cu_tok_target_free(&t);
    return rc;
}

/* ---- objects / custody ---- */

static const char *tri(int v)
{
    return v < 0 ? "?" : v ? "yes" : "no";
}

static int cmd_objects_or_custody(int argc, char **argv, bool custody)
{
    const char *dir = NULL, *pin_source = NULL, *pos[1];
    bool json = false, help = false;
    size_t npos = 0;
    const char *cmd = custody ? "token custody" : "token objects";
    cu_cli_opt opts[] = {
        {"--dir", &dir, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse(cmd, argc, argv, opts, pos, 1, &npos);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos %s [--dir TOKEN_DIR] [--pin-source FILE] [--json] [URI]\n\n%s", cmd,
               custody ? "One row per key: class, type, label, id, sensitive, extractable,\n"
                         "always-sensitive, never-extractable, local. A key that was ever\n"
                         "extractable, or not generated on the token, is flagged.\n"
                       : "Lists the objects of the token (private objects after login).\n");
        return CU_EXIT_OK;
    }
    cu_tok_target t;
    if ((rc = cu_tok_target_open(dir, npos ? pos[0] : NULL, pin_source, true, &t)) != CU_EXIT_OK)
        return rc;
    cu_object **objs = NULL;
    size_t n = 0;
    if (cu_token_find_all(t.tok, NULL, CU_CLASS_ANY, &objs, &n) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto out;
    }
    const cu_token_desc *d = cu_token_get0_desc(t.tok);
    if (json) {
        printf("{\"token\":{");
        cu_tok_json_fields(d);
        printf("},\"%s\":[", custody ? "keys" : "objects");
    } else {
        printf("token '%s' (%s %s, serial %s)\n", d->label, d->manufacturer, d->model, d->serial);
        if (custody)
            printf("%-12s %-5s %5s %-20s %-16s %-4s %-4s %-5s %-5s %-5s %s\n", "CLASS", "TYPE", "BITS", "LABEL", "ID",
                   "SENS", "EXTR", "ASENS", "NEXTR", "LOCAL", "FLAG");
        else
            printf("%-12s %-5s %5s %-20s %s\n", "CLASS", "TYPE", "BITS", "LABEL", "ID");
    }
    size_t shown = 0, flagged = 0;
    for (size_t i = 0; i < n; i++) {
        cu_class cls = cu_object_class(objs[i]);
        if (custody && cls != CU_CLASS_PRIVATE_KEY && cls != CU_CLASS_SECRET_KEY)
            continue;
        size_t idlen;
        const uint8_t *id = cu_object_id(objs[i], &idlen);
        char hex[129] = "";
        for (size_t k = 0; k < idlen && k < 64; k++)
            snprintf(hex + 2 * k, 3, "%02x", id[k]);
        cu_custody c = {0};
        bool flag = false;
        if (custody) {
            if (cu_object_custody(objs[i], &c) != CU_OK) {
                rc = cu_cli_fail("%s", cu_err_last()->msg);
                break;
            }
            flag = cu_custody_flagged(&c);
            flagged += flag;
        }
        if (json) {
            printf("%s{\"class\":\"%s\",\"type\":\"%s\",\"bits\":%u,\"label\":", shown ? "," : "", cu_class_str(cls),
                   cu_key_type_str(cu_object_key_type(objs[i])), cu_object_bits(objs[i]));
            cu_cli_json_str(stdout, cu_object_label(objs[i]));
            printf(",\"id\":\"%s\"", hex);
            if (custody) {
#define JB(name, v) printf(",\"" name "\":%s", (v) < 0 ? "null" : (v) ? "true" : "false")
                JB("sensitive", c.sensitive);
                JB("extractable", c.extractable);
                JB("always_sensitive", c.always_sensitive);
                JB("never_extractable", c.never_extractable);
                JB("local", c.local);
#undef JB
                printf(",\"flagged\":%s", flag ? "true" : "false");
            }
            char *uri = cu_object_uri(objs[i]);
            printf(",\"uri\":");
            cu_cli_json_str(stdout, uri);
            free(uri);
            printf("}");
        } else if (custody) {
            printf("%-12s %-5s %5u %-20s %-16s %-4s %-4s %-5s %-5s %-5s %s\n", cu_class_str(cls),
                   cu_key_type_str(cu_object_key_type(objs[i])), cu_object_bits(objs[i]), cu_object_label(objs[i]),
                   hex, tri(c.sensitive), tri(c.extractable), tri(c.always_sensitive), tri(c.never_extractable),
                   tri(c.local), flag ? (c.local != 1 ? "IMPORTED" : "EVER-EXTRACTABLE") : "");
        } else {
            printf("%-12s %-5s %5u %-20s %s\n", cu_class_str(cls), cu_key_type_str(cu_object_key_type(objs[i])),
                   cu_object_bits(objs[i]), cu_object_label(objs[i]), hex);
        }
        shown++;
    }
    if (json)
        printf("],\"count\":%zu%s%zu}\n", shown, custody ? ",\"flagged\":" : "", custody ? flagged : (size_t)0);
    else if (custody)
        printf("%zu key(s), %zu flagged\n", shown, flagged);
    else
        printf("%zu object(s)\n", shown);
out:
    cu_objects_free(objs, n);
    cu_tok_target_free(&t);
    return rc;
}

static int cmd_objects(int argc, char **argv)
{
    return cmd_objects_or_custody(argc, argv, false);
}

static int cmd_custody(int argc, char **argv)
{
    return cmd_objects_or_custody(argc, argv, true);
}

int cu_cmd_token(int argc, char **argv)
{
    static const cu_cli_group cmds[] = {
        {"init", NULL, cu_cmd_token_init},     {"start", NULL, cu_cmd_token_start},
        {"stop", NULL, cu_cmd_token_stop},     {"list", NULL, cmd_list},
        {"keygen", NULL, cmd_keygen},          {"import", NULL, cmd_import},
        {"objects", NULL, cmd_objects},        {"custody", NULL, cmd_custody},
        {"check", NULL, cu_cmd_token_check},   {"hmac-import", NULL, cu_cmd_token_hmac_import},
        {"destroy", NULL, cu_cmd_token_destroy}, {"set-pin", NULL, cu_cmd_token_set_pin},
    };
    int rc = cu_cli_dispatch("token", token_usage, cmds, sizeof cmds / sizeof cmds[0], argc, argv);
    /* Finalize modules before OpenSSL's exit-time clean-up (SoftHSM2). */
    cu_p11_shutdown();
    return rc;
}
