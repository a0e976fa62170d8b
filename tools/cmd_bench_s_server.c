/* custos bench s_server: the server CPU per full TLS 1.3 handshake as a real
 * server application spends it: `openssl s_server` processes, one per way
 * of holding the key, driven in turns by `openssl s_time -new`.
 *
 * `custos bench tls` times the handshake alone, in process; this one counts
 * everything the server process does for a connection (accept, the socket
 * I/O, s_server's own chain building, the session tickets it sends by
 * default), so the ratios are those an operator of such a server sees. The
 * server's CPU (all its threads', from /proc/PID/task/N/schedstat, in
 * nanoseconds) is read before and after each of its turns; the client's
 * work is not counted. */
#include "bench_prov.h"
#include "cli.h"
#include "token_util.h"

#include <custos/token.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/pem.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int cu_bench_s_server(int argc, char **argv);

/* file: the software key (custos loaded as well, so that only the key
 * differs); provider: the token key through custos; other: through another
 * provider; engine: through the libp11 engine ("pkcs11"), as older
 * deployments do. */
enum { K_FILE, K_PROV, K_OTHER, K_ENGINE, K__N };
static const char *k_names[K__N] = {"file", "provider", "other-provider", "engine-pkcs11"};

/* Ctrl-C or a TERM ends the run between turns, through the clean-up (the
 * servers stopped, the temporary files removed: the engine's PIN among
 * them). */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
}

typedef struct server {
    pid_t pid;
    int port;
    unsigned long handshakes;
    double cpu, wall; /* seconds, over its turns */
} server;

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static bool port_open(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* CPU seconds the process has run: the sum over its threads' schedstat
 * (nanoseconds), so that a provider or engine doing its work on a thread
 * of its own would not hide it; else from stat in clock ticks. */
static double proc_cpu(pid_t pid)
{
    char path[300];
    unsigned long long sum = 0;
    unsigned long ut = 0, st = 0;
    int tasks = 0;
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    for (struct dirent *e; dir != NULL && (e = readdir(dir)) != NULL;) {
        unsigned long long ns = 0;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.32s/schedstat", (int)pid, e->d_name);
        FILE *f = fopen(path, "r");
        int n = f != NULL ? fscanf(f, "%llu", &ns) : 0;
        if (f != NULL)
            fclose(f);
        if (n == 1) {
            sum += ns;
            tasks++;
        }
    }
    if (dir != NULL)
        closedir(dir);
    if (tasks > 0)
        return (double)sum / 1e9;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    /* pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    int n = fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    fclose(f);
    return n == 2 ? (double)(ut + st) / (double)sysconf(_SC_CLK_TCK) : -1;
}

/* A new file only its owner can read (a key, a PIN). */
static FILE *create_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL && fd >= 0)
        close(fd);
    return f;
}

static bool write_pem(const char *path, EVP_PKEY *key, X509 *cert)
{
    FILE *f = create_private(path);
    if (f == NULL)
        return false;
    bool ok = key != NULL ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1
                          : PEM_write_X509(f, cert) == 1;
    return fclose(f) == 0 && ok;
}

/* Removes the run's private directory and every file in it. */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    if (d != NULL)
        closedir(d);
    rmdir(dir);
}

/* Starts argv with stdin from /dev/null, stdout and stderr to log (and
 * OPENSSL_CONF=conf when conf is given). */
static pid_t spawn(char *const argv[], const char *log, const char *conf)
{
    posix_spawn_file_actions_t fa;
    pid_t pid = -1;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    /* The child's environment is this one with OPENSSL_CONF set (and put
     * back as it was afterwards). */
    const char *prev = getenv("OPENSSL_CONF");
    char *saved = prev != NULL ? strdup(prev) : NULL;
    if (conf != NULL)
        setenv("OPENSSL_CONF", conf, 1);
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0)
        pid = -1;
    if (conf != NULL) {
        if (saved != NULL)
            setenv("OPENSSL_CONF", saved, 1);
        else
            unsetenv("OPENSSL_CONF");
    }
    free(saved);
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

/* The last line of a server's log, for an error message. */
static void last_line(const char *log, char *buf, size_t len)
{
    FILE *f = fopen(log, "r");
    char line[512];
    snprintf(buf, len, "(no output)");
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (line[0] != '\n') {
            line[strcspn(line, "\n")] = '\0';
            snprintf(buf, len, "%s", line);
        }
    if (f != NULL)
        fclose(f);
}

static bool await_server(server *s, const char *log, char *err, size_t errlen)
{
    for (int i = 0; i < 300; i++) { /* 15 s: a token login can be slow */
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            char line[512];
            last_line(log, line, sizeof line);
            snprintf(err, errlen, "openssl s_server exited: %s", line);
            s->pid = -1;
            return false;
        }
        if (port_open(s->port))
            return true;
        if (interrupted) {
            snprintf(err, errlen, "interrupted (signal %d)", (int)interrupted);
            return false;
        }
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    snprintf(err, errlen, "openssl s_server did not listen on port %d in 15 s", s->port);
    return false;
}

/* One turn: `openssl s_time -new` against the server for secs seconds;
 * the server's CPU over it and the handshakes s_time counted. */
static bool turn(const char *openssl, server *s, int secs, char *err, size_t errlen)
{
    char connect[32], time_s[16];
    snprintf(connect, sizeof connect, "127.0.0.1:%d", s->port);
    snprintf(time_s, sizeof time_s, "%d", secs);
    char *argv[] = {(char *)openssl, "s_time", "-connect", connect, "-new", "-tls1_3", "-time", time_s, NULL};
    int out[2];
    if (pipe(out) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return false;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    double c0 = proc_cpu(s->pid), w0 = cu_bench_clock(CLOCK_MONOTONIC);
    pid_t pid;
    int sp = posix_spawnp(&pid, openssl, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    unsigned long n = 0;
    bool counted = false;
    if (sp == 0) {
        FILE *f = fdopen(out[0], "r");
        char line[256];
        while (f != NULL && fgets(line, sizeof line, f) != NULL)
            if (!counted && strstr(line, " connections in ") != NULL)
                counted = sscanf(line, "%lu", &n) == 1;
        if (f != NULL)
            fclose(f);
        else
            close(out[0]);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
    } else {
        close(out[0]);
    }
    double c1 = proc_cpu(s->pid);
    if (sp != 0 || !counted || n == 0) {
        snprintf(err, errlen, sp != 0 ? "cannot run %s s_time" : "%s s_time made no connection", openssl);
        return false;
    }
    if (c0 < 0 || c1 < 0) {
        snprintf(err, errlen, "cannot read the server's CPU time from /proc");
        return false;
    }
    s->wall += cu_bench_clock(CLOCK_MONOTONIC) - w0;
    s->cpu += c1 - c0;
    s->handshakes += n;
    return true;
}

int cu_bench_s_server(int argc, char **argv)
{
    const char *uri = NULL, *dir = NULL, *pin_source = NULL, *secs = "5", *prov_path = NULL, *other = NULL,
               *openssl = "openssl";
    bool json = false, help = false, engine = false;
    cu_cli_opt opts[] = {
        {"--uri", &uri, NULL, NULL, NULL, 0},
        {"--dir", &dir, NULL, NULL, NULL, 0},
        {"--pin-source", &pin_source, NULL, NULL, NULL, 0},
        {"--seconds", &secs, NULL, NULL, NULL, 0},
        {"--provider-path", &prov_path, NULL, NULL, NULL, 0},
        {"--other-provider", &other, NULL, NULL, NULL, 0},
        {"--engine-pkcs11", NULL, &engine, NULL, NULL, 0},
        {"--openssl", &openssl, NULL, NULL, NULL, 0},
        {"--json", NULL, &json, NULL, NULL, 0},
        {"--help", NULL, &help, NULL, NULL, 0},
        {NULL, NULL, NULL, NULL, NULL, 0},
    };
    int rc = cu_cli_parse("bench s_server", argc, argv, opts, NULL, 0, NULL);
    if (rc != CU_EXIT_OK)
        return rc;
    if (help) {
        printf("usage: custos bench s_server --uri URI [--dir TOKEN_DIR] [--pin-source FILE] [--seconds S]\n"
               "                             [--provider-path DIR] [--other-provider MODULE.so]\n"
               "                             [--engine-pkcs11] [--openssl PATH] [--json]\n\n"
               "Server CPU per full TLS 1.3 handshake of real `openssl s_server` processes,\n"
               "driven by `openssl s_time -new` on loopback: one server with the key in a\n"
               "file (a software key of the same type; custos loaded too), one with the key\n"
               "the URI names through the provider custos, and, if asked, one through\n"
               "another provider and one through the libp11 engine (`-engine pkcs11`, its\n"
               "PIN in a private openssl.cnf). Each server's CPU is read from /proc around\n"
               "its turns of 1 s, S turns each; the client's work does not count.\n");
        return CU_EXIT_OK;
    }
    int seconds = atoi(secs);
    if (seconds < 1 || seconds > 600)
        return cu_cli_usage("bench s_server", "--seconds 1..600");
    if (uri == NULL)
        return cu_cli_usage("bench s_server", "--uri URI is required");

    cu_tok_target t;
    if ((rc = cu_tok_target_open(dir, uri, pin_source, true, &t)) != CU_EXIT_OK)
        return rc;
    cu_object *key = NULL;
    char *key_uri = NULL;
    OSSL_LIB_CTX *lib = NULL;
    EVP_PKEY *file_key = NULL, *tok_key = NULL;
    X509 *file_cert = NULL, *tok_cert = NULL;
    server srv[K__N];
    char tmp[4000], file_pem[2][4100], tok_crt[4100], logs[K__N][4100], conf[4100] = "", err[700];
    char dirbuf[4200], module[4300], pdir_s[4200];
    for (int i = 0; i < K__N; i++)
        srv[i] = (server){.pid = -1};
    const char *tmpdir = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/custos-bench-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    if (mkdtemp(tmp) == NULL) {
        rc = cu_cli_fail("mkdtemp: %s", strerror(errno));
        goto out_tok;
    }
    if ((rc = cu_bench_tls_keys(t.tok, uri, &key, &key_uri, &file_key)) != CU_EXIT_OK)
        goto out;
    cu_key_type kt = cu_object_key_type(key);
    unsigned bits = cu_object_bits(key);
    const char *pdir = prov_path ? prov_path : cu_bench_provider_dir(dirbuf, sizeof dirbuf);
    snprintf(pdir_s, sizeof pdir_s, "%s", pdir ? pdir : ".");
    snprintf(module, sizeof module, "%s/custos.so", pdir_s);
    /* The provider in s_server takes the PIN from the environment. */
    if (t.pin != NULL)
        setenv("CUSTOS_PIN", t.pin, 1);
    if ((lib = cu_bench_provider_lib(module, err, sizeof err)) == NULL ||
        (tok_key = cu_bench_provider_key(lib, key_uri, t.pin, err, sizeof err)) == NULL) {
        rc = cu_cli_fail("%s: %s", module, err);
        goto out;
    }
    if ((file_cert = cu_bench_self_signed(file_key, NULL)) == NULL ||
        (tok_cert = cu_bench_self_signed(tok_key, lib)) == NULL) {
        rc = cu_cli_fail("cannot make the servers' keys and certificates");
        goto out;
    }
    snprintf(file_pem[0], sizeof file_pem[0], "%s/file.key", tmp);
    snprintf(file_pem[1], sizeof file_pem[1], "%s/file.crt", tmp);
    snprintf(tok_crt, sizeof tok_crt, "%s/token.crt", tmp);
    for (int i = 0; i < K__N; i++)
        snprintf(logs[i], sizeof logs[i], "%s/%s.log", tmp, k_names[i]);
    if (!write_pem(file_pem[0], file_key, NULL) || !write_pem(file_pem[1], NULL, file_cert) ||
        !write_pem(tok_crt, NULL, tok_cert)) {
        rc = cu_cli_fail("cannot write the servers' files in %s", tmp);
        goto out;
    }
    if (engine) {
        /* The engine reads its module and PIN from openssl.cnf: no PIN in argv. */
        snprintf(conf, sizeof conf, "%s/engine.cnf", tmp);
        FILE *f = create_private(conf);
        if (f == NULL || fprintf(f,
                                 "openssl_conf = init\n[init]\nengines = engines\n[engines]\n"
                                 "pkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n"
                                 "MODULE_PATH = %s\nPIN = %s\ninit = 0\n",
                                 cu_module_path(cu_token_get0_module(t.tok)), t.pin ? t.pin : "") < 0 ||
            fclose(f) != 0) {
            rc = cu_cli_fail("cannot write %s", conf);
            goto out;
        }
    }
    /* The engine takes the URI without its query (module-path is in the conf). */
    char engine_uri[4200];
    snprintf(engine_uri, sizeof engine_uri, "%s", key_uri);
    engine_uri[strcspn(engine_uri, "?")] = '\0';

    for (int i = 0; i < K__N; i++) {
        if ((i == K_OTHER && other == NULL) || (i == K_ENGINE && !engine))
            continue;
        char accept[32];
        if ((srv[i].port = free_port()) < 0) {
            rc = cu_cli_fail("no free loopback port");
            goto out;
        }
        snprintf(accept, sizeof accept, "127.0.0.1:%d", srv[i].port);
        char *a[24];
        int n = 0;
        a[n++] = (char *)openssl;
        a[n++] = "s_server";
        if (i == K_FILE || i == K_PROV) {
            a[n++] = "-provider-path";
            a[n++] = pdir_s;
            a[n++] = "-provider";
            a[n++] = "custos";
        } else if (i == K_OTHER) {
            a[n++] = "-provider";
            a[n++] = (char *)other;
        } else {
            a[n++] = "-engine";
            a[n++] = "pkcs11";
            a[n++] = "-keyform";
            a[n++] = "engine";
        }
        if (i != K_ENGINE) {
            a[n++] = "-provider";
            a[n++] = "default";
        }
        a[n++] = "-accept";
        a[n++] = accept;
        a[n++] = "-cert";
        a[n++] = i == K_FILE ? file_pem[1] : tok_crt;
        a[n++] = "-key";
        a[n++] = i == K_FILE ? file_pem[0] : i == K_ENGINE ? engine_uri : key_uri;
        a[n++] = "-www";
        a[n++] = "-quiet";
        a[n] = NULL;
        if ((srv[i].pid = spawn(a, logs[i], i == K_ENGINE ? conf : NULL)) < 0) {
            rc = cu_cli_fail("cannot run %s s_server", openssl);
            goto out;
        }
        if (!await_server(&srv[i], logs[i], err, sizeof err)) {
            rc = cu_cli_fail("%s: %s", k_names[i], err);
            goto out;
        }
    }
    for (int r = 0; r < seconds; r++)
        for (int i = 0; i < K__N; i++) {
            if (interrupted) {
                rc = cu_cli_fail("interrupted (signal %d)", (int)interrupted);
                goto out;
            }
            if (srv[i].pid > 0 && !turn(openssl, &srv[i], 1, err, sizeof err)) {
                char line[512];
                last_line(logs[i], line, sizeof line);
                rc = interrupted ? cu_cli_fail("interrupted (signal %d)", (int)interrupted)
                                 : cu_cli_fail("%s: %s (server: %s)", k_names[i], err, line);
                goto out;
            }
        }
    double us[K__N] = {0};
    for (int i = 0; i < K__N; i++)
        if (srv[i].handshakes)
            us[i] = srv[i].cpu / (double)srv[i].handshakes * 1e6;
    const cu_token_desc *d = cu_token_get0_desc(t.tok);
    if (json) {
        printf("{\"token\":");
        cu_cli_json_str(stdout, d->label);
        printf(",\"manufacturer\":");
        cu_cli_json_str(stdout, d->manufacturer);
        printf(",\"key\":\"%s-%u\",\"seconds\":%d", cu_key_type_str(kt), bits, seconds);
        for (int i = 0; i < K__N; i++)
            if (srv[i].handshakes)
                printf(",\"%s\":{\"handshakes_per_s\":%.1f,\"server_cpu_us\":%.2f}", k_names[i],
                       (double)srv[i].handshakes / srv[i].wall, us[i]);
        printf("}\n");
    } else {
        printf("token '%s' (%s), key %s-%u, openssl s_server, TLS 1.3 full handshakes (s_time -new), "
               "%d turns of 1 s each\n",
               d->label, d->manufacturer, cu_key_type_str(kt), bits, seconds);
        for (int i = 0; i < K__N; i++)
            if (srv[i].handshakes)
                printf("  server key %-15s %8.0f handshakes/s   server CPU %7.1f us/handshake   ÷ file %.3f\n",
                       k_names[i], (double)srv[i].handshakes / srv[i].wall, us[i], us[i] / us[K_FILE]);
    }
out:
    for (int i = 0; i < K__N; i++)
        if (srv[i].pid > 0) {
            kill(srv[i].pid, SIGTERM);
            waitpid(srv[i].pid, NULL, 0);
        }
    remove_dir(tmp);
    X509_free(file_cert);
    X509_free(tok_cert);
    EVP_PKEY_free(file_key);
    EVP_PKEY_free(tok_key);
    cu_bench_provider_lib_free(lib);
    free(key_uri);
    cu_object_free(key);
out_tok:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    cu_tok_target_free(&t);
    return rc;
}
