/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Helpers shared by the ns/ files. They allocate nothing, so the [child] functions can use them. */

#include <fcntl.h>
#include <limits.h>
#include <string.h>

#include "ns.h"
#include "util.h"

/* snprintf into a fixed buffer; -ENAMETOOLONG instead of a silently cut path. */
int ns_format(char *buf, size_t size, const char *fmt, ...) _printf_(3, 4);

/* Writes s with one write() (cgroupfs and procfs take a value per write) to an existing file.
 * trunc: O_TRUNC, so that a fake cgroup tree of regular files reads back what was written. */
int ns_write_at(int dirfd, const char *path, const char *s, bool trunc);

/* Reads at most size - 1 bytes of a file, NUL-terminated. Returns the length. */
ssize_t ns_read_at(int dirfd, const char *path, char *buf, size_t size);

/* Reads a whole file of unknown size (procfs), at most about max bytes, NUL-terminated. Allocates:
 * for the parent only. */
int ns_read_alloc_at(int dirfd, const char *path, size_t max, char **ret);

/* Parses a decimal u64 at the start of s (after blanks), up to a blank, newline or NUL. */
int ns_parse_u64(const char *s, uint64_t *ret);

/* Reads a file holding one integer (sysctls); -1 in *ret when the file does not exist. */
int ns_read_long_at(int dirfd, const char *path, long *ret);

/* Finds "key <u64>" lines in a flat-keyed file (memory.events, pids.events, memory.oom_control). */
int ns_keyed_u64(const char *text, const char *key, uint64_t *ret);

/* True when name is [A-Za-z0-9][A-Za-z0-9._+-]{0,127}: what an instance cgroup may be called. */
bool ns_name_is_valid(const char *name);

/* Probe hooks, one per feature file (or its stub). */
void ns_probe_namespaces(NanoProbe *p, bool trial); /* userns.c: namespace trials, in forked children */
void ns_probe_seccomp(NanoProbe *p, bool trial);    /* seccomp.c: a filter load, in a forked child */
void ns_probe_cgroups(NanoProbe *p, const NanoProbeConfig *c, int procfd); /* cgroup.c */

/* Replaces \ooo escapes of /proc/self/mountinfo in place. */
void ns_unescape_octal(char *s);

/* The minimal /dev of an ns-mode root (skeleton.c): the host's device nodes bound on empty files, and
 * links. NULL-terminated. */
extern const char *const ns_dev_nodes[];
typedef struct NsDevLink {
        const char *name, *target;
} NsDevLink;
extern const NsDevLink ns_dev_links[];

/* True for the host's top-level names an ns-mode root does not take from the host: ".", "..", proc,
 * dev, tmp, nano (its own of each), and skip_base, the staging directory's top level. */
bool ns_root_skips(const char *name, const char *skip_base);

/* The staging directory (NULL: /tmp) resolved into ret_path, and its first component into ret_top. */
int ns_staging_base(const char *staging, char *ret_path, size_t path_size, char ret_top[static NAME_MAX + 1]);
