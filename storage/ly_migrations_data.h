/*  ly_migrations_data.h: the SQL migration files compiled into the binary. The array is
    generated at build time by cmake/embed_migrations.cmake from the .sql files of
    storage/migrations, in file-name order, into ${CMAKE_BINARY_DIR}/ly_migrations_data.c;
    only ly_migrate.c reads it. */
#ifndef LY_MIGRATIONS_DATA_H
#define LY_MIGRATIONS_DATA_H

#include <stddef.h>

typedef struct {
    const char *name;           /* file name, e.g. "0001_schema.sql" */
    const char *sql;            /* the file's contents, NUL-terminated */
    size_t size;                /* strlen (sql) */
} ly_migration_file_t;

extern const ly_migration_file_t ly_migration_files [];
extern const size_t ly_migration_files_count;

#endif
