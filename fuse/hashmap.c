/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>

#include "hashmap.h"

#define INITIAL_BUCKETS 64u

static void rehash(HashTable *t, size_t n_buckets)
{
        HashLink **b = calloc(n_buckets, sizeof *b);

        if (!b)
                return; /* keep the current array: longer chains, still correct */
        for (size_t i = 0; t->buckets && i <= t->mask; i++)
                for (HashLink *l = t->buckets[i], *next; l; l = next) {
                        next = l->next;
                        l->next = b[l->hash & (n_buckets - 1)];
                        b[l->hash & (n_buckets - 1)] = l;
                }
        free(t->buckets);
        t->buckets = b;
        t->mask = n_buckets - 1;
}

int hash_table_add(HashTable *t, HashLink *l, uint64_t hash)
{
        if (!t->buckets) {
                rehash(t, INITIAL_BUCKETS);
                if (!t->buckets)
                        return -ENOMEM;
        } else if (t->n >= 2 * (t->mask + 1))
                rehash(t, 2 * (t->mask + 1));

        l->hash = hash;
        l->next = t->buckets[hash & t->mask];
        t->buckets[hash & t->mask] = l;
        t->n++;
        return 0;
}

void hash_table_remove(HashTable *t, HashLink *l)
{
        for (HashLink **p = &t->buckets[l->hash & t->mask]; *p; p = &(*p)->next)
                if (*p == l) {
                        *p = l->next;
                        l->next = NULL;
                        t->n--;
                        return;
                }
}

HashLink *hash_table_first(const HashTable *t, uint64_t hash)
{
        if (!t->buckets)
                return NULL;
        for (HashLink *l = t->buckets[hash & t->mask]; l; l = l->next)
                if (l->hash == hash)
                        return l;
        return NULL;
}

HashLink *hash_table_next(const HashLink *l)
{
        for (HashLink *n = l->next; n; n = n->next)
                if (n->hash == l->hash)
                        return n;
        return NULL;
}

void hash_table_done(HashTable *t, void (*f)(HashLink *l, void *userdata), void *userdata)
{
        for (size_t i = 0; t->buckets && i <= t->mask; i++)
                for (HashLink *l = t->buckets[i], *next; l; l = next) {
                        next = l->next;
                        if (f)
                                f(l, userdata);
                }
        free(t->buckets);
        *t = (HashTable){ 0 };
}
