//! Messages that arrive during a catch-up are shown in merged order. Alice and bob take turns,
//! then carol joins through bob, who sends her one log after the other: her plain stdout and
//! her chat window still show the conversation turn by turn.

use p2pchat_tests::tmux::Tmux;
use p2pchat_tests::{Chat, import, p2pchat_binary};

/// Lines each of alice and bob wrote before (imported): more output than a pipe holds, and
/// logs of several pages of the message feed (1024), so a catch-up cannot reach carol's screen
/// in one piece, whichever log is sent first.
const EARLIER: usize = 3000;

/// The conversation, in the order it was held.
const TURNS: [&str; 6] = [
    "alice> question 1",
    "bob> answer 1",
    "alice> question 2",
    "bob> answer 2",
    "alice> question 3",
    "bob> answer 3",
];

/// Alice and bob (plain mode, in `dirs`), each with [`EARLIER`] lines, take turns, each line
/// sent once the other has shown the previous one, so their clocks alternate. Returns both,
/// and bob's address.
async fn conversation(dirs: &[tempfile::TempDir; 2]) -> anyhow::Result<(Chat, Chat, String)> {
    let dir = |d: &tempfile::TempDir| d.path().to_str().map(str::to_owned).unwrap_or_default();
    for (name, d) in [("alice", &dirs[0]), ("bob", &dirs[1])] {
        let lines: String = (0..EARLIER).map(|i| format!("{name} line {i}\n")).collect();
        import(name, dir(d), &lines)?;
    }
    let mut alice = Chat::start_user("alice", &dir(&dirs[0]), &[], &[])?;
    let alice_addr = alice.listen_addr().await?;
    let mut bob = Chat::start_user("bob", &dir(&dirs[1]), &[&alice_addr], &[])?;
    let bob_addr = bob.listen_addr().await?;
    bob.wait_stderr("info> connected to alice (").await?;
    for turn in TURNS {
        let (speaker, listener) = if turn.starts_with("alice> ") {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let text = turn.split_once("> ").map_or(turn, |(_, text)| text);
        speaker.say(text).await?;
        speaker.wait_line(turn).await?;
        listener.wait_line(turn).await?;
    }
    Ok((alice, bob, bob_addr))
}

/// The first `2 * EARLIER + TURNS.len()` messages `chat` prints, as `NAME> TEXT` (from
/// `message` events in JSON mode).
async fn caught_up(chat: &mut Chat, json: bool) -> anyhow::Result<Vec<String>> {
    let mut shown = Vec::new();
    while shown.len() < 2 * EARLIER + TURNS.len() {
        let line = chat.next_line().await?;
        if !json {
            shown.push(line);
            continue;
        }
        let event: serde_json::Value = serde_json::from_str(&line)?;
        if event["type"] == "message" {
            let (name, text) = (&event["name"], &event["text"]);
            shown.push(format!(
                "{}> {}",
                name.as_str().unwrap_or_default(),
                text.as_str().unwrap_or_default()
            ));
        }
    }
    Ok(shown)
}

/// Checks that `shown` is the earlier lines, each person's in order, then the turns in order.
fn check_order(who: &Chat, shown: &[String]) {
    let (earlier, turns) = shown.split_at(2 * EARLIER);
    assert_eq!(turns, TURNS, "{}'s order{}", who.name, who.stderr_tail());
    for name in ["alice", "bob"] {
        let theirs: Vec<&str> = earlier
            .iter()
            .map(String::as_str)
            .filter(|line| line.starts_with(&format!("{name}> ")))
            .collect();
        let expected: Vec<String> = (0..EARLIER)
            .map(|i| format!("{name}> {name} line {i}"))
            .collect();
        assert_eq!(theirs, expected, "{name}'s earlier lines at {}", who.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_is_printed_in_merged_order() -> anyhow::Result<()> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let (alice, bob, bob_addr) = conversation(&dirs).await?;

    // Carol in plain mode and dave in JSON mode join through bob.
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let dir = |d: &tempfile::TempDir| d.path().to_str().map(str::to_owned).unwrap_or_default();
    let mut carol = Chat::start_user("carol", &dir(&dirs[0]), &[&bob_addr], &[])?;
    let mut dave = Chat::start_user("dave", &dir(&dirs[1]), &[&bob_addr], &["--json"])?;
    // Their stdout is not read until the catch-up is over, so each log arrives whole, as on a
    // busy terminal.
    carol.wait_stderr("info> connected to bob (").await?;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (carols, daves) = tokio::join!(caught_up(&mut carol, false), caught_up(&mut dave, true));
    check_order(&carol, &carols?);
    check_order(&dave, &daves?);

    // Once caught up, a new line is printed at once, at the bottom.
    carol.say("thanks").await?;
    assert_eq!(carol.next_line().await?, "carol> thanks");
    for chat in [carol, dave, bob, alice] {
        assert!(chat.interrupt().await?);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_is_shown_in_merged_order_in_the_chat_window() -> anyhow::Result<()> {
    let Some(tmux) = Tmux::new()? else {
        return Ok(());
    };
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let (alice, bob, bob_addr) = conversation(&dirs).await?;

    let carol_dir = tempfile::tempdir()?;
    tmux.open("carol", 100, 30)?;
    tmux.line(
        "carol",
        &format!(
            "{} --name carol --data-dir {} --listen /ip4/127.0.0.1/tcp/0 --no-mdns --peer {bob_addr}",
            p2pchat_binary().display(),
            carol_dir.path().display()
        ),
    )?;
    let screen = tmux
        .wait_for("carol", "the whole conversation", |screen| {
            TURNS
                .iter()
                .all(|turn| screen.iter().any(|row| row.contains(turn)))
        })
        .await?;
    let shown: Vec<&str> = screen
        .iter()
        .filter_map(|row| TURNS.iter().find(|turn| row.contains(**turn)).copied())
        .collect();
    assert_eq!(shown, TURNS, "{}", screen.join("\n"));
    tmux.press("carol", &["C-c"])?;
    for chat in [bob, alice] {
        assert!(chat.interrupt().await?);
    }
    Ok(())
}
