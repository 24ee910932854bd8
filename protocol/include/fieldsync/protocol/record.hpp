// The replicated record model and its join. Laws: docs/merge-laws.md (cited below as L1..L12).
//
// A record state is a causal CRDT map (Almeida, Shoker, Baquero, "Delta State Replicated Data
// Types", 2018, §6): one causal context (a version vector) for the whole record, and one field
// state per field name, each built from dots.
//
//   RecordState  = collection, id, context: VersionVector, fields: name -> FieldState
//   Dot          = (replica, counter)    -- one per local update of the record (all fields
//                                            written by that update share it)
//   Entry        = dot, HLC timestamp, author ("by"), value
//   FieldState   = Lww{Entry}                        rule "lww"
//                | Review{Entry...}                  rule "review" (multi-value register)
//                | Set{element -> Dot...}            rule "set" (add-wins observed-remove set)
//                | Counter{replica -> (inc, dec)}    rule "counter" (PN-counter)
//
// Deletion is the reserved field "_deleted", a Review register of booleans. Every update of a
// live record writes `false` into it under the update's dot, and delete writes `true`; so a
// delete concurrent with an edit leaves both values in the register, which flags it for a
// supervisor (L10).
//
// Canonical encoding (SPEC.md §3.4, CDDL `record-state`), deterministic as RFC 8949 §4.2.1:
//   { "c": collection, "f": {name: field-state}, "id": bstr(16), "ctx": {bstr(16): uint} }
//   field-state = [0, entry] / [1, [* entry]] / [2, [* [value, [* dot]]]] / [3, [* [bstr, uint,
//   uint]]] entry = [bstr(16) replica, uint counter, uint ts, tstr by, value];  dot = [bstr(16),
//   uint]
// Map keys sorted by their encoded bytes; entries sorted by dot; set elements by encoded value.
//
// Thread-compatible value types; no I/O; the clock is passed in (an HlcTimestamp per update).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "fieldsync/protocol/cbor.hpp"
#include "fieldsync/protocol/hlc.hpp"
#include "fieldsync/protocol/ids.hpp"
#include "fieldsync/protocol/value.hpp"

namespace fieldsync::protocol {

/// The field that records deletion (a Review register of booleans).
inline constexpr std::string_view deleted_field = "_deleted";

/// Merge rules. The numeric values are the wire codes of field states (SPEC.md §3.4).
enum class MergeRule : std::uint8_t { lww = 0, review = 1, set = 2, counter = 3 };
const char* to_string(MergeRule r) noexcept;
/// Parses "lww", "review", "set", "counter".
std::optional<MergeRule> parse_merge_rule(std::string_view s) noexcept;

struct Dot {
    ReplicaId replica;
    std::uint64_t counter = 0;
    auto operator<=>(const Dot&) const = default;
};

/// A version vector: for each replica, the highest counter seen (all lower ones included).
/// Text form (for tests and logs): "3@<replica hex>;1@<replica hex>", sorted by replica.
class VersionVector {
public:
    std::uint64_t get(const ReplicaId& r) const noexcept;
    bool covers(const Dot& d) const noexcept { return d.counter <= get(d.replica); }
    /// this >= other pointwise.
    bool dominates(const VersionVector& other) const noexcept;
    /// Pointwise maximum.
    void merge(const VersionVector& other);
    /// Raises r's counter to at least `counter`.
    void raise(const ReplicaId& r, std::uint64_t counter);
    /// Returns the new dot (r, max(get(r), floor) + 1) and raises r's counter to it. A replica
    /// passes a floor that grows with every write it makes (to any record), so that it never
    /// issues the same dot twice, even for a record it dropped and later received again (L12).
    Dot next(const ReplicaId& r, std::uint64_t floor = 0);

    const std::vector<std::pair<ReplicaId, std::uint64_t>>& entries() const noexcept {
        return m_entries;
    }
    bool empty() const noexcept { return m_entries.empty(); }
    std::string to_string() const;
    bool operator==(const VersionVector&) const = default;

private:
    std::vector<std::pair<ReplicaId, std::uint64_t>> m_entries;  // sorted by replica, counters > 0
};

struct Entry {
    Dot dot;
    HlcTimestamp ts;
    std::string by;  ///< author: the user name under which the write was made
    Value value;
    bool operator==(const Entry&) const = default;
};

struct LwwState {
    Entry entry;
    bool operator==(const LwwState&) const = default;
};
struct ReviewState {
    std::vector<Entry> entries;  ///< sorted by dot, unique dots
    bool operator==(const ReviewState&) const = default;
};
struct SetState {
    std::map<Value, std::vector<Dot>> elements;  ///< element -> sorted non-empty dots
    bool operator==(const SetState&) const = default;
};
struct CounterState {
    struct Slot {
        std::uint64_t inc = 0;
        std::uint64_t dec = 0;
        bool operator==(const Slot&) const = default;
    };
    std::map<ReplicaId, Slot> slots;
    bool operator==(const CounterState&) const = default;
};

/// Variant index == MergeRule code.
using FieldState = std::variant<LwwState, ReviewState, SetState, CounterState>;
inline MergeRule rule_of(const FieldState& f) noexcept {
    return static_cast<MergeRule>(f.index());
}

/// What a reader sees of one field.
struct FieldView {
    MergeRule rule = MergeRule::lww;
    Value value;                   ///< lww: the value; review: the provisional value (the entry
                                   ///< with the greatest (ts, dot)); counter: the sum as int64
    std::vector<Value> elements;   ///< set: the present elements, ordered
    bool conflict = false;         ///< review: more than one distinct value is held
    std::vector<Entry> competing;  ///< review: every held entry (for the supervisor)
};

/// The value FieldView::value holds for `f`, without copying it: lww the entry's value,
/// review the provisional value, counter the sum (computed into `scratch`, which the result
/// then points to). nullptr for a set (its elements are the keys of SetState::elements) and
/// for a review register without entries (the view's value is null). The result lives as long
/// as `f` and `scratch`. Thread-compatible.
const Value* shown_value(const FieldState& f, Value& scratch);

struct RecordState {
    std::string collection;
    RecordId id;
    VersionVector context;
    std::map<std::string, FieldState> fields;

    bool operator==(const RecordState&) const = default;

    /// Joins `other` into this state (L1-L4). Fails with invalid_value, changing nothing, when
    /// the collection or id differ.
    Status join(const RecordState& other);

    /// The view of one field, or nullopt when the field was never written.
    std::optional<FieldView> view(std::string_view field) const;
    /// True when "_deleted"'s provisional value is true.
    bool is_deleted() const;
    /// Names of the review fields (including "_deleted") that hold competing values.
    std::vector<std::string> conflicts() const;
    /// Checks structural invariants: every dot covered by the context, entries sorted and
    /// unique, no empty dot lists, counters non-zero. Decoding calls this.
    Status check_invariants() const;
};

/// One local update of one record by one replica: every change made through it shares one dot
/// and one timestamp (one event in the causal history, one row in the audit log). Construct,
/// apply changes, done: the state is modified in place as you go.
class Update {
public:
    /// Starts an update: draws the next dot of `replica` in `state.context`, and writes
    /// `_deleted = false` under it (L10); mark_deleted() then overwrites that with true.
    /// `counter_floor`: see VersionVector::next (the SDK passes its persistent write counter).
    Update(RecordState& state, const ReplicaId& replica, HlcTimestamp ts, std::string by,
           std::uint64_t counter_floor = 0);

    /// lww or review field: replaces what this replica has seen with `value` (a resolution is
    /// exactly this on a review field: it covers every value held, L6). Fails with
    /// invalid_value when the field exists with another rule.
    Status set(std::string_view field, MergeRule rule, Value value);
    /// set field: adds (add-wins, L7) or removes an element.
    Status add_element(std::string_view field, Value element);
    Status remove_element(std::string_view field, const Value& element);
    /// counter field: adds `delta` (may be negative) to this replica's slot (L8).
    Status add_to_counter(std::string_view field, std::int64_t delta);
    /// Marks the record deleted (writes `_deleted = true`).
    void mark_deleted();

    const Dot& dot() const noexcept { return m_dot; }
    HlcTimestamp ts() const noexcept { return m_ts; }

private:
    Entry make_entry(Value v) const { return Entry{m_dot, m_ts, m_by, std::move(v)}; }
    RecordState& m_state;
    Dot m_dot;
    HlcTimestamp m_ts;
    std::string m_by;
};

/// Joins two field states (exposed for tests and the server's conflict bookkeeping).
/// `ctx_a`/`ctx_b` are the contexts of the records the fields belong to.
FieldState join_fields(const FieldState& a, const VersionVector& ctx_a, const FieldState& b,
                       const VersionVector& ctx_b);

/// Canonical encoding (L4). Equal states give equal bytes.
Bytes encode_record(const RecordState& s);
void encode_record(CborWriter& w, const RecordState& s);
/// Decodes and checks invariants. Errors name the path ("f.income[1][0][2]: ...").
Result<RecordState> decode_record(ByteView bytes, CborLimits limits = {});
Result<RecordState> decode_record(CborReader& r);
/// SHA-256 of the canonical encoding.
std::array<std::uint8_t, 32> record_digest(const RecordState& s);
std::array<std::uint8_t, 32> sha256(ByteView bytes);

}  // namespace fieldsync::protocol
