//! The terminal UI driven in tmux as a user would: keys in, screens read back.

use p2pchat_node::{Message, MessageFeed, Node, Place};
use p2pchat_tests::tmux::Tmux;
use p2pchat_tests::{Chat, address_of, expect_silence, p2pchat_binary, start_node, take};

/// The shell command that starts a chat window and reports its exit status afterwards.
fn chat_command(name: &str, dir: &std::path::Path, extra: &str) -> String {
    format!(
        "{} --name {name} --data-dir {} --listen /ip4/127.0.0.1/tcp/0 --no-mdns {extra}; echo EXIT=$?",
        p2pchat_binary().display(),
        dir.display()
    )
}

/// The address in the `listening on /ip4/127.0.0.1/tcp/…` notice on `screen`.
fn listen_address(screen: &[String]) -> String {
    screen
        .iter()
        .find_map(|row| {
            row.split_whitespace()
                .find(|word| word.starts_with("/ip4/127.0.0.1/tcp/"))
        })
        .map(str::to_owned)
        .unwrap_or_default()
}

/// The row holding the input line (the last non-empty one).
fn input_row(screen: &[String]) -> String {
    screen
        .iter()
        .rev()
        .find(|row| !row.trim().is_empty())
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_rename_and_quit_in_the_terminal_ui() -> anyhow::Result<()> {
    let Some(tmux) = Tmux::new()? else {
        return Ok(());
    };
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);

    // Wide enough that the listen address is not wrapped.
    tmux.open("alice", 200, 30)?;
    tmux.line("alice", &chat_command("alice", dirs.0.path(), ""))?;
    let screen = tmux
        .wait_text("alice", "listening on /ip4/127.0.0.1/tcp/")
        .await?;
    let address = listen_address(&screen);
    assert!(address.contains("/p2p/"), "{address}");

    tmux.open("bob", 120, 30)?;
    tmux.line(
        "bob",
        &chat_command("bob", dirs.1.path(), &format!("--peer {address}")),
    )?;
    tmux.wait_text("bob", "alice connected").await?;
    tmux.wait_for("bob", "alice in the people panel", |s| {
        s.iter().any(|r| r.trim_end().ends_with("│● alice"))
    })
    .await?;

    // A line typed and sent shows on both screens.
    tmux.line("alice", "hello bob")?;
    tmux.wait_text("bob", "alice> hello bob").await?;
    tmux.wait_text("alice", "alice> hello bob").await?;

    // A half-typed line survives an incoming message.
    tmux.type_text("bob", "half typed")?;
    tmux.wait_for("bob", "the half-typed line", |s| {
        input_row(s) == "> half typed"
    })
    .await?;
    tmux.line("alice", "are you there?")?;
    let screen = tmux.wait_text("bob", "alice> are you there?").await?;
    assert_eq!(input_row(&screen), "> half typed", "{}", screen.join("\n"));
    tmux.press("bob", &["Enter"])?;
    tmux.wait_text("alice", "bob> half typed").await?;

    // An unknown command is explained and not sent.
    tmux.line("bob", "/frobnicate")?;
    tmux.wait_text("bob", "unknown command /frobnicate").await?;

    // /peers lists the peer, connected, with its fingerprint.
    tmux.line("bob", "/peers")?;
    let screen = tmux.wait_text("bob", "-- alice #").await?;
    assert!(
        screen
            .iter()
            .any(|r| r.contains("-- alice #") && r.contains(" connected, ")),
        "{}",
        screen.join("\n")
    );

    // /nick renames alice on bob's screen, earlier messages included.
    tmux.line("alice", "/nick alicia")?;
    tmux.wait_text("alice", "you are now alicia").await?;
    tmux.wait_text("bob", "alice is now known as alicia")
        .await?;
    let screen = tmux.wait_text("bob", "alicia> hello bob").await?;
    assert!(
        !screen.iter().any(|r| r.contains("alice> ")),
        "{}",
        screen.join("\n")
    );

    // /quit gives the terminal back: the shell prompt, echo and line editing are back.
    tmux.line("bob", "/quit")?;
    tmux.wait_text("bob", "EXIT=0").await?;
    let stty = dirs.1.path().join("stty.txt");
    tmux.line("bob", &format!("stty -a > {}", stty.display()))?;
    tmux.line("bob", "echo typed-back")?;
    tmux.wait_text("bob", "typed-back").await?;
    let settings = std::fs::read_to_string(&stty)?;
    for flag in ["icanon", "echo", "isig"] {
        assert!(
            settings.split_whitespace().any(|word| word == flag),
            "{flag} is not restored: {settings}"
        );
    }

    // Ctrl-C quits cleanly too.
    tmux.press("alice", &["C-c"])?;
    tmux.wait_text("alice", "EXIT=0").await?;
    Ok(())
}

/// Alice is in the LAN room and room `team`, bob only in `team`, carol only in the LAN room.
/// Alice's chat window lists both rooms, keeps each room's lines apart, counts the new lines of
/// the room not shown, switches with Alt-Down and `/room`, sends what she types to the current
/// room, and shows in its people panel who is in the current room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_in_the_terminal_ui_keep_their_lines_and_people_apart() -> anyhow::Result<()> {
    let Some(tmux) = Tmux::new()? else {
        return Ok(());
    };
    let dirs = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let dir = |d: &tempfile::TempDir| d.path().to_str().map(str::to_owned).unwrap_or_default();
    tmux.open("alice", 200, 30)?;
    tmux.line(
        "alice",
        &chat_command("alice", dirs.0.path(), "--room lan --room team"),
    )?;
    let screen = tmux
        .wait_text("alice", "listening on /ip4/127.0.0.1/tcp/")
        .await?;
    let address = listen_address(&screen);
    let ends = |s: &[String], end: &str| s.iter().any(|r| r.trim_end().ends_with(end));
    assert!(
        ends(&screen, "│▸ lan") && ends(&screen, "│  team"),
        "{}",
        screen.join("\n")
    );

    let mut bob = Chat::start_user("bob", &dir(&dirs.1), &[&address], &["--room", "team"])?;
    let mut carol = Chat::start_user("carol", &dir(&dirs.2), &[&address], &[])?;
    tmux.wait_text("alice", "carol connected").await?;
    bob.wait_stderr("info> connected to alice").await?;
    bob.say("hello team").await?;
    tmux.wait_text("alice", "team (1 new)").await?;
    carol.say("hello lan").await?;
    let screen = tmux.wait_text("alice", "carol> hello lan").await?;
    assert!(ends(&screen, "│● carol"), "{}", screen.join("\n"));
    assert!(
        !screen.iter().any(|r| r.contains("bob")),
        "bob is not in the LAN room: {}",
        screen.join("\n")
    );

    tmux.press("alice", &["M-Down"])?;
    let screen = tmux
        .wait_for("alice", "room team with bob's line and bob", |s| {
            ends(s, "│▸ team")
                && s.iter().any(|r| r.contains("bob> hello team"))
                && ends(s, "│● bob")
        })
        .await?;
    assert!(
        !screen.iter().any(|r| r.contains("carol")),
        "carol is not in team: {}",
        screen.join("\n")
    );
    tmux.line("alice", "hi bob")?;
    bob.wait_line("alice> hi bob").await?;

    tmux.line("alice", "/rooms")?;
    tmux.wait_text("alice", "rooms: lan, team (current)")
        .await?;
    tmux.line("alice", "/room nope")?;
    tmux.wait_text("alice", "no room called nope: your rooms are lan, team")
        .await?;
    tmux.line("alice", "/room lan")?;
    tmux.wait_for("alice", "room lan again", |s| {
        ends(s, "│▸ lan") && s.iter().any(|r| r.contains("-- now in room lan"))
    })
    .await?;
    tmux.line("alice", "hi carol")?;
    let before = carol.wait_line("alice> hi carol").await?;
    assert!(
        !before.iter().any(|line| line.contains("bob")),
        "carol got a line of team: {before:?}"
    );
    bob.say("still here").await?;
    let before = bob.wait_line("bob> still here").await?;
    assert!(
        !before.iter().any(|line| line.contains("carol")),
        "bob got a line of the LAN room: {before:?}"
    );

    tmux.press("alice", &["C-c"])?;
    tmux.wait_text("alice", "EXIT=0").await?;
    assert!(bob.interrupt().await? && carol.interrupt().await?);
    Ok(())
}

/// The input line when it is empty.
const EMPTY_INPUT: &str = "> type a message, or /help";

/// Alice's chat window in tmux session `alice`, connected to bob, an in-process node whose
/// feed is returned (already past alice's arrival).
struct Pair {
    tmux: Tmux,
    bob: Node,
    feed: MessageFeed,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn alice_and_bob() -> anyhow::Result<Option<Pair>> {
    let Some(tmux) = Tmux::new()? else {
        return Ok(None);
    };
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let bob = start_node("bob", dirs.1.path(), &[]).await?;
    let feed = bob.messages();
    tmux.open("alice", 120, 30)?;
    tmux.line(
        "alice",
        &chat_command(
            "alice",
            dirs.0.path(),
            &format!("--peer {}", address_of(&bob)),
        ),
    )?;
    tmux.wait_text("alice", "bob connected").await?;
    Ok(Some(Pair {
        tmux,
        bob,
        feed,
        _dirs: dirs,
    }))
}

/// Pastes 200 lines, then types one more line at once: all 201 reach bob in order, one
/// group commit or not, and the input line is empty and still works afterwards.
async fn paste_200_lines(bracketed: bool) -> anyhow::Result<()> {
    let Some(mut pair) = alice_and_bob().await? else {
        return Ok(());
    };
    let lines: Vec<String> = (1..=200).map(|n| format!("paste line {n}")).collect();
    pair.tmux
        .paste("alice", &format!("{}\n", lines.join("\n")), bracketed)?;
    pair.tmux.line("alice", "typed after the paste")?;
    let got = take(&mut pair.feed, 201).await?;
    let texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    let mut expected: Vec<&str> = lines.iter().map(String::as_str).collect();
    expected.push("typed after the paste");
    assert_eq!(texts, expected);
    pair.tmux
        .wait_for("alice", "the last line sent and an empty input line", |s| {
            s.iter().any(|r| r.contains("alice> typed after the paste"))
                && input_row(s) == EMPTY_INPUT
        })
        .await?;
    pair.tmux.line("alice", "one more")?;
    let got = take(&mut pair.feed, 1).await?;
    assert_eq!(got[0].text, "one more");
    if bracketed {
        // A bracketed paste is text, even what would be a key: this Ctrl-C does not quit.
        pair.tmux.paste("alice", "a pasted \u{3} is text\n", true)?;
        let got = take(&mut pair.feed, 1).await?;
        assert_eq!(got[0].text, "a pasted \u{3} is text");
    }
    expect_silence(&mut pair.feed, std::time::Duration::from_millis(500)).await?;
    pair.bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bracketed_paste_of_200_lines_sends_every_line_in_order() -> anyhow::Result<()> {
    paste_200_lines(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paste_of_200_lines_as_plain_keys_sends_every_line_in_order() -> anyhow::Result<()> {
    paste_200_lines(false).await
}

/// A pasted 3,000-byte line is sent; a 5,000-byte one is refused whole and stays in the
/// input line to be shortened; a tab shows as a space, in the input line and in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pasted_line_is_sent_and_one_over_the_limit_is_kept() -> anyhow::Result<()> {
    let Some(mut pair) = alice_and_bob().await? else {
        return Ok(());
    };
    let tmux = &pair.tmux;
    let long = format!("{}end", "x".repeat(2_997));
    tmux.paste("alice", &long, false)?;
    tmux.press("alice", &["Enter"])?;
    let got = take(&mut pair.feed, 1).await?;
    assert_eq!(got[0].text, long);
    tmux.wait_for("alice", "an empty input line", |s| {
        input_row(s) == EMPTY_INPUT
    })
    .await?;

    let too_long = format!("{}END", "y".repeat(4_997));
    tmux.paste("alice", &too_long, true)?;
    tmux.press("alice", &["Enter"])?;
    let screen = tmux
        .wait_text("alice", "text is 5000 bytes, over the 4096-byte limit")
        .await?;
    let input = input_row(&screen);
    assert!(
        input.starts_with("> yyy") && input.ends_with("yyyEND"),
        "the refused line is kept: {}",
        screen.join("\n")
    );
    // Nothing was sent.
    expect_silence(&mut pair.feed, std::time::Duration::from_millis(500)).await?;

    tmux.press("alice", &["C-u"])?;
    tmux.wait_for("alice", "an empty input line", |s| {
        input_row(s) == EMPTY_INPUT
    })
    .await?;

    // In a paste of several lines, a line over the limit is refused whole and the rest sent.
    let zs = "z".repeat(4_200);
    tmux.paste("alice", &format!("before\n{zs}\nafter\n"), true)?;
    let got = take(&mut pair.feed, 2).await?;
    assert_eq!([&got[0].text, &got[1].text], ["before", "after"]);
    tmux.wait_for("alice", "the refusal and an empty input line", |s| {
        s.iter()
            .any(|r| r.contains("line not sent: text is 4200 bytes"))
            && input_row(s) == EMPTY_INPUT
    })
    .await?;
    tmux.type_text("alice", "a\tb")?;
    tmux.wait_for("alice", "the tab as a space", |s| input_row(s) == "> a b")
        .await?;
    tmux.press("alice", &["Enter"])?;
    let got = take(&mut pair.feed, 1).await?;
    assert_eq!(got[0].text, "a\tb", "the tab itself is sent");
    tmux.wait_text("alice", "alice> a b").await?;
    pair.bob.shutdown().await;
    Ok(())
}

/// `--ui tui` without a terminal is a clear error, and nothing (no escape codes) is written
/// to stdout; the data directory is not even opened.
#[test]
fn the_terminal_ui_without_a_terminal_is_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("alice");
    let output = std::process::Command::new(p2pchat_binary())
        .args([
            "--name",
            "alice",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ])
        .args(["--ui", "tui", "--data-dir"])
        .arg(&data)
        .stdin(std::process::Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(output.stdout.is_empty(), "stdout: {:?}", output.stdout);
    assert!(
        stderr.contains("--ui tui needs a terminal") && stderr.contains("--ui plain"),
        "{stderr}"
    );
    assert!(!data.exists(), "the data directory was created");
    Ok(())
}

/// A user with a stored history sees the start-up warnings at the bottom of the chat window,
/// below that history, not buried above it: here the `--peer NAME` with mDNS off warning and
/// the one for a `--name` that is no longer the user's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_warnings_show_below_the_stored_history() -> anyhow::Result<()> {
    let Some(tmux) = Tmux::new()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let lines: String = (1..=100).map(|n| format!("stored line {n}\n")).collect();
    p2pchat_node::import(
        "alice",
        dir.path(),
        p2pchat_protocol::Room::lan(),
        lines.as_bytes(),
        |_, _| {},
    )?;
    tmux.open("alice", 120, 30)?;
    tmux.line("alice", &chat_command("alice", dir.path(), ""))?;
    tmux.wait_text("alice", "stored line 100").await?;
    tmux.line("alice", "/nick alice_w")?;
    tmux.wait_text("alice", "you are now alice_w").await?;
    tmux.press("alice", &["C-c"])?;
    tmux.wait_text("alice", "EXIT=0").await?;

    tmux.line("alice", &chat_command("alice", dir.path(), "--peer bob"))?;
    let screen = tmux
        .wait_for("alice", "both warnings below the history", |s| {
            let text = s.join("\n");
            text.contains("stored line 100")
                && text.contains("cannot look for bob by name: mDNS is off")
                && text.contains("you are alice_w (your last /nick), not alice")
        })
        .await?;
    let row = |text: &str| screen.iter().position(|r| r.contains(text));
    assert!(
        row("stored line 100") < row("cannot look for bob"),
        "{}",
        screen.join("\n")
    );
    tmux.press("alice", &["C-c"])?;
    tmux.wait_text("alice", "EXIT=0").await?;
    Ok(())
}

/// The next message in `feed` written by `name`, skipping others.
async fn next_from(feed: &mut MessageFeed, name: &str) -> anyhow::Result<Message> {
    loop {
        let message = take(feed, 1).await?.remove(0);
        if message.name == name {
            return Ok(message);
        }
    }
}

/// Alice's chat window (with `--bell`) and bob, a node in this process: bob's line in `#ops`
/// adds `#ops` to the channel list with an unread count and leaves the view on `#general`;
/// one naming alice marks `#ops` with `!` and rings the bell; Alt-2 shows `#ops`'s lines and
/// clears its count, and what alice types there goes to `#ops`; bob's direct message adds a
/// `@bob` conversation, Ctrl-N opens it, and alice's answer reaches bob as a direct message;
/// `/join` and `/dm` switch too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_a_direct_conversation_in_the_terminal_ui() -> anyhow::Result<()> {
    let Some(tmux) = Tmux::new()? else {
        return Ok(());
    };
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    tmux.open("alice", 200, 30)?;
    tmux.line("alice", &chat_command("alice", dirs.0.path(), "--bell"))?;
    let screen = tmux
        .wait_text("alice", "listening on /ip4/127.0.0.1/tcp/")
        .await?;
    let address = listen_address(&screen).parse()?;
    let bob = start_node("bob", dirs.1.path(), &[address]).await?;
    let mut feed = bob.messages();
    tmux.wait_text("alice", "bob connected").await?;
    let ends = |s: &[String], end: &str| s.iter().any(|r| r.trim_end().ends_with(end));
    let shown = |s: &[String]| s.join("\n");

    // With only #general there is no channel list.
    tmux.line("alice", "hi bob")?;
    next_from(&mut feed, "alice").await?;
    bob.send("hello there in general")?;
    let screen = tmux
        .wait_text("alice", "bob> hello there in general")
        .await?;
    assert!(
        !screen.iter().any(|r| r.contains(" channels ")),
        "{}",
        shown(&screen)
    );

    // A line in #ops: listed, counted, not shown in #general.
    bob.post("lan", "ops", "deploy at noon")?;
    let screen = tmux
        .wait_for("alice", "#ops with one new line", |s| {
            ends(s, "│ 2 #ops (1 new)")
        })
        .await?;
    assert!(ends(&screen, "│▸1 #general"), "{}", shown(&screen));
    assert!(
        !screen.iter().any(|r| r.contains("deploy at noon")),
        "{}",
        shown(&screen)
    );
    assert!(!tmux.bell_rang("alice")?, "no mention yet, no bell");

    // A line naming alice: the mention marker, and the bell.
    bob.post("lan", "ops", "alice, can you check?")?;
    tmux.wait_for("alice", "#ops marked with a mention", |s| {
        ends(s, "│!2 #ops (2 new)")
    })
    .await?;
    let deadline = tokio::time::Instant::now() + p2pchat_tests::DEADLINE;
    while !tmux.bell_rang("alice")? {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the bell never rang"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Alt-2 shows #ops, read now; what alice types goes there.
    tmux.press("alice", &["M-2"])?;
    let screen = tmux
        .wait_for("alice", "#ops current, with its lines", |s| {
            ends(s, "│▸2 #ops") && s.iter().any(|r| r.contains("bob> deploy at noon"))
        })
        .await?;
    assert!(ends(&screen, "│ 1 #general"), "{}", shown(&screen));
    assert!(
        screen
            .iter()
            .any(|r| r.contains("bob> alice, can you check?"))
            && !screen.iter().any(|r| r.contains("hello there in general")),
        "{}",
        shown(&screen)
    );
    tmux.line("alice", "on it")?;
    let answer = next_from(&mut feed, "alice").await?;
    assert_eq!(
        (answer.place, answer.text.as_str()),
        (Place::Channel("ops".into()), "on it")
    );

    // A direct message: a conversation of its own, opened with Ctrl-N.
    let alice = bob.resolve("lan", "alice")?;
    bob.send_direct("lan", alice.author, "psst, a secret")?;
    tmux.wait_for("alice", "@bob with one new line", |s| {
        ends(s, "│ 3 @bob (1 new)")
    })
    .await?;
    tmux.press("alice", &["C-n"])?;
    let screen = tmux
        .wait_for("alice", "@bob current, with its line", |s| {
            ends(s, "│▸3 @bob") && s.iter().any(|r| r.contains("bob> psst, a secret"))
        })
        .await?;
    assert!(
        !screen.iter().any(|r| r.contains("on it")),
        "{}",
        shown(&screen)
    );
    tmux.line("alice", "my secret answer")?;
    let answer = next_from(&mut feed, "alice").await?;
    assert_eq!(answer.text, "my secret answer");
    assert!(
        matches!(&answer.place, Place::Direct { with, .. } if *with == alice.author),
        "{:?}",
        answer.place
    );

    // /join opens a new channel, /dm goes back to the direct conversation.
    tmux.line("alice", "/join #Lunch")?;
    tmux.wait_for("alice", "#lunch current", |s| ends(s, "│▸4 #lunch"))
        .await?;
    tmux.line("alice", "pizza?")?;
    let answer = next_from(&mut feed, "alice").await?;
    assert_eq!(answer.place, Place::Channel("lunch".into()));
    tmux.line("alice", "/dm bob")?;
    tmux.wait_for("alice", "@bob current again", |s| ends(s, "│▸3 @bob"))
        .await?;
    tmux.line("alice", "/set bell off")?;
    tmux.wait_text("alice", "-- the bell is off").await?;

    tmux.press("alice", &["C-c"])?;
    tmux.wait_text("alice", "EXIT=0").await?;
    bob.shutdown().await;
    Ok(())
}
