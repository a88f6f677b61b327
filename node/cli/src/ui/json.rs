//! NDJSON events, schema version 1, documented in docs/json-events.md (with a JSON Schema in
//! docs/json-events.schema.json): one object per line, each with `"v": 1` and a `"type"`.

use p2pchat_node::{Event, Message, Stats};
use p2pchat_protocol::Author;
use serde::Serialize;
use serde_json::{Value, json};

use super::format::connection_failed;

/// The `message` event, serialized straight from the message (the most frequent event: no
/// intermediate `Value`). Fields in the same order as the other events' (sorted).
#[derive(Serialize)]
struct MessageEvent<'a> {
    #[serde(serialize_with = "as_hex")]
    author: &'a Author,
    lamport: u64,
    name: &'a str,
    room: &'a str,
    seq: u64,
    text: &'a str,
    timestamp: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    v: u8,
}

fn as_hex<S: serde::Serializer>(author: &&Author, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(author)
}

/// A chat message as a `message` event line (also each line of
/// `p2pchat export --format ndjson`).
pub fn message(message: &Message) -> String {
    let event = MessageEvent {
        author: &message.author,
        lamport: message.clock,
        name: &message.name,
        room: &message.room,
        seq: message.seq,
        text: &message.text,
        timestamp: message.timestamp,
        kind: "message",
        v: 1,
    };
    serde_json::to_string(&event).expect("strings and integers always serialize")
}

/// A status event, if it has a JSON form.
pub fn event(event: &Event) -> Option<Value> {
    Some(match event {
        Event::Listening { address } => {
            json!({"v": 1, "type": "listening", "address": address.to_string()})
        }
        Event::LookingFor { name, lan, relays } => json!({
            "v": 1, "type": "looking_for", "name": name, "lan": lan,
            "relays": relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        Event::Connected {
            peer,
            name,
            rooms,
            path,
            ..
        } => json!({
            "v": 1, "type": "connected", "peer": peer.to_string(), "name": name, "rooms": rooms,
            "path": path.as_str(),
        }),
        Event::DirectConnection { peer, name } => json!({
            "v": 1, "type": "direct_connection", "peer": peer.to_string(), "name": name,
        }),
        Event::Disconnected { peer, name } => {
            json!({"v": 1, "type": "disconnected", "peer": peer.to_string(), "name": name})
        }
        Event::SyncProgress {
            peer,
            name,
            room,
            received,
            total,
        } => json!({
            "v": 1, "type": "sync_progress", "peer": peer.to_string(), "name": name,
            "room": room, "received": received, "total": total,
        }),
        Event::SyncComplete {
            peer,
            name,
            room,
            received,
        } => json!({
            "v": 1, "type": "sync_complete", "peer": peer.to_string(), "name": name,
            "room": room, "received": received,
        }),
        Event::ConnectionFailed {
            target,
            incoming,
            reason,
            count,
        } => json!({
            "v": 1, "type": "connection_failed", "target": target, "incoming": incoming,
            "reason": reason.code(), "count": count,
            "message": connection_failed(target, *incoming, reason, *count),
        }),
        Event::Warning { message } => json!({"v": 1, "type": "warning", "message": message}),
        Event::OwnLogRestored {
            restored,
            from,
            sent,
        } => json!({
            "v": 1, "type": "own_log_restored", "restored": restored, "from": from, "sent": sent,
        }),
        Event::Error { message } => json!({"v": 1, "type": "error", "message": message}),
        _ => return None,
    })
}

/// What the node received from peers, as the final `stats` event.
pub fn stats(stats: &Stats) -> Value {
    json!({
        "v": 1, "type": "stats", "received": stats.received, "stored": stats.stored,
        "duplicates": stats.duplicates, "rejected_batches": stats.rejected_batches,
    })
}
