// Two custom transports, as an app would write them (fieldsync/transport.hpp has the contract):
//
//  - LoopbackTransport hands the replicator's frames to a sync server running in the same
//    process (fieldsync::server::StoreWorker) instead of a socket: LiteCore's
//    LoopbackWebSocket idea. Tests and demos get the real protocol without a network.
//  - CountingTransport wraps any other transport (the default WebSocket one, or a platform's)
//    and counts frames and bytes: the "thin wrapper" pattern for logging, metrics or
//    throttling.
//
// The contract in both: events reach the delegate in order, never concurrently, from the
// transport's own thread (LoopbackTransport has one delivery thread per connection); no
// delegate call after the destructor returned.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "fieldsync/server/store_worker.hpp"
#include "fieldsync/transport.hpp"

namespace example {

/// Fault injection for tests (all off for a normal connection).
struct LoopbackFaults {
    bool refuse = false;        ///< report connect_failed instead of opening
    bool never_open = false;    ///< report nothing at all after connect (a hung network)
    bool ignore_close = false;  ///< never confirm close() (a transport that misbehaves)
    /// > 0: after this many frames from the server, the connection "drops" (on_closed
    /// with a network error) instead of delivering the next one.
    int drop_after_frames = 0;
};

class LoopbackTransport final : public fieldsync::Transport {
public:
    using Faults = LoopbackFaults;

    explicit LoopbackTransport(fieldsync::server::StoreWorker& worker, Faults faults = {})
        : m_worker(worker), m_faults(faults), m_box(std::make_shared<Mailbox>()) {
        m_box->drop_after = faults.drop_after_frames;
        m_thread = std::thread([box = m_box] { box->run(); });
    }

    ~LoopbackTransport() override {
        {
            std::lock_guard lock(m_box->mutex);
            m_box->stop = true;
            m_box->delegate.reset();
            m_box->wake.notify_all();
        }
        m_thread.join();  // after this, no delegate call can happen
        if (m_session) m_worker.close_session(m_session);
    }

    void connect(const std::string&, const fieldsync::TransportHeaders&,
                 std::shared_ptr<fieldsync::TransportDelegate> delegate) override {
        {
            std::lock_guard lock(m_box->mutex);
            m_box->delegate = std::move(delegate);
        }
        if (m_faults.never_open) return;
        if (m_faults.refuse) {
            fieldsync::TransportClose c;
            c.error = fieldsync::Error{fieldsync::transport_errc::connect_failed,
                                       "loopback: connection refused (injected)"};
            m_box->post_closed(c);
            return;
        }
        // The worker calls back on its own thread: only queue there (it must not block).
        m_session =
            m_worker.open_session("loopback", [box = m_box](fieldsync::server::SyncOutput out) {
                for (auto& f : out.frames)
                    box->post_frame(std::move(f));
                if (out.close) {
                    fieldsync::TransportClose c;
                    c.code = out.close_code ? out.close_code : 1000;
                    c.reason = out.close_reason;
                    box->post_closed(c);
                }
            });
        m_box->post_open();
    }

    void send(fieldsync::protocol::Bytes frame) override {
        if (m_session && !m_closing) m_worker.frame(m_session, std::move(frame));
    }

    void close(std::uint16_t code, std::string reason) override {
        if (m_closing) return;
        m_closing = true;
        if (m_session) {
            m_worker.close_session(m_session);
            m_session = 0;
        }
        if (m_faults.ignore_close) return;
        fieldsync::TransportClose c;
        c.code = code;
        c.reason = std::move(reason);
        m_box->post_closed(c);
    }

private:
    /// The delivery queue, shared with the worker's callback (which may outlive the transport).
    struct Mailbox {
        std::mutex mutex;
        std::condition_variable wake;
        std::deque<std::function<void(fieldsync::TransportDelegate&)>> events;
        std::shared_ptr<fieldsync::TransportDelegate> delegate;  // null once closed was delivered
        bool closed = false;  // a closed event is queued: nothing after it
        bool stop = false;
        int drop_after = 0;
        int frames = 0;

        void post(std::function<void(fieldsync::TransportDelegate&)> f) {
            std::lock_guard lock(mutex);
            if (closed || stop) return;
            events.push_back(std::move(f));
            wake.notify_all();
        }
        void post_open() {
            post([](fieldsync::TransportDelegate& d) { d.on_open(); });
        }
        void post_frame(fieldsync::protocol::Bytes f) {
            bool drop = false;
            {
                std::lock_guard lock(mutex);
                drop = drop_after > 0 && ++frames > drop_after;
            }
            if (drop) {
                fieldsync::TransportClose c;
                c.error = fieldsync::Error{fieldsync::transport_errc::network,
                                           "loopback: connection lost (injected)"};
                post_closed(c);
                return;
            }
            post([f = std::move(f)](fieldsync::TransportDelegate& d) { d.on_frame(f); });
        }
        void post_closed(fieldsync::TransportClose c) {
            post([c = std::move(c)](fieldsync::TransportDelegate& d) { d.on_closed(c); });
            std::lock_guard lock(mutex);
            closed = true;
        }
        void run() {
            std::unique_lock lock(mutex);
            for (;;) {
                wake.wait(lock, [&] { return stop || !events.empty(); });
                if (stop) return;
                auto f = std::move(events.front());
                events.pop_front();
                auto d = delegate;
                const bool last = events.empty() && closed;
                lock.unlock();
                if (d) f(*d);  // in order, one at a time, on this thread
                lock.lock();
                if (last) delegate.reset();
            }
        }
    };

    fieldsync::server::StoreWorker& m_worker;
    Faults m_faults;
    std::shared_ptr<Mailbox> m_box;
    std::thread m_thread;
    fieldsync::server::StoreWorker::SessionId m_session = 0;
    bool m_closing = false;
};

/// Counts what goes through another transport. Shares its counters so the app can read them
/// after the replicator destroyed the transport.
class CountingTransport final : public fieldsync::Transport {
public:
    struct Counters {
        std::atomic<std::uint64_t> connects{0}, frames_out{0}, bytes_out{0}, frames_in{0},
            bytes_in{0};
    };

    CountingTransport(std::unique_ptr<fieldsync::Transport> inner,
                      std::shared_ptr<Counters> counters)
        : m_inner(std::move(inner)), m_counters(std::move(counters)) {}

    void connect(const std::string& url, const fieldsync::TransportHeaders& headers,
                 std::shared_ptr<fieldsync::TransportDelegate> delegate) override {
        ++m_counters->connects;
        m_inner->connect(url, headers, std::make_shared<Tap>(std::move(delegate), m_counters));
    }
    void send(fieldsync::protocol::Bytes frame) override {
        ++m_counters->frames_out;
        m_counters->bytes_out += frame.size();
        m_inner->send(std::move(frame));
    }
    void close(std::uint16_t code, std::string reason) override {
        m_inner->close(code, std::move(reason));
    }

private:
    /// The delegate seen by the inner transport: counts, then forwards on the same thread.
    struct Tap final : fieldsync::TransportDelegate {
        Tap(std::shared_ptr<fieldsync::TransportDelegate> d, std::shared_ptr<Counters> c)
            : outer(std::move(d)), counters(std::move(c)) {}
        void on_open() override { outer->on_open(); }
        void on_frame(fieldsync::protocol::ByteView frame) override {
            ++counters->frames_in;
            counters->bytes_in += frame.size();
            outer->on_frame(frame);
        }
        void on_closed(const fieldsync::TransportClose& c) override { outer->on_closed(c); }
        std::shared_ptr<fieldsync::TransportDelegate> outer;
        std::shared_ptr<Counters> counters;
    };

    std::unique_ptr<fieldsync::Transport> m_inner;
    std::shared_ptr<Counters> m_counters;
};

}  // namespace example
