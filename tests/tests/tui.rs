//! The terminal UI driven in tmux as a user would: keys in, screens read back.

use p2pchat_tests::p2pchat_binary;
use p2pchat_tests::tmux::Tmux;

/// The shell command that starts a chat window and reports its exit status afterwards.
fn chat_command(name: &str, dir: &std::path::Path, extra: &str) -> String {
    format!(
        "{} --name {name} --data-dir {} --listen /ip4/127.0.0.1/tcp/0 --no-mdns {extra}; echo EXIT=$?",
        p2pchat_binary().display(),
        dir.display()
    )
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
    let address = screen
        .iter()
        .find_map(|row| {
            row.split_whitespace()
                .find(|word| word.starts_with("/ip4/127.0.0.1/tcp/"))
        })
        .map(str::to_owned)
        .unwrap_or_default();
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
