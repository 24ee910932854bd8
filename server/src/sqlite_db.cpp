// See sqlite_db.hpp.
#include "sqlite_db.hpp"

#include <cstdint>
#include <limits>
#include <string>

namespace fieldsync::server::sqlite {

namespace {

// SQLITE_TRANSIENT is an old-style cast in a macro; this is the same value without one.
sqlite3_destructor_type transient() noexcept {
    return reinterpret_cast<sqlite3_destructor_type>(static_cast<std::intptr_t>(-1));
}

}  // namespace

Error sqlite_error(sqlite3* db, std::string_view op) {
    return Error{protocol::protocol_errc::internal,
                 std::string(op) + ": " + (db ? sqlite3_errmsg(db) : "out of memory")};
}

Stmt::Stmt(sqlite3* db, sqlite3_stmt* s, std::string_view op, StmtPtr owned) noexcept
    : m_db(db), m_stmt(s), m_owned(std::move(owned)), m_op(op) {}

Stmt::Stmt(sqlite3* db, Error error) noexcept
    : m_db(db), m_rc(SQLITE_ERROR), m_failed(true), m_error(std::move(error)) {}

Stmt::~Stmt() {
    if (m_stmt && !m_owned) {
        sqlite3_reset(m_stmt);
        sqlite3_clear_bindings(m_stmt);
    }
}

void Stmt::fail_bind(int rc, int i) noexcept {
    if (m_failed) return;
    m_failed = true;
    m_rc = rc;
    try {
        m_error = Error{protocol::protocol_errc::internal,
                        std::string(m_op) + ": binding parameter " + std::to_string(i) + ": " +
                            sqlite3_errstr(rc)};
    } catch (...) {
        // Out of memory while describing the error: the step still fails, with an empty message.
    }
}

Stmt& Stmt::bind_int(int i, std::int64_t v) noexcept {
    if (!m_failed) {
        if (int rc = sqlite3_bind_int64(m_stmt, i, v); rc != SQLITE_OK) fail_bind(rc, i);
    }
    return *this;
}

Stmt& Stmt::bind_u64(int i, std::uint64_t v) noexcept {
    if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        fail_bind(SQLITE_RANGE, i);
        return *this;
    }
    return bind_int(i, static_cast<std::int64_t>(v));
}

Stmt& Stmt::bind_text_with(int i, std::string_view v, sqlite3_destructor_type how) noexcept {
    if (!m_failed) {
        if (int rc = sqlite3_bind_text64(m_stmt, i, v.data(), v.size(), how, SQLITE_UTF8);
            rc != SQLITE_OK)
            fail_bind(rc, i);
    }
    return *this;
}

Stmt& Stmt::bind_blob_with(int i, protocol::ByteView v, sqlite3_destructor_type how) noexcept {
    if (!m_failed) {
        // A zero-length blob must still be a blob, not NULL: bind_zeroblob for the empty case.
        int rc = v.empty() ? sqlite3_bind_zeroblob(m_stmt, i, 0)
                           : sqlite3_bind_blob64(m_stmt, i, v.data(), v.size(), how);
        if (rc != SQLITE_OK) fail_bind(rc, i);
    }
    return *this;
}

Stmt& Stmt::bind_text(int i, std::string_view v) noexcept {
    return bind_text_with(i, v, transient());
}
Stmt& Stmt::bind_text_ref(int i, std::string_view v) noexcept {
    return bind_text_with(i, v, nullptr);  // SQLITE_STATIC
}
Stmt& Stmt::bind_blob(int i, protocol::ByteView v) noexcept {
    return bind_blob_with(i, v, transient());
}
Stmt& Stmt::bind_blob_ref(int i, protocol::ByteView v) noexcept {
    return bind_blob_with(i, v, nullptr);  // SQLITE_STATIC
}

Stmt& Stmt::bind_id(int i, const protocol::Id128& id) noexcept {
    return bind_blob(i, protocol::ByteView(id.bytes.data(), id.bytes.size()));
}

Stmt& Stmt::bind_null(int i) noexcept {
    if (!m_failed) {
        if (int rc = sqlite3_bind_null(m_stmt, i); rc != SQLITE_OK) fail_bind(rc, i);
    }
    return *this;
}

Result<bool> Stmt::next() {
    if (m_failed) return m_error;
    const int rc = sqlite3_step(m_stmt);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    m_rc = rc;
    return sqlite_error(m_db, m_op);
}

Status Stmt::run() {
    auto r = next();
    if (!r) return std::move(r).error();
    return {};
}

std::string Stmt::col_text(int c) const {
    const auto* p = sqlite3_column_text(m_stmt, c);
    if (!p) return {};
    const int n = sqlite3_column_bytes(m_stmt, c);
    return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}

protocol::Bytes Stmt::col_blob(int c) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(m_stmt, c));
    const int n = sqlite3_column_bytes(m_stmt, c);
    if (!p || n <= 0) return {};
    return protocol::Bytes(p, p + n);
}

protocol::Id128 Stmt::col_id(int c) const noexcept {
    protocol::Id128 id;
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(m_stmt, c));
    if (p && sqlite3_column_bytes(m_stmt, c) == static_cast<int>(id.bytes.size())) {
        for (std::size_t i = 0; i < id.bytes.size(); ++i)
            id.bytes[i] = p[i];
    }
    return id;
}

Stmt Connection::cached(std::string_view op, std::string_view sql) {
    auto it = m_cache.find(sql);
    if (it == m_cache.end()) {
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v3(m_db.get(), sql.data(), static_cast<int>(sql.size()),
                               SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
            sqlite3_finalize(s);
            return Stmt(m_db.get(), sqlite_error(m_db.get(), op));
        }
        it = m_cache.emplace(sql, StmtPtr(s)).first;
    }
    // Already being stepped further up the stack (re-entrant use): do not reset it under the
    // caller's feet; use a private copy instead.
    if (sqlite3_stmt_busy(it->second.get())) return once(op, sql);
    return Stmt(m_db.get(), it->second.get(), op);
}

Stmt Connection::once(std::string_view op, std::string_view sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(m_db.get(), sql.data(), static_cast<int>(sql.size()), 0, &s, nullptr) !=
        SQLITE_OK) {
        sqlite3_finalize(s);
        return Stmt(m_db.get(), sqlite_error(m_db.get(), op));
    }
    StmtPtr owned(s);
    return Stmt(m_db.get(), s, op, std::move(owned));
}

Status Connection::exec(std::string_view op, const char* sql) {
    char* msg = nullptr;
    if (sqlite3_exec(m_db.get(), sql, nullptr, nullptr, &msg) != SQLITE_OK) {
        std::string text = msg ? msg : sqlite3_errmsg(m_db.get());
        sqlite3_free(msg);
        return Error{protocol::protocol_errc::internal, std::string(op) + ": " + text};
    }
    return {};
}

void Connection::close() noexcept {
    m_cache.clear();
    m_db.reset();
}

}  // namespace fieldsync::server::sqlite
