// The sync WebSocket session's entry points (net/websocket_session.cpp). Beast inside.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "any_stream.hpp"

namespace fieldsync::server::netlayer {

using Request = beast::http::request<beast::http::string_body>;

/// Accepts the WebSocket upgrade `req` on `stream` and runs the sync session until the
/// connection ends. \note On the conn's strand.
net::awaitable<void> run_websocket(AnyStream stream, Request req, ConnPtr conn, NetContext& ctx);

}  // namespace fieldsync::server::netlayer
