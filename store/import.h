/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The import pipeline shared by the directory and archive importers.
 *
 * One producer thread (the caller) walks the source, reads each regular file and hashes it; chunks
 * of files whose content is not yet stored go to a pool of compression threads; whichever thread
 * completes the next chunk of an object in order appends it to the object's temporary file, and the
 * object is published under its digest once its last chunk is written. At most INFLIGHT_MAX chunks
 * are read and not yet written at any time, which bounds memory whatever the file or tree size. */

#include "store.h"

typedef struct Importer Importer;

/* Sequential reader of a file's content: returns bytes read, 0 at end, or -errno. */
typedef ssize_t (*ImportReadFn)(void *userdata, void *buf, size_t len);

int importer_new(NanoStore *s, const NanoAddOptions *opts, NanoError *err, Importer **ret);
/* Stops the threads; an unfinished import leaves nothing behind but what was published. */
Importer *importer_free(Importer *imp);

/* The NanoError of this import (for importers that add context). */
NanoError *importer_error(Importer *imp);
/* Passes a non-fatal note to the caller's warning callback. */
void importer_warn(Importer *imp, const char *fmt, ...) _printf_(2, 3);

/* Adds a regular file read from a seekable fd of the given size: hashed first, then compressed only
 * if its content is not stored yet. `display` names the file in errors. attrs: mode and mtime.
 * ret_digest gets the content's digest. */
int importer_add_fd(Importer *imp, const char *path, const char *display, int fd, uint64_t size,
                    const NanoEntry *attrs, uint8_t ret_digest[32]);
/* Adds a regular file read sequentially from fn; size is the announced size (-1 if unknown), and
 * a source that gives more or fewer bytes is an error. */
int importer_add_stream(Importer *imp, const char *path, const char *display, ImportReadFn fn, void *userdata,
                        int64_t size, const NanoEntry *attrs);
/* Adds a directory or a symlink, or a regular file whose digest is known (a hard link). */
int importer_add_entry(Importer *imp, const char *path, const char *display, const NanoEntry *e);
/* Adds path as a hard link of the regular file at target. */
int importer_add_link(Importer *imp, const char *path, const char *target, const char *display);

/* Waits for every object, writes the manifest, fills ret (everything but `existed`). */
int importer_finish(Importer *imp, NanoAddResult *ret);

/* The two front ends (import-dir.c, import-archive.c). */
int import_directory(Importer *imp, const char *source);
int import_archive(Importer *imp, const char *source);
