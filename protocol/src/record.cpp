// The record model: join, local updates, reads, canonical encoding.
//
// The laws this file implements are numbered in docs/merge-laws.md; comments cite them.
// Summary of the join (for states a, b with contexts ca, cb):
//   context      ca ⊔ cb (pointwise max)                                   L9
//   lww          the entry with the greater (ts, dot)                       L1-L3
//   review       {e ∈ a : e ∈ b ∨ e.dot ∉ cb} ∪ {e ∈ b : e.dot ∉ ca}       L5, L6
//   set          per element, dots = (da ∩ db) ∪ (da \ cb) ∪ (db \ ca);
//                elements with no dots left are absent                       L7
//   counter      per replica, (max inc, max dec)                             L8
//   field absent on one side: joined with that rule's bottom (empty)
//   rules differ: the higher rule code wins whole                            L11
#include "fieldsync/protocol/record.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <limits>

namespace fieldsync::protocol {

const char* to_string(MergeRule r) noexcept {
    switch (r) {
        case MergeRule::lww:
            return "lww";
        case MergeRule::review:
            return "review";
        case MergeRule::set:
            return "set";
        case MergeRule::counter:
            return "counter";
    }
    return "unknown";
}

std::optional<MergeRule> parse_merge_rule(std::string_view s) noexcept {
    if (s == "lww") return MergeRule::lww;
    if (s == "review") return MergeRule::review;
    if (s == "set") return MergeRule::set;
    if (s == "counter") return MergeRule::counter;
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// VersionVector

namespace {
auto find_replica(const std::vector<std::pair<ReplicaId, std::uint64_t>>& v, const ReplicaId& r) {
    return std::lower_bound(v.begin(), v.end(), r,
                            [](const auto& e, const ReplicaId& id) { return e.first < id; });
}
}  // namespace

std::uint64_t VersionVector::get(const ReplicaId& r) const noexcept {
    auto it = find_replica(m_entries, r);
    return it != m_entries.end() && it->first == r ? it->second : 0;
}

bool VersionVector::dominates(const VersionVector& other) const noexcept {
    return std::all_of(other.m_entries.begin(), other.m_entries.end(),
                       [this](const auto& e) { return get(e.first) >= e.second; });
}

void VersionVector::merge(const VersionVector& other) {
    std::vector<std::pair<ReplicaId, std::uint64_t>> out;
    out.reserve(m_entries.size() + other.m_entries.size());
    auto a = m_entries.begin();
    auto b = other.m_entries.begin();
    while (a != m_entries.end() || b != other.m_entries.end()) {
        if (b == other.m_entries.end() || (a != m_entries.end() && a->first < b->first)) {
            out.push_back(*a++);
        } else if (a == m_entries.end() || b->first < a->first) {
            out.push_back(*b++);
        } else {
            out.emplace_back(a->first, std::max(a->second, b->second));
            ++a;
            ++b;
        }
    }
    m_entries = std::move(out);
}

void VersionVector::raise(const ReplicaId& r, std::uint64_t counter) {
    if (counter == 0) return;
    auto it = std::lower_bound(m_entries.begin(), m_entries.end(), r,
                               [](const auto& e, const ReplicaId& id) { return e.first < id; });
    if (it != m_entries.end() && it->first == r) {
        it->second = std::max(it->second, counter);
    } else {
        m_entries.insert(it, {r, counter});
    }
}

Dot VersionVector::next(const ReplicaId& r, std::uint64_t floor) {
    const std::uint64_t c = std::max(get(r), floor) + 1;
    raise(r, c);
    return Dot{r, c};
}

std::string VersionVector::to_string() const {
    std::string s;
    for (const auto& [r, c] : m_entries) {
        if (!s.empty()) s += ';';
        s += std::to_string(c) + "@" + to_hex(r.bytes);
    }
    return s;
}

// ---------------------------------------------------------------------------------------------
// Join

namespace {

bool entry_less(const Entry& a, const Entry& b) {
    return a.dot < b.dot;
}

// Greater (ts, dot) wins; L1-L3 because this is a max over a total order. Entries with equal
// dots are the same write (L12 makes dots unique per replica and field), so ts ties with
// equal dots are only possible for identical entries or forged ones; the value then breaks the
// tie so that the result still does not depend on argument order.
bool lww_less(const Entry& a, const Entry& b) {
    if (a.ts != b.ts) return a.ts < b.ts;
    if (a.dot != b.dot) return a.dot < b.dot;
    if (a.by != b.by) return a.by < b.by;
    return a.value < b.value;
}

ReviewState join_review(const ReviewState& a, const VersionVector& ca, const ReviewState& b,
                        const VersionVector& cb) {
    ReviewState out;
    out.entries.reserve(a.entries.size() + b.entries.size());
    auto i = a.entries.begin();
    auto j = b.entries.begin();
    while (i != a.entries.end() || j != b.entries.end()) {
        if (j == b.entries.end() || (i != a.entries.end() && i->dot < j->dot)) {
            if (!cb.covers(i->dot)) out.entries.push_back(*i);  // L5: b has not seen it
            ++i;
        } else if (i == a.entries.end() || j->dot < i->dot) {
            if (!ca.covers(j->dot)) out.entries.push_back(*j);
            ++j;
        } else {
            out.entries.push_back(lww_less(*i, *j) ? *j : *i);  // same dot on both sides
            ++i;
            ++j;
        }
    }
    return out;
}

std::vector<Dot> join_dots(const std::vector<Dot>& a, const VersionVector& ca,
                           const std::vector<Dot>& b, const VersionVector& cb) {
    std::vector<Dot> out;
    auto i = a.begin();
    auto j = b.begin();
    while (i != a.end() || j != b.end()) {
        if (j == b.end() || (i != a.end() && *i < *j)) {
            if (!cb.covers(*i)) out.push_back(*i);
            ++i;
        } else if (i == a.end() || *j < *i) {
            if (!ca.covers(*j)) out.push_back(*j);
            ++j;
        } else {
            out.push_back(*i);
            ++i;
            ++j;
        }
    }
    return out;
}

SetState join_set(const SetState& a, const VersionVector& ca, const SetState& b,
                  const VersionVector& cb) {
    static const std::vector<Dot> none;
    SetState out;
    auto i = a.elements.begin();
    auto j = b.elements.begin();
    while (i != a.elements.end() || j != b.elements.end()) {
        const Value* key;
        const std::vector<Dot>* da = &none;
        const std::vector<Dot>* db = &none;
        if (j == b.elements.end() || (i != a.elements.end() && i->first < j->first)) {
            key = &i->first;
            da = &i->second;
            ++i;
        } else if (i == a.elements.end() || j->first < i->first) {
            key = &j->first;
            db = &j->second;
            ++j;
        } else {
            key = &i->first;
            da = &i->second;
            db = &j->second;
            ++i;
            ++j;
        }
        auto dots = join_dots(*da, ca, *db, cb);
        if (!dots.empty()) out.elements.emplace_hint(out.elements.end(), *key, std::move(dots));
    }
    return out;
}

CounterState join_counter(const CounterState& a, const CounterState& b) {
    CounterState out = a;
    for (const auto& [r, slot] : b.slots) {
        auto& s = out.slots[r];
        s.inc = std::max(s.inc, slot.inc);
        s.dec = std::max(s.dec, slot.dec);
    }
    return out;
}

FieldState bottom(MergeRule rule) {
    switch (rule) {
        case MergeRule::lww:
            return LwwState{};
        case MergeRule::review:
            return ReviewState{};
        case MergeRule::set:
            return SetState{};
        case MergeRule::counter:
            return CounterState{};
    }
    return ReviewState{};
}

// Join with a field that the other side never wrote (bottom for that rule). LWW has no bottom
// entry: a present lww state always wins over an absent one.
FieldState join_with_absent(const FieldState& a, const VersionVector& ca, const VersionVector& cb) {
    if (rule_of(a) == MergeRule::lww || rule_of(a) == MergeRule::counter) return a;
    return join_fields(a, ca, bottom(rule_of(a)), cb);
}

}  // namespace

FieldState join_fields(const FieldState& a, const VersionVector& ca, const FieldState& b,
                       const VersionVector& cb) {
    if (a.index() != b.index()) return a.index() > b.index() ? a : b;  // L11
    switch (rule_of(a)) {
        case MergeRule::lww: {
            const auto& ea = std::get<LwwState>(a).entry;
            const auto& eb = std::get<LwwState>(b).entry;
            return lww_less(ea, eb) ? b : a;
        }
        case MergeRule::review:
            return join_review(std::get<ReviewState>(a), ca, std::get<ReviewState>(b), cb);
        case MergeRule::set:
            return join_set(std::get<SetState>(a), ca, std::get<SetState>(b), cb);
        case MergeRule::counter:
            return join_counter(std::get<CounterState>(a), std::get<CounterState>(b));
    }
    return a;
}

Status RecordState::join(const RecordState& other) {
    if (collection != other.collection || id != other.id) {
        return Error{protocol_errc::invalid_value,
                     "cannot join " + other.collection + "/" + other.id.to_string() + " into " +
                         collection + "/" + id.to_string() + ": they are different records"};
    }
    std::map<std::string, FieldState> out;
    auto i = fields.begin();
    auto j = other.fields.begin();
    while (i != fields.end() || j != other.fields.end()) {
        if (j == other.fields.end() || (i != fields.end() && i->first < j->first)) {
            out.emplace_hint(out.end(), i->first,
                             join_with_absent(i->second, context, other.context));
            ++i;
        } else if (i == fields.end() || j->first < i->first) {
            out.emplace_hint(out.end(), j->first,
                             join_with_absent(j->second, other.context, context));
            ++j;
        } else {
            out.emplace_hint(out.end(), i->first,
                             join_fields(i->second, context, j->second, other.context));
            ++i;
            ++j;
        }
    }
    fields = std::move(out);
    context.merge(other.context);  // L9
    return {};
}

// ---------------------------------------------------------------------------------------------
// Reads

const Value* shown_value(const FieldState& f, Value& scratch) {
    switch (rule_of(f)) {
        case MergeRule::lww:
            return &std::get<LwwState>(f).entry.value;
        case MergeRule::review: {
            // The provisional value: the entry with the greatest (ts, dot) (L5).
            const auto& entries = std::get<ReviewState>(f).entries;
            if (entries.empty()) return nullptr;
            const Entry* best = &entries.front();
            for (const auto& e : entries)
                if (lww_less(*best, e)) best = &e;
            return &best->value;
        }
        case MergeRule::set:
            return nullptr;
        case MergeRule::counter: {
            // Two's-complement wrap-around keeps the sum exact for any in-range result (L8).
            std::uint64_t sum = 0;
            for (const auto& [r, slot] : std::get<CounterState>(f).slots)
                sum += slot.inc - slot.dec;
            scratch = static_cast<std::int64_t>(sum);
            return &scratch;
        }
    }
    return nullptr;
}

std::optional<FieldView> RecordState::view(std::string_view field) const {
    auto it = fields.find(std::string(field));
    if (it == fields.end()) return std::nullopt;
    FieldView v;
    v.rule = rule_of(it->second);
    Value scratch;
    if (const Value* shown = shown_value(it->second, scratch)) v.value = *shown;
    if (v.rule == MergeRule::review) {
        const auto& entries = std::get<ReviewState>(it->second).entries;
        for (const auto& e : entries)
            if (e.value != entries.front().value) v.conflict = true;
        v.competing = entries;
    } else if (v.rule == MergeRule::set) {
        for (const auto& [element, dots] : std::get<SetState>(it->second).elements)
            v.elements.push_back(element);
    }
    return v;
}

bool RecordState::is_deleted() const {
    auto v = view(deleted_field);
    return v && std::holds_alternative<bool>(v->value) && std::get<bool>(v->value);
}

std::vector<std::string> RecordState::conflicts() const {
    std::vector<std::string> out;
    for (const auto& [name, state] : fields) {
        if (rule_of(state) != MergeRule::review) continue;
        const auto& entries = std::get<ReviewState>(state).entries;
        for (const auto& e : entries) {
            if (e.value != entries.front().value) {
                out.push_back(name);
                break;
            }
        }
    }
    return out;
}

Status RecordState::check_invariants() const {
    // `name` is the field's; its path ("f.<name>") is spelled out only in an error.
    auto covered = [this](const Dot& d, const std::string& name) -> Status {
        if (d.counter == 0)
            return Error{protocol_errc::invalid_value, "f." + name + ": dot counter must be >= 1"};
        if (!context.covers(d))
            return Error{protocol_errc::invalid_value,
                         "f." + name + ": dot " + std::to_string(d.counter) + "@" +
                             to_hex(d.replica.bytes) +
                             " is not covered by the record's context (L12)"};
        return {};
    };
    for (const auto& [r, c] : context.entries()) {
        if (c == 0) return Error{protocol_errc::invalid_value, "ctx: counters must be >= 1"};
    }
    for (const auto& kv : fields) {
        // Named, not a structured binding: clang 14 cannot capture one in a lambda.
        const std::string& name = kv.first;
        const FieldState& state = kv.second;
        auto where = [&name] { return "f." + name; };
        switch (rule_of(state)) {
            case MergeRule::lww:
                if (auto s = covered(std::get<LwwState>(state).entry.dot, name); !s) return s;
                break;
            case MergeRule::review: {
                const auto& entries = std::get<ReviewState>(state).entries;
                for (std::size_t k = 0; k < entries.size(); ++k) {
                    if (k > 0 && !(entries[k - 1].dot < entries[k].dot))
                        return Error{
                            protocol_errc::invalid_value,
                            where() + ": entries must be sorted by dot without duplicates"};
                    if (auto s = covered(entries[k].dot, name); !s) return s;
                }
                break;
            }
            case MergeRule::set:
                for (const auto& [element, dots] : std::get<SetState>(state).elements) {
                    if (dots.empty())
                        return Error{protocol_errc::invalid_value,
                                     where() + ": element " + to_display(element) + " has no dots"};
                    for (std::size_t k = 0; k < dots.size(); ++k) {
                        if (k > 0 && !(dots[k - 1] < dots[k]))
                            return Error{protocol_errc::invalid_value,
                                         where() + ": dots must be sorted without duplicates"};
                        if (auto s = covered(dots[k], name); !s) return s;
                    }
                }
                break;
            case MergeRule::counter:
                for (const auto& [r, slot] : std::get<CounterState>(state).slots) {
                    if (slot.inc == 0 && slot.dec == 0)
                        return Error{protocol_errc::invalid_value,
                                     where() + ": a counter slot must not be all zero"};
                }
                break;
        }
    }
    return {};
}

// ---------------------------------------------------------------------------------------------
// Local updates

Update::Update(RecordState& state, const ReplicaId& replica, HlcTimestamp ts, std::string by,
               std::uint64_t counter_floor)
    : m_state(state),
      m_dot(state.context.next(replica, counter_floor)),
      m_ts(ts),
      m_by(std::move(by)) {
    // L10: every update of a live record re-asserts liveness under its own dot, so a delete
    // that did not see this update stays in competition with it.
    m_state.fields[std::string(deleted_field)] = ReviewState{{make_entry(false)}};
}

Status Update::set(std::string_view field, MergeRule rule, Value value) {
    if (rule != MergeRule::lww && rule != MergeRule::review) {
        return Error{protocol_errc::invalid_value,
                     "field " + std::string(field) + ": set() takes an lww or review field, not " +
                         to_string(rule)};
    }
    if (field == deleted_field) {
        return Error{protocol_errc::invalid_value,
                     "field _deleted is reserved: use mark_deleted() or a resolution"};
    }
    auto [it, inserted] = m_state.fields.try_emplace(std::string(field), bottom(rule));
    if (!inserted && rule_of(it->second) != rule) {
        return Error{protocol_errc::invalid_value, "field " + std::string(field) + " holds a " +
                                                       to_string(rule_of(it->second)) +
                                                       " state, not " + to_string(rule)};
    }
    // Everything this replica holds is covered by the context, so the new entry replaces it
    // everywhere it is joined (L6 for review fields).
    if (rule == MergeRule::lww)
        it->second = LwwState{make_entry(std::move(value))};
    else
        it->second = ReviewState{{make_entry(std::move(value))}};
    return {};
}

Status Update::add_element(std::string_view field, Value element) {
    auto [it, inserted] = m_state.fields.try_emplace(std::string(field), SetState{});
    if (!inserted && rule_of(it->second) != MergeRule::set) {
        return Error{protocol_errc::invalid_value, "field " + std::string(field) + " holds a " +
                                                       to_string(rule_of(it->second)) +
                                                       " state, not set"};
    }
    std::get<SetState>(it->second).elements[std::move(element)] = {m_dot};  // L7
    return {};
}

Status Update::remove_element(std::string_view field, const Value& element) {
    auto [it, inserted] = m_state.fields.try_emplace(std::string(field), SetState{});
    if (!inserted && rule_of(it->second) != MergeRule::set) {
        return Error{protocol_errc::invalid_value, "field " + std::string(field) + " holds a " +
                                                       to_string(rule_of(it->second)) +
                                                       " state, not set"};
    }
    // The removed dots stay covered by the context, so joins drop them elsewhere too.
    std::get<SetState>(it->second).elements.erase(element);
    return {};
}

Status Update::add_to_counter(std::string_view field, std::int64_t delta) {
    auto [it, inserted] = m_state.fields.try_emplace(std::string(field), CounterState{});
    if (!inserted && rule_of(it->second) != MergeRule::counter) {
        return Error{protocol_errc::invalid_value, "field " + std::string(field) + " holds a " +
                                                       to_string(rule_of(it->second)) +
                                                       " state, not counter"};
    }
    auto& counter = std::get<CounterState>(it->second);
    if (delta == 0) {
        if (inserted) m_state.fields.erase(it);
        return {};
    }
    auto& slot = counter.slots[m_dot.replica];
    // Magnitude of delta without overflow for INT64_MIN.
    const std::uint64_t mag = delta > 0 ? static_cast<std::uint64_t>(delta)
                                        : static_cast<std::uint64_t>(-(delta + 1)) + 1;
    std::uint64_t& side = delta > 0 ? slot.inc : slot.dec;
    if (side > std::numeric_limits<std::uint64_t>::max() - mag) {
        return Error{protocol_errc::invalid_value,
                     "field " + std::string(field) + ": counter would overflow"};
    }
    side += mag;
    return {};
}

void Update::mark_deleted() {
    m_state.fields[std::string(deleted_field)] = ReviewState{{make_entry(true)}};
}

// ---------------------------------------------------------------------------------------------
// Canonical encoding

namespace {

// Text keys sort by encoded bytes: shorter first, then bytewise (RFC 8949 §4.2.1).
bool shortlex_less(const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
}

void encode_dot(CborWriter& w, const Dot& d) {
    w.array(2);
    w.bytes(d.replica.bytes);
    w.uint(d.counter);
}

void encode_entry(CborWriter& w, const Entry& e) {
    w.array(5);
    w.bytes(e.dot.replica.bytes);
    w.uint(e.dot.counter);
    w.uint(e.ts.value);
    w.text(e.by);
    encode_value(w, e.value);
}

void encode_field(CborWriter& w, const FieldState& f) {
    w.array(2);
    w.uint(f.index());
    switch (rule_of(f)) {
        case MergeRule::lww:
            encode_entry(w, std::get<LwwState>(f).entry);
            break;
        case MergeRule::review: {
            const auto& entries = std::get<ReviewState>(f).entries;
            w.array(entries.size());
            for (const auto& e : entries)
                encode_entry(w, e);
            break;
        }
        case MergeRule::set: {
            // Elements sorted by their encoded bytes (in memory they are ordered by Value's <).
            const auto& elements = std::get<SetState>(f).elements;
            std::vector<std::pair<Bytes, const std::vector<Dot>*>> sorted;
            sorted.reserve(elements.size());
            for (const auto& [element, dots] : elements)
                sorted.emplace_back(encoded(element), &dots);
            std::sort(sorted.begin(), sorted.end(),
                      [](const auto& a, const auto& b) { return a.first < b.first; });
            w.array(sorted.size());
            for (const auto& [key, dots] : sorted) {
                w.array(2);
                w.raw(key);
                w.array(dots->size());
                for (const auto& d : *dots)
                    encode_dot(w, d);
            }
            break;
        }
        case MergeRule::counter: {
            const auto& slots = std::get<CounterState>(f).slots;
            w.array(slots.size());
            for (const auto& [r, slot] : slots) {
                w.array(3);
                w.bytes(r.bytes);
                w.uint(slot.inc);
                w.uint(slot.dec);
            }
            break;
        }
    }
}

}  // namespace

void encode_record(CborWriter& w, const RecordState& s) {
    // Keys in canonical order: "c", "f", "id", "ctx".
    w.map(4);
    w.text("c");
    w.text(s.collection);
    w.text("f");
    std::vector<const std::pair<const std::string, FieldState>*> order;
    order.reserve(s.fields.size());
    for (const auto& kv : s.fields)
        order.push_back(&kv);
    std::sort(order.begin(), order.end(),
              [](const auto* a, const auto* b) { return shortlex_less(a->first, b->first); });
    w.map(order.size());
    for (const auto* kv : order) {
        w.text(kv->first);
        encode_field(w, kv->second);
    }
    w.text("id");
    w.bytes(s.id.bytes);
    w.text("ctx");
    w.map(s.context.entries().size());
    for (const auto& [r, c] : s.context.entries()) {  // 16-byte keys: bytewise order
        w.bytes(r.bytes);
        w.uint(c);
    }
}

Bytes encode_record(const RecordState& s) {
    CborWriter w(256);
    encode_record(w, s);
    return w.take();
}

// ---------------------------------------------------------------------------------------------
// Decoding. Every helper returns errors relative to its item; callers prefix the path.

namespace {

#define FS_TRY(var, expr)                            \
    auto var##_r = (expr);                           \
    if (!var##_r) return std::move(var##_r).error(); \
    auto var = std::move(var##_r).value()

#define FS_TRY_AT(var, expr, where)                            \
    auto var##_r = (expr);                                     \
    if (!var##_r) return std::move(var##_r).error().at(where); \
    auto var = std::move(var##_r).value()

Result<ReplicaId> read_id(CborReader& r) {
    FS_TRY(raw, r.read_bytes());
    return Id128::from_bytes(raw);
}

Status expect_len(std::size_t got, std::size_t want, const char* what) {
    if (got != want)
        return Error{protocol_errc::invalid_value, std::string(what) + " has " +
                                                       std::to_string(want) + " elements, got " +
                                                       std::to_string(got)};
    return {};
}

Result<Dot> read_dot(CborReader& r) {
    FS_TRY(n, r.read_array());
    if (auto s = expect_len(n, 2, "a dot"); !s) return std::move(s).error();
    FS_TRY_AT(replica, read_id(r), "[0]");
    FS_TRY_AT(counter, r.read_uint(), "[1]");
    return Dot{replica, counter};
}

Result<Entry> read_entry(CborReader& r) {
    FS_TRY(n, r.read_array());
    if (auto s = expect_len(n, 5, "an entry"); !s) return std::move(s).error();
    Entry e;
    FS_TRY_AT(replica, read_id(r), "[0]");
    FS_TRY_AT(counter, r.read_uint(), "[1]");
    FS_TRY_AT(ts, r.read_uint(), "[2]");
    FS_TRY_AT(by, r.read_text(), "[3]");
    if (!is_valid_utf8(by))
        return Error{protocol_errc::invalid_value, "[3]: text is not valid UTF-8"};
    if (auto s = r.enter(); !s) return std::move(s).error();
    FS_TRY_AT(value, decode_value(r), "[4]");
    r.leave();
    e.dot = Dot{replica, counter};
    e.ts = HlcTimestamp{ts};
    e.by = std::string(by);
    e.value = std::move(value);
    return e;
}

Result<FieldState> read_field(CborReader& r) {
    FS_TRY(n, r.read_array());
    if (auto s = expect_len(n, 2, "a field state"); !s) return std::move(s).error();
    FS_TRY_AT(code, r.read_uint(), "[0]");
    if (code > 3)
        return Error{protocol_errc::invalid_value,
                     "[0]: merge rule code " + std::to_string(code) +
                         " is unknown (0 lww, 1 review, 2 set, 3 counter)"};
    if (auto s = r.enter(); !s) return std::move(s).error();
    switch (static_cast<MergeRule>(code)) {
        case MergeRule::lww: {
            FS_TRY_AT(e, read_entry(r), "[1]");
            r.leave();
            return FieldState{LwwState{std::move(e)}};
        }
        case MergeRule::review: {
            FS_TRY_AT(count, r.read_array(), "[1]");
            ReviewState st;
            st.entries.reserve(
                std::min(count, r.remaining() / 22));  // 22 bytes: the smallest entry
            if (auto s = r.enter(); !s) return std::move(s).error();
            for (std::size_t k = 0; k < count; ++k) {
                FS_TRY_AT(e, read_entry(r), "[1][" + std::to_string(k) + "]");
                st.entries.push_back(std::move(e));
            }
            r.leave();
            r.leave();
            if (!std::is_sorted(st.entries.begin(), st.entries.end(), entry_less))
                std::sort(st.entries.begin(), st.entries.end(), entry_less);
            for (std::size_t k = 1; k < st.entries.size(); ++k)
                if (st.entries[k - 1].dot == st.entries[k].dot)
                    return Error{protocol_errc::invalid_value, "[1]: two entries share a dot"};
            return FieldState{std::move(st)};
        }
        case MergeRule::set: {
            FS_TRY_AT(count, r.read_array(), "[1]");
            SetState st;
            if (auto s = r.enter(); !s) return std::move(s).error();
            for (std::size_t k = 0; k < count; ++k) {
                auto where = [k] { return "[1][" + std::to_string(k) + "]"; };
                FS_TRY_AT(pair_len, r.read_array(), where());
                if (auto s = expect_len(pair_len, 2, "a set element"); !s)
                    return std::move(s).error().at(where());
                if (auto s = r.enter(); !s) return std::move(s).error();
                FS_TRY_AT(element, decode_value(r), where() + "[0]");
                FS_TRY_AT(ndots, r.read_array(), where() + "[1]");
                if (auto s = r.enter(); !s) return std::move(s).error();
                std::vector<Dot> dots;
                dots.reserve(std::min(ndots, r.remaining() / 19));  // 19 bytes: the smallest dot
                for (std::size_t d = 0; d < ndots; ++d) {
                    FS_TRY_AT(dot, read_dot(r), where() + "[1][" + std::to_string(d) + "]");
                    dots.push_back(dot);
                }
                r.leave();
                r.leave();
                std::sort(dots.begin(), dots.end());
                if (std::adjacent_find(dots.begin(), dots.end()) != dots.end())
                    return Error{protocol_errc::invalid_value, where() + "[1]: duplicate dot"};
                if (!st.elements.emplace(std::move(element), std::move(dots)).second)
                    return Error{protocol_errc::invalid_value, where() + "[0]: duplicate element"};
            }
            r.leave();
            r.leave();
            return FieldState{std::move(st)};
        }
        case MergeRule::counter: {
            FS_TRY_AT(count, r.read_array(), "[1]");
            CounterState st;
            if (auto s = r.enter(); !s) return std::move(s).error();
            for (std::size_t k = 0; k < count; ++k) {
                auto where = [k] { return "[1][" + std::to_string(k) + "]"; };
                FS_TRY_AT(len, r.read_array(), where());
                if (auto s = expect_len(len, 3, "a counter slot"); !s)
                    return std::move(s).error().at(where());
                FS_TRY_AT(replica, read_id(r), where() + "[0]");
                FS_TRY_AT(inc, r.read_uint(), where() + "[1]");
                FS_TRY_AT(dec, r.read_uint(), where() + "[2]");
                if (!st.slots.emplace(replica, CounterState::Slot{inc, dec}).second)
                    return Error{protocol_errc::invalid_value, where() + "[0]: duplicate replica"};
            }
            r.leave();
            r.leave();
            return FieldState{std::move(st)};
        }
    }
    return Error{protocol_errc::internal, "unreachable"};
}

bool valid_field_name(std::string_view name) {
    if (name.empty() || name.size() > 64) return false;
    return is_valid_utf8(name);
}

}  // namespace

Result<RecordState> decode_record(CborReader& r) {
    FS_TRY(n, r.read_map());
    if (auto s = r.enter(); !s) return std::move(s).error();
    RecordState st;
    bool seen_c = false, seen_f = false, seen_id = false, seen_ctx = false;
    for (std::size_t k = 0; k < n; ++k) {
        FS_TRY(key, r.read_text());
        auto dup = [&](bool& seen) -> Status {
            if (seen) return Error{protocol_errc::malformed, std::string(key) + ": duplicate key"};
            seen = true;
            return {};
        };
        if (key == "c") {
            if (auto s = dup(seen_c); !s) return std::move(s).error();
            FS_TRY_AT(c, r.read_text(), "c");
            if (c.empty() || c.size() > 64 || !is_valid_utf8(c))
                return Error{protocol_errc::invalid_value,
                             "c: a collection name is 1 to 64 bytes of UTF-8"};
            st.collection = std::string(c);
        } else if (key == "id") {
            if (auto s = dup(seen_id); !s) return std::move(s).error();
            FS_TRY_AT(id, read_id(r), "id");
            st.id = id;
        } else if (key == "ctx") {
            if (auto s = dup(seen_ctx); !s) return std::move(s).error();
            FS_TRY_AT(count, r.read_map(), "ctx");
            for (std::size_t e = 0; e < count; ++e) {
                FS_TRY_AT(replica, read_id(r), "ctx");
                FS_TRY_AT(counter, r.read_uint(), "ctx." + replica.to_string());
                if (counter == 0)
                    return Error{protocol_errc::invalid_value,
                                 "ctx." + replica.to_string() + ": counters must be >= 1"};
                if (st.context.get(replica) != 0)
                    return Error{protocol_errc::malformed,
                                 "ctx." + replica.to_string() + ": duplicate replica"};
                st.context.raise(replica, counter);
            }
        } else if (key == "f") {
            if (auto s = dup(seen_f); !s) return std::move(s).error();
            FS_TRY_AT(count, r.read_map(), "f");
            if (auto s = r.enter(); !s) return std::move(s).error();
            for (std::size_t e = 0; e < count; ++e) {
                FS_TRY_AT(name, r.read_text(), "f");
                if (!valid_field_name(name))
                    return Error{protocol_errc::invalid_value,
                                 "f: a field name is 1 to 64 bytes of UTF-8"};
                // The path is spelled out only on failure: this loop runs for every field.
                FS_TRY_AT(field, read_field(r), "f." + std::string(name));
                if (!st.fields.emplace(std::string(name), std::move(field)).second)
                    return Error{protocol_errc::malformed,
                                 "f." + std::string(name) + ": duplicate field"};
            }
            r.leave();
        } else {
            // Keys from a later protocol version are skipped (SPEC.md §2).
            if (auto s = r.skip(); !s) return std::move(s).error().at(std::string(key));
        }
    }
    r.leave();
    if (!seen_c) return Error{protocol_errc::missing_field, "c: missing (collection name)"};
    if (!seen_id) return Error{protocol_errc::missing_field, "id: missing (record id)"};
    if (!seen_ctx) return Error{protocol_errc::missing_field, "ctx: missing (causal context)"};
    if (!seen_f) return Error{protocol_errc::missing_field, "f: missing (fields)"};
    if (auto s = st.check_invariants(); !s) return std::move(s).error();
    return st;
}

Result<RecordState> decode_record(ByteView bytes, CborLimits limits) {
    CborReader r(bytes, limits);
    auto st = decode_record(r);
    if (!st) return st;
    if (!r.at_end())
        return Error{protocol_errc::malformed,
                     std::to_string(r.remaining()) + " bytes follow the record state"};
    return st;
}

#undef FS_TRY
#undef FS_TRY_AT

std::array<std::uint8_t, 32> sha256(ByteView bytes) {
    std::array<std::uint8_t, 32> out{};
    unsigned int len = 0;
    EVP_Digest(bytes.data(), bytes.size(), out.data(), &len, EVP_sha256(), nullptr);
    return out;
}

std::array<std::uint8_t, 32> record_digest(const RecordState& s) {
    return sha256(encode_record(s));
}

}  // namespace fieldsync::protocol
