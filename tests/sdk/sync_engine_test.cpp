// The sans-I/O sync engine against a scripted fake peer: the test plays the server, reads the
// engine's frames and feeds it hand-made replies (SPEC.md §4-§7).
#include <doctest/doctest.h>

#include "sdk_test_support.hpp"

using namespace fstest;
using fieldsync::Credentials;
using fieldsync::Filter;
using fieldsync::SyncEventKind;
using fieldsync::SyncPhase;
using fieldsync::SyncStatus;

namespace {

constexpr std::uint64_t one_year_ms = 365ull * 24 * 3600 * 1000;

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

p::ErrorMessage server_error(p::protocol_errc code, const std::string& message, bool fatal,
                             std::optional<std::uint64_t> ref = {}) {
    return p::make_error_message(p::Error{code, message}, fatal, ref);
}

/// Starts a session and answers hello with welcome; returns the engine's reply to welcome.
EngineOutput connect(SyncEngine& e, ReplicaFixture& f, std::uint64_t max_batch = 100,
                     std::uint64_t server_time = 0, const std::string& user = "enum-a") {
    auto out = e.start({user, "pw", ""}, "sdk-test/1");
    frame_as<p::Hello>(out);
    return feed(e, make_welcome(user, {village_a}, true, server_time ? server_time : f.clock.now(),
                                max_batch));
}

/// The newest timestamp of `replica`'s entries in a state.
p::HlcTimestamp newest_own(const p::RecordState& s, const p::ReplicaId& replica) {
    p::HlcTimestamp out{};
    for (const auto& [name, f] : s.fields) {
        if (const auto* l = std::get_if<p::LwwState>(&f))
            if (l->entry.dot.replica == replica) out = std::max(out, l->entry.ts);
        if (const auto* r = std::get_if<p::ReviewState>(&f))
            for (const auto& e : r->entries)
                if (e.dot.replica == replica) out = std::max(out, e.ts);
    }
    return out;
}

p::ScopeDigest digest_of(Replica& r) {
    p::ScopeDigest d;
    Filter all;
    all.include_deleted = true;
    for (const char* c : {"households", "members", "visits"}) {
        auto records = r.list(c, all);
        REQUIRE(records.ok());
        for (const auto& v : *records)
            d.add(v.state);
    }
    return d;
}

}  // namespace

TEST_CASE("Engine: hello carries identity and credentials; welcome stores the session") {
    ReplicaFixture f;
    f.clock.set(t0 - 3'600'000);  // the tablet's clock is an hour slow
    SyncEngine e(f.replica);
    CHECK(e.phase() == SyncPhase::idle);
    auto out = e.start({"enum-a", "secret", ""}, "tablet/2.1");
    auto hello = single<p::Hello>(out);
    CHECK(hello.device == f.replica->device_id());
    CHECK(hello.replica == f.replica->replica_id());
    CHECK(hello.app == "tablet/2.1");
    CHECK(hello.auth == p::Auth{p::PasswordAuth{"enum-a", "secret"}});
    CHECK(hello.schema_version == 0);
    CHECK(hello.cursor == 0);
    CHECK(hello.clock == t0 - 3'600'000);  // uncorrected, so the server can see the offset
    CHECK(hello.version == p::protocol_version);
    CHECK(e.phase() == SyncPhase::authenticating);
    CHECK(has_event(out, SyncEventKind::phase_changed));
    CHECK_FALSE(out.close);

    out = feed(e, make_welcome("enum-a", {village_a}, true, t0));
    CHECK(has_event(out, SyncEventKind::schema_updated));
    auto pull = single<p::Pull>(out);  // nothing to push: pull right away
    CHECK(pull.since == 0);
    CHECK(pull.limit == fieldsync::EngineOptions{}.page_size);
    CHECK(e.phase() == SyncPhase::pulling);
    auto info = f.replica->sync_info().value();
    CHECK(info.user == "enum-a");
    CHECK(info.role == "enumerator");
    CHECK(info.scope == std::vector<std::string>{village_a});
    CHECK(info.schema_version == demo_schema().version());
    CHECK(info.has_token);
    CHECK(info.clock_offset_ms == 3'600'000);
    CHECK(f.replica->now_ms() == t0);

    out = feed(e, last_page(pull, 7));
    CHECK(out.frames.empty());
    CHECK(e.phase() == SyncPhase::live);
    info = f.replica->sync_info().value();
    CHECK(info.cursor == 7);
    CHECK(info.last_sync_ms == t0);
    CHECK_FALSE(info.last_error);
    out = e.on_disconnected();
    CHECK(e.phase() == SyncPhase::idle);

    SUBCASE("a reconnect uses the stored token, not the password") {
        out = e.start({}, "tablet/2.1");
        hello = single<p::Hello>(out);
        CHECK(hello.auth == p::Auth{p::TokenAuth{"token-enum-a"}});
        CHECK(hello.cursor == 7);
        CHECK(hello.schema_version == demo_schema().version());
        out = feed(e, make_welcome("enum-a", {village_a}, false, t0));
        CHECK_FALSE(has_event(out, SyncEventKind::schema_updated));
        CHECK(single<p::Pull>(out).since == 7);
    }
    SUBCASE("a refused token is forgotten and the error kept") {
        out = e.start({}, "tablet/2.1");
        out = feed(
            e, server_error(p::protocol_errc::unauthenticated,
                            "hello.auth.token: the token is unknown, expired or revoked", true));
        CHECK(out.close);
        CHECK(e.phase() == SyncPhase::error);
        info = f.replica->sync_info().value();
        CHECK_FALSE(info.has_token);
        REQUIRE(info.last_error);
        CHECK(info.last_error->code == p::protocol_errc::unauthenticated);
        CHECK(contains(info.last_error->message, "user name and password"));
        out = e.start({}, "tablet/2.1");  // nothing left to log in with
        CHECK(out.close);
        CHECK(out.frames.empty());
        CHECK(contains(e.progress().last_error->message, "no credentials"));
    }
    SUBCASE("another user cannot take over a replica holding unsent writes") {
        f.household("Bater");
        out = e.start({"enum-b", "pw", ""}, "tablet/2.1");
        out = feed(e, make_welcome("enum-b", {village_a}, false, t0));
        CHECK(out.close);
        CHECK(e.progress().last_error->code == p::protocol_errc::forbidden);
        CHECK(contains(e.progress().last_error->message, "sign in as enum-a"));
        CHECK(f.replica->sync_info().value().user == "enum-a");
    }
}

TEST_CASE("Engine: pushes the outbox in batches; partial rejection keeps and flags records") {
    ReplicaFixture f;
    f.sync();
    std::vector<p::RecordId> h;
    for (int i = 0; i < 5; ++i)
        h.push_back(f.household("H" + std::to_string(i)));
    SyncEngine e(f.replica);
    auto out = connect(e, f, /*max_batch=*/2);
    CHECK(e.phase() == SyncPhase::pushing);
    auto push1 = single<p::Push>(out);
    REQUIRE(push1.items.size() == 2);
    CHECK(push1.items[0].record.id == h[0]);  // oldest change first
    CHECK(push1.items[1].record.id == h[1]);
    CHECK(push1.items[0].schema_version == demo_schema().version());
    CHECK(push1.items[0].record == f.view("households", h[0]).state);  // the full state
    CHECK(e.progress().push_total == 5);

    // h0 is edited while its push is in flight: acknowledged, but still pending.
    REQUIRE(f.replica->update("households", h[0], {{"notes", std::string("edited meanwhile")}}));
    p::PushAck ack = ack_all(push1);
    ack.results[1] =
        p::ItemResult{false, "validation_failed", "push.items[1]: field head_name: too long"};
    out = feed(e, ack);
    CHECK(find_event(out, SyncEventKind::rejected)->count == 1);
    CHECK_FALSE(has_event(out, SyncEventKind::pushed));  // h0 changed since: not acknowledged
    auto v1 = f.view("households", h[1]);
    CHECK(v1.sync == SyncStatus::rejected);
    CHECK(v1.reject_code == "validation_failed");
    CHECK(contains(v1.reject_reason, "too long"));
    CHECK(f.view("households", h[0]).pending());
    auto rejected = f.replica->rejected().value();
    REQUIRE(rejected.size() == 1);
    CHECK(rejected[0].id == h[1]);

    auto push2 = single<p::Push>(out);
    REQUIRE(push2.items.size() == 2);
    CHECK(push2.items[0].record.id == h[2]);
    CHECK(push2.items[1].record.id == h[3]);
    out = feed(e, ack_all(push2));
    CHECK(find_event(out, SyncEventKind::pushed)->count == 2);
    auto push3 = single<p::Push>(out);
    REQUIRE(push3.items.size() == 2);
    CHECK(push3.items[0].record.id == h[4]);
    CHECK(push3.items[1].record.id == h[0]);  // pushed again with its new write
    CHECK(push3.items[1].record.fields.count("notes") == 1);
    out = feed(e, ack_all(push3));
    auto pull = single<p::Pull>(out);  // the rejected h1 is not pushed again
    out = feed(e, last_page(pull, 3));
    CHECK(e.phase() == SyncPhase::live);
    CHECK(f.replica->pending_count().value() == 0);
    CHECK(e.progress().pushed == 4);
    CHECK(e.progress().rejected == 1);
    auto info = f.replica->sync_info().value();
    CHECK(info.pending == 0);
    CHECK(info.rejected == 1);

    // Fixing the record makes it pending again; push_pending() uploads it while live.
    REQUIRE(f.replica->update("households", h[1], {{"head_name", std::string("H1")}}));
    CHECK(f.view("households", h[1]).pending());
    out = e.push_pending();
    auto push4 = single<p::Push>(out);
    REQUIRE(push4.items.size() == 1);
    CHECK(push4.items[0].record.id == h[1]);
    out = feed(e, ack_all(push4));
    CHECK(out.frames.empty());
    CHECK(e.phase() == SyncPhase::live);
    CHECK(f.view("households", h[1]).sync == SyncStatus::synced);
    CHECK(f.replica->rejected().value().empty());
}

TEST_CASE("Engine: busy and unknown rejections, limit_exceeded and the replay after a drop") {
    ReplicaFixture f;
    f.sync();
    auto a = f.household("A");
    auto b = f.household("B");
    SyncEngine e(f.replica);
    auto out = connect(e, f);
    auto push = single<p::Push>(out);
    REQUIRE(push.items.size() == 2);

    SUBCASE("a dropped connection: everything is pushed again next session") {
        (void)e.on_disconnected();
        out = connect(e, f);
        CHECK(single<p::Push>(out).items.size() == 2);
    }
    SUBCASE("busy: stays pending, not retried in this session") {
        p::PushAck ack = ack_all(push);
        ack.results[0] = p::ItemResult{false, "busy", "try later"};
        ack.results[1] = p::ItemResult{false, "some_new_code", "from a newer server"};
        out = feed(e, ack);
        CHECK(single<p::Pull>(out).since == 0);
        CHECK(f.view("households", a).pending());
        CHECK(f.view("households", b).sync == SyncStatus::rejected);  // unknown: kept, flagged
        CHECK(f.view("households", b).reject_code == "some_new_code");
    }
    SUBCASE("limit_exceeded for the batch: retried in smaller batches") {
        out = feed(e, server_error(p::protocol_errc::limit_exceeded, "push: frame too big", false,
                                   push.batch));
        auto retry = single<p::Push>(out);
        CHECK(retry.items.size() == 1);
        CHECK(retry.batch != push.batch);
        out = feed(e, ack_all(retry));
        CHECK(single<p::Push>(out).items.size() == 1);
    }
}

TEST_CASE("Engine: entries stamped too far ahead are restamped with the corrected clock") {
    ReplicaFixture f;
    f.sync();
    const auto me = f.replica->replica_id();
    auto synced = f.household("Synced");
    f.sync();  // acknowledged: its entries are now known to the server
    const auto synced_ts = newest_own(f.view("households", synced).state, me);

    SUBCASE("before the push, after the device clock jumped a year ahead") {
        f.clock.set(t0 + one_year_ms);
        auto fresh = f.household("Fresh");
        REQUIRE(f.replica->update("households", synced, {{"notes", std::string("later")}}));
        CHECK(newest_own(f.view("households", fresh).state, me).wall_ms() == t0 + one_year_ms);

        SyncEngine e(f.replica);
        auto out = connect(e, f, 100, /*server_time=*/t0 + 60'000);  // offset: minus a year
        CHECK(find_event(out, SyncEventKind::restamped)->count == 2);
        auto push = single<p::Push>(out);
        REQUIRE(push.items.size() == 2);
        for (const auto& item : push.items) {
            const auto ts = newest_own(item.record, me);
            CHECK(ts.wall_ms() >= t0 + 60'000);
            CHECK(ts.wall_ms() < t0 + 120'000);
        }
        // The acknowledged entries keep their stamps and dots; the pending ones keep their dots.
        const auto& s =
            push.items[0].record.id == synced ? push.items[0].record : push.items[1].record;
        const auto& head = std::get<p::ReviewState>(s.fields.at("head_name")).entries.at(0);
        CHECK(head.ts == synced_ts);
        // The pending write keeps its dot: the latest of this replica in the record's context
        // (dots only grow, and may skip numbers: record.hpp, VersionVector::next).
        const auto notes_dot = std::get<p::LwwState>(s.fields.at("notes")).entry.dot;
        CHECK(notes_dot.replica == me);
        CHECK(notes_dot.counter == s.context.get(me));
        CHECK(notes_dot.counter > head.dot.counter);
        // The clock was reset: the next write is stamped with corrected time, not a year ahead.
        REQUIRE(f.replica->update("households", fresh, {{"notes", std::string("now")}}));
        const auto next = newest_own(f.view("households", fresh).state, me);
        CHECK(next.wall_ms() < t0 + 120'000);
        CHECK(f.replica->sync_info().value().clock.wall_ms() < t0 + 120'000);
    }
    SUBCASE("after the server refused them with clock_drift") {
        f.clock.advance(60'000);
        auto id = f.household("Drifting");
        const auto before = f.view("households", id).state;
        SyncEngine e(f.replica);
        auto out = connect(e, f);
        auto push = single<p::Push>(out);
        for (int attempt = 1; attempt <= 3; ++attempt) {
            p::PushAck ack = ack_all(push);
            ack.results[0] = p::ItemResult{false, "clock_drift", "a write is stamped ahead"};
            out = feed(e, ack);
            if (attempt <= 2) {
                CHECK(find_event(out, SyncEventKind::restamped)->count == 1);
                auto again = single<p::Push>(out);
                REQUIRE(again.items.size() == 1);
                const auto& st = again.items[0].record;
                CHECK(st.context == before.context);  // same dots
                CHECK(newest_own(st, me) > newest_own(push.items[0].record, me));
                push = again;
            } else {
                // Still refused after two restamps: kept pending for the next session.
                CHECK(has_event(out, SyncEventKind::error));
                CHECK(single<p::Pull>(out).since == 0);
                CHECK(f.view("households", id).pending());
            }
        }
    }
}

TEST_CASE("Engine: pulls page by page and stores the cursor with each page") {
    ReplicaFixture f;
    const p::ReplicaId other = test_id(0xee, 1);
    SyncEngine e(f.replica);
    auto out = connect(e, f);
    auto pull = single<p::Pull>(out);
    CHECK(pull.since == 0);
    p::Changes page1;
    page1.since = 0;
    page1.cursor = 10;
    page1.more = true;
    page1.items = {p::ChangeItem{3, 1, remote_household(other, 1, village_a, "enum-b")},
                   p::ChangeItem{10, 1, remote_household(other, 2, village_a, "enum-b")}};
    out = feed(e, page1);
    CHECK(find_event(out, SyncEventKind::pulled)->count == 2);
    pull = single<p::Pull>(out);
    CHECK(pull.since == 10);
    CHECK(f.replica->sync_info().value().cursor == 10);  // durable with the page
    CHECK(f.replica->count("households").value() == 2);
    CHECK(f.view("households", test_id(1, 1)).sync == SyncStatus::synced);

    // Mid-pull drop: the next session resumes from the stored cursor.
    (void)e.on_disconnected();
    f.reopen();
    SyncEngine e2(f.replica);
    out = e2.start({}, "sdk-test/1");
    CHECK(single<p::Hello>(out).cursor == 10);
    out = feed(e2, make_welcome("enum-a", {village_a}, false, t0));
    pull = single<p::Pull>(out);
    CHECK(pull.since == 10);
    out = feed(e2,
               last_page(pull, 20,
                         {p::ChangeItem{20, 1, remote_household(other, 3, village_a, "enum-b")}}));
    CHECK(e2.phase() == SyncPhase::live);
    CHECK(e2.progress().pages == 1);
    CHECK(f.replica->count("households").value() == 3);
    f.reopen();
    CHECK(f.replica->sync_info().value().cursor == 20);
    CHECK(f.replica->count("households").value() == 3);
}

namespace {

// Pipelined pulls: an engine that keeps pages (EngineOptions::pipeline_pulls), and a page of
// one household written by another device.
fieldsync::EngineOptions pipelined() {
    fieldsync::EngineOptions eo;
    eo.pipeline_pulls = true;
    return eo;
}

p::Changes one_household_page(std::uint64_t since, std::uint64_t cursor, std::uint32_t n,
                              bool more) {
    p::Changes c;
    c.since = since;
    c.cursor = cursor;
    c.more = more;
    c.items = {
        p::ChangeItem{cursor, 1, remote_household(test_id(0xee, 1), n, village_a, "enum-b")}};
    return c;
}

}  // namespace

TEST_CASE("Engine: pipelined pulls ask for the next page first and apply pages in order") {
    ReplicaFixture f;
    const fieldsync::EngineOptions eo = pipelined();
    SyncEngine e(f.replica, eo);
    auto out = connect(e, f);
    auto pull = single<p::Pull>(out);
    CHECK(pull.since == 0);

    // Page 1 is kept; the pull for page 2 goes out in the same output.
    out = feed(e, one_household_page(0, 10, 1, true));
    CHECK(single<p::Pull>(out).since == 10);
    CHECK(e.has_deferred());
    CHECK_FALSE(has_event(out, SyncEventKind::pulled));
    CHECK(f.replica->count("households").value() == 0);
    CHECK(f.replica->sync_info().value().cursor == 0);  // not stored before the page is

    SUBCASE("apply_deferred stores it with its cursor, and sends nothing more") {
        out = e.apply_deferred();
        CHECK(out.frames.empty());
        CHECK_FALSE(e.has_deferred());
        CHECK(find_event(out, SyncEventKind::pulled)->count == 1);
        CHECK(f.replica->count("households").value() == 1);
        CHECK(f.replica->sync_info().value().cursor == 10);
        // The stored page is handed back, for the caller to free where it likes.
        REQUIRE(out.retired.size() == 1);
        CHECK(out.retired[0].cursor == 10);
        CHECK(out.retired[0].items.size() == 1);
        auto again = e.apply_deferred();  // nothing kept: nothing to do
        CHECK(again.events.empty());
        CHECK(again.retired.empty());
    }
    SUBCASE("the next page applies the kept one first") {
        out = feed(e, one_household_page(10, 20, 2, true));
        CHECK(single<p::Pull>(out).since == 20);
        CHECK(find_event(out, SyncEventKind::pulled)->count == 1);  // page 1
        CHECK(f.replica->sync_info().value().cursor == 10);
        out = feed(e, one_household_page(20, 30, 3, false));  // the last page: applied at once
        CHECK(e.phase() == SyncPhase::live);
        CHECK_FALSE(e.has_deferred());
        CHECK(e.progress().pages == 3);
        CHECK(f.replica->count("households").value() == 3);
        CHECK(f.replica->sync_info().value().cursor == 30);
    }
    SUBCASE("a drop stores the page already received; the next session resumes after it") {
        (void)e.on_disconnected();
        CHECK(f.replica->sync_info().value().cursor == 10);
        f.reopen();
        SyncEngine e2(f.replica, eo);
        out = e2.start({}, "sdk-test/1");
        CHECK(single<p::Hello>(out).cursor == 10);
    }
    SUBCASE("a reply that answers nothing still fails the session after the kept page") {
        out = feed(e, one_household_page(99, 100, 4, false));
        CHECK(out.close);
        CHECK(f.replica->sync_info().value().cursor == 10);  // page 1 was stored first
    }
}

TEST_CASE("Engine: a pipelined pull waits when a push comes first") {
    ReplicaFixture f;
    SyncEngine e(f.replica, pipelined());
    auto out = connect(e, f);
    auto pull = single<p::Pull>(out);
    // A local write while the pull is out: its push must go before the next page is asked.
    (void)f.household("Local");
    CHECK(e.push_pending().frames.empty());  // the pull is in flight
    out = feed(e, one_household_page(pull.since, 10, 1, true));
    CHECK_FALSE(e.has_deferred());  // stored at once, as without pipelining
    CHECK(f.replica->sync_info().value().cursor == 10);
    REQUIRE(out.frames.size() == 1);
    CHECK(std::holds_alternative<p::Push>(p::decode_message(out.frames[0]).value()));
}

TEST_CASE("Engine: live notify; a gap pulls from the stored cursor; downloads wait for pushes") {
    ReplicaFixture f;
    const p::ReplicaId other = test_id(0xee, 1);
    SyncEngine e(f.replica);
    auto out = connect(e, f);
    out = feed(e, last_page(single<p::Pull>(out), 20));
    REQUIRE(e.phase() == SyncPhase::live);

    auto r1 = remote_household(other, 1, village_a, "enum-b");
    p::Notify n1{20, 25, {p::ChangeItem{25, 1, r1}}};
    out = feed(e, n1);
    CHECK(out.frames.empty());
    CHECK(f.replica->count("households").value() == 1);
    CHECK(f.replica->sync_info().value().cursor == 25);

    // A page joins, never replaces: a local pending edit survives the server's older state.
    REQUIRE(f.replica->update("households", r1.id, {{"phone", std::string("139")}}));
    out = feed(e, p::Notify{25, 26, {p::ChangeItem{26, 1, r1}}});
    CHECK(f.view("households", r1.id).value("phone") != nullptr);
    CHECK(f.view("households", r1.id).pending());

    // Notify since 30 while we hold 26: something was missed.
    out = feed(
        e,
        p::Notify{30, 35, {p::ChangeItem{35, 1, remote_household(other, 9, village_a, "enum-b")}}});
    auto pull = single<p::Pull>(out);
    CHECK(pull.since == 26);
    CHECK(f.replica->count("households").value() == 1);  // the gapped notify was not applied
    out =
        feed(e, last_page(pull, 35,
                          {p::ChangeItem{31, 1, remote_household(other, 2, village_a, "enum-b")},
                           p::ChangeItem{35, 1, remote_household(other, 9, village_a, "enum-b")}}));
    CHECK(e.phase() == SyncPhase::live);
    CHECK(f.replica->count("households").value() == 3);

    // An old notify (already covered) is ignored.
    out = feed(e, p::Notify{30, 33, {}});
    CHECK(out.frames.empty());
    CHECK(f.replica->sync_info().value().cursor == 35);

    // Pushing: a notify that arrives before the push_ack waits for it.
    out = e.push_pending();
    auto push = single<p::Push>(out);
    CHECK(e.phase() == SyncPhase::pushing);
    out = feed(
        e,
        p::Notify{35, 36, {p::ChangeItem{36, 1, remote_household(other, 4, village_a, "enum-b")}}});
    CHECK(out.frames.empty());
    CHECK(f.replica->count("households").value() == 3);
    out = feed(e, ack_all(push));
    CHECK(f.replica->count("households").value() == 4);
    CHECK(e.phase() == SyncPhase::live);
    CHECK(f.replica->sync_info().value().cursor == 36);
}

TEST_CASE("Engine: revoke removes records that left the scope, and says if writes were lost") {
    ReplicaFixture f;
    const p::ReplicaId other = test_id(0xee, 1);
    auto r1 = remote_household(other, 1, village_a, "enum-b");
    auto r2 = remote_household(other, 2, village_a, "enum-b");
    auto r3 = remote_household(other, 3, village_a, "enum-b");
    f.sync({p::ChangeItem{1, 1, r1}, p::ChangeItem{2, 1, r2}, p::ChangeItem{3, 1, r3}}, 3);
    SyncEngine e(f.replica);
    auto out = connect(e, f);
    out = feed(e, last_page(single<p::Pull>(out), 3));
    REQUIRE(e.phase() == SyncPhase::live);
    REQUIRE(f.replica->update("households", r1.id, {{"phone", std::string("1")}}));

    std::vector<fieldsync::ChangeNotice> notices;
    f.replica->add_observer([&](const fieldsync::ChangeNotice& n) { notices.push_back(n); });
    out = feed(
        e, p::Revoke{4, {p::RecordRef{"households", r1.id}, p::RecordRef{"households", r2.id}}});
    const auto* ev = find_event(out, SyncEventKind::revoked);
    REQUIRE(ev);
    CHECK(ev->count == 2);
    CHECK(contains(ev->message, "1 of them had changes not uploaded"));
    CHECK(f.replica->count("households").value() == 1);
    CHECK_FALSE(f.replica->get("households", r1.id).value().has_value());
    CHECK(f.replica->pending_count().value() == 0);
    REQUIRE(notices.size() == 1);
    CHECK(notices[0].origin == fieldsync::ChangeOrigin::revoked);
    CHECK(notices[0].records.at("households").size() == 2);
    CHECK(e.progress().revoked == 2);
}

TEST_CASE("Engine: rebootstrap_required pushes pending, pulls from 0 and drops the rest") {
    ReplicaFixture f;
    const p::ReplicaId other = test_id(0xee, 1);
    auto a = remote_household(other, 1, village_a, "enum-b");
    auto b = remote_household(other, 2, village_a, "enum-b");
    f.sync({p::ChangeItem{1, 1, a}, p::ChangeItem{2, 1, b}}, 10);
    auto c = f.household("Local");  // pending
    SyncEngine e(f.replica);

    SUBCASE("right after welcome") {
        auto out = connect(e, f);
        auto push = single<p::Push>(out);
        out = feed(e, server_error(p::protocol_errc::rebootstrap_required,
                                   "your assigned areas changed", false));
        CHECK(out.frames.empty());  // the push is still in flight
        out = feed(e, ack_all(push));
        CHECK(has_event(out, SyncEventKind::rebootstrap_started));
        auto pull = single<p::Pull>(out);
        CHECK(pull.since == 0);
        auto c_state = f.view("households", c).state;
        out = feed(e, last_page(pull, 50, {p::ChangeItem{5, 1, a}, p::ChangeItem{50, 1, c_state}}));
        const auto* done = find_event(out, SyncEventKind::rebootstrap_finished);
        REQUIRE(done);
        CHECK(done->count == 1);
        CHECK(f.replica->get("households", a.id).value().has_value());
        CHECK_FALSE(f.replica->get("households", b.id).value().has_value());
        CHECK(f.replica->get("households", c).value().has_value());
        CHECK(e.phase() == SyncPhase::live);
        CHECK(f.replica->sync_info().value().cursor == 50);
    }
    SUBCASE("in answer to a pull, with a local record still pending afterwards") {
        REQUIRE(f.replica->remove("households", c));
        auto out = connect(e, f);
        auto push = single<p::Push>(out);
        p::PushAck ack = ack_all(push);
        ack.results[0] = p::ItemResult{false, "forbidden", "outside your areas"};
        out = feed(e, ack);
        auto pull = single<p::Pull>(out);
        CHECK(pull.since == 10);
        out = feed(e, server_error(p::protocol_errc::rebootstrap_required, "cursor purged", false));
        pull = single<p::Pull>(out);
        CHECK(pull.since == 0);
        out = feed(e, last_page(pull, 60, {}));
        CHECK(find_event(out, SyncEventKind::rebootstrap_finished)->count == 2);
        // The rejected record is never dropped silently; the re-bootstrap offers it again (the
        // refusal may not hold in the new scope), so it is pending and pushed once more.
        CHECK(f.replica->get("households", c).value().has_value());
        CHECK(f.view("households", c).sync == SyncStatus::pending);
        auto again = single<p::Push>(out);
        REQUIRE(again.items.size() == 1);
        CHECK(again.items[0].record.id == c);
    }
    SUBCASE("interrupted: the next session starts again from 0") {
        auto out = connect(e, f);
        auto push = single<p::Push>(out);
        out = feed(e, server_error(p::protocol_errc::rebootstrap_required, "purged", false));
        out = feed(e, ack_all(push));
        auto pull = single<p::Pull>(out);
        CHECK(pull.since == 0);
        p::Changes page;
        page.since = 0;
        page.cursor = 5;
        page.more = true;
        page.items = {p::ChangeItem{5, 1, a}};
        out = feed(e, page);
        CHECK(single<p::Pull>(out).since == 5);
        (void)e.on_disconnected();
        f.reopen();
        SyncEngine e2(f.replica);
        out = e2.start({}, "sdk-test/1");
        out = feed(e2, make_welcome("enum-a", {village_a}, false, t0));
        CHECK(has_event(out, SyncEventKind::rebootstrap_started));
        pull = single<p::Pull>(out);
        CHECK(pull.since == 0);
        out = feed(e2, last_page(pull, 70, {p::ChangeItem{5, 1, a}}));
        CHECK(find_event(out, SyncEventKind::rebootstrap_finished)->count == 2);  // b and c
        CHECK(f.replica->count("households").value() == 1);
    }
}

TEST_CASE("Engine: digest check compares at the server's cursor and repairs a mismatch") {
    ReplicaFixture f;
    const p::ReplicaId other = test_id(0xee, 1);
    auto a = remote_household(other, 1, village_a, "enum-b");
    f.sync({p::ChangeItem{1, 1, a}}, 20);
    auto local = f.household("Local");
    SyncEngine e(f.replica);
    auto out = connect(e, f);
    out = feed(e, ack_all(single<p::Push>(out)));
    out = feed(e, last_page(single<p::Pull>(out), 20));
    REQUIRE(e.phase() == SyncPhase::live);

    out = e.check_digest();
    single<p::DigestRequest>(out);
    const auto d = digest_of(*f.replica);
    CHECK(d.count() == 2);

    SUBCASE("equal") {
        out = feed(e, p::Digest{20, d.count(), d.value()});
        CHECK(has_event(out, SyncEventKind::digest_matched));
        CHECK(out.frames.empty());
    }
    SUBCASE("computed at a newer cursor: pull up to it, then compare") {
        auto b = remote_household(other, 2, village_a, "enum-b");
        p::ScopeDigest server = d;
        server.add(b);
        out = feed(e, p::Digest{25, server.count(), server.value()});
        auto pull = single<p::Pull>(out);
        CHECK(pull.since == 20);
        out = feed(e, last_page(pull, 25, {p::ChangeItem{25, 1, b}}));
        CHECK(has_event(out, SyncEventKind::digest_matched));
    }
    SUBCASE("different: reported, and repaired by pulling everything again") {
        p::ScopeDigest server;
        server.add(a);
        out = feed(e, p::Digest{20, server.count(), server.value()});
        CHECK(has_event(out, SyncEventKind::digest_mismatch));
        CHECK(has_event(out, SyncEventKind::rebootstrap_started));
        auto pull = single<p::Pull>(out);
        CHECK(pull.since == 0);
        out = feed(e, last_page(pull, 20, {p::ChangeItem{1, 1, a}}));
        CHECK(find_event(out, SyncEventKind::rebootstrap_finished)->count == 1);
        CHECK_FALSE(f.replica->get("households", local).value().has_value());
    }
    SUBCASE("waits while writes are pending") {
        (void)feed(e, p::Digest{20, d.count(), d.value()});
        f.household("Another");
        out = e.check_digest();
        auto push = single<p::Push>(out);  // upload first
        out = feed(e, ack_all(push));
        single<p::DigestRequest>(out);
    }
}

TEST_CASE("Engine: protocol errors, fatal errors and timeouts end the session") {
    ReplicaFixture f;
    f.sync();
    SyncEngine e(f.replica);
    auto out = connect(e, f);
    auto pull = single<p::Pull>(out);

    SUBCASE("an undecodable frame is reported to the server and closes") {
        out = e.on_frame(p::Bytes{0xa1, 0x61});
        CHECK(out.close);
        auto err = single<p::ErrorMessage>(out);
        CHECK(err.fatal);
        CHECK(e.phase() == SyncPhase::error);
        CHECK(f.replica->sync_info().value().last_error.has_value());
    }
    SUBCASE("a frame over the session's size limit, decoded on another thread or not") {
        p::Bytes huge((4u << 20) + 1, 0x00);
        auto decoded = SyncEngine::decode_frame(huge);  // any thread; the engine checks size
        CHECK(decoded.bytes == huge.size());
        out = e.on_decoded(std::move(decoded));
        CHECK(out.close);
        CHECK(single<p::ErrorMessage>(out).code == "limit_exceeded");
        CHECK(contains(find_event(out, SyncEventKind::error)->message,
                       "frame of 4194305 bytes exceeds the limit of 4194304; the next sync "
                       "asks for pages half as large"));
        // It answered a pull: the next session asks for pages half as large.
        (void)e.on_disconnected();
        out = connect(e, f);
        CHECK(single<p::Pull>(out).limit == fieldsync::EngineOptions{}.page_size / 2);
    }
    SUBCASE("a reply that answers nothing") {
        out = feed(e, p::PushAck{99, {}, 0, t0});
        CHECK(out.close);
        CHECK(contains(single<p::ErrorMessage>(out).message, "push_ack.batch"));
    }
    SUBCASE("a fatal server error") {
        out = feed(e, server_error(p::protocol_errc::internal, "the server's store failed", true));
        CHECK(out.close);
        CHECK(out.frames.empty());  // an error is not answered with an error
        CHECK(e.progress().last_error->code == p::protocol_errc::internal);
    }
    SUBCASE("no reply within the timeout") {
        out = e.tick(f.clock.now() + 59'000);
        CHECK_FALSE(out.close);
        out = e.tick(f.clock.now() + 61'000);
        CHECK(out.close);
        CHECK(contains(e.progress().last_error->message, "no reply to pull"));
        CHECK(e.phase() == SyncPhase::error);
        (void)e.on_disconnected();
        CHECK(e.phase() == SyncPhase::error);
        out = connect(e, f);  // a new session is always possible
        CHECK(single<p::Pull>(out).since == pull.since);
    }
    SUBCASE("frames after the session ended are ignored") {
        (void)e.on_disconnected();
        out = feed(e, last_page(pull, 5));
        CHECK(out.frames.empty());
        CHECK(out.events.empty());
    }
}

TEST_CASE("Engine: a remote timestamp far in the future is joined but does not drag the clock") {
    ReplicaFixture f;
    f.sync();
    const p::ReplicaId other = test_id(0xee, 1);
    // Another tablet's clock was a year fast, and the server let it through.
    auto future = remote_household(other, 1, village_a, "enum-b", t0 + one_year_ms);
    auto normal = remote_household(other, 2, village_a, "enum-b", t0 + 30'000);
    f.sync({p::ChangeItem{1, 1, future}, p::ChangeItem{2, 1, normal}}, 2);
    CHECK(f.view("households", future.id).state == future);  // data is never dropped
    const auto clock = f.replica->sync_info().value().clock;
    CHECK(clock.wall_ms() == t0 + 30'000);  // observed the normal one, refused the future one
    REQUIRE(f.replica->update("households", future.id, {{"notes", std::string("n")}}));
    const auto notes = f.view("households", future.id).state.fields.at("notes");
    CHECK(std::get<p::LwwState>(notes).entry.ts.wall_ms() == t0 + 30'000);
}
