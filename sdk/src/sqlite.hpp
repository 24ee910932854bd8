// A thin RAII layer over SQLite for the replica: one connection, cached prepared statements,
// transactions that roll back unless committed. Errors become protocol_errc::internal with
// SQLite's message and the file name. Private to the SDK (never installed).
//
// Thread-compatible: the Replica serializes every use of a Db behind its mutex.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/error.hpp"

namespace fieldsync::sdk_detail {

using protocol::Bytes;
using protocol::ByteView;
using protocol::Error;
using protocol::Result;
using protocol::Status;

class Db;

/// A cached prepared statement in use. Resets and clears its bindings when destroyed, so the
/// next user finds it fresh. Bind indexes are 1-based, column indexes 0-based (SQLite's).
class Stmt {
public:
    Stmt(Db& db, sqlite3_stmt* s) noexcept : m_db(&db), m_s(s) {}
    Stmt(Stmt&& o) noexcept : m_db(o.m_db), m_s(o.m_s) { o.m_s = nullptr; }
    Stmt& operator=(Stmt&&) = delete;
    Stmt(const Stmt&) = delete;
    ~Stmt();

    Stmt& bind(int i, std::int64_t v);
    Stmt& bind(int i, std::uint64_t v) { return bind(i, static_cast<std::int64_t>(v)); }
    Stmt& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
    Stmt& bind(int i, std::string_view text);
    Stmt& bind(int i, const char* text) { return bind(i, std::string_view(text)); }
    Stmt& bind(int i, const std::string& text) { return bind(i, std::string_view(text)); }
    Stmt& bind_blob(int i, ByteView b);
    Stmt& bind_null(int i);

    /// One step: true when a row is available, false when done.
    Result<bool> step();
    /// Steps to completion (for statements without results).
    Status run();

    std::int64_t col_int(int i) const;
    std::string col_text(int i) const;
    Bytes col_blob(int i) const;
    bool col_is_null(int i) const;

private:
    Db* m_db;
    sqlite3_stmt* m_s;
};

class Db {
public:
    /// Opens (creating) the file. Failure: internal naming the file and SQLite's reason.
    static Result<std::unique_ptr<Db>> open(const std::filesystem::path& path, int busy_timeout_ms);
    ~Db();
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    /// Runs one or more statements without results.
    Status exec(const char* sql);
    /// A cached prepared statement for `sql` (which must be a literal or otherwise outlive the
    /// Db: the cache is keyed by the pointer's text).
    Result<Stmt> prepare(const char* sql);
    /// An internal error "<what> (<file>): <SQLite's message>".
    Error error(std::string_view what) const;

    sqlite3* handle() const noexcept { return m_db; }
    const std::filesystem::path& path() const noexcept { return m_path; }

private:
    Db(sqlite3* db, std::filesystem::path path) : m_db(db), m_path(std::move(path)) {}
    sqlite3* m_db;
    std::filesystem::path m_path;
    std::unordered_map<std::string, sqlite3_stmt*> m_cache;
};

/// BEGIN IMMEDIATE on construction (check ok()); ROLLBACK on destruction unless commit()
/// succeeded.
class Transaction {
public:
    explicit Transaction(Db& db);
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;

    /// The BEGIN's status.
    const Status& begun() const noexcept { return m_begun; }
    /// COMMIT. On failure SQLite has rolled back (or the destructor will).
    Status commit();

private:
    Db& m_db;
    Status m_begun;
    bool m_done = false;
};

}  // namespace fieldsync::sdk_detail
