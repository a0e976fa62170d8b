/* custos audit custody: where every key lives and whether it could ever have
 * left its token, over every configured token (the token directories under
 * STATE/tokens/ and those given by --dir, the tokens named by --uri and by
 * custosd's config, --config) and the key files that config names, and,
 * with --state or --config, its last use from the audit log; as text, JSON,
 * CSV or one self-contained HTML page. */
#include "cli.h"
#include "cmd_audit_lastuse.h"
#include "token_util.h"

#include <custos/fixture.h>
#include <custos/server.h>
#include <custos/token.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cu_cmd_audit_custody(int argc, char **argv);

enum { MAX_TOKENS = 64 };

typedef struct key_row {
    char kind[16];       /* softhsm2, tpm2, soft, module; file: a key file */
    cu_token_desc tok;
    char token_dir[512]; /* the token directory it was read through, if any */
    char uri[512];       /* else the URI (without its pin-value) */
    char path[512];      /* a key file: where it is */
    cu_custody c;
    char label[128];
    char id[129];
    char certs[512];     /* subjects of the certificates with the same CKA_ID */
    char role[64];       /* what custosd's config uses it as: server-key, keyring, audit-key */
    bool flag_soft, flag_extractable, flag_imported, flag_file;
    cu_lastuse_hit last;  /* filled in by the parent, from the audit log */
    char last_text[400];
} key_row;

typedef struct report {
    key_row *rows;
    size_t n, cap;
    size_t tokens;
    cu_token_desc descs[MAX_TOKENS]; /* the tokens read, to read each once */
    const cu_lastuse *log; /* NULL: no --state */
    const char *state;
    char errors[MAX_TOKENS][600];
    size_t n_errors;
} report;

static bool flagged(const key_row *r)
{
    return r->flag_soft || r->flag_extractable || r->flag_imported || r->flag_file;
}

static void add_error(report *rep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_error(report *rep, const char *fmt, ...)
{
    va_list ap;
    if (rep->n_errors >= MAX_TOKENS)
        return;
    va_start(ap, fmt);
    vsnprintf(rep->errors[rep->n_errors++], sizeof rep->errors[0], fmt, ap);
    va_end(ap);
}

static key_row *new_row(report *rep)
{
    if (rep->n == rep->cap) {
        size_t ncap = rep->cap ? rep->cap * 2 : 16;
        key_row *nr = realloc(rep->rows, ncap * sizeof *nr);
        if (nr == NULL)
            return NULL;
        rep->rows = nr;
        rep->cap = ncap;
    }
    key_row *r = &rep->rows[rep->n];
    memset(r, 0, sizeof *r);
    return r;
}

/* The token's URI as shown: the URI without its object attributes (it
 * names the token, whichever key it was given for) and without a pin-value
 * (a pin-source names a file). */
static void uri_shown(const char *uri, char *out, size_t size)
{
    static const char *const drop[] = {"object=", "id=", "type=", "pin-value="};
    size_t o = 0, q = strcspn(uri, "?");
    for (size_t i = 0; uri[i] && o + 1 < size;) {
        bool start = i == 7 || (i > 0 && (uri[i - 1] == ';' || uri[i - 1] == '?' || uri[i - 1] == '&'));
        bool skip = false;
        for (size_t k = 0; start && k < sizeof drop / sizeof drop[0] && !skip; k++)
            skip = !strncmp(uri + i, drop[k], strlen(drop[k])) && (i < q || k == 3);
        if (skip) {
            i += strcspn(uri + i, i < q ? ";?" : "&");
            if (uri[i] == ';' || uri[i] == '&')
                i++;
            continue;
        }
        if (uri[i] == '?')
            while (o > 7 && out[o - 1] == ';')
                o--;
        out[o++] = uri[i++];
    }
    while (o > 7 && (out[o - 1] == '&' || out[o - 1] == '?' || out[o - 1] == ';'))
        o--;
    out[o] = 0;
}

/* The kind of token a URI's module serves (the module names of
 * docs/tokens.md), so that the software keystore is flagged whichever way
 * it is named. */
static const char *uri_kind(const char *uri)
{
    const char *m = strstr(uri, "module-path=");
    char mod[1024];
    if (m == NULL)
        return "module";
    snprintf(mod, sizeof mod, "%.*s", (int)strcspn(m + 12, "&"), m + 12);
    if (strstr(mod, "custos-soft"))
        return "soft";
    if (strstr(mod, "softhsm2"))
        return "softhsm2";
    if (strstr(mod, "tpm2_pkcs11"))
        return "tpm2";
    return "module";
}

static bool same_token(const cu_token_desc *a, const cu_token_desc *b)
{
    return !strcmp(a->label, b->label) && !strcmp(a->serial, b->serial) &&
           !strcmp(a->manufacturer, b->manufacturer) && !strcmp(a->model, b->model);
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

/* Every key of the token a directory or a URI names. */
static int collect_token(report *rep, const char *dir, const char *uri, const char *pin_source)
{
    cu_tok_target t;
    char shown[512] = "";
    if (uri != NULL)
        uri_shown(uri, shown, sizeof shown);
    const char *what = dir ? dir : shown;
    int rc = cu_tok_target_open(dir, uri, pin_source, true, &t);
    if (rc != CU_EXIT_OK) {
        add_error(rep, "%s: %s", what, cu_err_last()->msg);
        return rc;
    }
    cu_object **objs = NULL;
    size_t n = 0;
    if (cu_token_find_all(t.tok, NULL, CU_CLASS_ANY, &objs, &n) != CU_OK) {
        add_error(rep, "%s: %s", what, cu_err_last()->msg);
        cu_tok_target_free(&t);
        return CU_EXIT_FAIL;
    }
    rep->descs[rep->tokens++ % MAX_TOKENS] = *cu_token_get0_desc(t.tok);
    const char *kind = t.fixture ? cu_fixture_kind_str(cu_fixture_get_kind(t.fixture)) : uri_kind(uri);
    for (size_t i = 0; i < n; i++) {
        cu_class cls = cu_object_class(objs[i]);
        if (cls != CU_CLASS_PRIVATE_KEY && cls != CU_CLASS_SECRET_KEY)
            continue;
        key_row *r = new_row(rep);
        if (r == NULL)
            break;
        if (cu_object_custody(objs[i], &r->c) != CU_OK)
            continue;
        snprintf(r->kind, sizeof r->kind, "%s", kind);
        r->tok = *cu_token_get0_desc(t.tok);
        if (t.fixture != NULL)
            snprintf(r->token_dir, sizeof r->token_dir, "%s", cu_fixture_get0_dir(t.fixture));
        else
            snprintf(r->uri, sizeof r->uri, "%s", shown);
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

/* Each token is read in a process of its own (a module reads its
 * configuration once per process): the child sends its rows back. */
typedef struct child_arg {
    const char *dir, *uri, *pin_source;
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
    int rc = collect_token(&rep, c->dir, c->uri, c->pin_source);
    size_t nerr = rep.n_errors < MAX_TOKENS ? rep.n_errors : MAX_TOKENS;
    if (!write_all(fd, &rep.tokens, sizeof rep.tokens) ||
        !write_all(fd, rep.descs, (rep.tokens ? 1 : 0) * sizeof rep.descs[0]) || !write_all(fd, &rep.n, sizeof rep.n) ||
        !write_all(fd, rep.rows, rep.n * sizeof *rep.rows) || !write_all(fd, &nerr, sizeof nerr) ||
        !write_all(fd, rep.errors, nerr * sizeof rep.errors[0]))
        rc = CU_EXIT_FAIL;
    free(rep.rows);
    return rc;
}

/* Reads one token (dir, or else uri) into rep. A token read through a URI
 * that is one already in the report is left out (a config may name the
 * token of a state's directory, or several keys of one token). */
static int collect_isolated(report *rep, const char *dir, const char *uri, const char *pin_source)
{
    child_arg c = {dir, uri, pin_source};
    uint8_t *buf = NULL;
    size_t len = 0, tokens = 0, n = 0, nerr = 0, off = 0;
    cu_token_desc desc;
    int rc = cu_tok_run_isolated(collect_child, &c, &buf, &len);
    bool ok = len >= sizeof(size_t);
    if (ok) {
        memcpy(&tokens, buf, sizeof tokens);
        off = sizeof tokens;
        ok = tokens <= 1 && len >= off + tokens * sizeof desc + sizeof n;
    }
    if (ok) {
        if (tokens)
            memcpy(&desc, buf + off, sizeof desc);
        off += tokens * sizeof desc;
        memcpy(&n, buf + off, sizeof n);
        off += sizeof n;
        ok = n <= (len - off) / sizeof(key_row);
    }
    for (size_t i = 0; ok && tokens && dir == NULL && i < rep->tokens && i < MAX_TOKENS; i++)
        if (same_token(&rep->descs[i], &desc)) {
            free(buf);
            return rc;
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
        if (tokens)
            rep->descs[rep->tokens++ % MAX_TOKENS] = desc;
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
    {
        char shown[512] = "";
        if (uri != NULL)
            uri_shown(uri, shown, sizeof shown);
        snprintf(rep->errors[rep->n_errors++], sizeof rep->errors[0], "%s: could not be read (exit %d)",
                 dir ? dir : shown, rc);
    }
    free(buf);
    return ok ? rc : CU_EXIT_FAIL;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0; /* an encrypted key stays unread: never a prompt */
}

/* A key custosd's config keeps in a file (its server-key, audit-key or
 * keyring when not a pkcs11: URI): not in any token, so flagged. A default
 * path that does not exist (custosd makes it on first start) is left out;
 * a configured one that does not is an error. */
static void collect_file(report *rep, const char *role, const char *spec, bool configured)
{
    char abs[PATH_MAX];
    struct stat st;
    const char *path = strncmp(spec, "file:", 5) == 0 ? spec + 5 : spec;
    if (stat(path, &st) != 0) {
        if (configured || errno != ENOENT)
            add_error(rep, "%s %s: %s", role, path, strerror(errno));
        return;
    }
    key_row *r = new_row(rep);
    if (r == NULL) {
        add_error(rep, "%s %s: out of memory", role, path);
        return;
    }
    snprintf(r->kind, sizeof r->kind, "file");
    snprintf(r->path, sizeof r->path, "%.511s", realpath(path, abs) ? abs : path);
    snprintf(r->role, sizeof r->role, "%s", role);
    const char *base = strrchr(r->path, '/');
    snprintf(r->label, sizeof r->label, "%.127s", base ? base + 1 : r->path);
    /* Whoever can read the file has the key: nothing of it is sensitive or
     * unextractable, and where it was made is not known. */
    r->c = (cu_custody){.cls = CU_CLASS_OTHER, .type = CU_KEY_OTHER, .sensitive = 0, .extractable = 1,
                        .always_sensitive = 0, .never_extractable = 0, .local = -1,
                        .modifiable = -1, .copyable = -1, .is_private = -1};
    FILE *f = fopen(path, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, no_passphrase, NULL) : NULL;
    if (k != NULL) {
        r->c.cls = CU_CLASS_PRIVATE_KEY;
        r->c.type = EVP_PKEY_is_a(k, "EC") ? CU_KEY_EC : EVP_PKEY_is_a(k, "RSA") ? CU_KEY_RSA : CU_KEY_OTHER;
        r->c.bits = (unsigned)EVP_PKEY_get_bits(k);
    } else if (!strcmp(role, "keyring") && st.st_size == 32) {
        r->c.cls = CU_CLASS_SECRET_KEY; /* the software keyring: 32 raw bytes, an HMAC key */
        r->c.type = CU_KEY_HMAC;
        r->c.bits = 256;
    }
    EVP_PKEY_free(k);
    ERR_clear_error();
    if (f != NULL)
        fclose(f);
    r->flag_file = true;
    r->flag_extractable = true;
    rep->n++;
}

static const char *yn(int v)
{
    return v < 0 ? "unknown" : v ? "yes" : "no";
}

static void flags_text(const key_row *r, char *out, size_t size)
{
    snprintf(out, size, "%s%s%s%s", r->flag_file ? "not-in-token " : "", r->flag_soft ? "software-keystore " : "",
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

typedef struct counts {
    size_t flagged, soft, extr, imp, file;
} counts;

static void summary(const report *rep, counts *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < rep->n; i++) {
        c->flagged += flagged(&rep->rows[i]);
        c->soft += rep->rows[i].flag_soft;
        c->extr += rep->rows[i].flag_extractable;
        c->imp += rep->rows[i].flag_imported;
        c->file += rep->rows[i].flag_file;
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

/* Where a key is: its token directory, the URI its token was read
 * through, or its file. */
static const char *location(const key_row *r)
{
    return r->flag_file ? r->path : r->token_dir[0] ? r->token_dir : r->uri;
}

static void json_str_or_null(const char *v)
{
    if (v[0])
        cu_cli_json_str(stdout, v);
    else
        printf("null");
}

static void print_json(const report *rep)
{
    counts c;
    summary(rep, &c);
    printf("{\"summary\":{\"tokens\":%zu,\"keys\":%zu,\"flagged\":%zu,\"software_keystore\":%zu,"
           "\"ever_extractable\":%zu,\"imported\":%zu,\"not_in_token\":%zu,\"unreadable_tokens\":%zu,\"audit_log\":",
           rep->tokens, rep->n, c.flagged, c.soft, c.extr, c.imp, c.file, rep->n_errors);
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
        json_str_or_null(r->token_dir);
        printf(",\"uri\":");
        json_str_or_null(r->uri);
        printf(",\"path\":");
        json_str_or_null(r->path);
        printf("},\"class\":\"%s\",\"type\":\"%s\",\"bits\":%u,\"label\":", cu_class_str(r->c.cls),
               cu_key_type_str(r->c.type), r->c.bits);
        cu_cli_json_str(stdout, r->label);
        printf(",\"id\":\"%s\",\"role\":", r->id);
        json_str_or_null(r->role);
#define JB(name, v) printf(",\"" name "\":%s", (v) < 0 ? "null" : (v) ? "true" : "false")
        JB("sensitive", r->c.sensitive);
        JB("extractable", r->c.extractable);
        JB("always_sensitive", r->c.always_sensitive);
        JB("never_extractable", r->c.never_extractable);
        JB("local", r->c.local);
#undef JB
        printf(",\"certificates\":");
        cu_cli_json_str(stdout, r->certs);
        char f[80];
        flags_text(r, f, sizeof f);
        printf(",\"flags\":[");
        for (char *p = f, *sp; *p; p = sp ? sp + 1 : p + strlen(p)) {
            sp = strchr(p, ' ');
            printf("%s\"%.*s\"", p == f ? "" : ",", sp ? (int)(sp - p) : (int)strlen(p), p);
        }
        /* recorded false: "never recorded", or no log read (summary.audit_log null). */
        printf("],\"last_use\":{\"recorded\":%s", r->last.found ? "true" : "false");
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
    counts c;
    char when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    summary(rep, &c);
    /* The summary first, as comment lines a spreadsheet or `grep -v '^#'`
     * skips; the table's header follows. */
    printf("# Custos key custody report, %s\n"
           "# tokens: %zu, keys: %zu, flagged: %zu (software keystore %zu, ever extractable %zu, imported %zu, "
           "not in a token %zu), unreadable tokens: %zu\n",
           when, rep->tokens, rep->n, c.flagged, c.soft, c.extr, c.imp, c.file, rep->n_errors);
    if (cu_lastuse_have_log(rep->log))
        printf("# last use: from the audit log of %s: %zu of %zu key(s) have a recorded use\n", rep->state,
               with_use(rep), rep->n);
    else
        printf("# last use: not read (give --state DIR for its audit log)\n");
    /* New columns go at the end: scripts (tools/demo.sh) index the others. */
    printf("token_kind,token_label,manufacturer,model,serial,class,type,bits,label,id,sensitive,extractable,"
           "always_sensitive,never_extractable,local,certificates,flags,last_use_at,last_use,role,location\n");
    for (size_t i = 0; i < rep->n; i++) {
        const key_row *r = &rep->rows[i];
        char fl[80];
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
        putchar(',');
        csv_field(r->role);
        putchar(',');
        csv_field(location(r));
        putchar('\n');
    }
}

static void print_text(const report *rep)
{
    counts c;
    summary(rep, &c);
    printf("Key custody: %zu token(s), %zu key(s), %zu flagged (software keystore %zu, ever extractable %zu, "
           "imported %zu, not in a token %zu)%s\n\n",
           rep->tokens, rep->n, c.flagged, c.soft, c.extr, c.imp, c.file,
           rep->n_errors ? " -- some tokens could not be read" : "");
    if (cu_lastuse_have_log(rep->log))
        printf("Last use from the audit log of %s: %zu of %zu key(s) have a recorded use.\n\n", rep->state,
               with_use(rep), rep->n);
    else
        printf("Last use: not read (give --state DIR for its audit log).\n\n");
    printf("%-8s %-16s %-12s %-5s %5s %-20s %-4s %-4s %-5s %-5s %-5s %s\n", "KIND", "TOKEN", "CLASS", "TYPE",
           "BITS", "LABEL", "SENS", "EXTR", "ASENS", "NEXTR", "LOCAL", "FLAGS / CERTIFICATES");
    for (size_t i = 0; i < rep->n; i++) {
        const key_row *r = &rep->rows[i];
        char f[80];
        flags_text(r, f, sizeof f);
        printf("%-8s %-16s %-12s %-5s %5u %-20s %-4s %-4s %-5s %-5s %-5s %s%s\n", r->kind,
               r->flag_file ? "-" : r->tok.label, cu_class_str(r->c.cls), cu_key_type_str(r->c.type), r->c.bits,
               r->label, yn(r->c.sensitive), yn(r->c.extractable), yn(r->c.always_sensitive),
               yn(r->c.never_extractable), yn(r->c.local), f[0] ? "FLAGGED: " : "", f);
        if (r->role[0])
            printf("%-8s role: %s (custosd's config)\n", "", r->role);
        if (r->flag_file || !r->token_dir[0])
            printf("%-8s %s: %s\n", "", r->flag_file ? "file" : "uri", location(r));
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
    counts c;
    char when[64];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    summary(rep, &c);
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
           "<tr><td>not in a token (key files)</td><td>%zu</td></tr>"
           "<tr><td>tokens that could not be read</td><td>%zu</td></tr>",
           when, rep->tokens, rep->n, c.flagged, c.soft, c.extr, c.imp, c.file, rep->n_errors);
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
        char f[80];
        flags_text(r, f, sizeof f);
        printf("<tr%s><td>%s: ", flagged(r) ? " class=\"flag\"" : "", r->kind);
        if (r->flag_file) {
            printf("<span class=\"mono\">");
            html_text(r->path);
            printf("</span>");
        } else {
            html_text(r->tok.label);
            printf("<br><small>");
            html_text(r->tok.manufacturer);
            printf(" ");
            html_text(r->tok.model);
            printf(", serial ");
            html_text(r->tok.serial);
            printf("</small>");
        }
        printf("</td><td>%s %s-%u</td><td>", cu_class_str(r->c.cls), cu_key_type_str(r->c.type), r->c.bits);
        html_text(r->label);
        if (r->role[0]) {
            printf("<br><small>role: ");
            html_text(r->role);
            printf("</small>");
        }
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

/* A key custosd's config names: its role, and what names it (a pkcs11:
 * URI, a file, or a default file path). */
typedef struct cfg_key {
    const char *role;
    char spec[PATH_MAX];
    bool configured; /* named by the config, not custosd's default path */
} cfg_key;

static size_t config_keys(const cu_srv_config *cfg, const char *state, cfg_key *out)
{
    const char *env_kr = getenv("CUSTOS_KEYRING_URI");
    /* custosd's own rules (docs/custosd.md): the config, else (the keyring)
     * $CUSTOS_KEYRING_URI, else the file in the state directory. */
    struct {
        const char *role, *value, *file;
    } k[] = {
        {"server-key", cfg->server_key, "server.key"},
        {"keyring", cfg->keyring ? cfg->keyring : env_kr && !strncmp(env_kr, "pkcs11:", 7) ? env_kr : NULL,
         "keyring.key"},
        {"audit-key", cfg->audit_key, "audit.key"},
    };
    for (size_t i = 0; i < 3; i++) {
        out[i].role = k[i].role;
        out[i].configured = k[i].value != NULL;
        if (k[i].value != NULL)
            snprintf(out[i].spec, sizeof out[i].spec, "%s", k[i].value);
        else
            snprintf(out[i].spec, sizeof out[i].spec, "%s/%s", state, k[i].file);
    }
    return 3;
}

static void add_role(key_row *r, const char *role)
{
    size_t n = strlen(r->role);
    snprintf(r->role + n, sizeof r->role - n, "%s%s", n ? "," : "", role);
}

int cu_cmd_audit_custody(int argc, char **argv)
{
    const char *dirs[MAX_TOKENS], *uris[MAX_TOKENS], *state = NULL, *pin_source = NULL, *config = NULL;
    size_t n_dirs = 0, n_uris = 0;
    bool json = false, csv = false, html = false, help = false, have_cfg = false;
    cu_srv_config cfg;
    cu_cli_opt opts[] = {
        {"--dir", NULL, NULL, dirs, &n_dirs, MAX_TOKENS}, {"--state", &state, NULL, NULL, NULL, 0},
        {"--uri", NULL, NULL, uris, &n_uris, MAX_TOKENS}, {"--config", &config, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0}, {"--json", NULL, &json, NULL, NULL, 0},
        {"--csv", NULL, &csv, NULL, NULL, 0},            {"--html", NULL, &html, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},          {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("audit custody", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos audit custody [--state DIR] [--config FILE] [--dir TOKEN_DIR]... [--uri URI]...\n"
               "                            [--pin-source FILE] [--json|--csv|--html]\n\n"
               "For every key in every configured token (the token directories under\n"
               "STATE/tokens/, default ./var, unless --dir or --uri name the tokens; the\n"
               "tokens --uri names, e.g. an HSM's pkcs11:token=...?module-path=...; and with\n"
               "--config the tokens custosd's config names by its server-key, keyring and\n"
               "audit-key URIs): its token (kind, manufacturer, model, serial), class and\n"
               "type, label and id, sensitive, extractable, always-sensitive,\n"
               "never-extractable, local, and the certificates that name it. A key the\n"
               "config names shows its role (server-key, keyring, audit-key); those it\n"
               "keeps in files (STATE/server.key, audit.key, keyring.key by default) are\n"
               "listed as kind \"file\", flagged not-in-token. Keys in the software keystore,\n"
               "keys that were ever extractable and keys not generated on their token are\n"
               "flagged; a summary comes first.\n"
               "With --state (or --config: its state and store), each key's last use from\n"
               "that state's audit log: custosd's key.use records (per key and minute) and\n"
               "the token keygen/import records, matched by the pkcs11: URI they name the\n"
               "key with (a key file by its path); else \"never recorded\".\n"
               "--html writes one self-contained page. Exit status 1 if a token cannot be\n"
               "read or a key the config names is not found.\n");
        return CU_EXIT_OK;
    }
    if (json + csv + html > 1)
        return cu_cli_usage("audit custody", "choose one of --json, --csv, --html");
    for (size_t i = 0; i < n_uris; i++)
        if (strncmp(uris[i], "pkcs11:", 7) != 0)
            return cu_cli_usage("audit custody", "--uri %s: not a pkcs11: URI", uris[i]);
    char *owned[MAX_TOKENS];
    size_t n_owned = 0;
    char path[1024];
    cu_lastuse *log = NULL;
    report rep = {0};
    if (config != NULL) {
        cu_srv_config_init(&cfg);
        have_cfg = true;
        if (cu_srv_config_load(&cfg, config) != CU_OK) {
            rc = cu_cli_fail("%s", cu_err_last()->msg);
            goto out;
        }
        if (state == NULL)
            state = cfg.state_dir ? cfg.state_dir : "./var";
    }
    /* The log is read when the state is named: the last uses are its. */
    if (state != NULL && (rc = cu_lastuse_load_spec(state, have_cfg ? cfg.store : NULL,
                                                    have_cfg ? cfg.store_password_file : NULL, &log)) != CU_EXIT_OK)
        goto out;
    snprintf(path, sizeof path, "%s/tokens", state ? state : "./var");
    DIR *d = n_dirs == 0 && n_uris == 0 ? opendir(path) : NULL;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL && n_owned < MAX_TOKENS && n_dirs < MAX_TOKENS) {
        char conf[2048];
        struct stat st;
        snprintf(conf, sizeof conf, "%s/%s/%s", path, e->d_name, CU_FIXTURE_CONF);
        if (e->d_name[0] != '.' && stat(conf, &st) == 0 && asprintf(&owned[n_owned], "%s/%s", path, e->d_name) >= 0)
            dirs[n_dirs++] = owned[n_owned++];
    }
    if (d != NULL)
        closedir(d);
    cfg_key keys[3];
    size_t n_keys = have_cfg ? config_keys(&cfg, state, keys) : 0;
    if (n_dirs == 0 && n_uris == 0 && n_keys == 0) {
        rc = cu_cli_fail("no configured tokens: none under %s/tokens; give --dir TOKEN_DIR, --uri URI or --config "
                         "FILE",
                         state ? state : "./var");
        goto out;
    }
    int worst = CU_EXIT_OK;
    for (size_t i = 0; i < n_dirs; i++)
        if (collect_isolated(&rep, dirs[i], NULL, pin_source) != CU_EXIT_OK)
            worst = CU_EXIT_FAIL;
    /* The config's tokens, then --uri's; a token already read (a state's
     * token directory the config's URI names) is not opened again. */
    bool opened[3] = {true, true, true};
    for (size_t i = 0; i < n_keys + n_uris; i++) {
        const char *uri = i < n_keys ? keys[i].spec : uris[i - n_keys];
        if (strncmp(uri, "pkcs11:", 7) != 0)
            continue;
        bool known = false;
        for (size_t t = 0; t < rep.tokens && t < MAX_TOKENS && !known; t++)
            known = cu_lastuse_uri_names_token(uri, &rep.descs[t]);
        size_t errs = rep.n_errors;
        if (!known && collect_isolated(&rep, NULL, uri, pin_source) != CU_EXIT_OK)
            worst = CU_EXIT_FAIL;
        if (i < n_keys)
            opened[i] = rep.n_errors == errs;
    }
    for (size_t i = 0; i < n_keys; i++) {
        if (strncmp(keys[i].spec, "pkcs11:", 7) != 0) {
            size_t errs = rep.n_errors;
            collect_file(&rep, keys[i].role, keys[i].spec, keys[i].configured);
            if (rep.n_errors != errs)
                worst = CU_EXIT_FAIL;
            continue;
        }
        size_t named = 0;
        for (size_t k = 0; k < rep.n; k++) {
            key_row *r = &rep.rows[k];
            if (!r->flag_file && cu_lastuse_uri_names_key(keys[i].spec, &r->tok, r->label, r->id, r->c.cls)) {
                add_role(r, keys[i].role);
                named++;
            }
        }
        /* A key the service is configured with and no token holds is what
         * the report must not pass over (its token unreadable is said once). */
        if (named == 0 && opened[i]) {
            char shown[512];
            uri_shown(keys[i].spec, shown, sizeof shown);
            add_error(&rep, "%s %s: no such key in the tokens read", keys[i].role, shown);
            worst = CU_EXIT_FAIL;
        }
    }
    rep.log = log;
    rep.state = state;
    for (size_t i = 0; i < rep.n; i++) {
        key_row *r = &rep.rows[i];
        if (r->flag_file)
            cu_lastuse_find_file(log, r->path, &r->last);
        else
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
    rc = worst;
out:
    free(rep.rows);
    for (size_t i = 0; i < n_owned; i++)
        free(owned[i]);
    cu_lastuse_free(log);
    if (have_cfg)
        cu_srv_config_clear(&cfg);
    return rc;
}
