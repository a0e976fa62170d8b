/* custos pki …: test certificate chains (keys in files, EC P-256). */
#include "cli.h"

#include <custos/pki.h>

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    fputs("usage: custos pki <command> [options]\n\n"
          "commands:\n"
          "  chain --out DIR [--factories N] [--lines N] [--devices N] [--prefix P] [--days D]\n"
          "        root -> factory-F -> factory-F-line-L -> P<n> device certificates; for each\n"
          "        device DIR/P<n>.pem, .key and -chain.pem (leaf + line + factory, what it sends)\n"
          "  seed --out DIR\n"
          "        the seed example: root -> A -> device-1..3, root -> B -> device-4..5\n"
          "  issue --issuer-cert F --issuer-key F --cn CN --out PREFIX [--ca] [--days D]\n"
          "        one certificate (PREFIX.pem, PREFIX.key); --issuer-* omitted: self-signed\n"
          "  verification-cert --ca-cert F --ca-key F --code CODE --out FILE\n"
          "        the proof of possession for `custos ca verify`\n"
          "Keys are written 0600 next to their certificates.\n",
          f);
}

typedef struct node {
    X509 *cert;
    EVP_PKEY *key;
} node;

static void node_free(node *n)
{
    X509_free(n->cert);
    EVP_PKEY_free(n->key);
    memset(n, 0, sizeof *n);
}

/* Makes and writes DIR/NAME.pem + .key. */
static int make(node *out, const char *dir, const char *name, const char *cn, bool ca, const node *issuer,
                long days)
{
    char path[4096];
    memset(out, 0, sizeof *out);
    cu_pki_spec s = {.cn = cn, .org = "Custos test PKI", .ca = ca, .pathlen = -1, .not_before = -3600,
                     .not_after = days * 86400L, .client_auth = !ca};
    if (cu_pki_keygen(&out->key) != CU_OK ||
        cu_pki_issue(&s, out->key, issuer ? issuer->cert : NULL, issuer ? issuer->key : out->key, &out->cert) != CU_OK)
        return cu_cli_fail("%s: %s", name, cu_err_last()->msg);
    snprintf(path, sizeof path, "%s/%s.pem", dir, name);
    if (cu_pki_write_cert(path, out->cert, false) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    if (cu_pki_write_key(path, out->key) != CU_OK)
        return cu_cli_fail("%s", cu_err_last()->msg);
    return CU_EXIT_OK;
}

static int write_chain(const char *dir, const char *name, const node *leaf, const node *a, const node *b)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-chain.pem", dir, name);
    if (cu_pki_write_cert(path, leaf->cert, false) != CU_OK || (a && cu_pki_write_cert(path, a->cert, true) != CU_OK) ||
        (b && cu_pki_write_cert(path, b->cert, true) != CU_OK))
        return cu_cli_fail("%s", cu_err_last()->msg);
    return CU_EXIT_OK;
}

static int mkdir_p(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return cu_cli_fail("cannot create %s: %s", dir, strerror(errno));
    return CU_EXIT_OK;
}

static int cmd_chain(const char *dir, long factories, long lines, long devices, const char *prefix, long days)
{
    node root, f, l, d;
    int rc;
    long n = 0;
    char name[256], cn[256];
    if ((rc = mkdir_p(dir)) != 0 || (rc = make(&root, dir, "root", "Custos Test Root CA", true, NULL, days * 10)) != 0)
        return rc;
    for (long fi = 1; fi <= factories && rc == 0; fi++) {
        snprintf(name, sizeof name, "factory-%ld", fi);
        snprintf(cn, sizeof cn, "Custos Test Factory %ld", fi);
        if ((rc = make(&f, dir, name, cn, true, &root, days * 5)) != 0)
            break;
        for (long li = 1; li <= lines && rc == 0; li++) {
            snprintf(name, sizeof name, "factory-%ld-line-%ld", fi, li);
            snprintf(cn, sizeof cn, "Custos Test Factory %ld Line %ld", fi, li);
            if ((rc = make(&l, dir, name, cn, true, &f, days * 2)) != 0)
                break;
            for (long di = 1; di <= devices && rc == 0; di++) {
                snprintf(name, sizeof name, "%s%ld", prefix, ++n);
                if ((rc = make(&d, dir, name, name, false, &l, days)) == 0)
                    rc = write_chain(dir, name, &d, &l, &f);
                node_free(&d);
            }
            node_free(&l);
        }
        node_free(&f);
    }
    node_free(&root);
    if (rc == 0)
        printf("wrote root, %ld factories x %ld lines, %ld devices to %s\n", factories, lines, n, dir);
    return rc;
}

static int cmd_seed(const char *dir)
{
    node root, a, b, d;
    int rc;
    if ((rc = mkdir_p(dir)) != 0 || (rc = make(&root, dir, "root", "Seed Root", true, NULL, 3650)) != 0)
        return rc;
    if ((rc = make(&a, dir, "cert-a", "Certificate A", true, &root, 1825)) == 0 &&
        (rc = make(&b, dir, "cert-b", "Certificate B", true, &root, 1825)) == 0) {
        for (int i = 1; i <= 5 && rc == 0; i++) {
            char name[32];
            snprintf(name, sizeof name, "device-%d", i);
            if ((rc = make(&d, dir, name, name, false, i <= 3 ? &a : &b, 365)) == 0)
                rc = write_chain(dir, name, &d, i <= 3 ? &a : &b, NULL);
            node_free(&d);
        }
    }
    node_free(&a);
    node_free(&b);
    node_free(&root);
    if (rc == 0)
        printf("wrote root -> cert-a -> device-1..3, root -> cert-b -> device-4..5 to %s\n", dir);
    return rc;
}

int cu_cmd_pki(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'},         {"factories", required_argument, NULL, 'f'},
        {"lines", required_argument, NULL, 'l'},       {"devices", required_argument, NULL, 'd'},
        {"prefix", required_argument, NULL, 'p'},      {"days", required_argument, NULL, 'D'},
        {"issuer-cert", required_argument, NULL, 'C'}, {"issuer-key", required_argument, NULL, 'K'},
        {"ca-cert", required_argument, NULL, 'C'},     {"ca-key", required_argument, NULL, 'K'},
        {"cn", required_argument, NULL, 'n'},          {"code", required_argument, NULL, 'n'},
        {"ca", no_argument, NULL, 'a'},                {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL, *prefix = "device-", *icert = NULL, *ikey = NULL, *cn = NULL;
    long factories = 1, lines = 1, devices = 3, days = 365;
    bool ca = false;
    int c, rc = CU_EXIT_OK;
    if (argc < 2 || cu_cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CU_EXIT_USAGE : CU_EXIT_OK;
    }
    const char *cmd = argv[1];
    argc--;
    argv++;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'f': factories = strtol(optarg, NULL, 10); break;
        case 'l': lines = strtol(optarg, NULL, 10); break;
        case 'd': devices = strtol(optarg, NULL, 10); break;
        case 'p': prefix = optarg; break;
        case 'D': days = strtol(optarg, NULL, 10); break;
        case 'C': icert = optarg; break;
        case 'K': ikey = optarg; break;
        case 'n': cn = optarg; break;
        case 'a': ca = true; break;
        case 'h': usage(stdout); return CU_EXIT_OK;
        default: return cu_cli_usage("pki", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (out == NULL)
        return cu_cli_usage("pki", "%s needs --out", cmd);
    if (factories < 1 || factories > 100 || lines < 1 || lines > 100 || devices < 0 || devices > 100000 ||
        days < 1 || days > 36500)
        return cu_cli_usage("pki", "counts or --days out of range");
    if (strcmp(cmd, "chain") == 0)
        return cmd_chain(out, factories, lines, devices, prefix, days);
    if (strcmp(cmd, "seed") == 0)
        return cmd_seed(out);
    if (strcmp(cmd, "issue") != 0 && strcmp(cmd, "verification-cert") != 0)
        return cu_cli_usage("pki", "unknown command '%s'", cmd);
    if (cn == NULL)
        return cu_cli_usage("pki", "%s needs %s", cmd, strcmp(cmd, "issue") == 0 ? "--cn" : "--code");
    bool proof = strcmp(cmd, "verification-cert") == 0;
    if (proof && (icert == NULL || ikey == NULL))
        return cu_cli_usage("pki", "verification-cert needs --ca-cert and --ca-key");
    node issuer = {NULL, NULL}, leaf = {NULL, NULL};
    char path[4096];
    if (icert != NULL && (cu_pki_read_cert(icert, &issuer.cert) != CU_OK || (ikey == NULL) ||
                          cu_pki_read_key(ikey, &issuer.key) != CU_OK)) {
        rc = cu_cli_fail("issuer: %s", ikey == NULL ? "--issuer-key missing" : cu_err_last()->msg);
        goto cleanup;
    }
    cu_pki_spec s = {.cn = cn, .ca = ca && !proof, .pathlen = -1, .not_before = -3600,
                     .not_after = days * 86400L, .client_auth = !ca && !proof};
    if (cu_pki_keygen(&leaf.key) != CU_OK ||
        cu_pki_issue(&s, leaf.key, issuer.cert, issuer.key ? issuer.key : leaf.key, &leaf.cert) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    if (proof) {
        if (cu_pki_write_cert(out, leaf.cert, false) != CU_OK)
            rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    snprintf(path, sizeof path, "%s.pem", out);
    if (cu_pki_write_cert(path, leaf.cert, false) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    snprintf(path, sizeof path, "%s.key", out);
    if (cu_pki_write_key(path, leaf.key) != CU_OK)
        rc = cu_cli_fail("%s", cu_err_last()->msg);
cleanup:
    node_free(&issuer);
    node_free(&leaf);
    return rc;
}
