//! `p2pchat`: a serverless, encrypted LAN chat. See `p2pchat --help`.

mod cli;
mod ui;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use p2pchat_node::{Archive, NodeError, RoomKey};
use p2pchat_protocol::room::Room;

use cli::{ChatArgs, Cli, Command, ExportFormat, RoomArgs};

fn main() -> ExitCode {
    let cli = Cli::parse_ordered();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .init();
    let result = match cli.command {
        Some(Command::Import {
            name,
            data_dir,
            create,
            rooms,
        }) => import(&name, data_dir.as_ref(), create, &rooms),
        Some(Command::Export {
            name,
            data_dir,
            format,
            rooms,
        }) => rooms
            .rooms_or_lan()
            .and_then(|rooms| export(&name, data_dir.as_ref(), format, &rooms)),
        Some(Command::Id { name, data_dir }) => id(&name, data_dir.as_ref()),
        Some(Command::Doctor {
            name,
            data_dir,
            repair,
            rooms,
        }) => return doctor(&name, data_dir.as_ref(), repair, &rooms),
        Some(Command::KeygenRoom { file }) => keygen_room(&file),
        Some(Command::Relay { listen, data_dir }) => return relay(listen, data_dir.as_ref()),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "p2pchat",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        None => return chat(cli.chat),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("info> error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `p2pchat import`: into an existing user only, unless `create`; into one room.
fn import(
    name: &str,
    data_dir: Option<&PathBuf>,
    create: bool,
    rooms: &RoomArgs,
) -> Result<(), NodeError> {
    let room = match <[Room; 1]>::try_from(rooms.rooms_or_lan()?) {
        Ok([room]) => room,
        Err(rooms) => {
            return Err(NodeError::Rooms(format!(
                "import appends to one room, and {} were given: import into each in turn",
                rooms.len()
            )));
        }
    };
    let dir = cli::data_dir(name, data_dir)?;
    if !create && !dir.join(p2pchat_node::identity::IDENTITY_FILE).is_file() {
        return Err(NodeError::NoUser(dir));
    }
    let imported =
        p2pchat_node::import(name, &dir, room, std::io::stdin().lock(), |line, reason| {
            eprintln!("info> error: line {line} skipped: {reason}");
        })?;
    if let Some(damage) = &imported.damage {
        eprintln!("info> warning: {damage}");
    }
    eprintln!(
        "info> imported {} as {} ({} skipped, {} empty)",
        lines(imported.appended),
        imported.name,
        imported.skipped,
        imported.empty
    );
    Ok(())
}

/// `1 line`, `2 lines`.
fn lines(n: u64) -> String {
    if n == 1 {
        "1 line".to_owned()
    } else {
        format!("{n} lines")
    }
}

/// `p2pchat export`: every message of each room, room after room.
fn export(
    name: &str,
    data_dir: Option<&PathBuf>,
    format: ExportFormat,
    rooms: &[Room],
) -> Result<(), NodeError> {
    let dir = cli::data_dir(name, data_dir)?;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for room in rooms {
        let several = rooms.len() > 1;
        if !export_room(&dir, room, format, several, &mut stdout)? {
            return Ok(()); // the reader has gone (say, `| head`): nothing more to do
        }
    }
    let _ = stdout.flush();
    Ok(())
}

/// Writes every message of `room` to `out`, each text line prefixed with its room when
/// `several`; `false` when the reader has gone.
fn export_room(
    dir: &std::path::Path,
    room: &Room,
    format: ExportFormat,
    several: bool,
    stdout: &mut impl Write,
) -> Result<bool, NodeError> {
    let mut archive = Archive::open(dir, room)?;
    let said = |message: &str| match several {
        true => format!("room {}: {message}", room.label()),
        false => message.to_owned(),
    };
    for warning in archive.warnings() {
        eprintln!("info> warning: {}", said(&warning));
    }
    // The merged-order position of the last message written, so a salvaged copy resumes there.
    let mut written: Option<p2pchat_node::HistoryKey> = None;
    let mut salvaged = false;
    loop {
        if let Some(damage) = archive.damage().filter(|d| d.is_damage()) {
            eprintln!("info> warning: {}", said(&damage.to_string()));
        }
        let mut damaged = None;
        for message in archive.messages() {
            let message = match message {
                Ok(message) => message,
                Err(NodeError::Store(e)) if e.is_damage() && !salvaged => {
                    damaged = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            };
            let position = message.history_key();
            if written.is_some_and(|w| position <= w) {
                continue;
            }
            written = Some(position);
            let line = match format {
                ExportFormat::Text if several => {
                    format!("[{}] {}", room.label(), ui::format::history_line(&message))
                }
                ExportFormat::Text => ui::format::history_line(&message),
                ExportFormat::Ndjson => ui::json::message(&message),
            };
            if writeln!(stdout, "{line}").is_err() {
                return Ok(false);
            }
        }
        let Some(e) = damaged else { break };
        // Go on from a copy rebuilt from what verifies.
        eprintln!("info> warning: {}", said(&e.to_string()));
        salvaged = true;
        archive = Archive::salvaged(dir, room)?;
    }
    Ok(true)
}

/// `p2pchat doctor`: each room's store in turn; exit 2 if one cannot be checked, else 1 if
/// one is damaged.
fn doctor(name: &str, data_dir: Option<&PathBuf>, repair: bool, rooms: &RoomArgs) -> ExitCode {
    let checked = cli::data_dir(name, data_dir).and_then(|dir| Ok((dir, rooms.rooms_or_lan()?)));
    let (dir, rooms) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("info> error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut code = ExitCode::SUCCESS;
    for room in &rooms {
        let checked = doctor_room(name, &dir, room, repair);
        if checked != ExitCode::SUCCESS {
            code = checked;
        }
        if checked == ExitCode::from(2) {
            break;
        }
    }
    code
}

fn doctor_room(name: &str, dir: &std::path::Path, room: &Room, repair: bool) -> ExitCode {
    eprintln!(
        "info> checking room {} in {}{}",
        room.label(),
        dir.display(),
        if repair {
            ""
        } else {
            " (a copy; nothing is changed without --repair)"
        }
    );
    let checkup = match p2pchat_node::doctor(dir, room, repair) {
        Ok(checkup) => checkup,
        Err(e) => {
            eprintln!("info> error: {e}");
            return ExitCode::from(2);
        }
    };
    for log in &checkup.logs {
        let who = match &log.name {
            Some(name) => format!("{}#{}", ui::format::display(name), log.author.fingerprint()),
            None => format!("#{}", log.author.fingerprint()),
        };
        let state = if log.is_ok() {
            "ok".to_owned()
        } else {
            format!(
                "damaged: {} lost",
                ui::format::thousands(log.before - log.entries)
            )
        };
        let forked = if log.forked { ", forked (frozen)" } else { "" };
        println!(
            "{who}  {} of {} entries  {state}{forked}",
            ui::format::thousands(log.entries),
            ui::format::thousands(log.before)
        );
    }
    eprintln!("info> {}", checkup.damage);
    if !checkup.is_damaged() {
        return ExitCode::SUCCESS;
    }
    if checkup.repaired {
        eprintln!("info> repaired: start p2pchat to refetch what was lost from peers");
    } else {
        eprintln!(
            "info> to repair: p2pchat doctor --name {name} --repair (keeps every entry that verifies)"
        );
    }
    ExitCode::FAILURE
}

fn id(name: &str, data_dir: Option<&PathBuf>) -> Result<(), NodeError> {
    let (peer, fingerprint) = p2pchat_node::identity_of(&cli::data_dir(name, data_dir)?)?;
    println!("peer id: {peer}\nfingerprint: #{fingerprint}");
    Ok(())
}

fn keygen_room(file: &std::path::Path) -> Result<(), NodeError> {
    let key = RoomKey::create(file)?;
    eprintln!(
        "info> wrote a room key to {} (fingerprint {}); give it to each member over a safe channel \
         and start p2pchat with --room-key {}",
        file.display(),
        key.fingerprint(),
        file.display()
    );
    Ok(())
}

/// `p2pchat relay`: runs until interrupted (Ctrl-C or SIGTERM).
fn relay(listen: Vec<libp2p::Multiaddr>, dir: Option<&PathBuf>) -> ExitCode {
    use p2pchat_node::relay::{Relay, RelayEvent};
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("info> error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let started = match cli::relay_dir(dir) {
            Ok(dir) => Relay::spawn(&dir, listen).await,
            Err(e) => Err(e),
        };
        let mut relay = match started {
            Ok(relay) => relay,
            Err(e) => {
                eprintln!("info> error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            tokio::select! {
                event = relay.next_event() => match event {
                    Some(RelayEvent::Listening { address }) => {
                        eprintln!("info> relay listening on {address}");
                    }
                    Some(RelayEvent::Info { message }) => eprintln!("info> {message}"),
                    Some(_) => {}
                    None => return ExitCode::FAILURE,
                },
                _ = tokio::signal::ctrl_c() => break,
                Some(()) = async { match terminate.as_mut() { Some(t) => t.recv().await, None => None } } => break,
            }
        }
        relay.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn chat(args: ChatArgs) -> ExitCode {
    if let Some(why) = args.mode().unusable() {
        eprintln!("info> error: {why}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("info> error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let node = match args.builder() {
            Ok(builder) => builder.spawn().await,
            Err(e) => Err(e),
        };
        match node {
            Ok(node) => ui::run(node, args.mode()).await,
            Err(e) => {
                if args.mode() == ui::Mode::Json {
                    println!(
                        "{}",
                        serde_json::json!({"v": 1, "type": "error", "message": e.to_string()})
                    );
                } else {
                    eprintln!("info> error: {e}");
                }
                ExitCode::FAILURE
            }
        }
    });
    // Stdin is read on a blocking thread that may never return; do not wait for it.
    runtime.shutdown_background();
    code
}
