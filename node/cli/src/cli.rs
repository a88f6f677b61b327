//! Command-line arguments.

use std::path::{Component, Path, PathBuf};

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use libp2p::Multiaddr;
use p2pchat_node::{NodeBuilder, NodeError, PeerSpec, room_of_key_file};
use p2pchat_protocol::entry::check_name;
use p2pchat_protocol::room::Room;

use crate::ui::Mode;

/// A serverless, encrypted LAN chat. In a terminal it opens a chat window; piped, it reads
/// lines to send from stdin and prints `NAME> TEXT` lines on stdout, with status on stderr as
/// `info> …` lines. Type /help in the chat for its commands.
#[derive(Debug, Parser)]
#[command(
    name = "p2pchat",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  p2pchat --name alice --peer bob\n  \
                  p2pchat --name bob --listen /ip4/127.0.0.1/tcp/4001 --no-mdns\n  \
                  p2pchat --name alice --peer /ip4/127.0.0.1/tcp/4001 --no-mdns\n  \
                  p2pchat --name alice --room lan --room-key ~/team.key\n  \
                  p2pchat --name alice --ui json | jq .\n  \
                  p2pchat import --name alice < lines.txt\n  \
                  p2pchat export --name alice > chat.txt"
)]
pub struct Cli {
    /// A subcommand; without one, p2pchat chats.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Chat options.
    #[command(flatten)]
    pub chat: ChatArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append each line of standard input as a message in one room (--room or --room-key;
    /// default the LAN room), without going online (fast, one disk sync per 10,000 lines). Lines over 4096 bytes are skipped and reported; empty lines are
    /// counted, not sent.
    #[command(
        after_help = "Examples:\n  p2pchat import --name alice < lines.txt\n  \
                            p2pchat import --name newcomer --create < lines.txt"
    )]
    Import {
        /// Whose log to append to.
        #[arg(long, value_parser = parse_name)]
        name: String,
        /// The user's data directory (default: as for chatting).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Create the user if there is none yet (without it, a mistyped --name is refused).
        #[arg(long)]
        create: bool,
        /// The room to append to: one --room NAME or --room-key FILE (default: the LAN room).
        #[command(flatten)]
        rooms: RoomArgs,
    },
    /// Print every message this user holds in the rooms given (--room, --room-key; default the
    /// LAN room), from every author, in merged order, room after room (with several rooms, each
    /// text line starts with `[ROOM] `). Stop the
    /// user's chat first (one process per data directory); inside a chat, use /history.
    #[command(after_help = "Examples:\n  p2pchat export --name alice > chat.txt\n  \
                            p2pchat export --name alice --format ndjson | jq -r .text")]
    Export {
        /// Whose data to read.
        #[arg(long, value_parser = parse_name)]
        name: String,
        /// The user's data directory (default: as for chatting).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// `text`: `YYYY-MM-DD HH:MM:SS NAME> TEXT` (local time), as /history shows;
        /// `ndjson`: one `message` event per line (docs/json-events.md).
        #[arg(long, value_enum, default_value_t = ExportFormat::Text)]
        format: ExportFormat,
        /// The rooms to print, room after room (default: the LAN room); with several, each text
        /// line starts with `[ROOM] `.
        #[command(flatten)]
        rooms: RoomArgs,
    },
    /// Check a user's store of each room given (--room, --room-key; default the LAN room)
    /// offline: every log's chain and signatures, heads against entries,
    /// fork proofs, journals and tables; one line per log. Exits 1 if anything is damaged or
    /// lost. Without --repair only a copy is read; stop the user's chat first.
    #[command(after_help = "Examples:\n  p2pchat doctor --name alice\n  \
                            p2pchat doctor --name alice --repair")]
    Doctor {
        /// Whose store to check.
        #[arg(long)]
        name: String,
        /// The user's data directory (default: as for chatting).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Repair the store: move the damaged files aside (to store.damaged-TIME/) and rebuild
        /// it from every entry that still verifies; peers refill the rest at the next chat.
        #[arg(long)]
        repair: bool,
        /// The rooms whose stores to check (default: the LAN room).
        #[command(flatten)]
        rooms: RoomArgs,
    },
    /// Print the user's peer id and key fingerprint (the `#3fa2c1` others may see).
    #[command(after_help = "Example:\n  p2pchat id --name alice")]
    Id {
        /// Whose identity to show.
        #[arg(long, value_parser = parse_name)]
        name: String,
        /// The user's data directory (default: as for chatting).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Create a private room's key file (mode 0600). Give it to each member over a safe channel;
    /// nodes started with `--room-key FILE` share that room only with nodes holding the same
    /// key.
    #[command(
        name = "keygen-room",
        after_help = "Example:\n  p2pchat keygen-room ~/team.key\n  \
                            p2pchat --name alice --room-key ~/team.key"
    )]
    KeygenRoom {
        /// Where to write the key (an existing file is never overwritten).
        file: PathBuf,
    },
    /// Run a relay for peers behind NATs: a circuit relay (v2) and a rendezvous point where
    /// peers of a room find each other, with limits sized for chat. It stores no chat data and
    /// cannot read any (connections through it stay encrypted end to end). Prints
    /// `info> relay listening on ADDR` for each address: give one to `--relay`.
    #[command(
        after_help = "Examples:\n  p2pchat relay --listen /ip4/0.0.0.0/tcp/4001 --listen /ip4/0.0.0.0/udp/4001/quic-v1\n  \
                            p2pchat --name alice --peer bob --relay /ip4/198.51.100.7/tcp/4001/p2p/12D3KooW…"
    )]
    Relay {
        /// Address to listen on. Repeatable.
        #[arg(
            long,
            value_name = "MULTIADDR",
            default_values = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
        )]
        listen: Vec<Multiaddr>,
        /// Where the relay keeps its identity key (default: the per-user data directory's
        /// `relay` sibling, e.g. ~/.local/share/p2pchat-relay).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  p2pchat completions bash > ~/.local/share/bash-completion/completions/p2pchat\n  \
                            p2pchat completions zsh > ~/.zfunc/_p2pchat"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Output formats of `p2pchat export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Lines as /history shows them.
    Text,
    /// NDJSON `message` events.
    Ndjson,
}

/// Options for chatting.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Your user name (1 to 64 bytes) when you first start; it also names your data directory
    /// (~/.local/share/p2pchat/NAME). Later starts keep the name you last took with /nick.
    #[arg(long, required = true, value_parser = parse_name)]
    pub name: Option<String>,
    /// A peer to connect to: a user name on the LAN, or a multiaddr such as
    /// /ip4/192.168.1.7/tcp/4001[/p2p/PEER_ID]. Repeatable.
    #[arg(long = "peer", value_name = "PEER")]
    pub peers: Vec<PeerSpec>,
    /// Address to listen on. Repeatable.
    #[arg(
        long,
        value_name = "MULTIADDR",
        default_values = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
    )]
    pub listen: Vec<Multiaddr>,
    /// A relay (`p2pchat relay` prints its addresses): reach and be reached by the people of
    /// your rooms beyond the LAN, through it, and directly once a hole is punched. Repeatable.
    #[arg(long = "relay", value_name = "MULTIADDR", value_parser = parse_relay)]
    pub relays: Vec<Multiaddr>,
    /// Where your identity and history live (default: the per-user data directory, e.g.
    /// ~/.local/share/p2pchat/NAME).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The rooms to chat in.
    #[command(flatten)]
    pub rooms: RoomArgs,
    /// Do not use mDNS (no discovery on the LAN; peers must be given by address).
    #[arg(long)]
    pub no_mdns: bool,
    /// How to talk to you: `tui` (a chat window; an error when stdin or stdout is not a
    /// terminal), `plain` (`NAME> TEXT` lines), `json` (NDJSON events, see
    /// docs/json-events.md), or `auto`: the chat window when stdin and stdout are terminals,
    /// plain lines otherwise.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub ui: Mode,
    /// Short for `--ui json`.
    #[arg(long, conflicts_with = "ui")]
    pub json: bool,
}

/// `--room NAME` and `--room-key FILE`, both repeatable, kept in command-line order (see
/// [`Cli::parse_ordered`]).
#[derive(Debug, Default, Args)]
pub struct RoomArgs {
    /// An open room: anyone who knows its name is a member (`lan` is the LAN room, the only
    /// room without --room and --room-key). Repeatable, with --room-key, in command-line order:
    /// a chat's first room is where typed lines go at first, and the one that takes the logs
    /// stored before rooms; export, doctor and import use the rooms given (import: one), by
    /// default the LAN room.
    #[arg(long = "room", value_name = "NAME", value_parser = parse_room)]
    pub room: Vec<String>,
    /// A private room, by its key file (see `p2pchat keygen-room`), shown by the file's stem
    /// (team.key: room team): only peers holding the same key share it. Repeatable.
    #[arg(long = "room-key", value_name = "FILE")]
    pub room_key: Vec<PathBuf>,
    /// Both, in command-line order.
    #[arg(skip)]
    pub order: Vec<RoomArg>,
}

/// One `--room` or `--room-key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomArg {
    /// `--room NAME`.
    Open(String),
    /// `--room-key FILE`.
    Key(PathBuf),
}

impl RoomArg {
    /// How the user named the room, to say it back.
    fn given(&self) -> String {
        match self {
            RoomArg::Open(name) => format!("--room {name}"),
            RoomArg::Key(path) => format!("--room-key {}", path.display()),
        }
    }
}

impl RoomArgs {
    /// Puts the rooms in command-line order, from `matches` (of the command these arguments
    /// belong to).
    fn order_from(&mut self, matches: &ArgMatches) {
        let mut all: Vec<(usize, RoomArg)> = Vec::new();
        if let Some(at) = matches.indices_of("room") {
            all.extend(at.zip(self.room.iter().cloned().map(RoomArg::Open)));
        }
        if let Some(at) = matches.indices_of("room_key") {
            all.extend(at.zip(self.room_key.iter().cloned().map(RoomArg::Key)));
        }
        all.sort_by_key(|(at, _)| *at);
        self.order = all.into_iter().map(|(_, room)| room).collect();
    }

    /// The rooms, in command-line order (reading key files); none when none was given. Two
    /// rooms with one label, or one room given twice, are refused, naming both.
    pub fn rooms(&self) -> Result<Vec<Room>, NodeError> {
        let mut rooms: Vec<(Room, &RoomArg)> = Vec::new();
        for arg in &self.order {
            let room = match arg {
                RoomArg::Open(name) => {
                    Room::open(name).map_err(|e| NodeError::Rooms(format!("--room {name}: {e}")))?
                }
                RoomArg::Key(path) => room_of_key_file(path)?,
            };
            if let Some((_, earlier)) = rooms.iter().find(|(r, _)| r.label() == room.label()) {
                return Err(NodeError::Rooms(format!(
                    "{} and {} are both room {}: every room needs its own label (a key file is \
                     shown by its name without the extension: rename one)",
                    earlier.given(),
                    arg.given(),
                    room.label()
                )));
            }
            if let Some((_, earlier)) = rooms.iter().find(|(r, _)| r.id() == room.id()) {
                return Err(NodeError::Rooms(format!(
                    "{} and {} are the same room (the same key): give it once",
                    earlier.given(),
                    arg.given()
                )));
            }
            rooms.push((room, arg));
        }
        Ok(rooms.into_iter().map(|(room, _)| room).collect())
    }

    /// The rooms, or the LAN room when none was given.
    pub fn rooms_or_lan(&self) -> Result<Vec<Room>, NodeError> {
        let rooms = self.rooms()?;
        Ok(if rooms.is_empty() {
            vec![Room::lan()]
        } else {
            rooms
        })
    }
}

impl Cli {
    /// Parses the command line, keeping the order of `--room` and `--room-key` (exits with
    /// clap's message on a bad command line, as [`Parser::parse`] does).
    pub fn parse_ordered() -> Self {
        Self::try_parse_ordered(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::parse_ordered`] of `args`.
    pub fn try_parse_ordered<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        cli.chat.rooms.order_from(&matches);
        if let Some((_, sub)) = matches.subcommand()
            && let Some(
                Command::Import { rooms, .. }
                | Command::Export { rooms, .. }
                | Command::Doctor { rooms, .. },
            ) = &mut cli.command
        {
            rooms.order_from(sub);
        }
        Ok(cli)
    }
}

/// A `--room` name that can name a room.
fn parse_room(name: &str) -> Result<String, String> {
    Room::open(name)
        .map(|_| name.to_owned())
        .map_err(|e| e.to_string())
}

/// A `--name` that follows the name rule (the one peers check profiles against).
fn parse_name(name: &str) -> Result<String, String> {
    check_name(name)
        .map(|()| name.to_owned())
        .map_err(|e| e.to_string())
}

/// The data directory for `name`: `dir` if given, else the per-user default, the directory
/// named `name` in p2pchat's data directory. A name that is not one plain directory name
/// (`.`, `..`, or with a `/`) never becomes a path: it needs `dir`.
/// A `--relay` value: an address p2pchat dials, ending in `/p2p/<the relay's peer id>`.
fn parse_relay(value: &str) -> Result<Multiaddr, String> {
    let address: Multiaddr = value
        .parse()
        .map_err(|e| format!("{value:?} is not an address: {e}"))?;
    p2pchat_node::check_relay_address(&address).map_err(|e| e.to_string())?;
    Ok(address)
}

/// The relay's data directory: `dir`, or `p2pchat-relay` beside the users' data directories.
pub fn relay_dir(dir: Option<&PathBuf>) -> Result<PathBuf, NodeError> {
    if let Some(dir) = dir {
        return Ok(dir.clone());
    }
    let root =
        directories::ProjectDirs::from("", "", "p2pchat-relay").ok_or(NodeError::NoDataDir)?;
    Ok(root.data_dir().to_owned())
}

pub fn data_dir(name: &str, dir: Option<&PathBuf>) -> Result<PathBuf, NodeError> {
    if let Some(dir) = dir {
        return Ok(dir.clone());
    }
    let root = directories::ProjectDirs::from("", "", "p2pchat").ok_or(NodeError::NoDataDir)?;
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(plain)), None) if plain == name => Ok(root.data_dir().join(name)),
        _ => Err(NodeError::NameNotADirectory(name.to_owned())),
    }
}

impl ChatArgs {
    /// The user interface asked for.
    pub fn mode(&self) -> Mode {
        if self.json { Mode::Json } else { self.ui }
    }

    /// The node configuration these arguments describe.
    pub fn builder(&self) -> Result<NodeBuilder, NodeError> {
        let name = self.name.clone().unwrap_or_default();
        let data_dir = data_dir(&name, self.data_dir.as_ref())?;
        let mut builder = NodeBuilder::default()
            .name(name)
            .data_dir(data_dir)
            .mdns(!self.no_mdns);
        for addr in &self.listen {
            builder = builder.listen(addr.clone());
        }
        for peer in &self.peers {
            builder = builder.peer(peer.clone());
        }
        for relay in &self.relays {
            builder = builder.relay(relay.clone());
        }
        for room in self.rooms.rooms()? {
            builder = builder.room(room);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_command_lines_parse() {
        let cli = Cli::try_parse_from([
            "p2pchat",
            "--name",
            "alice",
            "--peer",
            "bob",
            "--peer",
            "/ip4/127.0.0.1/tcp/4001",
            "--no-mdns",
        ])
        .unwrap();
        assert_eq!(cli.chat.peers[0], PeerSpec::Name("bob".into()));
        assert!(matches!(cli.chat.peers[1], PeerSpec::Addr(_)));
        assert_eq!(
            cli.chat.listen,
            vec![
                "/ip4/0.0.0.0/tcp/0".parse::<Multiaddr>().unwrap(),
                "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap()
            ]
        );
        let relay =
            "/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWE8YkWfkZjeqwUBDtDr1kap6GzR3YrkSWFR8tZzqkmyQv";
        let cli = Cli::try_parse_from([
            "p2pchat",
            "--name",
            "alice",
            "--peer",
            "bob",
            "--no-mdns",
            "--relay",
            relay,
        ])
        .unwrap();
        assert_eq!(cli.chat.relays, vec![relay.parse::<Multiaddr>().unwrap()]);
        assert!(
            Cli::try_parse_from(["p2pchat", "--name", "a", "--relay", "/ip4/1.2.3.4/tcp/1"])
                .is_err(),
            "a relay without its peer id"
        );
        let relay = Cli::try_parse_from(["p2pchat", "relay"]).unwrap();
        assert!(
            matches!(relay.command, Some(Command::Relay { ref listen, .. }) if listen.len() == 2)
        );
        let import = Cli::try_parse_from(["p2pchat", "import", "--name", "alice"]).unwrap();
        assert!(matches!(import.command, Some(Command::Import { .. })));
        assert!(
            Cli::try_parse_from(["p2pchat", "--peer", "bob"]).is_err(),
            "--name is required to chat"
        );
        assert_eq!(cli.chat.mode(), Mode::Auto);
        let json = Cli::try_parse_from(["p2pchat", "--name", "a", "--json"]).unwrap();
        assert_eq!(json.chat.mode(), Mode::Json);
        let tui = Cli::try_parse_from(["p2pchat", "--name", "a", "--ui", "tui"]).unwrap();
        assert_eq!(tui.chat.mode(), Mode::Tui);
        assert!(Cli::try_parse_from(["p2pchat", "--name", "a", "--ui", "tui", "--json"]).is_err());
        let export =
            Cli::try_parse_from(["p2pchat", "export", "--name", "alice", "--format", "ndjson"])
                .unwrap();
        assert!(matches!(
            export.command,
            Some(Command::Export {
                format: ExportFormat::Ndjson,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["p2pchat", "id", "--name", "alice"]).is_ok());
        let doctor = Cli::try_parse_from(["p2pchat", "doctor", "--name", "a", "--repair"]).unwrap();
        assert!(matches!(
            doctor.command,
            Some(Command::Doctor { repair: true, .. })
        ));
        assert!(Cli::try_parse_from(["p2pchat", "completions", "bash"]).is_ok());
        let keygen = Cli::try_parse_from(["p2pchat", "keygen-room", "team.key"]).unwrap();
        assert!(matches!(keygen.command, Some(Command::KeygenRoom { .. })));
        let room =
            Cli::try_parse_ordered(["p2pchat", "--name", "a", "--room-key", "team.key"]).unwrap();
        assert_eq!(
            room.chat.rooms.order,
            [RoomArg::Key(PathBuf::from("team.key"))]
        );
    }

    #[test]
    fn rooms_are_kept_in_command_line_order() {
        let cli = Cli::try_parse_ordered([
            "p2pchat",
            "--name",
            "a",
            "--room-key",
            "b.key",
            "--room",
            "ops",
            "--no-mdns",
            "--room-key",
            "a.key",
            "--room",
            "lan",
        ])
        .unwrap();
        assert_eq!(
            cli.chat.rooms.order,
            [
                RoomArg::Key("b.key".into()),
                RoomArg::Open("ops".into()),
                RoomArg::Key("a.key".into()),
                RoomArg::Open("lan".into()),
            ]
        );
        for sub in ["export", "doctor", "import"] {
            let cli = Cli::try_parse_ordered([
                "p2pchat",
                sub,
                "--name",
                "a",
                "--room",
                "z",
                "--room-key",
                "k.key",
                "--room",
                "y",
            ])
            .unwrap();
            let Some(
                Command::Export { rooms, .. }
                | Command::Doctor { rooms, .. }
                | Command::Import { rooms, .. },
            ) = cli.command
            else {
                panic!("{sub} parses as {sub}");
            };
            assert_eq!(
                rooms.order,
                [
                    RoomArg::Open("z".into()),
                    RoomArg::Key("k.key".into()),
                    RoomArg::Open("y".into()),
                ],
                "{sub}"
            );
        }
        let none = Cli::try_parse_ordered(["p2pchat", "--name", "a"]).unwrap();
        assert!(
            none.chat.rooms.rooms().unwrap().is_empty(),
            "the node's default"
        );
        assert_eq!(none.chat.rooms.rooms_or_lan().unwrap(), [Room::lan()]);
        assert!(
            Cli::try_parse_ordered(["p2pchat", "--name", "a", "--room", " x"]).is_err(),
            "a room name follows the name rule"
        );
    }

    #[test]
    fn rooms_load_in_order_and_labels_must_differ() {
        let dir = tempfile::tempdir().unwrap();
        let key = |path: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            p2pchat_node::RoomKey::create(&path).unwrap();
            path.display().to_string()
        };
        let (team, other_team, ops) = (key("team.key"), key("elsewhere/team.key"), key("ops"));
        let rooms = |args: &[&str]| {
            let mut line = vec!["p2pchat", "--name", "a"];
            line.extend(args);
            Cli::try_parse_ordered(line).unwrap().chat.rooms.rooms()
        };
        let labels = |found: Vec<Room>| -> Vec<String> {
            found.iter().map(|room| room.label().to_owned()).collect()
        };
        assert_eq!(
            labels(rooms(&["--room-key", &ops, "--room", "lan", "--room-key", &team]).unwrap()),
            ["ops", "lan", "team"]
        );
        assert_eq!(rooms(&["--room", "lan"]).unwrap(), [Room::lan()]);
        let error = rooms(&["--room-key", &team, "--room-key", &other_team])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&team) && error.contains(&other_team) && error.contains("room team"),
            "{error}"
        );
        let error = rooms(&["--room", "team", "--room-key", &team])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--room team and --room-key") && error.contains(&team),
            "{error}"
        );
        let copy = dir.path().join("copy.key");
        std::fs::copy(&team, &copy).unwrap();
        let error = rooms(&[
            "--room-key",
            &team,
            "--room-key",
            &copy.display().to_string(),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("the same room"), "{error}");
        let error = rooms(&["--room", "ops", "--room", "ops"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--room ops and --room ops"), "{error}");
        let missing = dir.path().join("missing.key").display().to_string();
        assert!(matches!(
            rooms(&["--room-key", &missing]),
            Err(NodeError::RoomKey(_))
        ));
    }

    #[test]
    fn peers_that_could_never_be_reached_are_refused() {
        let peer = |value: &str| {
            Cli::try_parse_from(["p2pchat", "--name", "a", "--peer", value])
                .map(|cli| cli.chat.peers[0].clone())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            peer("Alice Smith"),
            Ok(PeerSpec::Name("Alice Smith".into()))
        );
        assert!(matches!(
            peer("/ip4/127.0.0.1/tcp/1/p2p/12D3KooWE8YkWfkZjeqwUBDtDr1kap6GzR3YrkSWFR8tZzqkmyQv"),
            Ok(PeerSpec::Addr(_))
        ));
        assert!(matches!(
            peer("/ip4/127.0.0.1/udp/4001/quic-v1"),
            Ok(PeerSpec::Addr(_))
        ));
        for (value, why) in [
            (
                "/ip4/1.2.3/tcp/1",
                "/ip4/1.2.3 is not valid: invalid IPv4 address syntax",
            ),
            (
                "/tcp/99999",
                "/tcp/99999 is not valid: a port is a number from 0 to 65535",
            ),
            ("/ip4/1.2.3.4/tcp/1/", "has an empty part"),
            ("/frob/1", "unknown protocol \"frob\""),
            ("/ip4", "/ip4 is not valid: a value is missing"),
            ("/ip4/127.0.0.1", "p2pchat cannot dial /ip4/127.0.0.1"),
            ("/ip4/127.0.0.1/tcp/0", "p2pchat cannot dial"),
            ("/dns4/example.org/tcp/4001", "p2pchat cannot dial"),
            ("/ip4/127.0.0.1/udp/4001", "p2pchat cannot dial"),
            ("/ip4/127.0.0.1/udp/0/quic-v1", "p2pchat cannot dial"),
            ("", "is not a valid name"),
            ("bob ", "is not a valid name"),
            (&"n".repeat(100), "is not a valid name"),
        ] {
            let error = peer(value).expect_err(value);
            assert!(error.contains(why), "{value:?}: {error}");
        }
    }

    #[test]
    fn a_name_is_never_a_path() {
        let root = directories::ProjectDirs::from("", "", "p2pchat").unwrap();
        for name in ["alice", "Alice Smith", ".alice", "..."] {
            assert_eq!(
                data_dir(name, None).unwrap(),
                root.data_dir().join(name),
                "{name:?} keeps the path it always had"
            );
        }
        for name in [".", "..", "../x", "../../../x", "a/b", "/abs", "a/", "a/."] {
            assert!(
                matches!(data_dir(name, None), Err(NodeError::NameNotADirectory(_))),
                "{name:?}"
            );
        }
        let given = PathBuf::from("/somewhere/else");
        assert_eq!(data_dir("../x", Some(&given)).unwrap(), given);
    }
}
