//! `sotto room …` and `sotto rooms`: group calls.

use std::{
    io::{IsTerminal, Write},
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use sotto_client::{
    call::{CallError, Endpoint},
    profile::{KnownRoom, Profile},
    room::{JoinOptions, RoomAsk, RoomControl, RoomLine, RoomPhase, RoomReport},
    session::LeftReason,
    video::VideoSend,
};
use sotto_proto::{Handle, RoomId};

use crate::{
    NO_ACCOUNT, audio_signal, endpoint, one_line, parse_duration, parse_frame_ms, parse_handle,
    write_json,
};

#[derive(Subcommand)]
pub enum RoomCommand {
    /// Create a room you own, and invite people to it.
    Create {
        /// A name to find it by here (only you see it).
        #[arg(long)]
        name: Option<String>,
        /// Handles to invite at once, e.g. @bob @carol.
        handles: Vec<String>,
    },
    /// Invite people to a room you own.
    Invite {
        /// The room: its id, the start of its id, or its name.
        room: String,
        /// Whom, e.g. @bob @carol.
        #[arg(required = true)]
        handles: Vec<String>,
    },
    /// Join a room's call (Ctrl-C leaves).
    Join {
        /// The room: its id, the start of its id, or its name.
        room: String,
        #[command(flatten)]
        media: RoomMediaArgs,
    },
    /// Remove someone from a room you own: they leave its call and may not come back.
    Remove {
        /// The room: its id, the start of its id, or its name.
        room: String,
        /// Whom.
        handle: String,
    },
}

#[derive(clap::Args)]
pub struct RoomMediaArgs {
    /// Microphone: `default`, a device from `sotto devices`, or a synthetic source:
    /// `synth` (440 Hz tone), `synth:HZ`, `synth:speech`.
    #[arg(long, default_value = "default")]
    audio_in: String,
    /// Speaker: `default`, a device from `sotto devices`, or `none` (decode, measure and
    /// play nowhere).
    #[arg(long, default_value = "default")]
    audio_out: String,
    /// Send and receive video too (three simulcast layers: 320x180, 640x360, 1280x720).
    #[arg(long)]
    video: bool,
    /// Camera (with --video): `default`, a device from `sotto devices`, or `synth` (moving
    /// test pattern).
    #[arg(long, default_value = "default")]
    video_in: String,
    /// Receive at most this layer of others' video: 0 (320x180), 1 (640x360) or 2
    /// (1280x720, the default: whatever the bandwidth allows). Lower saves bandwidth and
    /// CPU.
    #[arg(long, value_name = "LAYER", value_parser = clap::value_parser!(u8).range(0..=2))]
    max_layer: Option<u8>,
    /// Leave after this long (e.g. 30s, 2m); default: until Ctrl-C.
    #[arg(long)]
    duration: Option<String>,
    /// Audio frame length in milliseconds: 20, or 10 for lower latency.
    #[arg(long, default_value_t = 20, value_parser = parse_frame_ms)]
    frame_ms: u32,
    /// Send media from this local address. Default: the one that routes to the server.
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// How long to wait to be let in by someone in the room (e.g. 30s).
    #[arg(long, default_value = "30s")]
    admission_timeout: String,
    /// After the call, write its figures to this file as JSON.
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
}

/// Exit code of a room call that ended by being removed by the owner.
const EXIT_REMOVED: u8 = 9;

pub async fn run(profile: Profile, command: RoomCommand) -> anyhow::Result<u8> {
    match command {
        RoomCommand::Create { name, handles } => {
            let handles = parse_handles(&handles)?;
            if let Some(n) = name.as_deref() {
                check_name(&profile, n)?;
            }
            let mut ep = endpoint(profile).await?;
            let room = ep.create_room().await?;
            remember(
                &mut ep,
                room,
                KnownRoom {
                    name: name.clone(),
                    owned: true,
                    ..KnownRoom::default()
                },
            )?;
            let label = name.map_or_else(String::new, |n| format!(" ({n})"));
            println!("created room {room}{label}");
            if handles.is_empty() {
                println!("invite people with `sotto room invite {room} @someone`");
            } else {
                invite(&mut ep, room, handles).await?;
            }
            println!("join it with `sotto room join {room}`");
            Ok(0)
        }
        RoomCommand::Invite { room, handles } => {
            let handles = parse_handles(&handles)?;
            let room = resolve_room(&profile, &room)?;
            let mut ep = endpoint(profile).await?;
            invite(&mut ep, room, handles).await?;
            Ok(0)
        }
        RoomCommand::Remove { room, handle } => {
            let who = parse_handle(&handle)?;
            let room = resolve_room(&profile, &room)?;
            let mut ep = endpoint(profile).await?;
            ep.remove_from_room(room, who.clone())
                .await
                .map_err(|e| room_refusal(e, room))?;
            println!("{who} removed from room {room}");
            Ok(0)
        }
        RoomCommand::Join { room, media } => join(profile, &room, &media).await,
    }
}

/// `sotto rooms`: the rooms this profile knows, after collecting invitations waiting on
/// the server.
pub async fn list(profile: Profile) -> anyhow::Result<u8> {
    if profile.account().is_none() {
        bail!("{NO_ACCOUNT}");
    }
    let known = profile.rooms().clone();
    let rooms = match endpoint(profile).await {
        Ok(mut ep) => {
            collect_invites(&mut ep).await?;
            ep.profile().map(|p| p.rooms().clone()).unwrap_or(known)
        }
        Err(e) if e.downcast_ref::<crate::ProfileBusy>().is_some() => {
            eprintln!(
                "(another sotto with this profile is connected and records invitations as they come; these are the rooms recorded so far)"
            );
            known
        }
        Err(e) => {
            eprintln!(
                "sotto: warning: could not reach the server ({}), so invitations that are waiting there are not shown",
                one_line(e.as_ref())
            );
            known
        }
    };
    if rooms.is_empty() {
        println!(
            "no rooms yet: create one with `sotto room create`, or wait for an invitation (`sotto listen` shows them as they come)"
        );
    }
    for (id, r) in &rooms {
        let name = r.name.as_deref().unwrap_or("");
        let whose = if r.owned {
            "yours".to_owned()
        } else {
            r.invited_by
                .as_deref()
                .map_or_else(|| "invited".to_owned(), |h| format!("invited by {h}"))
        };
        println!("{id}  {name:<16} {whose}");
    }
    Ok(0)
}

/// Records every room invitation waiting for us, then lets the server drop them.
pub async fn collect_invites(ep: &mut Endpoint) -> anyhow::Result<()> {
    for (seq, room, from) in ep.room_invites().await? {
        record_invite(ep, seq, room, &from).await?;
    }
    Ok(())
}

/// Records one invitation in the profile and acknowledges it (only once it is recorded,
/// so a crash in between loses nothing).
pub async fn record_invite(
    ep: &mut Endpoint,
    seq: u64,
    room: RoomId,
    from: &Handle,
) -> anyhow::Result<()> {
    remember(
        ep,
        room,
        KnownRoom {
            invited_by: Some(from.to_string()),
            ..KnownRoom::default()
        },
    )?;
    ep.handled(seq).await?;
    Ok(())
}

fn remember(ep: &mut Endpoint, room: RoomId, known: KnownRoom) -> anyhow::Result<()> {
    if let Some(p) = ep.profile_mut() {
        p.remember_room(&room.to_string(), known)
            .map_err(|e| anyhow!("cannot record the room in the profile: {}", one_line(&e)))?;
    }
    Ok(())
}

async fn invite(ep: &mut Endpoint, room: RoomId, handles: Vec<Handle>) -> anyhow::Result<()> {
    let names: Vec<String> = handles.iter().map(ToString::to_string).collect();
    ep.invite_to_room(room, handles)
        .await
        .map_err(|e| room_refusal(e, room))?;
    println!("invited {} to room {room}", names.join(", "));
    Ok(())
}

/// A refusal about a room in words that say what to do.
fn room_refusal(e: CallError, room: RoomId) -> anyhow::Error {
    use sotto_client::signaling::ClientError;
    use sotto_proto::ErrorCode;
    match &e {
        CallError::Signaling(ClientError::Server(b)) => match &b.code {
            ErrorCode::NotFound => anyhow!("{}: check the room and the handles", b.message),
            ErrorCode::Forbidden => anyhow!("{} (room {room})", b.message),
            _ => anyhow!("{}", one_line(&e)),
        },
        _ => anyhow!("{}", one_line(&e)),
    }
}

fn parse_handles(words: &[String]) -> anyhow::Result<Vec<Handle>> {
    words.iter().map(|w| parse_handle(w)).collect()
}

/// A room name must not look like a room id, and names are unique in a profile.
fn check_name(profile: &Profile, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 64 {
        bail!("a room name has 1 to 64 characters");
    }
    if name.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("\"{name}\" looks like a room id: give the room a name with a letter beyond f");
    }
    if profile
        .rooms()
        .values()
        .any(|r| r.name.as_deref() == Some(name))
    {
        bail!("a room called \"{name}\" exists already: `sotto rooms` lists them");
    }
    Ok(())
}

/// A room named on the command line: its full id, a name this profile gave it, or the
/// start of the id of a room this profile knows (unique).
fn resolve_room(profile: &Profile, word: &str) -> anyhow::Result<RoomId> {
    if let Some(id) = parse_room_id(word) {
        return Ok(id);
    }
    let rooms = profile.rooms();
    if let Some((id, _)) = rooms.iter().find(|(_, r)| r.name.as_deref() == Some(word)) {
        return parse_room_id(id).context("the profile's rooms.json holds a bad room id");
    }
    let lower = word.to_ascii_lowercase();
    let matches: Vec<&String> = if lower.len() >= 4 {
        rooms.keys().filter(|id| id.starts_with(&lower)).collect()
    } else {
        Vec::new()
    };
    match matches.as_slice() {
        [one] => parse_room_id(one).context("the profile's rooms.json holds a bad room id"),
        [] => bail!(
            "no room \"{word}\" here: give its id (32 hex digits), the start of it, or its name; `sotto rooms` lists the rooms you know"
        ),
        _ => bail!("\"{word}\" starts the ids of several rooms: give more of it"),
    }
}

fn parse_room_id(word: &str) -> Option<RoomId> {
    let bytes = hex::decode(word).ok()?;
    Some(RoomId(bytes.try_into().ok()?))
}

async fn join(profile: Profile, word: &str, media: &RoomMediaArgs) -> anyhow::Result<u8> {
    let room = resolve_room(&profile, word)?;
    let name = profile
        .rooms()
        .get(&room.to_string())
        .and_then(|r| r.name.clone());
    let mut opts = join_options(media)?;
    let mut ep = endpoint(profile).await?;
    let label = name.map_or_else(String::new, |n| format!(" ({n})"));
    eprintln!(
        "joining room {room}{label}… (Ctrl-C leaves; type `invite @someone` or `remove @someone` and Enter to manage a room you own)"
    );
    let (status_tx, mut status_rx) = tokio::sync::mpsc::unbounded_channel();
    let (leave_tx, leave_rx) = tokio::sync::watch::channel(false);
    opts.status = Some(status_tx);
    opts.leave = Some(leave_rx);
    let printer = tokio::spawn(async move {
        let mut code = String::new();
        while let Some(line) = status_rx.recv().await {
            if line.code != code && !line.code.is_empty() {
                code.clone_from(&line.code);
                eprintln!(
                    "\rverification code {code}  (epoch {}; everyone in the room sees the same code)          ",
                    line.epoch
                );
            }
            eprint!("\r{}   ", status_text(&line));
            let _ = std::io::stderr().flush();
        }
    });
    let ctrl_c = tokio::spawn(async move {
        super::stop_requested().await;
        eprintln!("\nleaving…");
        let _ = leave_tx.send(true);
    });
    let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
    opts.controls = Some(control_rx);
    read_commands(control_tx);
    let result = ep.join_room(room, &mut opts).await;
    ctrl_c.abort();
    printer.abort();
    let _ = printer.await;
    eprintln!();
    match result {
        Ok(r) => {
            print_report(&r);
            write_json(media.report_json.as_deref(), &report_json(&r))?;
            Ok(exit_for(&r))
        }
        Err(e) => {
            eprintln!("sotto: {}", one_line(&e));
            Ok(1)
        }
    }
}

/// Reads `invite @a @b` and `remove @a` lines from stdin and sends them into the call;
/// prints each outcome. Ends at end of input (none when stdin is not a terminal).
fn read_commands(tx: tokio::sync::mpsc::UnboundedSender<RoomControl>) {
    use std::io::BufRead;
    if !std::io::stdin().is_terminal() {
        return;
    }
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            let words: Vec<&str> = line.split_whitespace().collect();
            let ask = match words.as_slice() {
                [] => continue,
                ["invite", handles @ ..] if !handles.is_empty() => handles
                    .iter()
                    .map(|w| parse_handle(w))
                    .collect::<Result<Vec<_>, _>>()
                    .map(RoomAsk::Invite),
                ["remove", who] => parse_handle(who).map(RoomAsk::Remove),
                _ => Err(anyhow!(
                    "type `invite @someone…` or `remove @someone` (Ctrl-C leaves)"
                )),
            };
            let ask = match ask {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("\rsotto: {e}");
                    continue;
                }
            };
            let what = match &ask {
                RoomAsk::Invite(h) => format!(
                    "invited {}",
                    h.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                RoomAsk::Remove(h) => format!("removed {h}"),
            };
            let (answer, rx) = tokio::sync::oneshot::channel();
            if tx.send(RoomControl { ask, answer }).is_err() {
                return;
            }
            match rx.blocking_recv() {
                Ok(Ok(())) => eprintln!("\r{what}"),
                Ok(Err(e)) => eprintln!("\rsotto: {}", one_line(&e)),
                Err(_) => return,
            }
        }
    });
}

fn join_options(media: &RoomMediaArgs) -> anyhow::Result<JoinOptions> {
    let synth = audio_signal(&media.audio_in)?;
    let mut o = JoinOptions {
        duration: media.duration.as_deref().map(parse_duration).transpose()?,
        microphone: synth.is_none().then(|| media.audio_in.clone()),
        speaker: (media.audio_out != "none").then(|| media.audio_out.clone()),
        frame_ms: media.frame_ms,
        media_ips: media.bind.into_iter().collect(),
        admission_timeout: parse_duration(&media.admission_timeout)?,
        video: media.video.then(|| {
            VideoSend::simulcast((media.video_in != "synth").then(|| media.video_in.clone()))
        }),
        max_layer: media.max_layer,
        ..JoinOptions::default()
    };
    if let Some(ip) = media.bind
        && let Err(e) = std::net::UdpSocket::bind((ip, 0))
    {
        bail!(
            "cannot send media from {ip} ({e}): give --bind an address of this machine (`ip address` lists them)"
        );
    }
    if let Some(s) = synth {
        o.audio = s;
    }
    Ok(o)
}

fn status_text(l: &RoomLine) -> String {
    let names = |hs: &[Handle]| {
        hs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let phase = match l.phase {
        RoomPhase::WaitingToBeLetIn => {
            return "○ waiting for someone in the room to let you in…".into();
        }
        RoomPhase::Connecting => "○ connecting",
        RoomPhase::InCall => "● in room",
        RoomPhase::Leaving => "○ leaving",
    };
    let video = if l.video_decoded > 0 {
        format!("  video {}", l.video_decoded)
    } else {
        String::new()
    };
    let speaking = if l.speaking.is_empty() {
        String::new()
    } else {
        format!("  speaking {}", names(&l.speaking))
    };
    format!(
        "{phase}  {}{speaking}  code {}  ↑ {} kb/s ↓ {} kb/s  loss {:.0}%{video}{}",
        names(&l.members),
        l.code,
        l.send_bps / 1000,
        l.recv_bps / 1000,
        l.loss * 100.0,
        if l.rejected > 0 {
            format!("  rejected {}", l.rejected)
        } else {
            String::new()
        }
    )
}

fn left_text(r: Option<&LeftReason>) -> String {
    match r {
        None | Some(LeftReason::Left) => "you left".into(),
        Some(LeftReason::Removed) => "the room's owner removed you".into(),
        Some(LeftReason::KeyMismatch { handle, reason }) => format!(
            "the key presented for {handle} is not its account's ({reason}); someone may be substituting keys, so you left"
        ),
        Some(LeftReason::Failed(why)) => format!("the call could not go on: {why}"),
    }
}

fn exit_for(r: &RoomReport) -> u8 {
    match r.ended {
        None | Some(LeftReason::Left) => 0,
        Some(LeftReason::Removed) => EXIT_REMOVED,
        Some(LeftReason::KeyMismatch { .. }) => 6,
        Some(LeftReason::Failed(_)) => 7,
    }
}

fn print_report(r: &RoomReport) {
    println!("left the room: {}", left_text(r.ended.as_ref()));
    if let Some((_, code)) = r.codes.last() {
        println!("last verification code  {code}");
    }
    for m in &r.refused_members {
        println!(
            "warning: someone's commit brought in a member whose key did not check out ({m}); it was removed and never heard or seen your media"
        );
    }
    println!("audio sent {}, video sent {}", r.audio_sent, r.video_sent);
    for (leaf, s) in &r.senders {
        let who = s
            .handle
            .as_ref()
            .map_or_else(|| format!("leaf {leaf}"), ToString::to_string);
        println!(
            "  from {who}: played {}, concealed {}; video decoded {}",
            s.stats.played, s.stats.concealed, s.video_decoded
        );
    }
}

/// The report as JSON, for scripts and tests (`--report-json`).
fn report_json(r: &RoomReport) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let senders: Vec<serde_json::Value> = r
        .senders
        .iter()
        .map(|(leaf, s)| {
            serde_json::json!({
                "leaf": leaf,
                "handle": s.handle.as_ref().map(ToString::to_string),
                "received": s.stats.received,
                "played": s.stats.played,
                "concealed": s.stats.concealed,
                "late": s.stats.late,
                "received_hz": s.received_hz,
                "first_audio_ms": ms(s.first_audio),
                "video_decoded": s.video_decoded,
                "video_skipped": s.video.skipped,
            })
        })
        .collect();
    serde_json::json!({
        "room": r.room.map(|x| x.to_string()),
        "ended": left_text(r.ended.as_ref()),
        "removed": matches!(r.ended, Some(LeftReason::Removed)),
        "leaf": r.leaf,
        "codes": r.codes.iter().map(|(e, c)| serde_json::json!({"epoch": e, "code": c})).collect::<Vec<_>>(),
        "admitted_ms": ms(r.admitted),
        "connected_ms": ms(r.connected),
        "first_audio_ms": ms(r.first_audio),
        "audio_sent": r.audio_sent,
        "video_sent": r.video_sent,
        "senders": senders,
        "decrypt_failures": r.decrypt_failures.values().sum::<u64>(),
        "held_recovered": r.held_recovered,
        "commits": r.commits,
        "rejoins": r.rejoins,
        "frames_lost": r.frames_lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> RoomLine {
        let h = |s: &str| Handle::parse(s).expect("handle");
        RoomLine {
            phase: RoomPhase::InCall,
            members: vec![h("@ana"), h("@ben"), h("@cyd")],
            speaking: vec![h("@ben")],
            dominant: None,
            epoch: 4,
            code: "12345 67890 13579 24680".into(),
            send_bps: 48_000,
            recv_bps: 96_500,
            loss: 0.034,
            rejected: 0,
            last_frame_id: None,
            last_video_id: None,
            video_decoded: 0,
            played: 10,
            concealed: 0,
            rtt: None,
            estimate_bps: None,
            via_sfu: true,
        }
    }

    #[test]
    fn the_status_line_shows_roster_speakers_code_rates_and_loss() {
        let text = status_text(&line());
        for part in [
            "● in room",
            "@ana @ben @cyd",
            "speaking @ben",
            "code 12345 67890 13579 24680",
            "↑ 48 kb/s ↓ 96 kb/s",
            "loss 3%",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }
        assert!(!text.contains("rejected"), "{text}");
        let quiet = RoomLine {
            speaking: vec![],
            rejected: 2,
            video_decoded: 7,
            ..line()
        };
        let text = status_text(&quiet);
        assert!(!text.contains("speaking"), "{text}");
        assert!(
            text.contains("video 7") && text.contains("rejected 2"),
            "{text}"
        );
        let waiting = RoomLine {
            phase: RoomPhase::WaitingToBeLetIn,
            ..line()
        };
        assert_eq!(
            status_text(&waiting),
            "○ waiting for someone in the room to let you in…"
        );
    }
}
