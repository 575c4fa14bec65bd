/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The plan of a start, as spec.json keeps it: `nano run` decides it once (after probing the host),
 * and every restart (`nano __spawn`, exec'ed by the monitor) applies exactly the same. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runtime-internal.h"
#include "util.h"

static void strv_free(char **v)
{
        for (char **p = v; p && *p; p++)
                free(*p);
        free(v);
}

void run_plan_done(RunPlan *p)
{
        strv_free(p->argv);
        strv_free(p->env);
        p->argv = p->env = NULL;
}

void run_plan_harden(const RunPlan *p, const NanoSeccompProgram *prog, PlanHarden *ret)
{
        /* No core dumps: one can hold the service's secrets, and fill its instance's directory. */
        static const NanoRlimit no_core[] = { { RLIMIT_CORE, 0, 0 } };

        *ret = (PlanHarden){
                .writable = { p->data_dir, "/tmp", NULL },
                .config = {
                        .seccomp = p->seccomp != PLAN_SECCOMP_NONE ? prog : NULL,
                        .keep_caps = !p->caps,
                        .rlimits = no_core,
                        .n_rlimits = ELEMENTSOF(no_core),
                },
        };
        ret->landlock.writable = ret->writable;
        if (p->landlock)
                ret->config.landlock = &ret->landlock;
}

static json_object *strv_to_json(char **v)
{
        json_object *a = json_object_new_array();
        for (char **p = v; p && *p; p++)
                json_object_array_add(a, json_object_new_string(*p));
        return a;
}

json_object *run_plan_to_json(const RunPlan *p)
{
        json_object *j = json_object_new_object(), *cg;

        json_object_object_add(j, "name", json_object_new_string(p->name));
        json_object_object_add(j, "home", json_object_new_string(p->home));
        json_object_object_add(j, "instance_dir", json_object_new_string(p->instance_dir));
        json_object_object_add(j, "data_dir", json_object_new_string(p->data_dir));
        json_object_object_add(j, "release", json_object_new_string(p->release));
        json_object_object_add(j, "release_id", json_object_new_string(p->release_id));
        json_object_object_add(j, "mount_root", json_object_new_string(p->mount_root));
        json_object_object_add(j, "release_dir", json_object_new_string(p->release_dir));
        json_object_object_add(j, "argv", strv_to_json(p->argv));
        json_object_object_add(j, "env", strv_to_json(p->env));
        json_object_object_add(j, "workdir", json_object_new_string(p->workdir));
        json_object_object_add(j, "mode", json_object_new_int(p->mode));
        json_object_object_add(j, "ns_flags", json_object_new_int((int)p->ns_flags));
        json_object_object_add(j, "landlock", json_object_new_boolean(p->landlock));
        json_object_object_add(j, "caps", json_object_new_boolean(p->caps));
        json_object_object_add(j, "seccomp", json_object_new_int(p->seccomp));
        json_object_object_add(j, "seccomp_profile", json_object_new_string(p->seccomp_profile));
        json_object_object_add(j, "new_session", json_object_new_boolean(p->new_session));
        json_object_object_add(j, "restart", json_object_new_int(p->restart));
        json_object_object_add(j, "log_max", json_object_new_int64((int64_t)p->log_max));
        if (p->cgroup) {
                json_object *v1 = json_object_new_array();
                cg = json_object_new_object();
                json_object_object_add(cg, "name", json_object_new_string(p->cgroup_name));
                json_object_object_add(cg, "version", json_object_new_int(p->place.version));
                json_object_object_add(cg, "v2", json_object_new_string(p->place.v2));
                for (unsigned i = 0; i < _NANO_CGROUP_CONTROLLER_MAX; i++)
                        json_object_array_add(v1, json_object_new_string(p->place.v1[i]));
                json_object_object_add(cg, "v1", v1);
                json_object_object_add(j, "cgroup", cg);
        }
        return j;
}

static int get_str(json_object *j, const char *key, char *buf, size_t size, NanoError *err)
{
        json_object *v;
        const char *s;

        if (!json_object_object_get_ex(j, key, &v) || !json_object_is_type(v, json_type_string))
                return nano_error_set(err, EBADMSG, "spec.json: the plan has no string '%s'", key);
        s = json_object_get_string(v);
        if (strlen(s) >= size)
                return nano_error_set(err, ENAMETOOLONG, "spec.json: '%s' is too long", key);
        strcpy(buf, s);
        return 0;
}

static int get_int(json_object *j, const char *key, int64_t *ret, NanoError *err)
{
        json_object *v;

        if (!json_object_object_get_ex(j, key, &v) ||
            !(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_boolean)))
                return nano_error_set(err, EBADMSG, "spec.json: the plan has no number '%s'", key);
        *ret = json_object_get_int64(v);
        return 0;
}

static int get_strv(json_object *j, const char *key, char ***ret, NanoError *err)
{
        json_object *a;
        size_t n;
        char **v;

        if (!json_object_object_get_ex(j, key, &a) || !json_object_is_type(a, json_type_array))
                return nano_error_set(err, EBADMSG, "spec.json: the plan has no list '%s'", key);
        n = json_object_array_length(a);
        if (n > 65536)
                return nano_error_set(err, E2BIG, "spec.json: '%s' is too long", key);
        v = calloc(n + 1, sizeof *v);
        if (!v)
                return nano_error_set(err, ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                const char *s = json_object_get_string(json_object_array_get_idx(a, i));
                v[i] = strdup(s ? s : "");
                if (!v[i]) {
                        strv_free(v);
                        return nano_error_set(err, ENOMEM, "out of memory");
                }
        }
        *ret = v;
        return 0;
}

int run_plan_from_json(json_object *j, RunPlan *p, NanoError *err)
{
        json_object *cg;
        int64_t v;
        int r = 0;

        memset(p, 0, sizeof *p);
        r = get_str(j, "name", p->name, sizeof p->name, err);
        if (r >= 0)
                r = get_str(j, "home", p->home, sizeof p->home, err);
        if (r >= 0)
                r = get_str(j, "instance_dir", p->instance_dir, sizeof p->instance_dir, err);
        if (r >= 0)
                r = get_str(j, "data_dir", p->data_dir, sizeof p->data_dir, err);
        if (r >= 0)
                r = get_str(j, "release", p->release, sizeof p->release, err);
        if (r >= 0)
                r = get_str(j, "release_id", p->release_id, sizeof p->release_id, err);
        if (r >= 0)
                r = get_str(j, "mount_root", p->mount_root, sizeof p->mount_root, err);
        if (r >= 0)
                r = get_str(j, "release_dir", p->release_dir, sizeof p->release_dir, err);
        if (r >= 0)
                r = get_str(j, "workdir", p->workdir, sizeof p->workdir, err);
        if (r >= 0)
                r = get_str(j, "seccomp_profile", p->seccomp_profile, sizeof p->seccomp_profile, err);
        if (r >= 0 && (r = get_int(j, "mode", &v, err)) >= 0)
                p->mode = (NanoIsolation)v;
        if (r >= 0 && (r = get_int(j, "ns_flags", &v, err)) >= 0)
                p->ns_flags = (unsigned)v;
        if (r >= 0 && (r = get_int(j, "landlock", &v, err)) >= 0)
                p->landlock = v;
        if (r >= 0 && (r = get_int(j, "caps", &v, err)) >= 0)
                p->caps = v;
        if (r >= 0 && (r = get_int(j, "seccomp", &v, err)) >= 0)
                p->seccomp = (PlanSeccomp)v;
        if (r >= 0 && (r = get_int(j, "new_session", &v, err)) >= 0)
                p->new_session = v;
        if (r >= 0 && (r = get_int(j, "restart", &v, err)) >= 0)
                p->restart = (NanoRestartPolicy)v;
        if (r >= 0 && (r = get_int(j, "log_max", &v, err)) >= 0)
                p->log_max = (uint64_t)v;
        if (r >= 0)
                r = get_strv(j, "argv", &p->argv, err);
        if (r >= 0)
                r = get_strv(j, "env", &p->env, err);
        if (r >= 0 && (!p->argv[0] || !nano_instance_name_is_valid(p->name)))
                r = nano_error_set(err, EBADMSG, "spec.json: the plan has no command or a bad name");
        if (r >= 0 && json_object_object_get_ex(j, "cgroup", &cg)) {
                json_object *a;
                p->cgroup = true;
                r = get_str(cg, "name", p->cgroup_name, sizeof p->cgroup_name, err);
                if (r >= 0 && (r = get_int(cg, "version", &v, err)) >= 0)
                        p->place.version = (NanoCgroupVersion)v;
                if (r >= 0)
                        r = get_str(cg, "v2", p->place.v2, sizeof p->place.v2, err);
                if (r >= 0 && json_object_object_get_ex(cg, "v1", &a) && json_object_is_type(a, json_type_array))
                        for (unsigned i = 0; i < _NANO_CGROUP_CONTROLLER_MAX && i < json_object_array_length(a);
                             i++) {
                                const char *s = json_object_get_string(json_object_array_get_idx(a, i));
                                if (s && strlen(s) < sizeof p->place.v1[i])
                                        strcpy(p->place.v1[i], s);
                        }
        }
        if (r < 0)
                run_plan_done(p);
        return r;
}
