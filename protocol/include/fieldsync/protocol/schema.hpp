// The survey schema: which collections exist, which fields they hold, each field's type and
// merge rule, and the validation of record states and single writes against it.
//
// The document format (JSON) is specified in docs/schema.md; that document is the reference for
// every key, the allowed type/merge combinations, validation semantics and how versions evolve.
// In short:
//
//   { "name": "ordos-household-survey", "version": 3, "title": {"en": "...", "zh": "..."},
//     "collections": [
//       { "name": "households", "area_field": "village", "title": {...},
//         "fields": [
//           {"name": "village", "type": "area", "merge": "lww", "required": true, "label": {...}},
//           {"name": "poverty_status", "type": "enum", "merge": "review",
//            "values": ["national_line", {"code": "dibao_line", "label": {"zh": "低保"}}, ...]},
//           ... ] } ] }
//
// Loading is strict: unknown keys, wrong JSON types, bad names, duplicate keys, impossible
// type/merge combinations and dangling references are all problems, and every problem found is
// reported with its location (a JSON path such as `collections[0].fields[3].merge`, or
// `line L, column C` for a JSON syntax error). Hostile input is bounded by SchemaLimits.
//
// Validation is lenient where the replicated model needs it: fields unknown to the schema (written
// by a newer schema version) are accepted and kept; a deleted record need not hold its required
// fields; null is "no value" and is accepted in any optional lww/review field.
//
// Thread-compatible value types: a loaded Schema is immutable through its const interface, so one
// Schema may be shared by any number of threads that only call const members.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fieldsync/protocol/error.hpp"
#include "fieldsync/protocol/record.hpp"
#include "fieldsync/protocol/value.hpp"

namespace fieldsync::protocol {

/// Field types (docs/schema.md §Field types). The document spells them as `to_string` does.
enum class FieldType : std::uint8_t {
    text,         ///< "text": UTF-8 text, optional min_length/max_length in characters
    integer,      ///< "integer": int64, optional min/max
    boolean,      ///< "boolean"
    date,         ///< "date": text "YYYY-MM-DD", a Gregorian calendar date, years 0001-9999
    datetime,     ///< "datetime": text "YYYY-MM-DDTHH:MM:SSZ" (UTC)
    enumeration,  ///< "enum": text, one of the field's value codes
    multi,        ///< "multi": a set of value codes (merge "set" only)
    geo,          ///< "geo": a GeoPoint
    reference,    ///< "reference": text, the lower-case 36-character id of a record in `target`
    area,         ///< "area": text area code such as "ordos/ejin-horo/altan-xire/longhuqu"
    counter,      ///< "counter": a PN-counter of integers (merge "counter" only)
};

/// The document spelling: "text", "integer", ..., "enum", ... \note Thread-safe.
const char* to_string(FieldType t) noexcept;
/// Parses the document spelling; nullopt for anything else. \note Thread-safe.
std::optional<FieldType> parse_field_type(std::string_view s) noexcept;
/// True when a field of type `t` may use merge rule `r`: `set` only and always for multi,
/// `counter` only and always for counter, `lww` or `review` for every other type.
/// \note Thread-safe.
bool merge_rule_allowed(FieldType t, MergeRule r) noexcept;

/// Localised text for user interfaces: language tag ("en", "zh", "mn", "zh-Hant") -> text.
using Labels = std::map<std::string, std::string, std::less<>>;

/// The text for `lang`, else English, else any; empty when there is none. \note Thread-safe.
std::string_view label_for(const Labels& labels, std::string_view lang) noexcept;

/// One code of an enum or multi field, with its optional labels.
struct Choice {
    std::string code;  ///< `[a-z0-9][a-z0-9_]{0,62}`; what is stored in records
    Labels label;
    bool operator==(const Choice&) const = default;
};

/// One field of a collection, as declared in the document.
struct FieldDef {
    std::string name;  ///< `[a-z][a-z0-9_]{0,62}`
    FieldType type = FieldType::text;
    MergeRule rule = MergeRule::lww;
    bool required = false;            ///< never true for counter fields
    std::vector<Choice> values;       ///< enum, multi: the codes, in document order
    std::optional<std::int64_t> min;  ///< integer: inclusive bounds
    std::optional<std::int64_t> max;
    std::optional<std::uint32_t> min_length;  ///< text: bounds in Unicode code points
    std::optional<std::uint32_t> max_length;
    std::string target;  ///< reference: the target collection's name
    std::string unit;    ///< integer, counter: display unit such as "CNY/year"
    Labels label;
    Labels description;

    bool operator==(const FieldDef&) const = default;

    /// The Choice with this code, or nullptr. \note Thread-compatible.
    const Choice* find_value(std::string_view code) const noexcept;

    /// Checks one value written into this field (see CollectionDef::validate_value for what a
    /// "value" is per merge rule). Success, or validation_failed with a message naming the field
    /// and the reason, e.g. `field members_count: 45 is above the maximum 30`.
    /// \note Thread-compatible.
    Status validate(const Value& v) const;
};

/// One collection of records.
struct CollectionDef {
    std::string name;        ///< `[a-z][a-z0-9_]{0,62}`
    std::string area_field;  ///< a required field of type area; scopes records to areas
    Labels title;
    Labels description;
    std::vector<FieldDef> fields;  ///< in document order; never contains "_deleted"

    bool operator==(const CollectionDef&) const = default;

    /// The field named `name`, or nullptr (also for "_deleted", which every collection has
    /// implicitly). \note Thread-compatible.
    const FieldDef* find(std::string_view name) const noexcept;

    /// Checks one typed write before it is applied (the SDK's check). What `v` is depends on the
    /// field's merge rule: lww/review: the new value (null clears; refused for required fields);
    /// set: one element being added; counter: the integer delta.
    /// Success, or validation_failed with a message such as
    /// `households: field poverty_status: "rich" is not one of national_line, dibao_line, ...`;
    /// a field not declared here is refused ("no field named ...").
    /// \note Thread-compatible.
    Status validate_value(std::string_view field, const Value& v) const;
};

/// Bounds applied while loading a document; hostile input beyond them is reported, never
/// processed further.
struct SchemaLimits {
    std::size_t max_document_bytes = 1u << 20;
    std::size_t max_depth = 16;  ///< nesting of JSON arrays and objects
    std::size_t max_collections = 64;
    std::size_t max_fields = 256;    ///< per collection
    std::size_t max_values = 256;    ///< codes per enum or multi field
    std::size_t max_problems = 100;  ///< problems reported before giving up
};

/// One problem found in a schema document.
struct SchemaProblem {
    std::string where;    ///< "collections[0].fields[3].merge", "line 4, column 17", "document"
    std::string message;  ///< `"sets" is not a merge rule (lww, review, set, counter)`
    bool operator==(const SchemaProblem&) const = default;
    /// `where + ": " + message`.
    std::string to_string() const;
};

/// The problems one per line, as they appear in Schema::load's error message.
std::string to_string(const std::vector<SchemaProblem>& problems);

/// A loaded, validated survey schema. Only `load` makes one, so every Schema satisfies all the
/// rules of docs/schema.md.
class Schema {
public:
    /// Parses and checks a schema document (UTF-8 JSON text).
    /// Success: the model. Failure: schema_invalid whose message lists every problem found, one
    /// per line, each as `where: what` (see `check` for the list itself).
    /// \note Thread-safe (touches no shared state).
    static Result<Schema> load(std::string_view json_text, const SchemaLimits& limits = {});

    /// The problems `load` would report, in document order; empty when the document is valid.
    /// \note Thread-safe.
    static std::vector<SchemaProblem> check(std::string_view json_text,
                                            const SchemaLimits& limits = {});

    const std::string& name() const noexcept { return m_name; }
    /// 1 .. 2^31-1; increases with every published change (docs/schema.md §Versions).
    std::uint32_t version() const noexcept { return m_version; }
    const Labels& title() const noexcept { return m_title; }
    const Labels& description() const noexcept { return m_description; }
    /// In document order.
    const std::vector<CollectionDef>& collections() const noexcept { return m_collections; }

    /// The collection named `name`, or nullptr. The pointer lives as long as this Schema.
    const CollectionDef* find(std::string_view collection) const noexcept;
    /// The field, or nullptr when the collection or the field is not declared.
    const FieldDef* find_field(std::string_view collection, std::string_view field) const noexcept;

    /// The canonical JSON text of this schema: compact, keys in the order docs/schema.md lists
    /// them, optional keys only when set. `load(to_json())` gives an equal Schema, and equal
    /// Schemas give equal text, so servers and tablets can store, send and compare it.
    std::string to_json() const;

    /// Checks a whole record state: the collection is declared; every declared field present in
    /// the state has the declared merge rule and holds only valid values (the lww entry, every
    /// review entry, every set element; a counter's total fits in int64); "_deleted" is a review
    /// register of booleans; required fields have a non-null (provisional) value, or for multi
    /// fields at least one element, unless the record is deleted. Fields not declared are
    /// accepted untouched (they come from a newer schema version).
    /// Failure: validation_failed; the message has one line per problem (at most 32), each
    /// naming the record, the field and the reason:
    /// `households/0190f3c2-...: field poverty_status: "rich" is not one of national_line, ...`.
    Status validate_record(const RecordState& record) const;

    /// CollectionDef::validate_value on the named collection; validation_failed also when the
    /// collection is not declared.
    Status validate_value(std::string_view collection, std::string_view field,
                          const Value& v) const;

    /// The area code of a record: the provisional value of its collection's area field.
    /// Failure: validation_failed when the collection is unknown or the area field is missing,
    /// null or not a valid area code.
    Result<std::string> area_of(const RecordState& record) const;

    /// Checks that this schema may replace `previous` on a server that holds data written under
    /// it (docs/schema.md §Versions): same name, higher version (or the same version and an
    /// equal schema), no collection or field removed, no type, merge rule, target or area_field
    /// changed, no enum/multi code removed, no range narrowed, no field newly required.
    /// Failure: schema_invalid listing every problem, one per line.
    Status check_upgrade_from(const Schema& previous) const;

    bool operator==(const Schema&) const = default;

private:
    Schema() = default;
    friend class SchemaLoader;

    std::string m_name;
    std::uint32_t m_version = 0;
    Labels m_title;
    Labels m_description;
    std::vector<CollectionDef> m_collections;
};

/// True when `code` is a valid area code: 1 to 16 segments separated by '/', each 1 to 64
/// characters of `[a-z0-9_-]` starting with a letter or digit, 255 bytes at most.
/// \note Thread-safe.
bool is_valid_area_code(std::string_view code) noexcept;
/// True when `area` is `scope` or lies under it ("ordos/dalad" contains "ordos/dalad/x" but not
/// "ordos/dalad-2"). Both are expected to be valid area codes. \note Thread-safe.
bool area_contains(std::string_view scope, std::string_view area) noexcept;

}  // namespace fieldsync::protocol
