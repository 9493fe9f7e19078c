//! The E2EE self-check: real MLS groups, real SFrame frames, every step printed.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use sotto_client::{
    mls::{CallGroup, GroupEvent, MlsDevice},
    verify::group_code,
};
use sotto_media::{
    ContextId,
    keys::{CallKeys, KeyConfig, RejectReason},
};

struct Member {
    name: &'static str,
    device: MlsDevice,
    group: CallGroup,
    keys: CallKeys,
}

impl Member {
    fn join(name: &'static str, device: MlsDevice, group: CallGroup) -> anyhow::Result<Self> {
        let epoch = group.epoch_keys(&device, &KeyConfig::default())?;
        let keys = CallKeys::new(group.own_index(), epoch)?;
        Ok(Self {
            name,
            device,
            group,
            keys,
        })
    }

    fn rotate(&mut self, now: Instant) -> anyhow::Result<()> {
        let epoch = self.group.epoch_keys(&self.device, &KeyConfig::default())?;
        self.keys.advance(epoch, now)?;
        Ok(())
    }

    /// Commits an add or remove and, the delivery service standing in, merges it at once.
    fn commit(
        &mut self,
        add: &[Vec<u8>],
        remove: &[u32],
    ) -> anyhow::Result<sotto_client::mls::Commit> {
        let commit = if add.is_empty() {
            self.group.remove(&self.device, remove)?
        } else {
            self.group.add(&self.device, add)?
        };
        self.group.merge_pending(&self.device)?;
        Ok(commit)
    }

    fn process(&mut self, message: &[u8]) -> anyhow::Result<GroupEvent> {
        let staged = self.group.stage(&self.device, message)?;
        Ok(self.group.apply(&self.device, staged)?)
    }

    fn code(&self) -> String {
        group_code(&self.group.epoch_authenticator())
    }
}

/// A synthetic 20 ms "Opus" payload: recognisable bytes carrying sender and sequence.
fn payload(sender: &str, seq: u32) -> Vec<u8> {
    let mut p = format!("{sender}:{seq}:").into_bytes();
    p.resize(80, 0xa5);
    p
}

/// Every member in `senders` sends `frames` audio frames; every member in `receivers`
/// (other than the sender) tries them. Returns (decrypted, rejected) per receiver.
fn exchange(
    members: &mut [Member],
    senders: &[usize],
    receivers: &[usize],
    frames: u32,
    now: Instant,
) -> anyhow::Result<Vec<(usize, u32, u32)>> {
    let mut tally: Vec<(usize, u32, u32)> = receivers.iter().map(|&r| (r, 0, 0)).collect();
    let mut wire = Vec::new();
    let mut plain = Vec::new();
    for &s in senders {
        for seq in 0..frames {
            let sent = payload(members[s].name, seq);
            members[s]
                .keys
                .encrypt(ContextId::Audio, b"", &sent, &mut wire)?;
            for t in tally.iter_mut().filter(|t| t.0 != s) {
                match members[t.0].keys.decrypt(&wire, b"", &mut plain, now) {
                    Ok(_) if plain == sent => t.1 += 1,
                    Ok(_) => bail!("{} decrypted the wrong content", members[t.0].name),
                    Err(_) => t.2 += 1,
                }
            }
        }
    }
    Ok(tally)
}

/// Runs the self-check, printing each step; errors if any expectation fails.
pub fn run(frames: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "sotto E2EE self-check: MLS (RFC 9420) -> SFrame (RFC 9605), {frames} frames per sender per phase\n"
    );

    let alice = MlsDevice::new("@alice")?;
    let bob = MlsDevice::new("@bob")?;
    let carol = MlsDevice::new("@carol")?;
    let mut group = alice.create_group()?;
    let commit = group.add(&alice, &[bob.key_package()?, carol.key_package()?])?;
    group.merge_pending(&alice)?;
    let welcome = commit.welcome.context("an add commit carries a Welcome")?;
    let bob_group = bob.stage_join(&welcome)?.join(&bob)?;
    let carol_group = carol.stage_join(&welcome)?.join(&carol)?;
    let mut m = vec![
        Member::join("@alice", alice, group)?,
        Member::join("@bob", bob, bob_group)?,
        Member::join("@carol", carol, carol_group)?,
    ];
    println!(
        "1. @alice created a group and added @bob and @carol from their KeyPackages; both joined from the Welcome."
    );
    for x in &m {
        println!(
            "   {:<7} leaf {}  epoch {}  verification code {}",
            x.name,
            x.group.own_index(),
            x.group.epoch(),
            x.code()
        );
    }
    ensure!(
        m.iter().all(|x| x.code() == m[0].code()),
        "verification codes differ"
    );

    let now = Instant::now();
    let t = exchange(&mut m, &[0, 1, 2], &[0, 1, 2], frames, now)?;
    println!("2. Everyone sent {frames} encrypted audio frames to everyone:");
    for (r, ok, bad) in &t {
        println!("   {:<7} decrypted {ok}, rejected {bad}", m[*r].name);
        ensure!(
            *ok == 2 * frames && *bad == 0,
            "{} missed frames",
            m[*r].name
        );
    }

    let carol_leaf = m[2].group.own_index();
    let commit = m[0].commit(&[], &[carol_leaf])?;
    let bob_event = m[1].process(&commit.commit)?;
    let carol_event = m[2].process(&commit.commit)?;
    ensure!(
        carol_event == GroupEvent::Removed,
        "carol was not told she was removed"
    );
    ensure!(
        matches!(bob_event, GroupEvent::EpochAdvanced { epoch: 2 }),
        "bob did not advance"
    );
    m[0].rotate(now)?;
    m[1].rotate(now)?;
    println!(
        "3. @alice removed @carol: epoch {} for @alice and @bob, code {}; @carol is out of the group.",
        m[0].group.epoch(),
        m[0].code()
    );
    let t = exchange(&mut m, &[0, 1], &[0, 1, 2], frames, now)?;
    for (r, ok, bad) in &t {
        println!("   {:<7} decrypted {ok}, rejected {bad}", m[*r].name);
    }
    ensure!(
        t[2] == (2, 0, 2 * frames),
        "carol read frames after her removal"
    );
    ensure!(
        t[0].1 == frames && t[1].1 == frames,
        "remaining members missed frames"
    );

    let mut late = Vec::new();
    m[2].keys
        .encrypt(ContextId::Audio, b"", b"old epoch", &mut late)?;
    let mut out = Vec::new();
    let after_grace = now + KeyConfig::default().grace + Duration::from_millis(1);
    match m[1].keys.decrypt(&late, b"", &mut out, after_grace) {
        Err(e) if matches!(e.reason, RejectReason::EpochExpired { .. }) => {
            println!(
                "4. After the {:?} grace, an old-epoch frame is refused: {e}",
                KeyConfig::default().grace
            )
        }
        other => bail!("old-epoch frame after grace was not refused as expired: {other:?}"),
    }

    let mut before = Vec::new();
    m[0].keys
        .encrypt(ContextId::Audio, b"", b"before dave", &mut before)?;
    let dave = MlsDevice::new("@dave")?;
    let commit = m[0].commit(&[dave.key_package()?], &[])?;
    m[1].process(&commit.commit)?;

    m[0].rotate(after_grace)?;
    m[1].rotate(after_grace)?;
    let dave_group = dave
        .stage_join(&commit.welcome.context("Welcome for dave")?)?
        .join(&dave)?;
    m.push(Member::join("@dave", dave, dave_group)?);
    match m[3].keys.decrypt(&before, b"", &mut out, after_grace) {
        Err(e) => println!(
            "5. @dave joined at epoch {}; a frame from before he joined: {e}",
            m[3].group.epoch()
        ),
        Ok(_) => bail!("dave decrypted a frame from before he joined"),
    }
    let t = exchange(&mut m, &[0, 1, 3], &[0, 1, 3], frames, after_grace)?;
    for (r, ok, bad) in &t {
        println!("   {:<7} decrypted {ok}, rejected {bad}", m[*r].name);
        ensure!(
            *ok == 2 * frames && *bad == 0,
            "{} missed frames",
            m[*r].name
        );
    }
    ensure!(
        [0, 1, 3].iter().all(|&i| m[i].code() == m[0].code()),
        "verification codes differ after dave joined"
    );
    println!(
        "   verification code for epoch {}: {}",
        m[0].group.epoch(),
        m[0].code()
    );

    println!(
        "\nE2EE self-check passed in {:.0} ms.",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
