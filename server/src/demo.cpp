// Demo data: areas, accounts and the credentials file. Contract: fieldsync/server/demo.hpp.
//
// Area names: the villages, towns and banners the 2017 report names (shared/seed/) are used
// as written there; the town each village sits under, the Chinese village names (transliterated
// from the report's pinyin) and the two Dalad gaqa are illustrative demo data, not a gazetteer.
#include "fieldsync/server/demo.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

namespace fieldsync::server {

namespace {

using protocol::protocol_errc;

Error internal(std::string message) {
    return Error{protocol_errc::internal, std::move(message)};
}

/// 12 characters in three groups ("k7fq-m2xp-9wze"), from an alphabet without look-alikes
/// (no 0/o, 1/l/i): about 59 bits, drawn with rejection sampling from RAND_bytes.
Result<std::string> new_password() {
    static constexpr std::string_view alphabet = "abcdefghjkmnpqrstuvwxyz23456789";
    std::string out;
    while (out.size() < 14) {
        unsigned char buf[32];
        if (RAND_bytes(buf, sizeof buf) != 1) return internal("RAND_bytes failed");
        for (unsigned char b : buf) {
            if (out.size() >= 14) break;
            // 248 = 8 * 31: bytes at or above it would bias the draw.
            if (b >= 248) continue;
            if (out.size() == 4 || out.size() == 9) out += '-';
            out += alphabet[b % alphabet.size()];
        }
    }
    return out;
}

struct DemoUser {
    const char* name;
    const char* display_name;
    Role role;
    std::vector<std::string> areas;
};

std::vector<DemoUser> demo_users() {
    return {
        {"admin", "Demo administrator / 演示管理员", Role::admin, {"ordos"}},
        {"supervisor-ejin-horo",
         "Ejin Horo Banner supervisor / 伊金霍洛旗督导员",
         Role::supervisor,
         {"ordos/ejin-horo"}},
        {"supervisor-hanggin",
         "Hanggin Banner supervisor / 杭锦旗督导员",
         Role::supervisor,
         {"ordos/hanggin"}},
        {"enumerator-longhuqu",
         "Longhuqu Village enumerator / 龙虎渠村调查员",
         Role::enumerator,
         {"ordos/ejin-horo/altan-xire/longhuqu"}},
        {"enumerator-hashatu",
         "Hashatu Village enumerator / 哈沙图村调查员",
         Role::enumerator,
         {"ordos/ejin-horo/altan-xire/hashatu"}},
        {"enumerator-xini",
         "Xini Town enumerator / 锡尼镇调查员",
         Role::enumerator,
         {"ordos/hanggin/xini"}},
    };
}

std::string join(const std::vector<std::string>& v, const char* sep) {
    std::string out;
    for (const auto& s : v) {
        if (!out.empty()) out += sep;
        out += s;
    }
    return out;
}

std::string iso_time(std::int64_t ms) {
    std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/// Writes `text` to `file` through a temporary file created with mode 0600, then renames it
/// into place (so the file is never readable by others, not even for a moment).
Status write_private_file(const std::filesystem::path& file, const std::string& text) {
    auto tmp = file;
    tmp += ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return internal("cannot create " + tmp.string() + ": " + std::strerror(errno));
    ::fchmod(fd, 0600);  // in case the file already existed with wider permissions
    const char* p = text.data();
    std::size_t left = text.size();
    while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            ::close(fd);
            return internal("cannot write " + tmp.string() + ": " + std::strerror(e));
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0)
        return internal("cannot write " + tmp.string() + ": " + std::strerror(errno));
    std::error_code ec;
    std::filesystem::rename(tmp, file, ec);
    if (ec) return internal("cannot rename " + tmp.string() + ": " + ec.message());
    return {};
}

}  // namespace

std::vector<Area> demo_areas() {
    // {code, parent, level, en, zh}; levels as docs/server-store.md: city, banner, town, village
    // (a sumu is a town-level area, a gaqa a village-level one).
    return {
        {"ordos", "", "city", "Ordos City", "鄂尔多斯市"},
        // Banners and districts of Ordos.
        {"ordos/dongsheng", "ordos", "banner", "Dongsheng District", "东胜区"},
        {"ordos/kangbashi", "ordos", "banner", "Kangbashi District", "康巴什区"},
        {"ordos/dalad", "ordos", "banner", "Dalad Banner", "达拉特旗"},
        {"ordos/jungar", "ordos", "banner", "Jungar Banner", "准格尔旗"},
        {"ordos/otog-front", "ordos", "banner", "Otog Front Banner", "鄂托克前旗"},
        {"ordos/otog", "ordos", "banner", "Otog Banner", "鄂托克旗"},
        {"ordos/hanggin", "ordos", "banner", "Hanggin Banner", "杭锦旗"},
        {"ordos/uxin", "ordos", "banner", "Uxin Banner", "乌审旗"},
        {"ordos/ejin-horo", "ordos", "banner", "Ejin Horo Banner", "伊金霍洛旗"},
        // Ejin Horo Banner: "land adoption" in Longhuqu, shareholding dividends in Nalinxili,
        // tourism in Hashatu.
        {"ordos/ejin-horo/altan-xire", "ordos/ejin-horo", "town", "Altan Xire Town",
         "阿勒腾席热镇"},
        {"ordos/ejin-horo/altan-xire/longhuqu", "ordos/ejin-horo/altan-xire", "village",
         "Longhuqu Village", "龙虎渠村"},
        {"ordos/ejin-horo/altan-xire/hashatu", "ordos/ejin-horo/altan-xire", "village",
         "Hashatu Village", "哈沙图村"},
        {"ordos/ejin-horo/zasag", "ordos/ejin-horo", "town", "Zasag Town", "札萨克镇"},
        {"ordos/ejin-horo/zasag/nalinxili", "ordos/ejin-horo/zasag", "village", "Nalinxili Village",
         "纳林希里村"},
        // Hanggin Banner: the Xini Town - Shengli - Amenqi region and Sishililiang (the pig
        // raising cooperative), collective-economy dividends in the gaqa.
        {"ordos/hanggin/xini", "ordos/hanggin", "town", "Xini Town", "锡尼镇"},
        {"ordos/hanggin/xini/shengli", "ordos/hanggin/xini", "village", "Shengli Village",
         "胜利村"},
        {"ordos/hanggin/xini/sishililiang", "ordos/hanggin/xini", "village", "Sishililiang Village",
         "四十里梁村"},
        {"ordos/hanggin/xini/amenqi", "ordos/hanggin/xini", "village", "Amenqi Gaqa",
         "阿门其日格嘎查"},
        // Dalad Banner: sumu- and gaqa-level e-commerce service stations ("getting eggs from
        // borrowed chicken").
        {"ordos/dalad/zhandanzhao", "ordos/dalad", "town", "Zhandanzhao Sumu", "展旦召苏木"},
        {"ordos/dalad/zhandanzhao/bayan", "ordos/dalad/zhandanzhao", "village",
         "Bayan Gaqa (e-commerce station)", "巴音嘎查（电商服务站）"},
        {"ordos/dalad/zhandanzhao/ulan", "ordos/dalad/zhandanzhao", "village",
         "Ulan Gaqa (e-commerce station)", "乌兰嘎查（电商服务站）"},
        {"ordos/dalad/shulinzhao", "ordos/dalad", "town", "Shulinzhao Town", "树林召镇"},
    };
}

Result<std::vector<DemoAccount>> seed_demo(Store& store,
                                           const std::filesystem::path& credentials_file,
                                           std::int64_t now_ms, int password_iterations) {
    std::vector<DemoAccount> made;
    if (auto st = store.begin(); !st) return st.error();
    auto fail = [&store](Error e) -> Result<std::vector<DemoAccount>> {
        store.rollback();
        return e;
    };
    auto users = store.list_users();
    if (!users) return fail(users.error());
    auto areas = store.list_areas();
    if (!areas) return fail(areas.error());
    if (!users->empty() || !areas->empty()) {
        store.rollback();
        return made;  // not a new store: nothing to seed
    }
    for (const auto& a : demo_areas()) {
        if (auto st = store.put_area(a); !st) return fail(st.error());
    }
    for (const auto& d : demo_users()) {
        auto password = new_password();
        if (!password) return fail(password.error());
        User u;
        u.name = d.name;
        u.display_name = d.display_name;
        u.role = d.role;
        u.areas = d.areas;
        u.created_at_ms = now_ms;
        try {
            u.password_hash = hash_password(*password, password_iterations);
        } catch (const std::exception& e) {
            return fail(internal(std::string("demo: hashing a password failed: ") + e.what()));
        }
        if (auto id = store.add_user(u); !id) return fail(id.error());
        made.push_back({d.name, to_string(d.role), *password, join(d.areas, ",")});
    }

    std::ostringstream text;
    text << "# fieldsync demo accounts, created " << iso_time(now_ms) << ".\n"
         << "# Keep this file private. Change these passwords (or disable the accounts) before\n"
         << "# real data goes in: the console's Users page, or PUT /api/users/<name>.\n"
         << "# name                  role         password         areas\n";
    for (const auto& a : made) {
        text << a.name << std::string(a.name.size() < 22 ? 22 - a.name.size() : 1, ' ') << ' '
             << a.role << std::string(a.role.size() < 12 ? 12 - a.role.size() : 1, ' ') << ' '
             << a.password << "   " << a.areas << '\n';
    }
    if (auto st = write_private_file(credentials_file, text.str()); !st) return fail(st.error());
    if (auto st = store.commit(); !st) return st.error();
    return made;
}

Result<std::vector<DemoAccount>> read_demo_credentials(const std::filesystem::path& file) {
    std::ifstream in(file);
    if (!in) return internal("cannot read " + file.string());
    std::vector<DemoAccount> out;
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream fields(line);
        DemoAccount a;
        if (fields >> a.name >> a.role >> a.password >> a.areas) out.push_back(std::move(a));
    }
    return out;
}

}  // namespace fieldsync::server
