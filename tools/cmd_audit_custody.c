/* custos audit custody: where every key lives and whether it could ever have
 * left its token, over every configured token (the token directories under
 * STATE/tokens/ and those given by --dir), and, with --state, its last use
 * from the audit log; as text, JSON, CSV or one self-contained HTML page. */
#include "cli.h"
#include "cmd_audit_lastuse.h"
#include "token_util.h"

#include <custos/fixture.h>
#include <custos/token.h>
#include <dirent.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cu_cmd_audit_custody(int argc, char **argv);

enum { MAX_TOKENS = 64 };

typedef struct key_row {
    const char *kind;    /* softhsm2, tpm2, soft, module */
    cu_token_desc tok;
    char token_dir[512];
    cu_custody c;
    char label[128];
    char id[129];
    char certs[512];     /* subjects of the certificates with the same CKA_ID */
    bool flag_soft, flag_extractable, flag_imported;
    cu_lastuse_hit last;  /* filled in by the parent, from the audit log */
    char last_text[400];
} key_row;

typedef struct report {
    key_row *rows;
    size_t n, cap;
    size_t tokens;
    const cu_lastuse *log; /* NULL: no --state */
    const char *state;
    char errors[MAX_TOKENS][600];
    size_t n_errors;
} report;

static bool flagged(const key_row *r)
{
    return r->flag_soft || r->flag_extractable || r->flag_imported;
}

static void hex(const uint8_t *in, size_t len, char *out, size_t size)
{
    out[0] = '\0';
    for (size_t i = 0; i < len && 2 * i + 2 < size; i++)
        snprintf(out + 2 * i, 3, "%02x", in[i]);
}

/* The subjects of the token's certificates whose CKA_ID is the key's. */
static void certs_for(cu_object **objs, size_t n, const cu_object *key, char *out, size_t size)
{
    size_t klen;
    const uint8_t *kid = cu_object_id(key, &klen);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t clen;
        const uint8_t *cid = cu_object_id(objs[i], &clen);
        if (cu_object_class(objs[i]) != CU_CLASS_CERTIFICATE || klen == 0 || clen != klen || memcmp(cid, kid, klen))
            continue;
        uint8_t *der = NULL;
        size_t dlen = 0;
        char subject[256] = "?";
        if (cu_object_value(objs[i], &der, &dlen) == CU_OK) {
            const unsigned char *p = der;
            X509 *x = d2i_X509(NULL, &p, (long)dlen);
            if (x != NULL)
                X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
            X509_free(x);
            free(der);
        }
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", used ? "; " : "", subject);
    }
}

static int collect_token(report *rep, const char *dir, const char *pin_source)
{
    cu_tok_target t;
    int rc = cu_tok_target_open(dir, NULL, pin_source, true, &t);
    if (rc != CU_EXIT_OK) {
        snprintf(rep->errors[rep->n_errors++ % MAX_TOKENS], sizeof rep->errors[0], "%s: %s", dir,
                 cu_err_last()->msg);
        return rc;
    }
    cu_object **objs = NULL;
    size_t n = 0;
    if (cu_token_find_all(t.tok, NULL, CU_CLASS_ANY, &objs, &n) != CU_OK) {
        snprintf(rep->errors[rep->n_errors++ % MAX_TOKENS], sizeof rep->errors[0], "%s: %s", dir,
                 cu_err_last()->msg);
        cu_tok_target_free(&t);
        return CU_EXIT_FAIL;
    }
    rep->tokens++;
    const char *kind = cu_fixture_kind_str(cu_fixture_get_kind(t.fixture));
    for (size_t i = 0; i < n; i++) {
        cu_class cls = cu_object_class(objs[i]);
        if (cls != CU_CLASS_PRIVATE_KEY && cls != CU_CLASS_SECRET_KEY)
            continue;
        if (rep->n == rep->cap) {
            size_t ncap = rep->cap ? rep->cap * 2 : 16;
            key_row *nr = realloc(rep->rows, ncap * sizeof *nr);
            if (nr == NULL)
                break;
            rep->rows = nr;
            rep->cap = ncap;
        }
        key_row *r = &rep->rows[rep->n];
        memset(r, 0, sizeof *r);
        if (cu_object_custody(objs[i], &r->c) != CU_OK)
            continue;
        r->kind = kind;
        r->tok = *cu_token_get0_desc(t.tok);
        snprintf(r->token_dir, sizeof r->token_dir, "%s", cu_fixture_get0_dir(t.fixture));
        snprintf(r->label, sizeof r->label, "%s", cu_object_label(objs[i]));
        size_t idlen;
        const uint8_t *id = cu_object_id(objs[i], &idlen);
        hex(id, idlen, r->id, sizeof r->id);
        certs_for(objs, n, objs[i], r->certs, sizeof r->certs);
        r->flag_soft = strcmp(kind, "soft") == 0;
        r->flag_imported = r->c.local != 1;
        /* An imported key is never "never extractable" (it came from outside):
         * report it as imported, and as ever extractable only on its own. */
        r->flag_extractable = r->c.extractable != 0 ||
                              (!r->flag_imported && (r->c.never_extractable != 1 || r->c.always_sensitive != 1));
        rep->n++;
    }
    cu_objects_free(objs, n);
    cu_tok_target_free(&t);
    return CU_EXIT_OK;
}

/* Each token directory is read in a process of its own (a module reads its
 * configuration once per process): the child sends its rows back. */
typedef struct child_arg {
    const char *dir, *pin_source;
} child_arg;

static bool write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

static int collect_child(void *arg, int fd)
{
    child_arg *c = arg;
    report rep = {0};
    int rc = collect_token(&rep, c->dir, c->pin_source);
    size_t nerr = rep.n_errors < MAX_TOKENS ? rep.n_errors : MAX_TOKENS;
    if (!write_all(fd, &rep.tokens, sizeof rep.tokens) || !write_all(fd, &rep.n, sizeof rep.n) ||
        !write_all(fd, rep.rows, rep.n * sizeof *rep.rows) || !write_all(fd, &nerr, sizeof nerr) ||
        !write_all(fd, rep.errors, nerr * sizeof rep.errors[0]))
        rc = CU_EXIT_FAIL;
    free(rep.rows);
    return rc;
}

static int collect_isolated(report *rep, const char *dir, const char *pin_source)
{
    child_arg c = {dir, pin_source};
    uint8_t *buf = NULL;
    size_t len = 0, tokens = 0, n = 0, nerr = 0, off = 0;
    int rc = cu_tok_run_isolated(collect_child, &c, &buf, &len);
    bool ok = len >= 2 * sizeof(size_t);
    if (ok) {
        memcpy(&tokens, buf, sizeof tokens);
        memcpy(&n, buf + sizeof tokens, sizeof n);
        off = 2 * sizeof(size_t);
        ok = n <= (len - off) / sizeof(key_row);
    }
    if (ok) {
        key_row *nr = n ? realloc(rep->rows, (rep->n + n) * sizeof *nr) : rep->rows;
        ok = n == 0 || nr != NULL;
        if (n && nr != NULL) {
            memcpy(nr + rep->n, buf + off, n * sizeof *nr);
            rep->rows = nr;
            rep->n += n;
            rep->cap = rep->n;
        }
        off += n * sizeof(key_row);
        rep->tokens += tokens;
    }
    if (ok && len >= off + sizeof nerr) {
        memcpy(&nerr, buf + off, sizeof nerr);
        off += sizeof nerr;
        for (size_t i = 0; i < nerr && off + sizeof rep->errors[0] <= len && rep->n_errors < MAX_TOKENS; i++) {
            memcpy(rep->errors[rep->n_errors], buf + off, sizeof rep->errors[0]);
            rep->errors[rep->n_errors++][sizeof rep->errors[0] - 1] = '\0';
            off += sizeof rep->errors[0];
        }
    }
    if (!ok && rep->n_errors < MAX_TOKENS)
        snprintf(rep->errors[rep->n_errors++], sizeof rep->errors[0], "%s: could not be read (exit %d)", dir, rc);
    free(buf);
    return ok ? rc : CU_EXIT_FAIL;
}

static const char *yn(int v)
{
    return v < 0 ? "unknown" : v ? "yes" : "no";
}

static void flags_text(const key_row *r, char *out, size_t size)
{
    snprintf(out, size, "%s%s%s", r->flag_soft ? "software-keystore " : "",
             r->flag_extractable ? "ever-extractable " : "", r->flag_imported ? "imported " : "");
    size_t n = strlen(out);
    if (n > 0)
        out[n - 1] = '\0';
}

static size_t with_use(const report *rep)
{
    size_t n = 0;
    for (size_t i = 0; i < rep->n; i++)
        n += rep->rows[i].last.found;
    return n;
}

static void summary(const report *rep, size_t *_flagged, size_t *_soft, size_t *_extr, size_t *_imp)
{
    *_flagged = *_soft = *_extr = *_imp = 0;
    for (size_t i = 0; i < rep->n; i++) {
        *_flagged += flagged(&rep->rows[i]);
        *_soft += rep->rows[i].flag_soft;
        *_extr += rep->rows[i].flag_extractable;
        *_imp += rep->rows[i].flag_imported;
    }
}

static void csv_field(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"')
            putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static void html_text(const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", stdout); break;
        case '>': fputs("&gt;", stdout); break;
        case '&': fputs("&amp;", stdout); break;
        case '"': fputs("&quot;", stdout); break;
        default: putchar(*s);
        }
    }
}

static void print_json(const report *rep)
{
    size_t fl, so, ex, im;
    summary(rep, &fl, &so, &ex, &im);
    printf("{\"summary\":{\"tokens\":%zu,\"keys\":%zu,\"flagged\":%zu,\"software_keystore\":%zu,"
           "\"ever_extractable\":%zu,\"imported\":%zu,\"unreadable_tokens\":%zu,\"audit_log\":",
           rep->tokens, rep->n, fl, so, ex, im, rep->n_errors);
    if (cu_lastuse_have_log(rep->log)) {
        cu_cli_json_str(stdout, rep->state);
        printf(",\"keys_with_recorded_use\":%zu", with_use(rep));
    } else {
        printf("null");
    }
    printf("},\"keys\":[");
    for (size_t i = 0; i < rep->n; i++) {
        const key_row *r = &rep->rows[i];
        printf("%s{\"token\":{\"kind\":\"%s\",", i ? "," : "", r->kind);
        cu_tok_json_fields(&r->tok);
        printf(",\"dir\":");
        cu_cli_json_str(stdout, r->token_dir);
        printf("},\"class\":\"%s\",\"type\":\"%s\",\"bits\":%u,\"label\":", cu_class_str(r->c.cls),
               cu_key_type_str(r->c.type), r->c.bits);
        cu_cli_json_str(stdout, r->label);
        printf(",\"id\":\"%s\"", r->id);
#define JB(name, v) printf(",\"" name "\":%s", (v) < 0 ? "null" : (v) ? "true" : "false")
        JB("sensitive", r->c.sensitive);
        JB("extractable", r->c.extractable);
        JB("always_sensitive", r->c.always_sensitive);
        JB("never_extractable", r->c.never_extractable);
        JB("local", r->c.local);
#undef JB
        printf(",\"certificates\":");
        cu_cli_json_str(stdout, r->certs);
        printf(",\"flags\":[%s%s%s%s%s]", r->flag_soft ? "\"software-keystore\"" : "",
               r->flag_soft && (r->flag_extractable || r->flag_imported) ? "," : "",
               r->flag_extractable ? "\"ever-extractable\"" : "", r->flag_extractable && r->flag_imported ? "," : "",
               r->flag_imported ? "\"imported\"" : "");
        /* recorded false: "never recorded", or no log read (summary.audit_log null). */
        printf(",\"last_use\":{\"recorded\":%s", r->last.found ? "true" : "false");
        if (r->last.found) {
            printf(",\"at\":");
            cu_cli_json_str(stdout, r->last.at);
            printf(",\"record\":");
            cu_cli_json_str(stdout, r->last.type);
            printf(",\"seq\":%llu", (unsigned long long)r->last.seq);
            if (!strcmp(r->last.type, "key.use"))
                printf(",\"count\":%lu", r->last.count);
            if (r->last.role[0]) {
                printf(",\"role\":");
                cu_cli_json_str(stdout, r->last.role);
            }
            printf(",\"actor\":");
            cu_cli_json_str(stdout, r->last.actor);
        }
        printf(",\"text\":");
        cu_cli_json_str(stdout, r->last_text);
        printf("}}");
    }
    printf("],\"errors\":[");
    for (size_t i = 0; i < rep->n_errors && i < MAX_TOKENS; i++) {
        printf("%s", i ? "," : "");
        cu_cli_json_str(stdout, rep->errors[i]);
    }
    printf("]}\n");
}

static void print_csv(const report *rep)
{
    size_t fl, so, ex, im;
    char when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    summary(rep, &fl, &so, &ex, &im);
    /* The summary first, as comment lines a spreadsheet or `grep -v '^#'`
     * skips; the table's header follows. */
    printf("# Custos key custody report, %s\n"
           "# tokens: %zu, keys: %zu, flagged: %zu (software keystore %zu, ever extractable %zu, imported %zu), "
           "unreadable tokens: %zu\n",
           when, rep->tokens, rep->n, fl, so, ex, im, rep->n_errors);
    if (cu_lastuse_have_log(rep->log))
        printf("# last use: from the audit log of %s: %zu of %zu key(s) have a recorded use\n", rep->state,
               with_use(rep), rep->n);
    else
        printf("# last use: not read (give --state DIR for its audit log)\n");
    printf("token_kind,token_label,manufacturer,model,serial,class,type,bits,label,id,sensitive,extractable,"
           "always_sensitive,never_extractable,local,certificates,flags,last_use_at,last_use\n");
    for (size_t i = 0; i < rep->n; i++) {
        const key_row *r = &rep->rows[i];
        char fl[64];
        flags_text(r, fl, sizeof fl);
        const char *fields[] = {r->kind, r->tok.label, r->tok.manufacturer, r->tok.model, r->tok.serial,
                                cu_class_str(r->c.cls), cu_key_type_str(r->c.type)};
        for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++) {
            csv_field(fields[k]);
            putchar(',');
        }
        printf("%u,", r->c.bits);
        csv_field(r->label);
        printf(",%s,%s,%s,%s,%s,%s,", r->id, yn(r->c.sensitive), yn(r->c.extractable), yn(r->c.always_sensitive),
               yn(r->c.never_extractable), yn(r->c.local));
        csv_field(r->certs);
        putchar(',');
        csv_field(fl);
        putchar(',');
        csv_field(r->last.found ? r->last.at : "");
        putchar(',');
        csv_field(r->last_text);
        putchar('\n');
    }
}

static void print_text(const report *rep)
{
    size_t fl, so, ex, im;
    summary(rep, &fl, &so, &ex, &im);
    printf("Key custody: %zu token(s), %zu key(s), %zu flagged (software keystore %zu, ever extractable %zu, "
           "imported %zu)%s\n\n",
           rep->tokens, rep->n, fl, so, ex, im, rep->n_errors ? " -- some tokens could not be read" : "");
    if (cu_lastuse_have_log(rep->log))
        printf("Last use from the audit log of %s: %zu of %zu key(s) have a recorded use.\n\n", rep->state,
               with_use(rep), rep->n);
    else
        printf("Last use: not read (give --state DIR for its audit log).\n\n");
    printf("%-8s %-16s %-12s %-5s %5s %-20s %-4s %-4s %-5s %-5s %-5s %s\n", "KIND", "TOKEN", "CLASS", "TYPE",
           "BITS", "LABEL", "SENS", "EXTR", "ASENS", "NEXTR", "LOCAL", "FLAGS / CERTIFICATES");
    for (size_t i = 0; i < rep->n; i++) {
        const key_row *r = &rep->rows[i];
        char f[64];
        flags_text(r, f, sizeof f);
        printf("%-8s %-16s %-12s %-5s %5u %-20s %-4s %-4s %-5s %-5s %-5s %s%s%s\n", r->kind, r->tok.label,
               cu_class_str(r->c.cls), cu_key_type_str(r->c.type), r->c.bits, r->label, yn(r->c.sensitive),
               yn(r->c.extractable), yn(r->c.always_sensitive), yn(r->c.never_extractable), yn(r->c.local),
               f[0] ? "FLAGGED: " : "", f, r->certs[0] ? "" : "");
        if (r->certs[0])
            printf("%-8s certificate: %s\n", "", r->certs);
        if (cu_lastuse_have_log(rep->log))
            printf("%-8s last use: %s\n", "", r->last_text);
    }
    for (size_t i = 0; i < rep->n_errors && i < MAX_TOKENS; i++)
        printf("\nunreadable: %s\n", rep->errors[i]);
}

static void print_html(const report *rep)
{
    size_t fl, so, ex, im;
    char when[64];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    summary(rep, &fl, &so, &ex, &im);
    printf("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Custos key custody report</title>\n"
           "<style>body{font-family:sans-serif;margin:2em;color:#222}h1{font-size:1.4em}"
           "table{border-collapse:collapse;width:100%%;font-size:.85em}th,td{border:1px solid #999;padding:.3em .5em;"
           "text-align:left;vertical-align:top}th{background:#eee}tr.flag td{background:#fde8e8}"
           ".sum td{border:none;padding:.1em 1em .1em 0}.mono{font-family:monospace}"
           "@media print{body{margin:0}tr{page-break-inside:avoid}}</style></head><body>\n"
           "<h1>Key custody report</h1>\n<p>Generated by Custos on %s.</p>\n<table class=\"sum\">\n"
           "<tr><td>Tokens</td><td>%zu</td></tr><tr><td>Keys</td><td>%zu</td></tr>"
           "<tr><td><strong>Flagged</strong></td><td><strong>%zu</strong></td></tr>"
           "<tr><td>in the software keystore</td><td>%zu</td></tr><tr><td>ever extractable</td><td>%zu</td></tr>"
           "<tr><td>imported (not generated on the token)</td><td>%zu</td></tr>"
           "<tr><td>tokens that could not be read</td><td>%zu</td></tr>",
           when, rep->tokens, rep->n, fl, so, ex, im, rep->n_errors);
    if (cu_lastuse_have_log(rep->log)) {
        printf("<tr><td>keys with a recorded use (audit log of ");
        html_text(rep->state);
        printf(")</td><td>%zu</td></tr>", with_use(rep));
    } else {
        printf("<tr><td>last uses</td><td>not read (no --state)</td></tr>");
    }
    printf("</table>\n");
    printf("<h2>Keys</h2>\n<table><tr><th>Token</th><th>Class / type</th><th>Label</th><th>Id</th><th>Sensitive</th>"
           "<th>Extractable</th><th>Always sensitive</th><th>Never extractable</th><th>Local</th>"
           "<th>Certificates</th><th>Flags</th><th>Last use</th></tr>\n");
    for (size_t i = 0; i < rep->n; i++) {
        const key_row *r = &rep->rows[i];
        char f[64];
        flags_text(r, f, sizeof f);
        printf("<tr%s><td>%s: ", flagged(r) ? " class=\"flag\"" : "", r->kind);
        html_text(r->tok.label);
        printf("<br><small>");
        html_text(r->tok.manufacturer);
        printf(" ");
        html_text(r->tok.model);
        printf(", serial ");
        html_text(r->tok.serial);
        printf("</small></td><td>%s %s-%u</td><td>", cu_class_str(r->c.cls), cu_key_type_str(r->c.type), r->c.bits);
        html_text(r->label);
        printf("</td><td class=\"mono\">%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>", r->id,
               yn(r->c.sensitive), yn(r->c.extractable), yn(r->c.always_sensitive), yn(r->c.never_extractable),
               yn(r->c.local));
        html_text(r->certs);
        printf("</td><td>%s</td><td>", f);
        html_text(r->last_text);
        printf("</td></tr>\n");
    }
    printf("</table>\n");
    for (size_t i = 0; i < rep->n_errors && i < MAX_TOKENS; i++) {
        printf("<p><strong>Could not read:</strong> ");
        html_text(rep->errors[i]);
        printf("</p>\n");
    }
    printf("</body></html>\n");
}

int cu_cmd_audit_custody(int argc, char **argv)
{
    const char *dirs[MAX_TOKENS], *state = NULL, *pin_source = NULL;
    size_t n_dirs = 0;
    bool json = false, csv = false, html = false, help = false;
    cu_cli_opt opts[] = {
        {"--dir", NULL, NULL, dirs, &n_dirs, MAX_TOKENS}, {"--state", &state, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0}, {"--json", NULL, &json, NULL, NULL, 0},
        {"--csv", NULL, &csv, NULL, NULL, 0},            {"--html", NULL, &html, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},          {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("audit custody", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos audit custody [--state DIR] [--dir TOKEN_DIR]... [--pin-source FILE]\n"
               "                            [--json|--csv|--html]\n\n"
               "For every key in every configured token (the token directories under\n"
               "STATE/tokens/, default ./var, and those given by --dir): its token (kind,\n"
               "manufacturer, model, serial), class and type, label and id, sensitive,\n"
               "extractable, always-sensitive, never-extractable, local, and the certificates\n"
               "that name it. Keys in the software keystore, keys that were ever extractable\n"
               "and keys not generated on their token are flagged; a summary comes first.\n"
               "With --state, each key's last use from that state's audit log: custosd's\n"
               "key.use records (per key and minute) and the token keygen/import records,\n"
               "matched by the pkcs11: URI they name the key with; else \"never recorded\".\n"
               "--html writes one self-contained page. Exit status 1 if a token cannot be read.\n");
        return CU_EXIT_OK;
    }
    if (json + csv + html > 1)
        return cu_cli_usage("audit custody", "choose one of --json, --csv, --html");
    char *owned[MAX_TOKENS];
    size_t n_owned = 0;
    char path[1024];
    cu_lastuse *log = NULL;
    /* The log is read when the state is named: the last uses are its. */
    if (state != NULL && (rc = cu_lastuse_load(state, &log)) != CU_EXIT_OK)
        return rc;
    snprintf(path, sizeof path, "%s/tokens", state ? state : "./var");
    DIR *d = n_dirs == 0 ? opendir(path) : NULL;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL && n_owned < MAX_TOKENS) {
        char conf[2048];
        struct stat st;
        snprintf(conf, sizeof conf, "%s/%s/%s", path, e->d_name, CU_FIXTURE_CONF);
        if (e->d_name[0] != '.' && stat(conf, &st) == 0 && asprintf(&owned[n_owned], "%s/%s", path, e->d_name) >= 0)
            dirs[n_dirs++] = owned[n_owned++];
    }
    if (d != NULL)
        closedir(d);
    if (n_dirs == 0) {
        rc = cu_cli_fail("no configured tokens: none under %s/tokens; give --dir TOKEN_DIR", state ? state : "./var");
        goto out;
    }
    report rep = {0};
    int worst = CU_EXIT_OK;
    for (size_t i = 0; i < n_dirs; i++)
        if (collect_isolated(&rep, dirs[i], pin_source) != CU_EXIT_OK)
            worst = CU_EXIT_FAIL;
    rep.log = log;
    rep.state = state;
    for (size_t i = 0; i < rep.n; i++) {
        key_row *r = &rep.rows[i];
        cu_lastuse_find(log, &r->tok, r->label, r->id, r->c.cls, &r->last);
        cu_lastuse_text(log, &r->last, r->last_text, sizeof r->last_text);
    }
    if (json)
        print_json(&rep);
    else if (csv)
        print_csv(&rep);
    else if (html)
        print_html(&rep);
    else
        print_text(&rep);
    free(rep.rows);
    rc = worst;
out:
    for (size_t i = 0; i < n_owned; i++)
        free(owned[i]);
    cu_lastuse_free(log);
    return rc;
}
