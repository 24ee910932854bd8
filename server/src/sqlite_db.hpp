// A thin RAII layer over the SQLite C API, private to the server's SQLite store.
//
// Ownership: `DbPtr` owns a connection (closed by its deleter), `StmtPtr` owns a prepared
// statement (finalized by its deleter). A `Connection` owns both and declares the database
// before its statement cache, so every statement is finalized before the connection closes.
//
// Statement reuse: `Connection::cached(op, sql)` prepares `sql` once per connection with
// SQLITE_PREPARE_PERSISTENT and hands out a `Stmt`, a scoped use of it: binds, steps, reads
// columns, and on destruction resets the statement and clears its bindings (an un-reset SELECT
// would hold its read snapshot open). If the cached statement is already being stepped higher up
// the stack, `cached` falls back to a one-off statement, so re-entrant use cannot clobber it.
//
// Errors: binding and stepping failures are kept in the Stmt and reported by next()/run() as
// `internal` errors whose message is "<op>: <sqlite3_errmsg>", e.g. "put_record: disk I/O
// error". `extended_code()` tells callers which constraint failed, so they can map it to a
// specific code (a duplicate user name is invalid_value, not internal).
//
// Thread-compatible: one Connection and its Stmts are used by one thread at a time.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/error.hpp"
#include "fieldsync/protocol/ids.hpp"

namespace fieldsync::server::sqlite {

using protocol::Error;
using protocol::Result;
using protocol::Status;

struct DbClose {
    void operator()(sqlite3* db) const noexcept {
        // sqlite3_close fails (SQLITE_BUSY) only if a statement leaked; close_v2 then defers the
        // close until the last statement is finalized instead of leaking the connection.
        if (sqlite3_close(db) != SQLITE_OK) sqlite3_close_v2(db);
    }
};
struct StmtFinalize {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using DbPtr = std::unique_ptr<sqlite3, DbClose>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalize>;

/// "op: <sqlite3_errmsg(db)>" with code internal.
Error sqlite_error(sqlite3* db, std::string_view op);

/// One use of a prepared statement. Not copyable or movable: obtain it from Connection as a
/// prvalue (`auto q = conn.cached(...)`) and let it reset the statement at scope exit.
class Stmt {
public:
    /// Borrows `s` (owned by the connection's cache) or, when `owned` is set, owns it.
    Stmt(sqlite3* db, sqlite3_stmt* s, std::string_view op, StmtPtr owned = {}) noexcept;
    /// A statement that failed to prepare: every step reports `error`.
    Stmt(sqlite3* db, Error error) noexcept;
    ~Stmt();
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    // Binders: 1-based parameter indexes. A failure is reported by the next step.
    Stmt& bind_int(int i, std::int64_t v) noexcept;
    /// Values above INT64_MAX cannot be stored and are reported as a bind failure.
    Stmt& bind_u64(int i, std::uint64_t v) noexcept;
    Stmt& bind_bool(int i, bool v) noexcept { return bind_int(i, v ? 1 : 0); }
    /// Copies the text (SQLITE_TRANSIENT), so temporaries are safe.
    Stmt& bind_text(int i, std::string_view v) noexcept;
    /// Copies the bytes.
    Stmt& bind_blob(int i, protocol::ByteView v) noexcept;
    /// Bind without a copy (SQLITE_STATIC), for large values on hot paths: the caller keeps
    /// `v` alive and unchanged until this Stmt is destroyed (which resets the statement and
    /// clears its bindings). Never pass a temporary.
    Stmt& bind_text_ref(int i, std::string_view v) noexcept;
    Stmt& bind_blob_ref(int i, protocol::ByteView v) noexcept;
    Stmt& bind_id(int i, const protocol::Id128& id) noexcept;
    Stmt& bind_null(int i) noexcept;

    /// Steps once: true when a row is available, false when the statement is done.
    Result<bool> next();
    /// Steps a statement run for its effect (rows, if any, are ignored after the first step).
    Status run();

    /// The extended result code of the last failed step or bind (SQLITE_CONSTRAINT_UNIQUE,
    /// ...), or SQLITE_OK.
    int extended_code() const noexcept { return m_rc; }
    /// Rows changed by the last completed INSERT/UPDATE/DELETE on this connection.
    std::int64_t changes() const noexcept { return sqlite3_changes64(m_db); }

    // Column readers (0-based), valid after next() returned true. NULL reads as 0 / empty.
    std::int64_t col_int(int c) const noexcept { return sqlite3_column_int64(m_stmt, c); }
    std::uint64_t col_u64(int c) const noexcept {
        return static_cast<std::uint64_t>(sqlite3_column_int64(m_stmt, c));
    }
    bool col_bool(int c) const noexcept { return sqlite3_column_int64(m_stmt, c) != 0; }
    bool col_is_null(int c) const noexcept { return sqlite3_column_type(m_stmt, c) == SQLITE_NULL; }
    std::string col_text(int c) const;
    protocol::Bytes col_blob(int c) const;
    /// The column as a 16-byte id; a column of another length reads as the nil id (the schema's
    /// CHECK constraints keep that from happening).
    protocol::Id128 col_id(int c) const noexcept;

private:
    void fail_bind(int rc, int i) noexcept;
    Stmt& bind_text_with(int i, std::string_view v, sqlite3_destructor_type how) noexcept;
    Stmt& bind_blob_with(int i, protocol::ByteView v, sqlite3_destructor_type how) noexcept;

    sqlite3* m_db = nullptr;
    sqlite3_stmt* m_stmt = nullptr;
    StmtPtr m_owned;
    std::string_view m_op;
    int m_rc = SQLITE_OK;
    bool m_failed = false;
    Error m_error;
};

/// A connection and its statement cache.
class Connection {
public:
    Connection() = default;
    explicit Connection(DbPtr db) noexcept : m_db(std::move(db)) {}
    Connection(Connection&&) noexcept = default;
    Connection& operator=(Connection&&) noexcept = default;
    ~Connection() { close(); }

    sqlite3* get() const noexcept { return m_db.get(); }
    /// A use of the statement for `sql`, prepared once (SQLITE_PREPARE_PERSISTENT) and cached.
    /// `sql` must outlive the connection (a string literal or a static std::string): it is
    /// the cache key. `op` names the operation in error messages and must outlive the Stmt.
    Stmt cached(std::string_view op, std::string_view sql);
    /// A statement prepared for this use only and finalized with the Stmt.
    Stmt once(std::string_view op, std::string_view sql);
    /// Runs one or more statements that return no rows (migrations, pragmas).
    Status exec(std::string_view op, const char* sql);
    /// True when a transaction is open on the connection (explicit or implicit).
    bool in_transaction() const noexcept { return m_db && sqlite3_get_autocommit(m_db.get()) == 0; }
    /// Finalizes every cached statement, then closes the connection. Idempotent.
    void close() noexcept;

private:
    DbPtr m_db;  // declared first: destroyed last, after the statements
    std::unordered_map<std::string_view, StmtPtr> m_cache;
};

}  // namespace fieldsync::server::sqlite
