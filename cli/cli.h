/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <json-c/json.h>

#include "exit-codes.h"
#include "macros.h"
#include "nano.h"

typedef struct Verb {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *summary;
} Verb;

/* Global options, set by main(). */
extern const char *arg_home;

/* Dispatches argv[0] among verbs; prints help for "--help"/"help". */
int verb_dispatch(const char *prefix, const Verb *verbs, size_t n, int argc, char **argv, const char *help);

/* Maps an errno of a failed operation to an exit code (doc/cli.md). */
int exit_code_from_errno(int r);
/* Prints err's message (or a generic one naming `what`) and returns the exit code for it. */
int fail(const NanoError *err, int r, const char *what);
/* Prints a usage error and returns NANO_EXIT_USAGE. */
int usage_error(const char *fmt, ...) _printf_(1, 2);

/* Prints a JSON value on one line of stdout and frees it. */
void json_print(json_object *o);

/* o[key] = v, for the counters every --json output is made of. */
static inline void json_add_u64(json_object *o, const char *key, uint64_t v)
{
        json_object_object_add(o, key, json_object_new_int64((int64_t)v));
}

int verb_store(int argc, char **argv);
int verb_mount(int argc, char **argv);
int verb_umount(int argc, char **argv);
int verb_run(int argc, char **argv);
int verb_spawn(int argc, char **argv);
int verb_instance_ps(int argc, char **argv);
int verb_instance_inspect(int argc, char **argv);
int verb_instance_logs(int argc, char **argv);
int verb_instance_stop(int argc, char **argv);
int verb_instance_rm(int argc, char **argv);
int verb_instance_exec(int argc, char **argv);
