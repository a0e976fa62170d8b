#include "cli.h"

#include <errno.h>
#include <pwd.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

int cu_cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("custos: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CU_EXIT_FAIL;
}

int cu_cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("custos: ", stderr);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'custos %s --help'.\n", cmd);
    va_end(ap);
    return CU_EXIT_USAGE;
}

bool cu_cli_is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

static char *read_pin_file(const char *src)
{
    /* Accept RFC 7512 style "file:" prefixes as well as a plain path. */
    if (strncmp(src, "file://", 7) == 0)
        src += 7;
    else if (strncmp(src, "file:", 5) == 0)
        src += 5;
    FILE *f = fopen(src, "r");
    if (f == NULL) {
        cu_cli_fail("cannot read PIN file %s: %s", src, strerror(errno));
        return NULL;
    }
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    char *pin = strdup(buf);
    OPENSSL_cleanse(buf, sizeof buf);
    if (pin != NULL && *pin == '\0') {
        free(pin);
        cu_cli_fail("PIN file %s is empty", src);
        return NULL;
    }
    return pin;
}

static char *prompt_pin(const char *prompt)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (tty == NULL)
        return NULL;
    struct termios old, quiet;
    int fd = fileno(tty);
    if (tcgetattr(fd, &old) != 0) {
        fclose(tty);
        return NULL;
    }
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    /* The echo goes off before the prompt shows: a PIN typed as soon as the
     * prompt appears is neither echoed nor discarded with what was typed
     * ahead of it (TCSAFLUSH). */
    tcsetattr(fd, TCSAFLUSH, &quiet);
    fprintf(tty, "%s: ", prompt);
    fflush(tty);
    char buf[256];
    char *got = fgets(buf, sizeof buf, tty);
    tcsetattr(fd, TCSAFLUSH, &old);
    fputc('\n', tty);
    fclose(tty);
    if (got == NULL)
        return NULL;
    buf[strcspn(buf, "\r\n")] = '\0';
    char *pin = strdup(buf);
    OPENSSL_cleanse(buf, sizeof buf);
    return pin;
}

char *cu_cli_read_pin(const char *pin_source, const char *env, const char *prompt)
{
    if (pin_source != NULL)
        return read_pin_file(pin_source);
    const char *v = env ? getenv(env) : NULL;
    if (v != NULL && *v != '\0')
        return strdup(v);
    if (isatty(STDIN_FILENO)) {
        char *pin = prompt_pin(prompt);
        if (pin != NULL && *pin != '\0')
            return pin;
        free(pin);
    }
    cu_cli_fail("no PIN: give --pin-source FILE or set %s", env ? env : "CUSTOS_PIN");
    return NULL;
}

void cu_cli_pin_free(char *pin)
{
    if (pin != NULL) {
        OPENSSL_cleanse(pin, strlen(pin));
        free(pin);
    }
}

void cu_cli_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

int cu_cli_parse(const char *cmd, int argc, char **argv, const cu_cli_opt *opts, const char **pos,
                 size_t max_pos, size_t *_npos)
{
    size_t npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) {
            if (npos >= max_pos)
                return cu_cli_usage(cmd, "unexpected argument '%s'", a);
            pos[npos++] = a;
            continue;
        }
        if (strncmp(a, "--pin", 5) == 0 || strncmp(a, "--so-pin", 8) == 0) {
            if (strncmp(a, "--pin-source", 12) != 0 && strncmp(a, "--so-pin-source", 15) != 0)
                return cu_cli_usage(cmd, "PINs are never taken from the command line: "
                                         "use --pin-source FILE or CUSTOS_PIN");
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const cu_cli_opt *o = NULL;
        for (const cu_cli_opt *p = opts; p && p->name; p++)
            if (strlen(p->name) == nlen && strncmp(p->name, a, nlen) == 0)
                o = p;
        if (o == NULL)
            return cu_cli_usage(cmd, "unknown option '%.*s'", (int)nlen, a);
        if (o->flag) {
            if (eq)
                return cu_cli_usage(cmd, "%s takes no value", o->name);
            *o->flag = true;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (v == NULL)
            return cu_cli_usage(cmd, "%s needs a value", o->name);
        if (o->list) {
            if (*o->n_list >= o->max_list)
                return cu_cli_usage(cmd, "too many %s options", o->name);
            o->list[(*o->n_list)++] = v;
        } else {
            *o->value = v;
        }
    }
    if (_npos)
        *_npos = npos;
    return CU_EXIT_OK;
}

int cu_cli_dispatch(const char *group, const char *usage, const cu_cli_group *cmds, size_t n, int argc,
                    char **argv)
{
    if (argc < 2 || cu_cli_is_help(argv[1])) {
        FILE *f = argc < 2 ? stderr : stdout;
        if (usage != NULL) {
            fputs(usage, f);
        } else {
            fprintf(f, "usage: custos %s <command> [options]\n\ncommands:\n", group);
            for (size_t i = 0; i < n; i++)
                fprintf(f, "  %-12s %s\n", cmds[i].name, cmds[i].summary ? cmds[i].summary : "");
            fputs("\nEvery command takes --help.\n", f);
        }
        return argc < 2 ? CU_EXIT_USAGE : CU_EXIT_OK;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].run(argc - 1, argv + 1);
    return cu_cli_usage(group, "unknown %s command '%s'", group, argv[1]);
}

const char *cu_cli_actor(char *buf, size_t len)
{
    char host[256] = "localhost";
    const struct passwd *pw = getpwuid(geteuid());
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(buf, len, "cli:%s@%s", pw && pw->pw_name ? pw->pw_name : "unknown", host);
    return buf;
}
