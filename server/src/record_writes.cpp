// Server-side record writes. Contract and formats: record_writes.hpp.
#include "record_writes.hpp"

#include <boost/json.hpp>

#include "fieldsync/protocol/json.hpp"

namespace fieldsync::server {

namespace p = fieldsync::protocol;
namespace json = boost::json;

std::string competing_values_json(const p::FieldView& view) {
    json::array arr;
    for (const auto& e : view.competing) {
        arr.push_back(json::object{{"value", p::value_to_json_value(e.value)},
                                   {"by", e.by},
                                   {"replica", e.dot.replica.to_string()},
                                   {"ts", e.ts.value},
                                   {"at", p::iso8601_utc(e.ts.wall_ms())}});
    }
    return p::json_text(arr);
}

std::string change_summary_json(const p::RecordState* before, const p::RecordState& after) {
    // Written directly (no JSON tree): this runs for every record a device pushes. The text is
    // what json_text gives for {"fields": {name: value or [elements]}, "created": bool}.
    std::string out = "{\"fields\":{";
    bool first = true;
    for (const auto& [name, state] : after.fields) {
        if (before) {
            auto it = before->fields.find(name);
            if (it != before->fields.end() && it->second == state) continue;
        }
        if (!first) out += ',';
        first = false;
        p::append_json_string(name, out);
        out += ':';
        // What the field's view shows (RecordState::view), read in place.
        if (const auto* set = std::get_if<p::SetState>(&state)) {
            out += '[';
            bool first_element = true;
            for (const auto& [element, dots] : set->elements) {
                if (!first_element) out += ',';
                first_element = false;
                p::append_value_json(element, out);
            }
            out += ']';
        } else {
            p::Value scratch;
            const p::Value* shown = p::shown_value(state, scratch);
            p::append_value_json(shown ? *shown : p::Value{}, out);
        }
    }
    out += before ? "},\"created\":false}" : "},\"created\":true}";
    return out;
}

Result<RecordChangeResult> write_record_change(Store& store, const p::Schema& schema,
                                               const RecordChange& c,
                                               const std::function<void(std::string)>& touch_area) {
    const p::RecordState& after = *c.after;
    if (auto st = schema.validate_record(after); !st) return std::move(st).error();
    auto area = schema.area_of(after);
    if (!area) return std::move(area).error();
    if (c.scope && !c.scope->covers(*area)) {
        return Error{p::protocol_errc::forbidden,
                     "area " + *area + " is outside your assigned areas"};
    }
    RecordChangeResult result;
    result.area = *area;
    p::Bytes bytes = p::encode_record(after);
    if (c.before && p::encode_record(*c.before) == bytes) return result;  // nothing new

    RecordWrite w;
    w.collection = after.collection;
    w.id = after.id;
    w.area = *area;
    w.schema_version = c.schema_version;
    w.deleted = after.is_deleted();
    w.at_ms = c.at_ms;
    w.state = std::move(bytes);
    auto seq = store.put_record(w);
    if (!seq) return Error{p::protocol_errc::internal, seq.error().message};

    AuditEntry a;
    a.seq = *seq;
    a.at_ms = c.at_ms;
    a.user = c.user;
    a.device = c.device;
    a.collection = after.collection;
    a.id = after.id;
    a.summary = change_summary_json(c.before, after);
    if (auto st = store.append_audit(a); !st)
        return Error{p::protocol_errc::internal, st.error().message};

    std::vector<Store::OpenField> open;
    for (const auto& field : after.conflicts()) {
        auto v = after.view(field);
        if (v) open.push_back({field, competing_values_json(*v)});
    }
    auto reconciled = store.reconcile_conflicts(after.collection, after.id, *area, open, c.user,
                                                c.note, c.at_ms, c.resolution_json);
    if (!reconciled) return Error{p::protocol_errc::internal, reconciled.error().message};

    result.changed = true;
    result.seq = *seq;
    result.conflicts = *reconciled;
    if (touch_area) {
        touch_area(*area);
        if (!c.before_area.empty() && c.before_area != *area) touch_area(c.before_area);
    }
    return result;
}

}  // namespace fieldsync::server
