//! `p2pchat export` and `/history`: a two-author history, in merged order, line by line.

use p2pchat_tests::{Chat, p2pchat_binary};
use serde_json::Value;

/// `YYYY-MM-DD HH:MM:SS ` before each exported text line.
const TIME: usize = "2025-01-02 03:04:05 ".len();

fn export(name: &str, dir: &str, format: &str) -> anyhow::Result<Vec<String>> {
    let output = std::process::Command::new(p2pchat_binary())
        .args([
            "export",
            "--name",
            name,
            "--data-dir",
            dir,
            "--format",
            format,
        ])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_history_show_both_authors_in_merged_order() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let dir = |d: &tempfile::TempDir| d.path().to_str().map(str::to_owned).unwrap_or_default();
    let (alice_dir, bob_dir) = (dir(&dirs.0), dir(&dirs.1));
    let mut alice = Chat::start_user("alice", &alice_dir, &[], &[])?;
    let address = alice.listen_addr().await?;
    let mut bob = Chat::start_user("bob", &bob_dir, &[&address], &[])?;
    bob.wait_stderr("info> connected to alice").await?;

    // Each line is seen by both before the next is typed, so the merged order is this one.
    let conversation = [
        ("alice", "hi bob"),
        ("bob", "hi alice"),
        ("alice", "how are you?"),
        ("bob", "fine, thanks"),
    ];
    for (who, text) in conversation {
        let speaker = if who == "alice" { &mut alice } else { &mut bob };
        speaker.say(text).await?;
        let line = format!("{who}> {text}");
        alice.wait_line(&line).await?;
        bob.wait_line(&line).await?;
    }
    bob.say("/history 3").await?;
    let mut history = Vec::new();
    for _ in 0..3 {
        history.push(
            bob.wait_stderr("info> 20")
                .await?
                .trim_start_matches("info> ")
                .to_owned(),
        );
    }
    bob.say("/history x").await?;
    bob.wait_stderr("info> error: usage: /history [N]").await?;
    assert!(bob.interrupt().await?);
    assert!(alice.interrupt().await?);

    let text = export("bob", &bob_dir, "text")?;
    let expected: Vec<String> = conversation
        .iter()
        .map(|(who, text)| format!("{who}> {text}"))
        .collect();
    let without_time: Vec<&str> = text
        .iter()
        .map(|line| line.get(TIME..).unwrap_or_default())
        .collect();
    assert_eq!(without_time, expected);
    assert_eq!(
        history,
        text[1..],
        "/history 3 shows the last three exported lines"
    );
    assert_eq!(
        export("alice", &alice_dir, "text")?,
        text,
        "both hold the same history"
    );

    let ndjson = export("bob", &bob_dir, "ndjson")?;
    let parsed: Vec<Value> = ndjson
        .iter()
        .map(|line| serde_json::from_str(line))
        .collect::<Result<_, _>>()?;
    let texts: Vec<String> = parsed
        .iter()
        .map(|m| {
            format!(
                "{}> {}",
                m["name"].as_str().unwrap_or("?"),
                m["text"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(texts, expected);
    assert!(parsed.iter().all(|m| m["v"] == 1 && m["type"] == "message"));

    let missing = std::process::Command::new(p2pchat_binary())
        .args([
            "export",
            "--name",
            "nobody",
            "--data-dir",
            &format!("{bob_dir}/nobody"),
        ])
        .output()?;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no p2pchat data in"));
    Ok(())
}

/// Runs `p2pchat ARGS` with `stdin`, failing unless it succeeds; its stdout lines.
fn run(args: &[String], stdin: &str) -> anyhow::Result<Vec<String>> {
    use std::io::Write;
    let mut child = std::process::Command::new(p2pchat_binary())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "p2pchat {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

#[test]
fn import_and_export_take_rooms_in_the_order_given() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path().to_str().unwrap_or_default().to_owned();
    let user = ["--name", "alice", "--data-dir", dir.as_str()];
    let with = |command: &str, rest: &[&str]| -> Vec<String> {
        [command]
            .iter()
            .chain(&user)
            .chain(rest)
            .map(|arg| (*arg).to_owned())
            .collect()
    };
    run(&with("import", &["--create"]), "in the LAN room\n")?;
    run(&with("import", &["--room", "ops"]), "in ops\n")?;
    let texts = |lines: Vec<String>| -> Vec<String> {
        lines.iter().map(|line| line[TIME..].to_owned()).collect()
    };
    assert_eq!(
        texts(run(&with("export", &[]), "")?),
        ["alice> in the LAN room"]
    );
    assert_eq!(
        texts(run(&with("export", &["--room", "ops"]), "")?),
        ["alice> in ops"]
    );
    let both = run(&with("export", &["--room", "ops", "--room", "lan"]), "")?;
    let prefixed: Vec<(&str, &str)> = both
        .iter()
        .map(|line| line.split_at(line.find(' ').unwrap_or(0)))
        .collect();
    assert_eq!(
        prefixed
            .iter()
            .map(|(room, rest)| format!("{room} {}", &rest[1 + TIME..]))
            .collect::<Vec<_>>(),
        ["[ops] alice> in ops", "[lan] alice> in the LAN room"]
    );
    let refused = std::process::Command::new(p2pchat_binary())
        .args(with("import", &["--room", "ops", "--room", "lan"]))
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("import appends to one room"));
    Ok(())
}
