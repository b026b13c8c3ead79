//! The `gatehouse` command: wiring only (product.md §1). Exit codes: 0 ok, 1 invalid input,
//! 2 runtime failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use gatehouse::server::{Gateway, ReloadError};
use gatehouse::snapshot;

#[derive(Parser)]
#[command(name = "gatehouse", about = "An identity-aware API gateway: the edge and the policy layer in one binary.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve; SIGHUP (or POST /reload) reloads, SIGUSR1 reopens the access log, SIGTERM drains then exits.
    Run {
        #[arg(short, long, default_value = "gatehouse.yaml")]
        config: PathBuf,
    },
    /// Validate the config and print every error as FILE:LINE:COL: key.path: message.
    Check {
        #[arg(short, long, default_value = "gatehouse.yaml")]
        config: PathBuf,
    },
    /// Manage subscriptions and their keys in the store.
    Subscription(gatehouse::cli::subscription::SubscriptionArgs),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("gatehouse {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => check(&config),
        Command::Run { config } => run(config),
        Command::Subscription(args) => gatehouse::cli::subscription::run(args),
    }
}

fn print_errors(errors: &[gatehouse::config::ConfigError]) {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!("{} error(s)", errors.len());
}

fn check(path: &Path) -> ExitCode {
    // Warnings the compiler logs (e.g. TLS verification turned off) belong in `check`'s output too.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
    match snapshot::compile_file(path) {
        Ok(s) => {
            println!(
                "{}: ok ({} listener(s), {} backend(s), {} API(s))",
                path.display(),
                s.listeners.len(),
                s.backends.len(),
                s.api_count()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            ExitCode::from(1)
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: journald, files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let snapshot = match snapshot::compile_file(&path) {
        Ok(s) => s,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::from(1);
        }
    };
    let workers = snapshot.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(serve(snapshot, path))
}

async fn serve(snapshot: snapshot::Snapshot, path: PathBuf) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let watch = snapshot.watch_config;
    // Handlers go in before the listeners open: a SIGHUP sent as soon as the gateway answers
    // (systemd's ExecReload, a deploy script) must reload, not kill the process (SIGHUP's
    // default action). Signals arriving during start-up are queued and handled below.
    let (Ok(mut hup), Ok(mut usr1), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("gatehouse: cannot install signal handlers");
        return ExitCode::from(2);
    };
    let gw = match Gateway::start(snapshot, Some(path.clone())).await {
        Ok(gw) => gw,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::from(2);
        }
    };
    if watch {
        tokio::spawn(watch_file(gw.clone(), path));
    }
    tokio::spawn(watch_secrets(gw.clone()));
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&gw).await,
            _ = usr1.recv() => {
                // Queued before the log line: lines of requests that follow the message go to the new file.
                gw.reopen_logs();
                tracing::info!("Access log reopen requested.");
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("Shutting down: draining in-flight requests.");
    gw.shutdown().await;
    tracing::info!("Stopped.");
    ExitCode::SUCCESS
}

async fn reload(gw: &std::sync::Arc<Gateway>) {
    match gw.reload().await {
        Ok(_) => {}
        Err(ReloadError::Invalid(errors)) => {
            for e in &errors {
                tracing::error!("{e}");
            }
            tracing::error!(errors = errors.len(), "The new config is invalid; the previous one keeps serving.");
        }
        Err(e) => tracing::error!(error = %e, "Reload failed; the previous config keeps serving."),
    }
}

/// `runtime.watch_config`: reload when the file's modification time changes (polled each second,
/// which also survives editors that replace the file).
async fn watch_file(gw: std::sync::Arc<Gateway>, path: PathBuf) {
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now != last && now.is_some() {
            last = now;
            tracing::info!(file = %path.display(), "Config file changed.");
            reload(&gw).await;
        }
    }
}

/// Secret rotation: a secret file the active config read changed (polled each second) → reload,
/// whatever `runtime.watch_config` says, so a rotated admin token or client secret needs no restart.
async fn watch_secrets(gw: std::sync::Arc<Gateway>) {
    let mut watcher = gatehouse::secrets::Watcher::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if watcher.changed(&gw.active().snapshot.secrets) {
            tracing::info!("A secret file changed.");
            reload(&gw).await;
        }
    }
}
