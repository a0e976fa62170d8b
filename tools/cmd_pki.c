/* custos pki …: test certificate chains, EC P-256 keys in files or in a
 * token (pki_keys.c). */
#include "cli.h"
#include "pki_keys.h"

#include <custos/pki.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fputs("usage: custos pki <command> [options] [KEYS]\n\n"
          "commands:\n"
          "  chain --out DIR [--factories N] [--lines N] [--devices N] [--prefix P] [--days D]\n"
          "        root -> factory-F -> factory-F-line-L -> P<n> device certificates; for each\n"
          "        device DIR/P<n>.pem, its key and -chain.pem (leaf + line + factory, what it sends)\n"
          "  seed --out DIR\n"
          "        the seed example: root -> A -> device-1..3, root -> B -> device-4..5\n"
          "  issue --cn CN --out PREFIX [--issuer-cert F --issuer-key KEY] [--ca] [--days D] [--label L]\n"
          "        one certificate (PREFIX.pem and its key); --issuer-* omitted: self-signed\n"
          "  verification-cert --ca-cert F --ca-key KEY --code CODE --out FILE\n"
          "        the proof of possession for `custos ca verify`\n\n"
          "KEYS: where new keys are made (default: PEM files, 0600, next to their certificates):\n"
          "  --token-dir DIR | --token URI   every new key is generated in this token (sensitive,\n"
          "        never extractable), labelled with its certificate's name (root, factory-1,\n"
          "        factory-1-line-1, device-1, ...; issue: --label or PREFIX's file name), and\n"
          "        its certificate stored beside it; PREFIX.uri holds the key's pkcs11: URI and\n"
          "        CA keys sign inside the token through the custos OpenSSL provider\n"
          "  --label-prefix P   put P before every label (several chains in one token)\n"
          "  --pin-source FILE  the token's user PIN (else CUSTOS_PIN, the URI, or a prompt)\n"
          "--json: print {\"out\":…,\"keys\":[{\"label\":…,\"uri\":…}]} (files: name, file) instead of text.\n"
          "--issuer-key / --ca-key take a PEM file or a pkcs11: URI (a CA key in a token).\n"
          "A command that fails leaves nothing behind: no file, no token object.\n",
          f);
}

typedef struct node {
    X509 *cert;
    EVP_PKEY *key; /* owned by the run (cu_pki_keys) */
} node;

static void node_done(cu_pki_keys *k, node *n)
{
    X509_free(n->cert);
    if (n->key != NULL)
        cu_pki_keys_release(k, n->key);
    memset(n, 0, sizeof *n);
}

/* Makes the certificate name (DIR/NAME.pem and its key). */
static int make(cu_pki_keys *k, node *out, const char *dir, const char *name, const char *cn, bool ca,
                const node *issuer, long days)
{
    char path[4096];
    int rc;
    memset(out, 0, sizeof *out);
    cu_pki_spec s = {.cn = cn, .org = "Custos test PKI", .ca = ca, .pathlen = -1, .not_before = -3600,
                     .not_after = days * 86400L, .client_auth = !ca};
    if ((rc = cu_pki_keys_generate(k, name, &out->key)) != CU_EXIT_OK)
        return rc;
    if (cu_pki_issue(&s, out->key, issuer ? issuer->cert : NULL, issuer ? issuer->key : out->key, &out->cert) !=
        CU_OK)
        return cu_cli_fail("%s: %s", name, cu_err_last()->msg);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return cu_pki_keys_save(k, path, out->cert, out->key);
}

static int write_chain(cu_pki_keys *k, const char *dir, const char *name, const node *leaf, const node *a,
                       const node *b)
{
    char path[4096];
    int rc;
    snprintf(path, sizeof path, "%s/%s-chain.pem", dir, name);
    if ((rc = cu_pki_keys_write_cert(k, path, leaf->cert, false)) == CU_EXIT_OK && a != NULL)
        rc = cu_pki_keys_write_cert(k, path, a->cert, true);
    if (rc == CU_EXIT_OK && b != NULL)
        rc = cu_pki_keys_write_cert(k, path, b->cert, true);
    return rc;
}

/* Every label the chain will use must be free before the first key is made. */
static int chain_check(cu_pki_keys *k, long factories, long lines, long devices, const char *prefix)
{
    char name[256];
    int rc = cu_pki_keys_check(k, "root");
    long n = 0;
    for (long fi = 1; fi <= factories && rc == 0; fi++) {
        snprintf(name, sizeof name, "factory-%ld", fi);
        rc = cu_pki_keys_check(k, name);
        for (long li = 1; li <= lines && rc == 0; li++) {
            snprintf(name, sizeof name, "factory-%ld-line-%ld", fi, li);
            rc = cu_pki_keys_check(k, name);
            for (long di = 1; di <= devices && rc == 0; di++) {
                snprintf(name, sizeof name, "%s%ld", prefix, ++n);
                rc = cu_pki_keys_check(k, name);
            }
        }
    }
    return rc;
}

static int cmd_chain(cu_pki_keys *k, const char *dir, long factories, long lines, long devices, const char *prefix,
                     long days, bool quiet)
{
    node root = {0}, f = {0}, l = {0}, d = {0};
    int rc;
    long n = 0;
    char name[256], cn[256];
    if ((rc = chain_check(k, factories, lines, devices, prefix)) != 0 || (rc = cu_pki_keys_mkdir(k, dir)) != 0 ||
        (rc = make(k, &root, dir, "root", "Custos Test Root CA", true, NULL, days * 10)) != 0)
        goto out;
    for (long fi = 1; fi <= factories && rc == 0; fi++) {
        snprintf(name, sizeof name, "factory-%ld", fi);
        snprintf(cn, sizeof cn, "Custos Test Factory %ld", fi);
        if ((rc = make(k, &f, dir, name, cn, true, &root, days * 5)) != 0)
            break;
        for (long li = 1; li <= lines && rc == 0; li++) {
            snprintf(name, sizeof name, "factory-%ld-line-%ld", fi, li);
            snprintf(cn, sizeof cn, "Custos Test Factory %ld Line %ld", fi, li);
            if ((rc = make(k, &l, dir, name, cn, true, &f, days * 2)) != 0)
                break;
            for (long di = 1; di <= devices && rc == 0; di++) {
                snprintf(name, sizeof name, "%s%ld", prefix, ++n);
                if ((rc = make(k, &d, dir, name, name, false, &l, days)) == 0)
                    rc = write_chain(k, dir, name, &d, &l, &f);
                node_done(k, &d);
            }
            node_done(k, &l);
        }
        node_done(k, &f);
    }
out:
    node_done(k, &d);
    node_done(k, &l);
    node_done(k, &f);
    node_done(k, &root);
    if (rc == 0 && !quiet)
        printf("wrote root, %ld factories x %ld lines, %ld devices to %s\n", factories, lines, n, dir);
    return rc;
}

static int cmd_seed(cu_pki_keys *k, const char *dir, bool quiet)
{
    static const char *const names[] = {"root", "cert-a", "cert-b", "device-1", "device-2",
                                        "device-3", "device-4", "device-5"};
    node root = {0}, a = {0}, b = {0}, d = {0};
    int rc = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names && rc == 0; i++)
        rc = cu_pki_keys_check(k, names[i]);
    if (rc != 0 || (rc = cu_pki_keys_mkdir(k, dir)) != 0 ||
        (rc = make(k, &root, dir, "root", "Seed Root", true, NULL, 3650)) != 0)
        goto out;
    if ((rc = make(k, &a, dir, "cert-a", "Certificate A", true, &root, 1825)) == 0 &&
        (rc = make(k, &b, dir, "cert-b", "Certificate B", true, &root, 1825)) == 0) {
        for (int i = 1; i <= 5 && rc == 0; i++) {
            char name[32];
            snprintf(name, sizeof name, "device-%d", i);
            if ((rc = make(k, &d, dir, name, name, false, i <= 3 ? &a : &b, 365)) == 0)
                rc = write_chain(k, dir, name, &d, i <= 3 ? &a : &b, NULL);
            node_done(k, &d);
        }
    }
out:
    node_done(k, &d);
    node_done(k, &a);
    node_done(k, &b);
    node_done(k, &root);
    if (rc == 0 && !quiet)
        printf("wrote root -> cert-a -> device-1..3, root -> cert-b -> device-4..5 to %s\n", dir);
    return rc;
}

typedef struct issue_args {
    const char *out, *cn, *icert, *ikey, *label;
    bool ca, proof;
    long days;
} issue_args;

static int cmd_issue(cu_pki_keys *k, const issue_args *a)
{
    X509 *icert = NULL, *cert = NULL;
    EVP_PKEY *ikey = NULL, *key = NULL;
    int rc = CU_EXIT_OK;
    if (a->icert != NULL && cu_pki_read_cert(a->icert, &icert) != CU_OK) {
        rc = cu_cli_fail("issuer: %s", cu_err_last()->msg);
        goto out;
    }
    if (a->ikey != NULL && (rc = cu_pki_keys_load(k, a->ikey, &ikey)) != CU_EXIT_OK)
        goto out;
    cu_pki_spec s = {.cn = a->cn, .ca = a->ca && !a->proof, .pathlen = -1, .not_before = -3600,
                     .not_after = a->days * 86400L, .client_auth = !a->ca && !a->proof};
    if (a->proof) {
        /* The proof's own key is thrown away: only the CA's signature counts. */
        if (cu_pki_keygen(&key) != CU_OK || cu_pki_issue(&s, key, icert, ikey, &cert) != CU_OK)
            rc = cu_cli_fail("%s", cu_err_last()->msg);
        else
            rc = cu_pki_keys_write_cert(k, a->out, cert, false);
        EVP_PKEY_free(key);
        goto out;
    }
    const char *base = strrchr(a->out, '/');
    const char *name = a->label ? a->label : base ? base + 1 : a->out;
    if ((rc = cu_pki_keys_check(k, name)) != CU_EXIT_OK || (rc = cu_pki_keys_generate(k, name, &key)) != CU_EXIT_OK)
        goto out;
    if (cu_pki_issue(&s, key, icert, ikey ? ikey : key, &cert) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto out;
    }
    rc = cu_pki_keys_save(k, a->out, cert, key);
out:
    X509_free(icert);
    X509_free(cert);
    EVP_PKEY_free(ikey);
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
        {"token", required_argument, NULL, 'T'},       {"token-dir", required_argument, NULL, 'R'},
        {"pin-source", required_argument, NULL, 'P'},  {"label-prefix", required_argument, NULL, 'x'},
        {"label", required_argument, NULL, 'L'},       {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL, *prefix = "device-", *icert = NULL, *ikey = NULL, *cn = NULL;
    const char *token = NULL, *token_dir = NULL, *pin_source = NULL, *label_prefix = NULL, *label = NULL;
    long factories = 1, lines = 1, devices = 3, days = 365;
    bool ca = false, json = false;
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
        case 'T': token = optarg; break;
        case 'R': token_dir = optarg; break;
        case 'P': pin_source = optarg; break;
        case 'x': label_prefix = optarg; break;
        case 'L': label = optarg; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return CU_EXIT_OK;
        default: return cu_cli_usage("pki", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cu_cli_usage("pki", "unexpected argument '%s'", argv[optind]);
    bool chain = strcmp(cmd, "chain") == 0, seed = strcmp(cmd, "seed") == 0;
    bool issue = strcmp(cmd, "issue") == 0, proof = strcmp(cmd, "verification-cert") == 0;
    if (!chain && !seed && !issue && !proof)
        return cu_cli_usage("pki", "unknown command '%s'", cmd);
    if (out == NULL)
        return cu_cli_usage("pki", "%s needs --out", cmd);
    if (factories < 1 || factories > 100 || lines < 1 || lines > 100 || devices < 0 || devices > 100000 ||
        days < 1 || days > 36500)
        return cu_cli_usage("pki", "counts or --days out of range");
    if ((issue || proof) && cn == NULL)
        return cu_cli_usage("pki", "%s needs %s", cmd, issue ? "--cn" : "--code");
    if (proof && (icert == NULL || ikey == NULL))
        return cu_cli_usage("pki", "verification-cert needs --ca-cert and --ca-key");
    if (issue && (icert == NULL) != (ikey == NULL))
        return cu_cli_usage("pki", "issue needs both --issuer-cert and --issuer-key, or neither");
    if (label != NULL && !issue)
        return cu_cli_usage("pki", "--label is for issue (chain and seed label keys by certificate name)");
    if ((label != NULL || label_prefix != NULL) && token == NULL && token_dir == NULL)
        return cu_cli_usage("pki", "--label and --label-prefix need --token or --token-dir");
    cu_pki_keys *k = NULL;
    /* verification-cert makes no key to keep: a token only serves --ca-key. */
    if ((rc = cu_pki_keys_open(token, token_dir, pin_source, label_prefix, &k)) != CU_EXIT_OK)
        return rc;
    if (chain)
        rc = cmd_chain(k, out, factories, lines, devices, prefix, days, json);
    else if (seed)
        rc = cmd_seed(k, out, json);
    else
        rc = cmd_issue(k, &(issue_args){.out = out, .cn = cn, .icert = icert, .ikey = ikey, .label = label,
                                        .ca = ca, .proof = proof, .days = days});
    if (rc != CU_EXIT_OK) {
        cu_pki_keys_abort(k);
    } else if (json) {
        printf("{\"out\":");
        cu_cli_json_str(stdout, out);
        printf(",\"keysIn\":\"%s\",\"keys\":", cu_pki_keys_in_token(k) ? "token" : "files");
        cu_pki_keys_print_json(k, stdout);
        printf("}\n");
    } else if (cu_pki_keys_in_token(k) && !proof) {
        printf("keys in the token (label, pkcs11: URI; also in each certificate's .uri file):\n");
        cu_pki_keys_print(k, stdout);
    }
    cu_pki_keys_free(k);
    return rc;
}
