//! Command-line arguments and display helpers.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;
use p2pchat_node::{NodeBuilder, NodeError, PeerSpec};

/// A serverless, encrypted LAN chat. Type a line to send it; lines from others appear as
/// `NAME> TEXT`. Status goes to stderr as `info> …` lines.
#[derive(Debug, Parser)]
#[command(
    name = "p2pchat",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  p2pchat --name alice --peer bob\n  \
                  p2pchat --name bob --listen /ip4/127.0.0.1/tcp/4001 --no-mdns\n  \
                  p2pchat --name alice --peer /ip4/127.0.0.1/tcp/4001 --no-mdns\n  \
                  p2pchat import --name alice < lines.txt"
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
    /// Append each line of standard input as a message, without going online (fast, one disk
    /// sync per 10,000 lines). Lines over 4096 bytes are skipped and reported.
    Import {
        /// Whose log to append to.
        #[arg(long)]
        name: String,
        /// The user's data directory (default: as for chatting).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// Options for chatting.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Your user name (1 to 64 bytes).
    #[arg(long, required = true)]
    pub name: Option<String>,
    /// A peer to connect to: a user name on the LAN, or a multiaddr such as
    /// /ip4/192.168.1.7/tcp/4001[/p2p/<peer id>]. Repeatable.
    #[arg(long = "peer", value_name = "PEER")]
    pub peers: Vec<PeerSpec>,
    /// Address to listen on. Repeatable.
    #[arg(long, value_name = "MULTIADDR", default_value = "/ip4/0.0.0.0/tcp/0")]
    pub listen: Vec<Multiaddr>,
    /// Where your identity and history live (default: the per-user data directory, e.g.
    /// ~/.local/share/p2pchat/NAME).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Do not use mDNS (no discovery on the LAN; peers must be given by address).
    #[arg(long)]
    pub no_mdns: bool,
    /// Print NDJSON events on stdout instead of `NAME> TEXT` lines (see docs/json-events.md).
    #[arg(long)]
    pub json: bool,
}

/// The data directory for `name`: `dir` if given, else the per-user default.
pub fn data_dir(name: &str, dir: Option<&PathBuf>) -> Result<PathBuf, NodeError> {
    match dir {
        Some(dir) => Ok(dir.clone()),
        None => Ok(directories::ProjectDirs::from("", "", "p2pchat").ok_or(NodeError::NoDataDir)?.data_dir().join(name)),
    }
}

impl ChatArgs {
    /// The node configuration these arguments describe.
    pub fn builder(&self) -> Result<NodeBuilder, NodeError> {
        let name = self.name.clone().unwrap_or_default();
        let data_dir = data_dir(&name, self.data_dir.as_ref())?;
        let mut builder = NodeBuilder::default().name(name).data_dir(data_dir).mdns(!self.no_mdns);
        for addr in &self.listen {
            builder = builder.listen(addr.clone());
        }
        for peer in &self.peers {
            builder = builder.peer(peer.clone());
        }
        Ok(builder)
    }
}

/// Makes text safe to print on a terminal: control characters (which could fake lines or
/// move the cursor) are shown as `�`.
pub fn display(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(display("hi\nbob> fake\u{1b}[2J"), "hi\u{fffd}bob> fake\u{fffd}[2J");
    }

    #[test]
    fn the_documented_command_lines_parse() {
        let cli = Cli::try_parse_from([
            "p2pchat", "--name", "alice", "--peer", "bob", "--peer", "/ip4/127.0.0.1/tcp/4001", "--no-mdns",
        ])
        .unwrap();
        assert_eq!(cli.chat.peers[0], PeerSpec::Name("bob".into()));
        assert!(matches!(cli.chat.peers[1], PeerSpec::Addr(_)));
        assert_eq!(cli.chat.listen, vec!["/ip4/0.0.0.0/tcp/0".parse::<Multiaddr>().unwrap()]);
        let import = Cli::try_parse_from(["p2pchat", "import", "--name", "alice"]).unwrap();
        assert!(matches!(import.command, Some(Command::Import { .. })));
        assert!(Cli::try_parse_from(["p2pchat", "--peer", "bob"]).is_err(), "--name is required to chat");
    }
}
