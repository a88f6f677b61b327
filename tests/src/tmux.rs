//! Driving the terminal UI as a user would: a private tmux server, keys in, screens out.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};

use crate::DEADLINE;

/// A tmux server of our own (its own socket, no user config), killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts using a private tmux server; `None` (after printing why) when tmux is missing.
    /// In CI (`CI=true`) a missing tmux is a failure, not a skip.
    pub fn new() -> anyhow::Result<Option<Self>> {
        if Command::new("tmux").arg("-V").output().is_err() {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                bail!(
                    "tmux is not installed, and CI=true: the terminal UI tests must run (.ci/run installs it)"
                );
            }
            eprintln!(
                "skipped: tmux is not installed (apt-get install tmux to run the terminal UI tests)"
            );
            return Ok(None);
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "p2pchat-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Some(Tmux { socket }))
    }

    fn tmux(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()?;
        if !output.status.success() {
            bail!(
                "tmux {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Opens a `width`×`height` window named `session` running a shell.
    pub fn open(&self, session: &str, width: u16, height: u16) -> anyhow::Result<()> {
        let (width, height) = (width.to_string(), height.to_string());
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            &width,
            "-y",
            &height,
            "sh",
        ])?;
        Ok(())
    }

    /// Types `text` literally (no key names).
    pub fn type_text(&self, session: &str, text: &str) -> anyhow::Result<()> {
        self.tmux(&["send-keys", "-t", session, "-l", text])?;
        Ok(())
    }

    /// Presses keys by tmux name: `Enter`, `C-c`, `PageUp`, …
    pub fn press(&self, session: &str, keys: &[&str]) -> anyhow::Result<()> {
        self.tmux(&[&["send-keys", "-t", session][..], keys].concat())?;
        Ok(())
    }

    /// Types a line and presses Enter.
    pub fn line(&self, session: &str, text: &str) -> anyhow::Result<()> {
        self.type_text(session, text)?;
        self.press(session, &["Enter"])
    }

    /// Pastes `text` into the window as a terminal would: through a tmux buffer, with each
    /// newline sent as a carriage return (as a terminal sends Enter). `bracketed` wraps it in
    /// the bracketed-paste markers when the program asked for them (`paste-buffer -p`);
    /// otherwise the program sees plain keys.
    pub fn paste(&self, session: &str, text: &str, bracketed: bool) -> anyhow::Result<()> {
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), text)?;
        let path = file
            .path()
            .to_str()
            .context("temporary path is not UTF-8")?;
        self.tmux(&["load-buffer", "-b", "p2pchat-paste", path])?;
        let mut args = vec!["paste-buffer", "-d", "-b", "p2pchat-paste", "-t", session];
        if bracketed {
            args.push("-p");
        }
        self.tmux(&args)?;
        Ok(())
    }

    /// Whether the terminal bell rang in `session`'s window since it was opened (tmux's
    /// bell flag: it is set for a window no client looks at).
    pub fn bell_rang(&self, session: &str) -> anyhow::Result<bool> {
        let flag = self.tmux(&[
            "display-message",
            "-p",
            "-t",
            session,
            "#{window_bell_flag}",
        ])?;
        Ok(flag.trim() == "1")
    }

    /// What the window shows now, one string per row.
    pub fn screen(&self, session: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .tmux(&["capture-pane", "-p", "-t", session])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Waits until the screen satisfies `ready`, returning it; fails with the last screen after
    /// [`DEADLINE`].
    pub async fn wait_for(
        &self,
        session: &str,
        what: &str,
        ready: impl Fn(&[String]) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let screen = self.screen(session)?;
            if ready(&screen) {
                return Ok(screen);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{session}'s screen never showed {what}:\n{}",
                    screen.join("\n")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Waits until some row of the screen contains `text`.
    pub async fn wait_text(&self, session: &str, text: &str) -> anyhow::Result<Vec<String>> {
        self.wait_for(session, &format!("{text:?}"), |screen| {
            screen.iter().any(|row| row.contains(text))
        })
        .await
        .context("waiting for text")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
