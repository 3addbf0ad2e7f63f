//! `baton`: the command line. Everything it does lives in the `master`
//! crate; this file only turns arguments into one of three actions: serve,
//! test a config (`-t`), or send a command to a running master (`-s`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// A multi-process HTTP server whose reloads never drop a connection.
#[derive(Parser, Debug)]
#[command(name = "baton", version, about, long_about = None)]
struct Cli {
    /// Config file (TOML). Without it, an embedded default config serves a
    /// sample site on 127.0.0.1:8080.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Fork to the background; exit 0 once the server is ready, or 1 with
    /// the startup error.
    #[arg(long)]
    daemon: bool,

    /// Pidfile, overriding the config's pid_file.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,

    /// Grace period for draining, overriding the config's grace (e.g. 30s;
    /// at most 24h, as in the config).
    #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
    grace: Option<Duration>,

    /// Test the config and exit: 0 if valid, 1 with FILE:LINE:COL errors.
    /// Binds nothing and writes nothing. Twice (-tt): also check that the
    /// listen addresses can be bound (or are held by the running
    /// instance), that the workers' user can enter each root and that the
    /// log files can be opened.
    #[arg(short = 't', long = "test-config", action = clap::ArgAction::Count, conflicts_with_all = ["signal", "daemon"])]
    test_config: u8,

    /// Send a command to the running master found through the pid_file:
    /// reload (waits for the outcome), reopen (log files, after rotation),
    /// stop (fast), quit (graceful), status, upgrade (re-execute the
    /// binary in place; waits for the outcome).
    #[arg(short = 's', long = "signal", value_name = "COMMAND")]
    signal: Option<Command>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Command {
    Reload,
    Reopen,
    Stop,
    Quit,
    Status,
    Upgrade,
}

impl Command {
    fn word(self) -> &'static str {
        match self {
            Command::Reload => "reload",
            Command::Reopen => "reopen",
            Command::Stop => "stop",
            Command::Quit => "quit",
            Command::Status => "status",
            Command::Upgrade => "upgrade",
        }
    }
}

/// `--grace`: the config's form and the config's bounds (`grace` in
/// `config::bounds`), so the override cannot carry what the file could not.
fn parse_grace(s: &str) -> Result<Duration, String> {
    baton_shared::config::parse_setting_duration("grace", s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = baton_master::Options {
        source: baton_master::source_of(cli.config.as_deref()),
        overrides: baton_master::Overrides {
            pid_file: cli.pid_file.map(|p| std::path::absolute(&p).unwrap_or(p)),
            grace: cli.grace,
        },
        daemon: cli.daemon,
    };
    let code = if cli.test_config > 0 {
        // A master upgrading to this binary asks: can you read its state?
        if std::env::var_os(baton_master::upgrade::exec::PREFLIGHT_VAR).is_some() {
            println!("{}", baton_master::upgrade::exec::handshake());
        }
        let checked = if cli.test_config > 1 {
            baton_master::test_config_deep(&options)
        } else {
            baton_master::test_config(&options)
        };
        match checked {
            Ok(config) => {
                // Valid, and served without these staples: say so.
                for c in &config.tls_loaded.0.certs {
                    if let (Some(file), baton_shared::tls::Staple::Refused(why)) =
                        (&c.files.ocsp, &c.staple)
                    {
                        eprintln!(
                            "baton: warning: OCSP staple {} of certificate {} is not served: {why}",
                            file.display(),
                            c.files.cert.display()
                        );
                    }
                }
                println!("baton: the configuration {} is valid", options.source);
                0
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!("baton: the configuration {} is invalid", options.source);
                1
            }
        }
    } else if let Some(cmd) = cli.signal {
        baton_master::send_command(&options, cmd.word())
    } else {
        baton_master::serve(options)
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
