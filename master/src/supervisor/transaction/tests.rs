//! Every state × every event of the reload transaction, without a fork.
//!
//! States are built by driving a fresh transaction with events (so a test
//! never reaches into the private state), then one more event is applied
//! and the resulting phase and effects are compared with the table.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::*;

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

/// The whole table: state, event, resulting phase, effects.
#[test]
fn every_state_and_event() {
    use At::*;
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
    // (state, event) → (phase after, effects). Events at t0 except
    // tick-early, which is at t0 too: nothing is due yet.
    let expect: &[(At, &str, Phase, &[&str])] = &[
        (
            Idle,
            "reload",
            Phase::Preparing,
            &["notify-reloading", "prepare file"],
        ),
        (Idle, "prepared", Phase::Idle, &[]),
        (Idle, "prepare-failed", Phase::Idle, &[]),
        (Idle, "ready", Phase::Idle, &[]),
        (Idle, "failed", Phase::Idle, &[]),
        (Idle, "exited-new", Phase::Idle, &[]),
        (Idle, "exited-old", Phase::Idle, &[]),
        (Idle, "stopped-accepting", Phase::Idle, &[]),
        (Idle, "committed", Phase::Idle, &[]),
        (Idle, "tick-early", Phase::Idle, &[]),
        (Idle, "stop", Phase::Idle, &[]),
        (Preparing, "reload", Phase::Preparing, &[]),
        (Preparing, "prepared", Phase::Starting, &[]),
        (
            Preparing,
            "prepare-failed",
            Phase::Idle,
            &["finished failed [1]"],
        ),
        (Preparing, "ready", Phase::Preparing, &[]),
        (Preparing, "failed", Phase::Preparing, &[]),
        (Preparing, "exited-new", Phase::Preparing, &[]),
        (Preparing, "exited-old", Phase::Preparing, &[]),
        (Preparing, "stopped-accepting", Phase::Preparing, &[]),
        (Preparing, "committed", Phase::Preparing, &[]),
        (Preparing, "tick-early", Phase::Preparing, &[]),
        (Preparing, "stop", Phase::Idle, &["refuse [1]"]),
        (StartingFirst, "reload", Phase::Starting, &[]),
        (StartingFirst, "prepared", Phase::Starting, &[]),
        (StartingFirst, "prepare-failed", Phase::Starting, &[]),
        (StartingFirst, "ready", Phase::Starting, &[]),
        (StartingFirst, "failed", Phase::Idle, &["startup-failed"]),
        (
            StartingFirst,
            "exited-new",
            Phase::Idle,
            &["startup-failed"],
        ),
        (StartingFirst, "exited-old", Phase::Starting, &[]),
        (StartingFirst, "stopped-accepting", Phase::Starting, &[]),
        (StartingFirst, "committed", Phase::Starting, &[]),
        (StartingFirst, "tick-early", Phase::Starting, &[]),
        (StartingFirst, "stop", Phase::Idle, &[]),
        (Starting, "reload", Phase::Starting, &[]),
        (Starting, "prepared", Phase::Starting, &[]),
        (Starting, "prepare-failed", Phase::Starting, &[]),
        (Starting, "ready", Phase::Starting, &[]),
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
        (Starting, "exited-old", Phase::Starting, &[]),
        (Starting, "stopped-accepting", Phase::Starting, &[]),
        (Starting, "committed", Phase::Starting, &[]),
        (Starting, "tick-early", Phase::Starting, &[]),
        (Starting, "stop", Phase::Idle, &["rollback 2", "refuse [1]"]),
        (Committing, "reload", Phase::Committing, &[]),
        (Committing, "prepared", Phase::Committing, &[]),
        (Committing, "prepare-failed", Phase::Committing, &[]),
        (Committing, "ready", Phase::Committing, &[]),
        (Committing, "failed", Phase::Committing, &[]),
        (Committing, "exited-new", Phase::Committing, &[]),
        (Committing, "exited-old", Phase::Committing, &[]),
        (Committing, "stopped-accepting", Phase::Committing, &[]),
        (Committing, "committed", Phase::Handover, &[]),
        (Committing, "tick-early", Phase::Committing, &[]),
        (Committing, "stop", Phase::Idle, &["finished ok 2 [1]"]),
        (Handover, "reload", Phase::Handover, &[]),
        (Handover, "prepared", Phase::Handover, &[]),
        (Handover, "prepare-failed", Phase::Handover, &[]),
        (Handover, "ready", Phase::Handover, &[]),
        (Handover, "failed", Phase::Handover, &[]),
        // A worker of the new generation dying now is a crash of the
        // serving generation (respawned), not a failed reload.
        (Handover, "exited-new", Phase::Handover, &[]),
        (Handover, "exited-old", Phase::Handover, &[]),
        (Handover, "stopped-accepting", Phase::Handover, &[]),
        (Handover, "committed", Phase::Handover, &[]),
        (Handover, "tick-early", Phase::Handover, &[]),
        (Handover, "stop", Phase::Idle, &["finished ok 2 [1]"]),
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
        expect.len(),
        states.len() * events.len(),
        "the table is complete"
    );
    for (at, name, phase, effects) in expect {
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
