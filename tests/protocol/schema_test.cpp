// Unit tests of the survey schema: loading (the demo survey and a table of bad documents),
// canonical JSON, validation of values and record states, area codes, upgrades.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/schema.hpp"

using namespace fieldsync::protocol;

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot open " << path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string demo_text() {
    return read_file(std::string(FIELDSYNC_SOURCE_DIR) + "/protocol/schemas/household-survey.json");
}

const Schema& demo() {
    static const Schema s = [] {
        auto r = Schema::load(demo_text());
        REQUIRE_MESSAGE(r.ok(), r.error().message);
        return std::move(r).value();
    }();
    return s;
}

/// A small valid document with one collection, "households", whose fields are `village` (the
/// area field, fields[0]) followed by `extra` (fields[1], ...).
std::string doc_with_fields(const std::string& extra, const std::string& more_collections = "") {
    return R"({"name": "t", "version": 1, "collections": [{"name": "households",
        "area_field": "village", "fields": [
        {"name": "village", "type": "area", "merge": "lww", "required": true})" +
           (extra.empty() ? std::string() : ", " + extra) + "]}" + more_collections + "]}";
}

/// The small test schema used by the validation tests.
const Schema& small() {
    static const Schema s = [] {
        auto r = Schema::load(doc_with_fields(R"(
            {"name": "head_name", "type": "text", "merge": "review", "required": true,
             "max_length": 8},
            {"name": "status", "type": "enum", "merge": "review", "values": ["poor", "not_poor"]},
            {"name": "income", "type": "integer", "merge": "review", "min": 0, "max": 1000},
            {"name": "assistance", "type": "multi", "merge": "set",
             "values": ["land_adoption", "tourism_jobs"]},
            {"name": "visits", "type": "counter", "merge": "counter"},
            {"name": "born", "type": "date", "merge": "lww"},
            {"name": "seen_at", "type": "datetime", "merge": "lww"},
            {"name": "gps", "type": "geo", "merge": "lww"},
            {"name": "head", "type": "reference", "merge": "lww", "target": "households"},
            {"name": "alive", "type": "boolean", "merge": "lww"},
            {"name": "notes", "type": "text", "merge": "lww"})"));
        REQUIRE_MESSAGE(r.ok(), r.error().message);
        return std::move(r).value();
    }();
    return s;
}

ReplicaId rid(std::uint8_t n) {
    ReplicaId r;
    r.bytes[15] = n;
    return r;
}

HlcTimestamp ts(std::uint64_t ms) {
    return HlcTimestamp::from_parts(ms, 0);
}

const char* const record_id_text = "0190f3c2-7a1b-7c00-8000-000000000001";

/// A valid household of the small schema.
RecordState valid_household() {
    RecordState s;
    s.collection = "households";
    s.id = Id128::parse(record_id_text).value();
    Update u(s, rid(1), ts(1000), "alice");
    REQUIRE(u.set("village", MergeRule::lww, std::string("ordos/dalad/shulinzhao/sishililiang")));
    REQUIRE(u.set("head_name", MergeRule::review, std::string("巴特尔")));
    REQUIRE(u.set("status", MergeRule::review, std::string("poor")));
    REQUIRE(u.set("income", MergeRule::review, std::int64_t{800}));
    REQUIRE(u.add_element("assistance", std::string("land_adoption")));
    REQUIRE(u.add_to_counter("visits", 2));
    REQUIRE(u.set("born", MergeRule::lww, std::string("1968-02-29")));
    REQUIRE(u.set("seen_at", MergeRule::lww, std::string("2017-09-10T09:34:39Z")));
    REQUIRE(u.set("gps", MergeRule::lww, GeoPoint{395000000, 1098000000}));
    REQUIRE(u.set("head", MergeRule::lww, std::string("0190f3c2-7a1b-7c00-8000-00000000000a")));
    REQUIRE(u.set("alive", MergeRule::lww, true));
    REQUIRE(u.set("notes", MergeRule::lww, Value{}));
    return s;
}

/// Applies one more update by replica 2 through `fn`.
template <class Fn>
RecordState updated(RecordState s, Fn&& fn) {
    Update u(s, rid(2), ts(2000), "bater");
    fn(u);
    return s;
}

bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("Schema: the demo survey loads with the expected collections, fields and rules") {
    const Schema& s = demo();
    CHECK(s.name() == "ordos-household-survey");
    CHECK(s.version() == 1);
    CHECK(label_for(s.title(), "zh") == "鄂尔多斯市精准扶贫建档立卡入户调查");
    REQUIRE(s.collections().size() == 3);
    CHECK(s.collections()[0].name == "households");
    CHECK(s.collections()[1].name == "members");
    CHECK(s.collections()[2].name == "visits");
    for (const auto& c : s.collections()) {
        CHECK(c.area_field == "village");
        const FieldDef* area = c.find(c.area_field);
        REQUIRE(area);
        CHECK(area->type == FieldType::area);
        CHECK(area->required);
        CHECK(c.find("_deleted") == nullptr);
        for (const auto& f : c.fields) {
            CHECK_MESSAGE(merge_rule_allowed(f.type, f.rule), c.name << "." << f.name);
            CHECK_MESSAGE(!label_for(f.label, "en").empty(), c.name << "." << f.name);
            CHECK_MESSAGE(!label_for(f.label, "zh").empty(), c.name << "." << f.name);
        }
    }

    SUBCASE("households") {
        struct Expect {
            const char* name;
            FieldType type;
            MergeRule rule;
            bool required;
        };
        const Expect expected[] = {
            {"village", FieldType::area, MergeRule::lww, true},
            {"head_name", FieldType::text, MergeRule::review, true},
            {"head_id_number", FieldType::text, MergeRule::review, false},
            {"members_count", FieldType::integer, MergeRule::review, false},
            {"poverty_status", FieldType::enumeration, MergeRule::review, true},
            {"exit_reason", FieldType::enumeration, MergeRule::review, false},
            {"identified_on", FieldType::date, MergeRule::review, false},
            {"income_per_capita", FieldType::integer, MergeRule::review, false},
            {"assistance", FieldType::multi, MergeRule::set, false},
            {"cooperative", FieldType::text, MergeRule::lww, false},
            {"gps", FieldType::geo, MergeRule::lww, false},
            {"phone", FieldType::text, MergeRule::lww, false},
            {"notes", FieldType::text, MergeRule::lww, false},
            {"visit_count", FieldType::counter, MergeRule::counter, false},
        };
        const CollectionDef* h = s.find("households");
        REQUIRE(h);
        REQUIRE(h->fields.size() == std::size(expected));
        for (std::size_t i = 0; i < std::size(expected); ++i) {
            CAPTURE(expected[i].name);
            CHECK(h->fields[i].name == expected[i].name);
            CHECK(h->fields[i].type == expected[i].type);
            CHECK(h->fields[i].rule == expected[i].rule);
            CHECK(h->fields[i].required == expected[i].required);
        }
        const FieldDef* status = h->find("poverty_status");
        REQUIRE(status->values.size() == 5);
        CHECK(status->values[1].code == "dibao_line");
        CHECK(label_for(status->values[1].label, "zh") == "低保贫困户");
        const FieldDef* assistance = h->find("assistance");
        REQUIRE(assistance->values.size() == 9);
        CHECK(assistance->find_value("lambs_for_ewes"));
        CHECK(assistance->find_value("strengthened_farmers_loan"));
        const FieldDef* income = h->find("income_per_capita");
        CHECK(income->min == 0);
        CHECK(income->max == 10000000);
        CHECK(income->unit == "CNY/year");
        CHECK(h->find("head_id_number")->min_length == 18u);
        CHECK(h->find("head_id_number")->max_length == 18u);
    }
    SUBCASE("members and visits") {
        const FieldDef* household = s.find_field("members", "household");
        REQUIRE(household);
        CHECK(household->type == FieldType::reference);
        CHECK(household->target == "households");
        CHECK(household->required);
        CHECK(s.find_field("members", "birth_date")->type == FieldType::date);
        CHECK(s.find_field("members", "in_school")->type == FieldType::boolean);
        CHECK(s.find_field("visits", "visited_at")->type == FieldType::datetime);
        CHECK(s.find_field("visits", "visited_at")->required);
        const FieldDef* kind = s.find_field("visits", "kind");
        REQUIRE(kind);
        CHECK(kind->find_value("look_back"));
        CHECK(label_for(kind->find_value("look_back")->label, "zh") == "回头看");
        CHECK(label_for(kind->find_value("extensive_visit")->label, "zh") == "大走访");
        CHECK(s.find_field("visits", "review_status")->rule == MergeRule::lww);
        CHECK(s.find_field("visits", "nope") == nullptr);
        CHECK(s.find_field("nope", "village") == nullptr);
    }
    SUBCASE("every field type is used") {
        std::set<FieldType> used;
        for (const auto& c : s.collections())
            for (const auto& f : c.fields)
                used.insert(f.type);
        CHECK(used.size() == 11);
    }
}

TEST_CASE("Schema: each bad document reports its location and reason") {
    struct Bad {
        const char* what;
        std::string doc;
        std::string where;
        std::string message;  // a substring of the problem's message
    };
    std::string nested = "{\"name\": \"t\", \"version\": 1, \"title\": ";
    for (int i = 0; i < 40; ++i)
        nested += "[";
    const std::string valid = doc_with_fields("");
    std::string many_collections;
    for (int i = 0; i < 65; ++i)
        many_collections += ", {\"name\": \"c" + std::to_string(i) + "\"}";

    const std::vector<Bad> table = {
        {"syntax error", "{\"name\": \"t\",\n  \"version\": 1,,\n}", "line 2, column 16",
         "invalid JSON: syntax error"},
        {"truncated", "{\"name\": \"t\"", "line 1, column 13", "invalid JSON"},
        {"empty input", "", "line 1, column 1", "invalid JSON"},
        {"text after the document", valid + " {}", "line 3, column",
         "unexpected text after the document"},
        {"invalid UTF-8", "{\"name\": \"t\xff\"}", "line 1, column 12", "invalid JSON"},
        {"too deep", nested, "line 1, column", "nested deeper than 16 levels"},
        {"not an object", "[1, 2]", "document", "expected a JSON object, got an array"},
        {"oversized", std::string(2u << 20, ' '), "document",
         "is 2097152 bytes; the limit is 1048576"},
        {"version is a string", R"({"name": "t", "version": "1", "collections": []})", "version",
         "expected an integer, got a string"},
        {"version zero", R"({"name": "t", "version": 0, "collections": []})", "version",
         "0 is out of range (1 to 2147483647)"},
        {"version fraction", R"({"name": "t", "version": 1.5, "collections": []})", "version",
         "expected an integer"},
        {"bad schema name", R"({"name": "Ordos Survey", "version": 1, "collections": []})", "name",
         "is not a valid schema name"},
        {"unknown top-level key", doc_with_fields("").insert(1, "\"colections\": [], "),
         "colections",
         "unknown key (allowed here: name, version, title, description, "
         "collections)"},
        {"no collections", R"({"name": "t", "version": 1, "collections": []})", "collections",
         "is empty"},
        {"too many collections", doc_with_fields("", many_collections), "collections",
         "has 66 collections; the limit is 64"},
        {"unknown field type",
         doc_with_fields(R"({"name": "income", "type": "number", "merge": "lww"})"),
         "collections[0].fields[1].type",
         "\"number\" is not a field type (text, integer, boolean, date, datetime, enum, multi, "
         "geo, reference, area, counter)"},
        {"bad merge rule",
         doc_with_fields(R"({"name": "assistance", "type": "multi", "merge": "sets",
             "values": ["a"]})"),
         "collections[0].fields[1].merge",
         "\"sets\" is not a merge rule (lww, review, set, counter)"},
        {"multi with lww",
         doc_with_fields(R"({"name": "assistance", "type": "multi", "merge": "lww",
             "values": ["a"]})"),
         "collections[0].fields[1].merge",
         "\"lww\" is not allowed for a multi field (a multi field merges with \"set\")"},
        {"counter with review",
         doc_with_fields(R"({"name": "visits", "type": "counter", "merge": "review"})"),
         "collections[0].fields[1].merge", "\"review\" is not allowed for a counter field"},
        {"text with set", doc_with_fields(R"({"name": "notes", "type": "text", "merge": "set"})"),
         "collections[0].fields[1].merge",
         "\"set\" is not allowed for a text field (use \"lww\" or \"review\")"},
        {"missing merge", doc_with_fields(R"({"name": "notes", "type": "text"})"),
         "collections[0].fields[1].merge", "missing"},
        {"required is a string",
         doc_with_fields(R"({"name": "notes", "type": "text", "merge": "lww",
             "required": "yes"})"),
         "collections[0].fields[1].required", "expected true or false, got a string"},
        {"misspelt key", doc_with_fields(R"({"name": "notes", "type": "text", "merge": "lww",
             "requried": true})"),
         "collections[0].fields[1].requried", "unknown key"},
        {"duplicate field", doc_with_fields(R"({"name": "notes", "type": "text", "merge": "lww"},
             {"name": "notes", "type": "text", "merge": "review"})"),
         "collections[0].fields[2].name", "\"notes\" is already the name of fields[1]"},
        {"reserved name",
         doc_with_fields(R"({"name": "_deleted", "type": "boolean", "merge": "review"})"),
         "collections[0].fields[1].name", "\"_deleted\" is reserved"},
        {"invalid field name",
         doc_with_fields(R"({"name": "Income", "type": "integer", "merge": "review"})"),
         "collections[0].fields[1].name", "\"Income\" is not a valid name"},
        {"missing area_field",
         R"({"name": "t", "version": 1, "collections": [{"name": "households", "fields": [
             {"name": "village", "type": "area", "merge": "lww", "required": true}]}]})",
         "collections[0].area_field", "missing"},
        {"area_field of wrong type",
         R"({"name": "t", "version": 1, "collections": [{"name": "households",
             "area_field": "village", "fields": [
             {"name": "village", "type": "text", "merge": "lww", "required": true}]}]})",
         "collections[0].area_field",
         "field \"village\" has type text; the area field must have type area"},
        {"area_field not required",
         R"({"name": "t", "version": 1, "collections": [{"name": "households",
             "area_field": "village", "fields": [
             {"name": "village", "type": "area", "merge": "lww"}]}]})",
         "collections[0].area_field", "must be required"},
        {"area_field names no field",
         R"({"name": "t", "version": 1, "collections": [{"name": "households",
             "area_field": "vilage", "fields": [
             {"name": "village", "type": "area", "merge": "lww", "required": true}]}]})",
         "collections[0].area_field", "\"vilage\" is not a field of this collection"},
        {"reference to unknown collection",
         doc_with_fields(R"({"name": "household", "type": "reference", "merge": "lww",
             "target": "houses"})"),
         "collections[0].fields[1].target",
         "\"houses\" is not a collection of this schema (households)"},
        {"reference without target",
         doc_with_fields(R"({"name": "household", "type": "reference", "merge": "lww"})"),
         "collections[0].fields[1].target", "missing"},
        {"enum without values",
         doc_with_fields(R"({"name": "status", "type": "enum", "merge": "review"})"),
         "collections[0].fields[1].values", "missing"},
        {"enum with empty values",
         doc_with_fields(R"({"name": "status", "type": "enum", "merge": "review",
             "values": []})"),
         "collections[0].fields[1].values", "is empty"},
        {"duplicate code", doc_with_fields(R"({"name": "status", "type": "enum", "merge": "review",
             "values": ["poor", {"code": "poor", "label": {"en": "Poor"}}]})"),
         "collections[0].fields[1].values[1].code", "\"poor\" is already listed at values[0]"},
        {"bad code", doc_with_fields(R"({"name": "status", "type": "enum", "merge": "review",
             "values": ["Poor"]})"),
         "collections[0].fields[1].values[0]", "\"Poor\" is not a valid code"},
        {"min above max",
         doc_with_fields(R"({"name": "income", "type": "integer", "merge": "review",
             "min": 10, "max": 5})"),
         "collections[0].fields[1].min", "min 10 is greater than max 5"},
        {"min on text",
         doc_with_fields(R"({"name": "notes", "type": "text", "merge": "lww", "min": 1})"),
         "collections[0].fields[1].min", "applies only to integer fields, not to text fields"},
        {"min is a fraction",
         doc_with_fields(R"({"name": "income", "type": "integer", "merge": "review",
             "min": 0.5})"),
         "collections[0].fields[1].min", "expected an integer, got a number with a fraction"},
        {"max too large",
         doc_with_fields(R"({"name": "income", "type": "integer", "merge": "review",
             "max": 18446744073709551615})"),
         "collections[0].fields[1].max", "is too large"},
        {"min_length above max_length",
         doc_with_fields(R"({"name": "notes", "type": "text", "merge": "lww",
             "min_length": 5, "max_length": 2})"),
         "collections[0].fields[1].min_length", "greater than max_length 2"},
        {"required counter",
         doc_with_fields(R"({"name": "visits", "type": "counter", "merge": "counter",
             "required": true})"),
         "collections[0].fields[1].required", "a counter field cannot be required"},
        {"duplicate JSON key", doc_with_fields(R"({"name": "notes", "type": "text", "merge": "lww",
             "merge": "review"})"),
         "collections[0].fields[1].merge", "duplicate key"},
        {"bad language tag", doc_with_fields(R"({"name": "notes", "type": "text", "merge": "lww",
             "label": {"english": "Notes"}})"),
         "collections[0].fields[1].label.english", "is not a language tag"},
        {"empty label", doc_with_fields(R"({"name": "notes", "type": "text", "merge": "lww",
             "label": {"zh": ""}})"),
         "collections[0].fields[1].label.zh", "is empty"},
        {"field is not an object", doc_with_fields("42"), "collections[0].fields[1]",
         "expected an object (a field), got a number"},
        {"duplicate collection",
         doc_with_fields("", R"(, {"name": "households", "area_field": "village", "fields": [
             {"name": "village", "type": "area", "merge": "lww", "required": true}]})"),
         "collections[1].name", "\"households\" is already the name of collections[0]"},
        {"odd key is quoted in the path",
         doc_with_fields(R"({"name": "notes", "type": "text", "merge": "lww", "a b": 1})"),
         "collections[0].fields[1][\"a b\"]", "unknown key"},
    };
    CHECK(table.size() >= 15);
    for (const auto& bad : table) {
        CAPTURE(bad.what);
        auto r = Schema::load(bad.doc);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == protocol_errc::schema_invalid);
        const auto problems = Schema::check(bad.doc);
        REQUIRE_FALSE(problems.empty());
        bool found = false;
        for (const auto& p : problems)
            found = found || (contains(p.where, bad.where) && contains(p.message, bad.message));
        CHECK_MESSAGE(found, "got:\n" << to_string(problems));
        CHECK(r.error().message == to_string(problems));
    }
}

TEST_CASE("Schema: every problem in a document is reported, in document order") {
    const std::string doc = R"({"name": "t", "version": 0, "collections": [
        {"name": "households", "area_field": "village", "fields": [
            {"name": "village", "type": "area", "merge": "lww", "required": true},
            {"name": "income", "type": "integer", "merge": "sets"},
            {"name": "assistance", "type": "multi", "merge": "lww", "values": ["a"]},
            {"name": "head", "type": "reference", "merge": "lww", "target": "nowhere"}]}]})";
    const auto problems = Schema::check(doc);
    REQUIRE(problems.size() == 4);
    CHECK(problems[0].where == "version");
    CHECK(problems[1].to_string() ==
          "collections[0].fields[1].merge: \"sets\" is not a merge rule (lww, review, set, "
          "counter)");
    CHECK(problems[2].where == "collections[0].fields[2].merge");
    CHECK(problems[3].where == "collections[0].fields[3].target");

    auto r = Schema::load(doc);
    REQUIRE_FALSE(r.ok());
    const std::string& msg = r.error().message;
    CHECK(std::count(msg.begin(), msg.end(), '\n') == 3);
    CHECK(msg.rfind("version: 0 is out of range", 0) == 0);

    SUBCASE("duplicate keys found while parsing are reported with the rest") {
        const std::string dup = R"({"name": "t", "name": "u", "version": 0, "collections": []})";
        const auto p = Schema::check(dup);
        REQUIRE(p.size() == 3);
        CHECK(p[0].to_string() == "name: duplicate key; a key may appear once");
        CHECK(p[1].where == "version");
        CHECK(p[2].where == "collections");
    }
    SUBCASE("the number of problems is capped") {
        std::string fields;
        for (int i = 0; i < 200; ++i) {
            if (i) fields += ", ";
            fields += R"({"name": "f)" + std::to_string(i) + R"(", "type": "x", "merge": "y"})";
        }
        SchemaLimits limits;
        limits.max_problems = 10;
        const auto p = Schema::check(doc_with_fields(fields), limits);
        REQUIRE(p.size() == 10);
        CHECK(p.back().message == "too many problems; stopped after 9");
    }
}

TEST_CASE("Schema: limits bound hostile documents") {
    SUBCASE("counts") {
        std::string values;
        for (int i = 0; i < 257; ++i)
            values += (i ? ", \"v" : "\"v") + std::to_string(i) + "\"";
        auto p = Schema::check(doc_with_fields(R"({"name": "e", "type": "enum", "merge": "lww",
            "values": [)" + values + "]}"));
        REQUIRE(p.size() == 1);
        CHECK(p[0].to_string() ==
              "collections[0].fields[1].values: has 257 codes; the limit is 256");

        std::string fields;
        for (int i = 0; i < 256; ++i)
            fields += (i ? ", " : "") + std::string(R"({"name": "f)") + std::to_string(i) +
                      R"(", "type": "text", "merge": "lww"})";
        p = Schema::check(doc_with_fields(fields));
        REQUIRE(p.size() == 1);
        CHECK(p[0].to_string() == "collections[0].fields: has 257 fields; the limit is 256");
    }
    SUBCASE("custom limits") {
        SchemaLimits limits;
        limits.max_document_bytes = 100;
        const auto p = Schema::check(demo_text(), limits);
        REQUIRE(p.size() == 1);
        CHECK(p[0].where == "document");
    }
    SUBCASE("long hostile strings are shortened in messages") {
        const std::string name(5000, 'X');
        const auto p = Schema::check(
            doc_with_fields(R"({"name": ")" + name + R"(", "type": "text", "merge": "lww"})"));
        REQUIRE(p.size() == 1);
        CHECK(p[0].message.size() < 300);
        CHECK(contains(p[0].message, "...\""));
    }
    SUBCASE("control characters are escaped in messages") {
        const auto p =
            Schema::check(doc_with_fields(R"({"name": "a\nb", "type": "text", "merge": "lww"})"));
        REQUIRE(p.size() == 1);
        CHECK(p[0].message.find('\n') == std::string::npos);
        CHECK(contains(p[0].message, "\"a\\u000ab\""));
    }
}

TEST_CASE("Schema: to_json is canonical and round-trips") {
    const Schema& s = demo();
    const std::string text = s.to_json();
    auto again = Schema::load(text);
    REQUIRE_MESSAGE(again.ok(), again.error().message);
    CHECK(*again == s);
    CHECK(again->to_json() == text);
    CHECK(text.find('\n') == std::string::npos);
    CHECK(text.rfind(R"({"name":"ordos-household-survey","version":1,"title":{)", 0) == 0);
    CHECK(contains(text, "\"zh\":\"嘎查/村\""));

    SUBCASE("string and object forms of a code are the same model") {
        auto a = Schema::load(doc_with_fields(
            R"({"name": "s", "type": "enum", "merge": "lww", "values": ["x", {"code": "y"}]})"));
        auto b = Schema::load(doc_with_fields(
            R"({"name": "s", "type": "enum", "merge": "lww", "values": [{"code": "x"}, "y"]})"));
        REQUIRE(a.ok());
        REQUIRE(b.ok());
        CHECK(*a == *b);
        CHECK(a->to_json() == b->to_json());
    }
    SUBCASE("a different document gives a different schema") {
        auto other = Schema::load(doc_with_fields(""));
        REQUIRE(other.ok());
        CHECK_FALSE(*other == s);
    }
}

TEST_CASE("Schema: validate_value checks one write against its field") {
    const CollectionDef& h = *small().find("households");
    struct Case {
        const char* field;
        Value value;
        const char* error;  // nullptr: accepted; else a substring of the message
    };
    const std::vector<Case> cases = {
        {"village", std::string("ordos/ejin-horo/altan-xire/longhuqu"), nullptr},
        {"village", std::string("Ordos//x"), "is not an area code"},
        {"village", Value{}, "is required; null would clear it"},
        {"head_name", std::string("巴特尔"), nullptr},
        {"head_name", std::string("一二三四五六七八"), nullptr},  // 8 characters, 24 bytes
        {"head_name", std::string("一二三四五六七八九"), "has 9 characters; the maximum is 8"},
        {"head_name", std::int64_t{5}, "expected text, got integer 5"},
        {"head_name", std::string("\xff"), "not valid UTF-8"},
        {"status", std::string("poor"), nullptr},
        {"status", Value{}, nullptr},
        {"status", std::string("rich"), "\"rich\" is not one of poor, not_poor"},
        {"income", std::int64_t{0}, nullptr},
        {"income", std::int64_t{1000}, nullptr},
        {"income", std::int64_t{-1}, "-1 is below the minimum 0"},
        {"income", std::int64_t{1001}, "1001 is above the maximum 1000"},
        {"income", std::string("800"), "expected an integer, got text \"800\""},
        {"assistance", std::string("tourism_jobs"), nullptr},
        {"assistance", std::string("lottery"), "is not one of land_adoption, tourism_jobs"},
        {"assistance", Value{}, "expected one of the field's codes as text, got null"},
        {"visits", std::int64_t{-3}, nullptr},
        {"visits", true, "expected an integer, got boolean true"},
        {"born", std::string("2016-02-29"), nullptr},
        {"born", std::string("2017-02-29"), "is not a calendar date"},
        {"born", std::string("2017-13-01"), "is not a calendar date"},
        {"born", std::string("1900-02-29"), "is not a calendar date"},
        {"born", std::string("2000-02-29"), nullptr},
        {"born", std::string("17-09-10"), "is not a calendar date"},
        {"seen_at", std::string("2017-09-10T09:34:39Z"), nullptr},
        {"seen_at", std::string("2017-09-10T24:00:00Z"), "is not a UTC date-time"},
        {"seen_at", std::string("2017-09-10 09:34:39"), "is not a UTC date-time"},
        {"seen_at", std::string("2017-09-10T09:34:39+08:00"), "is not a UTC date-time"},
        {"gps", GeoPoint{-900000000, 1800000000}, nullptr},
        {"gps", GeoPoint{900000001, 0}, "is not on Earth"},
        {"gps", std::string("39.6,109.7"), "expected a geo point"},
        {"head", std::string("0190f3c2-7a1b-7c00-8000-00000000000a"), nullptr},
        {"head", std::string("0190F3C2-7A1B-7C00-8000-00000000000A"), "is not a record id"},
        {"head", std::string("0190f3c27a1b7c00800000000000000a"), "is not a record id"},
        {"head", std::string("00000000-0000-0000-0000-000000000000"), "is not a record id"},
        {"alive", false, nullptr},
        {"alive", std::int64_t{1}, "expected true or false, got integer 1"},
        {"notes", Value{}, nullptr},
        {"nope", std::string("x"), "households: no field named \"nope\""},
    };
    for (const auto& c : cases) {
        CAPTURE(c.field);
        CAPTURE(to_display(c.value));
        Status st = h.validate_value(c.field, c.value);
        if (!c.error) {
            CHECK_MESSAGE(st.ok(), st.error().message);
            continue;
        }
        REQUIRE_FALSE(st.ok());
        CHECK(st.error().code == protocol_errc::validation_failed);
        CHECK_MESSAGE(contains(st.error().message, c.error), st.error().message);
        if (std::string(c.field) != "nope")
            CHECK(st.error().message.rfind("households: field " + std::string(c.field) + ": ", 0) ==
                  0);
    }
    SUBCASE("through the schema") {
        CHECK(small().validate_value("households", "income", std::int64_t{5}).ok());
        Status st = small().validate_value("farms", "income", std::int64_t{5});
        REQUIRE_FALSE(st.ok());
        CHECK(contains(st.error().message, "\"farms\" is not a collection of schema t v1"));
        CHECK(small().find_field("households", "income")->validate(std::int64_t{5}).ok());
    }
}

TEST_CASE("Schema: validate_record accepts valid records and names what is wrong") {
    const Schema& s = small();
    const RecordState good = valid_household();
    const std::string who = std::string("households/") + record_id_text + ": ";

    auto rejected = [&](const RecordState& r) {
        Status st = s.validate_record(r);
        REQUIRE_FALSE(st.ok());
        CHECK(st.error().code == protocol_errc::validation_failed);
        return st.error().message;
    };

    SUBCASE("a valid record") {
        CHECK(s.validate_record(good).ok());
    }
    SUBCASE("a minimal record: only required fields") {
        RecordState r;
        r.collection = "households";
        r.id = good.id;
        Update u(r, rid(1), ts(1), "alice");
        REQUIRE(u.set("village", MergeRule::lww, std::string("ordos")));
        REQUIRE(u.set("head_name", MergeRule::review, std::string("Bater")));
        CHECK(s.validate_record(r).ok());
    }
    SUBCASE("an unknown enum code") {
        auto r = updated(good, [](Update& u) {
            REQUIRE(u.set("status", MergeRule::review, std::string("rich")));
        });
        CHECK(rejected(r) ==
              who + "field status: \"rich\" is not one of poor, not_poor (written by \"bater\")");
    }
    SUBCASE("a wrong type") {
        auto r = updated(good, [](Update& u) {
            REQUIRE(u.set("income", MergeRule::review, std::string("800")));
        });
        CHECK(contains(rejected(r), who + "field income: expected an integer, got text \"800\""));
    }
    SUBCASE("out of range") {
        auto r = updated(good, [](Update& u) {
            REQUIRE(u.set("income", MergeRule::review, std::int64_t{5000}));
        });
        CHECK(contains(rejected(r), "field income: 5000 is above the maximum 1000"));
    }
    SUBCASE("a wrong merge rule") {
        auto r = updated(good, [](Update&) {});
        r.fields.erase("status");
        {
            Update u(r, rid(2), ts(3000), "bater");
            REQUIRE(u.set("status", MergeRule::lww, std::string("poor")));
        }
        CHECK(contains(rejected(r),
                       "field status: holds a lww state, but the schema merges it with review"));
    }
    SUBCASE("a missing required field") {
        RecordState r = good;
        r.fields.erase("head_name");
        CHECK(rejected(r) == who + "field head_name: is required but has no value");
    }
    SUBCASE("a required field cleared with null") {
        auto r = updated(
            good, [](Update& u) { REQUIRE(u.set("head_name", MergeRule::review, Value{})); });
        CHECK(contains(rejected(r),
                       "field head_name: is required but its provisional value is "
                       "null"));
    }
    SUBCASE("a bad set element") {
        auto r = updated(
            good, [](Update& u) { REQUIRE(u.add_element("assistance", std::string("lottery"))); });
        CHECK(contains(rejected(r), "field assistance: \"lottery\" is not one of"));
    }
    SUBCASE("every value held in a review conflict is checked") {
        RecordState a = good, b = good;
        {
            Update u(a, rid(2), ts(2000), "bater");
            REQUIRE(u.set("income", MergeRule::review, std::int64_t{900}));
        }
        {
            Update u(b, rid(3), ts(1500), "chen");
            REQUIRE(u.set("income", MergeRule::review, std::int64_t{-5}));
        }
        REQUIRE(a.join(b));
        REQUIRE(a.view("income")->conflict);
        CHECK(rejected(a) == who + "field income: -5 is below the minimum 0 (written by \"chen\")");
    }
    SUBCASE("several problems are all reported, one per line") {
        auto r = updated(good, [](Update& u) {
            REQUIRE(u.set("status", MergeRule::review, std::string("rich")));
            REQUIRE(u.set("born", MergeRule::lww, std::string("2017-02-30")));
        });
        r.fields.erase("head_name");
        const std::string msg = rejected(r);
        CHECK(std::count(msg.begin(), msg.end(), '\n') == 2);
        CHECK(contains(msg, "field head_name: is required"));
        CHECK(contains(msg, "field status: \"rich\""));
        CHECK(contains(msg, "field born: \"2017-02-30\" is not a calendar date"));
    }
    SUBCASE("unknown fields are accepted and kept") {
        auto r = updated(good, [](Update& u) {
            REQUIRE(u.set("field_from_v2", MergeRule::review, std::string("anything")));
            REQUIRE(u.add_element("set_from_v2", std::int64_t{7}));
        });
        CHECK(s.validate_record(r).ok());
        CHECK(r.fields.count("field_from_v2") == 1);
    }
    SUBCASE("a deleted record need not hold its required fields") {
        RecordState r = good;
        r.fields.erase("head_name");
        {
            Update u(r, rid(2), ts(3000), "bater");
            u.mark_deleted();
        }
        REQUIRE(r.is_deleted());
        CHECK(s.validate_record(r).ok());
        SUBCASE("but its values must still be valid") {
            auto bad = updated(r, [](Update& u) {
                REQUIRE(u.set("income", MergeRule::review, std::int64_t{-1}));
                u.mark_deleted();
            });
            REQUIRE(bad.is_deleted());
            CHECK(contains(rejected(bad), "field income: -1 is below the minimum 0"));
        }
    }
    SUBCASE("_deleted must hold booleans") {
        RecordState r = good;
        auto& del = std::get<ReviewState>(r.fields.at(std::string(deleted_field)));
        REQUIRE_FALSE(del.entries.empty());
        del.entries[0].value = std::string("yes");
        CHECK(contains(rejected(r), "field _deleted: expected true or false, got text \"yes\""));
        r.fields[std::string(deleted_field)] = LwwState{};
        CHECK(contains(rejected(r), "field _deleted: holds a lww state"));
    }
    SUBCASE("a counter total must fit in int64") {
        RecordState r = good;
        auto& c = std::get<CounterState>(r.fields.at("visits"));
        c.slots[rid(7)] = CounterState::Slot{std::uint64_t{1} << 63, 0};
        CHECK(contains(rejected(r), "field visits: the counter's total does not fit"));
        c.slots[rid(7)] = CounterState::Slot{0, (std::uint64_t{1} << 63) + 3};
        CHECK_FALSE(s.validate_record(r).ok());  // 2 - (2^63 + 3) = -(2^63) - 1: does not fit
        c.slots[rid(7)] = CounterState::Slot{0, (std::uint64_t{1} << 63) + 2};
        CHECK(s.validate_record(r).ok());  // 2 - (2^63 + 2) = -(2^63): fits
    }
    SUBCASE("an unknown collection") {
        RecordState r = good;
        r.collection = "farms";
        CHECK(rejected(r) == std::string("farms/") + record_id_text +
                                 ": \"farms\" is not a collection of schema t v1");
    }
    SUBCASE("the demo survey validates its own kind of record") {
        RecordState r;
        r.collection = "visits";
        r.id = good.id;
        Update u(r, rid(1), ts(1), "alice");
        REQUIRE(
            u.set("village", MergeRule::lww, std::string("ordos/ejin-horo/altan-xire/longhuqu")));
        REQUIRE(u.set("household", MergeRule::lww,
                      std::string("0190f3c2-7a1b-7c00-8000-00000000000a")));
        REQUIRE(u.set("kind", MergeRule::lww, std::string("look_back")));
        REQUIRE(u.set("visited_at", MergeRule::lww, std::string("2017-09-10T01:34:39Z")));
        REQUIRE(u.set("income_observed", MergeRule::review, std::int64_t{4200}));
        REQUIRE(u.set("review_status", MergeRule::lww, std::string("pending")));
        CHECK(demo().validate_record(r).ok());
        REQUIRE(u.set("review_status", MergeRule::lww, std::string("done")));
        CHECK_FALSE(demo().validate_record(r).ok());
    }
}

TEST_CASE("Schema: area codes and area_of") {
    CHECK(is_valid_area_code("ordos"));
    CHECK(is_valid_area_code("ordos/ejin-horo/altan-xire/longhuqu"));
    CHECK(is_valid_area_code("ordos/dalad/shulinzhao/sishililiang_2"));
    CHECK_FALSE(is_valid_area_code(""));
    CHECK_FALSE(is_valid_area_code("ordos/"));
    CHECK_FALSE(is_valid_area_code("/ordos"));
    CHECK_FALSE(is_valid_area_code("ordos//dalad"));
    CHECK_FALSE(is_valid_area_code("Ordos"));
    CHECK_FALSE(is_valid_area_code("ordos/-x"));
    CHECK_FALSE(is_valid_area_code("鄂尔多斯"));
    CHECK_FALSE(is_valid_area_code(std::string(256, 'a')));
    std::string deep = "a";
    for (int i = 0; i < 15; ++i)
        deep += "/a";
    CHECK(is_valid_area_code(deep));
    CHECK_FALSE(is_valid_area_code(deep + "/a"));

    CHECK(area_contains("ordos", "ordos"));
    CHECK(area_contains("ordos/dalad", "ordos/dalad/x"));
    CHECK_FALSE(area_contains("ordos/dalad", "ordos/dalad-2"));
    CHECK_FALSE(area_contains("ordos/dalad", "ordos"));

    RecordState r = valid_household();
    auto area = small().area_of(r);
    REQUIRE(area.ok());
    CHECK(*area == "ordos/dalad/shulinzhao/sishililiang");

    r.fields.erase("village");
    auto missing = small().area_of(r);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == protocol_errc::validation_failed);
    CHECK(missing.error().message ==
          std::string("households/") + record_id_text + ": area field village has no value");

    RecordState bad = updated(valid_household(), [](Update& u) {
        REQUIRE(u.set("village", MergeRule::lww, std::string("Ordos")));
    });
    CHECK_FALSE(small().area_of(bad).ok());
    RecordState other = valid_household();
    other.collection = "farms";
    CHECK_FALSE(small().area_of(other).ok());
}

TEST_CASE("Schema: upgrades may only add") {
    const std::string v1 = doc_with_fields(R"(
        {"name": "status", "type": "enum", "merge": "review", "values": ["a", "b"]},
        {"name": "income", "type": "integer", "merge": "review", "min": 0, "max": 100},
        {"name": "notes", "type": "text", "merge": "lww", "max_length": 10})");
    auto load = [](std::string text) {
        auto r = Schema::load(text);
        REQUIRE_MESSAGE(r.ok(), r.error().message);
        return std::move(r).value();
    };
    const Schema old = load(v1);
    auto v2 = [&](std::string from, std::string to) {
        std::string text = v1;
        text.replace(text.find("\"version\": 1"), 12, "\"version\": 2");
        if (!from.empty()) {
            const auto at = text.find(from);
            REQUIRE(at != std::string::npos);
            text.replace(at, from.size(), to);
        }
        return load(text);
    };
    auto problems = [&](const Schema& next) {
        Status st = next.check_upgrade_from(old);
        return st.ok() ? std::string() : st.error().message;
    };

    CHECK(problems(old).empty());  // the same schema again
    CHECK(problems(v2("", "")).empty());
    CHECK(problems(v2(R"(["a", "b"])", R"(["b", "a", "c"])")).empty());
    CHECK(problems(v2(R"("min": 0, "max": 100)", R"("min": -10)")).empty());
    CHECK(problems(v2(R"("max_length": 10)", R"("max_length": 20, "label": {"en": "Notes"})"))
              .empty());
    CHECK(problems(v2(R"("max_length": 10})",
                      R"("max_length": 10}, {"name": "extra", "type": "boolean", "merge": "lww"})"))
              .empty());

    CHECK(contains(problems(v2(R"(["a", "b"])", R"(["a"])")),
                   "collections[0].fields[1].values: code \"b\" of version 1 is missing"));
    CHECK(contains(
        problems(v2(R"("type": "enum", "merge": "review")", R"("type": "enum", "merge": "lww")")),
        "collections[0].fields[1].merge: lww differs from review of version 1"));
    CHECK(contains(
        problems(
            v2(R"({"name": "income", "type": "integer", "merge": "review", "min": 0, "max": 100})",
               R"({"name": "income", "type": "text", "merge": "review"})")),
        "collections[0].fields[2].type: text differs from integer of version 1"));
    CHECK(contains(problems(v2(R"("max": 100)", R"("max": 50)")),
                   "collections[0].fields[2].max: narrows the range of version 1"));
    CHECK(contains(problems(v2(R"("max_length": 10)", R"("max_length": 5)")),
                   "collections[0].fields[3].max_length"));
    CHECK(
        contains(problems(v2(R"(, "max_length": 10})", R"(, "max_length": 10, "required": true})")),
                 "collections[0].fields[3].required: the field was optional in version 1"));
    CHECK(contains(problems(v2(R"(,
        {"name": "notes", "type": "text", "merge": "lww", "max_length": 10})",
                               "")),
                   "collections[0].fields: field \"notes\" of version 1 is missing"));
    CHECK(contains(problems(v2(R"("max_length": 10})",
                               R"("max_length": 10}, {"name": "extra", "type": "boolean",
                                  "merge": "lww", "required": true})")),
                   "collections[0].fields[4].required: a field added to an existing collection "
                   "cannot be required"));

    std::string same_version = v1;
    same_version.replace(same_version.find(R"(["a", "b"])"), 10, R"(["a", "b", "c"])");
    CHECK(contains(problems(load(same_version)),
                   "version: version 1 is already published with different content; publish "
                   "this as version 2"));
    Status back = old.check_upgrade_from(v2("", ""));
    REQUIRE_FALSE(back.ok());
    CHECK(back.error().code == protocol_errc::schema_invalid);
    CHECK(contains(back.error().message, "version: 1 is older than the current version 2"));

    CHECK(demo().check_upgrade_from(demo()).ok());
    CHECK(contains(demo().check_upgrade_from(old).error().message, "name: "));
}

TEST_CASE("Schema: type and rule names") {
    for (auto t : {FieldType::text, FieldType::integer, FieldType::boolean, FieldType::date,
                   FieldType::datetime, FieldType::enumeration, FieldType::multi, FieldType::geo,
                   FieldType::reference, FieldType::area, FieldType::counter}) {
        CAPTURE(to_string(t));
        CHECK(parse_field_type(to_string(t)) == t);
    }
    CHECK(std::string(to_string(FieldType::enumeration)) == "enum");
    CHECK_FALSE(parse_field_type("enumeration").has_value());
    CHECK_FALSE(parse_field_type("Text").has_value());

    CHECK(merge_rule_allowed(FieldType::text, MergeRule::lww));
    CHECK(merge_rule_allowed(FieldType::area, MergeRule::review));
    CHECK_FALSE(merge_rule_allowed(FieldType::text, MergeRule::set));
    CHECK_FALSE(merge_rule_allowed(FieldType::integer, MergeRule::counter));
    CHECK(merge_rule_allowed(FieldType::multi, MergeRule::set));
    CHECK_FALSE(merge_rule_allowed(FieldType::multi, MergeRule::review));
    CHECK(merge_rule_allowed(FieldType::counter, MergeRule::counter));
    CHECK_FALSE(merge_rule_allowed(FieldType::counter, MergeRule::lww));

    const Labels l = {{"en", "Village"}, {"zh", "嘎查/村"}};
    CHECK(label_for(l, "zh") == "嘎查/村");
    CHECK(label_for(l, "mn") == "Village");
    CHECK(label_for(Labels{{"zh", "村"}}, "mn") == "村");
    CHECK(label_for(Labels{}, "en").empty());
}
