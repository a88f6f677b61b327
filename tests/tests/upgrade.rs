//! A data directory written by the previous release (`tests/fixtures/previous-release`) opens
//! with this one with nothing lost and nothing said: no damage (it has no heads record), no
//! own log "behind" (it has no `own-head` mark), and the user goes on typing on top of it.
//! Its logs, which name no room, belong to the first room located in it, and only to that one.

use std::path::Path;
use std::time::Duration;

use p2pchat_protocol::{Body, Room};
use p2pchat_storage::{Located, Store, locate};
use p2pchat_tests::{Chat, p2pchat_binary, verify_store};

/// Lines in the fixture: alice's 40 imported and 1 typed, and bob's 20.
const LINES: usize = 61;

fn copy_fixture(to: &Path) -> anyhow::Result<std::path::PathBuf> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/previous-release/alice");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&fixture)
        .arg(to)
        .status()?;
    anyhow::ensure!(copied.success(), "copying {}", fixture.display());
    Ok(to.join("alice"))
}

fn export(dir: &Path) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new(p2pchat_binary())
        .args(["export", "--name", "alice", "--data-dir"])
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success() && out.stderr.is_empty(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(|line| line.split_once(' ').map_or(line, |(_, rest)| rest))
        .map(|line| {
            line.split_once(' ')
                .map_or(line, |(_, rest)| rest)
                .to_owned()
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_the_previous_release_opens_with_nothing_lost() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = copy_fixture(root.path())?;

    // Reading decides nothing: the logs belong to the room of the first chat started.
    let early = std::process::Command::new(p2pchat_binary())
        .args(["export", "--name", "alice", "--data-dir"])
        .arg(&dir)
        .output()?;
    let said = String::from_utf8_lossy(&early.stderr).into_owned();
    assert!(
        !early.status.success() && said.contains("belong to no room yet"),
        "export before the first start: {said}"
    );

    let doctor = std::process::Command::new(p2pchat_binary())
        .args(["doctor", "--name", "alice", "--data-dir"])
        .arg(&dir)
        .output()?;
    let report = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(doctor.status.success(), "doctor: {report}");
    assert!(
        !dir.join(p2pchat_storage::REGISTRY).exists(),
        "export and doctor gave the old logs to no room"
    );

    let dir_arg = dir.to_str().unwrap_or_default().to_owned();
    let mut alice = Chat::start_user("alice", &dir_arg, &[], &[])?;
    alice.listen_addr().await?;
    alice.say("typed after the upgrade").await?;
    alice.wait_line("alice> typed after the upgrade").await?;
    alice.drain_stderr(Duration::from_millis(500)).await;
    let log = alice.stderr_tail();
    let claim = "warning: logs stored before rooms (2 logs) now belong to room lan";
    assert!(
        log.contains(claim),
        "the upgrade says where the logs went:{log}"
    );
    assert!(
        !log.replace(claim, "").contains("warning"),
        "nothing else to warn of:{log}"
    );
    assert!(alice.interrupt().await?);

    let exported = export(&dir)?;
    assert_eq!(exported.len(), LINES + 1, "{exported:#?}");
    assert!(exported.contains(&"alice> alice line 40".to_owned()));
    assert!(exported.contains(&"bob> bob line 20".to_owned()));
    assert!(exported.contains(&"alice> hi bob, from the old release".to_owned()));

    let verified = verify_store(&dir)?;
    assert!(verified.forked.is_empty());
    assert_eq!(verified.texts.len(), LINES + 1);
    assert_eq!(export(&dir)?.len(), LINES + 1);
    Ok(())
}

/// The texts of a store's merged history.
fn texts(store: &Store) -> anyhow::Result<Vec<String>> {
    let mut texts = Vec::new();
    for entry in store.history() {
        if let Body::Text { text } = entry?.body() {
            texts.push(text.clone());
        }
    }
    Ok(texts)
}

#[test]
fn the_previous_releases_logs_go_to_the_first_room_located_and_only_to_it() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = copy_fixture(root.path())?;
    // The first room given is a private one, not the LAN room.
    let (team, lan) = (Room::private(&[7; 32], "team"), Room::lan());
    let first = locate(&dir, &team.id())?;
    assert_eq!(
        first,
        Located {
            dir: dir.join("store"),
            claimed: true
        }
    );
    {
        let store = Store::open(&first.dir, team.id())?;
        assert!(store.damage().is_none());
        let old = texts(&store)?;
        assert_eq!(old.len(), LINES, "{old:#?}");
        assert!(old.contains(&"hi bob, from the old release".to_owned()));
        assert!(store.history().all(|e| e.is_ok_and(|e| e.room().is_none())));
        assert!(
            store.verify().iter().all(|log| log.is_ok()),
            "every log verifies in its room"
        );
        // Its logs publish no encryption key yet (the old release wrote none).
        for author in store.heads().keys() {
            assert_eq!(store.enc_key(author)?, None);
        }
        // Alice goes on typing there: format 2 entries of that room, on top of her old log.
        let key = p2pchat_node::identity::load_or_create(&dir)?;
        let author = p2pchat_protocol::Author::of(&key);
        let head = store.head_seq(&author);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let line = Body::Text {
            text: "typed in team after the upgrade".into(),
        };
        let typed = store.append_own(&key, line, now)?;
        assert_eq!((typed.seq(), typed.room()), (head + 1, Some(team.id())));
        let texts = texts(&store)?;
        assert_eq!(
            texts.last().map(String::as_str),
            Some("typed in team after the upgrade")
        );
        assert_eq!(texts.len(), LINES + 1);
        // And publishes her encryption key in it.
        let enc_key = p2pchat_protocol::dm::DmSecret::derive(&key).public();
        store.append_own(&key, Body::EncKey { key: enc_key }, now + 1)?;
        assert_eq!(store.enc_key(&author)?, Some(enc_key));
    }
    // A second room in the same data directory sees none of them.
    let second = locate(&dir, &lan.id())?;
    assert!(!second.claimed);
    assert_ne!(second.dir, first.dir);
    assert!(Store::open(&second.dir, lan.id())?.heads().is_empty());
    // Located again, each room finds its own store; store/ stays the first room's.
    assert_eq!(
        locate(&dir, &team.id())?,
        Located {
            dir: dir.join("store"),
            claimed: false
        }
    );
    assert_eq!(locate(&dir, &lan.id())?, second);
    assert_eq!(
        texts(&Store::open(&first.dir, team.id())?)?.len(),
        LINES + 1
    );
    Ok(())
}
