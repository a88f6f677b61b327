//! The terminal UI: owns the terminal (raw mode, alternate screen, mouse wheel), feeds keys,
//! messages and status events into the [`App`], and redraws at most every [`FRAME`].

use std::collections::HashSet;
use std::io::stdout;
use std::process::ExitCode;
use std::time::Duration;

use crossterm::cursor::Show;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event as TermEvent, EventStream};
use crossterm::execute;
use futures::StreamExt;
use p2pchat_node::{Event, Node, NodeError};
use ratatui::DefaultTerminal;
use tokio::sync::broadcast::error::RecvError;

use super::Signals;
use super::commands::{self, Input, Reply};
use super::format::{display, entries};
use super::view::{Action, App, Item};

/// The shortest time between two redraws.
const FRAME: Duration = Duration::from_millis(30);
/// How often the people panel is refreshed without being asked.
const REFRESH: Duration = Duration::from_secs(1);

/// Runs the terminal UI until the user quits or a signal arrives.
pub async fn run(node: Node, mut signals: Signals) -> ExitCode {
    let mut screen = match Screen::enter() {
        Ok(screen) => screen,
        Err(e) => {
            eprintln!("info> error: cannot use the terminal: {e} (try --ui plain)");
            node.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let mut app = App::new(node.author());
    app.set_contacts(node.contacts());
    let mut shown_addresses = HashSet::new();
    for address in node.listen_addrs() {
        app.push(Item::Notice(format!("listening on {address}")));
        shown_addresses.insert(address);
    }
    app.push(Item::Notice(
        "type a line and press Enter to send it; /help lists the commands".into(),
    ));

    let mut keys = EventStream::new();
    let mut messages = node.messages();
    let mut events = node.events();
    let mut looking_for = HashSet::new();
    let mut refresh = tokio::time::interval(REFRESH);
    let mut frame = tokio::time::interval(FRAME);
    frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let failure: Option<String> = loop {
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) => match app.on_key(key) {
                    Some(Action::Quit) => break None,
                    Some(Action::Submit(line)) => match submit(&node, &mut app, &line).await {
                        Ok(true) => {}
                        Ok(false) => break None,
                        Err(e) => break Some(e.to_string()),
                    },
                    None => {}
                },
                Some(Ok(TermEvent::Mouse(mouse))) => app.on_mouse(mouse),
                Some(Ok(_)) => {} // a resize: redrawn below
                Some(Err(e)) => break Some(format!("reading the terminal failed: {e}")),
                None => break None,
            },
            message = messages.next() => match message {
                Some(message) => app.push(Item::Message(message)),
                None => break Some("the node stopped".into()),
            },
            event = events.recv() => {
                let refresh_contacts = match event {
                    Ok(Event::Listening { address }) => {
                        if shown_addresses.insert(address.clone()) {
                            app.push(Item::Notice(format!("listening on {address}")));
                        }
                        false
                    }
                    Ok(Event::LookingFor { name }) => {
                        if looking_for.insert(name.clone()) {
                            app.push(Item::Notice(format!("looking for {} on the LAN…", display(&name))));
                        }
                        false
                    }
                    Ok(Event::Connected { name, .. }) => {
                        app.push(Item::Notice(format!("{} connected", display(&name))));
                        true
                    }
                    Ok(Event::Disconnected { peer, name }) => {
                        let who = name.unwrap_or_else(|| peer.to_string());
                        app.push(Item::Notice(format!("{} disconnected", display(&who))));
                        true
                    }
                    Ok(Event::SyncComplete { name, received, .. }) => {
                        if received > 0 {
                            app.push(Item::Notice(format!("caught up with {}: {}", display(&name), entries(received))));
                        }
                        true
                    }
                    Ok(Event::Warning { message }) => {
                        app.push(Item::Warning(message));
                        false
                    }
                    Ok(Event::Error { message }) => break Some(message),
                    Ok(_) => true, // sync progress, shown in the people panel
                    Err(RecvError::Lagged(n)) => {
                        app.push(Item::Warning(format!("{n} status messages were skipped")));
                        true
                    }
                    Err(RecvError::Closed) => break Some("the node stopped".into()),
                };
                if refresh_contacts {
                    app.set_contacts(node.contacts());
                }
            },
            _ = refresh.tick() => app.set_contacts(node.contacts()),
            _ = frame.tick(), if dirty => {
                if let Err(e) = screen.terminal.draw(|frame| app.render(frame)) {
                    break Some(format!("drawing failed: {e}"));
                }
                dirty = false;
                continue;
            },
            () = signals.recv() => break None,
        }
        dirty = true;
    };
    drop(screen);
    node.shutdown().await;
    match failure {
        None => ExitCode::SUCCESS,
        Some(why) => {
            eprintln!("info> error: {why}; stopped");
            ExitCode::FAILURE
        }
    }
}

/// Sends a typed line or runs a command; `Ok(false)` to quit, `Err` if the node cannot go on.
async fn submit(node: &Node, app: &mut App, line: &str) -> Result<bool, NodeError> {
    match commands::parse(line) {
        Input::Message(text) => match node.send(&text) {
            Ok(_) => {} // it comes back through the feed like any other message
            Err(NodeError::Invalid(e)) => app.push(Item::Error(format!("line not sent: {e}"))),
            Err(e) => return Err(e),
        },
        Input::Invalid(why) => app.push(Item::Error(why)),
        Input::Command(command) => match commands::run(node, &command).await? {
            Reply::Lines(lines) => lines
                .into_iter()
                .for_each(|line| app.push(Item::Notice(line))),
            Reply::Error(why) => app.push(Item::Error(why)),
            Reply::Quit => return Ok(false),
        },
    }
    app.set_contacts(node.contacts());
    Ok(true)
}

/// The terminal in UI mode; dropping it (or a panic) gives the terminal back as it was.
struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    fn enter() -> std::io::Result<Self> {
        // try_init enters raw mode and the alternate screen and hooks panics to leave them.
        let terminal = ratatui::try_init().inspect_err(|_| ratatui::restore())?;
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = execute!(stdout(), DisableMouseCapture, Show);
            hook(info);
        }));
        let screen = Screen { terminal };
        execute!(stdout(), EnableMouseCapture)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(stdout(), DisableMouseCapture, Show);
        ratatui::restore();
    }
}
