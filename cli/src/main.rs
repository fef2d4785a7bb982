//! `kith`: the command-line client of the Kith messenger, and its daemon.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod accounts;
mod bots;
mod client;
mod commands;
mod config;
mod devices;
mod media;
mod open;
mod output;
mod planner;
mod plans;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kith_node::home::Home;
use kith_node::Multiaddr;

/// Kith: a peer-to-peer messenger with no servers; names live on a DHT and messages are
/// end-to-end encrypted.
#[derive(Debug, Parser)]
#[command(
    name = "kith",
    version,
    long_about = "Kith: a peer-to-peer messenger with no servers; names live on a DHT and \
                  messages are end-to-end encrypted.\n\n\
                  Quick start:\n  \
                  kith open                   start everything and open the web app (docs/web.md)\n  \
                  kith init                   create your identity and device keys\n  \
                  kith daemon &               run your node (every other command talks to it)\n  \
                  kith register alice         claim the name @alice on the network\n  \
                  kith send @bob hi there     send a message; `kith chat @bob` to talk\n  \
                  kith conversations          your chats and groups, with their ids\n\n\
                  Writing @name in a message to someone invites that person: the message starts \
                  a group of you, the recipient and everyone mentioned, named '#ID' (a prefix of \
                  its id; quote it, the shell takes # as a comment): \
                  `kith send '#3fa2b1c0' hello all`."
)]
struct Cli {
    /// The home directory holding your keys, the message store and the daemon's API address
    /// [default: $XDG_DATA_HOME/kith, else ~/.local/share/kith]
    #[arg(long, env = "KITH_HOME", global = true, value_name = "DIR")]
    home: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// `kith bot ...`.
#[derive(Debug, Subcommand)]
enum BotCommand {
    /// The planning assistant, a client of this home's running daemon over its API
    ///
    /// Register a name for it first (kith register planner), then mention it into a group:
    /// "@planner barbecue saturday 18:00 Stadtpark"; it proposes the event and starts a
    /// shopping list and a to-do list.
    Planner,
    /// A pizzeria: menu as product cards, a cart, an order form, a payment request, order
    /// status updates, ratings. Embeds its node (run it instead of `kith daemon`; it takes the
    /// daemon's flags)
    ///
    /// Example: kith init && kith bot pizzeria --name napoli --bootstrap MULTIADDR
    Pizzeria(Box<bots::BotArgs>),
    /// A barber's appointment book: free slots as buttons, booking, cancelling, a reminder
    /// before the appointment. Embeds its node (run it instead of `kith daemon`)
    Barber {
        #[command(flatten)]
        bot: Box<bots::BotArgs>,
        #[command(flatten)]
        book: bots::barber::BarberArgs,
    },
}

/// `kith profile set|clear`.
#[derive(Debug, Subcommand)]
enum ProfileAction {
    /// Publish a new profile (every field you leave out is left out)
    Set(Box<accounts::ProfileArgs>),
    /// Remove your profile from your name record
    Clear,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new identity and device keys in the home directory (never overwrites one)
    ///
    /// With --link, this device joins the identity of another device instead: run
    /// `kith device link` there and give its code here. With --recover, the identity is restored
    /// from its recovery phrase (`kith identity export`), read from standard input.
    Init {
        /// A name for this device, shown to your contacts [default: the host name]
        #[arg(long, value_name = "NAME")]
        label: Option<String>,
        /// Join an existing identity with the one-time code `kith device link` shows on a
        /// device that holds it (both devices must reach each other over the network)
        #[arg(long, value_name = "CODE", conflicts_with = "recover")]
        link: Option<String>,
        /// With --link: also copy the message history
        #[arg(long, requires = "link")]
        history: bool,
        /// Restore an identity from its 24-word recovery phrase, read from standard input
        #[arg(long)]
        recover: bool,
        /// Print the result as JSON (user_id, peer_id, fingerprint; with --link also name,
        /// contacts, groups, messages)
        #[arg(long)]
        json: bool,
    },

    /// Withdraw a message you sent that is not delivered yet
    ///
    /// Stops every delivery still pending (or, for a message waiting for its recipient's name
    /// to resolve, the lookups); the message shows as `cancelled`. Devices that already have it
    /// keep it. MESSAGE_ID is the id `kith send` printed (32 hex digits).
    Cancel {
        /// The message id
        #[arg(value_name = "MESSAGE_ID")]
        id: String,
        /// Print the cancelled message as JSON
        #[arg(long)]
        json: bool,
    },

    /// Mark a conversation read, on this device and on your other devices
    Read {
        /// @NAME, or '#ID' for a group
        #[arg(value_name = "TARGET")]
        with: String,
        /// Print {"read": N} (messages newly marked read here) as JSON
        #[arg(long)]
        json: bool,
    },

    /// Run an example bot (docs/bots.md); each runs until stopped
    Bot {
        #[command(subcommand)]
        which: BotCommand,
    },

    /// Your devices: link a new one, list them, revoke one
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },

    /// Your identity key: export its recovery phrase
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },

    /// Run the node: connect to the network, deliver messages and serve the local API
    ///
    /// Runs in the foreground until interrupted (Ctrl-C or SIGTERM); logs go to standard error
    /// (set RUST_LOG, e.g. RUST_LOG=debug, to see more).
    Daemon(Box<config::DaemonArgs>),

    /// Open the web app: creates an identity if the home has none, starts the daemon in the
    /// background if none answers, and prints a one-time login link (opened in the browser on a
    /// desktop)
    ///
    /// The link works once, within 2 minutes; the browser then keeps a session for 30 days (or
    /// until the daemon restarts). A daemon started here logs to daemon.log in the home and
    /// runs until stopped (kill it, or run `kith daemon` yourself instead). See docs/web.md.
    Open {
        /// Print the link without asking the desktop to open it
        #[arg(long)]
        no_browser: bool,
        /// Print {"url", "initialized", "daemon_started", "daemon_pid", "browser_opened"} as JSON
        #[arg(long)]
        json: bool,
    },

    /// Show this node's identity, name, addresses, peers and outbox
    Status {
        /// Print the daemon's answer as JSON
        #[arg(long)]
        json: bool,
    },

    /// Claim a name on the network, so others can reach you as @NAME
    ///
    /// Names are 3 to 32 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or
    /// digit. Registering computes a proof of work and stores a signed record on the DHT.
    Register {
        /// The name to claim (a leading '@' is ignored)
        name: String,
        /// Print the daemon's answer as JSON
        #[arg(long)]
        json: bool,
    },

    /// Look up who holds a name: user id, safety number and devices
    ///
    /// The first time a name is resolved its key is pinned; a later change of key is reported
    /// until you accept it with `kith trust NAME`.
    Resolve {
        /// The name to look up (a leading '@' is optional)
        name: String,
        /// Also fetch its avatar (from one of its devices) and write it to FILE
        #[arg(long, value_name = "FILE")]
        avatar: Option<PathBuf>,
        /// Print the daemon's answer as JSON
        #[arg(long)]
        json: bool,
    },

    /// Send a message to @NAME or to the conversation '#ID'; prints its id
    ///
    /// TARGET is a name (`@bob`; the '@' is optional) for the direct chat with that person, or
    /// '#ID' for a group (or any conversation), where ID is a unique prefix of its id as
    /// `kith conversations` shows it. Quote '#ID': unquoted, the shell takes # as a comment.
    ///
    /// Writing @name in the text invites that person: in a direct chat, the message starts a
    /// new group of you, the recipient and everyone mentioned (the direct chat stays as it was;
    /// the new group's id is shown on standard error); in a group, it adds them to the group.
    ///
    /// The message is stored in the outbox and delivered in the background, also later if the
    /// recipient is offline now. Put `--` before a text that starts with '-'. Mentioned names
    /// that do not resolve invite no one: a line on standard error says which, and why.
    Send {
        /// The recipient: @NAME, or '#ID' for a group
        #[arg(value_name = "TARGET")]
        to: String,
        /// The text; several words are joined with single spaces. Without TEXT, or with `-`,
        /// the message is read from standard input (at most 4,096 bytes; one trailing newline is
        /// dropped)
        #[arg(value_name = "TEXT", num_args = 0..)]
        text: Vec<String>,
        /// Wait until every device of the recipient acknowledged the message (directly, or
        /// through a mailbox's delivery receipt), then say so on standard error; group messages
        /// are not acknowledged: for them this does not wait
        #[arg(long)]
        wait: bool,
        /// How long --wait waits before giving up (the message stays queued)
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        timeout: u64,
        /// Send this file (a photo, video, voice note, any file) instead of a text; TEXT is
        /// then its caption. `-` reads the file from standard input. The daemon encrypts it
        /// into its blob store (at most 2 GiB by default, `media_max_file_size`) and the
        /// recipient's devices fetch it from this one, from members who have it, or from your
        /// mailbox. A progress bar shows the upload on a terminal; with --json, progress lines
        /// {"progress": "upload", "bytes": N, "total": N} come before the answer
        #[arg(long, value_name = "PATH")]
        file: Option<String>,
        /// Print {"id": ..., "conversation": ..., "status": ...} as JSON
        #[arg(long)]
        json: bool,
    },

    /// Save the file a message carries, waiting for its download
    ///
    /// Photos up to 16 MiB download by themselves when they arrive; other files when asked,
    /// by this command (or the API). It shows the download's progress on a terminal, writes
    /// the file (to the name its sender gave, in the current directory, unless --out says
    /// otherwise; an existing file is not overwritten unless named with --out) and prints
    /// its path. `kith messages` then shows where it was saved.
    Save {
        /// The message id (as `kith messages --json` shows it)
        #[arg(value_name = "MESSAGE_ID")]
        id: String,
        /// Where to write it: a file, or a directory to write it into
        #[arg(long, value_name = "PATH")]
        out: Option<std::path::PathBuf>,
        /// Print {"id": ..., "path": ..., "bytes": ...} as JSON (after progress lines)
        #[arg(long)]
        json: bool,
    },

    /// List messages, oldest first: all of them, or those of one conversation
    ///
    /// With @NAME, the direct chat with that person; with '#ID' (quoted), the conversation
    /// whose id starts with ID, such as a group (`kith conversations` lists the ids). Without
    /// either, every message, group messages marked with their group's '#ID'.
    Messages {
        /// Only this conversation: @NAME for the direct chat, '#ID' for a group
        #[arg(value_name = "@NAME|#ID")]
        with: Option<String>,
        /// Print a JSON array (with --follow: one JSON object per line)
        #[arg(long)]
        json: bool,
        /// Keep running and print new messages as they arrive or are sent
        #[arg(long, short)]
        follow: bool,
        /// Show only the last N messages
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: Option<u32>,
        /// Start each line with the first 8 digits of the message's id (for `reply`, `react`,
        /// `edit` and `delete`)
        #[arg(long)]
        ids: bool,
    },

    /// Reply to a message, in its conversation
    ///
    /// The reply shows the message it answers (`kith messages`, the web app).
    ///
    /// To an interactive message (buttons, a list, a product card, a form: `kith messages`
    /// numbers its choices), the reply is the answer: CHOICE is a choice's number, id or
    /// label (several, comma-separated, for a pick-many list), or --form KEY=VALUE fills a form.
    Reply {
        /// The message: its id, or its first 8 or more digits (`kith messages --ids`)
        #[arg(value_name = "MESSAGE_ID")]
        id: String,
        /// The reply; or, to an interactive message, the choice
        #[arg(value_name = "TEXT|CHOICE", required_unless_present = "form")]
        text: Option<String>,
        /// A form field's value (repeat for each field), to answer an interactive form
        #[arg(long, value_name = "KEY=VALUE")]
        form: Vec<String>,
        /// Print the reply as JSON
        #[arg(long)]
        json: bool,
    },

    /// Share a place (a point on the map), or where you are, live
    ///
    /// The others see it in the conversation with a link to the point on OpenStreetMap.
    /// Examples:
    ///   kith location @bob --lat 53.5511 --lon 9.9937 --label "Stadtpark"
    ///   gpspipe -w | your-filter | kith location '#3fa2' --live 1h   (lines of lat,lon[,accuracy])
    ///   kith location stop            stop every live location shared from this device
    Location {
        /// @NAME, or '#ID' for a group; or `stop` to stop sharing live
        #[arg(value_name = "TARGET")]
        to: String,
        /// After `stop`: only the live location shared with this @NAME or '#ID'
        #[arg(value_name = "STOP_TARGET")]
        stop_target: Option<String>,
        /// Share live for this long (15m, 1h, 8h; 10s to 8h), reading positions from standard
        /// input, one `lat,lon[,accuracy]` line each; sharing stops when the input ends. At most
        /// one position every 5 s is sent, and only when it changed
        #[arg(long, value_name = "DURATION", conflicts_with_all = ["lat", "lon", "label"])]
        live: Option<humantime::Duration>,
        /// Latitude in degrees, -90 to 90
        #[arg(long, allow_negative_numbers = true)]
        lat: Option<f64>,
        /// Longitude in degrees, -180 to 180
        #[arg(long, allow_negative_numbers = true)]
        lon: Option<f64>,
        /// How precise the point is: a radius in metres
        #[arg(long, value_name = "METRES")]
        accuracy: Option<f32>,
        /// A name for the place ("the café"), 256 bytes at most
        #[arg(long)]
        label: Option<String>,
        /// Print the message as JSON
        #[arg(long)]
        json: bool,
    },

    /// Block someone: everything they send (messages, group posts, calls, plans) is dropped
    /// unseen on all your devices, and you cannot write to them directly until you unblock them
    ///
    /// They are not told. In a group you share, they still get your group messages.
    Block {
        /// Who
        #[arg(value_name = "@NAME")]
        name: String,
        /// Print the decision as JSON
        #[arg(long)]
        json: bool,
    },

    /// Unblock someone you blocked (what they sent meanwhile stays dropped)
    Unblock {
        /// Who
        #[arg(value_name = "@NAME")]
        name: String,
        /// Print the decision as JSON
        #[arg(long)]
        json: bool,
    },

    /// The people you blocked
    Blocked {
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },

    /// Your public profile, published with your name record: whether you are a person, a
    /// business or a bot, a display name, hours, a domain …
    ///
    /// Examples:
    ///   kith profile
    ///   kith profile set --kind business --display-name "Pizzeria Napoli" --category pizzeria \
    ///     --hours "tue-sun 11:00-22:00" --domain napoli.example
    ///   kith profile clear
    Profile {
        #[command(subcommand)]
        action: Option<ProfileAction>,
        /// Print the profile as JSON
        #[arg(long, global = true)]
        json: bool,
    },

    /// Let a business or bot write to you (writing to it does the same)
    ///
    /// A business or bot may write to you only after you wrote to it, subscribed, or mentioned
    /// it into a group; your devices refuse anything else it sends.
    Subscribe {
        /// The business or bot
        #[arg(value_name = "@NAME")]
        name: String,
        /// Print the decision as JSON
        #[arg(long)]
        json: bool,
    },

    /// Stop a business or bot from writing to you, until you write to it again
    Unsubscribe {
        /// The business or bot
        #[arg(value_name = "@NAME")]
        name: String,
        /// Print the decision as JSON
        #[arg(long)]
        json: bool,
    },

    /// Mute a conversation: its messages still arrive and are kept, but the apps do not notify
    Mute {
        /// @NAME, or '#ID' for a group
        #[arg(value_name = "TARGET")]
        to: String,
        /// For how long (8h, 2days, 1week); without it, until you unmute
        #[arg(long = "for", value_name = "DURATION")]
        how_long: Option<humantime::Duration>,
        /// Print the answer as JSON
        #[arg(long)]
        json: bool,
    },

    /// Unmute a conversation
    Unmute {
        /// @NAME, or '#ID' for a group
        #[arg(value_name = "TARGET")]
        to: String,
        /// Print the answer as JSON
        #[arg(long)]
        json: bool,
    },

    /// Report an account (spam, abuse): keeps the report with its latest messages on this
    /// node and blocks it on all your devices
    ///
    /// There is no central moderator in Kith: the report stays with you (kith reports, or
    /// GET /v1/reports) to hand to whoever you choose.
    Report {
        /// Who
        #[arg(value_name = "@NAME")]
        name: String,
        /// Why
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Report without blocking
        #[arg(long)]
        no_block: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },

    /// The reports you made
    Reports {
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },

    /// The latest location each person shared in a conversation, with its age and a map link
    Locations {
        /// @NAME, or '#ID' for a group
        #[arg(value_name = "TARGET")]
        to: String,
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },

    /// Propose an event (a time and a place), or change or cancel one you proposed
    ///
    /// Examples:
    ///   kith event '#3fa2' "Barbecue" --at 2027-06-12T18:00 --place "Stadtpark, Hamburg"
    ///   kith event 9c1e04d2 --at 2027-06-12T19:00      (everyone sees the change)
    /// Times without an offset are in this machine's time zone.
    Event {
        /// @NAME or '#ID' to propose in; or the event's message id to change it
        #[arg(value_name = "TARGET|EVENT")]
        target: String,
        /// The title of a new event
        title: Option<String>,
        /// When: 2027-06-12T18:00 (local) or 2027-06-12T18:00+02:00
        #[arg(long)]
        at: Option<String>,
        /// Where
        #[arg(long)]
        place: Option<String>,
        /// Anything else, with a new event
        #[arg(long)]
        note: Option<String>,
        /// A new title, when changing
        #[arg(long = "title", value_name = "TITLE")]
        new_title: Option<String>,
        /// Call the event off
        #[arg(long)]
        cancel: bool,
        /// Print the message as JSON
        #[arg(long)]
        json: bool,
    },

    /// The events of a conversation, with who answered what
    Events {
        /// @NAME, or '#ID' for a group
        #[arg(value_name = "TARGET")]
        to: String,
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },

    /// Answer an event: yes, maybe or no (a later answer replaces yours)
    Rsvp {
        /// The event's message id (or its first 8 digits; `kith events` shows them)
        #[arg(value_name = "EVENT")]
        event: String,
        /// yes, maybe or no
        #[arg(value_parser = ["yes", "maybe", "no"])]
        answer: String,
        /// Print the event as JSON
        #[arg(long)]
        json: bool,
    },

    /// Shared shopping and to-do lists: make one, add, tick off, rename, assign, remove items
    ///
    /// Any member edits from any device, online or offline; edits merge without losing one.
    /// Examples:
    ///   kith list '#3fa2' new "Shopping"
    ///   kith list 51ab90e7 add "sausages" --for @bob
    ///   kith list 51ab90e7 done sausages
    ///   kith list 51ab90e7 --json
    List {
        /// The list's message id (or its first 8 digits); with `new`, @NAME or '#ID'
        #[arg(value_name = "LIST")]
        list: String,
        #[command(subcommand)]
        action: Option<plans::ListAction>,
        /// Print the list as JSON
        #[arg(long, global = true)]
        json: bool,
    },

    /// The lists of a conversation
    Lists {
        /// @NAME, or '#ID' for a group
        #[arg(value_name = "TARGET")]
        to: String,
        /// Print them as JSON
        #[arg(long)]
        json: bool,
    },

    /// Bills of a conversation: who owes whom, and the fewest transfers that settle it;
    /// record expenses and payments, ask to be paid
    ///
    /// Amounts are exact, in each currency's own units; balances are kept per currency.
    /// Examples:
    ///   kith bills '#3fa2'
    ///   kith bills '#3fa2' add "Sausages" 45.00 EUR --among @alice,@bob,@carol
    ///   kith bills '#3fa2' paid @alice 15.00 EUR      (alice confirms: kith bills '#3fa2' confirm ID)
    ///   kith bills '#3fa2' request --iban DE89370400440532013000 --name "Alice" --reference BBQ
    ///   kith bills '#3fa2' show REQUEST               (its GiroCode / Lightning QR codes)
    Bills {
        /// @NAME, or '#ID' for a group
        #[arg(value_name = "TARGET")]
        to: String,
        #[command(subcommand)]
        action: Option<plans::BillAction>,
        /// Print the answer as JSON
        #[arg(long, global = true)]
        json: bool,
    },

    /// React to a message with an emoji (or short text), or take the reaction back
    React {
        /// The message: its id, or its first 8 or more digits (`kith messages --ids`)
        #[arg(value_name = "MESSAGE_ID")]
        id: String,
        /// The emoji, 1 to 64 bytes
        emoji: String,
        /// Take this reaction back
        #[arg(long)]
        remove: bool,
        /// Print the reaction message as JSON
        #[arg(long)]
        json: bool,
    },

    /// Change the text of a message you sent, for everyone in the conversation
    ///
    /// The message shows as edited. Devices that do not know edits (older versions) show the
    /// edit as a message of its own.
    Edit {
        /// The message: its id, or its first 8 or more digits (`kith messages --ids`)
        #[arg(value_name = "MESSAGE_ID")]
        id: String,
        /// The new text
        text: String,
        /// Print the edit message as JSON
        #[arg(long)]
        json: bool,
    },

    /// Delete a message you sent, for everyone in the conversation
    ///
    /// Its text (or file) is no longer shown on any device that receives the delete; a device
    /// that already saved a file keeps that copy, and anyone can have kept what they saw.
    Delete {
        /// The message: its id, or its first 8 or more digits (`kith messages --ids`)
        #[arg(value_name = "MESSAGE_ID")]
        id: String,
        /// Print the delete message as JSON
        #[arg(long)]
        json: bool,
    },

    /// List your conversations: direct chats and groups, with their ids and members
    ///
    /// One line per conversation: the first 8 digits of its id (use it as '#ID' in `send`,
    /// `messages`, `chat`, `members`, `leave` and `remove`), `direct` or `group`, the members,
    /// and "(left)" for a group you left or were removed from. A group forms when a message to
    /// someone mentions @name of a person who is not in the chat.
    Conversations {
        /// Print the daemon's answer as JSON: an array of {id, kind, members, active}
        #[arg(long)]
        json: bool,
    },

    /// List calls: those ringing or running on this device, then its call history
    ///
    /// Calls are placed and answered in the web app (`kith open`), which runs the camera and
    /// microphone; each call also leaves an entry in its conversation.
    Calls {
        /// Print the daemon's answer as JSON: {current, history}, each an array of calls
        /// (docs/api.md, "Calls")
        #[arg(long)]
        json: bool,
    },

    /// List the members of a conversation, one per line, in the order they joined
    ///
    /// Writing @name in a message to the group adds that person.
    Members {
        /// The conversation: '#ID' (quoted) or ID, a unique prefix of its id
        #[arg(value_name = "#ID")]
        conversation: String,
        /// Print the daemon's answer as JSON: an array of names
        #[arg(long)]
        json: bool,
    },

    /// Leave a group: its members are told, and you get none of its later messages
    ///
    /// The group stays in `kith conversations`, marked "(left)", with its history. To come
    /// back, a member has to mention you (@name) in the group again.
    Leave {
        /// The group: '#ID' (quoted) or ID, a unique prefix of its id
        #[arg(value_name = "#ID")]
        conversation: String,
    },

    /// Remove @NAME from a group
    ///
    /// You may remove only the members who joined after you. The removed member is told, and
    /// the other members move to a new group key, so that the removed member cannot read later
    /// messages.
    Remove {
        /// The group: '#ID' (quoted) or ID, a unique prefix of its id
        #[arg(value_name = "#ID")]
        conversation: String,
        /// The member to remove (a leading '@' is optional)
        #[arg(value_name = "@NAME")]
        name: String,
    },

    /// List the people you have talked to, with their safety numbers
    Contacts {
        /// Print the daemon's answer as JSON
        #[arg(long)]
        json: bool,
    },

    /// Accept the key a name now resolves to, after its key changed
    ///
    /// Compare the new safety number with the person first (in person or on another channel):
    /// a changed key can mean an impostor.
    Trust {
        /// The name whose current key to accept (a leading '@' is optional)
        name: String,
        /// Print the daemon's answer as JSON
        #[arg(long)]
        json: bool,
    },

    /// Chat with @NAME, or in the group '#ID', interactively, line by line
    ///
    /// Shows the recent messages, prints new ones as they arrive and sends each line you type;
    /// `/quit` or the end of input (Ctrl-D) leaves. Writing @name in a line invites that person:
    /// in a chat with @NAME, that line starts a new group (its '#ID' is shown; continue there
    /// with `kith chat '#ID'`); in a group, it adds them.
    Chat {
        /// Whom to chat with: @NAME (the '@' is optional), or '#ID' (quoted) for a group
        #[arg(value_name = "@NAME|#ID")]
        with: String,
    },

    /// Manage the mailbox nodes that hold messages for your devices while they are offline
    ///
    /// A mailbox is an always-on node (`kith daemon --mailbox`, see docs/self-hosting.md) that
    /// keeps sealed envelopes, which it cannot read, until your device fetches them. Your
    /// mailboxes are published in your name record, so that senders find them.
    Mailbox {
        #[command(subcommand)]
        command: MailboxCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MailboxCommand {
    /// Enroll this device with a mailbox node and list it in your name record
    Add {
        /// The mailbox's address, ending in /p2p/<peer id>, e.g.
        /// /ip4/203.0.113.7/tcp/4011/p2p/12D3KooW... (its operator knows it)
        #[arg(value_name = "MULTIADDR")]
        addr: Multiaddr,
        /// Print the daemon's answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the mailboxes in your name record
    List {
        /// Print the daemon's answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a mailbox from your name record
    Remove {
        /// The mailbox's peer id, as `kith mailbox list` shows it (an address ending in
        /// /p2p/<peer id> works too)
        #[arg(value_name = "PEER_ID")]
        peer_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Show a one-time code (and QR code) that links a new device to your identity
    ///
    /// Run this on a device that holds the identity key (the one you ran `kith init` on, or
    /// restored with `kith init --recover`), with its daemon running. On the new device run
    /// `kith --home DIR init --link CODE [--history]`. The code is valid once, for 5 minutes;
    /// this command returns when the new device is linked or the code expires.
    Link {
        /// Print {"code": ..., "id": ..., "expires_at": ...} as the first line, then the final
        /// state as a second JSON line
        #[arg(long)]
        json: bool,
        /// How long the code stays valid, in seconds (at most 300)
        #[arg(long, value_name = "SECS")]
        expires: Option<u64>,
    },
    /// List your devices (this one first)
    List {
        /// Print the daemon's answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Revoke one of your devices: out of your name record, no new messages or group keys
    ///
    /// Run on a device that holds the identity key. Every group you are in starts a new epoch
    /// whose key the revoked device never gets.
    Revoke {
        /// The device's peer id, as `kith device list` shows it
        #[arg(value_name = "PEER_ID")]
        peer_id: String,
        /// Print the daemon's answer as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
    /// Print the 24-word recovery phrase of your identity key
    ///
    /// Anyone with the phrase can act as you; `kith init --recover` restores the identity on a
    /// new device from it. Only a device that holds the identity key can export it.
    Export {
        /// Print {"phrase": ..., "user_id": ...} as JSON
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = Home::new(cli.home.unwrap_or_else(Home::default_dir));
    let result = match cli.command {
        Command::Init { label, link: Some(code), history, json, .. } => {
            devices::init_link(&home, &code, label, history, json)
        }
        Command::Init { label, recover: true, json, .. } => {
            devices::init_recover(&home, label, json)
        }
        Command::Init { label, json, .. } => commands::init(&home, label, json),
        Command::Device { command: DeviceCommand::Link { json, expires } } => {
            devices::link(&home, json, expires)
        }
        Command::Device { command: DeviceCommand::List { json } } => devices::list(&home, json),
        Command::Read { with, json } => devices::read(&home, &with, json),
        Command::Cancel { id, json } => commands::cancel(&home, &id, json),
        Command::Device { command: DeviceCommand::Revoke { peer_id, json } } => {
            devices::revoke(&home, &peer_id, json)
        }
        Command::Identity { command: IdentityCommand::Export { json } } => {
            devices::export(&home, json)
        }
        Command::Daemon(args) => commands::daemon(&home, *args),
        Command::Open { no_browser, json } => open::open(&home, no_browser, json),
        Command::Status { json } => commands::status(&home, json),
        Command::Register { name, json } => commands::register(&home, &name, json),
        Command::Resolve { name, avatar, json } => {
            commands::resolve(&home, &name, json).and_then(|()| match avatar {
                Some(out) => accounts::save_avatar(&home, &name, &out, json),
                None => Ok(()),
            })
        }
        Command::Send { to, text, wait, timeout, file, json } => {
            commands::send(&home, &to, &text, file.as_deref(), wait.then_some(timeout), json)
        }
        Command::Save { id, out, json } => client::Client::from_home(&home)
            .and_then(|c| media::save(&c, &id, out.as_deref(), json)),
        Command::Messages { with, json, follow, limit, ids } => {
            commands::messages(&home, with.as_deref(), json, follow, limit, ids)
        }
        Command::Reply { id, text, form, json } => commands::reply(&home, &id, text, &form, json),
        Command::React { id, emoji, remove, json } => commands::annotate(
            &home,
            &id,
            "react",
            &serde_json::json!({ "emoji": emoji, "remove": remove }),
            json,
        ),
        Command::Edit { id, text, json } => {
            commands::annotate(&home, &id, "edit", &serde_json::json!({ "text": text }), json)
        }
        Command::Location { to, stop_target, live, lat, lon, accuracy, label, json } => {
            plans::location(
                &home,
                &to,
                stop_target,
                live.map(Into::into),
                (lat, lon),
                accuracy,
                label,
                json,
            )
        }
        Command::Locations { to, json } => plans::locations(&home, &to, json),
        Command::Bot { which: BotCommand::Planner } => planner::run(&home),
        Command::Bot { which: BotCommand::Pizzeria(args) } => bots::pizzeria::run(&home, *args),
        Command::Bot { which: BotCommand::Barber { bot, book } } => {
            bots::barber::run(&home, *bot, book)
        }
        Command::Block { name, json } => commands::block(&home, &name, true, json),
        Command::Unblock { name, json } => commands::block(&home, &name, false, json),
        Command::Blocked { json } => commands::blocked(&home, json),
        Command::Profile { action: None, json } => accounts::show(&home, json),
        Command::Profile { action: Some(ProfileAction::Set(a)), json } => {
            accounts::set(&home, *a, json)
        }
        Command::Profile { action: Some(ProfileAction::Clear), json } => {
            accounts::clear(&home, json)
        }
        Command::Subscribe { name, json } => accounts::subscribe(&home, &name, true, json),
        Command::Unsubscribe { name, json } => accounts::subscribe(&home, &name, false, json),
        Command::Mute { to, how_long, json } => {
            accounts::mute(&home, &to, how_long.map(Into::into), true, json)
        }
        Command::Unmute { to, json } => accounts::mute(&home, &to, None, false, json),
        Command::Report { name, reason, no_block, json } => {
            accounts::report(&home, &name, &reason, !no_block, json)
        }
        Command::Reports { json } => accounts::reports(&home, json),
        Command::Event { target, title, at, place, note, new_title, cancel, json } => {
            plans::event(&home, &target, title, at, place, note, new_title, cancel, json)
        }
        Command::Events { to, json } => plans::events(&home, &to, json),
        Command::Rsvp { event, answer, json } => plans::rsvp(&home, &event, &answer, json),
        Command::List { list, action, json } => plans::list(&home, &list, action, json),
        Command::Lists { to, json } => plans::lists(&home, &to, json),
        Command::Bills { to, action, json } => plans::bills(&home, &to, action, json),
        Command::Delete { id, json } => {
            commands::annotate(&home, &id, "delete", &serde_json::json!({}), json)
        }
        Command::Conversations { json } => commands::conversations(&home, json),
        Command::Calls { json } => commands::show(&home, "/v1/calls", json, output::calls),
        Command::Members { conversation, json } => commands::members(&home, &conversation, json),
        Command::Leave { conversation } => commands::leave(&home, &conversation),
        Command::Remove { conversation, name } => commands::remove(&home, &conversation, &name),
        Command::Contacts { json } => commands::contacts(&home, json),
        Command::Trust { name, json } => commands::trust(&home, &name, json),
        Command::Chat { with } => commands::chat(&home, &with),
        Command::Mailbox { command: MailboxCommand::Add { addr, json } } => {
            commands::mailbox_add(&home, &addr, json)
        }
        Command::Mailbox { command: MailboxCommand::List { json } } => {
            commands::mailbox_list(&home, json)
        }
        Command::Mailbox { command: MailboxCommand::Remove { peer_id } } => {
            commands::mailbox_remove(&home, &peer_id)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`kith messages | head`): nothing left to do.
        Err(e) if commands::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith: {}", client::one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_joins_words_and_keeps_flags_after_the_text() {
        let cli = Cli::try_parse_from(["kith", "send", "@bob", "hello", "bob", "--wait"])
            .expect("parses");
        match cli.command {
            Command::Send { to, text, wait, timeout, .. } => {
                assert_eq!(
                    (to.as_str(), text.join(" "), wait, timeout),
                    ("@bob", "hello bob".into(), true, 60)
                );
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn group_commands_parse() {
        let cli = Cli::try_parse_from(["kith", "send", "#3fa2b1c0", "hi", "all"]).expect("parses");
        assert!(matches!(cli.command, Command::Send { to, .. } if to == "#3fa2b1c0"));
        let cli = Cli::try_parse_from(["kith", "remove", "#3fa2", "@dave"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Remove { conversation, name } if conversation == "#3fa2" && name == "@dave"
        ));
        let cli = Cli::try_parse_from(["kith", "messages", "#3fa2", "-f", "--json"]).expect("ok");
        assert!(
            matches!(cli.command, Command::Messages { with: Some(w), follow: true, .. } if w == "#3fa2")
        );
        assert!(Cli::try_parse_from(["kith", "leave"]).is_err());
        assert!(Cli::try_parse_from(["kith", "conversations", "--json"]).is_ok());
    }

    #[test]
    fn daemon_defaults() {
        let cli = Cli::try_parse_from(["kith", "daemon"]).expect("parses");
        let dir = std::env::temp_dir().join("kith-test-no-such-home");
        match cli.command {
            Command::Daemon(args) => {
                let config = args.resolve(&dir).expect("resolves").config;
                assert_eq!(config.listen.len(), 1);
                assert!(config.bootstrap.is_empty());
                assert_eq!(config.api.to_string(), kith_node::DEFAULT_API);
                assert!(!config.mailbox.enabled);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn mailbox_commands_parse() {
        let cli = Cli::try_parse_from(["kith", "mailbox", "remove", "12D3KooWabc"]).expect("ok");
        assert!(matches!(
            cli.command,
            Command::Mailbox { command: MailboxCommand::Remove { peer_id } } if peer_id == "12D3KooWabc"
        ));
        assert!(Cli::try_parse_from(["kith", "mailbox", "add", "not-a-multiaddr"]).is_err());
    }
}
