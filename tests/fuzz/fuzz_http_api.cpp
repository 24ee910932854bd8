// libFuzzer target: the HTTP JSON API (server/include/fieldsync/server/http_api.hpp) on arbitrary
// requests — request targets (path segments, percent-encoding, query parameters) and JSON bodies
// of every route — against a real SQLite store and StoreWorker, as the network layer calls it.
//
// Input: byte 0 picks the method, byte 1 the caller (no token, a garbage token, or the token of
// an admin, a supervisor or an enumerator), then the target up to the first '\n', then the body.
// Properties checked on every response (a violation aborts, so libFuzzer reports it):
//  - exactly one response, within 10 s;
//  - never a 5xx: every bad request is the caller's error and is reported as one;
//  - a JSON response body parses, and an error body is {"error": {"code": <string>,
//    "message": <non-empty string>}};
//  - a streamed body (exports) runs to its end.
// The store persists across inputs (what one input writes, the next may read or conflict with).
//
// Seed corpus: tests/fuzz/corpus/http_api/. Build: tests/fuzz/CMakeLists.txt (target
// fuzz_http_api, `cmake --preset fuzz`).
#include <boost/json.hpp>

#include <unistd.h>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>

#include "fieldsync/protocol/schema.hpp"
#include "fieldsync/server/auth.hpp"
#include "fieldsync/server/http_api.hpp"
#include "fieldsync/server/store.hpp"
#include "fieldsync/server/store_worker.hpp"

namespace p = fieldsync::protocol;
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace fieldsync::server;

namespace {

void require(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fuzz_http_api: property violated: %s\n", what);
        std::abort();
    }
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct World {
    fs::path dir;
    std::unique_ptr<StoreWorker> worker;
    std::unique_ptr<HttpApi> api;
    std::string tokens[3];  // admin, supervisor, enumerator

    World() {
        dir = fs::temp_directory_path() / ("fuzz-http-api-" + std::to_string(::getpid()));
        fs::remove_all(dir);
        fs::create_directories(dir);
        auto store = open_sqlite_store(dir / "server.db");
        require(store.ok(), "open store");
        const std::string text =
            read_file(fs::path(FIELDSYNC_SOURCE_DIR) / "protocol/schemas/household-survey.json");
        auto schema = p::Schema::load(text);
        require(schema.ok(), "load demo schema");
        Store& s = **store;
        require(s.put_schema(schema->version(), text).ok(), "put schema");
        for (const char* code : {"ordos", "ordos/ejin-horo", "ordos/ejin-horo/altan-xire",
                                 "ordos/ejin-horo/altan-xire/longhuqu", "ordos/hanggin"}) {
            Area a;
            a.code = code;
            const std::string c = code;
            a.parent = c.find('/') == std::string::npos ? "" : c.substr(0, c.rfind('/'));
            a.level = "area";
            a.name_en = c.substr(c.rfind('/') + 1);
            require(s.put_area(a).ok(), "put area");
        }
        const struct {
            const char* name;
            Role role;
            const char* area;
        } users[] = {{"admin", Role::admin, nullptr},
                     {"sup", Role::supervisor, "ordos/ejin-horo"},
                     {"enum", Role::enumerator, "ordos/ejin-horo/altan-xire/longhuqu"}};
        for (const auto& u : users) {
            User user;
            user.name = u.name;
            user.display_name = u.name;
            user.role = u.role;
            if (u.area) user.areas = {u.area};
            user.password_hash = hash_password("pw", 1000);
            require(s.add_user(user).ok(), "add user");
        }
        worker = std::make_unique<StoreWorker>(std::move(*store), std::move(*schema),
                                               StoreWorker::Options{});
        ApiOptions ao;
        ao.password_iterations = 1000;
        ao.max_body_bytes = 64 * 1024;
        api = std::make_unique<HttpApi>(*worker, ao);
        for (int i = 0; i < 3; ++i) {
            HttpResponse r =
                call("POST", "/api/login",
                     std::string(R"({"user":")") + users[i].name + R"(","password":"pw"})", "");
            json::error_code ec;
            json::value v = json::parse(r.body, ec);
            require(!ec && r.status == 200 && v.is_object() && v.as_object().contains("token"),
                    "demo login");
            tokens[i] = std::string(v.at("token").as_string());
        }
    }

    HttpResponse call(std::string method, std::string target, std::string body,
                      std::string authorization) {
        HttpRequest r;
        r.method = std::move(method);
        r.target = std::move(target);
        r.body = std::move(body);
        r.authorization = std::move(authorization);
        r.content_type = "application/json";
        r.peer = "10.0.0.1";
        auto promise = std::make_shared<std::promise<HttpResponse>>();
        auto future = promise->get_future();
        api->handle(std::move(r),
                    [promise](HttpResponse resp) { promise->set_value(std::move(resp)); });
        require(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready,
                "a response within 10 s");
        return future.get();
    }
};

World& world() {
    // Lives until exit: the worker thread keeps running. Its store folder is removed at exit
    // (libFuzzer ends with exit()), so runs do not pile up folders in the temp directory.
    static World* w = [] {
        World* made = new World();
        std::atexit([] {
            std::error_code ec;
            fs::remove_all(world().dir, ec);
        });
        return made;
    }();
    return *w;
}

void check_error_body(const json::value& v) {
    require(v.is_object() && v.as_object().contains("error"), "error body has \"error\"");
    const json::value& e = v.at("error");
    require(e.is_object(), "error is an object");
    const json::object& o = e.as_object();
    require(o.contains("code") && o.at("code").is_string(), "error.code is a string");
    require(o.contains("message") && o.at("message").is_string() &&
                !o.at("message").as_string().empty(),
            "error.message is a non-empty string");
}

void drain(const std::shared_ptr<ChunkSource>& stream) {
    for (int chunks = 0; chunks < 100000; ++chunks) {
        auto promise = std::make_shared<std::promise<bool>>();
        auto future = promise->get_future();
        stream->next(
            [promise](std::optional<std::string> chunk) { promise->set_value(chunk.has_value()); });
        require(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready,
                "a streamed chunk within 10 s");
        if (!future.get()) return;
    }
    require(false, "a stream ends");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    World& w = world();
    static const char* const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"};
    const std::string method = methods[data[0] % 6];
    std::string auth;
    switch (data[1] % 5) {
        case 0:
            break;
        case 1:
            auth = "Bearer not-a-token";
            break;
        default:
            auth = "Bearer " + w.tokens[data[1] % 5 - 2];
            break;
    }
    const std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);
    const std::size_t nl = rest.find('\n');
    std::string target(rest.substr(0, nl));
    std::string body(nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1));
    if (target.empty() || target[0] != '/') target = "/api/" + target;
    // Logging out would revoke the fuzzer's own callers for every later input.
    if (target.find("logout") != std::string::npos) return 0;

    HttpResponse r = w.call(method, target, body, auth);
    require(r.status >= 200 && r.status < 500, "no 5xx response");
    if (r.stream) {
        drain(r.stream);
        return 0;
    }
    if (r.content_type.rfind("application/json", 0) == 0 && !r.body.empty()) {
        json::error_code ec;
        json::value v = json::parse(r.body, ec);
        require(!ec, "a JSON response parses");
        if (r.status >= 400) check_error_body(v);
    }
    return 0;
}
