// A county server inside the app's process: the server's SQLite store and its sync worker
// (fieldsync::server_core), seeded with the demo survey, a few Ordos areas and users. What the
// LoopbackTransport connects to in the example and in tests/sdk/replicator_test.cpp.
#pragma once

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/store.hpp"
#include "fieldsync/server/store_worker.hpp"

namespace example {

class InProcessServer {
public:
    /// `dir` holds the server's database; `schema_path` the survey (household-survey.json).
    InProcessServer(const std::filesystem::path& dir, const std::filesystem::path& schema_path) {
        namespace srv = fieldsync::server;
        std::ifstream in(schema_path);
        std::stringstream text;
        text << in.rdbuf();
        auto schema = fieldsync::protocol::Schema::load(text.str());
        if (!schema) throw std::runtime_error("schema: " + schema.error().message);
        auto store = srv::open_sqlite_store(dir / "server.db");
        if (!store) throw std::runtime_error("store: " + store.error().message);
        check((*store)->put_schema(schema->version(), text.str()));
        for (const char* code :
             {"ordos", "ordos/ejin-horo", "ordos/ejin-horo/altan-xire",
              "ordos/ejin-horo/altan-xire/longhuqu", "ordos/ejin-horo/altan-xire/hashatu"}) {
            srv::Area a;
            a.code = code;
            const std::string c = code;
            a.parent = c.find('/') == std::string::npos ? "" : c.substr(0, c.rfind('/'));
            a.level = "area";
            a.name_en = c;
            check((*store)->put_area(a));
        }
        add_user(**store, "enumerator-longhuqu", srv::Role::enumerator,
                 {"ordos/ejin-horo/altan-xire/longhuqu"});
        add_user(**store, "enumerator-hashatu", srv::Role::enumerator,
                 {"ordos/ejin-horo/altan-xire"});
        add_user(**store, "supervisor-ejin-horo", srv::Role::supervisor, {"ordos/ejin-horo"});
        m_worker = std::make_unique<srv::StoreWorker>(std::move(*store), std::move(*schema),
                                                      srv::StoreWorker::Options{});
    }
    ~InProcessServer() { m_worker->stop(); }

    fieldsync::server::StoreWorker& worker() { return *m_worker; }

    /// Every user's password is "<name>-pw".
    static std::string password_of(const std::string& user) { return user + "-pw"; }

private:
    static void check(const fieldsync::protocol::Status& s) {
        if (!s) throw std::runtime_error(s.error().message);
    }
    static void add_user(fieldsync::server::Store& s, const std::string& name,
                         fieldsync::server::Role role, std::vector<std::string> areas) {
        fieldsync::server::User u;
        u.name = name;
        u.display_name = name;
        u.role = role;
        u.areas = std::move(areas);
        u.password_hash = fieldsync::server::hash_password(password_of(name), 1000);
        auto id = s.add_user(u);
        if (!id) throw std::runtime_error(id.error().message);
    }

    std::unique_ptr<fieldsync::server::StoreWorker> m_worker;
};

}  // namespace example
