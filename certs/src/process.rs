//! The helper process's main loop: three threads joined by crossbeam
//! channels.
//!
//! - the *reader* reads frames from the master (a blocking socket: this
//!   process has nothing else to do meanwhile) and passes them on;
//! - the *ACME engine* (`crate::acme`) orders and renews;
//! - the *main* thread owns the writing end: it forwards settings to the
//!   components and writes what they report to the master.
//!
//! The master's end of the channel closing (it exited, or a binary
//! upgrade re-executed it: the channel is close-on-exec) ends the helper:
//! the new image starts a helper of its own.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use baton_shared::channel::certs::{FromHelper, HelperSettings, ToHelper};
use baton_shared::channel::{Message, frame};
use crossbeam_channel::{Receiver, Sender, select, unbounded};

/// What the helper gets from the fork.
pub struct Setup {
    pub channel: UnixStream,
}

/// Runs the helper; returns its exit status.
pub fn run(setup: Setup) -> i32 {
    // The master blocks its signals and the fork inherited the mask:
    // SIGTERM (the parent-death signal) must end this process.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    // rustls finds the ring provider whoever builds a config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut writer = setup.channel;
    if let Err(e) = writer.set_nonblocking(false) {
        log::error!("certificate helper: {e}");
        return 1;
    }
    let reader = match writer.try_clone() {
        Ok(r) => r,
        Err(e) => {
            log::error!("certificate helper: {e}");
            return 1;
        }
    };
    let (in_tx, in_rx) = unbounded::<ToHelper>();
    let (out_tx, out_rx) = unbounded::<FromHelper>();
    let reading = std::thread::Builder::new()
        .name("channel".into())
        .spawn(move || read_frames(reader, &in_tx));
    let components = reading.and_then(|_| start_components(&out_tx));
    let components = match components {
        Ok(c) => c,
        Err(e) => {
            log::error!("certificate helper: cannot start its threads: {e}");
            return 1;
        }
    };
    let _ = out_tx.send(FromHelper::Ready);
    main_loop(&mut writer, &in_rx, &out_rx, &components)
}

/// The helper's working threads, each told every `Settings` over a
/// crossbeam channel of its own, each reporting to the master through
/// `FromHelper` messages on `out`.
struct Components {
    /// Every component's settings channel.
    settings: Vec<Sender<HelperSettings>>,
    /// Into the ACME engine's async order (a tokio channel, awaited there):
    /// one `()` per `ToHelper::Published`.
    published: tokio::sync::mpsc::UnboundedSender<()>,
}

/// Starts the components: the ACME engine and the OCSP staple refresher,
/// each a thread with a settings receiver pushed onto `settings`.
fn start_components(out: &Sender<FromHelper>) -> std::io::Result<Components> {
    let (acme_tx, acme_rx) = unbounded::<HelperSettings>();
    let (published_tx, published_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let acme_out = out.clone();
    // Staples → ACME: revoked certificates; ACME → staples: one written.
    let (revoked_tx, revoked_rx) = unbounded::<crate::acme::Revoked>();
    let (issued_tx, issued_rx) = unbounded::<()>();
    std::thread::Builder::new()
        .name("acme".into())
        .spawn(move || crate::acme::run(acme_rx, revoked_rx, issued_tx, published_rx, acme_out))?;
    let (staples_tx, staples_rx) = unbounded::<HelperSettings>();
    crate::staples::start(staples_rx, issued_rx, revoked_tx)?;
    Ok(Components {
        settings: vec![acme_tx, staples_tx],
        published: published_tx,
    })
}

fn main_loop(
    writer: &mut UnixStream,
    from_master: &Receiver<ToHelper>,
    to_master: &Receiver<FromHelper>,
    components: &Components,
) -> i32 {
    loop {
        select! {
            recv(from_master) -> msg => match msg {
                // A reload's config (or the first): every component.
                Ok(ToHelper::Settings(s)) => {
                    for c in &components.settings {
                        let _ = c.send(s.clone());
                    }
                }
                Ok(ToHelper::Published) => {
                    let _ = components.published.send(());
                }
                // The reader ended: the master is gone.
                Err(_) => return 0,
            },
            recv(to_master) -> msg => {
                let Ok(msg) = msg else { return 0 };
                let mut buf = Vec::new();
                frame(&msg, &mut buf);
                if let Err(e) = writer.write_all(&buf) {
                    log::info!("certificate helper: the master is gone ({e}); exiting");
                    return 0;
                }
            }
        }
    }
}

/// Reads frames until EOF or an error; a malformed frame ends the helper
/// (the master is restarting it anyway, or something is badly wrong).
fn read_frames(mut stream: UnixStream, to: &Sender<ToHelper>) {
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > ToHelper::MAX_LEN {
            log::error!("certificate helper: frame of bad length {len} from the master");
            return;
        }
        let mut body = vec![0u8; len];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        match ToHelper::decode(&body) {
            Ok(msg) => {
                if to.send(msg).is_err() {
                    return;
                }
            }
            Err(e) => {
                log::error!("certificate helper: {e}");
                return;
            }
        }
    }
}
