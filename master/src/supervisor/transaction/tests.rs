//! Every state × every event of the reload transaction, without a fork.
//!
//! States are built by driving a fresh transaction with events (so a test
//! never reaches into the private state), then one more event is applied
//! and the resulting phase and effects are compared with the table.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::*;
use At::*;

/// A waiter is a number here: which request it came with.
type Tx = Transaction<u32>;

const OLD: u64 = 1;
const NEW: u64 = 2;

fn pid(n: i32) -> Pid {
    Pid::from_raw(n)
}

fn t0() -> Instant {
    // One fixed origin per test; only differences matter.
    Instant::now()
}

fn ms(base: Instant, n: u64) -> Instant {
    base + Duration::from_millis(n)
}

fn reload(waiter: u32) -> Event<u32> {
    Event::ReloadRequested(Request {
        waiters: vec![waiter],
        text: None,
        restricted: false,
    })
}

fn post(waiter: u32, text: &str) -> Event<u32> {
    Event::ReloadRequested(Request {
        waiters: vec![waiter],
        text: Some(text.to_string()),
        restricted: true,
    })
}

fn prepared(base: Instant) -> Event<u32> {
    Event::Prepared {
        generation: NEW,
        workers: 2,
        ready_deadline: ms(base, 1000),
        text: "new".into(),
    }
}

/// One line per effect, compact enough for a table.
fn show(effects: &[Effect<u32>]) -> Vec<String> {
    effects
        .iter()
        .map(|e| match e {
            Effect::NotifyReloading => "notify-reloading".to_string(),
            Effect::Prepare { text, restricted } => {
                let what = text.as_deref().unwrap_or("file");
                if *restricted {
                    format!("prepare {what} restricted")
                } else {
                    format!("prepare {what}")
                }
            }
            Effect::Commit {
                generation,
                first,
                persist,
                ..
            } => format!("commit {generation} first={first} persist={persist}"),
            Effect::RollBack { generation, .. } => format!("rollback {generation}"),
            Effect::Finished { waiters, outcome } => {
                let what = match outcome {
                    Outcome::Ok { generation, .. } => format!("ok {generation}"),
                    Outcome::Invalid(_) => "invalid".into(),
                    Outcome::Failed(_) => "failed".into(),
                    Outcome::Forbidden(_) => "forbidden".into(),
                };
                format!("finished {what} {waiters:?}")
            }
            Effect::Refuse { waiters, .. } => format!("refuse {waiters:?}"),
            Effect::StartupFailed { .. } => "startup-failed".into(),
            Effect::Warn(_) => "warn".into(),
        })
        .collect()
}

/// The states, each reached by events from the start.
#[derive(Debug, Clone, Copy)]
enum At {
    Idle,
    Preparing,
    StartingFirst,
    Starting,
    Committing,
    Handover,
}

fn reach(at: At, base: Instant) -> Tx {
    let mut tx = match at {
        At::StartingFirst => return Tx::first(NEW, 2, ms(base, 1000), "first".into(), base),
        _ => Tx::idle(),
    };
    if let At::Idle = at {
        return tx;
    }
    tx.on(reload(1), base);
    if let At::Preparing = at {
        return tx;
    }
    tx.on(prepared(base), base);
    if let At::Starting = at {
        return tx;
    }
    tx.on(ready(10), base);
    tx.on(ready(11), base);
    if let At::Committing = at {
        return tx;
    }
    tx.on(committed(vec![pid(5), pid(6)]), base);
    assert_eq!(tx.phase(), Phase::Handover);
    tx
}

fn committed(draining: Vec<Pid>) -> Event<u32> {
    Event::Committed {
        draining,
        warning: None,
    }
}

fn ready(p: i32) -> Event<u32> {
    Event::WorkerReady {
        pid: pid(p),
        generation: NEW,
    }
}

fn exited(p: i32, generation: u64) -> Event<u32> {
    Event::WorkerExited {
        pid: pid(p),
        generation,
        how: "was killed by SIGKILL".into(),
    }
}

/// (state, event) to (phase after, effects). Every event comes at the
/// time the state was reached, so nothing is due yet for tick-early.
const EXPECT: &[(At, &str, Phase, &[&str])] = &[
    (
        Idle,
        "reload",
        Phase::Preparing,
        &["notify-reloading", "prepare file"],
    ),
    (At::Idle, "prepared", Phase::Idle, &[]),
    (At::Idle, "prepare-failed", Phase::Idle, &[]),
    (At::Idle, "ready", Phase::Idle, &[]),
    (At::Idle, "failed", Phase::Idle, &[]),
    (At::Idle, "exited-new", Phase::Idle, &[]),
    (At::Idle, "exited-old", Phase::Idle, &[]),
    (At::Idle, "stopped-accepting", Phase::Idle, &[]),
    (At::Idle, "committed", Phase::Idle, &[]),
    (At::Idle, "tick-early", Phase::Idle, &[]),
    (At::Idle, "stop", Phase::Idle, &[]),
    (At::Preparing, "reload", Phase::Preparing, &[]),
    (At::Preparing, "prepared", Phase::Starting, &[]),
    (
        Preparing,
        "prepare-failed",
        Phase::Idle,
        &["finished failed [1]"],
    ),
    (At::Preparing, "ready", Phase::Preparing, &[]),
    (At::Preparing, "failed", Phase::Preparing, &[]),
    (At::Preparing, "exited-new", Phase::Preparing, &[]),
    (At::Preparing, "exited-old", Phase::Preparing, &[]),
    (At::Preparing, "stopped-accepting", Phase::Preparing, &[]),
    (At::Preparing, "committed", Phase::Preparing, &[]),
    (At::Preparing, "tick-early", Phase::Preparing, &[]),
    (At::Preparing, "stop", Phase::Idle, &["refuse [1]"]),
    (At::StartingFirst, "reload", Phase::Starting, &[]),
    (At::StartingFirst, "prepared", Phase::Starting, &[]),
    (At::StartingFirst, "prepare-failed", Phase::Starting, &[]),
    (At::StartingFirst, "ready", Phase::Starting, &[]),
    (
        At::StartingFirst,
        "failed",
        Phase::Idle,
        &["startup-failed"],
    ),
    (
        StartingFirst,
        "exited-new",
        Phase::Idle,
        &["startup-failed"],
    ),
    (At::StartingFirst, "exited-old", Phase::Starting, &[]),
    (At::StartingFirst, "stopped-accepting", Phase::Starting, &[]),
    (At::StartingFirst, "committed", Phase::Starting, &[]),
    (At::StartingFirst, "tick-early", Phase::Starting, &[]),
    (At::StartingFirst, "stop", Phase::Idle, &[]),
    (At::Starting, "reload", Phase::Starting, &[]),
    (At::Starting, "prepared", Phase::Starting, &[]),
    (At::Starting, "prepare-failed", Phase::Starting, &[]),
    (At::Starting, "ready", Phase::Starting, &[]),
    (
        Starting,
        "failed",
        Phase::Idle,
        &["rollback 2", "finished failed [1]"],
    ),
    (
        Starting,
        "exited-new",
        Phase::Idle,
        &["rollback 2", "finished failed [1]"],
    ),
    (At::Starting, "exited-old", Phase::Starting, &[]),
    (At::Starting, "stopped-accepting", Phase::Starting, &[]),
    (At::Starting, "committed", Phase::Starting, &[]),
    (At::Starting, "tick-early", Phase::Starting, &[]),
    (
        At::Starting,
        "stop",
        Phase::Idle,
        &["rollback 2", "refuse [1]"],
    ),
    (At::Committing, "reload", Phase::Committing, &[]),
    (At::Committing, "prepared", Phase::Committing, &[]),
    (At::Committing, "prepare-failed", Phase::Committing, &[]),
    (At::Committing, "ready", Phase::Committing, &[]),
    (At::Committing, "failed", Phase::Committing, &[]),
    (At::Committing, "exited-new", Phase::Committing, &[]),
    (At::Committing, "exited-old", Phase::Committing, &[]),
    (At::Committing, "stopped-accepting", Phase::Committing, &[]),
    (At::Committing, "committed", Phase::Handover, &[]),
    (At::Committing, "tick-early", Phase::Committing, &[]),
    (At::Committing, "stop", Phase::Idle, &["finished ok 2 [1]"]),
    (At::Handover, "reload", Phase::Handover, &[]),
    (At::Handover, "prepared", Phase::Handover, &[]),
    (At::Handover, "prepare-failed", Phase::Handover, &[]),
    (At::Handover, "ready", Phase::Handover, &[]),
    (At::Handover, "failed", Phase::Handover, &[]),
    // A worker of the new generation dying now is a crash of the
    // serving generation (respawned), not a failed reload.
    (At::Handover, "exited-new", Phase::Handover, &[]),
    (At::Handover, "exited-old", Phase::Handover, &[]),
    (At::Handover, "stopped-accepting", Phase::Handover, &[]),
    (At::Handover, "committed", Phase::Handover, &[]),
    (At::Handover, "tick-early", Phase::Handover, &[]),
    (At::Handover, "stop", Phase::Idle, &["finished ok 2 [1]"]),
];

/// Every state and every event, checked against `EXPECT`.
#[test]
fn every_state_and_event() {
    type MakeEvent = fn(Instant) -> Event<u32>;
    let events: Vec<(&str, MakeEvent)> = vec![
        ("reload", |_| reload(2)),
        ("prepared", prepared),
        ("prepare-failed", |_| {
            Event::PrepareFailed(Outcome::Failed("bind".into()))
        }),
        ("ready", |_| ready(10)),
        ("failed", |_| Event::WorkerFailed {
            pid: pid(10),
            generation: NEW,
            reason: "no".into(),
        }),
        ("exited-new", |_| exited(10, NEW)),
        ("exited-old", |_| exited(5, OLD)),
        ("stopped-accepting", |_| Event::StoppedAccepting {
            pid: pid(5),
        }),
        ("committed", |_| committed(vec![pid(5)])),
        ("tick-early", |_| Event::Tick),
        ("stop", |_| Event::StopRequested),
    ];
    let states = [
        Idle,
        Preparing,
        StartingFirst,
        Starting,
        Committing,
        Handover,
    ];
    assert_eq!(
        EXPECT.len(),
        states.len() * events.len(),
        "the table is complete"
    );
    for (at, name, phase, effects) in EXPECT {
        let base = t0();
        let mut tx = reach(*at, base);
        let make = events
            .iter()
            .find(|(n, _)| n == name)
            .expect("event in the list")
            .1;
        let got = show(&tx.on(make(base), base));
        assert_eq!(
            (tx.phase(), got.as_slice()),
            (
                *phase,
                &effects.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]
            ),
            "{at:?} + {name}"
        );
    }
}

#[test]
fn commit_waits_for_every_worker_once() {
    let base = t0();
    let mut tx = reach(At::Starting, base);
    assert!(show(&tx.on(ready(10), base)).is_empty());
    // The same worker twice does not count as two.
    assert!(show(&tx.on(ready(10), base)).is_empty());
    // A worker of another generation does not count.
    let other = Event::WorkerReady {
        pid: pid(12),
        generation: OLD,
    };
    assert!(show(&tx.on(other, base)).is_empty());
    assert_eq!(
        show(&tx.on(ready(11), base)),
        ["commit 2 first=false persist=false"]
    );
}

#[test]
fn ready_then_death_before_commit_fails_the_reload() {
    let base = t0();
    let mut tx = reach(At::Starting, base);
    tx.on(ready(10), base);
    assert_eq!(
        show(&tx.on(exited(10, NEW), base)),
        ["rollback 2", "finished failed [1]"]
    );
    assert_eq!(tx.phase(), Phase::Idle);
    // Its sibling's Ready, arriving late, changes nothing.
    assert!(show(&tx.on(ready(11), base)).is_empty());
}

#[test]
fn handover_ends_when_every_old_worker_stopped_accepting_or_exited() {
    let base = t0();
    let mut tx = reach(At::Handover, base);
    assert!(show(&tx.on(Event::StoppedAccepting { pid: pid(5) }, base)).is_empty());
    // An unrelated pid does not count.
    assert!(show(&tx.on(Event::StoppedAccepting { pid: pid(99) }, base)).is_empty());
    assert_eq!(
        show(&tx.on(exited(6, OLD), ms(base, 7))),
        ["finished ok 2 [1]"]
    );
    assert_eq!(tx.phase(), Phase::Idle);
}

#[test]
fn commit_with_no_old_worker_finishes_at_once() {
    let base = t0();
    let mut tx = reach(At::Committing, base);
    let done = tx.on(
        Event::Committed {
            draining: vec![],
            warning: Some("cannot write".into()),
        },
        base,
    );
    let Some(Effect::Finished {
        outcome: Outcome::Ok { warning, .. },
        ..
    }) = done.first()
    else {
        panic!("{:?}", show(&done));
    };
    assert_eq!(warning.as_deref(), Some("cannot write"));
}

#[test]
fn deadlines() {
    let base = t0();
    let mut tx = reach(At::Starting, base);
    assert_eq!(tx.deadline(), Some(ms(base, 1000)));
    assert!(show(&tx.on(Event::Tick, ms(base, 999))).is_empty());
    assert_eq!(
        show(&tx.on(Event::Tick, ms(base, 1000))),
        ["rollback 2", "finished failed [1]"]
    );
    assert_eq!(tx.deadline(), None);

    let mut tx = reach(At::Handover, base);
    assert_eq!(tx.deadline(), Some(base + HANDOVER_TIMEOUT));
    assert_eq!(
        show(&tx.on(Event::Tick, base + HANDOVER_TIMEOUT)),
        ["warn", "finished ok 2 [1]"]
    );

    let mut tx = reach(At::StartingFirst, base);
    assert_eq!(
        show(&tx.on(Event::Tick, ms(base, 5000))),
        ["startup-failed"]
    );
}

#[test]
fn the_first_generation_commits_as_first() {
    let base = t0();
    let mut tx = reach(At::StartingFirst, base);
    tx.on(ready(10), base);
    assert_eq!(
        show(&tx.on(ready(11), base)),
        ["commit 2 first=true persist=false"]
    );
    let done = tx.on(committed(vec![]), base);
    // The start is not a reload: nothing to count or to tell.
    assert!(show(&done).is_empty());
    assert_eq!(tx.phase(), Phase::Idle);
}

#[test]
fn queued_requests_run_in_order_and_file_rereads_merge() {
    let base = t0();
    let mut tx = reach(At::Starting, base);
    tx.on(reload(2), base);
    tx.on(reload(3), base);
    tx.on(post(4, "posted"), base);
    tx.on(reload(5), base);
    tx.on(ready(10), base);
    tx.on(ready(11), base);
    // The reload in progress finishes, and the merged re-read starts.
    let effects = tx.on(committed(vec![]), base);
    assert_eq!(
        show(&effects),
        ["finished ok 2 [1]", "notify-reloading", "prepare file"]
    );
    let failed = tx.on(Event::PrepareFailed(Outcome::Failed("x".into())), base);
    assert_eq!(
        show(&failed),
        [
            "finished failed [2, 3]",
            "notify-reloading",
            "prepare posted restricted"
        ]
    );
    tx.on(prepared(base), base);
    tx.on(ready(10), base);
    assert_eq!(
        show(&tx.on(ready(11), base)),
        ["commit 2 first=false persist=true"]
    );
}

#[test]
fn a_stop_refuses_what_is_queued_and_every_later_request() {
    let base = t0();
    let mut tx = reach(At::Starting, base);
    tx.on(reload(2), base);
    tx.on(post(3, "x"), base);
    assert_eq!(
        show(&tx.on(Event::StopRequested, base)),
        ["rollback 2", "refuse [1]", "refuse [2]", "refuse [3]"]
    );
    assert_eq!(show(&tx.on(reload(4), base)), ["refuse [4]"]);
    assert_eq!(tx.phase(), Phase::Idle);
}

#[test]
fn a_stop_during_the_handover_reports_the_reload_as_done() {
    let base = t0();
    let mut tx = reach(At::Handover, base);
    tx.on(reload(2), base);
    assert_eq!(
        show(&tx.on(Event::StopRequested, base)),
        ["finished ok 2 [1]", "refuse [2]"]
    );
}

#[test]
fn a_deadline_and_a_ready_in_the_same_turn() {
    // The last Ready arrived in the same loop turn as the deadline: the
    // loop feeds messages before the tick, so the generation commits.
    let base = t0();
    let mut tx = reach(At::Starting, base);
    tx.on(ready(10), base);
    let late = ms(base, 1000);
    assert_eq!(
        show(&tx.on(ready(11), late)),
        ["commit 2 first=false persist=false"]
    );
    assert!(show(&tx.on(Event::Tick, late)).is_empty());
}
