// SQLite helpers for the replica. Contract: sqlite.hpp.
#include "sqlite.hpp"

namespace fieldsync::sdk_detail {

using protocol::protocol_errc;

Stmt::~Stmt() {
    if (m_s) {
        sqlite3_reset(m_s);
        sqlite3_clear_bindings(m_s);
    }
}

Stmt& Stmt::bind(int i, std::int64_t v) {
    sqlite3_bind_int64(m_s, i, v);
    return *this;
}

Stmt& Stmt::bind(int i, std::string_view text) {
    sqlite3_bind_text64(m_s, i, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    return *this;
}

Stmt& Stmt::bind_blob(int i, ByteView b) {
    // A zero-length blob must still be a blob, not NULL: SQLite wants a non-null pointer.
    static const std::uint8_t empty = 0;
    sqlite3_bind_blob64(m_s, i, b.empty() ? &empty : b.data(), b.size(), SQLITE_TRANSIENT);
    return *this;
}

Stmt& Stmt::bind_null(int i) {
    sqlite3_bind_null(m_s, i);
    return *this;
}

Result<bool> Stmt::step() {
    const int rc = sqlite3_step(m_s);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return m_db->error("a statement failed");
}

Status Stmt::run() {
    for (;;) {
        auto r = step();
        if (!r) return r.error();
        if (!*r) return {};
    }
}

std::int64_t Stmt::col_int(int i) const {
    return sqlite3_column_int64(m_s, i);
}

std::string Stmt::col_text(int i) const {
    const auto* p = sqlite3_column_text(m_s, i);
    const int n = sqlite3_column_bytes(m_s, i);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n))
             : std::string();
}

Bytes Stmt::col_blob(int i) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(m_s, i));
    const int n = sqlite3_column_bytes(m_s, i);
    return p ? Bytes(p, p + n) : Bytes();
}

bool Stmt::col_is_null(int i) const {
    return sqlite3_column_type(m_s, i) == SQLITE_NULL;
}

Result<std::unique_ptr<Db>> Db::open(const std::filesystem::path& path, int busy_timeout_ms) {
    sqlite3* raw = nullptr;
    const int rc =
        sqlite3_open_v2(path.string().c_str(), &raw,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
        sqlite3_close(raw);
        return Error{protocol_errc::internal,
                     "cannot open the replica file " + path.string() + ": " + msg};
    }
    std::unique_ptr<Db> db(new Db(raw, path));
    sqlite3_busy_timeout(raw, busy_timeout_ms);
    sqlite3_extended_result_codes(raw, 1);
    return db;
}

Db::~Db() {
    for (auto& [sql, s] : m_cache)
        sqlite3_finalize(s);
    sqlite3_close(m_db);
}

Status Db::exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(m_db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errmsg(m_db);
        sqlite3_free(err);
        return Error{protocol_errc::internal, "replica file " + m_path.string() + ": " + msg};
    }
    return {};
}

Result<Stmt> Db::prepare(const char* sql) {
    auto it = m_cache.find(sql);
    if (it == m_cache.end()) {
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v3(m_db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
            return error("cannot prepare a statement");
        it = m_cache.emplace(sql, s).first;
    }
    return Stmt(*this, it->second);
}

Error Db::error(std::string_view what) const {
    return Error{protocol_errc::internal, std::string(what) + " (replica file " + m_path.string() +
                                              "): " + sqlite3_errmsg(m_db)};
}

Transaction::Transaction(Db& db) : m_db(db), m_begun(db.exec("BEGIN IMMEDIATE")) {
    if (!m_begun) m_done = true;
}

Transaction::~Transaction() {
    if (!m_done) (void)m_db.exec("ROLLBACK");
}

Status Transaction::commit() {
    m_done = true;
    auto st = m_db.exec("COMMIT");
    if (!st && !sqlite3_get_autocommit(m_db.handle())) (void)m_db.exec("ROLLBACK");
    return st;
}

}  // namespace fieldsync::sdk_detail
