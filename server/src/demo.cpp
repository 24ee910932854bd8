// Demo data: areas, accounts, the credentials file and the demo survey records.
// Contract: fieldsync/server/demo.hpp.
//
// Area names: the villages, towns and banners the 2017 report names (shared/seed/) are used
// as written there; the town each village sits under, the Chinese village names (transliterated
// from the report's pinyin) and the two Dalad gaqa are illustrative demo data, not a gazetteer.
// The households, members and visits are made up: names are common Mongolian and Han names,
// identity numbers merely have the right form (area code, birth date, sequence, check digit),
// the village coordinates are approximate, incomes and stories follow the report's assistance
// modes (land adoption, lambs for ewes, shareholding and gaqa dividends, e-commerce stations).
#include "fieldsync/server/demo.hpp"

#include "record_writes.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
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

// --- Demo survey records -------------------------------------------------------------------

namespace p = fieldsync::protocol;

constexpr std::int64_t minute_ms = 60LL * 1000;
constexpr std::int64_t hour_ms = 60 * minute_ms;
constexpr std::int64_t day_ms = 24 * hour_ms;
/// A tablet pushes what it recorded about this long after recording it (back in coverage).
constexpr std::int64_t sync_delay_ms = 90 * minute_ms;

/// The name of the survey the records are written for (protocol/schemas/household-survey.json).
constexpr std::string_view demo_survey_name = "ordos-household-survey";

std::array<std::uint8_t, 32> digest_of(const std::string& text) {
    return p::sha256(p::ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

/// A fixed replica id per demo author ("the tablet of enumerator-xini"), shaped as a UUIDv4.
ReplicaId demo_replica(std::string_view who) {
    auto d = digest_of("fieldsync demo replica " + std::string(who));
    ReplicaId r;
    std::copy_n(d.begin(), 16, r.bytes.begin());
    r.bytes[6] = static_cast<std::uint8_t>((r.bytes[6] & 0x0f) | 0x40);
    r.bytes[8] = static_cast<std::uint8_t>((r.bytes[8] & 0x3f) | 0x80);
    return r;
}

/// A UUIDv7 of the record's creation time whose random bits are derived from its name.
RecordId demo_record_id(const std::string& collection, std::size_t index, std::int64_t created_ms) {
    auto d = digest_of("fieldsync demo record " + collection + "/" + std::to_string(index));
    std::array<std::uint8_t, 10> random{};
    std::copy_n(d.begin(), random.size(), random.begin());
    return p::make_uuid_v7(static_cast<std::uint64_t>(created_ms), random);
}

/// "YYYYMMDD" -> "YYYY-MM-DD".
std::string dashed_date(std::string_view yyyymmdd) {
    return std::string(yyyymmdd.substr(0, 4)) + "-" + std::string(yyyymmdd.substr(4, 2)) + "-" +
           std::string(yyyymmdd.substr(6, 2));
}

/// An 18-digit identity number (GB 11643): 6-digit area code, birth date YYYYMMDD, a 3-digit
/// sequence (odd for men, even for women), and the ISO 7064 MOD 11-2 check character.
std::string identity_number(std::string_view area_code, std::string_view birth, int sequence,
                            bool male) {
    int seq = 100 + sequence % 800;
    if ((seq % 2 == 1) != male) ++seq;
    std::string body = std::string(area_code) + std::string(birth);
    body += std::to_string(seq);
    static constexpr int weights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (int i = 0; i < 17; ++i)
        sum += (body[static_cast<std::size_t>(i)] - '0') * weights[i];
    body += "10X98765432"[sum % 11];
    return body;
}

struct DemoVillage {
    const char* code;
    const char* id_area;  ///< the banner's identity-number area code
    std::int32_t lat_e7;  ///< approximate centre
    std::int32_t lon_e7;
    const char* recorder;    ///< whose tablet recorded the households
    const char* supervisor;  ///< who reviews the visits in the console
};

// The data tables keep one record per line or two (clang-format would put one value per line).
// clang-format off
// Approximate locations: Altan Xire (Ejin Horo's seat) lies about 39.6N 109.7E, Xini Town
// (Hanggin's seat) about 39.9N 108.7E.
const DemoVillage demo_villages[] = {
    {"ordos/ejin-horo/altan-xire/longhuqu", "150627", 395912000, 1097468000,
     "enumerator-longhuqu", "supervisor-ejin-horo"},
    {"ordos/ejin-horo/altan-xire/hashatu", "150627", 395325000, 1098104000, "enumerator-hashatu",
     "supervisor-ejin-horo"},
    // Nalinxili has no enumerator of its own: the banner supervisor visits it.
    {"ordos/ejin-horo/zasag/nalinxili", "150627", 392960000, 1098830000, "supervisor-ejin-horo",
     "supervisor-ejin-horo"},
    {"ordos/hanggin/xini/shengli", "150625", 398820000, 1087590000, "enumerator-xini",
     "supervisor-hanggin"},
    {"ordos/hanggin/xini/sishililiang", "150625", 398215000, 1086930000, "enumerator-xini",
     "supervisor-hanggin"},
    {"ordos/hanggin/xini/amenqi", "150625", 399085000, 1086610000, "enumerator-xini",
     "supervisor-hanggin"},
};

constexpr const char* happiness = "Happiness Pastorale land-adoption cooperative / 幸福田园土地认养合作社";
constexpr const char* hashatu_tourism = "Hashatu folk-custom tourism cooperative / 哈沙图民俗旅游合作社";
constexpr const char* nalinxili_breeding = "Nalinxili breeding cooperative (shares) / 纳林希里村养殖合作社";
constexpr const char* lvmei = "Lvmei pig-raising cooperative / 绿美生猪养殖合作社";
constexpr const char* xini_sheep = "Xini lambs-for-ewes sheep cooperative / 锡尼借母还羔养羊合作社";
constexpr const char* amenqi_collective = "Amenqi gaqa collective economy / 阿门其日格嘎查集体经济";

struct DemoHousehold {
    int village;
    const char* head;
    const char* birth;  ///< YYYYMMDD
    bool male;
    int members;
    const char* status;
    const char* exit_reason;    ///< exited only
    const char* identified_on;  ///< YYYY-MM-DD; nullptr: never registered as poor
    int income;                 ///< CNY per person and year
    std::vector<const char*> assistance;
    const char* cooperative;
    const char* notes;
};

// Incomes: below the national line about 2,600-3,300 CNY a year per person; below the
// municipal dibao line up to about 4,900; marginal 5,500-7,500; exited and not poor above.
const std::vector<DemoHousehold>& demo_households() {
    static const std::vector<DemoHousehold> list = {
        // 0-5 Longhuqu: land adoption ("Happiness Pastorale").
        {0, "Bayaertu 巴雅尔图", "19670412", true, 5, "national_line", nullptr, "2015-10-18", 2980,
         {"land_adoption", "lambs_for_ewes"}, happiness,
         "Wife has chronic bronchitis; 30 ewes under lambs-for-ewes."},
        {0, "Wang Jun 王军", "19750923", true, 4, "dibao_line", nullptr, "2016-04-07", 4260,
         {"land_adoption", "entrusted_breeding"}, happiness,
         "Rents 12 mu to the land-adoption scheme; 8 cattle in entrusted breeding."},
        {0, "Liu Xiuying 刘秀英", "19580130", false, 2, "national_line", nullptr, "2014-12-05",
         2640, {"entrusted_breeding"}, nullptr,
         "Widowed; lives with her grandson, who goes to school in Altan Xire."},
        {0, "Hasbagan 哈斯巴根", "19800616", true, 4, "marginal", nullptr, nullptr, 6350,
         {"land_adoption", "enriched_farmers_loan"}, happiness, nullptr},
        {0, "Zhao Guoqiang 赵国强", "19710305", true, 3, "exited", "income_above_line",
         "2015-10-20", 9860, {"land_adoption", "strengthened_farmers_loan"}, happiness,
         "Greenhouse vegetables sold to the families who adopt the land."},
        {0, "Sarangua 萨仁高娃", "19850221", false, 3, "not_poor", nullptr, nullptr, 18400, {},
         nullptr, "Runs a dairy stall in Altan Xire."},
        // 6-10 Hashatu: tourism.
        {1, "Chaolu 朝鲁", "19630808", true, 3, "national_line", nullptr, "2015-11-02", 3120,
         {"tourism_jobs", "lambs_for_ewes"}, hashatu_tourism,
         "Seasonal herdsman at the tourist camp; knee injury."},
        {1, "Chen Yumei 陈玉梅", "19690514", false, 2, "dibao_line", nullptr, "2016-03-15", 3880,
         {"tourism_jobs"}, hashatu_tourism,
         "Husband disabled; she cleans at the tourist camp in summer."},
        {1, "Erdenbatu 额尔登巴图", "19780119", true, 5, "marginal", nullptr, nullptr, 6900,
         {"tourism_jobs", "enriched_farmers_loan"}, hashatu_tourism,
         "Loan for a family yurt hostel; income depends on the summer season."},
        {1, "Sun Fuqing 孙福庆", "19550727", true, 2, "exited", "income_above_line", "2015-11-02",
         8420, {"tourism_jobs", "entrusted_breeding"}, hashatu_tourism, nullptr},
        {1, "Ulaanqiqige 乌兰其其格", "19830909", false, 4, "not_poor", nullptr, nullptr, 21500, {},
         nullptr, nullptr},
        // 11-13 Nalinxili: shareholding dividends from the breeding cooperative.
        {2, "Tumenbayar 图们巴雅尔", "19600403", true, 3, "national_line", nullptr, "2016-05-12",
         3050, {"shareholding_dividend"}, nalinxili_breeding,
         "Dividend of about 4,000 CNY a year from the cooperative shares."},
        {2, "Zhou Shuhua 周淑华", "19661118", false, 2, "dibao_line", nullptr, "2016-05-12", 4480,
         {"shareholding_dividend", "entrusted_breeding"}, nalinxili_breeding, nullptr},
        {2, "Buhe 布和", "19520622", true, 1, "exited", "deceased", "2014-12-10", 4100,
         {"shareholding_dividend"}, nalinxili_breeding,
         "Lived alone; died in the spring. Shares returned to the cooperative."},
        // 14-17 Shengli (Xini Town): pig raising, sheep, gaqa dividends.
        {3, "Ma Baoshan 马宝山", "19640215", true, 4, "national_line", nullptr, "2015-09-28", 2790,
         {"entrusted_breeding", "collective_economy_dividend"}, lvmei,
         "Keeps 6 sows with the Lvmei cooperative."},
        {3, "Siqin 斯琴", "19720430", false, 3, "dibao_line", nullptr, "2016-06-21", 4150,
         {"lambs_for_ewes", "collective_economy_dividend"}, xini_sheep, nullptr},
        {3, "Hu Zhanlin 胡占林", "19810812", true, 5, "exited", "income_above_line", "2015-09-28",
         10250, {"entrusted_breeding", "strengthened_farmers_loan"}, lvmei, nullptr},
        {3, "Aodengerile 敖登格日乐", "19890305", false, 3, "marginal", nullptr, nullptr, 5900,
         {"collective_economy_dividend"}, nullptr, nullptr},
        // 18-21 Sishililiang: the Lvmei pig-raising cooperative.
        {4, "Yang Fengqin 杨凤琴", "19610119", false, 2, "national_line", nullptr, "2015-10-09",
         2680, {"entrusted_breeding"}, lvmei, "Husband bedridden after a stroke."},
        {4, "Baoyindelger 宝音德力格尔", "19740704", true, 5, "national_line", nullptr,
         "2015-10-09", 3210, {"entrusted_breeding", "lambs_for_ewes", "enriched_farmers_loan"},
         lvmei, "Built a pig shed with an Enriched-Farmers Loan."},
        {4, "Guo Xiulan 郭秀兰", "19700228", false, 3, "exited", "relocated", "2016-06-21", 7300,
         {"entrusted_breeding"}, lvmei, "Moved to Xini town and registered there."},
        {4, "Du Jinhai 杜金海", "19770816", true, 4, "not_poor", nullptr, nullptr, 16800, {},
         nullptr, nullptr},
        // 22-25 Amenqi gaqa: collective-economy dividends, the e-commerce station.
        {5, "Menggenqiqige 孟根其其格", "19570912", false, 2, "dibao_line", nullptr, "2016-07-04",
         3720, {"collective_economy_dividend", "lambs_for_ewes"}, amenqi_collective, nullptr},
        {5, "Xu Wanfu 徐万福", "19680301", true, 3, "national_line", nullptr, "2015-10-15", 3010,
         {"collective_economy_dividend"}, amenqi_collective, nullptr},
        {5, "Narangerel 娜仁格日勒", "19860524", false, 4, "marginal", nullptr, nullptr, 7200,
         {"collective_economy_dividend", "ecommerce_station"}, amenqi_collective,
         "Sells dried beef through the e-commerce station."},
        {5, "Han Cuiping 韩翠萍", "19730708", false, 3, "exited", "income_above_line",
         "2015-10-15", 9150, {"collective_economy_dividend", "ecommerce_station"},
         amenqi_collective, nullptr},
    };
    return list;
}

struct DemoMember {
    int household;
    const char* name;
    const char* birth;  ///< YYYYMMDD
    bool male;
    const char* relation;
    const char* labor;
    const char* health;
    const char* education;
    bool in_school;
};

const std::vector<DemoMember>& demo_members() {
    static const std::vector<DemoMember> list = {
        {0, "Bayaertu 巴雅尔图", "19670412", true, "head",
         "ordinary", "healthy", "junior_secondary", false},
        {0, "Tuya 图雅", "19690825", false, "spouse", "weak", "chronic_illness", "primary", false},
        {0, "Aruhan 阿如汗", "19920317", false, "child",
         "skilled", "healthy", "senior_secondary", false},
        {0, "Bilegt 毕力格", "20080611", true, "child", "none", "healthy", "junior_secondary", true},
        {0, "Narsu 那日苏", "19400102", true, "parent", "lost", "serious_illness", "none", false},
        {2, "Liu Xiuying 刘秀英", "19580130", false, "head", "weak", "chronic_illness", "none", false},
        {2, "Zhang Hao 张浩", "20120905", true, "grandchild", "none", "healthy", "primary", true},
        {7, "Chen Yumei 陈玉梅", "19690514", false, "head",
         "ordinary", "healthy", "junior_secondary", false},
        {7, "Li Fugui 李福贵", "19660310", true, "spouse", "lost", "disabled", "primary", false},
        {14, "Ma Baoshan 马宝山", "19640215", true, "head", "ordinary", "healthy", "primary", false},
        {14, "Bai Yulan 白玉兰", "19660720", false, "spouse",
         "weak", "chronic_illness", "primary", false},
        {14, "Ma Wei 马伟", "19930411", true, "child",
         "skilled", "healthy", "senior_secondary", false},
        {14, "Ma Jing 马静", "20091003", false, "child", "none", "healthy", "junior_secondary", true},
    };
    return list;
}

struct DemoVisit {
    int household;
    const char* kind;
    int days_ago;  ///< 1 or more
    int hour_utc;  ///< 1-8 (09:00-16:00 in Ordos)
    int income_observed;  ///< -1: not recorded
    const char* findings;
    /// The tablet marks it "pending"; the supervisor (console) sets "approved"/"has_issues".
    const char* review;
    const char* review_comment;
    /// Recorded on this author's tablet instead of the village's recorder.
    const char* by = nullptr;
    /// Household fields the recorder changed during the visit (nullptr / -1: none).
    const char* set_status = nullptr;
    const char* set_exit_reason = nullptr;
    int set_income = -1;
    /// True: the recorder's tablet had not received the household's previous update (it was
    /// offline), so this change is concurrent with that one.
    bool concurrent = false;
};

const std::vector<DemoVisit>& demo_visits() {
    static const std::vector<DemoVisit> list = {
        // Longhuqu
        {0, "look_back", 40, 2, 3050,
         "Flock of 34 ewes under lambs-for-ewes; 12 lambs to return this autumn. Land-adoption "
         "rent of 2,400 CNY paid.",
         "approved", nullptr},
        {0, "extensive_visit", 9, 3, 3100,
         "Wife's bronchitis treatment covered by the serious-illness insurance; asked about the "
         "Enriched-Farmers Loan.",
         "pending", nullptr},
        {1, "look_back", 40, 4, 4300,
         "Adoption rent for 12 mu received; 8 cattle in entrusted breeding with the cooperative.",
         "approved", nullptr},
        {1, "extensive_visit", 18, 2, 8700,
         "Son now works at the Happiness Pastorale farm stay; income per capita appears above the "
         "line. Proposed for exit.",
         "has_issues",
         "Son's wage not confirmed with the employer; exit proposal on hold until the look back.",
         nullptr, "exited", "income_above_line", 8700},
        {1, "look_back", 16, 5, 4900,
         "The farm-stay job is seasonal (June to September): about 4,900 CNY per capita for the "
         "year. The household stays on dibao.",
         nullptr, nullptr, "supervisor-ejin-horo", "dibao_line", nullptr, -1, true},
        {2, "look_back", 39, 6, 2600,
         "Grandson's school fees waived; income from entrusted breeding only.", "approved",
         nullptr},
        {2, "extensive_visit", 6, 2, 2650,
         "Roof repaired by the village work team; needs help with coal for the winter.", nullptr,
         nullptr},
        {3, "identification", 12, 3, 6350,
         "Newly identified as marginal: loan repayments and a child in college; adoption rent "
         "counted.",
         "pending", nullptr},
        {4, "exit_verification", 33, 4, 9860,
         "Greenhouse vegetable sales checked against the cooperative's ledger: income stably above "
         "the line.",
         "approved", nullptr},
        {5, "extensive_visit", 37, 7, 18400,
         "Not poor: dairy stall in Altan Xire and two earners. No assistance needed.", "approved",
         nullptr},
        // Hashatu
        {6, "look_back", 35, 2, 3150,
         "Works at the tourist camp from May to October; the knee injury limits herding.",
         "approved", nullptr},
        {6, "extensive_visit", 5, 4, 3120,
         "No tourism income in winter; asked for entrusted breeding of his 10 sheep.", "pending",
         nullptr},
        {7, "look_back", 34, 3, 3900,
         "Husband's disability allowance and her summer cleaning wage confirmed.", "approved",
         nullptr},
        {8, "identification", 20, 5, 6900,
         "Identified as marginal: yurt-hostel loan of 50,000 CNY; income depends on the season.",
         "has_issues", "Loan amount and repayment schedule missing: attach the bank statement."},
        {8, "look_back", 4, 2, 7000,
         "Bank statement seen: 50,000 CNY Enriched-Farmers Loan, repaid monthly.", "pending",
         nullptr},
        {9, "exit_verification", 34, 6, 8420,
         "Tourism wage and entrusted-breeding income confirmed; exit verified.", "approved",
         nullptr},
        {10, "extensive_visit", 33, 1, 21500,
         "Not poor: runs a souvenir shop at the scenic area.", nullptr, nullptr},
        // Nalinxili (the supervisor's own visits)
        {11, "extensive_visit", 29, 3, 3050,
         "Cooperative shares pay about 4,000 CNY a year; medical costs are high.", nullptr,
         nullptr},
        {11, "look_back", 7, 4, 3080, "This year's dividend paid in full.", nullptr, nullptr},
        {12, "extensive_visit", 29, 5, 4480,
         "Dividend plus entrusted breeding; the daughter is in vocational school.", nullptr,
         nullptr},
        {13, "exit_verification", 28, 6, -1,
         "Head of household died in the spring; single-person household closed. Shares returned "
         "to the cooperative.",
         nullptr, nullptr},
        // Shengli
        {14, "look_back", 32, 2, 2800,
         "Six sows kept with the Lvmei cooperative; piglet sales due next month.", "approved",
         nullptr},
        {14, "extensive_visit", 8, 3, 2900,
         "Piglet sales brought 1,200 CNY; the son sends money from Xini town.", "pending",
         nullptr},
        {15, "look_back", 31, 4, 4150,
         "20 ewes under lambs-for-ewes; gaqa collective dividend received.", "approved", nullptr},
        {16, "exit_verification", 30, 5, 10250,
         "Pig sales and a business on a Strengthened-Farmers Loan verified; income above the line.",
         "has_issues", "Loan still outstanding: check the repayments before confirming the exit."},
        {16, "look_back", 3, 2, 10400,
         "Loan partly repaid; repayment plan signed with the bank.", "pending", nullptr},
        {17, "identification", 10, 6, 5900,
         "Newly identified as marginal: young family, one earner, collective dividend only.",
         nullptr, nullptr},
        // Sishililiang
        {18, "look_back", 32, 1, 2680,
         "Husband bedridden; she keeps 4 pigs with the cooperative.", "approved", nullptr},
        {18, "extensive_visit", 6, 3, 2700,
         "Needs a wheelchair and help with the medical bills.", nullptr, nullptr},
        {19, "look_back", 31, 2, 3210,
         "Entrusted breeding and 25 ewes under lambs-for-ewes; pig shed being built.", "approved",
         nullptr},
        {19, "extensive_visit", 15, 4, 3650,
         "Pig shed finished; about 3,650 CNY per capita by the family's own account.", nullptr,
         nullptr, nullptr, nullptr, nullptr, 3650},
        {19, "look_back", 13, 5, 4120,
         "The cooperative's ledger shows 2,400 CNY more from piglet sales: about 4,120 CNY per "
         "capita.",
         nullptr, nullptr, "supervisor-hanggin", nullptr, nullptr, 4120, true},
        {20, "exit_verification", 30, 3, 7300,
         "The family moved to Xini town in March and is registered there; removed from the "
         "village list.",
         "approved", nullptr},
        {21, "extensive_visit", 29, 4, 16800,
         "Not poor: truck driver; his wife works at the cooperative.", nullptr, nullptr},
        // Amenqi
        {22, "look_back", 28, 2, 3720,
         "Collective-economy dividend of 600 CNY received; 15 ewes under lambs-for-ewes.",
         "approved", nullptr},
        {22, "extensive_visit", 2, 3, 3750, "Asked about medical insurance for her husband.",
         "pending", nullptr},
        {23, "look_back", 27, 5, 3010, "Dividend received; no other income this year.", nullptr,
         nullptr},
        {24, "identification", 14, 3, 7200,
         "Newly identified as marginal: dried-beef sales through the e-commerce station vary a "
         "lot.",
         "has_issues", "The station's sales records are needed for the income figure."},
        {25, "exit_verification", 26, 4, 9150,
         "E-commerce station sales and the dividend verified; income above the line.",
         "approved", nullptr},
        {25, "extensive_visit", 1, 6, 9300, "Orders steady; no sign of a return to poverty.",
         nullptr, nullptr},
    };
    return list;
}
// clang-format on

/// Builds the records' states and the list of writes the server would have stored.
class DemoBuilder {
public:
    DemoBuilder(const p::Schema& schema, ReplicaId server_replica, std::int64_t now_ms)
        : m_schema(schema), m_server(server_replica), m_now(now_ms) {
        // Midnight UTC of the first start: visits lie on earlier days.
        m_today = now_ms - now_ms % day_ms;
    }

    struct Write {
        std::int64_t at_ms = 0;
        std::size_t order = 0;
        std::optional<p::RecordState> before;
        p::RecordState after;
        std::string user;
    };

    /// Fills writes(); the first problem (a value the schema refuses, times out of order) is
    /// returned as validation_failed.
    Status build();

    std::vector<Write>& writes() { return m_writes; }
    std::size_t households() const { return m_households; }
    std::size_t members() const { return m_members; }
    std::size_t visits() const { return m_visits; }

private:
    struct Tracked {
        p::RecordState state;
        std::optional<p::RecordState> stored;  ///< what the server holds
        std::int64_t last_push_ms = 0;
    };
    /// One local update: lww/review fields, elements added to set fields, counter deltas.
    struct Change {
        std::vector<std::pair<std::string, p::Value>> fields;
        std::vector<std::pair<std::string, std::string>> elements;
        std::vector<std::pair<std::string, std::int64_t>> counters;
    };

    Status apply(p::RecordState& s, const ReplicaId& replica, std::int64_t at_ms,
                 const std::string& by, const Change& change) const;
    Status push(Tracked& r, std::int64_t at_ms, const std::string& user);
    Tracked make(const std::string& collection, std::size_t index, std::int64_t created_ms) const;
    p::GeoPoint near(const DemoVillage& v, std::size_t salt, std::int32_t spread_e7) const;

    const p::Schema& m_schema;
    ReplicaId m_server;
    std::int64_t m_now = 0;
    std::int64_t m_today = 0;
    std::vector<Write> m_writes;
    std::size_t m_households = 0, m_members = 0, m_visits = 0;
};

Status DemoBuilder::apply(p::RecordState& s, const ReplicaId& replica, std::int64_t at_ms,
                          const std::string& by, const Change& change) const {
    const p::CollectionDef* coll = m_schema.find(s.collection);
    if (!coll)
        return Error{protocol_errc::validation_failed, "no collection named " + s.collection};
    p::Update u(s, replica, p::HlcTimestamp::from_parts(static_cast<std::uint64_t>(at_ms), 0), by);
    for (const auto& [name, value] : change.fields) {
        const p::FieldDef* def = coll->find(name);
        if (!def)
            return Error{protocol_errc::validation_failed, s.collection + ": no field " + name};
        if (auto st = coll->validate_value(name, value); !st) return st;
        if (auto st = u.set(name, def->rule, value); !st) return st;
    }
    for (const auto& [name, element] : change.elements) {
        if (auto st = coll->validate_value(name, p::Value{element}); !st) return st;
        if (auto st = u.add_element(name, p::Value{element}); !st) return st;
    }
    for (const auto& [name, delta] : change.counters) {
        if (auto st = coll->validate_value(name, p::Value{delta}); !st) return st;
        if (auto st = u.add_to_counter(name, delta); !st) return st;
    }
    return {};
}

Status DemoBuilder::push(Tracked& r, std::int64_t at_ms, const std::string& user) {
    if (at_ms <= r.last_push_ms || at_ms >= m_now)
        return Error{protocol_errc::validation_failed,
                     "demo data: " + r.state.collection + " " + r.state.id.to_string() +
                         " written out of order or in the future"};
    m_writes.push_back({at_ms, m_writes.size(), r.stored, r.state, user});
    r.stored = r.state;
    r.last_push_ms = at_ms;
    return {};
}

DemoBuilder::Tracked DemoBuilder::make(const std::string& collection, std::size_t index,
                                       std::int64_t created_ms) const {
    Tracked t;
    t.state.collection = collection;
    t.state.id = demo_record_id(collection, index, created_ms);
    return t;
}

p::GeoPoint DemoBuilder::near(const DemoVillage& v, std::size_t salt,
                              std::int32_t spread_e7) const {
    auto d = digest_of("fieldsync demo gps " + std::to_string(salt));
    auto offset = [&](std::size_t at) {
        const std::uint32_t x = (std::uint32_t{d[at]} << 8) | d[at + 1];  // 0..65535
        return static_cast<std::int32_t>((static_cast<std::int64_t>(x) - 32768) * spread_e7 /
                                         32768);
    };
    return p::GeoPoint{v.lat_e7 + offset(0), v.lon_e7 + offset(2) * 13 / 10};
}

Status DemoBuilder::build() {
    const auto& households = demo_households();
    const auto& visits = demo_visits();

    // When each visit took place, and each household's first visit (the record is made then).
    std::vector<std::int64_t> visit_ms(visits.size());
    std::vector<std::int64_t> first_visit(households.size(), 0);
    for (std::size_t i = 0; i < visits.size(); ++i) {
        const auto& v = visits[i];
        visit_ms[i] =
            m_today - v.days_ago * day_ms + v.hour_utc * hour_ms + (i % 6) * 7 * minute_ms;
        auto& first = first_visit[static_cast<std::size_t>(v.household)];
        if (first == 0 || visit_ms[i] < first) first = visit_ms[i];
    }

    std::vector<Tracked> hh;
    std::vector<p::GeoPoint> home;
    for (std::size_t i = 0; i < households.size(); ++i) {
        const auto& h = households[i];
        const auto& village = demo_villages[h.village];
        if (first_visit[i] == 0)
            return Error{protocol_errc::validation_failed, "demo household without a visit"};
        const std::int64_t created = first_visit[i] - 20 * minute_ms;
        Tracked t = make("households", i, created);
        home.push_back(near(village, i, 60000));
        Change c;
        c.fields = {{"village", std::string(village.code)},
                    {"head_name", std::string(h.head)},
                    {"head_id_number",
                     identity_number(village.id_area, h.birth, static_cast<int>(i * 37), h.male)},
                    {"members_count", std::int64_t{h.members}},
                    {"poverty_status", std::string(h.status)},
                    {"income_per_capita", std::int64_t{h.income}},
                    {"gps", home.back()}};
        if (h.exit_reason) c.fields.emplace_back("exit_reason", std::string(h.exit_reason));
        if (h.identified_on) c.fields.emplace_back("identified_on", std::string(h.identified_on));
        if (h.cooperative) c.fields.emplace_back("cooperative", std::string(h.cooperative));
        if (h.notes) c.fields.emplace_back("notes", std::string(h.notes));
        for (const char* a : h.assistance)
            c.elements.emplace_back("assistance", a);
        if (auto st = apply(t.state, demo_replica(village.recorder), created, village.recorder, c);
            !st)
            return st;
        if (auto st = push(t, created + sync_delay_ms, village.recorder); !st) return st;
        hh.push_back(std::move(t));
        ++m_households;
    }

    // Members: entered with their household.
    const auto& members = demo_members();
    for (std::size_t i = 0; i < members.size(); ++i) {
        const auto& m = members[i];
        const auto hi = static_cast<std::size_t>(m.household);
        const auto& village = demo_villages[households[hi].village];
        const std::int64_t created =
            first_visit[hi] - 15 * minute_ms + static_cast<std::int64_t>(i) * minute_ms;
        Tracked t = make("members", i, created);
        Change c;
        c.fields = {{"village", std::string(village.code)},
                    {"household", hh[hi].state.id.to_string()},
                    {"name", std::string(m.name)},
                    {"id_number", identity_number(village.id_area, m.birth,
                                                  static_cast<int>(i * 53 + 11), m.male)},
                    {"relation_to_head", std::string(m.relation)},
                    {"birth_date", dashed_date(m.birth)},
                    {"sex", std::string(m.male ? "male" : "female")},
                    {"labor_ability", std::string(m.labor)},
                    {"health", std::string(m.health)},
                    {"education", std::string(m.education)}};
        if (m.in_school) c.fields.emplace_back("in_school", true);
        if (auto st = apply(t.state, demo_replica(village.recorder), created, village.recorder, c);
            !st)
            return st;
        if (auto st = push(t, created + sync_delay_ms, village.recorder); !st) return st;
        ++m_members;
    }

    // Visits, in time order: the visit record, the household's visit count (and any change the
    // visit brought), and later the supervisor's review in the console.
    std::vector<std::size_t> order(visits.size());
    for (std::size_t i = 0; i < order.size(); ++i)
        order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return visit_ms[a] < visit_ms[b]; });
    // Each household's state before its latest update (what an offline tablet still holds).
    std::vector<p::RecordState> previous(hh.size());
    for (std::size_t i = 0; i < hh.size(); ++i)
        previous[i] = hh[i].state;
    for (std::size_t i : order) {
        const auto& v = visits[i];
        const auto hi = static_cast<std::size_t>(v.household);
        const auto& village = demo_villages[households[hi].village];
        const std::string by = v.by ? v.by : village.recorder;
        const ReplicaId replica = demo_replica(by);
        const std::int64_t at = visit_ms[i];
        // Recorded at the home, a few metres from the household's location.
        const p::GeoPoint at_home{home[hi].lat_e7 + static_cast<std::int32_t>(i % 7) * 90 - 270,
                                  home[hi].lon_e7 + static_cast<std::int32_t>(i % 5) * 110 - 220};

        Tracked t = make("visits", i, at);
        Change c;
        c.fields = {{"village", std::string(village.code)},
                    {"household", hh[hi].state.id.to_string()},
                    {"kind", std::string(v.kind)},
                    {"enumerator", by},
                    {"visited_at", iso_time(at)},
                    {"findings", std::string(v.findings)},
                    {"gps", at_home}};
        if (v.income_observed >= 0)
            c.fields.emplace_back("income_observed", std::int64_t{v.income_observed});
        if (v.review && std::string_view(v.review) == "pending")
            c.fields.emplace_back("review_status", std::string("pending"));
        if (auto st = apply(t.state, replica, at, by, c); !st) return st;
        if (auto st = push(t, at + sync_delay_ms, by); !st) return st;
        ++m_visits;

        // The household: one more visit, and what the visit changed.
        Change hc;
        hc.counters.emplace_back("visit_count", 1);
        if (v.set_status) hc.fields.emplace_back("poverty_status", std::string(v.set_status));
        if (v.set_exit_reason)
            hc.fields.emplace_back("exit_reason", std::string(v.set_exit_reason));
        if (v.set_income >= 0)
            hc.fields.emplace_back("income_per_capita", std::int64_t{v.set_income});
        if (v.set_status || v.set_income >= 0) hc.fields.emplace_back("gps", at_home);
        Tracked& h = hh[hi];
        if (v.concurrent) {
            // Made on a tablet that still held the state before the latest update, then joined
            // by the server when that tablet pushed: concurrent values stay side by side.
            p::RecordState offline = previous[hi];
            if (auto st = apply(offline, replica, at, by, hc); !st) return st;
            previous[hi] = h.state;
            if (auto st = h.state.join(offline); !st) return st;
        } else {
            previous[hi] = h.state;
            if (auto st = apply(h.state, replica, at, by, hc); !st) return st;
        }
        if (auto st = push(h, at + sync_delay_ms, by); !st) return st;

        // The supervisor's review in the console (the server's replica), two days later.
        if (v.review && std::string_view(v.review) != "pending") {
            const std::int64_t reviewed = std::min(at + 2 * day_ms + 3 * hour_ms, m_now - hour_ms);
            Change rc;
            rc.fields = {{"review_status", std::string(v.review)}};
            if (v.review_comment)
                rc.fields.emplace_back("review_comment", std::string(v.review_comment));
            if (auto st = apply(t.state, m_server, reviewed, village.supervisor, rc); !st)
                return st;
            if (auto st = push(t, reviewed, village.supervisor); !st) return st;
        }
    }
    std::stable_sort(m_writes.begin(), m_writes.end(), [](const Write& a, const Write& b) {
        return a.at_ms != b.at_ms ? a.at_ms < b.at_ms : a.order < b.order;
    });
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

Result<DemoRecords> seed_demo_records(Store& store, const protocol::Schema& schema,
                                      std::int64_t now_ms) {
    DemoRecords out;
    if (schema.name() != demo_survey_name) {
        out.skipped = "the served schema is \"" + schema.name() + "\", not the demo survey \"" +
                      std::string(demo_survey_name) + "\"";
        return out;
    }
    DemoBuilder builder(schema, store.server_replica(), now_ms);
    if (auto st = builder.build(); !st) {
        if (st.error().code == protocol_errc::validation_failed) {
            out.skipped = "the demo records do not fit schema version " +
                          std::to_string(schema.version()) + ": " + st.error().message;
            return out;
        }
        return internal("demo: building the records failed: " + st.error().message);
    }

    if (auto st = store.begin(); !st) return st.error();
    auto fail = [&store](std::string what, const Error& e) -> Result<DemoRecords> {
        store.rollback();
        return internal("demo: " + what + ": " + e.message);
    };
    auto last = store.last_seq();
    if (!last) return fail("reading the last sequence", last.error());
    if (*last != 0) {
        store.rollback();
        return out;  // the store holds records: nothing to seed
    }
    // A savepoint, so that a schema that refuses one record leaves no half of the data behind.
    if (auto st = store.savepoint(); !st) return fail("savepoint", st.error());
    for (auto& w : builder.writes()) {
        RecordChange change;
        change.before = w.before ? &*w.before : nullptr;
        change.after = &w.after;
        change.schema_version = schema.version();
        change.user = w.user;
        change.device = "demo";
        change.at_ms = w.at_ms;
        if (w.before) {
            auto area = schema.area_of(*w.before);
            if (area) change.before_area = *area;
        }
        auto r = write_record_change(store, schema, change, nullptr);
        if (!r) {
            if (r.error().code == protocol_errc::validation_failed) {
                store.rollback_savepoint();
                if (auto st = store.commit(); !st) return st.error();
                DemoRecords none;
                none.skipped = "schema version " + std::to_string(schema.version()) +
                               " refuses a demo " + w.after.collection +
                               " record: " + r.error().message;
                return none;
            }
            return fail("writing " + w.after.collection + " " + w.after.id.to_string(), r.error());
        }
        ++out.writes;
    }
    if (auto st = store.release_savepoint(); !st) return fail("savepoint", st.error());
    auto open = store.count_open_conflicts();  // the store held no records: all are ours
    if (!open) return fail("counting the conflicts", open.error());
    out.conflicts = *open;
    if (auto st = store.commit(); !st) return internal("demo: commit: " + st.error().message);
    out.households = builder.households();
    out.members = builder.members();
    out.visits = builder.visits();
    return out;
}

Result<DemoSeed> seed_demo(Store& store, const protocol::Schema* schema,
                           const std::filesystem::path& credentials_file, std::int64_t now_ms,
                           int password_iterations) {
    DemoSeed made;
    if (auto st = store.begin(); !st) return st.error();
    auto fail = [&store](Error e) -> Result<DemoSeed> {
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
        made.accounts.push_back({d.name, to_string(d.role), *password, join(d.areas, ",")});
    }
    if (schema) {
        auto records = seed_demo_records(store, *schema, now_ms);
        if (!records) return fail(records.error());
        made.records = std::move(*records);
    }

    std::ostringstream text;
    text << "# fieldsync demo accounts, created " << iso_time(now_ms) << ".\n"
         << "# Keep this file private. Change these passwords (or disable the accounts) before\n"
         << "# real data goes in: the console's Users page, or PUT /api/users/<name>.\n"
         << "# name                  role         password         areas\n";
    for (const auto& a : made.accounts) {
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
