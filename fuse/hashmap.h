/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* An intrusive chained hash table keyed by a caller-computed 64-bit hash. The caller embeds a
 * HashLink in its objects, walks the chain of a hash to compare keys, and does all locking. It
 * grows by doubling; if growing fails for lack of memory, chains just get longer (no failure). */

#include <stddef.h>
#include <stdint.h>

typedef struct HashLink {
        struct HashLink *next;
        uint64_t hash;
} HashLink;

typedef struct HashTable {
        HashLink **buckets;
        size_t mask; /* number of buckets - 1; 0 before the first insertion */
        size_t n;
} HashTable;

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Adds l under hash. Never fails: -ENOMEM only if the very first bucket array cannot be allocated. */
int hash_table_add(HashTable *t, HashLink *l, uint64_t hash);
/* Removes l, which must be in t. */
void hash_table_remove(HashTable *t, HashLink *l);
/* The first link of hash's chain whose hash matches, or NULL; then hash_table_next(). */
HashLink *hash_table_first(const HashTable *t, uint64_t hash);
HashLink *hash_table_next(const HashLink *l);
/* Calls f on every link (which f may free: the next link is read before) and frees the buckets. */
void hash_table_done(HashTable *t, void (*f)(HashLink *l, void *userdata), void *userdata);

#define HASH_TABLE_FOREACH(l, t, h) for (HashLink *l = hash_table_first((t), (h)); l; l = hash_table_next(l))
