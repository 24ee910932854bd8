// libFuzzer target: Schema::load / Schema::check on arbitrary bytes, and, when a document loads,
// the properties every loaded schema must have:
//  - load and check agree (a model exactly when there are no problems; never an empty message);
//  - to_json is canonical: load(to_json()) is equal and prints the same text;
//  - a schema is a valid upgrade of itself;
//  - validate_record, validate_value and area_of run on records holding a fixed spread of values
//    in every declared field (plus an undeclared one) without crashing.
// Any violated property aborts, so the fuzzer reports it as a crash.
//
// Seed corpus: tests/fuzz/corpus/fuzz_schema/. Build: tests/fuzz/CMakeLists.txt (target
// fuzz_schema), or by hand:
//   clang++-14 -std=c++20 -g -fsanitize=fuzzer,address -Iprotocol/include \
//       tests/fuzz/fuzz_schema.cpp protocol/src/*.cpp -lcbor -lcrypto -lboost_json
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/schema.hpp"

using namespace fieldsync::protocol;

namespace {

void require(bool ok) {
    if (!ok) std::abort();
}

const std::array<Value, 12> sample_values = {
    Value{},
    Value{true},
    Value{std::int64_t{0}},
    Value{std::int64_t{-1}},
    Value{std::int64_t{9223372036854775807}},
    Value{std::string("ordos/dalad/shulinzhao")},
    Value{std::string("2017-09-10")},
    Value{std::string("2017-09-10T09:34:39Z")},
    Value{std::string("0190f3c2-7a1b-7c00-8000-000000000001")},
    Value{std::string("national_line")},
    Value{std::string("\xe5\x98\x8e\xe6\x9f\xa5")},  // "嘎查"
    Value{GeoPoint{395000000, 1098000000}},
};

std::size_t pick(std::string_view name, std::size_t salt) {
    std::size_t h = salt;
    for (char c : name)
        h = h * 131 + static_cast<unsigned char>(c);
    return h % sample_values.size();
}

void exercise(const Schema& s, const CollectionDef& c, std::size_t salt) {
    RecordState r;
    r.collection = c.name;
    r.id.bytes[15] = 1;
    ReplicaId replica;
    replica.bytes[15] = 7;
    {
        Update u(r, replica, HlcTimestamp::from_parts(1504999999000, 0), "fuzz");
        for (const FieldDef& f : c.fields) {
            const Value& v = sample_values[pick(f.name, salt)];
            (void)c.validate_value(f.name, v);
            (void)f.validate(sample_values[pick(f.name, salt + 1)]);
            switch (f.rule) {
                case MergeRule::lww:
                case MergeRule::review:
                    (void)u.set(f.name, f.rule, v);
                    break;
                case MergeRule::set:
                    (void)u.add_element(f.name, v);
                    break;
                case MergeRule::counter:
                    (void)u.add_to_counter(f.name, -3);
                    break;
            }
        }
        (void)u.set("zz_from_a_newer_version", MergeRule::review, std::string("kept"));
        if (salt % 2) u.mark_deleted();
    }
    Status st = s.validate_record(r);
    require(st.ok() || !st.error().message.empty());
    auto area = s.area_of(r);
    require(!area.ok() || is_valid_area_code(*area));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const auto problems = Schema::check(text);
    auto loaded = Schema::load(text);
    require(loaded.ok() == problems.empty());
    if (!loaded.ok()) {
        require(loaded.error().code == protocol_errc::schema_invalid);
        require(loaded.error().message == to_string(problems));
        return 0;
    }
    const Schema& s = *loaded;
    const std::string canonical = s.to_json();
    auto again = Schema::load(canonical);
    require(again.ok());
    require(*again == s);
    require(again->to_json() == canonical);
    require(s.check_upgrade_from(s).ok());

    for (std::size_t i = 0; i < s.collections().size(); ++i) {
        const CollectionDef& c = s.collections()[i];
        require(s.find(c.name) == &c);
        exercise(s, c, i);
    }
    return 0;
}
