//! `--ui json`: every event type appears in a two-node scenario, and every line validates
//! against the documented schema (docs/json-events.schema.json); the `channel` and `dm` fields
//! of a message say where it was said, on screen and in an export.

use std::collections::BTreeSet;

use anyhow::Context;
use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use p2pchat_tests::Chat;
use serde_json::Value;

/// The documented schema of the events, docs/json-events.schema.json, ready to check lines
/// (itself checked against the JSON Schema meta-schema; never fetching a remote `$ref`).
fn events_schema() -> anyhow::Result<Validator> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/json-events.schema.json"
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let schema: Value =
        serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?;
    jsonschema::options()
        .offline()
        .build(&schema)
        .map_err(|e| anyhow::anyhow!("{path} is not a valid JSON Schema: {e}"))
}

/// `Err` says why `event` does not match `schema`. The schema is one `oneOf` option per event
/// type, so rather than "matches none of them" it says what is wrong in the option for the
/// event's own type (the other options fail on `/type` alone).
fn check(schema: &Validator, event: &Value) -> anyhow::Result<()> {
    let Err(error) = schema.validate(event) else {
        return Ok(());
    };
    let why = match error.kind() {
        ValidationErrorKind::OneOfNotValid { context } => {
            let own_type: Vec<String> = context
                .iter()
                .filter(|option| !option.iter().any(|e| e.instance_path().as_str() == "/type"))
                .flatten()
                .map(|e| format!("at {:?}: {e}", e.instance_path().as_str()))
                .collect();
            if own_type.is_empty() {
                format!("no event type {} in the schema", event["type"])
            } else {
                own_type.join("; ")
            }
        }
        _ => error.masked().to_string(),
    };
    anyhow::bail!("{event} does not match the schema: {why}")
}

/// Reads JSON lines from `chat`'s stdout until one has type `wanted` and `matches`; returns
/// every line read.
async fn until(
    chat: &mut Chat,
    wanted: &str,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let mut seen = Vec::new();
    loop {
        let line = chat
            .next_line()
            .await
            .with_context(|| format!("{} waiting for {wanted} after {seen:?}", chat.name))?;
        let value: Value =
            serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
        let done = value["type"] == wanted && matches(&value);
        seen.push(value);
        if done {
            return Ok(seen);
        }
    }
}

#[test]
fn a_broken_event_is_refused_with_the_reason() -> anyhow::Result<()> {
    let schema = events_schema()?;
    let message = serde_json::json!({"v": 1, "type": "message", "author": "5a6c10", "name": "alice",
        "room": "lan", "channel": "general", "dm": null, "seq": 2, "lamport": 2,
        "timestamp": 1767000000000_u64, "text": "hello"});
    let why = |edit: &dyn Fn(&mut Value)| {
        let mut event = message.clone();
        edit(&mut event);
        check(&schema, &event).err().map(|e| e.to_string())
    };
    assert_eq!(why(&|_| {}), None, "the unbroken event matches");
    let negative = why(&|e| e["seq"] = (-1).into()).unwrap_or_default();
    assert!(
        negative.contains(r#"at "/seq": -1 is less than the minimum"#),
        "{negative}"
    );
    let half_a_dm = why(&|e| e["dm"] = serde_json::json!({"with": "5a6c10"})).unwrap_or_default();
    assert!(half_a_dm.contains("does not match"), "{half_a_dm}");
    let unknown = why(&|e| e["colour"] = "red".into()).unwrap_or_default();
    assert!(unknown.contains("'colour' was unexpected"), "{unknown}");
    let no_type = why(&|e| e["type"] = "telegram".into()).unwrap_or_default();
    assert!(
        no_type.contains(r#"no event type "telegram" in the schema"#),
        "{no_type}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_appears_and_matches_the_schema() -> anyhow::Result<()> {
    let schema = events_schema()?;
    let dirs = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let dir = |d: &tempfile::TempDir| d.path().to_str().map(str::to_owned).unwrap_or_default();
    let json = ["--ui", "json"];
    let mut events = Vec::new();

    let mut alice = Chat::start_user("alice", &dir(&dirs.0), &[], &json)?;
    let seen = until(&mut alice, "listening", |_| true).await?;
    let address = seen[seen.len() - 1]["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    events.extend(seen);
    alice.say("hello").await?;
    events.extend(until(&mut alice, "message", |m| m["text"] == "hello").await?);

    // Bob catches up on alice's log (progress, then complete), says something, and sends a line
    // that is too long (an error).
    let mut bob = Chat::start_user("bob", &dir(&dirs.1), &[&address], &json)?;
    events.extend(
        until(&mut bob, "sync_complete", |e| {
            e["received"].as_u64() > Some(0)
        })
        .await?,
    );
    bob.say("hi alice").await?;
    events.extend(until(&mut bob, "message", |m| m["text"] == "hi alice").await?);
    bob.say(&"x".repeat(5000)).await?;
    events.extend(until(&mut bob, "error", |_| true).await?);
    events.extend(until(&mut alice, "message", |m| m["text"] == "hi alice").await?);
    assert!(bob.interrupt().await?);
    events.extend(until(&mut alice, "disconnected", |_| true).await?);

    // Another key calling itself bob: alice warns.
    let impostor = Chat::start_user("bob", &dir(&dirs.2), &[&address], &json)?;
    events.extend(
        until(&mut alice, "warning", |w| {
            w["message"]
                .as_str()
                .is_some_and(|m| m.contains("claims the name bob"))
        })
        .await?,
    );
    assert!(impostor.interrupt().await?);
    // Stopping, alice ends with her stats.
    let pid = alice.child.id().unwrap_or_default().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()?;
    events.extend(until(&mut alice, "stats", |s| s["received"].as_u64() > Some(0)).await?);
    assert!(alice.child.wait().await?.success());

    for event in &events {
        check(&schema, event)?;
    }
    // With no --room, everything is in the LAN room, and the events say so.
    for event in &events {
        match event["type"].as_str() {
            Some("message" | "sync_progress" | "sync_complete") => {
                assert_eq!(event["room"], "lan", "{event}");
                let mut roomless = event.clone();
                roomless.as_object_mut().map(|fields| fields.remove("room"));
                assert!(
                    !schema.is_valid(&roomless),
                    "the schema requires the room: {roomless}"
                );
            }
            Some("connected") => assert_eq!(event["rooms"], serde_json::json!(["lan"])),
            _ => {}
        }
    }
    let types: BTreeSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let expected = [
        "connected",
        "disconnected",
        "error",
        "listening",
        "message",
        "stats",
        "sync_complete",
        "sync_progress",
        "warning",
    ];
    assert_eq!(
        types,
        BTreeSet::from(expected),
        "looking_for needs mDNS, which this test keeps off"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_is_an_event_that_matches_the_schema() -> anyhow::Result<()> {
    let schema = events_schema()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().unwrap_or_default();
    let target = "/ip4/127.0.0.1/tcp/1";
    let mut alice = Chat::start_user("alice", data, &[target], &["--ui", "json"])?;
    let seen = until(&mut alice, "connection_failed", |_| true).await?;
    for event in &seen {
        check(&schema, event)?;
    }
    let failed = &seen[seen.len() - 1];
    assert_eq!(failed["target"], target);
    assert_eq!(failed["incoming"], false);
    assert_eq!(failed["reason"], "refused");
    assert_eq!(failed["count"], 1);
    assert!(
        failed["message"].as_str().is_some_and(
            |m| m.starts_with("cannot connect to /ip4/127.0.0.1/tcp/1: connection refused")
        ),
        "{failed}"
    );
    assert!(alice.interrupt().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_and_direct_message_fields_appear_and_match_the_schema() -> anyhow::Result<()> {
    let schema = events_schema()?;
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let dir = |d: &tempfile::TempDir| d.path().to_str().map(str::to_owned).unwrap_or_default();
    let mut bob = Chat::start_user("bob", &dir(&dirs.0), &[], &["--ui", "json"])?;
    let seen = until(&mut bob, "listening", |_| true).await?;
    let address = seen[seen.len() - 1]["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut events = Vec::new();
    let mut alice = Chat::start_user("alice", &dir(&dirs.1), &[&address], &[])?;
    bob.say("hi").await?; // after bob's encryption key in his log
    alice.wait_line("bob> hi").await?;
    alice.say("/join #ops").await?;
    alice.say("deploy at 5").await?;
    alice.say("/msg bob psst").await?;
    events.extend(until(&mut bob, "message", |m| m["text"] == "psst").await?);
    assert!(alice.interrupt().await?);
    assert!(bob.interrupt().await?);
    events.extend(p2pchat_tests::export_events("alice", dirs.1.path(), &[])?);

    let messages: Vec<&Value> = events.iter().filter(|e| e["type"] == "message").collect();
    let said = |text: &str| {
        messages
            .iter()
            .filter(|m| m["text"] == text)
            .map(|m| (m["channel"].clone(), m["dm"].clone()))
            .collect::<Vec<_>>()
    };
    let null = Value::Null;
    assert_eq!(
        said("hi"),
        [
            ("general".into(), null.clone()),
            ("general".into(), null.clone())
        ],
        "bob's line, on his screen and in alice's export"
    );
    assert_eq!(
        said("deploy at 5"),
        [("ops".into(), null.clone()), ("ops".into(), null.clone())]
    );
    let bob_key = messages
        .iter()
        .find(|m| m["text"] == "hi")
        .map(|m| m["author"].clone())
        .context("bob's line")?;
    let alice_key = messages
        .iter()
        .find(|m| m["text"] == "deploy at 5")
        .map(|m| m["author"].clone())
        .context("alice's line")?;
    assert_eq!(
        said("psst"),
        [
            (
                null.clone(),
                serde_json::json!({"with": alice_key, "with_name": "alice", "outgoing": false})
            ),
            (
                null.clone(),
                serde_json::json!({"with": bob_key, "with_name": "bob", "outgoing": true})
            ),
        ],
        "received by bob, and sent in alice's export"
    );
    for event in &events {
        check(&schema, event)?;
        if event["type"] == "message" {
            for field in ["channel", "dm"] {
                let mut without = event.clone();
                without.as_object_mut().map(|fields| fields.remove(field));
                assert!(!schema.is_valid(&without), "the schema requires {field}");
            }
        }
    }
    Ok(())
}
