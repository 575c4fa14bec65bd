/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The --seccomp FILE format, parsed without libseccomp so that it builds everywhere and fuzzes
 * alone. The format is deliberately tiny:
 *
 *     # comment            '#' starts a comment, anywhere on a line
 *     @default             include nano's default deny-list
 *     keyctl               deny this system call (EPERM)
 *
 * Strict: one name per line, [a-z_][a-z0-9_]*, no duplicates, printable ASCII only, and limits on
 * size, line length and entry count. Every error names the line. */
#include "config.h"

#include "ns-internal.h"

static bool is_name_char(char c, bool first)
{
        return (c >= 'a' && c <= 'z') || c == '_' || (!first && c >= '0' && c <= '9');
}

static int line_error(NanoError *e, const char *origin, unsigned line, int error, const char *what,
                      const char *tok, size_t toklen)
{
        int show = (int)MIN(toklen, (size_t)NANO_SECCOMP_PROFILE_MAX_LINE);

        if (origin)
                return nano_error_set(e, error, "'%s' line %u: %s%s%.*s%s", origin, line, what,
                                      tok ? " '" : "", show, tok ? tok : "", tok ? "'" : "");
        return nano_error_set(e, error, "seccomp profile line %u: %s%s%.*s%s", line, what, tok ? " '" : "",
                              show, tok ? tok : "", tok ? "'" : "");
}

int nano_seccomp_profile_parse(const char *buf, size_t len, const char *origin, NanoSeccompProfile *ret,
                               NanoError *e)
{
        unsigned line = 0, default_line = 0;
        size_t pos = 0;
        int r;

        if (!ret || (!buf && len > 0))
                return nano_error_set(e, EINVAL, "seccomp profile: no input");
        memset(ret, 0, offsetof(NanoSeccompProfile, entries));
        if (origin)
                (void)ns_format(ret->origin, sizeof ret->origin, "%s", origin);

        if (len > NANO_SECCOMP_PROFILE_MAX_SIZE) {
                if (origin)
                        return nano_error_set(e, EFBIG, "'%s': larger than %u bytes", origin,
                                              NANO_SECCOMP_PROFILE_MAX_SIZE);
                return nano_error_set(e, EFBIG, "seccomp profile: larger than %u bytes",
                                      NANO_SECCOMP_PROFILE_MAX_SIZE);
        }

        while (pos < len) {
                const char *l = buf + pos, *nl, *tok, *end;
                size_t llen, toklen;

                line++;
                nl = memchr(l, '\n', len - pos);
                llen = nl ? (size_t)(nl - l) : len - pos;
                pos += llen + (nl ? 1 : 0);

                if (llen > NANO_SECCOMP_PROFILE_MAX_LINE) {
                        r = line_error(e, origin, line, E2BIG, "line longer than 256 bytes", NULL, 0);
                        goto fail;
                }
                for (size_t i = 0; i < llen; i++) {
                        unsigned char c = (unsigned char)l[i];
                        if (c == '\r') {
                                r = line_error(e, origin, line, EINVAL, "carriage return (DOS line ending)",
                                               NULL, 0);
                                goto fail;
                        }
                        if ((c < 0x20 && c != '\t') || c > 0x7e) {
                                r = line_error(e, origin, line, EINVAL, "control or non-ASCII byte", NULL,
                                               0);
                                goto fail;
                        }
                }

                /* Comments end the line; blanks around the one token are allowed. */
                end = memchr(l, '#', llen);
                if (!end)
                        end = l + llen;
                tok = l;
                while (tok < end && (*tok == ' ' || *tok == '\t'))
                        tok++;
                while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
                        end--;
                toklen = (size_t)(end - tok);
                if (toklen == 0)
                        continue;
                for (size_t i = 0; i < toklen; i++)
                        if (tok[i] == ' ' || tok[i] == '\t') {
                                r = line_error(e, origin, line, EINVAL,
                                               "expected one system call name per line, got", tok, toklen);
                                goto fail;
                        }

                if (tok[0] == '@') {
                        if (toklen != 8 || memcmp(tok, "@default", 8) != 0) {
                                r = line_error(e, origin, line, EINVAL,
                                               "unknown directive (only @default exists)", tok, toklen);
                                goto fail;
                        }
                        if (default_line > 0) {
                                r = line_error(e, origin, line, EINVAL, "@default given twice", NULL, 0);
                                goto fail;
                        }
                        default_line = line;
                        ret->include_default = true;
                        continue;
                }

                if (toklen > NANO_SECCOMP_NAME_MAX) {
                        r = line_error(e, origin, line, ENAMETOOLONG,
                                       "system call name longer than 63 bytes", NULL, 0);
                        goto fail;
                }
                for (size_t i = 0; i < toklen; i++)
                        if (!is_name_char(tok[i], i == 0)) {
                                r = line_error(e, origin, line, EINVAL,
                                               "not a system call name ([a-z_][a-z0-9_]*):", tok, toklen);
                                goto fail;
                        }
                for (size_t i = 0; i < ret->n_entries; i++)
                        if (strlen(ret->entries[i].name) == toklen &&
                            memcmp(ret->entries[i].name, tok, toklen) == 0) {
                                char what[64];
                                (void)ns_format(what, sizeof what,
                                                "already listed on line %u:", ret->entries[i].line);
                                r = line_error(e, origin, line, EINVAL, what, tok, toklen);
                                goto fail;
                        }
                if (ret->n_entries >= NANO_SECCOMP_PROFILE_MAX_ENTRIES) {
                        r = line_error(e, origin, line, E2BIG, "more than 512 system calls", NULL, 0);
                        goto fail;
                }
                memcpy(ret->entries[ret->n_entries].name, tok, toklen);
                ret->entries[ret->n_entries].name[toklen] = 0;
                ret->entries[ret->n_entries].line = line;
                ret->n_entries++;
        }

        if (ret->n_entries == 0 && !ret->include_default) {
                if (origin)
                        r = nano_error_set(e, EINVAL, "'%s': denies nothing (no system call, no @default)",
                                           origin);
                else
                        r = nano_error_set(e, EINVAL,
                                           "seccomp profile: denies nothing (no system call, no "
                                           "@default)");
                goto fail;
        }
        return 0;

fail:
        ret->include_default = false;
        ret->n_entries = 0;
        return r;
}
